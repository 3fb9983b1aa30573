//! The tutorial's pool section (`Pool(processes, initializer)`, `map`,
//! `close`, `join`), then what Python's pool cannot do: a worker killed in
//! the middle of a map fails only its task, and the pool goes on; then
//! `map_pod`/`map_into` over shared arrays for plain-data items.
//!
//! `cargo run --release --example pool`

use shmkit::error::PoolError;
use shmkit::process::current_process;
use shmkit::{Error, Pool};
use std::time::Duration;

fn do_work(data: u64) -> u64 {
    data * data
}

fn start_process(_: ()) {
    println!("Start {}", current_process().name);
}

/// Takes a while; item 13 kills its own worker (think: the OOM killer).
fn slow_square(x: u64) -> u64 {
    if x == 13 {
        // SAFETY: raising SIGKILL at ourselves, on purpose.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_millis(5));
    x * x
}

fn main() -> shmkit::Result<()> {
    // As in the tutorial: twice as many workers as CPUs, each announcing itself.
    let pool_size = shmkit::cpu_count() * 2;
    let pool = Pool::builder()
        .processes(pool_size)
        .initializer(start_process, ())
        .build()?;
    let inputs: Vec<u64> = (0..10).collect();
    let outputs = pool.map(do_work, inputs)?;
    pool.close(); // no more tasks
    pool.join(); // wait for the workers to exit
    println!("Outputs: {outputs:?}");

    println!("\nA worker killed mid-map (Python's map would wait forever):");
    let pool = Pool::new()?;
    let results: Vec<_> = pool
        .options()
        .chunksize(1)
        .imap(slow_square, 0..20)
        .collect();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) => print!("{v} "),
            Err(Error::Pool(PoolError::WorkerDied { pid, signal, .. })) => {
                print!("[item {i}: worker {pid} died of signal {signal:?}] ")
            }
            Err(e) => print!("[item {i}: {e}] "),
        }
    }
    let stats = pool.stats();
    println!(
        "\n{} worker died and was replaced; {} chunk lost; the pool goes on: {:?}",
        stats.workers_died,
        stats.chunks_lost,
        pool.map(do_work, 0..5)?
    );

    println!("\napply_async with a callback, and a panic that comes back as an error:");
    let pending = pool.apply_async_with(
        do_work,
        12,
        |v| println!("  callback: {v}"),
        |e| println!("  error callback: {e}"),
    )?;
    println!("  get() = {}", pending.get()?);
    let panicked = pool.apply(|x: u64| -> u64 { panic!("no square for {x}") }, 5);
    println!("  apply(panicking) = {}", panicked.unwrap_err());

    println!("\nPlain-data items over shared arrays (no encoding per item):");
    let items: Vec<u64> = (0..1_000_000).collect();
    let t = std::time::Instant::now();
    let squares = pool.map_pod(do_work, &items)?;
    println!(
        "  map_pod of 1,000,000 u64: last = {} in {:?}",
        squares[999_999],
        t.elapsed()
    );
    let input = shmkit::Array::from_slice(&[1.5f64, 2.5, 4.0])?;
    let output = shmkit::Array::<f64>::new(3)?;
    pool.map_into(|x: f64| x * x, &input, &output)?;
    println!(
        "  map_into an Array in place: {:?}",
        output.to_vec().unwrap()
    );
    Ok(())
}

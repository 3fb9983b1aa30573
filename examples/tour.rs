//! A guided run of shmkit's main capabilities, printing what each step shows.
//! `cargo run --release --example tour`. It grows with each part of shmkit.

use shmkit::process::{self, Builder, Process};
use shmkit::sync::{Barrier, Event, Mutex, Semaphore, TryLockError};
use shmkit::{Array, Error, Value};
use std::time::{Duration, Instant};

/// Forks a child running `f`: allowed, the tour's main is single-threaded,
/// and the closure captures what it shares. (Every shmkit object also
/// travels to a spawned child as an argument: section 4.)
fn fork(f: impl FnOnce()) -> Process<()> {
    Builder::new().fork(f).expect("fork")
}

fn increment_million(c: Value<u64>) {
    for _ in 0..1_000_000 {
        c.fetch_add(1);
    }
}

fn fill_array(b: Array<f64>) {
    let mut g = b.lock().unwrap();
    for (i, x) in g.iter_mut().enumerate() {
        *x = i as f64;
    }
}

fn cube(x: u64) -> u64 {
    x * x * x
}

fn square(x: u64) -> u64 {
    x * x
}

fn start_worker(_: ()) {
    println!("  Start {}", process::current_process().name);
}

/// Item 13 kills its own worker.
fn square_but_13_dies(x: u64) -> u64 {
    if x == 13 {
        // SAFETY: raising SIGKILL at ourselves, on purpose.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    x * x
}

fn sum_range((data, start, end): (Array<f32>, u64, u64)) -> f64 {
    // SAFETY: written before the pool started; nobody writes meanwhile.
    let all = unsafe { data.as_slice_unchecked() };
    all[start as usize..end as usize]
        .iter()
        .map(|&x| x as f64)
        .sum()
}

fn set_square((d, i): (shmkit::SharedMap<u64, u64>, u64)) {
    d.insert(i, i * i).expect("insert");
}

fn main() -> Result<(), Error> {
    processes()?;
    shared_counters()?;
    array_in_place()?;
    mutex_holder_killed()?;
    barrier_and_semaphore()?;
    queue_exactly_once()?;
    duplex_pipe()?;
    pool_survives_a_death()?;
    pool_sums_a_shared_array()?;
    shared_dict()?;
    println!("\nDone. Next: `cargo test` runs the whole suite.");
    Ok(())
}

/// Processes: spawn a function, get its result back
fn processes() -> Result<(), Error> {
    println!("== 0. Processes: spawn a function, get its result back ==");
    let t = Instant::now();
    let p = process::spawn(cube, 7)?;
    let (name, pid) = (p.name().to_owned(), p.pid());
    let r = p.join()?;
    println!(
        "{name} (pid {pid}) returned cube(7) = {r} in {:?} (start + join, re-executing this binary)",
        t.elapsed()
    );
    let p = process::spawn(|n: u64| -> u64 { panic!("bad input {n}") }, 3)?;
    println!("a panic comes back as an error: {}", p.join().unwrap_err());
    println!(
        "cpu_count() = {} (affinity and cgroup quota respected)",
        shmkit::cpu_count()
    );
    Ok(())
}

/// Shared counters (Python's Value)
fn shared_counters() -> Result<(), Error> {
    println!("\n== 1. Shared counters (Python's Value) ==");
    // lock=False: lock-free atomics (a locked Value's atomics take its lock).
    let counter = Value::<u64>::builder().unlocked().create(0)?;
    let t = Instant::now();
    let children = (0..2)
        .map(|_| process::spawn(increment_million, counter.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    for c in children {
        c.join()?;
    }
    println!(
        "2 processes x 1,000,000 atomic increments = {} in {:?}",
        counter.load(),
        t.elapsed()
    );
    Ok(())
}

/// A 100 MiB array written by a child, read in place by the parent
fn array_in_place() -> Result<(), Error> {
    println!("\n== 2. A 100 MiB array written by a child, read in place by the parent ==");
    let n = 100 * 1024 * 1024 / 8;
    let big = Array::<f64>::new(n)?;
    // An anonymous array: the child inherits its descriptor; nothing is copied.
    process::spawn(fill_array, big.clone())?.join()?;
    let g = big.lock()?;
    let sum: f64 = g.iter().sum();
    println!(
        "sum = {sum:e} (expected {:e}); the guard's slice is the mapping itself: {}",
        (n as f64) * (n as f64 - 1.0) / 2.0,
        g.as_ptr() == big.as_ptr().cast_const()
    );
    drop(g);
    Ok(())
}

/// A Mutex whose holder is killed with SIGKILL
fn mutex_holder_killed() -> Result<(), Error> {
    println!("\n== 3. A Mutex whose holder is killed with SIGKILL ==");
    let m = Mutex::new([0u64; 2])?;
    let locked = Event::new()?;
    let (m2, l2) = (m.clone(), locked.clone());
    let holder = fork(move || {
        let mut g = m2.lock().unwrap();
        g[0] = 1; // half an update...
        l2.set();
        std::thread::sleep(Duration::from_secs(3600)); // ...then hang
    });
    locked.wait();
    holder.kill()?;
    println!("holder killed, exitcode {}", holder.wait()?);
    match m.lock_timeout(Duration::from_secs(10)) {
        Err(TryLockError::OwnerDied(e)) => {
            let mut g = e.into_inner();
            println!(
                "next locker got OwnerDied with the guard; data = {:?} (half updated)",
                *g
            );
            g[1] = 1;
            g.mark_consistent();
            println!("repaired to {:?} and marked consistent", *g);
        }
        other => println!("unexpected: {:?}", other.map(|_| ())),
    }
    println!("locking again: poisoned = {}", m.lock().is_err());
    Ok(())
}

fn meet_and_take_permits((b, s, inside, max_inside): (Barrier, Semaphore, Value<u32>, Value<u32>)) {
    b.wait();
    for _ in 0..100 {
        // Python's `with sem:`; a process killed here gives its permit
        // back (`acquire`/`release` count without that).
        let _permit = s.permit().unwrap();
        let now = inside.fetch_add(1) + 1;
        max_inside.fetch_max(now);
        inside.fetch_sub(1);
    }
}

/// Barrier and Semaphore across 4 processes
fn barrier_and_semaphore() -> Result<(), Error> {
    println!("\n== 4. Barrier and Semaphore across 4 processes ==");
    let barrier = Barrier::new(4)?;
    let sem = Semaphore::new(2)?;
    let inside = Value::<u32>::builder().unlocked().create(0)?;
    let max_inside = Value::<u32>::builder().unlocked().create(0)?;
    // Spawned (not forked): the barrier, the semaphore and the values are
    // the child function's arguments, shared, not copied, as Python's
    // `Process(target=f, args=(barrier, sem, ...))`.
    let children = (0..4)
        .map(|_| {
            let args = (
                barrier.clone(),
                sem.clone(),
                inside.clone(),
                max_inside.clone(),
            );
            process::spawn(meet_and_take_permits, args)
        })
        .collect::<Result<Vec<_>, _>>()?;
    for c in children {
        c.join()?;
    }
    println!(
        "4 spawned processes met at the barrier; at most {} held the 2-permit semaphore at once",
        max_inside.load()
    );
    Ok(())
}

/// A queue in shared memory: 2 producers, 2 consumers, exactly once
fn queue_exactly_once() -> Result<(), Error> {
    println!("\n== 5. A queue in shared memory: 2 producers, 2 consumers, exactly once ==");
    let (tx, rx) = shmkit::queue::bounded::<u64>(1024)?;
    let t = Instant::now();
    let producers = (0..2u64)
        .map(|p| {
            process::spawn(
                |(tx, p): (shmkit::queue::Sender<u64>, u64)| {
                    for i in 0..250_000 {
                        tx.send(p * 1_000_000 + i).unwrap();
                    }
                },
                (tx.clone(), p),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    drop(tx);
    let consumers = (0..2)
        .map(|_| {
            process::spawn(
                |rx: shmkit::queue::Receiver<u64>| {
                    rx.iter().fold((0u64, 0u64), |(n, s), x| (n + 1, s + x))
                },
                rx.clone(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    drop(rx);
    producers.into_iter().try_for_each(|p| p.join())?;
    let (mut n, mut sum) = (0, 0);
    for c in consumers {
        let (cn, cs) = c.join()?;
        println!("  a consumer took {cn} messages");
        n += cn;
        sum += cs;
    }
    let expected: u64 = (0..2u64)
        .map(|p| (0..250_000).map(|i| p * 1_000_000 + i).sum::<u64>())
        .sum();
    println!(
        "{n} messages in {:?}; sum matches (each delivered exactly once): {}",
        t.elapsed(),
        sum == expected
    );
    // The same stream in runs: one claim and one wake-up per run of 64.
    let (tx, rx) = shmkit::queue::bounded::<u64>(1024)?;
    let t = Instant::now();
    let producer = process::spawn(
        |tx: shmkit::queue::Sender<u64>| {
            let run: Vec<u64> = (0..64).collect();
            for _ in 0..500_000 / 64 {
                tx.send_many(&run).unwrap();
            }
        },
        tx,
    )?;
    let (mut buf, mut got) = ([0u64; 64], 0);
    while let Ok(k) = rx.recv_many(&mut buf) {
        got += k;
    }
    producer.join()?;
    println!(
        "  in runs of 64 (`send_many`/`recv_many`): {got} messages in {:?}",
        t.elapsed()
    );
    println!(
        "  (async programs await the same queue with `recv_async`/`send_async`, feature \
         `async`: `--example async_service` is a tokio service over worker processes)"
    );
    Ok(())
}

/// A duplex pipe: ping-pong with a child
fn duplex_pipe() -> Result<(), Error> {
    println!("\n== 6. A duplex pipe: ping-pong with a child ==");
    let (here, there) = shmkit::pipe::pipe::<u64>()?;
    let child = process::spawn(
        |c: shmkit::pipe::Connection<u64>| {
            while let Ok(v) = c.recv() {
                c.send(v + 1).unwrap();
            }
        },
        there,
    )?;
    let t = Instant::now();
    let mut v = 0u64;
    for _ in 0..10_000 {
        here.send(v).expect("send");
        v = here.recv().expect("recv");
    }
    println!(
        "10,000 round trips: {:?} each; last value {v}",
        t.elapsed() / 10_000
    );
    drop(here);
    child.join()?;
    Ok(())
}

/// A pool: the tutorial's map, then a worker killed mid-map
fn pool_survives_a_death() -> Result<(), Error> {
    // The pool runs a thread: from here on the tour no longer forks.
    println!("\n== 7. A pool: the tutorial's map, then a worker killed mid-map ==");
    let pool = shmkit::Pool::builder()
        .processes(shmkit::cpu_count() * 2)
        .initializer(start_worker, ())
        .build()?;
    println!("map(square, 0..10) = {:?}", pool.map(square, 0..10)?);
    let t = Instant::now();
    let r = pool.apply_async(square, 9)?.get()?;
    println!("apply_async(square, 9).get() = {r} in {:?}", t.elapsed());
    println!(
        "  (feature `async`: `pool.apply_async(..)?.await`, `map_async(..)?.await`, \
         `imap(..).into_stream()` and `child.join_async().await` in `--example async_service`)"
    );
    let items: Vec<u64> = (0..100_000).collect();
    let t = Instant::now();
    let squares = pool.map_pod(square, &items)?;
    println!(
        "map_pod(square, 100,000 u64) over shared arrays: last = {} in {:?}",
        squares[99_999],
        t.elapsed()
    );
    let out: Vec<String> = pool
        .options()
        .chunksize(1)
        .imap(square_but_13_dies, 10..16)
        .map(|r| match r {
            Ok(v) => v.to_string(),
            Err(e) => format!("<{e}>"),
        })
        .collect();
    println!("imap over 10..16, item 13 SIGKILLs its worker: {out:?}");
    println!(
        "the pool goes on ({} worker died, a new one takes its place): {:?}",
        pool.stats().workers_died,
        pool.map(square, 0..4)?
    );
    pool.close();
    pool.join();
    Ok(())
}

/// A 256 MiB array summed by a pool: shared, not sent
fn pool_sums_a_shared_array() -> Result<(), Error> {
    println!("\n== 8. A 256 MiB array summed by a pool: shared, not sent ==");
    let n = 64 << 20; // f32s
    // Anonymous: nothing is left in /dev/shm if this program is killed; the
    // pool's workers get it as a descriptor.
    let data = Array::<f32>::new(n)?;
    // SAFETY: no other process has the array yet.
    let cells = unsafe { data.as_mut_slice_unchecked() };
    for (i, x) in cells.iter_mut().enumerate() {
        *x = (i % 1000) as f32;
    }
    let want: f64 = cells.iter().map(|&x| x as f64).sum();
    let pool = shmkit::Pool::new()?;
    let step = (n / 8) as u64;
    let tasks: Vec<_> = (0..8u64)
        .map(|i| (data.clone(), i * step, (i + 1) * step))
        .collect();
    let t = Instant::now();
    let total: f64 = pool.map(sum_range, tasks)?.iter().sum();
    println!(
        "{} workers summed it in {:?}: {total} (sequential: {want}); each task carried \
         a handle to the array and a range (`--example big_buffer` compares with a pipe)",
        pool.processes(),
        t.elapsed()
    );
    Ok(())
}

/// A shared dict (Python's Manager().dict(), without the server)
fn shared_dict() -> Result<(), Error> {
    println!("\n== 9. A shared dict (Python's Manager().dict(), without the server) ==");
    let d = shmkit::SharedMap::<u64, u64>::new(100)?;
    let jobs = (0..8u64)
        .map(|i| process::spawn(set_square, (d.clone(), i)))
        .collect::<Result<Vec<_>, _>>()?;
    for j in jobs {
        j.join()?;
    }
    let mut items = d.snapshot();
    items.sort();
    println!("8 processes set d[i] = i*i: {items:?}");
    let t = Instant::now();
    for i in 0..100_000u64 {
        d.update(&(i % 8), |v| Some(v.unwrap_or(0) + 1))?;
    }
    println!(
        "100,000 atomic updates in {:?} ({:?} each; Python's Manager takes ~28 µs per set)",
        t.elapsed(),
        t.elapsed() / 100_000
    );
    Ok(())
}

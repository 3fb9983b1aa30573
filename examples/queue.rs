//! The tutorial's Queue section, in Rust, then a producer/consumer pipeline:
//! a queue in shared memory with many producers and many consumers, each
//! message taken by exactly one of them.
//!
//! Python:
//! ```python
//! queue = Queue()
//! p1 = Process(target=make_tuple, args=(queue,))
//! p2 = Process(target=make_string, args=(queue,))
//! ```
//!
//! `cargo run --release --example queue`

use shmkit::queue::{self, Bytes, Queue, Receiver, Sender};
use shmkit::{Array, Error, spawn};
use std::time::{Duration, Instant};

fn make_tuple(q: Queue<Bytes>) {
    let (mut tx, mut rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let num = 1 + std::process::id() % 9;
    tx.send_msg(&("Hi".to_string(), num)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let reply: String = rx.recv_msg().unwrap(); // from make_string
    println!("{reply}");
}

fn make_string(q: Queue<Bytes>) {
    let (mut tx, mut rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let (substr, num): (String, u32) = rx.recv_msg().unwrap();
    tx.send_msg(&substr.repeat(num as usize)).unwrap();
}

/// Stage 2 of the pipeline: squares numbers until the input disconnects.
fn square((input, output): (Receiver<u64>, Sender<u64>)) -> u64 {
    let mut n = 0;
    for x in input.iter() {
        output.send(x * x).unwrap();
        n += 1;
    }
    n
}

/// Reads a big array that arrived as a handle through a queue.
fn sum_array(mut rx: Receiver<Bytes>) -> f64 {
    let a: Array<f64> = rx.recv_msg().unwrap();
    a.lock().unwrap().iter().sum()
}

fn main() -> Result<(), Error> {
    println!("== The tutorial's Queue ==");
    let q = Queue::<Bytes>::builder()
        .capacity(8)
        .max_message(256)
        .create()?;
    let p1 = spawn(make_tuple, q.clone())?;
    let p2 = spawn(make_string, q.clone())?;
    p1.join()?;
    p2.join()?;

    println!("\n== A pipeline: 1 producer -> 2 squaring processes -> this process ==");
    let (tx, rx) = queue::bounded::<u64>(1024)?;
    let (out_tx, out_rx) = queue::bounded::<u64>(1024)?;
    let workers: Vec<_> = (0..2)
        .map(|_| spawn(square, (rx.clone(), out_tx.clone())))
        .collect::<Result<_, _>>()?;
    drop((rx, out_tx)); // only the workers hold these ends now
    let n = 1_000_000u64;
    let t = Instant::now();
    let producer = spawn(
        |(tx, n): (Sender<u64>, u64)| {
            for i in 0..n {
                tx.send(i).unwrap();
            }
        },
        (tx, n),
    )?;
    let total: u64 = out_rx.iter().fold(0u64, |s, x| s.wrapping_add(x));
    let elapsed = t.elapsed();
    producer.join()?;
    let per_worker: Vec<u64> = workers
        .into_iter()
        .map(|w| w.join())
        .collect::<Result<_, _>>()?;
    let expected = (0..n).fold(0u64, |s, x| s.wrapping_add(x * x));
    println!(
        "{n} numbers squared by 2 processes ({per_worker:?} each) in {elapsed:?} \
         ({:.1} M messages/s through two queues); sum correct: {}",
        2.0 * n as f64 / elapsed.as_secs_f64() / 1e6,
        total == expected
    );

    println!("\n== A 256 MiB array sent through a queue: as a handle, not as bytes ==");
    let (mut tx, rx) = queue::bounded_bytes(4, 256)?;
    let big = Array::<f64>::builder().random_name().create(32 << 20)?;
    big.lock()?.fill(0.5);
    let child = spawn(sum_array, rx)?;
    tx.send_msg(&big)?;
    println!(
        "the child summed {} (expected {}) after receiving a {}-byte message",
        child.join()?,
        0.5 * (32 << 20) as f64,
        shmkit::Message::encode(&big)?.len()
    );
    Ok(())
}

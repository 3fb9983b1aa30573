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

use shmkit::queue::{self, Queue, Receiver, Rkyv, Sender};
use shmkit::{Array, Error, rkyv, spawn};
use std::time::{Duration, Instant};

/// What the tutorial's two processes put on their one queue: a message type
/// of our own. Python's queue takes any object; a Rust queue names its
/// message type, so the two kinds of message are an enum. (No rkyv in our
/// Cargo.toml: shmkit re-exports it.)
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
#[rkyv(crate = shmkit::rkyv)]
enum Said {
    Tuple(String, u32),
    Text(String),
}

fn make_tuple(q: Queue<Rkyv<Said>>) {
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let num = 1 + std::process::id() % 9;
    tx.send(Said::Tuple("Hi".to_string(), num)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    match rx.recv().unwrap() {
        Said::Text(reply) => println!("{reply}"), // from make_string
        other => println!("unexpected: {other:?}"),
    }
}

fn make_string(q: Queue<Rkyv<Said>>) {
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    if let Said::Tuple(substr, num) = rx.recv().unwrap() {
        tx.send(Said::Text(substr.repeat(num as usize))).unwrap();
    }
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
fn sum_array(rx: Receiver<Rkyv<Array<f64>>>) -> f64 {
    let a = rx.recv().unwrap();
    a.lock().unwrap().iter().sum()
}

fn main() -> Result<(), Error> {
    println!("== The tutorial's Queue ==");
    let q = Queue::<Rkyv<Said>>::builder()
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
    let (tx, rx) = queue::bounded_messages::<Rkyv<Array<f64>>>(4, 256)?;
    let big = Array::<f64>::builder().random_name().create(32 << 20)?;
    big.lock()?.fill(0.5);
    let child = spawn(sum_array, rx)?;
    tx.send(&big)?; // by reference: `big` (and its name) outlives the child's open
    println!(
        "the child summed {} (expected {}) after receiving a {}-byte message",
        child.join()?,
        0.5 * (32 << 20) as f64,
        shmkit::Message::encode(&big)?.len()
    );
    Ok(())
}

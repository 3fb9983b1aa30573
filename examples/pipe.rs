//! The tutorial's Pipe section, in Rust: two processes talk over the two ends
//! of a duplex pipe in shared memory. Then a ping-pong to show the round trip.
//!
//! Python:
//! ```python
//! conn1, conn2 = Pipe(duplex=True)
//! p1 = Process(target=make_tuple, args=(conn1,))
//! p2 = Process(target=make_string, args=(conn2,))
//! ```
//!
//! `cargo run --release --example pipe`

use shmkit::pipe::{self, Connection};
use shmkit::queue::Rkyv;
use shmkit::{Error, rkyv, spawn};
use std::time::Instant;

/// What the tutorial's two ends say: a message type of our own (Python's
/// pipe takes any object; a Rust pipe names its message type).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
#[rkyv(crate = shmkit::rkyv)]
enum Said {
    Tuple(String, u32),
    Text(String),
}

fn make_tuple(conn: Connection<Rkyv<Said>>) {
    let num = 1 + std::process::id() % 9; // a "random" 1..=9
    conn.send(Said::Tuple("Hi".to_string(), num)).unwrap();
    if let Said::Text(reply) = conn.recv().unwrap() {
        println!("{reply}");
    }
}

fn make_string(conn: Connection<Rkyv<Said>>) {
    if let Said::Tuple(substr, num) = conn.recv().unwrap() {
        let result = substr.repeat(num as usize);
        println!("{result}");
        conn.send(Said::Text(result)).unwrap();
    }
}

/// A pipe of `u64` (a `Pod` type): each message is one 8-byte copy.
fn echo(conn: Connection<u64>) -> u64 {
    let mut n = 0;
    while let Ok(v) = conn.recv() {
        conn.send(v + 1).unwrap();
        n += 1;
    }
    n
}

fn main() -> Result<(), Error> {
    println!("== The tutorial's Pipe ==");
    let (conn1, conn2) = pipe::pipe::<Rkyv<Said>>()?;
    let p1 = spawn(make_tuple, conn1)?;
    let p2 = spawn(make_string, conn2)?;
    p1.join()?;
    p2.join()?;
    println!("Done");

    println!("\n== Ping-pong through the pipe ==");
    let (here, there) = pipe::pipe::<u64>()?;
    let child = spawn(echo, there)?;
    let n = 100_000u64;
    let t = Instant::now();
    let mut v = 0u64;
    for _ in 0..n {
        here.send(v)?;
        v = here.recv()?;
    }
    let per = t.elapsed() / n as u32;
    drop(here); // the child sees the pipe disconnected and returns
    println!(
        "{n} round trips in {:?}: {per:?} each; the child answered {}",
        t.elapsed(),
        child.join()?
    );
    Ok(())
}

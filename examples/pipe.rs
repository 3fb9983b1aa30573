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
use shmkit::{Error, spawn};
use std::time::Instant;

fn make_tuple(conn: Connection) {
    let num = 1 + std::process::id() % 9; // a "random" 1..=9
    conn.send(&("Hi".to_string(), num)).unwrap();
    let reply: String = conn.recv().unwrap();
    println!("{reply}");
}

fn make_string(conn: Connection) {
    let (substr, num): (String, u32) = conn.recv().unwrap();
    let result = substr.repeat(num as usize);
    println!("{result}");
    conn.send(&result).unwrap();
}

fn echo(conn: Connection) -> u64 {
    let mut n = 0;
    while let Ok(v) = conn.recv::<u64>() {
        conn.send(&(v + 1)).unwrap();
        n += 1;
    }
    n
}

fn main() -> Result<(), Error> {
    println!("== The tutorial's Pipe ==");
    let (conn1, conn2) = pipe::pipe()?;
    let p1 = spawn(make_tuple, conn1)?;
    let p2 = spawn(make_string, conn2)?;
    p1.join()?;
    p2.join()?;
    println!("Done");

    println!("\n== Ping-pong through the pipe ==");
    let (here, there) = pipe::pipe()?;
    let child = spawn(echo, there)?;
    let n = 100_000u64;
    let t = Instant::now();
    let mut v = 0u64;
    for _ in 0..n {
        here.send(&v)?;
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

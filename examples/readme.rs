//! The README's "A taste" snippet, compiled and run so that it stays true.
//! `cargo run --release --example readme`

use shmkit::{Array, Value};

fn fill(a: Array<f64>) -> usize {
    // runs in a child process
    a.lock().unwrap().fill(1.0);
    a.len()
}

fn main() -> Result<(), shmkit::Error> {
    let counter = Value::new(0u64)?; // Python: Value('l', 0)
    counter.fetch_add(1); // atomic, across processes (lock-free if .unlocked())
    *counter.lock()? += 1; // under its robust lock

    let a = Array::<f64>::builder().name("frames").create(1 << 20)?;
    let sum: f64 = a.lock()?.iter().sum(); // read in place: no copy

    let n = shmkit::spawn(fill, a.clone())?.join()?; // the array is shared, not sent
    let after: f64 = a.lock()?.iter().sum();
    println!(
        "counter = {}, sum before = {sum}, a child filled {n} elements, sum after = {after}",
        counter.get()?
    );
    assert_eq!(after, n as f64);
    Ok(())
}

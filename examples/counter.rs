//! The tutorial's "Sharing State Between Processes / Value" section, in Rust:
//! several processes share counters — atomic, locked, and raw — and the parent
//! prints the totals.
//!
//! Python:
//! ```python
//! counter = Value('i')                              # with a lock
//! is_running = Value(ctypes.c_bool, False, lock=False)  # raw
//! size_counter = Value('l', 0, lock=my_lock)        # a lock you pass
//! ```
//!
//! Children are started with shmkit's `fork` start method: this `main` is
//! single-threaded, so fork is allowed, and the closures capture the handles.

use shmkit::process::Builder;
use shmkit::sync::Lock;
use shmkit::{Error, Value};

const PROCESSES: usize = 4;
const ADDS: u64 = 100_000;

fn main() -> Result<(), Error> {
    let atomic = Value::<u64>::builder().unlocked().create(0)?; // lock=False: lock-free fetch_add
    let locked = Value::new(0i64)?; // Value('l', 0): its own robust lock
    let my_lock = Lock::new(())?;
    let size_counter = Value::<i64>::builder()
        .with_lock(my_lock.clone())
        .create(0)?;
    let is_running = Value::<u8>::builder().unlocked().create(0)?; // lock=False

    is_running.set(1)?;
    let mut children = Vec::new();
    for _ in 0..PROCESSES {
        let (atomic, locked, size_counter) = (atomic.clone(), locked.clone(), size_counter.clone());
        children.push(Builder::new().fork(move || -> Result<(), String> {
            for _ in 0..ADDS {
                atomic.fetch_add(1);
                *locked.lock().map_err(|e| e.to_string())? += 1;
                *size_counter.lock().map_err(|e| e.to_string())? += 2;
            }
            Ok(())
        })?);
    }
    for child in children {
        child.join()?.expect("child failed");
    }
    is_running.set(0)?;
    println!("{PROCESSES} processes x {ADDS} additions each:");
    println!(
        "  atomic counter  = {} (expected {})",
        atomic.load(),
        PROCESSES as u64 * ADDS
    );
    println!(
        "  locked counter  = {} (expected {})",
        locked.get()?,
        PROCESSES as u64 * ADDS
    );
    println!(
        "  size counter    = {} (expected {}, guarded by a shared Lock)",
        size_counter.get()?,
        2 * PROCESSES as u64 * ADDS
    );
    println!("  is_running (raw) = {}", is_running.get()?);
    assert_eq!(atomic.load(), PROCESSES as u64 * ADDS);
    assert_eq!(locked.get()?, (PROCESSES as u64 * ADDS) as i64);
    Ok(())
}

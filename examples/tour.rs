//! A guided run of shmkit's main capabilities, printing what each step shows.
//! `cargo run --release --example tour`. It grows with each part of shmkit.

use shmkit::sync::{Barrier, Event, Mutex, Semaphore, TryLockError};
use shmkit::{Array, Error, Value};
use std::time::{Duration, Instant};

/// Forks a child running `f` (the tour's main is single-threaded).
fn fork(f: impl FnOnce()) -> i32 {
    // SAFETY: single-threaded parent; the child runs `f` and _exits.
    match unsafe { libc::fork() } {
        0 => {
            f();
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        pid => {
            assert!(pid > 0, "fork failed");
            pid
        }
    }
}

fn reap(pid: i32) -> i32 {
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    st
}

fn main() -> Result<(), Error> {
    println!("== 1. Shared counters (Python's Value) ==");
    let counter = Value::new(0u64)?;
    let t = Instant::now();
    let pids: Vec<_> = (0..2)
        .map(|_| {
            let c = counter.clone();
            fork(move || {
                for _ in 0..1_000_000 {
                    c.fetch_add(1);
                }
            })
        })
        .collect();
    pids.into_iter().for_each(|p| {
        reap(p);
    });
    println!(
        "2 processes x 1,000,000 atomic increments = {} in {:?}",
        counter.load(),
        t.elapsed()
    );

    println!("\n== 2. A 100 MiB array written by a child, read in place by the parent ==");
    let n = 100 * 1024 * 1024 / 8;
    let big = Array::<f64>::new(n)?;
    let b = big.clone();
    let pid = fork(move || {
        let mut g = b.lock().unwrap();
        for (i, x) in g.iter_mut().enumerate() {
            *x = i as f64;
        }
    });
    reap(pid);
    let g = big.lock()?;
    let sum: f64 = g.iter().sum();
    println!(
        "sum = {sum:e} (expected {:e}); the guard's slice is the mapping itself: {}",
        (n as f64) * (n as f64 - 1.0) / 2.0,
        g.as_ptr() == big.as_ptr().cast_const()
    );
    drop(g);

    println!("\n== 3. A Mutex whose holder is killed with SIGKILL ==");
    let m = Mutex::new([0u64; 2])?;
    let locked = Event::new()?;
    let (m2, l2) = (m.clone(), locked.clone());
    let pid = fork(move || {
        let mut g = m2.lock().unwrap();
        g[0] = 1; // half an update...
        l2.set();
        std::thread::sleep(Duration::from_secs(3600)); // ...then hang
    });
    locked.wait();
    // SAFETY: killing our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
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

    println!("\n== 4. Barrier and Semaphore across 4 processes ==");
    let barrier = Barrier::new(4)?;
    let sem = Semaphore::new(2)?;
    let inside = Value::new(0u32)?;
    let max_inside = Value::new(0u32)?;
    let pids: Vec<_> = (0..4)
        .map(|_| {
            let (b, s, i, mx) = (
                barrier.clone(),
                sem.clone(),
                inside.clone(),
                max_inside.clone(),
            );
            fork(move || {
                b.wait();
                for _ in 0..100 {
                    s.acquire();
                    let now = i.fetch_add(1) + 1;
                    mx.fetch_max(now);
                    i.fetch_sub(1);
                    s.release().unwrap();
                }
            })
        })
        .collect();
    pids.into_iter().for_each(|p| {
        reap(p);
    });
    println!(
        "4 processes met at the barrier; at most {} held the 2-permit semaphore at once",
        max_inside.load()
    );
    println!("\nDone. Next: `cargo test` runs the whole suite.");
    Ok(())
}

//! An async service (feature `async`, on tokio) that fans requests out to
//! worker processes and streams their results back, with a shutdown event
//! another process can set.
//!
//! - Requests go out on one queue (`send_async` waits for room without
//!   blocking the runtime); two worker processes take them, each exactly
//!   once, and answer on a second queue.
//! - The service awaits answers with `recv_async` inside `tokio::select!`,
//!   beside `Event::wait_async`: whichever comes first. The event is set by
//!   a third process once it has seen enough answers go by (here: a timer
//!   process, standing for an operator's `stop` command).
//! - Then the worker processes are awaited with `join_async`, and a
//!   process pool takes over: its results stream back as they finish
//!   (`imap_unordered(..).into_stream()`), and single calls are awaited
//!   (`apply_async(..)?.await`).
//! - The workers count what they serve in a shared `Mutex<u64>`, locked
//!   blocking in the workers and awaited here (`lock_async`: its guard is
//!   `!Send`, dropped before the next `.await`).
//! - No thread per waiting future: shmkit's waiter threads sleep in
//!   `futex_waitv` on the queues' and the event's shared words, one more
//!   sleeps on the awaited children's pidfds, and the pool's own thread
//!   wakes the tasks awaiting its results.
//!
//! `cargo run --release --example async_service`

use futures::StreamExt;
use shmkit::pool::Pool;
use shmkit::queue::{self, Receiver, Sender};
use shmkit::sync::{Event, Mutex};
use shmkit::{Error, spawn};
use std::time::Duration;

/// A worker process: squares numbers until it receives `u64::MAX`, and
/// counts them in the mutex named `stats` too.
fn worker((requests, answers, stats): (Receiver<u64>, Sender<u64>, String)) -> u64 {
    let stats = Mutex::<u64>::open(&stats).unwrap();
    let mut served = 0;
    while let Ok(x) = requests.recv() {
        if x == u64::MAX {
            break;
        }
        answers.send(x * x).unwrap();
        *stats.lock().unwrap() += 1;
        served += 1;
    }
    served
}

/// A pool task.
fn cube(x: u64) -> u64 {
    x * x * x
}

/// The "operator": sets the shutdown event after a while.
fn operator(name: String) {
    std::thread::sleep(Duration::from_millis(300));
    Event::open(&name).unwrap().set();
}

fn main() -> Result<(), Error> {
    let (mut requests, requests_rx) = queue::bounded::<u64>(16)?;
    let (answers_tx, mut answers) = queue::bounded::<u64>(16)?;
    let stats_name = format!("shmkit-example-stats-{}", std::process::id());
    let stats = Mutex::builder().name(&stats_name).create(0u64)?;
    let workers = (0..2)
        .map(|_| {
            let ends = (requests_rx.try_clone()?, answers_tx.try_clone()?);
            spawn(worker, (ends.0, ends.1, stats_name.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    drop((requests_rx, answers_tx));

    let stop_name = format!("shmkit-example-stop-{}", std::process::id());
    let stop = Event::builder().name(&stop_name).create()?;
    let op = spawn(operator, stop_name)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let (sum, answered) = rt.block_on(async {
        let (mut sum, mut answered) = (0u64, 0u64);
        let mut next = 1u64;
        loop {
            // Keep up to 8 requests in flight; then wait for an answer or
            // for the shutdown, whichever comes first.
            while next - answered <= 8 && next <= 1000 {
                requests.send_async(next).await.expect("workers alive");
                next += 1;
            }
            tokio::select! {
                a = answers.recv_async() => {
                    sum += a.expect("workers alive");
                    answered += 1;
                    if answered == 1000 {
                        break;
                    }
                }
                () = stop.wait_async() => {
                    println!("shutdown requested after {answered} answers");
                    break;
                }
            }
        }
        (sum, answered)
    });
    println!("{answered} answers, sum of squares {sum}");

    // Drain what is still in flight, then stop the workers.
    for _ in 0..2 {
        requests.send(u64::MAX).unwrap();
    }
    // Started before the runtime awaits anything (building a pool blocks
    // until its workers are up).
    let pool = Pool::builder().processes(2).build()?;
    let (served, cubes, seven) = rt.block_on(async {
        // Await the worker processes and the operator without blocking the
        // runtime (one watcher thread sleeps on their pidfds).
        let mut served = 0;
        for w in workers {
            served += w.join_async().await?;
        }
        op.join_async().await?;
        // The workers' own count, read under the lock without blocking the
        // runtime (a killed worker's lock would come back as `OwnerDied`).
        let counted = *stats.lock_async().await.expect("no worker died holding it");
        assert_eq!(counted, served);

        // The pool takes over: results stream back as they finish.
        let mut cubes = 0u64;
        let mut stream = pool.imap_unordered(cube, 1..=100u64).into_stream();
        while let Some(c) = stream.next().await {
            cubes += c?;
        }
        let seven = pool.apply_async(cube, 7)?.await?;
        Ok::<_, Error>((served, cubes, seven))
    })?;
    while answers.try_recv().is_ok() {}
    println!("the workers served {served} requests");
    println!("the pool: sum of cubes 1..=100 is {cubes}; 7 cubed is {seven}");
    assert!(served >= answered);
    if answered == 1000 {
        assert_eq!(sum, (1..=1000u64).map(|x| x * x).sum::<u64>());
    }
    assert_eq!(cubes, (1..=100u64).map(cube).sum::<u64>());
    assert_eq!(seven, 343);
    Ok(())
}

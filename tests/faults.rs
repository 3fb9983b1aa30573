//! Fault injection: SIGKILL a participant at a random moment, round after
//! round — a lock holder, a queue producer, a queue consumer, a pipe end, a
//! pool worker, a map writer, an RwLock writer or reader, a Semaphore permit
//! holder, a Barrier party — and check after each round that nobody hangs
//! (watchdog), no committed message is lost or duplicated beyond the one a
//! dead receiver held, no value is torn, and every lock can be taken.
//! `FAULT_ROUNDS` sets the rounds per kind (default 40: 360 rounds).

mod common;

use common::xorshift as next;
use shmkit::error::PoolError;

use common::{WATCHDOG, unique, watchdog};
use shmkit::pipe::Connection;
use shmkit::process::{Builder, Process};
use shmkit::queue::Rkyv;
use shmkit::queue::{self, RecvTimeoutError};
use shmkit::sync::{Barrier, BarrierTimeout, Mutex, RwLock, Semaphore};
use shmkit::{Array, Error, Message, Pool, SharedMap};
use std::time::Duration;

fn rounds() -> u64 {
    std::env::var("FAULT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

/// Lets the child run for a random while (0.1–3 ms), then SIGKILLs it.
fn kill_later<R: Message>(p: Process<R>, rng: &mut u64) {
    std::thread::sleep(Duration::from_micros(100 + next(rng) % 2900));
    p.kill().unwrap();
    assert_eq!(
        p.wait_timeout(WATCHDOG).unwrap(),
        Some(-libc::SIGKILL),
        "watchdog: child did not die"
    );
}

fn start<A: Message, R: Message>(f: fn(A) -> R, args: A) -> Process<R> {
    Builder::new().daemon(true).spawn(f, args).unwrap()
}

/// Holds the lock while it writes both halves, forever.
fn lock_holder(name: String) {
    let m = Mutex::<[u64; 2]>::open(&name).unwrap();
    for i in 1.. {
        let mut g = match m.lock() {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
        g[0] = i;
        std::hint::black_box(&mut *g);
        g[1] = i;
        g.mark_consistent();
    }
}

/// Under the write lock writes both halves (or, `read`, holds read locks),
/// forever.
fn rw_user((name, read): (String, bool)) {
    let l = RwLock::<[u64; 2]>::open(&name).unwrap();
    for i in 1.. {
        if read {
            let g = l.read();
            let _second = l.read();
            std::hint::black_box(g[0]);
        } else {
            let mut g = l.write();
            g[0] = i;
            std::hint::black_box(&mut *g);
            g[1] = i;
        }
    }
}

/// Holds both permits of a semaphore bounded at 2, taking them again and
/// again.
fn permit_holder(name: String) {
    let s = Semaphore::open(&name).unwrap();
    loop {
        let both = (s.permit().unwrap(), s.permit().unwrap());
        std::hint::black_box(&both);
    }
}

/// Arrives at a barrier of 2 that nobody else reaches: killed waiting.
fn lone_party(name: String) {
    let b = Barrier::open(&name).unwrap();
    loop {
        b.wait();
    }
}

fn send_forever(tx: queue::Sender<u64>) {
    for i in 0.. {
        if tx.send(i).is_err() {
            return;
        }
    }
}

/// Receives and counts each message in `seen` (one cell per message),
/// slowly (about 5 µs each), holding each message while it counts, so
/// that it is killed mid-stream.
fn count_received((mut rx, seen): (queue::Receiver<u64>, Array<u32>)) {
    while let Ok(v) = rx.recv_ref() {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_micros(5) {
            std::hint::spin_loop();
        }
        seen.atomic(*v as usize)
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn echo(c: Connection<Rkyv<u64>>) {
    while let Ok(v) = c.recv() {
        if c.send(&(v + 1)).is_err() {
            return;
        }
    }
}

fn slow(x: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(300));
    x
}

/// Rewrites pairs with equal halves, and removes some, forever.
fn map_writer(d: SharedMap<u64, [u64; 2]>) {
    let mut x = std::process::id() as u64 | 1;
    loop {
        let r = next(&mut x);
        if r.is_multiple_of(3) {
            d.remove(&(r % 32));
        } else {
            d.insert(r % 32, [r, r]).unwrap();
        }
    }
}

#[derive(Default, Debug)]
struct Counts {
    rounds: u64,
    kills: u64,
    owner_died: u64,
    queue_skipped: u64,
    queue_redelivered: u64,
    duplicates: u64,
    pool_workers_died: u64,
    pool_chunks_lost: u64,
    rw_half_writes: u64,
}

#[test]
fn random_kills_leave_everything_usable() {
    let _w = watchdog("fault injection");
    let n = rounds();
    let mut c = Counts::default();
    let mut rng = 0x5eed_u64 ^ std::process::id() as u64;

    // Lock holders.
    common::phase("Lock holders");
    let name = unique("fault-mutex");
    let m = Mutex::<[u64; 2]>::builder()
        .name(&name)
        .create([0, 0])
        .unwrap();
    for _ in 0..n {
        kill_later(start(lock_holder, name.clone()), &mut rng);
        match m.lock_timeout(WATCHDOG) {
            Ok(g) => assert_eq!(g[0], g[1], "a clean lock saw a half write"),
            Err(shmkit::sync::TryLockError::OwnerDied(e)) => {
                // The holder died mid-write: repair, then mark consistent.
                c.owner_died += 1;
                let mut g = e.into_inner();
                g[1] = g[0];
                g.mark_consistent();
            }
            Err(e) => panic!("the lock could not be taken: {e:?}"),
        }
        c.rounds += 1;
        c.kills += 1;
    }

    // Queue producers: what was committed arrives once, in order.
    common::phase("Queue producers");
    for _ in 0..n {
        let (tx, rx) = queue::bounded::<u64>(256).unwrap();
        let p = start(send_forever, tx);
        let mut expect = 0;
        // Take a few while it runs, then kill it and drain.
        for _ in 0..(next(&mut rng) % 200) {
            assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), expect);
            expect += 1;
        }
        kill_later(p, &mut rng);
        loop {
            match rx.recv_timeout(WATCHDOG) {
                Ok(v) => {
                    assert_eq!(v, expect, "lost or duplicated after a producer's death");
                    expect += 1;
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("receiver stuck after its producer died: {e}"),
            }
        }
        c.queue_skipped += rx.queue().stats().skipped;
        c.rounds += 1;
        c.kills += 1;
    }

    // Queue consumers: nothing lost; at most the one held message twice.
    common::phase("Queue consumers");
    for _ in 0..n {
        let total = 2000u64;
        let q = queue::Queue::<u64>::builder()
            .capacity(64)
            .create()
            .unwrap();
        let seen = Array::<u32>::new(total as usize).unwrap();
        let tx = q.sender().unwrap();
        let p = start(count_received, (q.receiver().unwrap(), seen.clone()));
        let rx = q.receiver().unwrap();
        let sender = std::thread::spawn(move || {
            for i in 0..total {
                tx.send_timeout(i, WATCHDOG).unwrap();
            }
        });
        kill_later(p, &mut rng);
        // Take the rest while the sender finishes (its blocked sends run the
        // recovery that hands the dead consumer's held message on).
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(v) => {
                    seen.atomic(v as usize)
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                // Done once the sender is and nothing is held by the dead.
                Err(RecvTimeoutError::Timeout) if sender.is_finished() && q.is_empty() => {
                    if !q.recover() {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break, // sent and drained
                Err(e) => panic!("consumer round: {e}"),
            }
        }
        sender.join().unwrap();
        let counts = seen.to_vec().unwrap();
        assert!(counts.iter().all(|&k| k >= 1), "a message was lost");
        let dup = counts.iter().filter(|&&k| k > 1).count() as u64;
        assert!(dup <= 1, "{dup} messages delivered twice");
        c.duplicates += dup;
        c.queue_redelivered += q.stats().redelivered;
        c.rounds += 1;
        c.kills += 1;
    }

    // Pipe ends: the survivor learns it at once, never hangs.
    common::phase("Pipe ends");
    for _ in 0..n {
        let (here, there) = shmkit::pipe::pipe::<Rkyv<u64>>().unwrap();
        let p = start(echo, there);
        here.send(&1u64).unwrap();
        assert_eq!(here.recv_timeout(WATCHDOG).unwrap(), 2);
        kill_later(p, &mut rng);
        let mut v = 2u64;
        loop {
            if here.send(&v).is_err() {
                break;
            }
            match here.recv_timeout(WATCHDOG) {
                Ok(w) => v = w,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("watchdog: pipe peer dead, recv timed out")
                }
                Err(_) => break,
            }
        }
        c.rounds += 1;
        c.kills += 1;
    }

    // Pool workers: the map finishes; at most the killed worker's chunk
    // fails.
    common::phase("Pool workers");
    let pool = Pool::builder().processes(2).build().unwrap();
    for _ in 0..n {
        let pending = pool.options().chunksize(1).map_async(slow, 0..20).unwrap();
        std::thread::sleep(Duration::from_micros(next(&mut rng) % 3000));
        let pids = pool.worker_pids();
        let victim = pids[(next(&mut rng) % pids.len() as u64) as usize];
        // SAFETY: kill(2) on a worker of ours.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        let mut pending = pending;
        match pending.get_timeout(WATCHDOG) {
            Ok(v) => assert_eq!(v, (0..20).collect::<Vec<_>>()),
            Err(Error::Pool(PoolError::WorkerDied { pid, .. })) => assert_eq!(pid, victim),
            Err(e) => panic!("pool round: {e}"),
        }
        c.rounds += 1;
        c.kills += 1;
    }
    let s = pool.stats();
    (c.pool_workers_died, c.pool_chunks_lost) = (s.workers_died, s.chunks_lost);
    assert!(s.chunks_lost <= n);
    drop(pool);

    // Map writers: every entry whole, the count right, the stripes usable.
    common::phase("Map writers");
    let d = SharedMap::<u64, [u64; 2]>::new(32).unwrap();
    for round in 0..n {
        kill_later(start(map_writer, d.clone()), &mut rng);
        let all = d.snapshot();
        for (k, v) in &all {
            assert!(*k < 32);
            assert_eq!(v[0], v[1], "torn map entry");
        }
        assert_eq!(d.len(), all.len(), "count drifted");
        d.insert(1000 + round, [round, round]).unwrap();
        assert_eq!(d.remove(&(1000 + round)), Some([round, round]));
        c.rounds += 1;
        c.kills += 1;
    }

    // RwLock writers and readers: the lock is released; a writer may have
    // left a half write (an RwLock does not report it), which we repair.
    common::phase("RwLock writers and readers");
    let name = unique("fault-rwlock");
    let l = RwLock::<[u64; 2]>::builder()
        .name(&name)
        .create([0, 0])
        .unwrap();
    for round in 0..n {
        kill_later(start(rw_user, (name.clone(), round % 2 == 0)), &mut rng);
        let mut g = l
            .write_timeout(WATCHDOG)
            .expect("watchdog: RwLock never released");
        if g[0] != g[1] {
            c.rw_half_writes += 1;
            g[1] = g[0];
        }
        drop(g);
        assert!(l.try_read().is_some(), "readers locked out after a death");
        c.rounds += 1;
        c.kills += 1;
    }

    // Semaphore holders: their permits come back.
    common::phase("Semaphore holders");
    let name = unique("fault-sem");
    let s = Semaphore::builder()
        .name(&name)
        .create_bounded(2, 2)
        .unwrap();
    for _ in 0..n {
        kill_later(start(permit_holder, name.clone()), &mut rng);
        let both = (
            s.permit_timeout(WATCHDOG)
                .expect("watchdog: a permit was lost"),
            s.permit_timeout(WATCHDOG)
                .expect("watchdog: a permit was lost"),
        );
        drop(both);
        assert_eq!(s.value(), 2, "permits lost or invented");
        c.rounds += 1;
        c.kills += 1;
    }

    // Barrier parties: a party killed after arriving is withdrawn; nobody
    // passes one short; a live party still gets through.
    common::phase("Barrier parties");
    let name = unique("fault-barrier");
    let b = Barrier::builder().name(&name).create(2).unwrap();
    for _ in 0..n {
        kill_later(start(lone_party, name.clone()), &mut rng);
        assert_eq!(
            b.wait_timeout(Duration::from_millis(30)),
            Err(BarrierTimeout),
            "passed the barrier on a dead party's arrival"
        );
        let b2 = b.clone();
        let other = std::thread::spawn(move || b2.wait_timeout(WATCHDOG));
        b.wait_timeout(WATCHDOG).expect("watchdog: barrier stuck");
        other.join().unwrap().expect("watchdog: barrier stuck");
        c.rounds += 1;
        c.kills += 1;
    }

    println!("fault injection: {c:?}");
    assert_eq!(c.rounds, 9 * n);
}

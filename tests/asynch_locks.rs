//! The locks' futures (feature `async`) across real processes, on tokio
//! (current-thread with a `LocalSet`, and multi-thread) and on `futures`'
//! executors. `Mutex::lock_async` excludes blocking lockers in other
//! processes and tasks of one thread (a guard held across `.await` by one
//! task makes the other wait, not panic), sees a killed holder as
//! `OwnerDied`, and a future dropped while pending takes nothing.
//! `RwLock::read_async`/`write_async` guards are `Send` and held across
//! awaits; a write future dropped while pending takes back its claim.

mod common;

use common::{WATCHDOG, unique, watchdog};
use shmkit::process::{Builder, Process};
use shmkit::sync::{Mutex, OwnerDied};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

fn start<A: shmkit::Message, R: shmkit::Message>(f: fn(A) -> R, args: A) -> Process<R> {
    Builder::new().daemon(true).spawn(f, args).unwrap()
}

/// Adds 1, `n` times, under the blocking lock, as a read, a pause and a
/// write: two holders at once would lose counts.
fn add_blocking((name, n): (String, u64)) {
    let m = Mutex::<u64>::open(&name).unwrap();
    for _ in 0..n {
        let mut g = m.lock().unwrap();
        let v = *g;
        for _ in 0..20 {
            std::hint::spin_loop();
        }
        *g = v + 1;
    }
}

/// Yields to the executor once (futures has no `yield_now`).
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Adds 1, `n` times, holding the guard across a yield to the executor,
/// so the other tasks of this thread find the lock held by their own
/// thread.
async fn add_across_yields(m: Mutex<u64>, n: u64) {
    for _ in 0..n {
        let mut g = m.lock_async().await.unwrap();
        let v = *g;
        YieldOnce(false).await;
        *g = v + 1;
    }
}

fn is_send<T: Send>(_: &T) {}

/// Polls `f` once with a waker that does nothing: it must be pending.
fn assert_pending_once<F: Future>(f: Pin<&mut F>) {
    let waker = futures::task::noop_waker();
    assert!(f.poll(&mut Context::from_waker(&waker)).is_pending());
}

/// SIGKILLs our child `pid` after `delay`, from a thread of its own.
fn kill_after(pid: u32, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    })
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write; a clock every Linux has.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn lock_async_excludes_processes_and_tasks_of_one_thread() {
    let _w = watchdog("lock_async counting");
    let name = unique("ml");
    let m = Mutex::<u64>::builder().name(&name).create(0).unwrap();
    is_send(&m.lock_async());

    // Two processes lock blocking while two tasks of one thread await the
    // lock and hold it across a yield (current-thread tokio, LocalSet).
    let children: Vec<_> = (0..2)
        .map(|_| start(add_blocking, (name.clone(), 2000)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let a = tokio::task::spawn_local(add_across_yields(m.clone(), 500));
        let b = tokio::task::spawn_local(add_across_yields(m.clone(), 500));
        a.await.unwrap();
        b.await.unwrap();
    });
    for mut c in children {
        c.join_timeout(WATCHDOG).unwrap().expect("watchdog");
    }
    assert_eq!(*m.lock().unwrap(), 2 * 2000 + 2 * 500);

    // Multi-thread tokio: Send tasks drop the guard before each await.
    let child = start(add_blocking, (name.clone(), 2000));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                tokio::spawn(async move {
                    for _ in 0..300 {
                        {
                            let mut g = m.lock_async().await.unwrap();
                            *g += 1;
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let mut child = child;
    child.join_timeout(WATCHDOG).unwrap().expect("watchdog");
    assert_eq!(*m.lock().unwrap(), 5000 + 2000 + 4 * 300);

    // futures' LocalPool: three local tasks, one edge each: 1 iteration,
    // many, and a `Lock` (a mutex over nothing) awaited in between.
    let mut pool = futures::executor::LocalPool::new();
    let spawner = pool.spawner();
    for n in [1, 200, 37] {
        futures::task::LocalSpawnExt::spawn_local(&spawner, add_across_yields(m.clone(), n))
            .unwrap();
    }
    let lock = shmkit::sync::Lock::new(()).unwrap();
    pool.run_until(async {
        let g = lock.lock_async().await.unwrap();
        YieldOnce(false).await;
        drop(g);
    });
    pool.run();
    assert_eq!(*m.lock().unwrap(), 7000 + 1200 + 238);
    assert!(m.try_lock().is_ok() && lock.try_lock().is_ok());
}

/// Takes the lock and keeps it until killed.
fn hold_until_killed(name: String) {
    let m = Mutex::<u64>::open(&name).unwrap();
    let mut g = m.lock().unwrap();
    *g = 41;
    std::mem::forget(g);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn lock_async_waits_for_a_live_holder_and_takes_over_from_a_killed_one() {
    let _w = watchdog("lock_async and a killed holder");
    let name = unique("mk");
    let m = Mutex::<u64>::builder().name(&name).create(0).unwrap();
    let holder = start(hold_until_killed, name.clone());
    while m.try_lock().is_ok() {
        std::thread::sleep(Duration::from_millis(1));
    }

    // Dropped while pending: takes nothing (polled once, then dropped;
    // then timed out by tokio after 1 ms and after 300 ms).
    let mut pending = Box::pin(m.lock_async());
    assert_pending_once(pending.as_mut());
    drop(pending);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        for ms in [1, 300] {
            let cpu = thread_cpu();
            let waited = tokio::time::timeout(Duration::from_millis(ms), m.lock_async()).await;
            assert!(waited.is_err(), "a live holder's lock was taken");
            // Pending, the future sleeps: the executor's thread polls it
            // only when woken (by its look, every 50 ms), it does not spin
            // (with the holder's word left unmarked it polled non-stop).
            if ms == 300 {
                let used = thread_cpu() - cpu;
                assert!(
                    used < Duration::from_millis(75),
                    "{used:?} of CPU while pending"
                );
            }
        }
    });

    // The holder is killed while a task awaits: the task gets the lock
    // with OwnerDied and the holder's value.
    let pid = holder.pid();
    let killer = kill_after(pid, Duration::from_millis(20));
    rt.block_on(async {
        let died: OwnerDied<_> = match m.lock_async().await {
            Ok(_) => panic!("a killed holder's lock came back clean"),
            Err(e) => e,
        };
        let mut g = died.into_inner();
        assert_eq!(*g, 41);
        *g = 42;
        g.mark_consistent();
    });
    killer.join().unwrap();
    let mut holder = holder;
    let _ = holder.join_timeout(WATCHDOG);
    assert_eq!(*m.lock().unwrap(), 42, "consistent again");
    assert!(!m.is_poisoned());
}

/// Writes (a read, a pause, a write) `n` times under the blocking write
/// lock.
fn write_blocking((name, n): (String, u64)) {
    let l = shmkit::sync::RwLock::<u64>::open(&name).unwrap();
    for _ in 0..n {
        let mut g = l.write();
        let v = *g;
        for _ in 0..20 {
            std::hint::spin_loop();
        }
        *g = v + 1;
    }
}

/// Holds a read lock until the event named `name-go` is set.
fn read_until_told(name: String) {
    let l = shmkit::sync::RwLock::<u64>::open(&name).unwrap();
    let go = shmkit::sync::Event::open(&format!("{name}-go")).unwrap();
    let r = l.read();
    go.wait();
    drop(r);
}

/// Takes the write lock and keeps it until killed.
fn write_until_killed(name: String) {
    let l = shmkit::sync::RwLock::<u64>::open(&name).unwrap();
    let mut g = l.write();
    *g = 100;
    std::mem::forget(g);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn rwlock_futures_hold_guards_across_awaits_and_withdraw_when_dropped() {
    use shmkit::sync::{Event, RwLock};
    let _w = watchdog("rwlock futures");
    let name = unique("rw");
    let l = RwLock::<u64>::builder().name(&name).create(0).unwrap();
    let go = Event::builder()
        .name(format!("{name}-go"))
        .create()
        .unwrap();

    // A reader in another process: a write future waits, claiming "writer
    // waiting"; dropped, it takes the claim back, so a reader on another
    // thread of ours (a thread identity, not the process's) gets in.
    let reader = start(read_until_told, name.clone());
    while l.try_write().is_some() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut pending = Box::pin(l.write_async());
    assert_pending_once(pending.as_mut());
    let blocked = std::thread::scope(|s| s.spawn(|| l.try_read().is_some()).join().unwrap());
    assert!(!blocked, "a waiting writer lets no new reader in");
    drop(pending);
    let let_in = std::thread::scope(|s| s.spawn(|| l.try_read().is_some()).join().unwrap());
    assert!(let_in, "the dropped writer's claim was taken back");

    // Awaited for real: the reader process lets go, the writer gets in.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let w = tokio::spawn({
            let l = l.clone();
            async move {
                let mut w = l.write_async().await.unwrap();
                *w += 1;
            }
        });
        tokio::task::yield_now().await;
        go.set();
        w.await.unwrap();
    });
    let mut reader = reader;
    reader.join_timeout(WATCHDOG).unwrap().expect("watchdog");
    assert_eq!(*l.read(), 1);

    // Guards held across awaits on a multi-thread runtime (they are Send),
    // against a process writing blocking: every count kept; no write while
    // a reader holds its guard across a yield.
    let writer = start(write_blocking, (name.clone(), 1000));
    rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let l = l.clone();
                tokio::spawn(async move {
                    for _ in 0..200 {
                        if i % 2 == 0 {
                            let mut w = l.write_async().await.unwrap();
                            let v = *w;
                            tokio::task::yield_now().await;
                            *w = v + 1;
                        } else {
                            let r = l.read_async().await.unwrap();
                            let v = *r;
                            tokio::task::yield_now().await;
                            assert_eq!(*r, v, "a write while we read");
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let mut writer = writer;
    writer.join_timeout(WATCHDOG).unwrap().expect("watchdog");
    assert_eq!(*l.read(), 1 + 1000 + 2 * 200);
    let r = futures::executor::block_on(l.read_async()).unwrap();
    is_send(&r);
    // The main thread's blocking read shares the process's record.
    let r2 = l.read();
    drop((r, r2));
    assert!(l.try_write().is_some(), "every read given back");

    // A writer killed holding the lock: an awaiting reader gets in.
    let holder = start(write_until_killed, name.clone());
    while l.try_read().is_some() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = holder.pid();
    let killer = kill_after(pid, Duration::from_millis(20));
    let seen = futures::executor::block_on(async { *l.read_async().await.unwrap() });
    assert_eq!(seen, 100);
    killer.join().unwrap();
    let mut holder = holder;
    let _ = holder.join_timeout(WATCHDOG);
}

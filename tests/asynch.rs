//! The async face (feature `async`) across real processes, on two
//! executors (tokio, current-thread and multi-thread; `futures`' own
//! `block_on` and thread pool): pending futures are served by a few waiter
//! threads, not one each; every message arrives exactly once, also when
//! futures are dropped mid-wait; a killed sender is seen as `Disconnected`.

mod common;

use common::{WATCHDOG, unique, watchdog};
use shmkit::process::{Builder, Process};
use shmkit::queue::{self, Queue, RecvError, SendError};
use shmkit::sync::Event;
use std::time::Duration;

/// Threads of this process named as shmkit's async waiters.
fn waiter_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == "shmkit-async")
        .count()
}

fn start<A: shmkit::Message, R: shmkit::Message>(f: fn(A) -> R, args: A) -> Process<R> {
    Builder::new().daemon(true).spawn(f, args).unwrap()
}

/// A feeder: opens the queues `{base}-{from..to}` and sends `i * 1000 + k`
/// to queue `i`, for k in 0..per, round-robin over its queues.
fn feed((base, from, to, per): (String, u64, u64, u64)) {
    let senders: Vec<_> = (from..to)
        .map(|i| {
            Queue::<u64>::open(&format!("{base}-{i}"))
                .unwrap()
                .sender()
                .unwrap()
        })
        .collect();
    for k in 0..per {
        for (i, tx) in (from..to).zip(&senders) {
            tx.send(i * 1000 + k).unwrap();
        }
    }
}

fn named_queues(base: &str, n: u64) -> Vec<Queue<u64>> {
    (0..n)
        .map(|i| {
            Queue::<u64>::builder()
                .name(format!("{base}-{i}"))
                .capacity(4)
                .create()
                .unwrap()
        })
        .collect()
}

/// Starts 4 feeder processes over `n` queues (a quarter each).
fn feeders(base: &str, n: u64, per: u64) -> Vec<Process<()>> {
    (0..4)
        .map(|f| start(feed, (base.to_owned(), f * n / 4, (f + 1) * n / 4, per)))
        .collect()
}

fn join_all(ps: Vec<Process<()>>) {
    for mut p in ps {
        p.join_timeout(WATCHDOG).unwrap().expect("watchdog");
    }
}

/// 1,000 receives pending at once on 1,000 queues, fed by 4 processes, on
/// tokio's multi-thread runtime: every message once and in order per
/// queue, served by ~8 waiter threads.
#[test]
fn a_thousand_pending_receives_share_a_few_waiter_threads() {
    let _w = watchdog("1,000 pending receives");
    const N: u64 = 1000;
    const PER: u64 = 3;
    let base = unique("aq");
    let queues = named_queues(&base, N);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let tasks: Vec<_> = queues
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let mut rx = q.receiver().unwrap();
            rt.spawn(async move {
                let mut got = Vec::new();
                for _ in 0..PER {
                    got.push(rx.recv_async().await.unwrap());
                }
                (i as u64, got)
            })
        })
        .collect();
    // Let every task reach its first await (none has a message yet).
    common::wait_until("the waiters to start", || waiter_threads() >= 1);
    std::thread::sleep(Duration::from_millis(100));
    let during = waiter_threads();
    eprintln!("{during} waiter threads while 1,000 receives are pending");
    let feeders = feeders(&base, N, PER);
    let results: Vec<(u64, Vec<u64>)> = rt.block_on(async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    join_all(feeders);
    for (i, got) in results {
        let want: Vec<u64> = (0..PER).map(|k| i * 1000 + k).collect();
        assert_eq!(got, want, "queue {i}");
    }
    // 1,000 registrations need ceil(1000 / 127) = 8 threads; other tests of
    // this binary may add some of theirs.
    assert!((1..=16).contains(&during), "{during} waiter threads");
}

/// Futures dropped while pending (a `select!` whose other branch wins, as
/// a timeout or a shutdown does) lose no message.
#[test]
fn dropping_pending_receives_loses_nothing() {
    let _w = watchdog("cancelled receives");
    const N: u64 = 40;
    const PER: u64 = 50;
    let base = unique("ac");
    let queues = named_queues(&base, N);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let feeders = feeders(&base, N, PER);
    let (results, cancelled) = rt.block_on(async {
        let tasks: Vec<_> = queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let mut rx = q.receiver().unwrap();
                tokio::spawn(async move {
                    let (mut got, mut cancelled) = (Vec::new(), 0u64);
                    while got.len() < PER as usize {
                        tokio::select! {
                            r = rx.recv_async() => got.push(r.unwrap()),
                            _ = tokio::time::sleep(Duration::from_micros(50 + 37 * i as u64 % 400)) => {
                                cancelled += 1;
                            }
                        }
                    }
                    (i as u64, got, cancelled)
                })
            })
            .collect();
        let (mut out, mut cancelled) = (Vec::new(), 0);
        for t in tasks {
            let (i, got, c) = t.await.unwrap();
            out.push((i, got));
            cancelled += c;
        }
        (out, cancelled)
    });
    join_all(feeders);
    for (i, got) in results {
        let want: Vec<u64> = (0..PER).map(|k| i * 1000 + k).collect();
        assert_eq!(got, want, "queue {i}: every message once, in order");
    }
    eprintln!("{cancelled} receives were dropped while pending");
}

fn hold_sender_forever(tx: queue::Sender<u64>) {
    tx.send(1).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// An awaiting receiver whose only sender is SIGKILLed gets `Disconnected`.
#[test]
fn a_killed_sender_disconnects_an_awaiting_receiver() {
    let _w = watchdog("killed sender, async");
    let (tx, mut rx) = queue::bounded::<u64>(4).unwrap();
    let p = start(hold_sender_forever, tx);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(rx.recv_async().await, Ok(1));
        // Now it waits: kill the sender meanwhile.
        let kill = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            p.kill().unwrap();
            p
        });
        assert_eq!(rx.recv_async().await, Err(RecvError::Disconnected));
        let p = kill.join().unwrap();
        p.wait_timeout(WATCHDOG).unwrap();
    });
}

fn drain_slowly((rx, n): (queue::Receiver<u64>, u64)) -> Vec<u64> {
    (0..n)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(1));
            rx.recv().unwrap()
        })
        .collect()
}

/// `send_async` on a full queue of one slot waits for room that another
/// process makes, on `futures`' own executor; with no receiver left it
/// gives the message back.
#[test]
fn send_async_waits_for_room_made_by_another_process() {
    let _w = watchdog("send_async");
    let (mut tx, rx) = queue::bounded::<u64>(1).unwrap();
    let mut p = start(drain_slowly, (rx, 20));
    futures::executor::block_on(async {
        for i in 0..20 {
            tx.send_async(i).await.unwrap();
        }
    });
    let got = p.join_timeout(WATCHDOG).unwrap().expect("watchdog");
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    // The receiver is gone: the message comes back.
    let r = futures::executor::block_on(tx.send_async(99));
    assert!(matches!(r, Err(SendError::Disconnected(99))), "{r:?}");
}

fn set_later(name: String) {
    let e = Event::open(&name).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    e.set();
}

/// `Event::wait_async` on a thread pool of `futures`, set by another
/// process; and byte messages both ways.
#[test]
fn event_and_byte_messages_on_a_futures_thread_pool() {
    let _w = watchdog("event, bytes");
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(2)
        .create()
        .unwrap();
    let name = unique("ae");
    let e = Event::builder().name(&name).create().unwrap();
    let mut p = start(set_later, name);
    let (tx, rx) = futures::channel::oneshot::channel();
    let e2 = e.clone();
    pool.spawn_ok(async move {
        e2.wait_async().await;
        tx.send(()).unwrap();
    });
    futures::executor::block_on(rx).unwrap();
    assert!(e.is_set());
    p.join_timeout(WATCHDOG).unwrap().expect("watchdog");

    let q = queue::Queue::<queue::Bytes>::builder()
        .capacity(2)
        .max_message(64)
        .create()
        .unwrap();
    let (mut tx, mut rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let got = futures::executor::block_on(async {
        let send = async {
            for i in 0..10u8 {
                tx.send_bytes_async(&[i; 3]).await.unwrap();
            }
        };
        let recv = async {
            let mut got = Vec::new();
            for _ in 0..10 {
                got.push(rx.recv_vec_async().await.unwrap());
            }
            got
        };
        futures::join!(send, recv).1
    });
    assert_eq!(got, (0..10u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
}

/// Typed messages (rkyv) through `recv_async`/`send_async` on tokio; a
/// message too large for its slot is an error, not a wait.
#[test]
fn typed_messages_await_too() {
    let _w = watchdog("typed async");
    let q = Queue::<queue::Rkyv<String>>::builder()
        .capacity(2)
        .max_message(64)
        .create()
        .unwrap();
    let (mut tx, mut rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let send = async {
            for i in 0..10 {
                tx.send_async(format!("message {i}")).await.unwrap();
            }
            let r = tx.send_async("x".repeat(1000)).await;
            assert!(matches!(r, Err(SendError::TooLarge { .. })), "{r:?}");
        };
        let recv = async {
            for i in 0..10 {
                assert_eq!(rx.recv_async().await.unwrap(), format!("message {i}"));
            }
        };
        tokio::join!(send, recv);
    });
}

fn echo(conn: shmkit::pipe::Connection<queue::Rkyv<u64>>) -> u64 {
    let mut n = 0;
    while let Ok(v) = conn.recv() {
        std::thread::sleep(Duration::from_micros(200));
        conn.send(&(v + 1)).unwrap();
        n += 1;
    }
    n
}

fn send_then_hang(conn: shmkit::pipe::Connection<u64>) {
    conn.send(5).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A pipe end awaited on tokio: a round trip with a child per message, then
/// a SIGKILLed peer is `Disconnected` for the awaiting end.
#[test]
fn pipe_ends_await_replies_and_see_a_killed_peer() {
    let _w = watchdog("pipe async");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let (mut here, there) = shmkit::pipe::pipe::<queue::Rkyv<u64>>().unwrap();
    let mut child = start(echo, there);
    let v = rt.block_on(async move {
        let mut v = 0u64;
        for _ in 0..100 {
            here.send(&v).unwrap();
            v = here.recv_async().await.unwrap();
        }
        v
    });
    assert_eq!(v, 100);
    assert_eq!(child.join_timeout(WATCHDOG).unwrap(), Some(100));

    let (mut here, there) = shmkit::pipe::pipe::<u64>().unwrap();
    let p = start(send_then_hang, there);
    rt.block_on(async {
        assert_eq!(here.recv_async().await, Ok(5));
        let kill = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            p.kill().unwrap();
            p
        });
        assert_eq!(here.recv_async().await, Err(RecvError::Disconnected));
        kill.join().unwrap().wait_timeout(WATCHDOG).unwrap();
    });
}

fn send_one_later((tx, v): (queue::Sender<u64>, u64)) {
    std::thread::sleep(Duration::from_millis(20));
    tx.send(v).unwrap();
}

/// `Select::ready_async` over two queues and a pipe end on tokio: the
/// source another process sends on is the one returned; a source whose
/// only sender is SIGKILLed becomes ready, and its receive says
/// `Disconnected`.
#[test]
fn select_awaits_whichever_source_is_ready() {
    let _w = watchdog("select async");
    let (_tx1, rx1) = queue::bounded::<u64>(4).unwrap();
    let (tx2, rx2) = queue::bounded::<u64>(4).unwrap();
    let (_here, there) = shmkit::pipe::pipe::<u64>().unwrap();
    let mut sel = shmkit::select::Select::new();
    sel.recv(&rx1);
    let second = sel.recv(&rx2);
    sel.conn(&there);
    let mut p = start(send_one_later, (tx2, 7));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(sel.ready_async()), second);
    assert_eq!(rx2.try_recv(), Ok(7));
    p.join_timeout(WATCHDOG).unwrap().expect("watchdog");
    // The feeder ended and dropped its sender: the source is ready again,
    // as disconnected.
    assert_eq!(rt.block_on(sel.ready_async()), second);
    assert_eq!(rx2.try_recv(), Err(queue::TryRecvError::Disconnected));

    // A sender killed while the select is pending.
    let (tx3, rx3) = queue::bounded::<u64>(4).unwrap();
    let mut sel = shmkit::select::Select::new();
    sel.recv(&rx1);
    let third = sel.recv(&rx3);
    let p = start(hold_sender_forever, tx3);
    assert_eq!(rt.block_on(sel.ready_async()), third);
    assert_eq!(rx3.try_recv(), Ok(1));
    let kill = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        p.kill().unwrap();
        p
    });
    assert_eq!(rt.block_on(sel.ready_async()), third);
    assert_eq!(rx3.try_recv(), Err(queue::TryRecvError::Disconnected));
    kill.join().unwrap().wait_timeout(WATCHDOG).unwrap();
}

/// Threads of this process named as shmkit's exit watcher.
fn exit_watchers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == "shmkit-exits")
        .count()
}

/// Sleeps `i % 7` × 20 ms, then returns `i`; 13 panics and 17 kills itself.
fn linger(i: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(i % 7 * 20));
    match i {
        13 => panic!("thirteen"),
        // SAFETY: a signal at ourselves: the test wants this child dead.
        17 => unsafe {
            libc::raise(libc::SIGKILL);
        },
        _ => {}
    }
    i
}

/// Waits until the event `name` is set; returns 100.
fn wait_for_event(name: String) -> u64 {
    Event::open(&name).unwrap().wait();
    100
}

/// `join_async` of 100 spawned processes at once on tokio's multi-thread
/// runtime (and one more that ends only when told): one watcher thread
/// sleeps on all of them; each future gets its own child's value, or its
/// panic or death; the thread ends with the last.
#[test]
fn joining_a_hundred_processes_at_once_takes_one_watcher_thread() {
    let _w = watchdog("100 joins");
    let name = unique("aj");
    let go = Event::builder().name(&name).create().unwrap();
    let mut children: Vec<Process<u64>> = (0..100).map(|i| start(linger, i)).collect();
    children.push(start(wait_for_event, name));
    let pids: Vec<u32> = children.iter().map(Process::pid).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let (results, watchers) = rt.block_on(async {
        let tasks: Vec<_> = children
            .into_iter()
            .map(|p| tokio::spawn(p.join_async()))
            .collect();
        // The last child is pending until the event is set: wait for its
        // registration (its task may not have run yet).
        while exit_watchers() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let watchers = exit_watchers();
        go.set();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        (results, watchers)
    });
    assert_eq!(watchers, 1, "exit watcher threads");
    for (i, r) in results.into_iter().enumerate() {
        match (i, r) {
            (
                13,
                Err(shmkit::Error::Process(shmkit::error::ProcessError::Panicked {
                    message, ..
                })),
            ) => assert_eq!(message, "thirteen"),
            (
                17,
                Err(shmkit::Error::Process(shmkit::error::ProcessError::Died {
                    exitcode,
                    pid,
                    ..
                })),
            ) => {
                assert_eq!(exitcode, -libc::SIGKILL);
                assert_eq!(pid, pids[17]);
            }
            (i, Ok(v)) => assert_eq!(v, i as u64),
            (i, other) => panic!("child {i}: {other:?}"),
        }
    }
    // No registration is left, so the thread ends (the watchdog bounds this).
    while exit_watchers() != 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        shmkit::process::active_children()
            .iter()
            .all(|c| !pids.contains(&c.pid))
    );
}

/// The edges of `join_async`: a child already ended before the first poll,
/// a future dropped while pending (the child runs on and is reaped; the
/// watcher lets go), and `futures`' own executor.
#[test]
fn join_async_edges_on_the_futures_executor() {
    let _w = watchdog("join_async edges");
    // Ended (not yet reaped) before the future is polled.
    let done = start(linger, 0);
    while !std::path::Path::new(&format!("/proc/{}/stat", done.pid())).exists()
        || !std::fs::read_to_string(format!("/proc/{}/stat", done.pid()))
            .unwrap()
            .contains(") Z")
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(futures::executor::block_on(done.join_async()).unwrap(), 0);

    // Dropped while pending: polled once, then dropped.
    let slow = start(linger, 6);
    let slow_pid = slow.pid();
    let mut fut = Box::pin(slow.join_async());
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    drop(fut);
    while exit_watchers() != 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The handle dropped with the future; the child is reaped once it ends.
    while shmkit::process::active_children()
        .iter()
        .any(|c| c.pid == slow_pid)
    {
        std::thread::sleep(Duration::from_millis(5));
    }

    // Joined concurrently on one thread.
    let (a, b) = futures::executor::block_on(async {
        futures::join!(start(linger, 4).join_async(), start(linger, 1).join_async())
    });
    assert_eq!((a.unwrap(), b.unwrap()), (4, 1));
}

/// Compiles only for `Send` values (for spawning on a multi-thread runtime).
fn is_send<T: Send>(_: &T) {}

fn square(x: u64) -> u64 {
    x * x
}

fn refuse_three(x: u64) -> u64 {
    assert_ne!(x, 3, "no threes");
    x
}

/// Pool results awaited: `apply_async` and `map_async` as futures,
/// `imap`/`imap_unordered` as streams, on tokio's current-thread runtime
/// (where the pool's collector thread must wake the task: nothing else
/// runs), at their edges: no items, one worker, chunks of one.
#[test]
fn pool_results_are_futures_and_imap_is_a_stream() {
    use futures::StreamExt;
    let _w = watchdog("pool futures");
    let pool = shmkit::pool::Pool::builder().processes(1).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(pool.apply_async(square, 12).unwrap().await.unwrap(), 144);
        let all = pool.map_async(square, 0..1000u64).unwrap().await.unwrap();
        assert_eq!(all, (0..1000u64).map(square).collect::<Vec<_>>());
        assert!(
            pool.map_async(square, Vec::<u64>::new())
                .unwrap()
                .await
                .unwrap()
                .is_empty()
        );
        match pool.map_async(refuse_three, 0..10).unwrap().await {
            Err(shmkit::Error::Pool(shmkit::error::PoolError::TaskPanicked { message })) => {
                assert!(message.contains("no threes"), "{message}")
            }
            other => panic!("{other:?}"),
        }

        let ordered: Vec<u64> = pool
            .options()
            .chunksize(1)
            .lookahead(1)
            .imap(square, 0..50u64)
            .into_stream()
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(ordered, (0..50u64).map(square).collect::<Vec<_>>());
        let mut any: Vec<u64> = pool
            .imap_unordered(square, 0..200u64)
            .into_stream()
            .map(Result::unwrap)
            .collect()
            .await;
        any.sort_unstable();
        assert_eq!(any, (0..200u64).map(square).collect::<Vec<_>>());
        let none = pool.imap(square, Vec::<u64>::new()).into_stream();
        is_send(&none);
        let none: Vec<_> = none.collect().await;
        assert!(none.is_empty());
        let failed: Vec<bool> = pool
            .imap(refuse_three, 0..5)
            .into_stream()
            .map(|r| r.is_ok())
            .collect()
            .await;
        assert_eq!(failed, [true, true, true, false, true]);

        // A pending map dropped half-way: the pool goes on serving.
        let pending = pool.map_async(linger, 0..7u64).unwrap();
        tokio::select! {
            _ = pending => panic!("seven lingering items in 1 ms"),
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
        assert_eq!(pool.apply_async(square, 3).unwrap().await.unwrap(), 9);
    });
    // Another executor: futures' block_on, with the pool on 2 workers.
    let two = shmkit::pool::Pool::builder().processes(2).build().unwrap();
    let got = futures::executor::block_on(two.map_async(square, 0..100u64).unwrap()).unwrap();
    assert_eq!(got.len(), 100);
}

/// Releases 3 permits of the semaphore `name`, 10 ms apart.
fn release_three(name: String) {
    let s = shmkit::sync::Semaphore::open(&name).unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(10));
        s.release().unwrap();
    }
}

/// Takes the only permit of the semaphore `name` as a `ProcessPermit` on a
/// thread that then ends, and holds it (on the main thread) until killed.
fn hold_permit_until_killed(name: String) {
    let s = shmkit::sync::Semaphore::open(&name).unwrap();
    let p = std::thread::scope(|scope| {
        scope
            .spawn(|| futures::executor::block_on(s.permit_async()).unwrap())
            .join()
            .unwrap()
    });
    std::thread::sleep(Duration::from_secs(3600));
    drop(p);
}

/// Semaphore futures: permits released by another process wake awaiting
/// tasks (value 0 to start with); a dropped pending acquire takes nothing;
/// a `ProcessPermit` is held across `.await` on another thread of a
/// multi-thread runtime; one taken on a thread that ended stays its live
/// process's; a process killed holding one gives it back to an awaiting
/// task.
#[test]
fn semaphore_futures_across_processes() {
    use std::future::Future;
    let _w = watchdog("semaphore futures");
    let name = unique("as");
    let s = shmkit::sync::Semaphore::builder()
        .name(&name)
        .create(0)
        .unwrap();

    // Dropped while pending: takes nothing.
    let mut pending = Box::pin(s.acquire_async());
    let waker = futures::task::noop_waker();
    assert!(
        pending
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
            .is_pending()
    );
    drop(pending);

    let mut p = start(release_three, name.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let permit = async {
            let p = s.permit_async().await.unwrap();
            // Held across an await (the task may resume on another thread).
            tokio::time::sleep(Duration::from_millis(5)).await;
            p
        };
        let (a, b, permit) = tokio::join!(s.acquire_async(), s.acquire_async(), permit);
        a.unwrap();
        b.unwrap();
        assert_eq!(s.value(), 0);
        drop(permit);
        assert_eq!(s.value(), 1, "the permit came back on drop");
    });
    p.join_timeout(WATCHDOG).unwrap().expect("watchdog");
    assert!(s.try_acquire());

    // A holder killed with its permit: the awaiting task gets it.
    let s1 = shmkit::sync::Semaphore::builder()
        .name(format!("{name}-1"))
        .create(1)
        .unwrap();
    let holder = start(hold_permit_until_killed, format!("{name}-1"));
    while s1.value() != 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The thread that took it has ended, but the process lives: the permit
    // is the process's, so an awaiting task does not get it (with a thread
    // identity it would, after the first reap).
    rt.block_on(async {
        let waited = tokio::time::timeout(Duration::from_millis(100), s1.permit_async()).await;
        assert!(waited.is_err(), "a live process's permit was given away");
    });
    let killer = std::thread::spawn({
        let pid = holder.pid();
        move || {
            std::thread::sleep(Duration::from_millis(30));
            // SAFETY: kill(2) on our own child, which we have not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let permit = rt.block_on(s1.permit_async()).unwrap();
    assert_eq!(s1.value(), 0);
    drop(permit);
    assert_eq!(s1.value(), 1);
    killer.join().unwrap();
    drop(holder);
}

/// Meets at the barrier `name` `rounds` times; how often it was the leader.
fn meet((name, rounds): (String, u32)) -> u32 {
    let b = shmkit::sync::Barrier::open(&name).unwrap();
    (0..rounds).map(|_| u32::from(b.wait().is_leader())).sum()
}

/// Arrives at the barrier `name` awaiting `wait_async`, which never opens
/// (the test kills this process meanwhile).
fn arrive_and_die(name: String) {
    let b = shmkit::sync::Barrier::open(&name).unwrap();
    futures::executor::block_on(b.wait_async());
    unreachable!("the barrier opened without the test's party");
}

/// `Barrier::wait_async`: two tasks of this process and a blocking child
/// meet 5 times with one leader per round; a future dropped after arriving
/// withdraws its arrival; a process killed after an async arrival is
/// withdrawn, so the survivor waits for a live party.
#[test]
fn barrier_wait_async_meets_processes_and_withdraws_cancelled_arrivals() {
    use std::future::Future;
    let _w = watchdog("barrier futures");
    let name = unique("ab");
    let b = shmkit::sync::Barrier::builder()
        .name(&name)
        .create(3)
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // Arrived, then dropped: the arrival is withdrawn.
    let mut pending = Box::pin(b.wait_async());
    let waker = futures::task::noop_waker();
    assert!(
        pending
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
            .is_pending()
    );
    assert_eq!(b.n_waiting(), 1);
    drop(pending);
    assert_eq!(b.n_waiting(), 0, "a dropped future withdraws its arrival");

    let mut child = start(meet, (name.clone(), 5));
    let mut ours = 0;
    for _ in 0..5 {
        let (x, y) = rt.block_on(async { tokio::join!(b.wait_async(), b.wait_async()) });
        ours += u32::from(x.is_leader()) + u32::from(y.is_leader());
    }
    let theirs = child.join_timeout(WATCHDOG).unwrap().expect("watchdog");
    assert_eq!(ours + theirs, 5, "one leader per round");

    // Two parties: one arrives asynchronously in a child that is then killed.
    let two = format!("{name}-2");
    let b2 = shmkit::sync::Barrier::builder()
        .name(&two)
        .create(2)
        .unwrap();
    let doomed = start(arrive_and_die, two.clone());
    while b2.n_waiting() != 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    doomed.kill().unwrap();
    let mut doomed = doomed;
    doomed.join_timeout(WATCHDOG).unwrap_err();
    // The dead arrival does not let us pass: a live party must come.
    let mut late = start(meet, (two, 1));
    let r = rt.block_on(b2.wait_async());
    let late_leader = late.join_timeout(WATCHDOG).unwrap().expect("watchdog");
    assert_eq!(u32::from(r.is_leader()) + late_leader, 1);
}

/// Receives `n` items slowly, then every byte message until the peer is
/// gone, answering each with its length.
fn drain_pipe_slowly((conn, n): (shmkit::pipe::Connection<u64>, u64)) -> Vec<u64> {
    let got = (0..n)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(1));
            conn.recv().unwrap()
        })
        .collect();
    drop(conn);
    got
}

fn lengths(conn: shmkit::pipe::Connection<queue::Bytes>) {
    while let Ok(b) = conn.recv_bytes() {
        conn.send_bytes(&(b.len() as u64).to_le_bytes()).unwrap();
    }
}

/// A pipe end's `send_async` waits for room made by the peer process
/// (capacity 1, rounded up to 2), gets its value back as `Disconnected` once the peer is
/// gone; `send_bytes_async` carries an empty message and refuses one past
/// the slot; the queue's `send_bytes_async` carries an empty one too.
#[test]
fn pipe_send_async_waits_for_room_and_carries_empty_messages() {
    let _w = watchdog("pipe send_async");
    let (mut here, there) = shmkit::pipe::Connection::<u64>::builder()
        .capacity(1)
        .create()
        .unwrap();
    let mut child = start(drain_pipe_slowly, (there, 20));
    futures::executor::block_on(async {
        for v in 0..20 {
            here.send_async(v).await.unwrap();
        }
        // The child receives 20, then drops its end: at most 2 more fit
        // (the slots), then a send waits until it sees no peer.
        let mut refused = None;
        for v in 20..23 {
            if let Err(e) = here.send_async(v).await {
                refused = Some(e);
                break;
            }
        }
        match refused {
            Some(SendError::Disconnected(v)) => assert!((20..23).contains(&v)),
            other => panic!("{other:?}"),
        }
    });
    let got = child.join_timeout(WATCHDOG).unwrap().expect("watchdog");
    assert_eq!(got, (0..20).collect::<Vec<_>>());

    let (mut here, there) = shmkit::pipe::Connection::<queue::Bytes>::builder()
        .capacity(1)
        .max_message(16)
        .create()
        .unwrap();
    let mut child = start(lengths, there);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for len in [0usize, 1, 16, 0] {
            here.send_bytes_async(&vec![7u8; len]).await.unwrap();
            let back = here.recv_bytes_async().await.unwrap();
            assert_eq!(back, (len as u64).to_le_bytes());
        }
        assert_eq!(
            here.send_bytes_async(&[0u8; 17]).await,
            Err(SendError::TooLarge { len: 17, max: 16 })
        );
    });
    drop(here);
    child.join_timeout(WATCHDOG).unwrap().expect("watchdog");

    // The queue's bytes future with an empty message.
    let q = Queue::<queue::Bytes>::builder()
        .capacity(1)
        .create()
        .unwrap();
    let (mut tx, mut rx) = (q.sender().unwrap(), q.receiver().unwrap());
    futures::executor::block_on(async {
        tx.send_bytes_async(&[]).await.unwrap();
        assert_eq!(rx.recv_vec_async().await.unwrap(), Vec::<u8>::new());
    });
}

/// In a child (no other test's futures): awaits a message, which starts a
/// waiter thread, then waits until no waiter thread is left; the message.
fn await_then_lose_the_waiter(_: ()) -> u64 {
    let (tx, mut rx) = queue::bounded::<u64>(1).unwrap();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        tx.send(7).unwrap();
    });
    let got = futures::executor::block_on(rx.recv_async()).unwrap();
    sender.join().unwrap();
    assert!(
        waiter_threads() >= 1,
        "the receive was awaited through a waiter"
    );
    // The parent's watchdog bounds this wait.
    while waiter_threads() != 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    got
}

/// Waiter threads end once their futures are done (after a short linger),
/// so a process that awaited once does not keep an extra thread for good
/// (one that `Builder::fork` would refuse to fork beside).
#[test]
fn a_process_whose_futures_are_done_keeps_no_waiter_thread() {
    let _w = watchdog("waiters end");
    let mut p = start(await_then_lose_the_waiter, ());
    assert_eq!(p.join_timeout(WATCHDOG).unwrap(), Some(7));
}

/// More arrivals than the barrier records (64 slots): the ones past the
/// table are counted as unrecorded, and a withdrawal (a dropped future)
/// followed by the count repair keeps them, so the barrier opens with
/// exactly one leader.
#[test]
fn a_barrier_counts_arrivals_past_its_64_records() {
    use std::future::Future;
    let _w = watchdog("70 parties");
    let b = shmkit::sync::Barrier::new(70).unwrap();
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut waiting: Vec<_> = (0..69).map(|_| Box::pin(b.wait_async())).collect();
    for f in &mut waiting {
        assert!(f.as_mut().poll(&mut cx).is_pending());
    }
    assert_eq!(b.n_waiting(), 69);
    drop(waiting.remove(0));
    assert_eq!(b.n_waiting(), 68, "a recorded arrival withdrawn");
    waiting.push(Box::pin(b.wait_async()));
    waiting.push(Box::pin(b.wait_async()));
    let results = futures::executor::block_on(futures::future::join_all(waiting));
    assert_eq!(results.len(), 70);
    assert_eq!(results.iter().filter(|r| r.is_leader()).count(), 1);
    assert_eq!(b.n_waiting(), 0);
}

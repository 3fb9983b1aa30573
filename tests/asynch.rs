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

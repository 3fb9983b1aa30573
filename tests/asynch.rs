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

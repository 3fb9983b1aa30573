//! `Select` across processes: 3 queues and 2 pipe ends fed by 5 processes,
//! timeouts at their edges, a SIGKILLed sender reported as disconnected,
//! fairness between always-ready sources.

mod common;

use common::WATCHDOG;
use shmkit::pipe::{self, Connection};
use shmkit::process::Builder;
use shmkit::queue::Rkyv;
use shmkit::queue::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use shmkit::select::{ReadyTimeoutError, Select, TryReadyError};
use std::time::{Duration, Instant};

const N: u64 = 2_000;

fn queue_feeder((tx, base): (Sender<u64>, u64)) {
    for i in 0..N {
        tx.send(base + i).unwrap();
    }
}

fn pipe_feeder((conn, base): (Connection<Rkyv<u64>>, u64)) {
    for i in 0..N {
        conn.send(&(base + i)).unwrap();
    }
}

use common::join_child as join;

#[test]
fn three_queues_and_two_pipe_ends_fed_by_five_processes() {
    let _w = common::watchdog("select over 5 sources");
    let mut receivers = Vec::new();
    let mut children = Vec::new();
    for k in 0..3u64 {
        let (tx, rx) = queue::bounded::<u64>(8).unwrap();
        children.push(
            Builder::new()
                .daemon(true)
                .spawn(queue_feeder, (tx, k * N))
                .unwrap(),
        );
        receivers.push(rx);
    }
    let mut conns = Vec::new();
    for k in 3..5u64 {
        let (mine, theirs) = pipe::pipe::<Rkyv<u64>>().unwrap();
        children.push(
            Builder::new()
                .daemon(true)
                .spawn(pipe_feeder, (theirs, k * N))
                .unwrap(),
        );
        conns.push(mine);
    }
    let mut sel = Select::new();
    for rx in &receivers {
        sel.recv(rx);
    }
    for c in &conns {
        sel.conn(c);
    }
    assert_eq!(sel.len(), 5);
    let mut seen = vec![0u8; 5 * N as usize];
    let mut done = [false; 5];
    while done.iter().any(|d| !d) {
        let i = sel
            .ready_timeout(WATCHDOG)
            .expect("watchdog: no source ready");
        let got = if i < 3 {
            match receivers[i].try_recv() {
                Ok(v) => Some(v),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    done[i] = true;
                    None
                }
                Err(e) => panic!("queue {i}: {e}"),
            }
        } else {
            match conns[i - 3].recv_timeout(Duration::ZERO) {
                Ok(v) => Some(v),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    done[i] = true;
                    None
                }
                Err(e) => panic!("pipe {i}: {e}"),
            }
        };
        if let Some(v) = got {
            seen[v as usize] += 1;
        }
    }
    children.into_iter().for_each(join);
    let wrong: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] != 1).collect();
    assert!(
        wrong.is_empty(),
        "received other than once: {:?}",
        &wrong[..wrong.len().min(10)]
    );
}

#[test]
fn timeouts_and_empty_sets_at_their_edges() {
    let _w = common::watchdog("select timeouts");
    let mut none = Select::new();
    assert!(none.is_empty());
    assert_eq!(none.try_ready(), Err(TryReadyError));
    assert_eq!(none.ready_timeout(Duration::ZERO), Err(ReadyTimeoutError));
    assert_eq!(
        none.ready_timeout(Duration::from_millis(1)),
        Err(ReadyTimeoutError)
    );

    let (_tx, rx) = queue::bounded::<u8>(1).unwrap();
    let (_a, b) = pipe::pipe::<Rkyv<u64>>().unwrap();
    let mut sel = Select::new();
    sel.recv(&rx);
    sel.conn(&b);
    assert_eq!(sel.try_ready(), Err(TryReadyError));
    assert_eq!(sel.ready_timeout(Duration::ZERO), Err(ReadyTimeoutError));
    assert_eq!(
        sel.ready_timeout(Duration::from_millis(1)),
        Err(ReadyTimeoutError)
    );
    let t = Instant::now();
    assert_eq!(
        sel.ready_timeout(Duration::from_millis(60)),
        Err(ReadyTimeoutError)
    );
    assert!(
        t.elapsed() >= Duration::from_millis(60),
        "returned before the timeout"
    );
    _tx.send(1).unwrap();
    assert_eq!(sel.ready_timeout(Duration::ZERO), Ok(0));
    assert_eq!(sel.try_ready(), Ok(0));
    drop(_a);
    // The pipe's peer is gone: ready too (its receive says Disconnected).
    assert_eq!(
        sel.try_ready(),
        Ok(1),
        "the scan goes on after the last one"
    );
}

#[test]
#[should_panic(expected = "no sources would wait forever")]
fn ready_with_no_sources_panics_instead_of_hanging() {
    Select::new().ready();
}

fn hold_sender_forever(tx: Sender<u64>) {
    tx.send(1).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The only sender of a queue is SIGKILLed while a `Select` blocks on it:
/// the select's dead-peer looks make the queue ready, and the receive says
/// what happened (the message sent before is delivered first).
#[test]
fn a_sigkilled_sender_makes_its_queue_ready_as_disconnected() {
    let _w = common::watchdog("select sees a dead sender");
    let (tx, rx) = queue::bounded::<u64>(4).unwrap();
    let (_keep, other) = queue::bounded::<u64>(4).unwrap();
    let child = Builder::new()
        .daemon(true)
        .spawn(hold_sender_forever, tx)
        .unwrap();
    let mut sel = Select::new();
    sel.recv(&other);
    sel.recv(&rx);
    assert_eq!(sel.ready_timeout(WATCHDOG), Ok(1));
    assert_eq!(rx.try_recv(), Ok(1));
    child.kill().unwrap();
    assert!(child.wait_timeout(WATCHDOG).unwrap().is_some());
    // Blocks (no timeout) until the look finds the sender dead.
    assert_eq!(sel.ready(), 1);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
}

/// crossbeam's `fairness`: two queues always ready; each is chosen at least
/// a quarter of the time.
#[test]
fn always_ready_sources_share_the_turns() {
    const COUNT: usize = 1_000;
    let (s1, r1) = queue::bounded::<u8>(COUNT).unwrap();
    let (s2, r2) = queue::bounded::<u8>(COUNT).unwrap();
    for _ in 0..COUNT {
        s1.send(0).unwrap();
        s2.send(0).unwrap();
    }
    let receivers: [&Receiver<u8>; 2] = [&r1, &r2];
    let mut sel = Select::new();
    sel.recv(&r1);
    sel.recv(&r2);
    let mut hits = [0usize; 2];
    for _ in 0..COUNT {
        let i = sel.ready();
        receivers[i].try_recv().unwrap();
        hits[i] += 1;
    }
    assert!(hits.iter().all(|&h| h >= COUNT / 2 / 2), "{hits:?}");
}

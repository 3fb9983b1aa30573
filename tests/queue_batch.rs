//! Runs of `Pod` items (`send_many`/`recv_many` and their `try_` and
//! `_timeout` forms) with real processes: exactly once and in order for
//! runs of every length against a queue shorter than the runs, the
//! deferred wake-up reaching a peer asleep in either direction, a sender
//! killed mid-run, hostile lengths inside a run, and every parameter at its
//! edges (an empty run or buffer, a queue of one, a 1 ms timeout).

mod common;

use common::{WATCHDOG, join_child as join, unique, watchdog};
use shmkit::process;
use shmkit::queue::{
    self, Queue, Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Sender,
    TryRecvError, TrySendError,
};
use shmkit::{Array, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

const PER_PRODUCER: u64 = 100_000;
/// Run lengths a producer cycles through: empty, one, around the queue's
/// capacity (8), and far beyond it (the run waits for room midway).
const RUNS: [usize; 7] = [0, 1, 7, 8, 9, 1000, 3];
/// Buffer lengths a consumer cycles through.
const BUFS: [usize; 4] = [1, 3, 64, 8];

fn produce_runs((tx, p): (Sender<u64>, u64)) {
    let items: Vec<u64> = (0..PER_PRODUCER).map(|i| p << 32 | i).collect();
    let mut at = 0;
    for len in RUNS.iter().cycle() {
        if at == items.len() {
            break;
        }
        let end = (at + len).min(items.len());
        tx.send_many(&items[at..end]).unwrap();
        at = end;
    }
}

/// Counts what it receives in `seen`; whether each producer's items came
/// in order.
fn consume_runs((rx, seen): (Receiver<u64>, Array<u8>)) -> (u64, bool) {
    let mut last = [None::<u64>; 2];
    let mut ordered = true;
    let mut total = 0;
    let mut buf = [0u64; 64];
    for len in BUFS.iter().cycle() {
        let n = match rx.recv_many(&mut buf[..*len]) {
            Ok(n) => n,
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        };
        assert!((1..=*len).contains(&n), "took {n} into a buffer of {len}");
        for &v in &buf[..n] {
            let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
            ordered &= last[p].is_none_or(|prev| i > prev);
            last[p] = Some(i);
            seen.atomic(p * PER_PRODUCER as usize + i as usize)
                .fetch_add(1, Ordering::Relaxed);
        }
        total += n as u64;
    }
    (total, ordered)
}

#[test]
fn runs_of_every_length_cross_processes_exactly_once_in_order() {
    let q = Queue::<u64>::builder()
        .name(unique("runs"))
        .capacity(8)
        .create()
        .unwrap();
    common::exactly_once(&q, (2, 2, PER_PRODUCER), produce_runs, consume_runs);
}

#[test]
fn try_and_timeout_forms_at_their_edges() {
    let _w = watchdog("batch edges");
    let (tx, rx) = queue::bounded::<u64>(4).unwrap();
    let ms = Duration::from_millis(1);
    // Empty runs and buffers do nothing, even on an empty queue.
    assert_eq!(tx.try_send_many(&[]), Ok(0));
    tx.send_many(&[]).unwrap();
    assert_eq!(rx.try_recv_many(&mut []), Ok(0));
    assert_eq!(rx.recv_many(&mut []), Ok(0));
    assert!(matches!(
        rx.try_recv_many(&mut [0; 3]),
        Err(TryRecvError::Empty)
    ));
    assert!(matches!(
        rx.recv_many_timeout(&mut [0; 3], ms),
        Err(RecvTimeoutError::Timeout)
    ));
    // A run longer than the room sends what fits.
    assert_eq!(tx.try_send_many(&[1, 2, 3, 4, 5, 6]), Ok(4));
    assert!(matches!(tx.try_send_many(&[9]), Err(TrySendError::Full(0))));
    assert!(matches!(
        tx.send_many_timeout(&[9, 9], ms),
        Err(SendTimeoutError::Timeout(0))
    ));
    let mut buf = [0u64; 3];
    assert_eq!(rx.try_recv_many(&mut buf), Ok(3));
    assert_eq!(buf, [1, 2, 3]);
    // Room for three: the fourth times out, and says three went.
    assert!(matches!(
        tx.send_many_timeout(&[5, 6, 7, 8], ms),
        Err(SendTimeoutError::Timeout(3))
    ));
    let mut buf = [0u64; 10];
    assert_eq!(rx.recv_many(&mut buf), Ok(4));
    assert_eq!(buf[..4], [4, 5, 6, 7]);
    // A run that finds the queue disconnected midway returns what it took;
    // the next says Disconnected.
    tx.send_many(&[10, 11]).unwrap();
    drop(tx);
    assert_eq!(rx.recv_many_timeout(&mut buf, WATCHDOG), Ok(2));
    assert_eq!(buf[..2], [10, 11]);
    assert!(matches!(
        rx.recv_many(&mut buf),
        Err(RecvError::Disconnected)
    ));
    assert!(matches!(
        rx.try_recv_many(&mut buf),
        Err(TryRecvError::Disconnected)
    ));
    // No receiver: nothing is sent, and the error says so.
    let (tx, rx) = queue::bounded::<u64>(4).unwrap();
    drop(rx);
    assert!(matches!(
        tx.send_many(&[1, 2]),
        Err(SendError::Disconnected(0))
    ));
    assert!(matches!(
        tx.try_send_many(&[1]),
        Err(TrySendError::Disconnected(0))
    ));
    // A queue of one: every item of a run waits for the one before (a
    // receive may still take several, each committed after it freed the
    // one before).
    let (tx, rx) = queue::bounded::<u64>(1).unwrap();
    let t = std::thread::spawn(move || tx.send_many(&(0..500).collect::<Vec<_>>()));
    let mut got = Vec::new();
    let mut buf = [0u64; 16];
    while let Ok(n) = rx.recv_many(&mut buf) {
        assert!(n >= 1);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, (0..500).collect::<Vec<_>>());
    t.join().unwrap().unwrap();
}

#[test]
fn a_run_wakes_a_receiver_asleep_and_a_run_taken_wakes_a_sender_asleep() {
    let _w = watchdog("batch wake-ups");
    // The receiver sleeps in recv_many before the run is sent: the run's
    // one wake-up at its end must reach it.
    let q = Queue::<u64>::builder().capacity(16).create().unwrap();
    let rx = q.receiver().unwrap();
    let child = process::spawn(
        |tx: Sender<u64>| {
            std::thread::sleep(Duration::from_millis(200));
            tx.send_many(&[1, 2, 3]).unwrap();
        },
        q.sender().unwrap(),
    )
    .unwrap();
    let mut buf = [0u64; 8];
    let mut got = Vec::new();
    while got.len() < 3 {
        let n = rx.recv_many_timeout(&mut buf, WATCHDOG).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, [1, 2, 3]);
    join(child);

    // The sender sleeps in send_many on a full queue: a run taken by
    // try_recv_many (one wake-up for the run) must let it finish.
    let q = Queue::<u64>::builder().capacity(2).create().unwrap();
    let rx = q.receiver().unwrap();
    let started = Value::<u32>::builder().create(0).unwrap();
    let child = process::spawn(
        |(tx, started): (Sender<u64>, Value<u32>)| {
            started.store(1);
            tx.send_many(&[1, 2, 3, 4]).unwrap();
        },
        (q.sender().unwrap(), started.clone()),
    )
    .unwrap();
    common::wait_until("the sender fills the queue", || q.is_full());
    std::thread::sleep(Duration::from_millis(200)); // it sleeps by now
    assert_eq!(started.load(), 1);
    let mut buf = [0u64; 4];
    // The first run takes both; the woken sender may refill before the
    // receiver looks again (it takes what is ready now), so 2 to 4.
    let n = rx.try_recv_many(&mut buf).unwrap();
    assert!(n >= 2, "{n}");
    let mut got = buf[..n].to_vec();
    while got.len() < 4 {
        let n = rx.recv_many_timeout(&mut buf, WATCHDOG).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, [1, 2, 3, 4]);
    join(child);
}

#[test]
fn a_sender_killed_mid_run_loses_nothing_it_committed() {
    let q = Queue::<u64>::builder().capacity(8).create().unwrap();
    let rx = q.receiver().unwrap();
    let child = process::spawn(
        |tx: Sender<u64>| {
            let items: Vec<u64> = (0..1_000_000).collect();
            tx.send_many(&items).unwrap();
        },
        q.sender().unwrap(),
    )
    .unwrap();
    let mut buf = [0u64; 5];
    let mut next = 0u64;
    // Take some, leave the queue full, kill the sender blocked mid-run.
    while next < 1000 {
        let n = rx.recv_many_timeout(&mut buf, WATCHDOG).unwrap();
        for &v in &buf[..n] {
            assert_eq!(v, next, "out of order or duplicated");
            next += 1;
        }
    }
    common::wait_until("the sender fills the queue", || q.is_full());
    child.kill().unwrap();
    child.wait().unwrap();
    // What it committed is delivered in order, then the queue disconnects.
    loop {
        match rx.recv_many_timeout(&mut buf, WATCHDOG) {
            Ok(n) => {
                for &v in &buf[..n] {
                    assert_eq!(v, next, "out of order or duplicated");
                    next += 1;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(next >= 1008, "the full queue's 8 items were lost: {next}");
    assert_eq!(q.stats().reaped, 1);
}

#[test]
fn hostile_lengths_inside_a_run_are_skipped_not_read() {
    let q = Queue::<u64>::builder()
        .name(unique("hostile-run"))
        .capacity(8)
        .create()
        .unwrap();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    tx.send_many(&[1, 2, 3, 4]).unwrap();
    // A u64 slot is 32 bytes (a 16-byte header, then the item, rounded to a
    // power of two); make the second slot's length word enormous.
    let data_offset = q.segment().len() - q.segment().element_count() as usize;
    // SAFETY: the test owns the region; it writes inside the mapping.
    unsafe {
        let len = q.segment().as_ptr().add(data_offset + 32 + 8).cast::<u64>();
        len.write_volatile(1 << 40);
    }
    let mut buf = [0u64; 8];
    assert_eq!(rx.try_recv_many(&mut buf), Ok(3));
    assert_eq!(buf[..3], [1, 3, 4]);
    assert_eq!(q.stats().skipped, 1);
    // The slot was released: the ring still holds 8.
    assert_eq!(tx.try_send_many(&[0; 9]), Ok(8));
}

#[test]
fn items_over_4_kib_go_one_by_one_held_and_arrive_in_order() {
    let _w = watchdog("large batch items");
    // 8 KiB items: above the size sent unheld, so `send_many` sends them
    // singly, each claim held; a queue of 2 makes every one wait.
    let (tx, rx) = queue::bounded::<[u64; 1024]>(2).unwrap();
    let items: Vec<[u64; 1024]> = (0..9u64).map(|i| [i; 1024]).collect();
    let t = std::thread::spawn(move || tx.send_many(&items));
    let mut got = Vec::new();
    let mut buf = [[0u64; 1024]; 4];
    while let Ok(n) = rx.recv_many_timeout(&mut buf, WATCHDOG) {
        got.extend(buf[..n].iter().map(|item| {
            assert!(item.iter().all(|&w| w == item[0]), "a torn item");
            item[0]
        }));
    }
    assert_eq!(got, (0..9).collect::<Vec<_>>());
    t.join().unwrap().unwrap();
}

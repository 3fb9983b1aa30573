//! The shared-memory Queue with real processes: MPMC exactly-once and
//! per-producer order, disconnection, timeouts, variable-size and rkyv
//! messages, handles sent through a queue, joinable queues, hostile input,
//! and SIGKILLed producers and consumers.

mod common;

use common::{WATCHDOG, unique, watchdog};
use shmkit::error::RegionError;
use shmkit::process::{self, Builder, Process};
use shmkit::queue::{
    self, Bytes, Queue, Receiver, RecvError, RecvTimeoutError, Rkyv, SendError, SendTimeoutError,
    Sender, Serde, TryRecvError, TrySendError,
};
use shmkit::{Array, Error, Message, Value};
use std::time::{Duration, Instant};

use common::join_child as join;

#[test]
fn in_process_basics_full_empty_timeouts_and_disconnect() {
    let (tx, rx) = queue::bounded::<u64>(4).unwrap();
    assert_eq!(tx.queue().capacity(), 4);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    ));
    for i in 0..4 {
        tx.try_send(i).unwrap();
    }
    assert!(tx.queue().is_full());
    assert_eq!(tx.queue().len(), 4);
    assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
    assert!(matches!(
        tx.send_timeout(9, Duration::from_millis(20)),
        Err(SendTimeoutError::Timeout(9))
    ));
    assert_eq!(rx.recv().unwrap(), 0);
    tx.send(4).unwrap();
    drop(tx);
    // Drained in order, then disconnected.
    assert_eq!(rx.iter().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));

    let (tx, rx) = queue::bounded::<u64>(4).unwrap();
    drop(rx);
    assert!(matches!(tx.send(1), Err(SendError::Disconnected(1))));

    let (tx, rx) = queue::bounded::<u64>(4).unwrap();
    tx.send(7).unwrap();
    tx.queue().close();
    assert!(matches!(tx.send(8), Err(SendError::Disconnected(8))));
    assert_eq!(rx.recv().unwrap(), 7);
    assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
}

#[test]
fn zero_copy_reserve_and_recv_ref() {
    let (mut tx, mut rx) = queue::bounded::<[u64; 8]>(4).unwrap();
    {
        let mut slot = tx.reserve().unwrap();
        slot[3] = 33;
        slot[7] = 77;
        slot.commit();
    }
    {
        // Dropped uncommitted: receivers never see it.
        let mut slot = tx.reserve().unwrap();
        slot[0] = 1;
    }
    tx.send([5; 8]).unwrap();
    {
        let msg = rx.recv_ref().unwrap();
        assert_eq!((msg[3], msg[7]), (33, 77));
    }
    assert_eq!(rx.recv().unwrap(), [5; 8]);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}

const PER_PRODUCER: u64 = 250_000;

fn produce((tx, p): (Sender<u64>, u64)) {
    for i in 0..PER_PRODUCER {
        tx.send(p << 32 | i).unwrap();
    }
}

/// Returns how many it received and whether each producer's messages came in
/// order; marks each message in `seen`.
fn consume((rx, seen): (Receiver<u64>, Array<u8>)) -> (u64, bool) {
    let mut last = [None::<u64>; 4];
    let mut ordered = true;
    let mut n = 0;
    while let Ok(v) = rx.recv() {
        let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
        if let Some(prev) = last[p]
            && i <= prev
        {
            ordered = false;
        }
        last[p] = Some(i);
        seen.atomic(p * PER_PRODUCER as usize + i as usize)
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        n += 1;
    }
    (n, ordered)
}

#[test]
fn four_producers_four_consumers_move_a_million_messages_exactly_once_in_order() {
    let q = Queue::<u64>::builder()
        .name(unique("mpmc"))
        .capacity(1024)
        .create()
        .unwrap();
    common::exactly_once(&q, (4, 4, PER_PRODUCER), produce, consume);
}

#[test]
fn a_killed_sender_disconnects_and_a_dropped_one_too() {
    let q = Queue::<u64>::builder().capacity(8).create().unwrap();
    let rx = q.receiver().unwrap();
    let child = process::spawn(
        |tx: Sender<u64>| {
            tx.send(1).unwrap();
            std::thread::sleep(Duration::from_secs(120));
        },
        q.sender().unwrap(),
    )
    .unwrap();
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), 1);
    child.kill().unwrap();
    child.wait().unwrap();
    // Found dead within a slice, then disconnected.
    assert!(matches!(
        rx.recv_timeout(WATCHDOG),
        Err(RecvTimeoutError::Disconnected)
    ));
    assert_eq!(q.stats().reaped, 1);

    let child = process::spawn(
        |tx: Sender<u64>| {
            tx.send(2).unwrap();
        },
        q.sender().unwrap(),
    )
    .unwrap();
    join(child);
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), 2);
    assert!(matches!(
        rx.recv_timeout(WATCHDOG),
        Err(RecvTimeoutError::Disconnected)
    ));
}

fn echo_sizes((mut rx, tx): (Receiver<Bytes>, Sender<u64>)) {
    while let Ok(msg) = rx.recv_bytes() {
        let ok = msg.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8);
        tx.send(if ok { msg.len() as u64 } else { u64::MAX })
            .unwrap();
    }
}

#[test]
fn byte_messages_from_empty_to_the_maximum_cross_processes() {
    let max = 4096;
    let (tx, rx) = queue::bounded_bytes(16, max).unwrap();
    let (back_tx, back_rx) = queue::bounded::<u64>(16).unwrap();
    let child = process::spawn(echo_sizes, (rx, back_tx)).unwrap();
    let mut buf = vec![0u8; max + 1];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let sizes: Vec<usize> = (0..=64).chain([1000, 4095, 4096]).collect();
    for &n in &sizes {
        tx.send_bytes(&buf[..n]).unwrap();
        assert_eq!(back_rx.recv_timeout(WATCHDOG).unwrap(), n as u64);
    }
    assert!(matches!(
        tx.send_bytes(&buf),
        Err(SendError::TooLarge {
            len: 4097,
            max: 4096
        })
    ));
    drop(tx);
    join(child);
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct Job {
    id: u32,
    name: String,
    weights: Vec<f32>,
}

#[test]
fn rkyv_messages_are_validated_and_read_in_place() {
    let (tx, mut rx) = queue::bounded_messages::<Rkyv<Job>>(8, 1024).unwrap();
    let job = Job {
        id: 7,
        name: "resize".into(),
        weights: vec![0.5, 1.5],
    };
    tx.send(&job).unwrap();
    tx.send(clone_job(&job)).unwrap();
    assert_eq!(rx.recv().unwrap(), job);
    {
        let slot = rx.recv_ref().unwrap();
        let archived = slot.archived().unwrap();
        assert_eq!(archived.id, 7);
        assert_eq!(archived.name.as_str(), "resize");
        assert_eq!(archived.weights.len(), 2);
        assert_eq!(slot.decode().unwrap(), job);
        assert_eq!(slot.len(), job.encode().unwrap().len());
    }
    // A corrupted archive: the root's last field (the vector's length)
    // claims far more elements than the message holds.
    let mut bytes = job.encode().unwrap().to_vec();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    tx.send_bytes(&bytes).unwrap();
    assert!(matches!(rx.recv(), Err(RecvError::Invalid(_))));
    tx.send_bytes(&bytes).unwrap();
    assert!(rx.recv_ref().unwrap().archived().is_err());
    assert!(
        rx.try_recv_ref().is_err(),
        "the invalid message was dropped"
    );
    // Too large for a slot: the message is not sent, nothing is received.
    let big = Job {
        id: 1,
        name: "x".repeat(2000),
        weights: vec![],
    };
    let len = big.encode().unwrap().len();
    assert_eq!(tx.send(big), Err(SendError::TooLarge { len, max: 1024 }));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    // Timeouts and try_ on a full queue give the message back.
    for i in 0..8 {
        tx.try_send(Job {
            id: i,
            name: String::new(),
            weights: vec![],
        })
        .unwrap();
    }
    let extra = || Job {
        id: 99,
        name: "extra".into(),
        weights: vec![],
    };
    assert_eq!(tx.try_send(extra()), Err(TrySendError::Full(extra())));
    assert_eq!(
        tx.send_timeout(extra(), Duration::from_millis(1)),
        Err(SendTimeoutError::Timeout(extra()))
    );
    let ids: Vec<u32> = rx.try_iter().map(|j| j.id).collect();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    assert_eq!(
        rx.recv_timeout(Duration::ZERO),
        Err(RecvTimeoutError::Timeout)
    );
}

fn clone_job(j: &Job) -> Job {
    Job {
        id: j.id,
        name: j.name.clone(),
        weights: j.weights.clone(),
    }
}

#[test]
fn a_typed_queue_opened_as_another_message_type_is_refused() {
    let name = unique("typed");
    let q = Queue::<Rkyv<Job>>::builder()
        .name(&name)
        .max_message(256)
        .create()
        .unwrap();
    let e = Queue::<Rkyv<String>>::builder()
        .name(&name)
        .open()
        .unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::TypeMismatch { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("Job"), "{e}");
    let e = Queue::<Bytes>::builder().name(&name).open().unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::TypeMismatch { .. })),
        "{e}"
    );
    let e = Queue::<Serde<Job2>>::builder()
        .name(&name)
        .open()
        .unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::TypeMismatch { .. })),
        "{e}"
    );
    let e = Queue::<u64>::builder().name(&name).open().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Region(RegionError::TypeMismatch { .. })
                | Error::Region(RegionError::Corrupted { .. })
        ),
        "{e}"
    );
    // The same type opens.
    let again = Queue::<Rkyv<Job>>::builder().name(&name).open().unwrap();
    again
        .sender()
        .unwrap()
        .send(clone_job(&Job {
            id: 3,
            name: "a".into(),
            weights: vec![],
        }))
        .unwrap();
    assert_eq!(q.receiver().unwrap().recv().unwrap().id, 3);
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct Job2 {
    id: u32,
    tags: Vec<String>,
    score: Option<f64>,
}

fn serde_producer(tx: Sender<Serde<Job2>>) {
    let me = std::process::id();
    for i in 0..200 {
        tx.send(Job2 {
            id: i,
            tags: vec![format!("from {me}")],
            score: (i % 2 == 0).then_some(f64::from(i) / 2.0),
        })
        .unwrap();
    }
}

fn rkyv_producer(tx: Sender<Rkyv<Job>>) {
    for i in 0..200 {
        tx.send(Job {
            id: i,
            name: format!("job {i}"),
            weights: vec![i as f32; (i % 5) as usize],
        })
        .unwrap();
    }
}

#[test]
fn serde_and_rkyv_messages_cross_processes_exactly_once() {
    let _w = watchdog("typed messages across processes");
    let (stx, srx) = queue::bounded_messages::<Serde<Job2>>(16, 512).unwrap();
    let (rtx, rrx) = queue::bounded_messages::<Rkyv<Job>>(16, 512).unwrap();
    let children = vec![
        process::spawn(serde_producer, stx.clone()).unwrap(),
        process::spawn(serde_producer, stx).unwrap(),
    ];
    let rchild = process::spawn(rkyv_producer, rtx).unwrap();
    let mut seen = std::collections::HashMap::<(String, u32), usize>::new();
    for m in &srx {
        assert_eq!(m.score, (m.id % 2 == 0).then_some(f64::from(m.id) / 2.0));
        *seen.entry((m.tags[0].clone(), m.id)).or_default() += 1;
    }
    assert_eq!(seen.len(), 400);
    assert!(seen.values().all(|&n| n == 1));
    let mut ids = Vec::new();
    for j in &rrx {
        assert_eq!(j.name, format!("job {}", j.id));
        assert_eq!(j.weights.len(), (j.id % 5) as usize);
        ids.push(j.id);
    }
    assert_eq!(ids, (0..200).collect::<Vec<_>>());
    for c in children {
        join(c);
    }
    join(rchild);
}

fn sum_received_array(rx: Receiver<Rkyv<Array<u8>>>) -> (u64, usize) {
    let a = rx.recv().unwrap();
    let sum = a.lock().unwrap().iter().map(|&b| b as u64).sum();
    (sum, a.len())
}

#[test]
fn an_array_sent_through_a_queue_is_shared_not_copied() {
    let (tx, rx) = queue::bounded_messages::<Rkyv<Array<u8>>>(4, 256).unwrap();
    let big = Array::<u8>::builder()
        .name(unique("big"))
        .create(64 << 20)
        .unwrap();
    big.lock().unwrap().fill(3);
    let child = process::spawn(sum_received_array, rx).unwrap();
    let encoded = big.encode().unwrap().len();
    assert!(encoded < 128, "the handle is {encoded} bytes");
    tx.send(&big).unwrap(); // by reference: `big` stays alive (and named)
    assert_eq!(join(child), (3 * (64 << 20), 64 << 20));
}

#[test]
fn joinable_queue_join_waits_for_task_done() {
    let q = Queue::<u32>::builder()
        .capacity(16)
        .joinable(true)
        .create()
        .unwrap();
    let tx = q.sender().unwrap();
    let child = process::spawn(
        |rx: Receiver<u32>| {
            let mut n = 0;
            while let Ok(_task) = rx.recv() {
                std::thread::sleep(Duration::from_millis(1));
                rx.task_done().unwrap();
                n += 1;
            }
            n
        },
        q.receiver().unwrap(),
    )
    .unwrap();
    for t in 0..10 {
        tx.send(t).unwrap();
    }
    assert!(q.join_timeout(WATCHDOG), "join timed out");
    assert!(q.is_empty());
    assert!(
        q.task_done().is_err(),
        "more task_done than tasks is an error"
    );
    drop(tx);
    assert_eq!(join(child), 10);
}

#[test]
fn hostile_geometry_and_lengths_are_refused_not_read() {
    let q = Queue::<u64>::builder()
        .name(unique("hostile"))
        .capacity(8)
        .create()
        .unwrap();
    let name = q.segment().name().unwrap().to_owned();
    let tx = q.sender().unwrap();
    let rx = q.receiver().unwrap();
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    // Find the first slot's length word and make it enormous.
    let data_offset = q.segment().len() - q.segment().element_count() as usize;
    // SAFETY: the test owns the region; it writes inside the mapping.
    unsafe {
        let len = q.segment().as_ptr().add(data_offset + 8).cast::<u64>();
        len.write_volatile(1 << 40);
    }
    // The corrupted message is dropped, the next one delivered.
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), 2);
    assert_eq!(q.stats().skipped, 1);
    // Corrupt the geometry: opening it again is refused.
    // SAFETY: as above; capacity lives at control + 384 + 48.
    unsafe {
        let control = q
            .segment()
            .as_ptr()
            .add(shmkit::region::HEADER_SIZE.next_multiple_of(128));
        control.add(384 + 48).cast::<u64>().write_volatile(3);
    }
    match Queue::<u64>::open(&name) {
        Err(Error::Region(RegionError::Corrupted { what, .. })) => {
            assert!(what.contains("geometry"), "{what}")
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    // Handles opened before the corruption keep the geometry they validated:
    // the rewritten capacity is never used to index the slots.
    tx.send(3).unwrap();
    assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), 3);
}

/// A producer for the kill test: takes ids from `next`, sends them, and
/// records each id once `send` returned.
fn kill_producer((tx, next, committed): (Sender<u64>, Value<u64>, Array<u8>)) {
    loop {
        let id = next.fetch_add(1);
        if id as usize >= committed.len() {
            return;
        }
        if tx.send(id).is_err() {
            return;
        }
        committed
            .atomic(id as usize)
            .store(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A consumer for the kill test: counts each message while holding its slot.
fn kill_consumer((mut rx, counts): (Receiver<u64>, Array<u8>)) {
    while let Ok(msg) = rx.recv_ref() {
        counts
            .atomic(*msg as usize)
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        drop(msg);
    }
}

#[test]
fn sigkill_producers_and_consumers_100_times_and_nothing_committed_is_lost() {
    const IDS: usize = 4_000_000;
    let q = Queue::<u64>::builder()
        .name(unique("kill"))
        .capacity(64)
        .create()
        .unwrap();
    let next = Value::builder().name(unique("next")).create(0u64).unwrap();
    let committed = Array::<u8>::builder()
        .name(unique("committed"))
        .unlocked()
        .create(IDS)
        .unwrap();
    let counts = Array::<u8>::builder()
        .name(unique("counts"))
        .unlocked()
        .create(IDS)
        .unwrap();
    // The parent keeps one receiver registered, so producers never see
    // "no receivers" between rounds; it drains at the end.
    let drain = q.receiver().unwrap();
    // Daemons: if this test fails, its children die with its thread.
    let start_producer = || {
        Builder::new()
            .daemon(true)
            .spawn(
                kill_producer,
                (q.sender().unwrap(), next.clone(), committed.clone()),
            )
            .unwrap()
    };
    let start_consumer = || {
        Builder::new()
            .daemon(true)
            .spawn(kill_consumer, (q.receiver().unwrap(), counts.clone()))
            .unwrap()
    };
    let mut producers = vec![start_producer(), start_producer()];
    let mut consumers = vec![start_consumer(), start_consumer()];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let (mut producer_kills, mut consumer_kills) = (0, 0);
    for round in 0..100 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 3000));
        let (list, start): (&mut Vec<Process<()>>, &dyn Fn() -> Process<()>) = if round % 2 == 0 {
            producer_kills += 1;
            (&mut producers, &start_producer)
        } else {
            consumer_kills += 1;
            (&mut consumers, &start_consumer)
        };
        let victim = list.remove((rng % 2) as usize);
        victim.kill().unwrap();
        assert!(victim.wait_timeout(WATCHDOG).unwrap().is_some(), "watchdog");
        list.push(start());
    }
    // Stop producing: kill the remaining producers, let consumers finish.
    for p in producers {
        p.kill().unwrap();
        assert!(p.wait_timeout(WATCHDOG).unwrap().is_some());
    }
    // The parent drains what is left; consumers stop at disconnection.
    let deadline = Instant::now() + WATCHDOG;
    loop {
        match drain.recv_timeout(WATCHDOG) {
            Ok(id) => {
                counts
                    .atomic(id as usize)
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!(
                "drain: {e}; senders {} receivers {} stats {:?}; participants {:?}; me {}",
                q.sender_count(),
                q.receiver_count(),
                q.stats(),
                q.participants(),
                std::process::id()
            ),
        }
        assert!(Instant::now() < deadline, "watchdog: drain");
    }
    for c in consumers {
        join(c);
    }
    let committed = committed.to_vec().unwrap();
    let counts = counts.to_vec().unwrap();
    let taken = next.load().min(IDS as u64) as usize;
    let lost = (0..taken)
        .filter(|&i| committed[i] == 1 && counts[i] == 0)
        .count();
    let duplicates: usize = counts.iter().map(|&c| c.saturating_sub(1) as usize).sum();
    let delivered = counts.iter().filter(|&&c| c > 0).count();
    let stats = q.stats();
    println!(
        "kill test: {producer_kills} producer and {consumer_kills} consumer kills; {delivered} \
         messages delivered; {} claims skipped, {} redelivered, {} dead participants reaped; \
         {duplicates} duplicates",
        stats.skipped, stats.redelivered, stats.reaped
    );
    assert_eq!(lost, 0, "committed messages lost");
    assert!(
        duplicates <= consumer_kills,
        "{duplicates} duplicates for {consumer_kills} consumer kills"
    );
    assert!(delivered > 0);
}

#[test]
fn receivers_started_before_any_sender_wait_for_it() {
    let q = Queue::<u64>::builder().capacity(8).create().unwrap();
    let rx = q.receiver().unwrap();
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    ));
    let tx = q.sender().unwrap();
    tx.send(5).unwrap();
    drop(tx);
    assert_eq!(rx.recv().unwrap(), 5);
    assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
}

#[test]
fn the_65th_handle_is_too_many_handles_not_corrupted() {
    let q = shmkit::queue::Queue::<u64>::builder()
        .capacity(4)
        .create()
        .unwrap();
    // 63 senders and 1 receiver: the table's 64 entries.
    let rx = q.receiver().unwrap();
    let txs: Vec<_> = (0..63).map(|_| q.sender().unwrap()).collect();
    let err = q.receiver().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Region(RegionError::TooManyHandles { max: 64, .. })
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("at most 64 live senders and receivers"),
        "{text}"
    );
    assert!(
        !text.contains("corrupted") && !text.contains("recreate"),
        "{text}"
    );
    assert!(matches!(
        q.sender(),
        Err(Error::Region(RegionError::TooManyHandles { .. }))
    ));
    drop(txs);
    assert!(q.receiver().is_ok(), "a freed entry is reused");
    drop(rx);
}

#[test]
fn an_elapsed_timeout_is_timeout_even_when_zero() {
    let q = shmkit::queue::Queue::<u64>::builder()
        .capacity(2)
        .create()
        .unwrap();
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    for zero_or_tiny in [Duration::ZERO, Duration::from_millis(1)] {
        assert!(matches!(
            rx.recv_timeout(zero_or_tiny),
            Err(shmkit::queue::RecvTimeoutError::Timeout)
        ));
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        match tx.send_timeout(3, zero_or_tiny) {
            Err(shmkit::queue::SendTimeoutError::Timeout(3)) => {}
            other => panic!("{zero_or_tiny:?}: {other:?}"),
        }
        assert_eq!(rx.recv().unwrap(), 1);
        assert_eq!(rx.recv().unwrap(), 2);
    }
}

/// Each child sends, then at once tries to receive: its own send has
/// returned, so the queue is not empty and `try_recv` must not say `Empty`.
/// Returns how many times it did.
fn send_then_try_recv((tx, rx, count): (Sender<u64>, Receiver<u64>, u64)) -> u64 {
    let mut empties = 0;
    for i in 0..count {
        tx.send(i).unwrap();
        match rx.try_recv() {
            Ok(_) => {}
            Err(TryRecvError::Empty) => empties += 1,
            Err(e) => panic!("try_recv: {e}"),
        }
    }
    empties
}

/// crossbeam-channel's `linearizable` test (tests/array.rs: 4 threads, a
/// channel of capacity 4, send then `try_recv().unwrap()`), run across 4
/// processes. Before `try_recv` waited for in-flight sends it reported
/// `Empty` when another process had claimed the slot ahead but not yet
/// committed (about 1 in 25,000 on this 2-core machine).
#[test]
fn try_recv_is_linearizable_across_processes() {
    const PROCS: usize = 4;
    const COUNT: u64 = 10_000;
    let q = Queue::<u64>::builder().capacity(4).create().unwrap();
    let children: Vec<Process<u64>> = (0..PROCS)
        .map(|_| {
            Builder::new()
                .daemon(true)
                .spawn(
                    send_then_try_recv,
                    (q.sender().unwrap(), q.receiver().unwrap(), COUNT),
                )
                .unwrap()
        })
        .collect();
    let empties: Vec<u64> = children.into_iter().map(join).collect();
    assert_eq!(
        empties,
        vec![0; PROCS],
        "try_recv said Empty after a send returned"
    );
}

#[test]
fn iterators_blocking_non_blocking_and_for_loop() {
    let (tx, rx) = queue::bounded::<u32>(8).unwrap();
    assert_eq!(
        rx.try_iter().count(),
        0,
        "nothing ready: try_iter ends at once"
    );
    for i in 0..5 {
        tx.send(i).unwrap();
    }
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    for i in 5..8 {
        tx.send(i).unwrap();
    }
    drop(tx);
    // `for in &rx` blocks for each message and ends at disconnection.
    let mut got = Vec::new();
    for v in &rx {
        got.push(v);
    }
    assert_eq!(got, vec![5, 6, 7]);
    assert_eq!(rx.iter().next(), None);
}

/// `max_message(0)` on a typed queue: only a message whose encoding is
/// empty fits (rkyv's `()`); anything else is `TooLarge` with its length,
/// its slot skipped, and the queue goes on.
#[test]
fn a_typed_queue_of_zero_byte_messages() {
    let q = Queue::<Rkyv<()>>::builder()
        .capacity(2)
        .max_message(0)
        .create()
        .unwrap();
    assert_eq!(q.max_message(), 0);
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    tx.send(()).unwrap();
    tx.try_send(()).unwrap();
    assert!(matches!(tx.try_send(()), Err(TrySendError::Full(()))));
    rx.recv_timeout(common::WATCHDOG).unwrap();
    rx.recv_timeout(common::WATCHDOG).unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

    let q = Queue::<Rkyv<u64>>::builder()
        .max_message(0)
        .create()
        .unwrap();
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    assert_eq!(tx.send(7), Err(SendError::TooLarge { len: 8, max: 0 }));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

    let q = Queue::<Serde<String>>::builder()
        .max_message(0)
        .create()
        .unwrap();
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    assert_eq!(
        tx.send_timeout(String::new(), common::WATCHDOG),
        Err(SendTimeoutError::TooLarge { len: 1, max: 0 })
    );
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

/// The item `i` of a layout test: every byte differs from its neighbours'
/// and from the same byte of item `i - 1`, so a torn or shifted read shows.
fn layout_item<T: shmkit::Pod>(i: u64) -> T {
    let mut t = T::zeroed();
    for (k, b) in shmkit::bytemuck::bytes_of_mut(&mut t)
        .iter_mut()
        .enumerate()
    {
        *b = (i as u8).wrapping_mul(7).wrapping_add(k as u8);
    }
    t
}

const LAYOUT_ITEMS: u64 = 3_000;

fn send_layout_items<T: shmkit::Pod + Send>(tx: Sender<T>) {
    // Single sends and runs of 3, alternately.
    let mut i = 0;
    while i < LAYOUT_ITEMS {
        if i % 2 == 0 {
            tx.send(layout_item(i)).unwrap();
            i += 1;
        } else {
            let run: Vec<T> = (i..(i + 3).min(LAYOUT_ITEMS)).map(layout_item).collect();
            tx.send_many(&run).unwrap();
            i += run.len() as u64;
        }
    }
}

/// Sends `LAYOUT_ITEMS` items of `T` from a child into a queue of 3 (4
/// slots: every slot goes round hundreds of laps) and checks each byte;
/// the data area must be `area` bytes (the layout DESIGN.md gives).
fn items_cross_in_their_layout<T: shmkit::Pod + Send + std::fmt::Debug>(area: u64) {
    let q = Queue::<T>::builder().capacity(3).create().unwrap();
    assert_eq!(
        q.segment().element_count(),
        area,
        "{}",
        std::any::type_name::<T>()
    );
    let rx = q.receiver().unwrap();
    let child = process::spawn(send_layout_items::<T>, q.sender().unwrap()).unwrap();
    let mut buf = vec![T::zeroed(); 2];
    let mut next = 0;
    while next < LAYOUT_ITEMS {
        // Single receives and runs, alternately.
        let got: Vec<T> = if next % 2 == 0 {
            vec![rx.recv_timeout(WATCHDOG).unwrap()]
        } else {
            let n = rx.recv_many_timeout(&mut buf, WATCHDOG).unwrap();
            buf[..n].to_vec()
        };
        for v in got {
            let want: T = layout_item(next);
            assert_eq!(
                shmkit::bytemuck::bytes_of(&v),
                shmkit::bytemuck::bytes_of(&want),
                "{} item {next}",
                std::any::type_name::<T>()
            );
            next += 1;
        }
    }
    join(child);
    assert!(matches!(
        rx.recv_timeout(WATCHDOG),
        Err(RecvTimeoutError::Disconnected)
    ));
}

#[test]
fn every_slot_layout_carries_its_items_whole_across_processes() {
    let _w = watchdog("slot layouts");
    // A 16-byte header (stamp, length) before the item, to a power of two
    // up to 64 bytes (so small slots share a line and none straddles
    // two), then a whole number of lines; a ZST is a header alone.
    items_cross_in_their_layout::<()>(4 * 16);
    items_cross_in_their_layout::<u8>(4 * 32);
    items_cross_in_their_layout::<u64>(4 * 32);
    items_cross_in_their_layout::<[u8; 17]>(4 * 64);
    items_cross_in_their_layout::<[u64; 6]>(4 * 64);
    items_cross_in_their_layout::<[u8; 64]>(4 * 128);
    items_cross_in_their_layout::<u128>(4 * 32);
    items_cross_in_their_layout::<[u128; 3]>(4 * 64);
}

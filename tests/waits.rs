//! Every wait notices a dead peer, whatever the length of each wait, and
//! garbage never wedges a queue for good (issue 14, items 3 and 4).
//!
//! Waiters that slice their waits into 0, 1, 5, 20 and 50 ms (and `try_`
//! calls with the caller's own sleep in between) while their peer is
//! SIGKILLed must see the death: `Disconnected`, or the messages behind a
//! dead sender's reserved slot. Garbage written into a live queue's slot
//! stamps and cursors must be repaired. A pipe end taken over after its
//! holder was SIGKILLed mid-receive or mid-send must lose no committed
//! message and never block the writer for good.
//!
//! No test asserts how fast: each loop has a watchdog of [`WATCH`] that
//! catches a waiter that never sees the death (a hang), nothing else.

mod common;

use common::{WATCHDOG, unique};
use shmkit::Array;
use shmkit::pipe::Connection;
use shmkit::process::{Builder, Process};
use shmkit::queue::Rkyv;
use shmkit::queue::{
    Queue, Receiver, RecvTimeoutError, SendError, SendTimeoutError, Sender, TryRecvError,
    TrySendError,
};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Catches hangs only: far above the 50 ms look interval, so a slow machine
/// never trips it, while a waiter that never looks does.
const WATCH: Duration = Duration::from_secs(10);

/// How a waiter slices its waiting.
#[derive(Clone, Copy, Debug)]
enum Slice {
    /// `*_timeout(d)` in a loop.
    Timeout(Duration),
    /// `try_*` in a loop, with the caller's own sleep of `d` in between.
    TryThenSleep(Duration),
}

const SLICES: [Slice; 7] = [
    Slice::Timeout(Duration::ZERO),
    Slice::Timeout(Duration::from_millis(1)),
    Slice::Timeout(Duration::from_millis(5)),
    Slice::Timeout(Duration::from_millis(20)),
    Slice::Timeout(Duration::from_millis(50)),
    Slice::TryThenSleep(Duration::from_millis(1)),
    Slice::TryThenSleep(Duration::from_millis(20)),
];

/// Repeats `f` until it gives a value; fails the test if that takes longer
/// than the watchdog (a hang).
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + WATCH;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            Instant::now() < end,
            "watchdog: {what} not seen after {WATCH:?} (a hang)"
        );
    }
}

fn start<A: shmkit::Message, R: shmkit::Message>(f: fn(A) -> R, args: A) -> Process<R> {
    Builder::new().daemon(true).spawn(f, args).unwrap()
}

fn sigkill<R: shmkit::Message>(p: Process<R>) {
    p.kill().unwrap();
    assert_eq!(
        p.wait_timeout(WATCHDOG).unwrap(),
        Some(-libc::SIGKILL),
        "watchdog: child did not die"
    );
}

/// One receive as `slice` says; a `try_recv` that finds nothing reads as a
/// `recv_timeout` that timed out.
fn recv_sliced(rx: &Receiver<u64>, slice: Slice) -> Result<u64, RecvTimeoutError> {
    match slice {
        Slice::Timeout(d) => rx.recv_timeout(d),
        Slice::TryThenSleep(d) => rx.try_recv().map_err(|e| {
            std::thread::sleep(d);
            match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                e => panic!("{e:?}"),
            }
        }),
    }
}

/// Sends one message, then lives on until killed.
fn send_one_then_sleep(tx: Sender<u64>) {
    tx.send(1).unwrap();
    std::thread::sleep(WATCHDOG);
}

#[test]
fn short_receives_see_a_killed_sender() {
    for slice in SLICES {
        let q = Queue::<u64>::builder().capacity(2).create().unwrap();
        let rx = q.receiver().unwrap();
        let child = start(send_one_then_sleep, q.sender().unwrap());
        assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), 1);
        sigkill(child);
        until(&format!("{slice:?}: Disconnected"), || {
            match recv_sliced(&rx, slice) {
                Err(RecvTimeoutError::Disconnected) => Some(()),
                Err(RecvTimeoutError::Timeout) => None,
                other => panic!("{slice:?}: {other:?}"),
            }
        });
        assert_eq!(q.stats().reaped, 1, "{slice:?}");
    }
}

/// Reserves a slot (claimed, never committed), says so, and lives on
/// until killed.
fn reserve_then_sleep((mut tx, said): (Sender<u64>, Array<u32>)) {
    let slot = tx.reserve().unwrap();
    said.atomic(0).store(1, Ordering::SeqCst);
    std::thread::sleep(WATCHDOG);
    drop(slot);
}

#[test]
fn messages_behind_a_killed_senders_reserved_slot_reach_short_receivers() {
    for slice in SLICES {
        // Capacity 2: the dead claim and one message fill the ring.
        let q = Queue::<u64>::builder().capacity(2).create().unwrap();
        let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
        let said = Array::<u32>::new(1).unwrap();
        let child = start(reserve_then_sleep, (q.sender().unwrap(), said.clone()));
        common::wait_until("the child's reservation", || {
            said.atomic(0).load(Ordering::SeqCst) == 1
        });
        tx.send(7).unwrap();
        assert!(q.is_full());
        sigkill(child);
        // `tx` lives: the queue is not disconnected; only skipping the dead
        // claim delivers 7.
        let got = until(
            &format!("{slice:?}: the message behind"),
            || match recv_sliced(&rx, slice) {
                Ok(v) => Some(v),
                Err(RecvTimeoutError::Timeout) => None,
                Err(e) => panic!("{slice:?}: {e:?}"),
            },
        );
        assert_eq!(got, 7, "{slice:?}");
        assert_eq!(q.stats().skipped, 1, "{slice:?}");
        // The ring wraps on: both slots usable again.
        for v in [8, 9, 10] {
            tx.send_timeout(v, WATCHDOG).unwrap();
            assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), v);
        }
    }
}

/// Registers as the queue's receiver and lives on until killed.
fn receive_nothing(rx: Receiver<u64>) {
    let _keep = rx;
    std::thread::sleep(WATCHDOG);
}

#[test]
fn short_sends_see_a_killed_receiver() {
    for slice in SLICES {
        let q = Queue::<u64>::builder().capacity(2).create().unwrap();
        let tx = q.sender().unwrap();
        let child = start(receive_nothing, q.receiver().unwrap());
        let pid = child.pid();
        common::wait_until("the child's receiver", || {
            q.participants().iter().any(|p| p.pid == pid && !p.sender)
        });
        tx.send(1).unwrap();
        tx.send(2).unwrap(); // full
        sigkill(child);
        until(&format!("{slice:?}: Disconnected"), || {
            // Some(true): disconnected; Some(false): no room yet.
            let r = match slice {
                Slice::Timeout(d) => match tx.send_timeout(3, d) {
                    Err(SendTimeoutError::Disconnected(3)) => Some(true),
                    Err(SendTimeoutError::Timeout(3)) => Some(false),
                    other => panic!("{slice:?}: {other:?}"),
                },
                Slice::TryThenSleep(d) => match tx.try_send(3) {
                    Err(TrySendError::Disconnected(3)) => Some(true),
                    Err(TrySendError::Full(3)) => {
                        std::thread::sleep(d);
                        Some(false)
                    }
                    other => panic!("{slice:?}: {other:?}"),
                },
            };
            r.filter(|&disconnected| disconnected).map(|_| ())
        });
    }
}

/// Says "up" through its pipe end, then holds it until killed.
fn hold_end(c: Connection<Rkyv<u64>>) {
    c.send_bytes(b"up").unwrap();
    std::thread::sleep(WATCHDOG);
}

#[test]
fn short_polls_and_receives_on_a_pipe_see_a_killed_peer() {
    for slice in SLICES {
        for use_poll in [true, false] {
            let (here, there) = Connection::<Rkyv<u64>>::builder()
                .capacity(2)
                .max_message(64)
                .create()
                .unwrap();
            let child = start(hold_end, there);
            assert!(here.poll(WATCH));
            assert_eq!(here.recv_bytes().unwrap(), b"up");
            sigkill(child);
            let d = match slice {
                Slice::Timeout(d) | Slice::TryThenSleep(d) => d,
            };
            until(&format!("{slice:?}, poll {use_poll}: the death"), || {
                let seen = if use_poll {
                    here.poll(d)
                } else {
                    match here.recv_timeout(d) {
                        Err(RecvTimeoutError::Disconnected) => true,
                        Err(RecvTimeoutError::Timeout) => false,
                        other => panic!("{slice:?}: {other:?}"),
                    }
                };
                if !seen && matches!(slice, Slice::TryThenSleep(_)) {
                    std::thread::sleep(d);
                }
                seen.then_some(())
            });
            assert!(matches!(
                here.recv_timeout(WATCHDOG),
                Err(RecvTimeoutError::Disconnected)
            ));
            assert!(matches!(
                here.send_bytes(b"x"),
                Err(SendError::Disconnected(()))
            ));
        }
    }
}

#[test]
fn connection_recover_reports_a_killed_peer_once() {
    let (here, there) = Connection::<Rkyv<u64>>::builder()
        .capacity(2)
        .max_message(64)
        .create()
        .unwrap();
    let child = start(hold_end, there);
    assert!(here.poll(WATCH));
    assert_eq!(here.recv_bytes().unwrap(), b"up");
    assert!(!here.recover(), "a live peer is not dead");
    sigkill(child);
    assert!(here.recover(), "the killed peer is found at once");
    assert!(!here.recover(), "and only once");
    assert!(here.poll(Duration::ZERO));
}

// ---- garbage ----

/// Where a named `Queue<u64>`'s words are, for writing garbage.
struct Words {
    control: *mut u8,
    slots: *mut u8,
    stride: usize,
    cap: u64,
}

impl Words {
    fn of(q: &Queue<u64>) -> Words {
        let seg = q.segment();
        let data = seg.len() - seg.element_count() as usize;
        // SAFETY: offsets inside the mapping (the control block follows the
        // header at a 128-byte boundary; the slots end the region).
        unsafe {
            Words {
                control: seg
                    .as_ptr()
                    .add(shmkit::region::HEADER_SIZE.next_multiple_of(128)),
                slots: seg.as_ptr().add(data),
                stride: seg.element_count() as usize / q.capacity(),
                cap: q.capacity() as u64,
            }
        }
    }

    fn word(&self, p: *mut u8) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: an aligned u64 of the live mapping, which outlives `self`'s
        // uses in these tests; shared words are atomics.
        unsafe { &*p.cast::<std::sync::atomic::AtomicU64>() }
    }

    fn head(&self) -> &std::sync::atomic::AtomicU64 {
        self.word(self.control)
    }

    fn tail(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: the tail cursor is at control + 128.
        self.word(unsafe { self.control.add(128) })
    }

    /// The stamp of the slot serving position `pos`.
    fn seq(&self, pos: u64) -> &std::sync::atomic::AtomicU64 {
        let i = (pos % self.cap) as usize;
        // SAFETY: slot i of `cap` lies inside the slot area.
        self.word(unsafe { self.slots.add(i * self.stride) })
    }
}

/// A named queue that has gone round its ring a few times, holding `held`
/// messages 100, 101, ... from the tail on; a sender and a receiver.
fn lapped_queue(cap: usize, held: u64) -> (Queue<u64>, Sender<u64>, Receiver<u64>) {
    let q = Queue::<u64>::builder()
        .name(unique("garbage"))
        .capacity(cap)
        .create()
        .unwrap();
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    for i in 0..(3 * cap as u64 + 1) {
        tx.send(i).unwrap();
        assert_eq!(rx.recv().unwrap(), i);
    }
    for v in 100..100 + held {
        tx.send(v).unwrap();
    }
    (q, tx, rx)
}

/// After garbage: every message committed before it arrives, in order, and
/// the queue then carries new ones round the whole ring; never `Timeout`
/// for good (the watchdog), never a lost committed message.
fn works_again(tx: &Sender<u64>, rx: &Receiver<u64>, held: u64, what: &str) {
    for v in 100..100 + held {
        let got = until(&format!("{what}: message {v}"), || {
            match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(v) => Some(v),
                Err(RecvTimeoutError::Timeout) => None,
                Err(e) => panic!("{what}: {e:?}"),
            }
        });
        assert_eq!(got, v, "{what}");
    }
    for v in 1000..1000 + 3 * tx.queue().capacity() as u64 {
        until(&format!("{what}: room to send {v}"), || {
            match tx.send_timeout(v, Duration::from_millis(1)) {
                Ok(()) => Some(()),
                Err(SendTimeoutError::Timeout(_)) => None,
                Err(e) => panic!("{what}: {e:?}"),
            }
        });
        assert_eq!(rx.recv_timeout(WATCHDOG).unwrap(), v, "{what}");
    }
}

/// A garbage stamp for the slot of position `p` in a ring of capacity `c`.
type Garbage = fn(u64, u64) -> u64;

#[test]
fn garbage_in_the_slot_stamps_at_the_cursors_is_repaired() {
    for cap in [2usize, 8] {
        for held in [0, 1] {
            let (q, tx, rx) = lapped_queue(cap, held);
            let w = Words::of(&q);
            let c = cap as u64;
            // Garbage for the slot the next sender needs (free: stamp `p`),
            // and for the one the next receiver needs (committed: `p + 1`).
            let mut cases: Vec<(&str, Garbage)> = vec![
                ("head", |_, _| 0),
                ("head", |_, _| u64::MAX),
                ("head", |p, c| p + c * 7),
                ("head", |p, _| p + 1),
                ("head", |p, c| p + 1 - c), // "held" by nobody
            ];
            if held > 0 {
                cases.extend([
                    ("tail", (|_, _| 0) as Garbage),
                    ("tail", |_, _| u64::MAX),
                    ("tail", |p, c| p + c * 7),
                    ("tail", |p, _| p),     // "uncommitted", nobody writing it
                    ("tail", |p, c| p + c), // "released" before it was received
                ]);
            }
            for (at, garbage) in cases {
                let (t, h) = (
                    w.tail().load(Ordering::SeqCst),
                    w.head().load(Ordering::SeqCst),
                );
                assert_eq!(h - t, held);
                let pos = if at == "head" { h } else { t };
                let value = garbage(pos, c);
                let what = format!("capacity {cap}, {held} held, {at} stamp {value}");
                let before = q.stats().repaired;
                w.seq(pos).store(value, Ordering::SeqCst);
                works_again(&tx, &rx, held, &what);
                assert!(q.stats().repaired > before, "{what}: not counted");
                // Put the held messages back for the next case.
                for v in 100..100 + held {
                    tx.send(v).unwrap();
                }
            }
        }
    }
}

#[test]
fn garbage_that_looks_held_in_the_first_lap_is_repaired() {
    // In the first lap, "held from the last lap" at position cap - 1 would
    // be the stamp 0, which is also what "no intent" reads as: found by the
    // live scribble test below (a receiver without intent counted as its
    // holder, and the queue wedged).
    for cap in [2usize, 4] {
        let q = Queue::<u64>::builder()
            .name(unique("first-lap"))
            .capacity(cap)
            .create()
            .unwrap();
        let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
        for i in 0..cap as u64 - 1 {
            tx.send(i).unwrap();
            assert_eq!(rx.recv().unwrap(), i);
        }
        let w = Words::of(&q);
        w.seq(cap as u64 - 1).store(0, Ordering::SeqCst);
        works_again(&tx, &rx, 0, &format!("capacity {cap}, first lap, stamp 0"));
        assert!(q.stats().repaired > 0);
    }
}

#[test]
fn garbage_in_the_cursors_is_repaired() {
    let cap = 8usize;
    let held = 3;
    for garbage_head in [
        |t: u64, _h: u64| t.wrapping_sub(1), // behind the tail
        |_t: u64, h: u64| h + 8 * 7,         // laps ahead
        |_t: u64, _h: u64| u64::MAX,
    ] {
        let (q, tx, rx) = lapped_queue(cap, held);
        let w = Words::of(&q);
        let (t, h) = (
            w.tail().load(Ordering::SeqCst),
            w.head().load(Ordering::SeqCst),
        );
        w.head().store(garbage_head(t, h), Ordering::SeqCst);
        works_again(&tx, &rx, held, "a garbage head");
        assert!(q.stats().repaired > 0);
    }
}

/// Sends 0, 1, 2, ... retrying on timeouts, then `u64::MAX`.
fn send_through_garbage(tx: Sender<u64>) {
    for v in (0..3000).chain([u64::MAX]) {
        loop {
            match tx.send_timeout(v, Duration::from_millis(1)) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(_)) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}

#[test]
fn garbage_scribbled_into_a_live_queues_stamps_never_wedges_it() {
    let q = Queue::<u64>::builder()
        .name(unique("live-garbage"))
        .capacity(4)
        .create()
        .unwrap();
    let rx = q.receiver().unwrap();
    let mut child = start(send_through_garbage, q.sender().unwrap());
    let w = Words::of(&q);
    let mut rng = 0x9e37_79b9_u64 ^ std::process::id() as u64;
    let mut received = 0u64;
    let mut scribbles = 0;
    // Receive while scribbling on random stamps now and then; the sender's
    // last message must get through (a hang trips the watchdog).
    let end = Instant::now() + WATCH - Duration::from_secs(1);
    let state = |w: &Words| {
        format!(
            "tail {} head {} stamps {:?} participants {:?} stats {:?}",
            w.tail().load(Ordering::SeqCst),
            w.head().load(Ordering::SeqCst),
            (0..4)
                .map(|p| w.seq(p).load(Ordering::SeqCst))
                .collect::<Vec<_>>(),
            q.participants(),
            q.stats()
        )
    };
    until("the sender's last message", || {
        assert!(
            Instant::now() < end,
            "watchdog: the sender's last message; {}",
            state(&w)
        );
        if scribbles < 50 && received.is_multiple_of(20) {
            let pos = common::xorshift(&mut rng) % 4;
            let garbage = match common::xorshift(&mut rng) % 4 {
                0 => 0,
                1 => u64::MAX,
                2 => w.tail().load(Ordering::SeqCst) + 4 * 7,
                _ => common::xorshift(&mut rng),
            };
            w.seq(pos).store(garbage, Ordering::SeqCst);
            scribbles += 1;
        }
        match rx.recv_timeout(Duration::from_millis(1)) {
            Ok(u64::MAX) => Some(()),
            Ok(_) => {
                received += 1;
                None
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(e) => panic!("{e:?}"),
        }
    });
    assert!(child.join_timeout(WATCHDOG).unwrap().is_some());
    assert!(q.stats().repaired > 0);
    eprintln!(
        "live garbage: {scribbles} scribbles, {received} received, {:?}",
        q.stats()
    );
}

// ---- pipe take-over ----

/// Takes over end 1 of the named pipe, says so, receives one message and,
/// inside the receive, says so and lives on until killed.
fn receive_and_hang((name, said): (String, Array<u32>)) {
    let c = Connection::<Rkyv<u64>>::builder()
        .name(&name)
        .open(1)
        .unwrap();
    said.atomic(0).store(1, Ordering::SeqCst);
    let _ = c.recv_with_bytes(|_| {
        said.atomic(0).store(2, Ordering::SeqCst);
        std::thread::sleep(WATCHDOG);
    });
}

#[test]
fn taking_over_a_pipe_end_killed_mid_receive_loses_nothing_and_unblocks_the_writer() {
    let name = unique("pipe-recv");
    let (here, there) = Connection::<Rkyv<u64>>::builder()
        .name(&name)
        .capacity(2)
        .max_message(64)
        .create()
        .unwrap();
    drop(there);
    let said = Array::<u32>::new(1).unwrap();
    let child = start(receive_and_hang, (name.clone(), said.clone()));
    common::wait_until("the child's end", || {
        said.atomic(0).load(Ordering::SeqCst) == 1
    });
    here.send_bytes(b"first").unwrap();
    here.send_bytes(b"second").unwrap(); // both slots used: the writer is at the brim
    common::wait_until("the child inside recv", || {
        said.atomic(0).load(Ordering::SeqCst) == 2
    });
    sigkill(child);
    let taker = Connection::<Rkyv<u64>>::builder()
        .name(&name)
        .open(1)
        .unwrap();
    // The writer sends on in a thread (each send needs a slot the dead end
    // held or the taker frees); the taker gets everything, in order.
    let writer = std::thread::spawn(move || {
        for i in 0..6u8 {
            here.send_bytes(&[i]).unwrap();
        }
        here
    });
    let _w = common::watchdog("pipe take-over after a kill mid-receive");
    let mut got = Vec::new();
    for _ in 0..8 {
        assert!(taker.poll(WATCH), "watchdog: message {}", got.len());
        got.push(taker.recv_bytes().unwrap());
    }
    let mut expect: Vec<Vec<u8>> = vec![b"first".to_vec(), b"second".to_vec()];
    expect.extend((0..6u8).map(|i| vec![i]));
    assert_eq!(got, expect);
    drop(writer.join().unwrap());
}

/// Takes over end 1, says so, sends a small message, then a large one, in
/// whose copy it is killed.
fn send_and_die((name, said): (String, Array<u32>)) {
    let c = Connection::<Rkyv<u64>>::builder()
        .name(&name)
        .open(1)
        .unwrap();
    said.atomic(0).store(1, Ordering::SeqCst);
    c.send_bytes(b"before").unwrap();
    let big = vec![7u8; c.max_message()];
    loop {
        c.send_bytes(&big).unwrap();
    }
}

#[test]
fn taking_over_a_pipe_end_killed_mid_send_skips_its_claim() {
    const BIG: usize = 8 << 20;
    // The kill must land between the claim and the commit of an 8 MiB copy
    // into fresh pages (milliseconds of page faults); a round where it
    // landed elsewhere is retried.
    let mut mid_send = 0;
    for _round in 0..10 {
        let name = unique("pipe-send");
        let (here, there) = Connection::<Rkyv<u64>>::builder()
            .name(&name)
            .capacity(2)
            .max_message(BIG)
            .create()
            .unwrap();
        drop(there);
        let said = Array::<u32>::new(1).unwrap();
        let child = start(send_and_die, (name.clone(), said.clone()));
        common::wait_until("the child's end", || {
            said.atomic(0).load(Ordering::SeqCst) == 1
        });
        assert!(here.poll(WATCH));
        assert_eq!(here.recv_bytes().unwrap(), b"before");
        // Direction 1 (end 1 -> end 0): its head at control + 384, its slots
        // in the second half of the data area.
        let seg = here.segment();
        let base = seg.as_ptr();
        let data = seg.len() - seg.element_count() as usize;
        let stride = seg.element_count() as usize / 4;
        let word = |off: usize| {
            // SAFETY: an aligned u64 inside the live mapping, read atomically.
            unsafe { &*base.add(off).cast::<std::sync::atomic::AtomicU64>() }
        };
        let head = word(shmkit::region::HEADER_SIZE.next_multiple_of(128) + 384);
        let seq1 = word(data + 2 * stride + stride); // position 1's stamp
        let end = Instant::now() + WATCH;
        while head.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < end, "watchdog: the big claim");
            std::hint::spin_loop();
        }
        sigkill(child);
        if head.load(Ordering::SeqCst) != 2 || seq1.load(Ordering::SeqCst) != 1 {
            continue; // the copy was committed before the kill landed
        }
        mid_send += 1;
        let taker = Connection::<Rkyv<u64>>::builder()
            .name(&name)
            .open(1)
            .unwrap();
        taker.send_bytes(b"after").unwrap();
        assert!(
            here.poll(WATCH),
            "watchdog: the message after the dead claim"
        );
        assert_eq!(here.recv_bytes().unwrap(), b"after");
        break;
    }
    assert!(mid_send > 0, "no kill landed mid-send in 10 rounds");
}

/// A named pipe of 4 slots (stride 64) and where its stamps live in the
/// file: `stamp(dir, pos)` is the byte offset of the slot's sequence word.
type Conn = Connection<Rkyv<u64>>;

fn pipe_with_stamps() -> (Conn, Conn, std::fs::File, impl Fn(u64, u64) -> u64) {
    use std::os::unix::fs::FileExt;
    let name = unique("pipe-garbage");
    let (here, there) = Connection::<Rkyv<u64>>::builder()
        .name(&name)
        .capacity(4)
        .max_message(48)
        .create()
        .unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!(
            "/dev/shm/{}",
            here.segment().name().unwrap().trim_start_matches('/')
        ))
        .unwrap();
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, 72).unwrap(); // the header's data offset
    let data = u64::from_ne_bytes(b);
    (here, there, file, move |dir, pos| {
        data + dir * 4 * 64 + (pos % 4) * 64
    })
}

fn write_stamp(file: &std::fs::File, at: u64, value: u64) {
    use std::os::unix::fs::FileExt;
    file.write_all_at(&value.to_ne_bytes(), at).unwrap();
}

/// Receives on `c` until a message arrives (the waits look for garbage every
/// 50 ms); the watchdog catches a wedge.
fn recv_soon(c: &mut Connection<Rkyv<u64>>, what: &str) -> Result<u64, RecvTimeoutError> {
    until(what, || match c.recv_timeout(Duration::from_millis(5)) {
        Err(RecvTimeoutError::Timeout) => None,
        r => Some(r),
    })
}

/// Garbage in a pipe's slot stamps: repaired where the right stamp is
/// certain (a free slot, a committed one behind another, a released one,
/// a full ring), reported as `Corrupted` with the segment's name where it is
/// not (the only message in flight); never a silent wedge.
#[test]
fn garbage_in_a_pipes_stamps_is_repaired_or_reported() {
    let _w = common::watchdog("pipe stamps: a send or receive wedged");
    let (here, mut there, file, stamp) = pipe_with_stamps();
    // Direction 0 carries here -> there. Lap the ring once first.
    for v in 0..6u64 {
        here.send(&v).unwrap();
        assert_eq!(recv_soon(&mut there, "lap").unwrap(), v);
    }
    // A: nothing in flight (head == tail == 6): the free slot's stamp.
    write_stamp(&file, stamp(0, 6), u64::MAX);
    here.send(&60u64).unwrap(); // needs the stamp repaired first
    assert_eq!(recv_soon(&mut there, "A").unwrap(), 60);
    // B: two committed messages; the first one's stamp overwritten.
    here.send(&70u64).unwrap();
    here.send(&71u64).unwrap();
    write_stamp(&file, stamp(0, 7), 3);
    assert_eq!(recv_soon(&mut there, "B first").unwrap(), 70);
    assert_eq!(recv_soon(&mut there, "B second").unwrap(), 71);
    // D: a full ring; the oldest message's stamp overwritten.
    for v in 80..84u64 {
        here.send(&v).unwrap();
    }
    write_stamp(&file, stamp(0, 9), 0);
    for v in 80..84u64 {
        assert_eq!(recv_soon(&mut there, "D").unwrap(), v);
    }
    // E: one message in flight, the sender's next (released) slot scribbled.
    here.send(&90u64).unwrap();
    write_stamp(&file, stamp(0, 14), 12345);
    here.send(&91u64).unwrap();
    assert_eq!(recv_soon(&mut there, "E first").unwrap(), 90);
    assert_eq!(recv_soon(&mut there, "E second").unwrap(), 91);
    // C: the only message in flight, its stamp overwritten: the sender may
    // still be writing it, so it is reported, with the segment's name.
    here.send(&99u64).unwrap();
    write_stamp(&file, stamp(0, 15), 7);
    match recv_soon(&mut there, "C") {
        Err(RecvTimeoutError::Corrupted(e)) => {
            let text = e.to_string();
            let name = here.segment().name().unwrap().trim_start_matches('/');
            assert!(text.contains(name) && text.contains("impossible"), "{text}");
        }
        other => panic!("C: {other:?}"),
    }
}

//! crossbeam-channel's array-flavour tests (`crossbeam-channel/tests/array.rs`)
//! that concern capacity, length, `try_send` and ordering, ported to shmkit's
//! queue with the two ends in different processes. The assertions are
//! crossbeam's; only the API spelling differs (`TrySendError::Full(v)` for
//! `TrySendError::Full(v)`, the queue's `len`/`is_full` for the channel's),
//! and sleeps are shortened (crossbeam's 1500/1000/500 ms become
//! 600/400/200 ms) to keep the suite short.

mod common;

use shmkit::Error;
use shmkit::Message;
use shmkit::process::{Builder, Process};
use shmkit::queue::{
    self, Receiver, RecvError, RecvTimeoutError, SendTimeoutError, Sender, TryRecvError,
    TrySendError,
};
use std::time::Duration;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn spawn<A: Message, R: Message>(f: fn(A) -> R, args: A) -> Process<R> {
    Builder::new().daemon(true).spawn(f, args).unwrap()
}

use common::join_child as join;

#[test]
fn smoke() {
    let (s, r) = queue::bounded::<i32>(1).unwrap();
    s.send(7).unwrap();
    assert_eq!(r.try_recv(), Ok(7));
    s.send(8).unwrap();
    assert_eq!(r.recv(), Ok(8));
    assert_eq!(r.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(r.recv_timeout(ms(100)), Err(RecvTimeoutError::Timeout));
}

/// crossbeam `capacity`: `bounded(i)` has capacity `i` for 1..10 — and, here,
/// holds exactly `i` (the ring rounds its slots up to a power of two).
#[test]
fn capacity() {
    for i in 1..10 {
        let (s, r) = queue::bounded::<u8>(i).unwrap();
        assert_eq!(s.queue().capacity(), i);
        assert_eq!(r.queue().capacity(), i);
        for k in 0..i {
            assert_eq!(s.try_send(k as u8), Ok(()), "message {k} of {i}");
        }
        assert_eq!(s.try_send(99), Err(TrySendError::Full(99)), "capacity {i}");
        assert_eq!(
            s.send_timeout(98, Duration::ZERO),
            Err(SendTimeoutError::Timeout(98))
        );
        assert_eq!(r.recv(), Ok(0));
        assert_eq!(s.try_send(100), Ok(()), "room for one after a receive");
        assert_eq!(s.try_send(101), Err(TrySendError::Full(101)));
    }
    // The sizes around powers of two and a large one.
    for i in [15, 16, 17, 1000] {
        let (s, _r) = queue::bounded::<u16>(i).unwrap();
        for k in 0..i {
            s.try_send(k as u16).unwrap();
        }
        assert!(s.queue().is_full());
        assert_eq!(s.queue().len(), i);
        assert!(matches!(s.try_send(0), Err(TrySendError::Full(0))));
    }
}

#[test]
fn capacity_zero_is_refused_with_a_message() {
    let e = queue::bounded::<u8>(0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidArgument {
                argument: "capacity",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("at least 1"), "{e}");
}

#[test]
fn len_empty_full() {
    let (s, r) = queue::bounded::<()>(2).unwrap();
    let (sq, rq) = (s.queue(), r.queue());
    assert_eq!(sq.len(), 0);
    assert!(sq.is_empty());
    assert!(!sq.is_full());
    assert_eq!(rq.len(), 0);
    assert!(rq.is_empty());
    assert!(!rq.is_full());

    s.send(()).unwrap();
    assert_eq!(sq.len(), 1);
    assert!(!sq.is_empty());
    assert!(!sq.is_full());

    s.send(()).unwrap();
    assert_eq!(sq.len(), 2);
    assert!(!sq.is_empty());
    assert!(sq.is_full());
    assert_eq!(rq.len(), 2);
    assert!(rq.is_full());

    r.recv().unwrap();
    assert_eq!(sq.len(), 1);
    assert!(!sq.is_empty());
    assert!(!sq.is_full());
}

/// The receiving side of `try_send`, in its own process.
fn try_send_receiver(r: Receiver<i32>) {
    std::thread::sleep(ms(400));
    assert_eq!(r.try_recv(), Ok(1));
    assert_eq!(r.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(r.recv(), Ok(3));
}

/// crossbeam `try_send` (capacity 1), the receiver in another process.
#[test]
fn try_send() {
    let (s, r) = queue::bounded::<i32>(1).unwrap();
    let child = spawn(try_send_receiver, r);
    assert_eq!(s.try_send(1), Ok(()));
    assert_eq!(s.try_send(2), Err(TrySendError::Full(2)));
    std::thread::sleep(ms(600));
    assert_eq!(s.try_send(3), Ok(()));
    join(child);
    assert_eq!(s.try_send(4), Err(TrySendError::Disconnected(4)));
}

fn len_receiver((r, count, cap): (Receiver<u64>, u64, u64)) {
    for i in 0..count {
        assert_eq!(r.recv(), Ok(i));
        assert!(r.queue().len() as u64 <= cap);
    }
}

/// crossbeam `len` (capacity 1000, 25,000 messages), the concurrent part
/// across two processes.
#[test]
fn len() {
    const COUNT: u64 = 25_000;
    const CAP: usize = 1000;
    let (s, r) = queue::bounded::<u64>(CAP).unwrap();
    let q = s.queue().clone();
    assert_eq!(q.len(), 0);
    for _ in 0..CAP / 10 {
        for i in 0..50 {
            s.send(i).unwrap();
            assert_eq!(q.len(), i as usize + 1);
        }
        for i in 0..50 {
            r.recv().unwrap();
            assert_eq!(q.len(), 50 - i - 1);
        }
    }
    assert_eq!(q.len(), 0);
    for i in 0..CAP {
        s.send(i as u64).unwrap();
        assert_eq!(q.len(), i + 1);
    }
    assert!(q.is_full());
    for _ in 0..CAP {
        r.recv().unwrap();
    }
    assert_eq!(q.len(), 0);

    let child = spawn(len_receiver, (r, COUNT, CAP as u64));
    for i in 0..COUNT {
        s.send(i).unwrap();
        assert!(q.len() <= CAP);
    }
    join(child);
    assert_eq!(q.len(), 0);
}

fn spsc_receiver((r, count): (Receiver<u64>, u64)) {
    for i in 0..count {
        assert_eq!(r.recv(), Ok(i));
    }
    assert_eq!(r.recv(), Err(RecvError::Disconnected));
}

/// crossbeam `spsc` (capacity 3, 100,000 messages), across processes.
#[test]
fn spsc() {
    const COUNT: u64 = 100_000;
    let (s, r) = queue::bounded::<u64>(3).unwrap();
    let child = spawn(spsc_receiver, (r, COUNT));
    for i in 0..COUNT {
        s.send(i).unwrap();
    }
    drop(s);
    join(child);
}

fn mpmc_receiver((r, count): (Receiver<u64>, u64)) -> Vec<u64> {
    (0..count).map(|_| r.recv().unwrap()).collect()
}

fn mpmc_sender((s, count): (Sender<u64>, u64)) {
    for i in 0..count {
        s.send(i).unwrap();
    }
}

/// crossbeam `mpmc` (capacity 3, 4 senders and 4 receivers, 25,000 each),
/// each in its own process: every message arrives exactly 4 times.
#[test]
fn mpmc() {
    const COUNT: u64 = 25_000;
    const PROCS: usize = 4;
    let q = queue::Queue::<u64>::builder().capacity(3).create().unwrap();
    let receivers: Vec<_> = (0..PROCS)
        .map(|_| spawn(mpmc_receiver, (q.receiver().unwrap(), COUNT)))
        .collect();
    let senders: Vec<_> = (0..PROCS)
        .map(|_| spawn(mpmc_sender, (q.sender().unwrap(), COUNT)))
        .collect();
    senders.into_iter().for_each(join);
    let mut seen = vec![0u32; COUNT as usize];
    for got in receivers.into_iter().map(join) {
        for n in got {
            seen[n as usize] += 1;
        }
    }
    assert!(seen.iter().all(|&c| c == PROCS as u32));
}

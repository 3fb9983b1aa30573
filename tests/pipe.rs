//! The duplex Pipe with real processes: ping-pong, typed and byte messages,
//! and disconnection when the other end drops or is killed.

mod common;

use common::WATCHDOG;
use shmkit::pipe::{self, Connection};
use shmkit::process;
use shmkit::queue::{RecvTimeoutError, SendError, TryRecvError, TrySendError};
use shmkit::queue::{Rkyv, Serde};
use std::time::Duration;

fn echo(conn: Connection<Rkyv<u64>>) -> u64 {
    let mut n = 0;
    while let Ok(v) = conn.recv() {
        conn.send(&(v + 1)).unwrap();
        n += 1;
    }
    n
}

#[test]
fn ping_pong_with_a_child_then_disconnect_on_drop() {
    let (here, there) = pipe::pipe::<Rkyv<u64>>().unwrap();
    let mut child = process::spawn(echo, there).unwrap();
    let mut v = 0u64;
    for _ in 0..1000 {
        here.send(&v).unwrap();
        v = here.recv_timeout(WATCHDOG).unwrap();
    }
    assert_eq!(v, 1000);
    drop(here); // the child's recv sees Disconnected and returns
    assert_eq!(child.join_timeout(WATCHDOG).unwrap(), Some(1000));
}

#[test]
fn bytes_up_to_the_maximum_and_strings() {
    let (here, there) = Connection::<Rkyv<u64>>::builder()
        .capacity(4)
        .max_message(100_000)
        .create()
        .unwrap();
    let mut child = process::spawn(
        |c: Connection<Rkyv<u64>>| {
            let mut sizes = Vec::new();
            while let Ok(b) = c.recv_bytes() {
                assert!(b.iter().all(|&x| x == 7));
                sizes.push(b.len());
            }
            sizes
        },
        there,
    )
    .unwrap();
    for n in [0, 1, 1000, 99_999, 100_000] {
        here.send_bytes(&vec![7u8; n]).unwrap();
    }
    assert!(matches!(
        here.send_bytes(&vec![7u8; 100_001]),
        Err(SendError::TooLarge { .. })
    ));
    drop(here);
    assert_eq!(
        child.join_timeout(WATCHDOG).unwrap(),
        Some(vec![0, 1, 1000, 99_999, 100_000])
    );
}

#[test]
fn a_killed_peer_disconnects_the_pipe() {
    let (here, there) = pipe::pipe::<Rkyv<u64>>().unwrap();
    let child = process::spawn(
        |c: Connection<Rkyv<u64>>| {
            c.send(&1u64).unwrap();
            std::thread::sleep(Duration::from_secs(120));
        },
        there,
    )
    .unwrap();
    assert_eq!(here.recv_timeout(WATCHDOG).unwrap(), 1);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(matches!(
        here.recv_timeout(WATCHDOG),
        Err(RecvTimeoutError::Disconnected)
    ));
    assert!(here.poll(Duration::ZERO));
}

/// A serde message whose encoding does not fit is refused with its real
/// length, and the pipe goes on carrying the messages that fit.
#[test]
fn a_serde_message_too_large_for_the_pipe_is_refused_and_the_pipe_goes_on() {
    let (a, b) = Connection::<Serde<String>>::builder()
        .max_message(8)
        .create()
        .unwrap();
    let long = "x".repeat(20);
    // postcard: a one-byte length, then the bytes.
    assert_eq!(a.send(&long), Err(SendError::TooLarge { len: 21, max: 8 }));
    a.send("fits".to_owned()).unwrap();
    assert_eq!(b.recv_timeout(WATCHDOG).unwrap(), "fits");
    // Exactly the maximum fits; one byte over does not.
    a.send("y".repeat(7)).unwrap();
    assert_eq!(b.recv_timeout(WATCHDOG).unwrap(), "y".repeat(7));
    assert!(matches!(
        a.try_send("z".repeat(8)),
        Err(TrySendError::TooLarge { len: 9, max: 8 })
    ));
}

/// `try_send` on a full rkyv pipe gives the message back in `Full`; once
/// the other end reads, it goes through.
#[test]
fn try_send_on_a_full_typed_pipe_gives_the_message_back() {
    let (a, b) = Connection::<Rkyv<String>>::builder()
        .capacity(2)
        .create()
        .unwrap();
    a.try_send("one".to_owned()).unwrap();
    a.try_send("two".to_owned()).unwrap();
    match a.try_send("three".to_owned()) {
        Err(TrySendError::Full(m)) => assert_eq!(m, "three"),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.recv_timeout(WATCHDOG).unwrap(), "one");
    a.try_send("three".to_owned()).unwrap();
    assert_eq!(b.recv_timeout(WATCHDOG).unwrap(), "two");
    assert_eq!(b.recv_timeout(WATCHDOG).unwrap(), "three");
    assert_eq!(b.try_recv(), Err(TryRecvError::Empty));
}

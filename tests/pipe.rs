//! The duplex Pipe with real processes: ping-pong, typed and byte messages,
//! and disconnection when the other end drops or is killed.

mod common;

use common::WATCHDOG;
use shmkit::pipe::{self, Connection};
use shmkit::process;
use shmkit::queue::Rkyv;
use shmkit::queue::{RecvTimeoutError, SendError};
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

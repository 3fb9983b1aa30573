//! Unit tests of the pipe: layout, typed ends, refusal of other types.

use super::raw::{Direction, End};
use super::*;
use crate::error::RegionError;
use crate::queue::Rkyv;
use crate::queue::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};
use std::mem::offset_of;

#[test]
fn layout() {
    assert_eq!(size_of::<Direction>(), 384);
    assert_eq!(offset_of!(PipeControl, ends), 768);
    assert_eq!(size_of::<End>(), 64);
    assert_eq!(offset_of!(PipeControl, capacity), 896);
    assert_eq!(offset_of!(End, token), 16);
}

#[test]
fn a_pod_pipe_copies_items_and_refuses_other_sizes() {
    let (a, b) = pipe::<u64>().unwrap();
    assert_eq!(a.max_message(), 8);
    for v in [0, 1, u64::MAX] {
        a.send(v).unwrap();
        assert_eq!(b.recv().unwrap(), v);
    }
    assert_eq!(b.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(
        b.recv_timeout(Duration::from_millis(1)),
        Err(RecvTimeoutError::Timeout)
    );
    // Fill one direction (64 in flight): try_send gives the item back.
    let mut sent = 0u64;
    while a.try_send(sent).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 64);
    assert_eq!(a.try_send(7), Err(TrySendError::Full(7)));
    // A message of the wrong size (a peer's garbage) is Invalid, not read.
    let (c, d) = pipe::<Bytes>().unwrap();
    c.send_bytes(&[1, 2, 3]).unwrap();
    let raw: Connection<u64> = Connection {
        raw: d.raw.clone(),
        end: d.end,
        transit: Cell::new(1), // never closes the end on drop
        _t: PhantomData,
    };
    assert!(matches!(raw.recv(), Err(RecvError::Invalid(_))));
}

#[test]
fn opening_a_pipe_as_another_message_type_is_refused() {
    let name = format!("shmkit-test-{}-pipe-type", std::process::id());
    let (_a, _b) = Connection::<Rkyv<String>>::builder()
        .name(&name)
        .create()
        .unwrap();
    let e = Connection::<Rkyv<u64>>::builder()
        .name(&name)
        .open(1)
        .unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::TypeMismatch { .. })),
        "{e}"
    );
    let e = Connection::<u64>::builder()
        .name(&name)
        .open(1)
        .unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::TypeMismatch { .. })),
        "{e}"
    );
}

#[test]
fn in_process_round_trip_and_disconnect() {
    let (a, b) = Connection::<Rkyv<(u32, String)>>::builder()
        .capacity(2)
        .max_message(64)
        .create()
        .unwrap();
    a.send_bytes(b"ping").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"ping");
    b.send((1u32, String::from("pong"))).unwrap();
    assert!(a.poll(Duration::ZERO));
    assert_eq!(a.recv().unwrap(), (1, "pong".into()));
    assert!(!a.poll(Duration::from_millis(5)));
    assert!(matches!(
        a.recv_timeout(Duration::from_millis(5)),
        Err(RecvTimeoutError::Timeout)
    ));
    assert_eq!(a.try_recv(), Err(TryRecvError::Empty));
    assert!(matches!(
        a.send_bytes(&[0; 65]),
        Err(SendError::TooLarge { len: 65, max: 64 })
    ));
    b.send_bytes(b"last").unwrap();
    drop(b);
    assert_eq!(a.recv_bytes().unwrap(), b"last");
    assert!(matches!(a.recv_bytes(), Err(RecvError::Disconnected)));
    assert!(matches!(
        a.send_bytes(b"x"),
        Err(SendError::Disconnected(()))
    ));
}

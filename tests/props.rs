//! Property tests with shrinking (proptest) over what a hostile peer controls:
//! header bytes, queue indices, slot sequences and lengths, map geometry and
//! counters, and archives. Each case writes a generated set of bytes or words
//! into a real segment, opens and uses it, and restores the original before
//! the next case. A failure is shrunk to the fewest and smallest writes that
//! still break the property. `PROPTEST_CASES` sets the number of cases
//! (default 128 per property here); a watchdog catches hangs.
//!
//! `tests/hostile.rs` runs seeded byte scribbles over the same regions; this
//! file adds word-sized writes (whole indices and lengths), shrinking, and
//! round trips.

mod common;

use common::{SegmentFile, unique, watchdog};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use shmkit::queue::{Bytes, Queue};
use shmkit::{Array, Message, SharedMap, Value};
use std::os::unix::fs::FileExt;
use std::time::Duration;

const OPEN: Duration = Duration::from_millis(1);

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(128);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// One write a peer makes: at `at` (rounded down to the width), a byte, a
/// 32-bit or a 64-bit little-endian word.
#[derive(Debug, Clone)]
struct Write {
    at: u64,
    value: u64,
    width: u64,
}

/// Writes within `range`, values biased to the interesting ones (0, 1,
/// all-ones, near the extremes, small) as well as anything.
fn writes(ranges: Vec<std::ops::Range<u64>>) -> impl Strategy<Value = Vec<Write>> {
    let value = prop_oneof![
        Just(0u64),
        Just(1u64),
        Just(u64::MAX),
        Just(u64::MAX / 2 + 1),
        Just(u32::MAX as u64),
        0u64..4096,
        any::<u64>(),
    ];
    let at = proptest::sample::select(ranges).prop_flat_map(|r| r);
    let width = prop_oneof![Just(1u64), Just(4u64), Just(8u64)];
    prop::collection::vec(
        (at, value, width).prop_map(|(at, value, width)| Write {
            at: at / width * width,
            value,
            width,
        }),
        1..8,
    )
}

/// Restores the original bytes, then applies `ws`.
fn apply(seg: &SegmentFile, ws: &[Write]) {
    seg.restore();
    for w in ws {
        let bytes = w.value.to_le_bytes();
        let end = (w.at + w.width).min(seg.len());
        let n = (end - w.at) as usize;
        seg.file.write_all_at(&bytes[..n], w.at).unwrap();
    }
}

#[test]
fn header_writes_give_errors_or_the_same_array() {
    let _w = watchdog("props: headers");
    let name = unique("props-array");
    let a = Array::<u64>::builder().name(&name).create(64).unwrap();
    a.set(3, 33).unwrap();
    let seg = SegmentFile::of(&name);
    let result = runner().run(&writes(vec![0..128, 128..256]), |ws| {
        apply(&seg, &ws);
        match Array::<u64>::builder()
            .name(&name)
            .open_timeout(OPEN)
            .open()
        {
            Ok(b) => {
                prop_assert_eq!(b.len(), 64, "a changed length was accepted");
                prop_assert_eq!(b.get(3).ok(), Some(33));
                prop_assert!(b.get(63).is_ok());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let as_value = Value::<u64>::builder()
            .name(&name)
            .open_timeout(OPEN)
            .open();
        prop_assert!(as_value.is_err(), "an Array opened as a Value");
        Ok(())
    });
    seg.restore();
    result.unwrap();
    assert_eq!(a.get(3).unwrap(), 33);
}

#[test]
fn index_and_length_writes_never_hang_or_overrun_a_queue() {
    let _w = watchdog("props: queue");
    let name = unique("props-queue");
    let (_q, rx) = common::queue_of_five(&name);
    drop(rx);
    let seg = SegmentFile::of(&name);
    // Mostly the header and control block (cursors, geometry, counters),
    // sometimes a slot (sequence, length, payload).
    let ranges = vec![0..1024, 0..1024, 0..1024, 1024..seg.len()];
    let result = runner().run(&writes(ranges), |ws| {
        apply(&seg, &ws);
        let Ok(q2) = Queue::<Bytes>::builder()
            .name(&name)
            .open_timeout(OPEN)
            .open()
        else {
            return Ok(());
        };
        let _ = (q2.len(), q2.is_empty(), q2.stats(), q2.participants());
        // The receiver stays registered through the sends: without one the
        // queue is disconnected and a send would stop before claiming.
        let mut rx = q2.receiver().ok();
        if let Some(rx) = rx.as_mut() {
            for _ in 0..12 {
                match rx.try_recv_bytes() {
                    // A garbage maximum length is accepted up to the slot's
                    // payload (stride 128 minus the 16-byte slot header);
                    // nothing beyond the slot is ever read.
                    Ok(m) => prop_assert!(m.len() <= 112, "{} bytes from a 128-byte slot", m.len()),
                    Err(_) => break,
                }
            }
        }
        if let Ok(tx) = q2.sender() {
            for i in 0..12u8 {
                if tx.try_send_bytes(&[i; 64]).is_err() {
                    break;
                }
            }
            prop_assert!(
                tx.try_send_bytes(&[0; 113]).is_err(),
                "an oversized message was taken"
            );
            if let Some(rx) = rx.as_mut() {
                for _ in 0..12 {
                    if rx.try_recv_bytes().is_err() {
                        break;
                    }
                }
            }
        }
        Ok(())
    });
    seg.restore();
    result.unwrap();
}

#[test]
fn geometry_and_counter_writes_never_crash_a_map() {
    let _w = watchdog("props: map");
    let name = unique("props-map");
    let m = common::map_of_forty(&name);
    let seg = SegmentFile::of(&name);
    // The control block (geometry), each stripe's lock words and counters,
    // and slots.
    let data = (256 + 64u64).next_multiple_of(64);
    let stripes = 8u64;
    let mut ranges = vec![256..data, 256..data];
    ranges.extend((0..stripes).map(|s| data + s * 128..data + s * 128 + 16));
    ranges.extend((0..stripes).map(|s| data + s * 128 + 64..data + s * 128 + 128));
    ranges.push(data + stripes * 128..seg.len());
    let result = runner().run(&writes(ranges), |ws| {
        apply(&seg, &ws);
        let Ok(m2) = SharedMap::<u64, u64>::builder()
            .name(&name)
            .open_timeout(OPEN)
            .open()
        else {
            return Ok(());
        };
        prop_assert!(m2.len() <= m2.capacity() * 2 + 16);
        prop_assert!(m2.snapshot().len() <= 256);
        for k in 0..50 {
            let _ = m2.get(&k);
        }
        let _ = m2.insert(7, 7);
        let _ = m2.update(&9, |v| v.map(|v| v.wrapping_add(1)));
        let _ = m2.remove(&8);
        Ok(())
    });
    seg.restore();
    result.unwrap();
    assert_eq!(m.get(&5), Some(5));
}

fn decodes_all(bytes: &[u8]) {
    let _ = Vec::<u64>::decode(bytes);
    let _ = String::decode(bytes);
    let _ = <(u32, String)>::decode(bytes);
    let _ = Option::<Vec<String>>::decode(bytes);
    let _ = Vec::<(u8, u64)>::decode(bytes);
    let _ = Array::<u64>::decode(bytes);
}

#[test]
fn any_bytes_decode_to_a_value_or_an_error() {
    let _w = watchdog("props: archives");
    let mut r = runner();
    r.run(&prop::collection::vec(any::<u8>(), 0..256), |bytes| {
        decodes_all(&bytes);
        Ok(())
    })
    .unwrap();
    // Valid archives with a few bytes changed reach deeper than noise.
    let valid = (
        any::<Vec<u64>>(),
        ".{0,40}",
        prop::collection::vec((any::<u8>(), any::<u64>()), 0..8),
    )
        .prop_map(|(v, s, pairs)| {
            let mut all = vec![v.encode().unwrap().to_vec()];
            all.push(s.clone().encode().unwrap().to_vec());
            all.push((7u32, s).encode().unwrap().to_vec());
            all.push(pairs.encode().unwrap().to_vec());
            all
        });
    let mutations = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6);
    r.run(&(valid, mutations), |(archives, muts)| {
        for mut a in archives {
            if a.is_empty() {
                continue;
            }
            for (i, b) in &muts {
                let at = i.index(a.len());
                a[at] = *b;
            }
            decodes_all(&a);
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn encoded_values_decode_to_themselves() {
    let _w = watchdog("props: round trips");
    let strategy = (
        any::<Vec<u64>>(),
        ".{0,64}",
        any::<Option<Vec<u32>>>(),
        prop::collection::vec((any::<u8>(), any::<u64>()), 0..16),
    );
    runner()
        .run(&strategy, |(v, s, o, pairs)| {
            prop_assert_eq!(ok(Vec::<u64>::decode(&v.encode().unwrap()))?, v);
            let t = (u32::MAX, s.clone());
            prop_assert_eq!(ok(<(u32, String)>::decode(&t.encode().unwrap()))?, t);
            prop_assert_eq!(ok(String::decode(&s.encode().unwrap()))?, s);
            prop_assert_eq!(ok(Option::<Vec<u32>>::decode(&o.encode().unwrap()))?, o);
            prop_assert_eq!(
                ok(Vec::<(u8, u64)>::decode(&pairs.encode().unwrap()))?,
                pairs
            );
            Ok(())
        })
        .unwrap();
}

/// Turns a decode error into a test-case failure.
fn ok<T>(r: shmkit::Result<T>) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(e.to_string()))
}

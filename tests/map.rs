//! SharedMap with real processes: the tutorial's Manager dict, a model
//! check under four concurrent writers, writers killed mid-update, errors.

mod common;

use common::xorshift as next;
use shmkit::error::RegionError;

use common::watchdog;
use shmkit::process::Builder;
use shmkit::{Error, FixedStr, SharedMap};
use std::collections::HashMap;
use std::time::Duration;

fn set_square((d, i): (SharedMap<u64, u64>, u64)) {
    d.insert(i, i * i).unwrap();
}

#[test]
fn the_tutorial_manager_dict_from_eight_processes() {
    let _w = watchdog("manager dict");
    let d = SharedMap::<u64, u64>::new(100).unwrap();
    let children: Vec<_> = (0..8u64)
        .map(|i| shmkit::spawn(set_square, (d.clone(), i)).unwrap())
        .collect();
    for c in children {
        c.join().unwrap();
    }
    let mut all = d.snapshot();
    all.sort();
    assert_eq!(all, (0..8u64).map(|i| (i, i * i)).collect::<Vec<_>>());
    assert_eq!(d.len(), 8);
}

const KEYS: u64 = 100_000;
const OPS: usize = 100_000;
const SHARED: u64 = 64;

/// Process `p`'s operations: on its own keys (`k % 4 == p`) inserts,
/// updates and removes in a fixed pseudo-random order; on the shared
/// counter keys (`KEYS..KEYS+SHARED`) increments, which commute.
fn hammer(d: &SharedMap<u64, u64>, p: u64) {
    let mut x = 0x9e37_79b9 ^ (p + 1);
    for _ in 0..OPS {
        let r = next(&mut x);
        let key = (r % (KEYS / 4)) * 4 + p;
        match r >> 60 {
            0..=7 => {
                d.insert(key, r).unwrap();
            }
            8..=11 => {
                d.update(&key, |v| Some(v.unwrap_or(0).wrapping_add(1)))
                    .unwrap();
            }
            12..=13 => {
                d.remove(&key);
            }
            _ => {
                d.update(&(KEYS + r % SHARED), |v| Some(v.unwrap_or(0) + 1))
                    .unwrap();
            }
        }
    }
}

fn hammer_child((d, p): (SharedMap<u64, u64>, u64)) {
    hammer(&d, p);
}

fn model() -> HashMap<u64, u64> {
    let d = SharedMap::<u64, u64>::new(2 * KEYS as usize).unwrap();
    for p in 0..4 {
        hammer(&d, p);
    }
    d.snapshot().into_iter().collect()
}

#[test]
fn four_processes_hammering_end_where_a_model_computed_alone_does() {
    let _w = watchdog("hammer");
    let d = SharedMap::<u64, u64>::new(2 * KEYS as usize).unwrap();
    let children: Vec<_> = (0..4u64)
        .map(|p| shmkit::spawn(hammer_child, (d.clone(), p)).unwrap())
        .collect();
    // Readers meanwhile never see a key of the wrong owner's residue class.
    let mut reads = 0;
    while children.iter().any(|c| c.is_alive()) {
        for (k, _) in d.snapshot() {
            assert!(k < KEYS + SHARED);
        }
        reads += 1;
    }
    for c in children {
        c.join().unwrap();
    }
    let got: HashMap<u64, u64> = d.snapshot().into_iter().collect();
    let want = model();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    assert_eq!(d.len(), want.len());
    println!(
        "{} entries, {reads} snapshots taken during the run",
        want.len()
    );
}

/// Updates keys 0..16 forever; each value is a pair whose halves are equal.
fn churn(d: SharedMap<u64, [u64; 2]>) {
    let mut x = std::process::id() as u64 | 1;
    loop {
        let r = next(&mut x);
        let k = r % 16;
        if r & 1 == 0 {
            d.update(&k, |_| Some([r, r])).unwrap();
        } else {
            d.remove(&k);
        }
    }
}

#[test]
fn writers_killed_mid_update_leave_every_entry_whole() {
    let _w = watchdog("killed writers");
    let d = SharedMap::<u64, [u64; 2]>::new(16).unwrap();
    for round in 0..30u64 {
        let w = Builder::new().daemon(true).spawn(churn, d.clone()).unwrap();
        std::thread::sleep(Duration::from_micros(200 + (round * 397) % 3000));
        w.kill().unwrap();
        assert_eq!(w.wait_timeout(common::WATCHDOG).unwrap(), Some(-9));
        // Every entry is whole, the locks work, the count matches.
        let all = d.snapshot();
        for (k, v) in &all {
            assert!(*k < 16);
            assert_eq!(v[0], v[1], "torn entry for key {k}");
        }
        assert_eq!(d.len(), all.len());
        d.insert(99, [round, round]).unwrap();
        assert_eq!(d.remove(&99), Some([round, round]));
    }
}

#[test]
fn a_full_map_and_mismatched_opens_are_errors() {
    let _w = watchdog("errors");
    let d = SharedMap::<u64, u64>::new(8).unwrap();
    let mut inserted = 0;
    let err = loop {
        match d.insert(inserted, 0) {
            Ok(_) => inserted += 1,
            Err(e) => break e,
        }
    };
    assert!(inserted >= 8, "only {inserted} fit");
    assert!(
        matches!(err, Error::Region(RegionError::MapFull { capacity: 8, .. })),
        "{err}"
    );
    // Removing makes room again (tombstones are reused).
    d.remove(&0);
    d.insert(1000, 1).unwrap();

    let named = SharedMap::<u64, u64>::builder()
        .random_name()
        .capacity(10)
        .create()
        .unwrap();
    let name = named.segment().name().unwrap().to_owned();
    assert!(matches!(
        SharedMap::<u32, u64>::open(&name),
        Err(Error::Region(RegionError::TypeMismatch { .. }))
    ));
    assert!(matches!(
        SharedMap::<u64, [u8; 8]>::open(&name),
        Err(Error::Region(RegionError::TypeMismatch { .. }))
    ));
    assert!(matches!(
        SharedMap::<u64, u64>::builder()
            .name(&name)
            .capacity(11)
            .open(),
        Err(Error::Region(RegionError::LengthMismatch { .. }))
    ));
    let again = SharedMap::<u64, u64>::builder()
        .name(&name)
        .capacity(10)
        .open()
        .unwrap();
    named.insert(5, 6).unwrap();
    assert_eq!(again.get(&5), Some(6));
}

fn count_words((d, words): (SharedMap<FixedStr<16>, u64>, Vec<String>)) {
    for w in words {
        d.update(&FixedStr::new(&w).unwrap(), |n| Some(n.unwrap_or(0) + 1))
            .unwrap();
    }
}

#[test]
fn string_keys_across_processes() {
    let _w = watchdog("strings");
    let d = SharedMap::<FixedStr<16>, u64>::new(100).unwrap();
    let text: Vec<String> = "the cat saw the dog and the bird"
        .split(' ')
        .map(String::from)
        .collect();
    let children: Vec<_> = (0..3)
        .map(|_| shmkit::spawn(count_words, (d.clone(), text.clone())).unwrap())
        .collect();
    for c in children {
        c.join().unwrap();
    }
    let key = |s: &str| FixedStr::<16>::new(s).unwrap();
    assert_eq!(d.get(&key("the")), Some(9));
    assert_eq!(d.get(&key("cat")), Some(3));
    assert_eq!(d.get_with(&key("bird"), |n| n * 10), Some(30));
    assert!(!d.contains_key(&key("fish")));
    d.clear();
    assert!(d.is_empty());
    assert_eq!(d.get(&key("the")), None);
}

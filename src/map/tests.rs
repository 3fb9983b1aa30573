//! Unit tests of the map: layout, stripes, undo records, hostile bytes.

use super::stripes::*;
use super::*;

#[test]
fn debug_shows_the_entries() {
    let m = SharedMap::<u64, u32>::new(8).unwrap();
    assert_eq!(format!("{m:?}"), "{}");
    m.insert(1, 10).unwrap();
    assert_eq!(format!("{m:?}"), "{1: 10}");
    assert!(format!("{m:#?}").starts_with("SharedMap("));
}
use std::mem::offset_of;

#[test]
fn shared_structs_have_the_documented_layout() {
    assert_eq!(size_of::<Stripe>(), 128);
    assert_eq!(offset_of!(Stripe, seq), 64);
    assert_eq!(offset_of!(Stripe, undo), 80);
    assert_eq!(size_of::<MapControl>(), 64);
    assert_eq!(offset_of!(MapControl, key_size), 32);
    assert_eq!(size_of::<Slot<u64, u64>>(), 24);
    assert_eq!(offset_of!(Slot<u64, u64>, key), 8);
    assert_eq!(size_of::<Slot<u8, u8>>(), 12);
    assert_eq!(size_of::<FixedStr<16>>(), 16);
}

#[test]
fn geometry_gives_every_stripe_room() {
    let g = Geometry::for_capacity::<u64, u64>(8).unwrap();
    assert_eq!((g.stripes, g.per_stripe), (1, 16));
    let g = Geometry::for_capacity::<u64, u64>(100_000).unwrap();
    assert_eq!((g.stripes, g.per_stripe), (64, 4096));
    assert!(Geometry::for_capacity::<u64, u64>(u64::MAX).is_none());
}

#[test]
fn fixed_strings() {
    let s = FixedStr::<8>::new("alice").unwrap();
    assert_eq!(s.as_str(), "alice");
    assert_eq!(format!("{s}"), "alice");
    assert!(FixedStr::<4>::new("alice").is_err());
    assert!(FixedStr::<8>::new("a\0b").is_err());
    assert_eq!(FixedStr::<8>::new("").unwrap().as_str(), "");
}

#[test]
fn churn_does_not_fill_stripes_with_tombstones() {
    let m = SharedMap::<u64, u64>::new(64).unwrap();
    for k in 0..32 {
        m.insert(k, k).unwrap();
    }
    for k in 32..20_000u64 {
        m.remove(&(k - 32)).unwrap();
        m.insert(k, k).unwrap();
    }
    assert_eq!(m.len(), 32);
    let g = m.inner.geo;
    let mut total = 0;
    for s in 0..g.stripes as usize {
        let states: Vec<u32> = (0..g.per_stripe as usize)
            .map(|i| m.read_slot(s, i).state)
            .collect();
        let full = states.iter().filter(|&&x| x == FULL).count();
        let empty = states.iter().filter(|&&x| x == EMPTY).count();
        assert_eq!(full + empty, states.len(), "stripe {s}: {states:?}");
        total += full;
    }
    assert_eq!(total, 32);
    for k in 19_968..20_000 {
        assert_eq!(m.get(&k), Some(k));
    }
    assert_eq!(m.get(&5), None);
}

#[test]
fn a_deletion_cut_short_is_finished() {
    // One stripe of 16 slots; keys that collide at home slots so that a
    // deletion must shift entries back.
    let m = SharedMap::<u64, u64>::new(8).unwrap();
    for k in 0..12 {
        m.insert(k, k).unwrap();
    }
    let (s, home, tag) = m.place(&3);
    let i = m.find(s, home, tag, &3).unwrap();
    // A writer that died right after arming the shift: the hole still
    // holds key 3.
    let st = m.stripe(s);
    m.begin_write(st);
    st.undo_slot.store(i as u64, Ordering::SeqCst);
    st.undo_len.store(11, Ordering::SeqCst);
    m.arm(st, UNDO_SHIFT);
    m.repair(s);
    assert_eq!(m.get(&3), None);
    assert_eq!(m.len(), 11);
    for k in (0..12).filter(|&k| k != 3) {
        assert_eq!(m.get(&k), Some(k), "key {k} lost");
    }
}

#[test]
fn a_clear_cut_short_is_finished() {
    let m = SharedMap::<u64, u64>::new(8).unwrap();
    for k in 0..8 {
        m.insert(k, k).unwrap();
    }
    let st = m.stripe(0);
    m.begin_write(st);
    m.arm(st, UNDO_CLEAR);
    let empty: Slot<u64, u64> = Slot {
        state: EMPTY,
        hash: 0,
        key: 0,
        value: 0,
    };
    for i in 0..4 {
        // SAFETY: in bounds; this test is the only user of the map.
        unsafe { std::ptr::write_volatile(m.slot_ptr(0, i), empty) };
    }
    m.repair(0);
    assert!(m.is_empty());
    assert!(m.snapshot().is_empty());
    m.insert(3, 3).unwrap();
    assert_eq!(m.get(&3), Some(3));
}

#[test]
fn a_dead_writers_half_change_is_undone() {
    let m = SharedMap::<u64, u64>::new(8).unwrap();
    m.insert(1, 10).unwrap();
    let (s, home, tag) = m.place(&1);
    let i = m.find(s, home, tag, &1).unwrap();
    // Play a writer that dies after saving the undo record and writing
    // half of the slot: sequence odd, undo armed, slot garbage.
    let st = m.stripe(s);
    st.seq.fetch_add(1, Ordering::SeqCst);
    // SAFETY: in bounds; this test is the only user of the map.
    unsafe { std::ptr::write_volatile(m.undo_ptr(s), m.read_slot(s, i)) };
    st.undo_slot.store(i as u64, Ordering::SeqCst);
    st.undo_len.store(1, Ordering::SeqCst);
    st.undo.store(UNDO_SLOT, Ordering::SeqCst);
    let mut torn = m.read_slot(s, i);
    torn.value = 0xdead;
    torn.key = 0xbeef;
    // SAFETY: as above.
    unsafe { std::ptr::write_volatile(m.slot_ptr(s, i), torn) };
    // The repair a locker runs after the owner's death:
    m.repair(s);
    assert_eq!(m.get(&1), Some(10));
    assert_eq!(m.len(), 1);
    assert_eq!(st.seq.load(Ordering::SeqCst) % 2, 0);
}

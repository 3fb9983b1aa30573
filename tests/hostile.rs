//! Hostile input: a peer writes garbage into a segment's header, into a
//! queue's indices and slot lengths, into a map's control block, stripe
//! counters and slots. Opening and using the segment afterwards must give a
//! typed error or work — never crash, read out of bounds or hang (bounded
//! waits only; a watchdog). Seeded random cases, the same every run.

mod common;

use common::xorshift as next;

use common::{SegmentFile, unique, watchdog};
use shmkit::queue::{Bytes, Queue};
use shmkit::sync::{Barrier, RwLock, Semaphore};
use shmkit::{Array, SharedMap, Value};
use std::os::unix::fs::FileExt;
use std::time::Duration;

const CASES: u64 = 300;
const OPEN: Duration = Duration::from_millis(1);

/// Overwrites 1–8 random bytes within `range` of the segment's file.
fn scribble(f: &std::fs::File, range: std::ops::Range<u64>, rng: &mut u64) {
    for _ in 0..=(next(rng) % 8) {
        let at = range.start + next(rng) % (range.end - range.start);
        f.write_all_at(&[next(rng) as u8], at).unwrap();
    }
}

#[test]
fn garbage_in_headers_gives_errors_not_crashes() {
    let _w = watchdog("hostile headers");
    let mut rng = 0x1234_5678;
    let name = unique("hostile-array");
    let a = Array::<u64>::builder().name(&name).create(64).unwrap();
    a.set(3, 33).unwrap();
    let seg = SegmentFile::of(&name);
    let f = &seg.file;
    let (mut opened, mut refused) = (0, 0);
    for _ in 0..CASES {
        scribble(f, 0..256, &mut rng);
        match Array::<u64>::builder()
            .name(&name)
            .open_timeout(OPEN)
            .open()
        {
            Ok(b) => {
                opened += 1;
                assert_eq!(b.len(), 64, "a changed length was accepted");
                let _ = b.get(3);
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
            }
        }
        let v = Value::<u64>::builder()
            .name(&name)
            .open_timeout(OPEN)
            .open();
        assert!(v.is_err(), "an Array opened as a Value");
        seg.restore();
    }
    println!("headers: {opened} opened (harmless bytes), {refused} refused");
    assert!(refused > CASES / 2);
}

#[test]
fn garbage_in_a_queue_gives_errors_or_skips_not_crashes() {
    let _w = watchdog("hostile queue");
    let mut rng = 0x9abc_def1;
    let name = unique("hostile-queue");
    let (_q, _rx) = common::queue_of_five(&name);
    let seg = SegmentFile::of(&name);
    let f = &seg.file;
    let len = seg.len();
    let (mut received, mut refused) = (0, 0);
    for case in 0..CASES {
        // The header and control block, or the slot area.
        let range = if case % 2 == 0 { 0..1024 } else { 1024..len };
        scribble(f, range, &mut rng);
        match Queue::<Bytes>::builder()
            .name(&name)
            .open_timeout(OPEN)
            .open()
        {
            Ok(q2) => {
                let _ = (q2.len(), q2.is_empty(), q2.stats(), q2.participants());
                if let Ok(mut rx) = q2.receiver() {
                    for _ in 0..10 {
                        match rx.try_recv_bytes() {
                            Ok(m) => {
                                assert!(m.len() <= 64, "a message longer than a slot");
                                received += 1;
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
            Err(_) => refused += 1,
        }
        seg.restore();
    }
    println!("queue: {received} messages read, {refused} opens refused");
}

#[test]
fn garbage_in_a_map_gives_errors_or_wrong_answers_not_crashes() {
    let _w = watchdog("hostile map");
    let mut rng = 0x00dd_ba11;
    let name = unique("hostile-map");
    let m = common::map_of_forty(&name);
    let seg = SegmentFile::of(&name);
    let f = &seg.file;
    let len = seg.len();
    // Stripe headers start at the data area: their first 64 bytes are the
    // lock (owner word, poison flag), then the counters; scribble the
    // control block, each stripe's lock and counters, and the slots.
    let data = (256 + 64u64).next_multiple_of(64);
    let stripes = 8u64;
    let (mut opened, mut refused) = (0, 0);
    for case in 0..CASES {
        match case % 3 {
            0 => scribble(f, 256..data, &mut rng),
            1 => {
                let s = next(&mut rng) % stripes;
                let at = data + s * 128;
                scribble(f, at..at + 128, &mut rng);
            }
            _ => scribble(f, data + stripes * 128..len, &mut rng),
        }
        match SharedMap::<u64, u64>::builder()
            .name(&name)
            .open_timeout(OPEN)
            .open()
        {
            Ok(m2) => {
                opened += 1;
                assert!(m2.len() <= 2 * 64 + 16);
                let all = m2.snapshot();
                assert!(all.len() <= 256);
                for k in 0..50 {
                    let _ = m2.get(&k);
                }
                let _ = m2.insert(7, 7);
                let _ = m2.remove(&8);
            }
            Err(_) => refused += 1,
        }
        seg.restore();
    }
    println!("map: {opened} opened, {refused} refused");
    assert_eq!(m.get(&5), Some(5));
}

#[test]
fn garbage_archives_are_refused_not_trusted() {
    use shmkit::Message;
    let _w = watchdog("hostile archives");
    let mut rng = 0xa5a5_5a5a;
    let valid: Vec<Vec<u8>> = vec![
        vec![1u64, 2, 3].encode().unwrap().to_vec(),
        "hello".to_owned().encode().unwrap().to_vec(),
        (7u32, "seven".to_owned()).encode().unwrap().to_vec(),
        Some(vec!["a".to_owned(), "bc".to_owned()])
            .encode()
            .unwrap()
            .to_vec(),
    ];
    let (mut refused, mut decoded) = (0, 0);
    for case in 0..4000u64 {
        // Pure noise, or a valid archive with a few bytes changed.
        let bytes: Vec<u8> = if case % 2 == 0 {
            (0..next(&mut rng) % 96)
                .map(|_| next(&mut rng) as u8)
                .collect()
        } else {
            let mut b = valid[(case / 2 % 4) as usize].clone();
            for _ in 0..=(next(&mut rng) % 4) {
                let at = (next(&mut rng) % b.len() as u64) as usize;
                b[at] = next(&mut rng) as u8;
            }
            b
        };
        let results = [
            Vec::<u64>::decode(&bytes).is_ok(),
            String::decode(&bytes).is_ok(),
            <(u32, String)>::decode(&bytes).is_ok(),
            Option::<Vec<String>>::decode(&bytes).is_ok(),
            // A handle decodes by opening what it names: garbage names,
            // descriptors and pids must end in errors, not in a mapping.
            Array::<u64>::decode(&bytes).is_ok(),
        ];
        for ok in results {
            if ok {
                decoded += 1;
            } else {
                refused += 1;
            }
        }
    }
    println!("archives: {decoded} decoded, {refused} refused");
    assert!(refused > decoded);
}

/// Offset of a u64 header field in a segment's file.
fn header_field(seg: &SegmentFile, at: usize) -> u64 {
    u64::from_le_bytes(seg.original[at..at + 8].try_into().unwrap())
}

const LOCKER_ROUNDS: u64 = 400;

/// A child's loop over a mutex, a locked value and a map whose lock words a
/// peer scribbles on: every call returns (a guard, `OwnerDied`, a value or a
/// typed error); values may be torn (the peer can unlock a held lock by
/// writing 0), which this loop does not check.
fn lock_user() {
    let m = shmkit::sync::Mutex::<[u64; 2]>::open(&common::arg("M")).unwrap();
    let v = Value::<u64>::open(&common::arg("V")).unwrap();
    let d = SharedMap::<u64, u64>::open(&common::arg("D")).unwrap();
    let rw = RwLock::<u64>::open(&common::arg("RW")).unwrap();
    let sem = Semaphore::open(&common::arg("S")).unwrap();
    let bar = Barrier::open(&common::arg("B")).unwrap();
    let (mut poisoned, mut errors) = (0u64, 0u64);
    for i in 0..LOCKER_ROUNDS {
        let mut g = m.lock().unwrap_or_else(|e| {
            poisoned += 1;
            e.into_inner()
        });
        g[0] = i;
        g[1] = i;
        g.mark_consistent();
        drop(g);
        match v.lock() {
            Ok(mut g) => *g += 1,
            Err(e) => {
                poisoned += 1;
                let mut g = e.into_inner();
                *g += 1;
                g.mark_consistent();
            }
        }
        if d.insert(i % 8, i).is_err() {
            errors += 1;
        }
        let _ = d.get(&(i % 8));
        if i % 64 == 0 {
            let _ = m.try_lock();
            let _ = m.lock_timeout(Duration::from_millis(1));
        }
        let short = Duration::from_millis(1);
        if let Some(mut g) = rw.write_timeout(short) {
            *g += 1;
        }
        if let Some(g) = rw.read_timeout(short) {
            std::hint::black_box(*g);
        }
        let _ = rw.try_read();
        drop(sem.permit_timeout(short));
        if sem.try_acquire() {
            let _ = sem.release();
        }
        let _ = bar.wait_timeout(short);
    }
    println!("locker: {poisoned} poisoned, {errors} map errors");
}

#[test]
fn garbage_in_lock_words_while_processes_use_them() {
    if common::role().as_deref() == Some("locker") {
        return lock_user();
    }
    let _w = watchdog("hostile lock words");
    let (mn, vn, dn) = (unique("hl-mutex"), unique("hl-value"), unique("hl-map"));
    let m = shmkit::sync::Mutex::<[u64; 2]>::builder()
        .name(&mn)
        .create([0, 0])
        .unwrap();
    let v = Value::<u64>::builder().name(&vn).create(0).unwrap();
    let d = SharedMap::<u64, u64>::builder()
        .name(&dn)
        .capacity(8)
        .create()
        .unwrap();
    let (rn, sn, bn) = (unique("hl-rw"), unique("hl-sem"), unique("hl-bar"));
    let rw = RwLock::<u64>::builder().name(&rn).create(0).unwrap();
    let sem = Semaphore::builder().name(&sn).create_bounded(2, 2).unwrap();
    let bar = Barrier::builder().name(&bn).create(2).unwrap();
    // The lock words: the first 16 bytes of the mutex's control block, the
    // last 16 of the value's (its lock ends the block, its data follows in
    // the same cache line), and of the map's (one) stripe at the start of
    // its data area; the whole robust state (lock, journal, cells, holders)
    // of the RwLock, Semaphore and Barrier.
    let targets: Vec<(SegmentFile, u64, u64)> = vec![
        (SegmentFile::of(&mn), 56, 0, 16),
        (SegmentFile::of(&vn), 56, 256, 16),
        (SegmentFile::of(&dn), 72, 0, 16),
        (SegmentFile::of(&rn), 56, 0, 1280),
        (SegmentFile::of(&sn), 56, 0, 1280),
        (SegmentFile::of(&bn), 56, 0, 1280),
    ]
    .into_iter()
    .map(|(s, field, offset, len)| {
        let at = header_field(&s, field) + offset;
        (s, at, len)
    })
    .collect();
    let env = [
        ("M", mn.clone()),
        ("V", vn.clone()),
        ("D", dn.clone()),
        ("RW", rn.clone()),
        ("S", sn.clone()),
        ("B", bn.clone()),
    ];
    let children: Vec<_> = (0..2)
        .map(|_| {
            common::spawn(
                "garbage_in_lock_words_while_processes_use_them",
                "locker",
                &env,
            )
        })
        .collect();
    let mut rng = 0xfeed_beef_u64;
    let mut writes = 0;
    let start = std::time::Instant::now();
    while children.iter().all(|c| !common::is_dead(c.id())) && start.elapsed().as_secs() < 15 {
        let (seg, at, len) = &targets[(next(&mut rng) % targets.len() as u64) as usize];
        let word = match next(&mut rng) % 6 {
            0 => 0,
            1 => u64::MAX,
            2 => next(&mut rng) & 0xffff_ffff,
            _ => next(&mut rng),
        };
        let off = at + (next(&mut rng) % (len / 8)) * 8;
        seg.file.write_all_at(&word.to_le_bytes(), off).unwrap();
        writes += 1;
        std::thread::sleep(Duration::from_micros(100 + next(&mut rng) % 400));
    }
    common::wait_all_ok(children);
    // Every lock still takes (clean or poisoned) after the scribbling.
    assert!(!matches!(
        m.lock_timeout(Duration::from_secs(5)),
        Err(shmkit::sync::TryLockError::TimedOut)
    ));
    let _ = v.lock();
    d.insert(1, 1).unwrap();
    // The others answer within their timeouts, whatever they hold now.
    let long = Duration::from_millis(50);
    let _ = (
        rw.write_timeout(long).is_some(),
        rw.read_timeout(long).is_some(),
    );
    let _ = sem.permit_timeout(long);
    let _ = bar.wait_timeout(long);
    println!("lock words: {writes} garbage writes while 2 processes locked");
}

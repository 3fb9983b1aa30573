//! Value and Array across real processes: exact counter totals (atomic and
//! locked), a 100 MiB array written by a child and read in place by the
//! parent, raw and externally locked values, and an anonymous region inherited
//! across exec.

mod common;

use shmkit::error::RegionError;
use shmkit::sync::{Barrier, Lock};
use shmkit::{Array, Error, Value};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const INCREMENTS: u64 = 1_000_000;

fn counter_test(test: &str, procs: u32, locked: bool) {
    if let Some(role) = common::role() {
        let v = Value::<u64>::open(&common::arg("VALUE")).unwrap();
        let b = Barrier::open(&common::arg("BARRIER")).unwrap();
        b.wait();
        assert_eq!(role, "adder");
        for _ in 0..INCREMENTS {
            if locked {
                *v.lock().unwrap() += 1;
            } else {
                v.fetch_add(1);
            }
        }
        return;
    }
    let v = Value::<u64>::builder()
        .name(common::unique("counter"))
        .create(0)
        .unwrap();
    let b = Barrier::builder()
        .name(common::unique("barrier"))
        .create(procs)
        .unwrap();
    let env = [
        ("VALUE", v.segment().name().unwrap().to_owned()),
        ("BARRIER", b.segment().name().unwrap().to_owned()),
    ];
    let children = (0..procs)
        .map(|_| common::spawn(test, "adder", &env))
        .collect();
    common::wait_all_ok(children);
    assert_eq!(v.get().unwrap(), procs as u64 * INCREMENTS);
    assert_eq!(v.load(), procs as u64 * INCREMENTS);
}

#[test]
fn atomic_counter_2_processes() {
    counter_test("atomic_counter_2_processes", 2, false);
}

#[test]
fn atomic_counter_4_processes() {
    counter_test("atomic_counter_4_processes", 4, false);
}

#[test]
fn locked_counter_2_processes() {
    counter_test("locked_counter_2_processes", 2, true);
}

#[test]
fn locked_counter_4_processes() {
    counter_test("locked_counter_4_processes", 4, true);
}

const BIG: usize = 100 * 1024 * 1024 / 8; // 100 MiB of f64

#[test]
fn child_writes_100_mib_array_parent_reads_in_place() {
    if common::role().is_some() {
        let a = Array::<f64>::builder()
            .name(common::arg("ARRAY"))
            .expect_len(BIG)
            .open()
            .unwrap();
        let mut g = a.lock().unwrap();
        for (i, x) in g.iter_mut().enumerate() {
            *x = i as f64 * 0.5;
        }
        return;
    }
    let a = Array::<f64>::builder()
        .name(common::unique("big"))
        .create(BIG)
        .unwrap();
    let mut c = common::spawn(
        "child_writes_100_mib_array_parent_reads_in_place",
        "writer",
        &[("ARRAY", a.segment().name().unwrap().to_owned())],
    );
    common::wait_ok(&mut c);
    let g = a.lock().unwrap();
    // The view is the shared mapping itself: nothing was copied.
    assert_eq!(g.as_ptr(), a.as_ptr().cast_const());
    assert_eq!(g.len(), BIG);
    let sum: f64 = g.iter().sum();
    let n = BIG as f64;
    assert_eq!(sum, 0.5 * n * (n - 1.0) / 2.0);
    assert_eq!(g[BIG - 1], (BIG - 1) as f64 * 0.5);
}

#[test]
fn raw_and_external_lock_values_across_processes() {
    if common::role().is_some() {
        let raw = Value::<u32>::open(&common::arg("RAW")).unwrap();
        assert!(!raw.has_lock());
        raw.set(7).unwrap();
        let ext = Value::<i64>::open(&common::arg("EXT")).unwrap();
        let arr = Array::<i64>::open(&common::arg("ARR")).unwrap();
        assert!(ext.has_lock() && arr.has_lock());
        // Both are guarded by the same external lock: hold it through the
        // Value and check the Array is locked out.
        let g = ext.lock().unwrap();
        assert!(arr.try_lock().is_err());
        drop(g);
        ext.set(-3).unwrap();
        arr.set(1, 11).unwrap();
        return;
    }
    let lock = Lock::builder()
        .name(common::unique("lock"))
        .create(())
        .unwrap();
    let raw = Value::<u32>::builder()
        .name(common::unique("raw"))
        .unlocked()
        .create(0)
        .unwrap();
    let ext = Value::<i64>::builder()
        .name(common::unique("ext"))
        .with_lock(lock.clone())
        .create(0)
        .unwrap();
    let arr = Array::<i64>::builder()
        .name(common::unique("arr"))
        .with_lock(lock.clone())
        .create(3)
        .unwrap();
    let env = [
        ("RAW", raw.segment().name().unwrap().to_owned()),
        ("EXT", ext.segment().name().unwrap().to_owned()),
        ("ARR", arr.segment().name().unwrap().to_owned()),
    ];
    let mut c = common::spawn("raw_and_external_lock_values_across_processes", "c", &env);
    common::wait_ok(&mut c);
    assert_eq!(raw.get().unwrap(), 7);
    assert_eq!(ext.get().unwrap(), -3);
    assert_eq!(arr.to_vec().unwrap(), vec![0, 11, 0]);
    // The parent's handles share the lock too.
    let g = lock.lock().unwrap();
    assert!(ext.try_lock().is_err());
    drop(g);
}

#[test]
fn anonymous_value_inherited_across_exec_by_descriptor() {
    if common::role().is_some() {
        let raw: i32 = common::arg("FD").parse().unwrap();
        // SAFETY: the parent passed us this descriptor, open and unshared.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let v = Value::<u64>::builder().from_fd(fd).unwrap();
        v.fetch_add(5);
        let a = Array::<u8>::builder()
            // SAFETY: as above.
            .from_fd(unsafe { OwnedFd::from_raw_fd(common::arg("FD2").parse().unwrap()) })
            .unwrap();
        a.copy_from_slice(b"hello").unwrap();
        return;
    }
    let v = Value::new(1u64).unwrap();
    let a = Array::<u8>::new(5).unwrap();
    assert!(v.segment().name().is_none());
    let fd = v.segment().inheritable_fd().unwrap();
    let fd2 = a.segment().inheritable_fd().unwrap();
    let mut c = common::spawn(
        "anonymous_value_inherited_across_exec_by_descriptor",
        "c",
        &[
            ("FD", fd.as_raw_fd().to_string()),
            ("FD2", fd2.as_raw_fd().to_string()),
        ],
    );
    drop((fd, fd2));
    common::wait_ok(&mut c);
    assert_eq!(v.load(), 6);
    assert_eq!(&a.to_vec().unwrap(), b"hello");
}

#[test]
fn array_copy_in_out_atomics_and_unchecked_views() {
    let a = Array::<u32>::from_slice(&[1, 2, 3, 4]).unwrap();
    assert_eq!(a.len(), 4);
    let mut out = [0u32; 4];
    a.copy_to_slice(&mut out).unwrap();
    assert_eq!(out, [1, 2, 3, 4]);
    a.copy_from_slice(&[5, 6, 7, 8]).unwrap();
    assert_eq!(a.get(2).unwrap(), 7);
    a.atomic(0)
        .fetch_add(10, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: no other thread or process touches `a` during this borrow.
    assert_eq!(unsafe { a.as_slice_unchecked() }, &[15, 6, 7, 8]);
    let empty = Array::<u64>::new(0).unwrap();
    assert!(empty.is_empty());
    let v = Value::new(5i32).unwrap();
    assert_eq!(v.compare_exchange(5, 9), Ok(5));
    assert_eq!(v.compare_exchange(5, 1), Err(9));
    assert_eq!(v.fetch_max(20), 9);
    assert_eq!(v.swap(3), 20);
    assert_eq!(v.update(|x| *x * 2).unwrap(), 6);
}

#[test]
#[should_panic(expected = "created without a lock")]
fn locking_a_raw_value_is_a_clear_panic() {
    let v = Value::<u8>::builder().unlocked().create(0).unwrap();
    let _ = v.lock();
}

/// A handle (a Value alone, and a queue sender inside a tuple) whose segment
/// is gone when it arrives: the real cause, NotFound with the name, not
/// rkyv's "failed without error information".
#[test]
fn a_handle_whose_segment_is_gone_is_not_found_with_its_name() {
    use shmkit::Message;
    let v = Value::<u64>::builder()
        .name(common::unique("gone"))
        .create(1)
        .unwrap();
    let name = v.segment().name().unwrap().to_owned();
    let bytes = (7u32, v.clone()).encode().unwrap();
    v.segment().unlink().unwrap();
    drop(v);
    let e = <(u32, Value<u64>)>::decode(&bytes).unwrap_err();
    assert!(
        matches!(&e, Error::Region(RegionError::NotFound { name: n }) if n.contains(&name)),
        "{e:?}"
    );
    assert!(!e.to_string().contains("without error information"), "{e}");
    // Garbage is still an encoding error.
    let e = <(u32, Value<u64>)>::decode(&[0xff; 8]).unwrap_err();
    assert!(matches!(e, shmkit::Error::Encoding { .. }), "{e:?}");
}

fn add_atomically((v, n): (Value<u64>, u64)) {
    for _ in 0..n {
        v.fetch_add(1);
    }
}

/// A locked Value's atomics and its lock guard's plain `&mut T` used at once,
/// by two threads of this process and a forked child: the atomics take the
/// lock, so no update is lost. (When they were lock-free, a guard's
/// read-modify-write lost the atomic adds made between its read and its
/// write — a data race that Miri or TSan would also flag.)
#[test]
fn locked_value_atomics_exclude_the_lock_guard() {
    const N: u64 = 20_000;
    let _w = common::watchdog("locked value atomics vs guard");
    let v = Value::new(0u64).unwrap();
    let mut child = shmkit::process::Builder::new()
        .daemon(true)
        .spawn(add_atomically, (v.clone(), N))
        .unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..N {
                v.fetch_add(1);
            }
        });
        for _ in 0..N {
            let mut g = v.lock().unwrap();
            let seen = *g;
            std::hint::black_box(&seen);
            *g = seen + 1;
        }
    });
    child
        .join_timeout(common::WATCHDOG)
        .unwrap()
        .expect("watchdog");
    assert_eq!(v.load(), 3 * N);
}

#[test]
#[should_panic(expected = "as_atomic() on a Value with a lock")]
fn as_atomic_on_a_locked_value_panics() {
    let v = Value::new(0u64).unwrap();
    let _ = v.as_atomic();
}

#[test]
fn as_atomic_on_an_unlocked_value_is_lock_free() {
    let v = Value::<u64>::builder().unlocked().create(3).unwrap();
    v.as_atomic()
        .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(v.load(), 5);
}

fn read_value(v: Value<i64>) -> i64 {
    *v.lock().unwrap()
}

/// A value guarded by an anonymous external lock cannot travel to a spawned
/// child (the child could not open the lock): `spawn` refuses it at once
/// with a message that says what to do, instead of the child failing later.
#[test]
fn an_anonymous_external_lock_is_refused_at_spawn() {
    let v = Value::<i64>::builder()
        .with_lock(Lock::new(()).unwrap())
        .create(5)
        .unwrap();
    let err = shmkit::spawn(read_value, v.clone()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("anonymous") && text.contains("name"),
        "{text}"
    );
    // A named lock travels.
    let named = Lock::builder().random_name().create(()).unwrap();
    let v = Value::<i64>::builder().with_lock(named).create(6).unwrap();
    // A clone travels: this process keeps the lock (its creator's handle
    // removes the name when the last one drops).
    let mut p = shmkit::spawn(read_value, v.clone()).unwrap();
    assert_eq!(p.join_timeout(common::WATCHDOG).unwrap(), Some(6));
}

/// A region opened by descriptor while another handle opened that way still
/// lives shares its mapping (no second `mmap`); another element type over
/// the same descriptor is still refused, not served from that mapping.
#[test]
fn an_array_opened_twice_by_descriptor_shares_one_mapping() {
    let a = shmkit::Array::<u64>::from_slice(&[1, 2, 3]).unwrap();
    let open = || {
        shmkit::Array::<u64>::builder()
            .from_fd(a.segment().inheritable_fd().unwrap())
            .unwrap()
    };
    let (b, c) = (open(), open());
    assert_eq!(b.as_ptr(), c.as_ptr());
    assert_eq!(c.to_vec().unwrap(), [1, 2, 3]);
    c.set(0, 7).unwrap();
    assert_eq!(a.get(0).unwrap(), 7);
    assert!(
        shmkit::Array::<u32>::builder()
            .from_fd(a.segment().inheritable_fd().unwrap())
            .is_err()
    );
    drop((b, c));
    // No handle left: the next open maps it again, and works.
    assert_eq!(open().to_vec().unwrap(), [7, 2, 3]);
}

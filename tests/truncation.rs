//! A peer process that shrinks (`ftruncate`s) a live segment does not kill
//! this process: shmkit's SIGBUS handler maps private zero pages over the cut
//! range, and the object's checked operations report `RegionError::Truncated`.
//! Also: the handler chains to one installed before it, and a SIGBUS that is
//! not a truncation of a shmkit mapping still kills the process.

mod common;

use shmkit::error::RegionError;
use shmkit::queue::Rkyv;
use shmkit::queue::{Queue, RecvError, SendError, TryRecvError, TrySendError};
use shmkit::sync::{Mutex, RwLock, Semaphore};
use shmkit::{Array, Error, SharedMap, Value};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};

fn shm_path(name: &str) -> String {
    format!("/dev/shm/{}", name.trim_start_matches('/'))
}

/// The peer: shrinks every file in `PATHS` (comma-separated) to `LEN` bytes.
fn truncate_child() {
    let len: u64 = common::arg("LEN").parse().unwrap();
    for p in common::arg("PATHS").split(',') {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(len).unwrap();
    }
}

/// Runs `work` in a thread of this process (at least 100 rounds before the
/// peer starts) while a peer process truncates `paths` to `len`; `work`
/// returns true once it has seen the truncation. Returns the rounds done.
fn while_a_peer_truncates(
    test: &str,
    paths: &[String],
    len: u64,
    mut work: impl FnMut(u64) -> bool + Send,
) -> u64 {
    let _w = common::watchdog("a worker never saw the truncation");
    let warmed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let warmed = &warmed;
        let worker = s.spawn(move || {
            let mut i = 0u64;
            loop {
                if work(i) {
                    return i;
                }
                i += 1;
                if i == 100 {
                    warmed.store(true, Ordering::SeqCst);
                }
            }
        });
        common::wait_until("the worker warms up", || {
            warmed.load(Ordering::SeqCst) || worker.is_finished()
        });
        let mut peer = common::spawn(
            test,
            "truncate",
            &[("PATHS", paths.join(",")), ("LEN", len.to_string())],
        );
        common::wait_ok(&mut peer);
        worker.join().unwrap()
    })
}

fn assert_truncated(r: shmkit::Result<()>, name: &str, found: u64) {
    match r {
        Err(
            ref e @ Error::Region(RegionError::Truncated {
                name: ref n,
                expected,
                found: f,
            }),
        ) => {
            assert!(n.contains(name.trim_start_matches('/')), "{n} vs {name}");
            assert_eq!(f, found);
            assert!(expected > found);
            let msg = e.to_string();
            assert!(msg.contains("recreate"), "{msg}");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn value_survives_a_peer_truncating_it() {
    if common::role().is_some() {
        return truncate_child();
    }
    let name = common::unique("tv");
    let v = Value::<u64>::builder().name(&name).create(0).unwrap();
    assert!(v.segment().truncation_guarded());
    let rounds = while_a_peer_truncates(
        "value_survives_a_peer_truncating_it",
        &[shm_path(&name)],
        0,
        // Lock-free accesses only while the cut may land: glibc's robust
        // lock and unlock read pointers from the lock word's page, and a cut
        // between two of those reads can crash (DESIGN.md, threat model).
        |i| {
            v.store(i);
            v.load();
            v.fetch_add(1);
            v.check().is_err()
        },
    );
    assert!(rounds >= 100);
    assert_truncated(v.check(), &name, 0);
    assert!(v.segment().is_truncated());
    // Private from now on, and nothing faults.
    v.set(5).unwrap();
    assert_eq!(v.get().unwrap(), 5);
    assert_eq!(v.fetch_add(1), 5);
    assert_truncated(v.check(), &name, 0);
}

#[test]
fn array_slice_sees_zeroes_past_the_cut_and_the_shared_page_before_it() {
    if common::role().is_some() {
        return truncate_child();
    }
    let name = common::unique("ta");
    let a = Array::<u64>::builder()
        .name(&name)
        .create_from(&[7u64; 2048])
        .unwrap();
    let data_off = a.as_ptr() as usize - a.segment().as_ptr() as usize;
    // The peer keeps the first page of the file: elements in it stay shared.
    let kept = (4096 - data_off) / 8;
    assert!(kept > 0 && kept < 2048);
    while_a_peer_truncates(
        "array_slice_sees_zeroes_past_the_cut_and_the_shared_page_before_it",
        &[shm_path(&name)],
        4096,
        |_| {
            let sum: u64 = a.lock().unwrap().iter().sum();
            // Before the cut: all sevens; the round that faults may see part.
            assert!(sum <= 7 * 2048);
            a.check().is_err()
        },
    );
    assert_truncated(a.check(), &name, 4096);
    let mut g = a.lock().unwrap();
    assert!(g[..kept].iter().all(|&x| x == 7), "the kept page changed");
    assert!(
        g[kept..].iter().all(|&x| x == 0),
        "the cut range is not zero"
    );
    // A write before the cut still reaches the file; past it, it is private.
    g[0] = 9;
    g[2047] = 9;
    drop(g);
    let mut bytes = [0u8; 8];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(shm_path(&name))
        .unwrap()
        .read_exact_at(&mut bytes, data_off as u64)
        .unwrap();
    assert_eq!(u64::from_ne_bytes(bytes), 9);
    assert_eq!(a.get(2047).unwrap(), 9);
    assert_truncated(a.check(), &name, 4096);
    // A new opener is told at open (the header survived the cut).
    assert!(matches!(
        Array::<u64>::open(&name),
        Err(Error::Region(RegionError::Truncated { .. }))
    ));
}

#[test]
fn queue_sender_and_receiver_survive_and_get_truncated() {
    if common::role().is_some() {
        return truncate_child();
    }
    let name = common::unique("tq");
    let q = Queue::<u64>::builder()
        .name(&name)
        .capacity(64)
        .create()
        .unwrap();
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let recv_ended = AtomicBool::new(false);
    std::thread::scope(|s| {
        // The receiver blocks in recv(); it must come back with Truncated.
        let recv_ended = &recv_ended;
        s.spawn(move || {
            loop {
                match rx.recv() {
                    Ok(_) => {}
                    Err(RecvError::Truncated) => break,
                    Err(e) => panic!("receiver: {e:?}"),
                }
            }
            assert!(matches!(rx.try_recv(), Err(TryRecvError::Truncated)));
            recv_ended.store(true, Ordering::SeqCst);
        });
        while_a_peer_truncates(
            "queue_sender_and_receiver_survive_and_get_truncated",
            &[shm_path(&name)],
            0,
            move |i| match tx.send(i) {
                Ok(()) => false,
                Err(SendError::Truncated(v)) => {
                    assert_eq!(v, i, "the message comes back");
                    assert!(matches!(tx.try_send(1), Err(TrySendError::Truncated(1))));
                    true
                }
                Err(e) => panic!("sender: {e:?}"),
            },
        );
        common::wait_until("the receiver sees Truncated", || {
            recv_ended.load(Ordering::SeqCst)
        });
    });
    assert_truncated(q.segment().check(), &name, 0);
}

#[test]
fn shared_map_survives_and_its_writes_get_truncated() {
    if common::role().is_some() {
        return truncate_child();
    }
    let name = common::unique("tm");
    // Seqlock reads (no lock) while the cut may land; writes after it.
    let m = SharedMap::<u64, u64>::builder()
        .name(&name)
        .capacity(1024)
        .create()
        .unwrap();
    for k in 0..40 {
        m.insert(k, k).unwrap();
    }
    while_a_peer_truncates(
        "shared_map_survives_and_its_writes_get_truncated",
        &[shm_path(&name)],
        0,
        |i| {
            let k = i % 40;
            if let Some(v) = m.get(&k) {
                assert_eq!(v, k);
            }
            m.segment().check().is_err()
        },
    );
    assert!(matches!(
        m.insert(1, 1),
        Err(Error::Region(RegionError::Truncated { .. }))
    ));
    assert!(matches!(
        m.update(&1, |_| Some(2)),
        Err(Error::Region(RegionError::Truncated { .. }))
    ));
    assert_eq!(m.get(&1), None, "reads see the zero pages");
    assert_truncated(m.segment().check(), &name, 0);
}

#[test]
fn locks_survive_a_peer_truncating_them() {
    if common::role().is_some() {
        return truncate_child();
    }
    let names: Vec<String> = (0..3).map(|_| common::unique("tl")).collect();
    let m = Mutex::<u64>::builder().name(&names[0]).create(0).unwrap();
    let rw = RwLock::<u64>::builder().name(&names[1]).create(0).unwrap();
    let sem = Semaphore::builder().name(&names[2]).create(1).unwrap();
    let paths: Vec<String> = names.iter().map(|n| shm_path(n)).collect();
    while_a_peer_truncates("locks_survive_a_peer_truncating_them", &paths, 0, |_| {
        let _ = m.is_poisoned(); // reads its control block, takes no lock
        // try_: a write lock taken on the file page and released on the zero
        // page leaves a wrapped state word there (RwLock is a futex word of
        // its own, with no owner record yet), and a blocking write() would
        // wait for it forever.
        if let Some(mut g) = rw.try_write() {
            *g += 1;
        }
        if let Some(g) = rw.try_read() {
            let _ = *g;
        }
        // Not acquire(): a zero page holds no permits, so a blocking
        // acquire after the cut would wait for a release nobody can make.
        if sem.try_acquire() {
            // A permit taken from the file page and given back to the zero
            // page (which says max 0) is refused: only after a cut.
            if let Err(e) = sem.release() {
                assert!(sem.segment().check().is_err(), "{e}");
            }
        }
        m.segment().check().is_err()
            && rw.segment().check().is_err()
            && sem.segment().check().is_err()
    });
    // The pthread mutex, locked only after the cut, is a plain zero word now.
    *m.lock().unwrap() += 1;
    assert_eq!(*m.lock().unwrap(), 1);
    for (seg, name) in [
        (m.segment(), &names[0]),
        (rw.segment(), &names[1]),
        (sem.segment(), &names[2]),
    ] {
        assert_truncated(seg.check(), name, 0);
    }
}

#[test]
fn a_file_region_survives_a_peer_truncating_it() {
    if common::role().is_some() {
        return truncate_child();
    }
    let path = std::env::temp_dir().join(common::unique("tf"));
    let a = Array::<u32>::builder()
        .file(&path)
        .unlocked()
        .create(4096)
        .unwrap();
    while_a_peer_truncates(
        "a_file_region_survives_a_peer_truncating_it",
        &[path.display().to_string()],
        0,
        |i| {
            a.set(4095, i as u32).unwrap();
            a.check().is_err()
        },
    );
    assert_truncated(a.check(), &path.display().to_string(), 0);
    drop(a);
    assert!(!path.exists());
}

#[test]
fn truncation_is_seen_by_fstat_before_any_touch() {
    if common::role().is_some() {
        return truncate_child();
    }
    let name = common::unique("tt");
    let v = Value::<u64>::builder().name(&name).create(3).unwrap();
    assert!(!v.segment().is_truncated());
    let mut peer = common::spawn(
        "truncation_is_seen_by_fstat_before_any_touch",
        "truncate",
        &[("PATHS", shm_path(&name)), ("LEN", "0".into())],
    );
    common::wait_ok(&mut peer);
    // Nothing touched the cut page yet: fstat tells, check() (one load) not.
    assert!(v.segment().is_truncated());
    assert!(v.check().is_ok());
    assert_eq!(v.get().unwrap(), 0, "the zero page");
    assert_truncated(v.check(), &name, 0);
}

#[test]
fn anonymous_regions_cannot_be_truncated() {
    let v = Value::<u64>::new(7).unwrap();
    // SAFETY: ftruncate on the segment's own valid descriptor.
    let r = unsafe { libc::ftruncate(v.segment().as_fd_raw(), 0) };
    let e = std::io::Error::last_os_error();
    assert_eq!(r, -1);
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert_eq!(v.get().unwrap(), 7);
    assert!(v.check().is_ok() && !v.segment().is_truncated());
}

trait RawFdOf {
    fn as_fd_raw(&self) -> i32;
}
impl RawFdOf for shmkit::region::Segment {
    fn as_fd_raw(&self) -> i32 {
        use std::os::fd::AsFd;
        self.as_fd().as_raw_fd()
    }
}

/// Where [`fault_outside_shmkit`] faults.
static OUTSIDE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A shared mapping of a memfd of our own (not shmkit's), shrunk to nothing:
/// touching it is a SIGBUS outside every shmkit mapping.
fn fault_outside_shmkit() {
    // SAFETY: plain libc calls on a fresh memfd and a fresh mapping of it;
    // the final write is the SIGBUS this test wants.
    unsafe {
        let fd = libc::memfd_create(c"outside".as_ptr(), 0);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, 4096), 0);
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(libc::ftruncate(fd, 0), 0);
        OUTSIDE.store(p as usize, Ordering::SeqCst);
        p.cast::<u8>().write_volatile(1);
    }
}

/// The user's own handler: exits 42 for the fault outside shmkit, 43 for any
/// other (a fault shmkit should have handled).
extern "C" fn users_handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut std::ffi::c_void) {
    // SAFETY: the kernel passes a valid siginfo; _exit is async-signal-safe.
    unsafe {
        let addr = (*info).si_addr() as usize;
        libc::_exit(if addr == OUTSIDE.load(Ordering::SeqCst) && addr != 0 {
            42
        } else {
            43
        });
    }
}

#[test]
fn a_handler_installed_before_shmkit_still_gets_other_faults() {
    if common::role().is_some() {
        // SAFETY: a zeroed sigaction is valid; installing a SA_SIGINFO handler.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            let h: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut std::ffi::c_void) =
                users_handler;
            act.sa_sigaction = h as usize;
            act.sa_flags = libc::SA_SIGINFO;
            assert_eq!(libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()), 0);
        }
        let name = common::unique("tc");
        let v = Value::<u64>::builder().name(&name).create(1).unwrap();
        v.segment().unlink().unwrap(); // _exit below runs no destructor
        // A truncation of shmkit's own mapping is handled by shmkit, not the
        // user's handler (which would exit 42 now).
        // SAFETY: ftruncate on the segment's own descriptor.
        assert_eq!(unsafe { libc::ftruncate(v.segment().as_fd_raw(), 0) }, 0);
        v.set(2).unwrap();
        assert!(matches!(
            v.check(),
            Err(Error::Region(RegionError::Truncated { .. }))
        ));
        // Any other fault reaches the user's handler.
        fault_outside_shmkit();
        unreachable!("the user's handler exits");
    }
    let mut c = common::spawn(
        "a_handler_installed_before_shmkit_still_gets_other_faults",
        "child",
        &[],
    );
    let st = common::wait(&mut c);
    assert_eq!(st.code(), Some(42), "{st:?}");
}

#[test]
fn other_sigbus_ends_as_it_would_without_shmkit() {
    if let Some(role) = common::role() {
        let (how, with_shmkit) = role.split_once('-').unwrap();
        let _v = (with_shmkit == "shmkit").then(|| {
            let v = Value::<u64>::builder()
                .name(common::unique("td"))
                .create(1)
                .unwrap();
            v.segment().unlink().unwrap(); // _exit below runs no destructor
            assert!(v.segment().truncation_guarded()); // shmkit's handler is in
            v
        });
        match how {
            "fault" => fault_outside_shmkit(),
            // SAFETY: raise(3) with a valid signal number.
            "sent" => unsafe {
                libc::raise(libc::SIGBUS);
            },
            _ => unreachable!(),
        }
        // SAFETY: _exit is always safe; reaching it means we survived.
        unsafe { libc::_exit(3) };
    }
    let end = |role: &str| {
        let mut c = common::spawn("other_sigbus_ends_as_it_would_without_shmkit", role, &[]);
        let st = common::wait(&mut c);
        (st.code(), st.signal())
    };
    // A fault outside shmkit's mappings kills with SIGBUS either way.
    assert_eq!(end("fault-shmkit"), (None, Some(libc::SIGBUS)));
    assert_eq!(end("fault-plain"), (None, Some(libc::SIGBUS)));
    // A SIGBUS sent with raise(3) ends the same with and without shmkit (Rust's
    // runtime handler, which shmkit chains to, lets a sent one pass).
    assert_eq!(end("sent-shmkit"), end("sent-plain"));
}

/// glibc keeps a robust mutex's list links *inside* the mutex, in shared
/// memory. A lock held across a truncation of its segment is unlocked through
/// the zero page (kind 0 there: a plain unlock, never taken off the thread's
/// robust list), so the list keeps an entry at an address of that mapping.
/// Had the segment's drop unmapped it, the thread's next robust lock would
/// write through the entry (SIGSEGV here; a write into unrelated memory had
/// the address been mapped again): the drop of a truncated segment leaves
/// its zero pages mapped. A control run without the cut must behave the same.
#[test]
fn a_lock_held_across_a_truncation_then_another_lock_taken_after_drop() {
    if let Some(role) = common::role() {
        let other = Mutex::<u64>::new(0).unwrap(); // anonymous: cannot be cut
        let name = common::unique("tg");
        let v = Value::<u64>::builder().name(&name).create(0).unwrap();
        v.segment().unlink().unwrap();
        let mut g = v.lock().unwrap();
        if role == "cut" {
            // SAFETY: ftruncate on the segment's own descriptor (a peer would
            // do the same through the name).
            assert_eq!(unsafe { libc::ftruncate(v.segment().as_fd_raw(), 0) }, 0);
        }
        *g = 1; // after a cut: faults, zero pages now
        drop(g);
        assert_eq!(v.check().is_err(), role == "cut");
        drop(v); // glibc's list still names an address in it
        *other.lock().unwrap() += 1; // enqueue writes through that entry
        // SAFETY: _exit is always safe. 7: this code really ran.
        unsafe { libc::_exit(7) };
    }
    let run = |role: &str| {
        let mut c = common::spawn(
            "a_lock_held_across_a_truncation_then_another_lock_taken_after_drop",
            role,
            &[],
        );
        common::wait(&mut c)
    };
    let control = run("uncut");
    assert_eq!(control.code(), Some(7), "without a cut: {control:?}");
    let st = run("cut");
    assert_eq!(st.code(), Some(7), "with a cut, the child died: {st:?}");
}

/// A peer that cuts and at once regrows the segment, over and over, while a
/// child process accesses it: a fault whose page the file covers again by
/// the time the handler looks is retried (bounded), not treated as fatal.
/// Lock-free stores: glibc's robust mutex reads the kind and then its list
/// links and owner from the page, so a cut landing between those reads can
/// crash a locker (DESIGN.md, threat model).
fn cut_and_regrow_while_a_child_uses_it(test: &str) {
    if common::role().is_some() {
        let v = Value::<u64>::open(&common::arg("NAME")).unwrap();
        println!("opened");
        let stop = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while std::time::Instant::now() < stop {
            v.store(1);
        }
        return;
    }
    let name = common::unique("tr");
    let v = Value::<u64>::builder().name(&name).create(0).unwrap();
    let path = shm_path(&name);
    let len = std::fs::metadata(&path).unwrap().len();
    let mut c = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("SHMKIT_TEST_ROLE", "user")
        .env("NAME", &name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Cut only once the child has opened it (an open of a cut segment
    // fails, as it should).
    use std::io::{BufRead, Read};
    let mut lines = std::io::BufReader::new(c.stdout.take().unwrap());
    let mut out = String::new();
    while !out.contains("opened") {
        if lines.read_line(&mut out).unwrap() == 0 {
            break; // the child ended: its status tells
        }
    }
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for _ in 0..300 {
        f.set_len(0).unwrap();
        f.set_len(len).unwrap();
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    let st = common::wait(&mut c);
    lines.read_to_string(&mut out).unwrap();
    drop(v);
    assert!(st.success() && out.contains("1 passed"), "{st:?}\n{out}");
}

#[test]
fn a_cut_regrown_before_the_handler_looks_is_retried() {
    cut_and_regrow_while_a_child_uses_it("a_cut_regrown_before_the_handler_looks_is_retried");
}

#[test]
fn a_pipe_survives_a_peer_truncating_it() {
    if common::role().is_some() {
        return truncate_child();
    }
    let name = common::unique("tp");
    let ends = std::sync::Mutex::new(
        shmkit::pipe::Connection::<Rkyv<u64>>::builder()
            .name(&name)
            .capacity(4)
            .create()
            .unwrap(),
    );
    let rounds = while_a_peer_truncates(
        "a_pipe_survives_a_peer_truncating_it",
        &[shm_path(&name)],
        0,
        |i| {
            let (here, there) = &mut *ends.lock().unwrap();
            if there.send_bytes(&i.to_le_bytes()).is_err() {
                return true;
            }
            match here.recv_bytes() {
                Err(RecvError::Truncated) => true,
                _ => here.segment().check().is_err(),
            }
        },
    );
    assert!(rounds >= 100);
    let (here, there) = ends.into_inner().unwrap();
    // Every form now says so, and nothing blocks: a blocking receive on
    // zero pages that no peer will ever write would otherwise wait forever.
    assert!(matches!(here.recv_bytes(), Err(RecvError::Truncated)));
    assert!(matches!(
        there.send_bytes(b"x"),
        Err(SendError::Truncated(()))
    ));
    assert!(
        here.poll(std::time::Duration::from_secs(60)),
        "poll said nothing"
    );
}

#[test]
fn a_blocked_semaphore_acquire_ends_when_a_peer_cuts_it() {
    if common::role().is_some() {
        return truncate_child();
    }
    let _w = common::watchdog("a blocked acquire never ended after the cut");
    let name = common::unique("tsem");
    let s = Semaphore::builder().name(&name).create(0).unwrap();
    std::thread::scope(|sc| {
        let blocked = sc.spawn(|| s.acquire());
        let permit = sc.spawn(|| s.permit().map(drop));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut peer = common::spawn(
            "a_blocked_semaphore_acquire_ends_when_a_peer_cuts_it",
            "truncate",
            &[("PATHS", shm_path(&name)), ("LEN", "0".into())],
        );
        common::wait_ok(&mut peer);
        // Nothing touches the cut pages but the waiters themselves.
        for r in [blocked.join().unwrap(), permit.join().unwrap()] {
            assert!(
                matches!(r, Err(Error::Region(RegionError::Truncated { .. }))),
                "{r:?}"
            );
        }
    });
}

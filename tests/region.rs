//! Regions: every open error produced and checked, ownership across fork and
//! exec, persistence, space checks, file-backed and random names.

mod common;

use shmkit::error::RegionError;
use shmkit::sync::Barrier;
use shmkit::{Array, Error, Value};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

fn shm_path(name: &str) -> String {
    format!("/dev/shm/{}", name.trim_start_matches('/'))
}

fn exists(name: &str) -> bool {
    std::path::Path::new(&shm_path(name)).exists()
}

/// A POSIX segment made by hand (not through shmkit), removed on drop.
struct Foreign(String);

impl Foreign {
    fn new(tag: &str, bytes: &[u8]) -> Foreign {
        let name = format!("/{}", common::unique(tag));
        let c = CString::new(name.clone()).unwrap();
        // SAFETY: plain libc calls on a fresh name; fd closed below.
        unsafe {
            let fd = libc::shm_open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                0o600,
            );
            assert!(fd >= 0);
            if !bytes.is_empty() {
                assert_eq!(
                    libc::write(fd, bytes.as_ptr().cast(), bytes.len()),
                    bytes.len() as isize
                );
            }
            libc::close(fd);
        }
        Foreign(name)
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let c = CString::new(self.0.clone()).unwrap();
        // SAFETY: unlinking our own name.
        unsafe { libc::shm_unlink(c.as_ptr()) };
    }
}

#[test]
fn create_is_exclusive_and_open_finds_it() {
    let name = common::unique("excl");
    let v = Value::<u64>::builder().name(&name).create(41).unwrap();
    let e = Value::<u64>::builder().name(&name).create(0).unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::AlreadyExists { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("already exists"));
    let w = Value::<u64>::open(&name).unwrap();
    w.fetch_add(1);
    assert_eq!(v.load(), 42);
    assert!(v.segment().is_creator() && !w.segment().is_creator());
    assert_eq!(w.segment().creator_pid(), std::process::id());
    assert!(w.segment().creator_alive());
    let missing = Value::<u64>::open(&common::unique("missing")).unwrap_err();
    assert!(
        matches!(missing, Error::Region(RegionError::NotFound { .. })),
        "{missing}"
    );
    let bad = Value::<u64>::open("a/b").unwrap_err();
    assert!(
        matches!(bad, Error::Region(RegionError::InvalidName { .. })),
        "{bad}"
    );
}

#[test]
fn wrong_type_kind_and_length_are_typed_errors() {
    let vname = common::unique("type");
    let _v = Value::<u64>::builder().name(&vname).create(1).unwrap();
    let e = Value::<i64>::open(&vname).unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::TypeMismatch { .. })),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("`u64`") && msg.contains("`i64`"), "{msg}");
    let e = Value::<u32>::open(&vname).unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::TypeMismatch { ref expected, ref found, .. })
        if expected.size == 4 && found.size == 8),
        "{e}"
    );
    let e = Array::<u64>::open(&vname).unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::KindMismatch { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("holds a Value"), "{e}");

    let aname = common::unique("len");
    let _a = Array::<u16>::builder().name(&aname).create(10).unwrap();
    let e = Array::<u16>::builder()
        .name(&aname)
        .expect_len(11)
        .open()
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Region(RegionError::LengthMismatch {
                expected: 11,
                found: 10,
                ..
            })
        ),
        "{e}"
    );
    assert_eq!(Array::<u16>::open(&aname).unwrap().len(), 10);

    // A tag makes types from differently named crates compatible.
    let tname = common::unique("tag");
    let _t = Value::<[u8; 4]>::builder()
        .name(&tname)
        .type_tag("rgba")
        .create([1, 2, 3, 4])
        .unwrap();
    assert!(Value::<[u8; 4]>::open(&tname).is_err());
    let t = Value::<[u8; 4]>::builder()
        .name(&tname)
        .type_tag("rgba")
        .open()
        .unwrap();
    assert_eq!(t.get().unwrap(), [1, 2, 3, 4]);
}

#[test]
fn wrong_version_and_foreign_magic_are_typed_errors() {
    let name = common::unique("version");
    let v = Value::<u64>::builder().name(&name).create(1).unwrap();
    let version = v.segment().as_ptr().wrapping_add(8).cast::<u32>();
    // SAFETY: offset 8 is the header's version field, in our own mapping.
    unsafe { version.write_volatile(99) };
    let e = Value::<u64>::open(&name).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Region(RegionError::VersionMismatch {
                expected: shmkit::region::LAYOUT_VERSION,
                found: 99,
                ..
            })
        ),
        "{e}"
    );

    let garbage = Foreign::new("garbage", &[0xAB; 4096]);
    let e = Value::<u64>::open(&garbage.0).unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::NotShmkit { .. })),
        "{e}"
    );
}

#[test]
fn uninitialised_segments_time_out_with_a_typed_error() {
    let fast = |n: &str| {
        Value::<u64>::builder()
            .name(n)
            .open_timeout(Duration::from_millis(50))
            .open()
    };
    // Size still 0: the creator has not even set the length.
    let empty = Foreign::new("empty", &[]);
    let e = fast(&empty.0).unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::NotInitialized { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("not initialised"));
    // Sized but never published (ready word 0), as if the creator died.
    let unready = Foreign::new("unready", &[0; 4096]);
    let e = fast(&unready.0).unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::NotInitialized { .. })),
        "{e}"
    );
}

#[test]
fn an_opener_waits_for_a_slow_creator() {
    if common::role().is_some() {
        // The child creates late; the parent is already waiting in open.
        std::thread::sleep(Duration::from_millis(200));
        let v = Value::<u64>::builder()
            .name(common::arg("NAME"))
            .unlink_on_drop(false)
            .create(77)
            .unwrap();
        drop(v);
        return;
    }
    let name = common::unique("slow");
    let mut c = common::spawn(
        "an_opener_waits_for_a_slow_creator",
        "creator",
        &[("NAME", name.clone())],
    );
    // Spin on NotFound until the name appears, then open waits for ready.
    let v = loop {
        match Value::<u64>::builder()
            .name(&name)
            .open_timeout(Duration::from_secs(30))
            .open()
        {
            Ok(v) => break v,
            Err(Error::Region(RegionError::NotFound { .. })) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(v.load(), 77);
    common::wait_ok(&mut c);
    assert!(!v.segment().creator_alive());
    v.segment().unlink().unwrap();
}

#[test]
fn truncated_segment_is_a_typed_error() {
    let name = common::unique("trunc");
    let a = Array::<u64>::builder().name(&name).create(100_000).unwrap();
    // A peer shrinks the object behind our back (we do not touch our mapping).
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    f.set_len(4096).unwrap();
    let e = Array::<u64>::open(&name).unwrap_err();
    assert!(
        matches!(e, Error::Region(RegionError::Truncated { found: 4096, .. })),
        "{e}"
    );
    drop(a);
}

#[test]
fn segment_of_another_user_is_refused_unless_allowed() {
    let name = common::unique("uid");
    let v = Value::<u64>::builder()
        .name(&name)
        .mode(0o666)
        .create(3)
        .unwrap();
    // SAFETY: fchown on our own descriptor.
    let r = unsafe { libc::fchown(v.segment().as_fd().as_raw_fd(), 65534, 65534) };
    if r != 0 {
        eprintln!("skipping: fchown needs root (CI runs as root)");
        return;
    }
    let e = Value::<u64>::open(&name).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Region(RegionError::ForeignOwner {
                owner_uid: 65534,
                ..
            })
        ),
        "{e}"
    );
    let ok = Value::<u64>::builder()
        .name(&name)
        .allow_foreign_owner(true)
        .open()
        .unwrap();
    assert_eq!(ok.load(), 3);
}

#[test]
fn segments_are_private_to_the_user_by_default() {
    use std::os::unix::fs::PermissionsExt;
    let name = common::unique("mode");
    let _v = Value::<u8>::builder().name(&name).create(0).unwrap();
    let mode = std::fs::metadata(shm_path(&name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn only_the_creator_unlinks_not_an_opener_or_a_forked_child() {
    if common::role().is_some() {
        let v = Value::<u64>::open(&common::arg("NAME")).unwrap();
        v.fetch_add(1);
        drop(v); // an opener's drop never unlinks
        return;
    }
    let name = common::unique("owner");
    let v = Value::<u64>::builder().name(&name).create(0).unwrap();
    let mut c = common::spawn(
        "only_the_creator_unlinks_not_an_opener_or_a_forked_child",
        "opener",
        &[("NAME", name.clone())],
    );
    common::wait_ok(&mut c);
    assert!(exists(&name));

    // A forked child holds a copy of the creator's handle; dropping it there
    // must not unlink the parent's segment.
    let copy = v.clone();
    // SAFETY: the child only drops a handle (munmap, close, free: glibc makes
    // malloc fork-safe) and _exits.
    match unsafe { libc::fork() } {
        0 => {
            drop(copy);
            drop(v);
            // SAFETY: immediate exit without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        pid => {
            assert!(pid > 0);
            let mut st = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0);
        }
    }
    drop(copy);
    assert!(
        exists(&name),
        "a forked child's drop unlinked the parent's segment"
    );
    assert_eq!(Value::<u64>::open(&name).unwrap().load(), 1);
    drop(v);
    assert!(!exists(&name), "the creator's last drop must unlink");
}

#[test]
fn persist_keeps_the_name_until_unlinked() {
    let name = common::unique("persist");
    let v = Value::<u32>::builder().name(&name).create(9).unwrap();
    v.segment().persist();
    drop(v);
    assert!(exists(&name));
    let w = Value::<u32>::open(&name).unwrap();
    assert_eq!(w.get().unwrap(), 9);
    w.segment().unlink().unwrap();
    assert!(!exists(&name));
    let x = Value::<u32>::builder()
        .name(&name)
        .unlink_on_drop(false)
        .create(1)
        .unwrap();
    drop(x);
    assert!(exists(&name));
    Value::<u32>::open(&name)
        .unwrap()
        .segment()
        .unlink()
        .unwrap();
}

#[test]
fn too_big_for_dev_shm_is_no_space_naming_both_sizes() {
    let e = Array::<u8>::builder()
        .random_name()
        .create(1usize << 50) // 1 PiB
        .unwrap_err();
    match &e {
        Error::Region(RegionError::NoSpace {
            requested,
            available,
            ..
        }) => {
            assert!(*requested > *available);
            let msg = e.to_string();
            assert!(
                msg.contains(&requested.to_string()) && msg.contains(&available.to_string()),
                "{msg}"
            );
        }
        other => panic!("expected NoSpace, got {other}"),
    }
}

#[test]
fn populate_reserves_pages_at_create() {
    let a = Array::<u8>::builder()
        .random_name()
        .populate(true)
        .create(8 << 20)
        .unwrap();
    let name = a.segment().name().unwrap().to_owned();
    assert!(name.starts_with("/shmkit-"), "{name}");
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(shm_path(&name)).unwrap().blocks();
    assert!(
        blocks * 512 >= 8 << 20,
        "pages not reserved: {blocks} blocks"
    );
}

#[test]
fn file_backed_region_is_shared_and_removed_by_its_creator() {
    if common::role().is_some() {
        let a = Array::<u32>::builder()
            .file(common::arg("PATH"))
            .open()
            .unwrap();
        a.set(2, 99).unwrap();
        return;
    }
    let path = std::env::temp_dir().join(common::unique("file"));
    let a = Array::<u32>::builder().file(&path).create(4).unwrap();
    assert_eq!(a.segment().path(), Some(path.as_path()));
    let mut c = common::spawn(
        "file_backed_region_is_shared_and_removed_by_its_creator",
        "c",
        &[("PATH", path.display().to_string())],
    );
    common::wait_ok(&mut c);
    assert_eq!(a.to_vec().unwrap(), vec![0, 0, 99, 0]);
    drop(a);
    assert!(!path.exists());
}

#[test]
fn open_or_create_race_creates_exactly_once() {
    if common::role().is_some() {
        let b = Barrier::open(&common::arg("BARRIER")).unwrap();
        b.wait();
        let (v, created) = Value::<u64>::builder()
            .name(common::arg("NAME"))
            .unlink_on_drop(false)
            .open_or_create(0)
            .unwrap();
        v.fetch_add(if created { 1000 } else { 1 });
        return;
    }
    let name = common::unique("race");
    let b = Barrier::builder()
        .name(common::unique("rb"))
        .create(4)
        .unwrap();
    let env = [
        ("NAME", name.clone()),
        ("BARRIER", b.segment().name().unwrap().to_owned()),
    ];
    let children = (0..4)
        .map(|_| common::spawn("open_or_create_race_creates_exactly_once", "racer", &env))
        .collect();
    common::wait_all_ok(children);
    let v = Value::<u64>::open(&name).unwrap();
    assert_eq!(v.load(), 1003, "exactly one creator, three openers");
    v.segment().unlink().unwrap();
}

/// Makes this process's mounts private and mounts 1 MiB tmpfs on /dev/shm and
/// on `dir`, visible to this process and its children only. `Err` says why it
/// could not (no privilege for a mount namespace).
fn private_small_tmpfs(dir: &str) -> Result<(), String> {
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: unshare(2) with namespace flags only; this child runs its one
    // test on its main thread, as CLONE_NEWUSER requires.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        let first = os("unshare(CLONE_NEWNS)");
        // SAFETY: as above.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
            return Err(format!(
                "{first}; {}",
                os("unshare(CLONE_NEWUSER|CLONE_NEWNS)")
            ));
        }
    }
    let root = CString::new("/").unwrap();
    let tmpfs = CString::new("tmpfs").unwrap();
    let size = CString::new("size=1m,mode=1777").unwrap();
    // SAFETY: valid C strings; the first call only changes propagation (so
    // nothing below reaches the parent's mounts).
    if unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(os("mount --make-rprivate /"));
    }
    for target in ["/dev/shm", dir] {
        let t = CString::new(target).unwrap();
        // SAFETY: valid C strings for source, target, type and options.
        if unsafe {
            libc::mount(
                tmpfs.as_ptr(),
                t.as_ptr(),
                tmpfs.as_ptr(),
                0,
                size.as_ptr().cast(),
            )
        } != 0
        {
            return Err(os(&format!("mount tmpfs on {target}")));
        }
    }
    Ok(())
}

fn free_bytes(path: &str) -> u64 {
    let c = CString::new(path).unwrap();
    let mut v = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid C string and out-pointer.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), v.as_mut_ptr()) }, 0);
    // SAFETY: statvfs succeeded.
    let v = unsafe { v.assume_init() };
    v.f_bavail * v.f_frsize
}

fn assert_no_space(r: shmkit::Result<impl std::fmt::Debug>, what: &str) {
    match r {
        Err(Error::Region(RegionError::NoSpace {
            requested,
            available,
            ..
        })) => assert!(requested > available, "{what}: {requested} <= {available}"),
        other => panic!("{what}: expected NoSpace, got {other:?}"),
    }
}

/// In the private namespace: every page of the named array `NAME` touched.
fn touch_every_page() {
    let a = Array::<u8>::builder()
        .name(common::arg("NAME"))
        .unlocked()
        .open()
        .unwrap();
    for i in (0..a.len()).step_by(4096) {
        a.set(i, 1).unwrap();
    }
}

fn reservation_in_small_tmpfs() {
    let dir = common::arg("DIR");
    if let Err(why) = private_small_tmpfs(&dir) {
        println!("SKIP: no private mount namespace here ({why})");
        return;
    }
    assert_eq!(free_bytes("/dev/shm"), 1 << 20);
    let names: Vec<String> = (0..4).map(|i| common::unique(&format!("ns{i}"))).collect();
    let listed = || std::fs::read_dir("/dev/shm").unwrap().count();

    // Two regions that each fit but not together: the second is NoSpace at
    // create, and leaves nothing behind.
    let a = Array::<u8>::builder()
        .name(&names[0])
        .create(600 << 10)
        .unwrap();
    assert_no_space(
        Array::<u8>::builder().name(&names[1]).create(600 << 10),
        "second region",
    );
    assert_eq!(listed(), 1);
    // The first is whole: every page can be touched.
    a.lock().unwrap().fill(7);
    drop(a);
    assert_eq!(listed(), 0);
    assert_eq!(free_bytes("/dev/shm"), 1 << 20);

    // A region of exactly the free space fits; then nothing more does.
    let data_off = {
        let probe = Array::<u8>::builder().name(&names[0]).create(1).unwrap();
        probe.segment().len() - 1
    };
    let exact = (1usize << 20) - data_off;
    let all = Array::<u8>::builder()
        .name(&names[0])
        .create(exact)
        .unwrap();
    assert_eq!(all.segment().len(), 1 << 20);
    assert_eq!(free_bytes("/dev/shm"), 0);
    assert_no_space(
        Value::<u8>::builder().name(&names[1]).create(0),
        "a value in a full /dev/shm",
    );
    all.lock().unwrap().fill(1);
    drop(all);
    assert_no_space(
        Array::<u8>::builder().name(&names[0]).create(exact + 1),
        "one byte more than the free space",
    );

    // Opting out: both are created (sparse), and touching the pages tmpfs
    // cannot supply is SIGBUS — not a truncation, so shmkit's handler lets
    // the process die of it.
    let sparse = Array::<u8>::builder()
        .name(&names[2])
        .reserve(false)
        .unlocked()
        .create(800 << 10)
        .unwrap();
    assert!(
        free_bytes("/dev/shm") > 900 << 10,
        "reserve(false) reserved"
    );
    let reserved = Array::<u8>::builder()
        .name(&names[3])
        .create(800 << 10)
        .unwrap();
    let mut c = common::spawn(
        "a_full_dev_shm_is_no_space_at_create_never_sigbus_later",
        "touch",
        &[("NAME", names[2].clone())],
    );
    let st = common::wait(&mut c);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGBUS), "{st:?}");
    reserved.lock().unwrap().fill(3); // reserved: every page is there
    drop((sparse, reserved));

    // File regions are reserved in their own filesystem.
    let (fa, fb) = (format!("{dir}/a"), format!("{dir}/b"));
    let a = Array::<u8>::builder().file(&fa).create(600 << 10).unwrap();
    assert_no_space(
        Array::<u8>::builder().file(&fb).create(600 << 10),
        "second file region",
    );
    assert!(!std::path::Path::new(&fb).exists());
    drop(a);
    assert!(!std::path::Path::new(&fa).exists());
    println!("reservation checked in a private 1 MiB tmpfs");
}

#[test]
fn a_full_dev_shm_is_no_space_at_create_never_sigbus_later() {
    match common::role().as_deref() {
        Some("ns") => return reservation_in_small_tmpfs(),
        Some("touch") => return touch_every_page(),
        _ => {}
    }
    let dir = std::env::temp_dir().join(common::unique("nsdir"));
    std::fs::create_dir(&dir).unwrap();
    let mut c = common::spawn(
        "a_full_dev_shm_is_no_space_at_create_never_sigbus_later",
        "ns",
        &[("DIR", dir.display().to_string())],
    );
    let st = common::wait(&mut c);
    let mut out = String::new();
    use std::io::Read;
    c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    std::fs::remove_dir(&dir).unwrap();
    assert!(st.success() && out.contains("1 passed"), "{st:?}\n{out}");
    if let Some(line) = out.lines().find(|l| l.starts_with("SKIP")) {
        println!("{line}");
    } else {
        assert!(out.contains("reservation checked"), "{out}");
    }
}

#[test]
fn named_regions_are_reserved_by_default_and_not_with_reserve_false() {
    use std::os::unix::fs::MetadataExt;
    let blocks = |a: &Array<u8>| {
        std::fs::metadata(shm_path(a.segment().name().unwrap()))
            .unwrap()
            .blocks()
            * 512
    };
    let r = Array::<u8>::builder()
        .random_name()
        .create(4 << 20)
        .unwrap();
    assert!(blocks(&r) >= 4 << 20, "not reserved: {}", blocks(&r));
    let s = Array::<u8>::builder()
        .random_name()
        .reserve(false)
        .create(4 << 20)
        .unwrap();
    assert!(blocks(&s) < 1 << 20, "reserved anyway: {}", blocks(&s));
}

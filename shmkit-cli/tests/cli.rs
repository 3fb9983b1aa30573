//! The `shmkit` command-line tool, run as a binary against real segments:
//! a stale segment (its creator killed) is listed as stale and removed by
//! `shmkit clean`; a live one is left alone; one whose creator died but that
//! a live process maps is in use and kept (unless `--force`); each kind shows
//! its own figures; FIFOs, links, directories, short files and a name
//! swapped between a file and a FIFO never hang it; a closed stdout is not a
//! panic.

// The workspace's shared test helpers (this test moved here with the
// binary: `CARGO_BIN_EXE_shmkit` exists only in the binary's own package).
#[path = "../../tests/common/mod.rs"]
mod common;

use common::{unique, watchdog};
use shmkit::error::ProcessError;
use shmkit::{Error, Queue, Value};
use std::process::Command;

fn shmkit(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .args(args)
        .output()
        .expect("run the shmkit binary");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Creates a named value and dies without cleaning up (as a SIGKILLed
/// creator does).
fn create_and_die(name: String) {
    let v = Value::<u64>::builder().name(&name).create(7).unwrap();
    std::mem::forget(v);
    // SAFETY: raising SIGKILL at ourselves, on purpose.
    unsafe { libc::raise(libc::SIGKILL) };
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

#[test]
fn clean_removes_a_stale_segment_and_leaves_a_live_one() {
    let _w = watchdog("cli clean");
    let prefix = unique("cli");
    let stale = format!("{prefix}-stale");
    let live = format!("{prefix}-live");
    let died = shmkit::spawn(create_and_die, stale.clone()).unwrap().join();
    assert!(
        matches!(
            died,
            Err(Error::Process(ProcessError::Died { exitcode: -9, .. }))
        ),
        "{died:?}"
    );
    assert!(exists(&stale));
    let keep = Value::<u64>::builder().name(&live).create(1).unwrap();

    let (ok, ls) = shmkit(&["ls", "--json"]);
    assert!(ok, "{ls}");
    let entry = |name: &str| {
        let at = ls.find(&format!("\"name\":\"{name}\"")).expect("listed");
        ls[at..at + ls[at..].find('}').unwrap()].to_owned()
    };
    assert!(
        entry(&stale).contains("\"stale\":true"),
        "{}",
        entry(&stale)
    );
    assert!(entry(&live).contains("\"stale\":false"), "{}", entry(&live));
    assert!(entry(&live).contains("\"kind\":\"Value\""));
    let (ok, table) = shmkit(&["ls"]);
    assert!(
        ok && table.contains(&stale) && table.contains("stale"),
        "{table}"
    );

    let (ok, dry) = shmkit(&["clean", "--dry-run", "--prefix", &prefix]);
    assert!(
        ok && dry.contains(&format!("would remove {stale}")),
        "{dry}"
    );
    assert!(!dry.contains(&live));
    assert!(exists(&stale), "a dry run removed it");

    let (ok, out) = shmkit(&["clean", "--json", "--prefix", &prefix]);
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        format!(
            "{{\"dry_run\":false,\"force\":false,\"removed\":[\"{stale}\"],\"in_use\":[],\
             \"foreign\":[],\"skipped\":[]}}"
        )
    );
    assert!(!exists(&stale), "the stale segment is still there");
    assert!(exists(&live), "the live segment was removed");
    assert_eq!(keep.load(), 1);
}

#[test]
fn inspect_shows_a_queues_live_figures() {
    let _w = watchdog("cli inspect");
    let name = unique("cli-queue");
    let q = Queue::<u64>::builder()
        .name(&name)
        .capacity(16)
        .create()
        .unwrap();
    let (tx, _rx) = (q.sender().unwrap(), q.receiver().unwrap());
    for i in 0..3 {
        tx.send(i).unwrap();
    }
    let (ok, out) = shmkit(&["inspect", &name, "--json"]);
    assert!(ok, "{out}");
    assert!(out.contains("\"kind\":\"Queue\""), "{out}");
    assert!(
        out.contains("\"queue\":{\"depth\":3,\"capacity\":16,\"senders\":1,\"receivers\":1}"),
        "{out}"
    );
    let (ok, text) = shmkit(&["inspect", &format!("/{name}")]);
    assert!(
        ok && text.contains("3 of 16 slots used, 1 senders, 1 receivers"),
        "{text}"
    );
    let (ok, err) = shmkit(&["inspect", &unique("cli-missing")]);
    assert!(!ok && err.contains("shmkit:"), "{err}");
}

#[test]
fn cleanup_stale_is_a_library_call_too() {
    let _w = watchdog("cleanup_stale");
    let prefix = unique("cli-api");
    let stale = format!("{prefix}-x");
    let _ = shmkit::spawn(create_and_die, stale.clone()).unwrap().join();
    let info = shmkit::admin::inspect_segment(&stale).unwrap();
    assert!(info.is_stale() && info.ready && info.kind == "Value");
    let removed = shmkit::admin::cleanup_stale_matching(|n| n.starts_with(&prefix), false).unwrap();
    assert_eq!(removed, std::slice::from_ref(&stale));
    assert!(!exists(&stale));
}

/// Names under /dev/shm made by a test, removed when it ends.
struct Planted(Vec<std::path::PathBuf>);

impl Drop for Planted {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir(p));
        }
    }
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {path:?}"
    );
}

#[test]
fn fifos_links_directories_and_short_files_never_hang_it() {
    let _w = watchdog("cli hostile names");
    let prefix = unique("cli-odd");
    let dir = std::path::Path::new("/dev/shm");
    let real = Value::<u64>::builder()
        .name(format!("{prefix}-real"))
        .create(5)
        .unwrap();
    let p = |s: &str| dir.join(format!("{prefix}-{s}"));
    let planted = Planted(vec![
        p("fifo"),
        p("link"),
        p("dir"),
        p("short"),
        p("foreign"),
    ]);
    mkfifo(&planted.0[0]);
    std::os::unix::fs::symlink(dir.join(format!("{prefix}-real")), &planted.0[1]).unwrap();
    std::fs::create_dir(&planted.0[2]).unwrap();
    std::fs::write(&planted.0[3], [1u8; 100]).unwrap();
    std::fs::write(&planted.0[4], [0x5au8; 4096]).unwrap();

    let (ok, ls) = shmkit(&["ls", "--prefix", &prefix]);
    assert!(ok, "{ls}");
    assert!(ls.contains(&format!("{prefix}-real")), "{ls}");
    assert!(ls.contains("skipped 5 entr(ies)"), "{ls}");
    for (what, why) in [
        ("fifo", "a FIFO"),
        ("link", "symbolic link"),
        ("dir", "a directory"),
        ("short", "too short"),
        ("foreign", "not a shmkit segment (magic 0x5a5a5a5a5a5a5a5a)"),
    ] {
        assert!(ls.contains(&format!("{prefix}-{what}: ")), "{what}: {ls}");
        assert!(ls.contains(why), "{why}: {ls}");
        let (ok, out) = shmkit(&["inspect", &format!("{prefix}-{what}")]);
        assert!(!ok && out.contains("shmkit:"), "inspect {what}: {out}");
    }
    let (_, short) = shmkit(&["inspect", &format!("{prefix}-short")]);
    assert!(
        short.contains("truncated") && short.contains("100"),
        "{short}"
    );
    assert!(!short.contains("magic 0x0000000000000000"), "{short}");
    let (ok, json) = shmkit(&["ls", "--json", "--prefix", &prefix]);
    assert!(ok && json.contains("\"skipped\":[{\"name\""), "{json}");
    let (ok, clean) = shmkit(&["clean", "--prefix", &prefix]);
    assert!(
        ok && clean.contains("removed 0 stale segment(s)"),
        "{clean}"
    );
    assert!(
        planted.0.iter().all(|p| p.symlink_metadata().is_ok()),
        "clean touched a non-segment"
    );
    assert_eq!(real.load(), 5);
    // Usage errors exit with 2, failures with 1.
    let status = Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .arg("--no-such-flag")
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(2));
    let status = Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .args(["inspect", &format!("{prefix}-fifo")])
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(1));
}

#[test]
fn a_name_swapped_between_a_file_and_a_fifo_never_hangs_it() {
    let _w = watchdog("cli swap");
    let prefix = unique("cli-swap");
    let dir = std::path::Path::new("/dev/shm");
    let (name, file, fifo) = (
        dir.join(format!("{prefix}-x")),
        dir.join(format!("{prefix}-file")),
        dir.join(format!("{prefix}-fifo")),
    );
    let _planted = Planted(vec![name.clone(), file.clone(), fifo.clone()]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (name, file, fifo, stop) = (name.clone(), file.clone(), fifo.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(&file, [0u8; 300]).unwrap();
                let _ = std::fs::rename(&file, &name);
                mkfifo(&fifo);
                let _ = std::fs::rename(&fifo, &name);
                swaps += 1;
            }
            swaps
        })
    };
    for _ in 0..25 {
        let (ok, out) = shmkit(&["ls", "--prefix", &prefix]);
        assert!(ok, "{out}");
        let (ok, out) = shmkit(&["clean", "--prefix", &prefix]);
        assert!(ok, "{out}");
        let _ = shmkit(&["inspect", &format!("{prefix}-x")]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    println!("{swaps} swaps while ls, clean and inspect ran 25 times each");
    assert!(swaps > 0);
}

/// Opens a named value (mapping it) and holds it until `go` is set.
fn map_and_wait((name, go): (String, String)) -> u64 {
    let v = Value::<u64>::open(&name).unwrap();
    shmkit::sync::Event::open(&go).unwrap().wait();
    v.load()
}

#[test]
fn a_segment_a_live_process_maps_is_in_use_not_stale() {
    let _w = watchdog("cli in use");
    let prefix = unique("cli-inuse");
    let name = format!("{prefix}-v");
    let _ = shmkit::spawn(create_and_die, name.clone()).unwrap().join();
    let go = shmkit::sync::Event::builder()
        .name(format!("{prefix}-go"))
        .create()
        .unwrap();
    let go_name = go.segment().name().unwrap().to_owned();
    let user = shmkit::spawn(map_and_wait, (name.clone(), go_name)).unwrap();
    let pid = user.pid();
    common::wait_until("the user mapped it", || {
        shmkit::admin::inspect_segment(&name)
            .is_ok_and(|i| i.users.pids.iter().any(|&(p, _)| p == pid))
    });
    let info = shmkit::admin::inspect_segment(&name).unwrap();
    assert!(!info.creator_alive && !info.is_stale() && info.is_orphaned_in_use());
    let (ok, ls) = shmkit(&["ls", "--prefix", &prefix]);
    assert!(
        ok && ls.contains("in-use") && ls.contains(&pid.to_string()),
        "{ls}"
    );
    let (ok, text) = shmkit(&["inspect", &name]);
    assert!(
        ok && text.contains("attached:      1 process(es)"),
        "{text}"
    );
    let (ok, out) = shmkit(&["clean", "--prefix", &prefix]);
    assert!(ok && out.contains(&format!("kept {name}")), "{out}");
    assert!(exists(&name), "clean removed a segment in use");
    let removed = shmkit::admin::cleanup_stale_matching(|n| n.starts_with(&prefix), false).unwrap();
    assert!(removed.is_empty(), "{removed:?}");
    let (ok, out) = shmkit(&["clean", "--force", "--prefix", &prefix]);
    assert!(
        ok && out.contains("although it is in use") && out.contains("--force"),
        "{out}"
    );
    assert!(!exists(&name), "--force did not remove it");
    go.set();
    assert_eq!(user.join().unwrap(), 7, "the user kept its memory");
}

#[test]
fn each_kind_speaks_its_language() {
    let _w = watchdog("cli kinds");
    let prefix = unique("cli-kinds");
    let map = shmkit::SharedMap::<u64, u64>::builder()
        .name(format!("{prefix}-map"))
        .capacity(100)
        .create()
        .unwrap();
    for k in 0..7 {
        map.insert(k, k).unwrap();
    }
    let m = shmkit::sync::Mutex::<u64>::builder()
        .name(format!("{prefix}-mutex"))
        .create(0)
        .unwrap();
    let _arr = shmkit::Array::<f64>::builder()
        .name(format!("{prefix}-array"))
        .create(12)
        .unwrap();
    let (ok, text) = shmkit(&["inspect", &format!("{prefix}-map")]);
    assert!(
        ok && text.contains("map:           7 entries of capacity 100"),
        "{text}"
    );
    assert!(!text.contains("elements:"), "{text}");
    let g = m.lock().unwrap();
    let (ok, text) = shmkit(&["inspect", &format!("{prefix}-mutex")]);
    assert!(
        ok && text.contains(&format!(
            "lock:          held by pid {}",
            std::process::id()
        )),
        "{text}"
    );
    drop(g);
    let (ok, text) = shmkit(&["inspect", &format!("{prefix}-mutex"), "--json"]);
    assert!(ok && text.contains("\"lock\":{\"held\":false"), "{text}");
    let (ok, text) = shmkit(&["inspect", &format!("{prefix}-array")]);
    assert!(
        ok && text.contains("elements:      12 of 8 bytes"),
        "{text}"
    );
    assert!(text.contains("lock:          free"), "{text}");
    // A long type is shown whole.
    let long = shmkit::SharedMap::<shmkit::FixedStr<24>, [u64; 3]>::builder()
        .name(format!("{prefix}-long"))
        .capacity(4)
        .create()
        .unwrap();
    let (ok, ls) = shmkit(&["ls", "--prefix", &prefix]);
    let ty = shmkit::admin::inspect_segment(long.segment().name().unwrap())
        .unwrap()
        .type_name;
    assert!(ty.len() > 28, "{ty}");
    assert!(ok && ls.contains(&ty), "type cut: {ls}");
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let _w = watchdog("cli closed stdout");
    let _v = Value::<u64>::builder()
        .name(unique("cli-pipe"))
        .create(1)
        .unwrap();
    let mut fds = [0; 2];
    // SAFETY: pipe(2) into a 2-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are fresh descriptors of ours; the read end is closed at
    // once, so every write to the other end fails with EPIPE.
    let write_end = unsafe {
        libc::close(fds[0]);
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1])
    };
    let out = Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .args(["ls"])
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// SIGKILLs the tour's whole process group at random moments; afterwards no
/// segment of the tour's is left that one `clean` does not remove (the tour
/// uses anonymous regions, so none at all is expected). `TOUR_KILLS` sets
/// the runs (default 4; .ci/run: 30). Skips with a message where the tour
/// example was not built (`cargo test` at the workspace root builds it).
#[test]
fn killing_the_tour_leaves_nothing_clean_cannot_remove() {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap();
    let tour = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/tour");
    if !tour.exists() {
        println!(
            "skipped: {} not built (run `cargo test` at the workspace root)",
            tour.display()
        );
        return;
    }
    let runs: u64 = std::env::var("TOUR_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut rng = 0x70ab_u64 ^ u64::from(std::process::id());
    let (mut left, mut cleaned) = (0usize, 0usize);
    for _ in 0..runs {
        // One watchdog per kill: 30 kills at up to 6 s each can outlast one
        // 120 s watchdog for the whole loop (that was the flaky CI step).
        let _w = watchdog("one tour kill");
        let mut child = Command::new(&tour)
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(
            20 + common::xorshift(&mut rng) % 6000,
        ));
        // SAFETY: kill(2) on the process group we just made.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        let _ = child.wait();
        // Its children (same group) die too; wait until none maps anything.
        common::wait_until("the tour's group is gone", || {
            std::fs::read_dir("/proc").unwrap().flatten().all(|e| {
                let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    return true;
                };
                // SAFETY: getpgid(2) on any pid: no memory is touched.
                let group = unsafe { libc::getpgid(p) };
                group != pid as i32
            })
        });
        let mine: Vec<String> = shmkit::admin::list_segments()
            .unwrap()
            .into_iter()
            .filter(|i| i.creator_pid == pid)
            .map(|i| i.name)
            .collect();
        left += mine.len();
        let removed =
            shmkit::admin::cleanup_stale_matching(|n| mine.iter().any(|m| m == n), false).unwrap();
        cleaned += removed.len();
        assert_eq!(removed.len(), mine.len(), "clean left some of {mine:?}");
    }
    println!("tour killed {runs} times: {left} segment(s) left, {cleaned} removed by clean");
}

//! The spawn layer with real processes: return values, panics, exit codes,
//! signals, daemons, fork refusal, handles passed to children, no zombies.
//!
//! No setup line is needed here: shmkit's constructor runs the child's
//! function before the test harness's `main` would start.

mod common;

use common::is_dead;
use shmkit::error::ProcessError;

use common::{WATCHDOG, unique};
use shmkit::process::{self, Builder, Process};
use shmkit::{Array, Error, Message, Value};
use std::time::{Duration, Instant};

/// Joins under the watchdog: a hung child fails the test instead of hanging it.
fn join<R: Message>(p: shmkit::Result<Process<R>>) -> shmkit::Result<R> {
    let mut p = p?;
    match p.join_timeout(WATCHDOG)? {
        Some(r) => Ok(r),
        None => {
            let _ = p.kill();
            panic!(
                "watchdog: child {} did not end within {WATCHDOG:?}",
                p.pid()
            );
        }
    }
}

fn wait_code<R: Message>(p: &Process<R>) -> i32 {
    p.wait_timeout(WATCHDOG)
        .unwrap()
        .unwrap_or_else(|| panic!("watchdog: child {} still runs", p.pid()))
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !ok() {
        assert!(Instant::now() < deadline, "watchdog: waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn describe(name: String) -> (String, u32, String, Option<u32>, String) {
    let me = process::current_process();
    let parent = process::parent_process().map(|p| p.pid);
    // A grandchild, to show nested names.
    let nested = join(process::spawn(|(): ()| process::current_process().name, ())).unwrap();
    (format!("hello {name}"), me.pid, me.name, parent, nested)
}

#[test]
fn spawn_returns_the_value_and_the_child_knows_who_it_is() {
    let p = process::spawn(describe, "bob".to_string()).unwrap();
    let pid = p.pid();
    let name = p.name().to_owned();
    assert!(name.starts_with("Process-"), "{name}");
    let (greeting, child_pid, child_name, parent, nested) = join(Ok(p)).unwrap();
    assert_eq!(greeting, "hello bob");
    assert_eq!(child_pid, pid);
    assert_ne!(child_pid, std::process::id());
    assert_eq!(child_name, name);
    assert_eq!(parent, Some(std::process::id()));
    assert_eq!(nested, format!("{name}:1"));
}

#[test]
fn named_children_and_large_return_values() {
    let p = Builder::new()
        .name("worker-7")
        .spawn(|n: u32| vec![n as u8; 1 << 20], 7)
        .unwrap();
    assert_eq!(p.name(), "worker-7");
    let v = join(Ok(p)).unwrap();
    assert_eq!(v.len(), 1 << 20);
    assert!(v.iter().all(|&b| b == 7));
}

fn explode(n: u32) -> u32 {
    if n > 0 {
        panic!("boom {n}");
    }
    n
}

#[test]
fn a_panic_comes_back_with_its_message_and_exit_code_1() {
    let p = process::spawn(explode, 7).unwrap();
    assert_eq!(wait_code(&p), 1);
    assert_eq!(p.exitcode(), Some(1));
    match join(Ok(p)) {
        Err(Error::Process(ProcessError::Panicked { message, name, .. })) => {
            assert_eq!(message, "boom 7");
            assert!(name.starts_with("Process-"));
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(join(process::spawn(explode, 0)).unwrap(), 0);
}

fn sleeper(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

#[test]
fn terminate_and_kill_give_negative_exit_codes() {
    for (signal, stop) in [
        (
            libc::SIGTERM,
            Process::terminate as fn(&Process<()>) -> shmkit::Result<()>,
        ),
        (libc::SIGKILL, Process::kill),
    ] {
        let p = process::spawn(sleeper, 60).unwrap();
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        assert!(process::active_children().iter().any(|c| c.pid == p.pid()));
        stop(&p).unwrap();
        assert_eq!(wait_code(&p), -signal);
        assert!(!p.is_alive());
        assert!(!process::active_children().iter().any(|c| c.pid == p.pid()));
        // Signalling an ended child is harmless: its pid is never reused
        // under us.
        p.kill().unwrap();
        match join(Ok(p)) {
            Err(Error::Process(ProcessError::Died { exitcode, .. })) => {
                assert_eq!(exitcode, -signal)
            }
            other => panic!("expected ProcessDied, got {other:?}"),
        }
    }
}

#[test]
fn a_child_that_exits_without_returning_is_an_error_not_a_hang() {
    let p = process::spawn(|code: i32| std::process::exit(code), 3).unwrap();
    match join::<()>(Ok(p)) {
        Err(Error::Process(ProcessError::Died { exitcode: 3, .. })) => {}
        other => panic!("expected ProcessDied with code 3, got {other:?}"),
    }
}

#[test]
fn join_timeout_returns_none_while_running_then_the_result_once() {
    let mut p = process::spawn(
        |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        },
        300,
    )
    .unwrap();
    assert_eq!(p.join_timeout(Duration::from_millis(1)).unwrap(), None);
    assert_eq!(p.join_timeout(WATCHDOG).unwrap(), Some(300));
    assert!(matches!(
        p.join_timeout(WATCHDOG),
        Err(Error::Process(ProcessError::AlreadyJoined { .. }))
    ));
}

#[test]
fn fork_is_refused_in_a_multithreaded_parent_and_works_in_a_single_threaded_one() {
    // The test harness runs this on a thread of its own.
    match Builder::new().fork(|| 1u32) {
        Err(Error::Process(ProcessError::ForkRefused { threads })) => assert!(threads >= 2),
        other => panic!("fork in a multithreaded process: {other:?}"),
    }
    // A spawned child runs its function before any thread exists.
    let forked = join(process::spawn(
        |x: u64| {
            let p = Builder::new().fork(move || (x * 2, process::current_process().name));
            let (v, name) = join(p).unwrap();
            let panicked = join(Builder::new().fork(|| -> u32 { panic!("forked boom") }));
            let panicked = matches!(panicked, Err(Error::Process(ProcessError::Panicked { message, .. })) if message == "forked boom");
            (v, name, panicked)
        },
        21,
    ))
    .unwrap();
    assert_eq!(forked.0, 42);
    assert!(forked.1.contains(":1"), "{}", forked.1);
    assert!(forked.2);
}

fn fill_quarter((array, quarter): (Array<u64>, usize)) -> usize {
    let n = array.len() / 4;
    let mut guard = array.lock().unwrap();
    for (i, x) in guard[quarter * n..(quarter + 1) * n].iter_mut().enumerate() {
        *x = ((quarter * n + i) as u64) * 3 + 1;
    }
    n
}

/// Four children each fill a quarter of `array`; the parent sees it whole.
fn fill_quarters_and_check(array: &Array<u64>) {
    let children: Vec<_> = (0..4)
        .map(|q| process::spawn(fill_quarter, (array.clone(), q)).unwrap())
        .collect();
    for c in children {
        assert_eq!(join(Ok(c)).unwrap(), 1 << 18);
    }
    let all = array.to_vec().unwrap();
    for (i, &x) in all.iter().enumerate() {
        assert_eq!(x, i as u64 * 3 + 1, "element {i}");
    }
}

#[test]
fn four_children_fill_quarters_of_one_named_array() {
    let array = Array::<u64>::builder()
        .name(unique("quarters"))
        .create(1 << 20)
        .unwrap();
    fill_quarters_and_check(&array);
}

#[test]
fn four_children_fill_quarters_of_one_anonymous_array() {
    // No name: the children inherit its descriptor.
    fill_quarters_and_check(&Array::<u64>::new(1 << 20).unwrap());
}

#[test]
fn a_value_handle_is_shared_not_copied() {
    let v = Value::builder()
        .name(unique("counter"))
        .create(5u64)
        .unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            process::spawn(
                |v: Value<u64>| {
                    for _ in 0..1000 {
                        v.fetch_add(1);
                    }
                },
                v.clone(),
            )
            .unwrap()
        })
        .collect();
    for c in children {
        join(Ok(c)).unwrap();
    }
    assert_eq!(v.load(), 3005);
}

#[test]
fn arguments_that_cannot_be_opened_in_the_child_are_a_typed_error() {
    let a = Array::<u64>::builder()
        .name(unique("gone"))
        .create(4)
        .unwrap();
    a.segment().unlink().unwrap();
    match join(process::spawn(|a: Array<u64>| a.len(), a)) {
        Err(Error::Encoding { reason, .. }) => assert!(reason.contains("no segment"), "{reason}"),
        other => panic!("expected an encoding error, got {other:?}"),
    }
}

#[test]
fn a_hundred_spawns_leave_no_zombie_and_nothing_in_dev_shm() {
    let tag = unique("hundred");
    let v = Value::builder().name(tag.clone()).create(0u64).unwrap();
    let mut pids = Vec::new();
    for i in 0..100u64 {
        let p = process::spawn(
            |(v, i): (Value<u64>, u64)| {
                v.fetch_add(i);
            },
            (v.clone(), i),
        )
        .unwrap();
        pids.push(p.pid());
        if i % 2 == 0 {
            join(Ok(p)).unwrap();
        }
        // Odd ones: the handle drops while the child may still run; the
        // reaper takes it.
    }
    wait_until("every child reaped", || {
        pids.iter().all(|&pid| {
            // Gone entirely: reaped (a zombie would still have /proc/<pid>).
            std::fs::metadata(format!("/proc/{pid}")).is_err() || !is_child_of_us(pid)
        })
    });
    assert_eq!(v.load(), (0..100).sum::<u64>());
    drop(v);
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(&tag))
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

/// Whether `pid` exists as a process whose parent is us (a reused pid of
/// someone else's does not count).
fn is_child_of_us(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_ascii_whitespace().nth(1)?.parse::<u32>().ok()
        })
        == Some(std::process::id())
}

/// Runs in a grandchild: publishes its pid, then sleeps until killed.
fn publish_and_sleep((pids, slot): (Array<u32>, usize)) {
    pids.set(slot, std::process::id()).unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

/// Runs in the middle process: starts a daemon and a non-daemon grandchild,
/// then sleeps until the supervisor kills it.
fn middle(pids: Array<u32>) {
    let _daemon = Builder::new()
        .daemon(true)
        .spawn(publish_and_sleep, (pids.clone(), 0))
        .unwrap();
    let _plain = Builder::new()
        .spawn(publish_and_sleep, (pids.clone(), 1))
        .unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

/// In a subreaper: waits (under the watchdog) for an adopted child `pid`
/// to end and reaps it; the signal that ended it, or 0.
fn reap_adopted(pid: u32) -> i32 {
    let mut status = 0;
    let deadline = Instant::now() + WATCHDOG;
    // SAFETY: waitpid with a valid out-pointer.
    while unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) } == 0 {
        assert!(
            Instant::now() < deadline,
            "watchdog: child {pid} still alive"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    if libc::WIFSIGNALED(status) {
        libc::WTERMSIG(status)
    } else {
        0
    }
}

/// Runs in the supervisor: a subreaper, so the orphans come to it and it can
/// reap them. Returns how the daemon ended and whether the other survived.
fn supervise(pids: Array<u32>) -> (i32, bool) {
    // SAFETY: prctl with an integer argument.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0);
    let m = process::spawn(middle, pids.clone()).unwrap();
    wait_until("both grandchildren started", || {
        pids.get(0).unwrap() != 0 && pids.get(1).unwrap() != 0
    });
    let (daemon, plain) = (pids.get(0).unwrap(), pids.get(1).unwrap());
    m.kill().unwrap();
    assert_eq!(wait_code(&m), -libc::SIGKILL);
    // The daemon was reparented to us and killed: reap it under a watchdog.
    let daemon_signal = reap_adopted(daemon);
    let plain_alive = !is_dead(plain);
    // SAFETY: plain is our (adopted) child; kill it, then reap it.
    unsafe { libc::kill(plain as i32, libc::SIGKILL) };
    reap_adopted(plain);
    (daemon_signal, plain_alive)
}

#[test]
fn a_daemon_dies_when_its_parent_is_killed_and_a_plain_child_does_not() {
    let pids = Array::<u32>::builder()
        .name(unique("daemon"))
        .create(2)
        .unwrap();
    let (daemon_signal, plain_alive) = join(process::spawn(supervise, pids.clone())).unwrap();
    assert_eq!(daemon_signal, libc::SIGKILL);
    assert!(
        plain_alive,
        "the non-daemon grandchild died with its parent"
    );
}

#[test]
fn a_leaked_spawn_variable_does_not_hijack_main() {
    if common::role().is_some() {
        // We are the re-executed test binary: main ran, the harness runs us.
        // SAFETY: this test process runs its one test on one thread
        // (--test-threads=1); nothing else reads the environment now.
        unsafe { shmkit::process::init() }; // not a child: returns at once
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_leaked_spawn_variable_does_not_hijack_main",
            "--exact",
            "--test-threads=1",
        ])
        .env("SHMKIT_TEST_ROLE", "leaked")
        .env("SHMKIT_SPAWN", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_ok(&mut child);
}

#[test]
fn a_garbage_start_request_is_refused_before_main_runs() {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a valid C string; the fd is owned by the File.
    let mut fake = unsafe {
        let fd = libc::memfd_create(c"shmkit-process".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        std::fs::File::from_raw_fd(fd)
    };
    fake.write_all(b"shmkitP\x01\x01\0\0\0\0\0\0\0\xff\xff\xff\xff\0\0\0\0garbage!")
        .unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--list"])
        .env("SHMKIT_SPAWN", "1")
        .stdin(std::process::Stdio::from(fake))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(": test"), "main ran: {stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unusable start request"), "{stderr}");
}

#[test]
fn cpu_count_follows_the_affinity_mask() {
    let pinned = join(process::spawn(
        |(): ()| {
            // SAFETY: cpu_set_t is plain data; we read our mask, keep only
            // its first CPU (whichever the runner allows), and set it.
            let allowed = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                assert_eq!(
                    libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set),
                    0
                );
                let allowed = libc::CPU_COUNT(&set) as usize;
                let first = (0..libc::CPU_SETSIZE as usize)
                    .find(|&c| libc::CPU_ISSET(c, &set))
                    .unwrap();
                let mut one: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(first, &mut one);
                assert_eq!(
                    libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one),
                    0
                );
                allowed
            };
            assert!(shmkit::cpu_count() <= allowed);
            shmkit::cpu_count()
        },
        (),
    ))
    .unwrap();
    assert_eq!(pinned, 1);
    assert!(shmkit::cpu_count() >= 1);
}

/// Runs in a grandchild: sleeps a little, then records that it finished.
fn finish_late((marks, slot): (Array<u32>, usize)) {
    std::thread::sleep(Duration::from_millis(300));
    marks.set(slot, std::process::id()).unwrap();
}

/// Runs in the middle process: a daemon that would sleep for two minutes
/// and a non-daemon that finishes after 300 ms; then returns at once, so
/// this process exits normally while both still run.
fn start_both_and_return(pids: Array<u32>) {
    let daemon = Builder::new()
        .daemon(true)
        .spawn(publish_and_sleep, (pids.clone(), 0))
        .unwrap();
    let plain = Builder::new()
        .spawn(finish_late, (pids.clone(), 1))
        .unwrap();
    wait_until("the daemon started", || pids.get(0).unwrap() != 0);
    // Handles forgotten, not dropped: a dropped running child goes to this
    // process's reaper thread, which could reap the daemon before the
    // supervisor sees how it ended. The exit hook works from the list of
    // children either way.
    std::mem::forget(daemon);
    std::mem::forget(plain);
}

/// Supervises a middle process that exits normally with a daemon and a
/// plain child running: returns (whether the plain child had finished when
/// the middle process ended, the signal that ended the daemon).
fn supervise_normal_exit(pids: Array<u32>) -> (bool, i32) {
    // SAFETY: prctl with an integer argument.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0);
    let m = process::spawn(start_both_and_return, pids.clone()).unwrap();
    assert_eq!(wait_code(&m), 0);
    let plain_finished = pids.get(1).unwrap() != 0;
    let daemon = pids.get(0).unwrap();
    let signal = reap_adopted(daemon);
    (plain_finished, signal)
}

/// Python's exit handler: at a normal exit the daemons are terminated and
/// the non-daemon children joined.
#[test]
fn a_normal_exit_joins_plain_children_and_terminates_daemons() {
    let pids = Array::<u32>::builder()
        .name(unique("atexit"))
        .create(2)
        .unwrap();
    let (plain_finished, daemon_signal) =
        join(process::spawn(supervise_normal_exit, pids.clone())).unwrap();
    assert!(
        plain_finished,
        "the parent exited before its non-daemon child finished"
    );
    assert_eq!(daemon_signal, libc::SIGTERM);
}

/// Runs in the middle process: starts a daemon from a thread that then ends
/// (PR_SET_PDEATHSIG alone would kill the daemon right then), checks the
/// daemon still runs, reports that in slot 1 (1 = alive), and sleeps.
fn daemon_from_a_thread(pids: Array<u32>) {
    let p = pids.clone();
    let handle = std::thread::spawn(move || {
        Builder::new()
            .daemon(true)
            .spawn(publish_and_sleep, (p, 0))
            .unwrap()
    })
    .join()
    .unwrap();
    wait_until("the daemon started", || pids.get(0).unwrap() != 0);
    std::thread::sleep(Duration::from_millis(200));
    let alive = handle.is_alive();
    pids.set(1, if alive { 1 } else { 2 }).unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

fn supervise_thread_daemon(pids: Array<u32>) -> (u32, i32) {
    // SAFETY: prctl with an integer argument.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0);
    let m = process::spawn(daemon_from_a_thread, pids.clone()).unwrap();
    wait_until("the middle process checked its daemon", || {
        pids.get(1).unwrap() != 0
    });
    let alive_after_thread = pids.get(1).unwrap();
    let daemon = pids.get(0).unwrap();
    m.kill().unwrap();
    assert_eq!(wait_code(&m), -libc::SIGKILL);
    let signal = reap_adopted(daemon);
    (alive_after_thread, signal)
}

/// A daemon lives as long as its parent *process*, whichever thread
/// started it: it survives that thread's end and dies with the process.
#[test]
fn a_daemon_started_from_a_thread_outlives_the_thread_not_the_process() {
    let pids = Array::<u32>::builder()
        .name(unique("thread-daemon"))
        .create(2)
        .unwrap();
    let (alive_after_thread, signal) =
        join(process::spawn(supervise_thread_daemon, pids.clone())).unwrap();
    assert_eq!(
        alive_after_thread, 1,
        "the daemon died with the thread that started it"
    );
    assert_eq!(signal, libc::SIGKILL);
}

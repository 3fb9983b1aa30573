//! Test helpers: re-execute this test binary as a child process with a role,
//! wait for children under a watchdog, and make unique segment names.
//!
//! A test that needs children starts with
//! `if let Some(role) = common::role() { return child(&role) }`
//! and spawns itself with `common::spawn("test_name", "role", &[...])`.
#![allow(dead_code)]

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const ROLE: &str = "SHMKIT_TEST_ROLE";

/// Generous: a watchdog catches hangs, it does not measure speed.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// The role this process plays, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// An environment variable a parent passed to its child.
pub fn arg(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("child needs env {key}"))
}

/// Starts this test binary again, running only `test` in the role `role`.
pub fn spawn(test: &str, role: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// Waits for `child`, killing it and failing the test if it outlives the
/// watchdog.
pub fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "watchdog: child {} still running after {WATCHDOG:?}",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits for `child` and asserts it exited with status 0 having really run
/// its test (a mistyped test name would run nothing and still exit 0).
pub fn wait_ok(child: &mut Child) {
    use std::io::Read;
    let st = wait(child);
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    assert!(st.success(), "child {} failed: {st:?}\n{out}", child.id());
    assert!(
        out.contains("1 passed"),
        "child {} ran no test (wrong test name?):\n{out}",
        child.id()
    );
}

/// [`wait_ok`] for every child.
pub fn wait_all_ok(children: Vec<Child>) {
    for mut c in children {
        wait_ok(&mut c);
    }
}

/// Polls `cond` until it holds, failing the test after the watchdog.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !cond() {
        assert!(Instant::now() < deadline, "watchdog: {what} never happened");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A segment name unique to this process and call.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "shmkit-test-{}-{}-{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Kills `child` with SIGKILL and reaps it.
pub fn sigkill(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let st = wait(child);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL));
}

/// Aborts the whole test process if it is still alive after [`WATCHDOG`]:
/// for tests whose blocking calls take no timeout. Dropping it disarms it.
pub struct Watchdog {
    done: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

/// What the test under a watchdog is doing now ([`phase`]), for the
/// watchdog's message.
static PHASE: std::sync::Mutex<&'static str> = std::sync::Mutex::new("");

/// Records what the test does now: a watchdog that fires names it. (Its
/// message goes to the process's stderr directly, not through the test
/// harness's capture, which an abort would lose.)
#[allow(dead_code, reason = "each test binary compiles its own copy of common")]
pub fn phase(what: &'static str) {
    *PHASE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = what;
}

pub fn watchdog(what: &'static str) -> Watchdog {
    let done = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let d = done.clone();
    std::thread::spawn(move || {
        let (lock, cv) = &*d;
        let guard = lock.lock().unwrap();
        let (guard, _) = cv
            .wait_timeout_while(guard, WATCHDOG, |done| !*done)
            .unwrap();
        if !*guard {
            let phase = *PHASE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "watchdog: {what} still runs after {WATCHDOG:?} (phase: {phase:?}); aborting"
            );
            std::process::abort();
        }
    });
    Watchdog { done }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        *self.done.0.lock().unwrap() = true;
        self.done.1.notify_all();
    }
}

/// A cheap deterministic generator (xorshift64) for seeded test cases.
pub fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Whether `pid` is gone or a zombie (dead either way).
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'),
    }
}

/// A named segment's file under /dev/shm, opened for reading and writing,
/// with its original bytes: the hostile-input tests scribble on it and put
/// it back.
pub struct SegmentFile {
    pub file: std::fs::File,
    pub original: Vec<u8>,
}

impl SegmentFile {
    pub fn of(name: &str) -> Self {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/dev/shm/{name}"))
            .unwrap();
        let mut original = vec![0u8; file.metadata().unwrap().len() as usize];
        file.read_exact_at(&mut original, 0).unwrap();
        SegmentFile { file, original }
    }

    pub fn len(&self) -> u64 {
        self.original.len() as u64
    }

    /// Writes the original bytes back.
    pub fn restore(&self) {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&self.original, 0).unwrap();
    }
}

/// The hostile tests' queue: 8 slots of 64 bytes holding five 10-byte
/// messages; returns it (the segment lives while it does) and a registered
/// receiver (the sender is gone).
pub fn queue_of_five(
    name: &str,
) -> (
    shmkit::queue::Queue<shmkit::queue::Bytes>,
    shmkit::queue::Receiver<shmkit::queue::Bytes>,
) {
    let q = shmkit::queue::Queue::<shmkit::queue::Bytes>::builder()
        .name(name)
        .capacity(8)
        .max_message(64)
        .create()
        .unwrap();
    let (tx, rx) = (q.sender().unwrap(), q.receiver().unwrap());
    for i in 0..5u8 {
        tx.send_bytes(&[i; 10]).unwrap();
    }
    (q, rx)
}

/// The hostile tests' map: capacity 64 holding k -> k for k in 0..40.
pub fn map_of_forty(name: &str) -> shmkit::SharedMap<u64, u64> {
    let m = shmkit::SharedMap::<u64, u64>::builder()
        .name(name)
        .capacity(64)
        .create()
        .unwrap();
    for k in 0..40 {
        m.insert(k, k).unwrap();
    }
    m
}

/// Joins a shmkit child under the watchdog: its return value; a child
/// that failed, or still runs after [`WATCHDOG`] (then killed), fails the
/// test.
pub fn join_child<R: shmkit::Message>(mut p: shmkit::process::Process<R>) -> R {
    match p
        .join_timeout(WATCHDOG)
        .unwrap_or_else(|e| panic!("child failed: {e}"))
    {
        Some(r) => r,
        None => {
            let _ = p.kill();
            panic!("watchdog: child {} still runs", p.pid());
        }
    }
}

/// A consumer for [`exactly_once`]: how many it took, and whether in order.
pub type Consume = fn((shmkit::queue::Receiver<u64>, shmkit::Array<u8>)) -> (u64, bool);

/// Moves `producers × per_producer` tagged u64 items (`p << 32 | i`)
/// through `q` from producer processes to consumer processes and checks
/// them: `produce((tx, p))` sends producer `p`'s items; `consume((rx,
/// seen))` counts each item it receives in `seen` (index `p *
/// per_producer + i`) and returns how many it took and whether each
/// producer's items came in order. Asserts order, the total, and that
/// every item arrived exactly once.
pub fn exactly_once(
    q: &shmkit::queue::Queue<u64>,
    (producers, consumers, per_producer): (u64, usize, u64),
    produce: fn((shmkit::queue::Sender<u64>, u64)),
    consume: Consume,
) {
    let seen = shmkit::Array::<u8>::builder()
        .name(unique("seen"))
        .unlocked()
        .create((producers * per_producer) as usize)
        .unwrap();
    let consumers: Vec<_> = (0..consumers)
        .map(|_| shmkit::process::spawn(consume, (q.receiver().unwrap(), seen.clone())).unwrap())
        .collect();
    let producers_: Vec<_> = (0..producers)
        .map(|p| shmkit::process::spawn(produce, (q.sender().unwrap(), p)).unwrap())
        .collect();
    for p in producers_ {
        join_child(p);
    }
    let mut total = 0;
    for c in consumers {
        let (n, ordered) = join_child(c);
        assert!(ordered, "a consumer saw a producer's items out of order");
        total += n;
    }
    assert_eq!(total, producers * per_producer);
    let bad = seen.to_vec().unwrap().iter().filter(|&&c| c != 1).count();
    assert_eq!(bad, 0, "{bad} items not delivered exactly once");
}

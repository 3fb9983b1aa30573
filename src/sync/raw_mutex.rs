//! [`RawMutex`]: the 16 `#[repr(C)]` bytes of shmkit's robust lock in shared
//! memory, and its OS host (futex sleeps, `/proc` liveness) for the
//! algorithm in `lock_word`.

use crate::sync::atomic::AtomicU64;
use crate::sync::identity;
use crate::sync::lock_word::{self, Host, LockWords, Locked, Slept};
use crate::sync::wait::deadline_after;
use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

/// The lock placed in shared memory: shmkit's own robust lock
/// (`sync::lock_word`): an owner word naming the holder's thread and its
/// start time (with a "contended" bit), and a poison flag. It stores no
/// address, so nothing a peer writes here is ever followed.
///
/// Poisoning: when a holder dies, the next locker gets the lock with
/// [`OwnerDied`], and the poison flag stays set — every locker sees
/// `OwnerDied` — until a holder calls [`MutexGuard::mark_consistent`] after
/// repairing the data.
///
/// It is 16 bytes and does not pad itself to a cache line: a locked
/// [`Value`](crate::Value) or [`Mutex`] keeps its data right after it, in
/// the same cache line, so a locker that takes the line for the lock has the
/// data too (measured: a separate line cost glibc's mutex 14% of its
/// contended throughput). Structures whose other words are not guarded by
/// the lock pad it to a line themselves.
#[repr(C)]
pub struct RawMutex {
    pub(crate) words: LockWords,
}

/// Bytes after a [`RawMutex`] that keep it alone in its cache line, for
/// structures that need that.
pub(crate) const LINE_REST: usize = 64 - std::mem::size_of::<RawMutex>();

impl fmt::Debug for RawMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawMutex")
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

/// How a lock was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    Clean,
    Poisoned,
}

fn relocked() -> ! {
    panic!(
        "shmkit: this thread already holds this lock (locking it again would deadlock); \
         drop the guard first"
    )
}

/// The operating system as the lock algorithm's [`Host`]: shared futexes,
/// `/proc` liveness checks, and the thread's private record of held locks.
struct OsHost {
    addr: usize,
    me: u64,
    deadline: Option<Instant>,
}

impl OsHost {
    fn new(lock: &RawMutex, deadline: Option<Instant>) -> Self {
        OsHost {
            addr: lock as *const RawMutex as usize,
            me: identity::me(),

            deadline,
        }
    }
}

thread_local! {
    /// The last owner word this thread found alive, and when.
    static LAST_ALIVE: Cell<Option<(u64, Instant)>> = const { Cell::new(None) };
}

impl Host for OsHost {
    fn me(&self) -> u64 {
        self.me
    }
    fn may_hold(&self) -> bool {
        identity::may_hold(self.addr)
    }
    fn note(&self, held: bool) {
        if held {
            identity::note_locked(self.addr)
        } else {
            identity::note_unlocked(self.addr)
        }
    }
    /// Reads `/proc` at most once per [`lock_word::SLICE`] for the same live
    /// owner (per thread), so that loops of `try_lock` or short timeouts
    /// notice a death within a slice without reading `/proc` every time.
    fn alive(&self, owner: u64) -> bool {
        let now = Instant::now();
        if let Some((word, at)) = LAST_ALIVE.get()
            && word == owner
            && now.saturating_duration_since(at) < lock_word::SLICE
        {
            return true;
        }
        let alive = identity::alive(owner);
        if alive {
            LAST_ALIVE.set(Some((owner, now)));
        }
        alive
    }
    /// No spinning: a contended locker sleeps at once, as glibc's mutex
    /// does. Measured (benches/value.rs, 2 processes incrementing under
    /// the lock): sleeping at once gave 0.88x glibc's plain mutex, 2 rounds
    /// of spin (3 PAUSEs) 0.64x, 7 rounds (127 PAUSEs) 0.59x — a spinner
    /// that reads the owner word pulls the line away from the holder.
    fn spin(&mut self) -> bool {
        false
    }
    fn sleep(&mut self, owner: &AtomicU64, seen: u64) -> Slept {
        let mut slice = lock_word::SLICE;
        if let Some(d) = self.deadline {
            slice = slice.min(d.saturating_duration_since(Instant::now()));
        }
        sleep_on(owner, seen, slice)
    }
    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
    fn wake(&self, owner: &AtomicU64) {
        wake_on(owner)
    }
}

#[cfg(not(loom))]
fn sleep_on(owner: &AtomicU64, seen: u64, slice: Duration) -> Slept {
    // The kernel compares the low half (see `lock_word`).
    match crate::sys::futex::wait_low_half(owner, seen as u32, Some(slice)) {
        crate::sys::futex::WaitResult::TimedOut => Slept::SliceEnded,
        _ => Slept::Woken,
    }
}

#[cfg(not(loom))]
fn wake_on(owner: &AtomicU64) {
    crate::sys::futex::wake_low_half(owner, 1);
}

// Under loom only the algorithm's own tests run (with their own host); the
// real host still has to build.
#[cfg(loom)]
fn sleep_on(_: &AtomicU64, _: u64, _: Duration) -> Slept {
    std::thread::yield_now();
    Slept::SliceEnded
}

#[cfg(loom)]
fn wake_on(_: &AtomicU64) {}

impl RawMutex {
    /// Initialises the mutex in place: free and clean.
    ///
    /// # Safety
    /// `this` must be valid for writes and not in use by any thread or process.
    pub(crate) unsafe fn init(this: *mut RawMutex) -> std::io::Result<()> {
        // SAFETY: forwarded to the caller; all-zero is the free, clean state
        // of every field (atomics and padding).
        unsafe { std::ptr::write_bytes(this, 0, 1) };
        Ok(())
    }

    fn acquired(l: Locked) -> Option<Acquired> {
        match l {
            Locked::Clean => Some(Acquired::Clean),
            Locked::Poisoned => Some(Acquired::Poisoned),
            Locked::Busy => None,
            Locked::Relock => relocked(),
        }
    }

    /// The OS host for a lock call on the calling thread, without deadline.
    #[cfg(feature = "async")]
    pub(crate) fn host(&self) -> impl Host {
        OsHost::new(self, None)
    }

    /// Blocks until acquired: spins briefly, then sleeps on the owner word
    /// in slices of [`lock_word::SLICE`], checking after each that the holder
    /// lives (a dead or garbage holder is taken over: [`Acquired::Poisoned`]).
    ///
    /// # Panics
    /// If this thread already holds the lock.
    pub(crate) fn lock(&self) -> Acquired {
        let mut host = OsHost::new(self, None);
        Self::acquired(self.words.lock(&mut host)).expect("a lock without deadline returned busy")
    }

    /// Acquires if free (or if its holder is dead: then poisoned).
    pub(crate) fn try_lock(&self) -> Option<Acquired> {
        let mut host = OsHost::new(self, None);
        match self.words.try_lock(&mut host) {
            // This thread holds it: for try_lock that is just "busy", as in std.
            Locked::Relock => None,
            l => Self::acquired(l),
        }
    }

    /// Blocks for at most `timeout` (monotonic clock).
    ///
    /// # Panics
    /// If this thread already holds the lock.
    pub(crate) fn lock_timeout(&self, timeout: Duration) -> Option<Acquired> {
        let mut host = OsHost::new(self, deadline_after(timeout));
        Self::acquired(self.words.lock(&mut host))
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// The calling thread must hold it.
    pub(crate) unsafe fn unlock(&self) {
        self.words.unlock(&OsHost::new(self, None));
    }

    /// Whether a holder died and nobody has marked the data consistent since.
    pub fn is_poisoned(&self) -> bool {
        self.words.is_poisoned()
    }

    /// Clears the poison flag.
    ///
    /// # Safety
    /// The calling thread must hold the lock.
    pub(crate) unsafe fn clear_poison(&self) {
        self.words.clear_poison();
    }
}

/// A lock's state read from outside (the CLI), from its 16 bytes at the
/// start of a control block: (owner identity word or 0, poisoned).
pub(crate) fn state_from_bytes(b: &[u8; 16]) -> (u64, bool) {
    let owner = u64::from_ne_bytes(b[0..8].try_into().expect("8 bytes"));
    let poisoned = u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes")) != 0;
    (owner & !lock_word::CONTENDED, poisoned)
}

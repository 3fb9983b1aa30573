//! [`Mutex`]: a robust, process-shared lock (a process that dies holding it does
//! not lock the others out), and [`RawMutex`], the `#[repr(C)]` words it places
//! in shared memory.

use crate::error::{Error, Result};
use crate::region::{Kind, MIN_ALIGN, RegionOptions, Segment, Spec, TypeInfo};
use crate::sync::atomic::AtomicU64;
use crate::sync::identity;
use crate::sync::lock_word::{self, Host, LockWords, Locked, Slept};
use crate::sync::wait::deadline_after;
use bytemuck::Pod;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
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
    words: LockWords,
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

/// A held lock and the data it protects. Unlocks on drop. Not `Send`: the lock
/// names its holding thread, which must be the one to unlock it.
pub struct MutexGuard<'a, T: ?Sized> {
    lock: &'a RawMutex,
    data: *mut T,
    _not_send: PhantomData<*const ()>,
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// # Safety
    /// The calling thread must hold `lock`, and `data` must be valid for reads
    /// and writes (protected by `lock`) for `'a`.
    pub(crate) unsafe fn new(lock: &'a RawMutex, data: *mut T) -> Self {
        MutexGuard {
            lock,
            data,
            _not_send: PhantomData,
        }
    }

    /// Declares the protected data repaired after a holder died: later lockers
    /// no longer get [`OwnerDied`].
    pub fn mark_consistent(&mut self) {
        // SAFETY: a guard exists only while its thread holds the lock.
        unsafe { self.lock.clear_poison() }
    }

    pub(crate) fn raw(&self) -> &'a RawMutex {
        self.lock
    }

    /// Gives up the guard WITHOUT unlocking: the caller takes over the lock.
    pub(crate) fn into_parts(self) -> (&'a RawMutex, *mut T) {
        let parts = (self.lock, self.data);
        std::mem::forget(self);
        parts
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock, so no cooperating process writes `data`.
        unsafe { &*self.data }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock exclusively.
        unsafe { &mut *self.data }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard's thread holds the lock.
        unsafe { self.lock.unlock() }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The lock was acquired, but a process died holding it: the data may be half
/// updated. Take the guard with [`into_inner`](Self::into_inner), repair, and
/// call [`MutexGuard::mark_consistent`].
pub struct OwnerDied<G> {
    guard: G,
}

impl<G> OwnerDied<G> {
    pub(crate) fn new(guard: G) -> Self {
        OwnerDied { guard }
    }
    /// The guard: the lock is held.
    pub fn into_inner(self) -> G {
        self.guard
    }
    /// The guard, borrowed.
    pub fn get_ref(&self) -> &G {
        &self.guard
    }
    /// The guard, borrowed mutably.
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("OwnerDied { .. }")
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(
            "a process died while holding the lock; repair the data and call \
             mark_consistent() on the guard",
        )
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

impl<G> From<OwnerDied<G>> for Error {
    fn from(_: OwnerDied<G>) -> Error {
        Error::OwnerDied
    }
}

/// The result of a blocking lock: the guard, or the guard inside [`OwnerDied`].
pub type LockResult<G> = std::result::Result<G, OwnerDied<G>>;

/// Why `try_lock` or `lock_timeout` did not return a clean guard.
pub enum TryLockError<G> {
    /// Another holder has the lock (`try_lock`).
    WouldBlock,
    /// The timeout passed (`lock_timeout`).
    TimedOut,
    /// Acquired, but a holder died: see [`OwnerDied`].
    OwnerDied(OwnerDied<G>),
}

impl<G> fmt::Debug for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => f.pad("WouldBlock"),
            TryLockError::TimedOut => f.pad("TimedOut"),
            TryLockError::OwnerDied(_) => f.pad("OwnerDied(_)"),
        }
    }
}

impl<G> fmt::Display for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => f.pad("the lock is held by another thread or process"),
            TryLockError::TimedOut => f.pad("timed out waiting for the lock"),
            TryLockError::OwnerDied(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<G> std::error::Error for TryLockError<G> {}

/// Builds a guard result from how the lock was acquired.
pub(crate) fn finish<G>(a: Acquired, guard: G) -> LockResult<G> {
    match a {
        Acquired::Clean => Ok(guard),
        Acquired::Poisoned => Err(OwnerDied::new(guard)),
    }
}

fn finish_try<G>(
    a: Option<Acquired>,
    missing: TryLockError<G>,
    guard: impl FnOnce() -> G,
) -> std::result::Result<G, TryLockError<G>> {
    match a {
        None => Err(missing),
        Some(a) => finish(a, guard()).map_err(TryLockError::OwnerDied),
    }
}

/// The result of `try_lock` / `lock_timeout` on a guard over `T`.
pub type TryLockResult<'a, T> =
    std::result::Result<MutexGuard<'a, T>, TryLockError<MutexGuard<'a, T>>>;

/// The three ways to lock a `RawMutex` and guard `data` with it: the one
/// implementation behind Mutex, Value, Array and Condition.
impl RawMutex {
    /// Blocking lock, guarding `data`.
    ///
    /// # Safety
    /// `data` must be valid for reads and writes for `'a` and protected by
    /// this lock.
    pub(crate) unsafe fn guard_lock<'a, T: ?Sized>(
        &'a self,
        data: *mut T,
    ) -> LockResult<MutexGuard<'a, T>> {
        let a = self.lock();
        // SAFETY: we hold the lock; `data` is protected by it (caller).
        finish(a, unsafe { MutexGuard::new(self, data) })
    }

    /// `try_lock`, guarding `data`.
    ///
    /// # Safety
    /// As for [`guard_lock`](Self::guard_lock).
    pub(crate) unsafe fn guard_try_lock<'a, T: ?Sized>(
        &'a self,
        data: *mut T,
    ) -> TryLockResult<'a, T> {
        let a = self.try_lock();
        // SAFETY: called only when acquired; `data` as above.
        finish_try(a, TryLockError::WouldBlock, || unsafe {
            MutexGuard::new(self, data)
        })
    }

    /// `lock_timeout`, guarding `data`.
    ///
    /// # Safety
    /// As for [`guard_lock`](Self::guard_lock).
    pub(crate) unsafe fn guard_lock_timeout<'a, T: ?Sized>(
        &'a self,
        data: *mut T,
        timeout: Duration,
    ) -> TryLockResult<'a, T> {
        let a = self.lock_timeout(timeout);
        // SAFETY: called only when acquired; `data` as above.
        finish_try(a, TryLockError::TimedOut, || unsafe {
            MutexGuard::new(self, data)
        })
    }
}

/// A process-shared mutex protecting a `T: Pod` in shared memory, like
/// `std::sync::Mutex`. A holder's death is reported to the next locker with
/// [`OwnerDied`] instead of locking everybody out.
///
/// Cloning the handle is cheap (the mapping is shared); each process that opens
/// it by name maps it once per `open`.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), shmkit::Error> {
/// let m = shmkit::sync::Mutex::new(0u64)?;
/// *m.lock()? += 1;
/// assert_eq!(*m.lock()?, 1);
/// # Ok(()) }
/// ```
pub struct Mutex<T> {
    seg: Arc<Segment>,
    _t: PhantomData<T>,
}

/// Python's `multiprocessing.Lock`: a mutex that protects nothing but itself.
pub type Lock = Mutex<()>;

impl<T> Clone for Mutex<T> {
    fn clone(&self) -> Self {
        Mutex {
            seg: self.seg.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("segment", &self.seg.id())
            .finish()
    }
}

/// Builder for [`Mutex`]: region options, then `create`, `open` or
/// `open_or_create`.
#[derive(Debug)]
pub struct MutexBuilder<T> {
    opts: RegionOptions,
    _t: PhantomData<T>,
}

pub(crate) fn spec_of<C, T>(kind: Kind, flags: u32, opts: &RegionOptions) -> Spec {
    Spec {
        kind,
        flags,
        ty: match &opts.tag {
            Some(tag) => TypeInfo::tagged::<T>(tag),
            None => TypeInfo::of::<T>(),
        },
        control_size: std::mem::size_of::<C>() as u64,
        control_align: std::mem::align_of::<C>() as u64,
        data_align: MIN_ALIGN,
    }
}

/// The spec of a region holding one value guarded by a [`RawMutex`] that
/// ends its control block (`control_size` bytes, the lock's words last):
/// the value follows the lock in the same cache line (up to 48 bytes of it).
pub(crate) fn packed_spec_of<T>(
    kind: Kind,
    flags: u32,
    opts: &RegionOptions,
    control_size: usize,
) -> Spec {
    Spec {
        control_size: control_size as u64,
        control_align: MIN_ALIGN,
        data_align: 8,
        ..spec_of::<(), T>(kind, flags, opts)
    }
}

pub(crate) fn init_mutex(control: *mut u8) -> Result<()> {
    // SAFETY: `control` is the unpublished control block, sized and aligned for
    // a RawMutex by the spec.
    unsafe { RawMutex::init(control.cast()) }.map_err(|e| Error::Io {
        op: "mutex init",
        name: String::new(),
        source: e,
    })
}

impl<T: Pod> MutexBuilder<T> {
    region_setters!();

    fn spec(&self) -> Spec {
        packed_spec_of::<T>(Kind::Mutex, 0, &self.opts, std::mem::size_of::<RawMutex>())
    }

    /// Creates the mutex holding `value`.
    ///
    /// # Errors
    /// As for any region: [`Error::AlreadyExists`] if the name is taken, [`Error::InvalidName`] for
    /// a bad name, [`Error::NoSpace`] if /dev/shm (or the file's filesystem) is too small,
    /// [`Error::PermissionDenied`] or [`Error::Io`] if the OS refuses.
    pub fn create(self, value: T) -> Result<Mutex<T>> {
        let seg = Segment::create(&self.opts, &self.spec(), 1, |c, d| {
            init_mutex(c)?;
            // SAFETY: `d` is the unpublished data area, sized and aligned for one T.
            unsafe { d.cast::<T>().write(value) };
            Ok(())
        })?;
        Ok(Mutex::from_segment(seg))
    }

    /// Opens an existing named mutex, checking its type.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no segment has the name; [`Error::InvalidName`] for a bad name or
    /// none (open needs a name or a path); [`Error::KindMismatch`] if it is not a mutex,
    /// [`Error::TypeMismatch`] if it holds another type; and the other open errors of any region
    /// ([`Error::NotInitialized`], [`Error::ForeignOwner`], [`Error::Truncated`], ...).
    pub fn open(self) -> Result<Mutex<T>> {
        Ok(Mutex::from_segment(Segment::open(
            &self.opts,
            &self.spec(),
            Some(1),
        )?))
    }

    /// Opens the mutex, creating it with `value` if it does not exist.
    ///
    /// # Errors
    /// The errors of [`create`](Self::create) and of [`open`](Self::open);
    /// [`Error::NotInitialized`] if the name keeps vanishing between the create and the open (8
    /// tries).
    pub fn open_or_create(self, value: T) -> Result<Mutex<T>> {
        let (seg, _) = Segment::open_or_create(&self.opts, &self.spec(), 1, |c, d| {
            init_mutex(c)?;
            // SAFETY: as in `create`.
            unsafe { d.cast::<T>().write(value) };
            Ok(())
        })?;
        Ok(Mutex::from_segment(seg))
    }
}

impl<T: Pod> Mutex<T> {
    /// A new anonymous mutex (shared with children by `fork`).
    ///
    /// # Errors
    /// [`Error::Io`] if the OS refuses the memory (`memfd_create`, `ftruncate`, `mmap`).
    pub fn new(value: T) -> Result<Self> {
        Self::builder().create(value)
    }

    /// A builder for named, file-backed or otherwise configured mutexes.
    #[must_use]
    pub fn builder() -> MutexBuilder<T> {
        MutexBuilder {
            opts: RegionOptions::default(),
            _t: PhantomData,
        }
    }

    /// Opens the named mutex `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no segment has the name; [`Error::InvalidName`] for a bad name;
    /// [`Error::KindMismatch`] if it is not a mutex, [`Error::TypeMismatch`] if it holds another
    /// type; and the other open errors of any region ([`Error::NotInitialized`],
    /// [`Error::ForeignOwner`], [`Error::Truncated`], ...).
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    fn from_segment(seg: Segment) -> Self {
        Mutex {
            seg: Arc::new(seg),
            _t: PhantomData,
        }
    }

    pub(crate) fn raw(&self) -> &RawMutex {
        // SAFETY: the control block of a Kind::Mutex region is a RawMutex,
        // initialised before publication (checked by the header on open).
        unsafe { &*self.seg.control_ptr().cast::<RawMutex>() }
    }

    fn data(&self) -> *mut T {
        self.seg.data_ptr().cast()
    }

    /// Blocks until the lock is held.
    ///
    /// # Errors
    /// [`OwnerDied`] (carrying the guard) if a holder died and the data has not
    /// been marked consistent since.
    ///
    /// # Panics
    /// If this thread already holds the lock, or the lock word was overwritten.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        // SAFETY: the data is one T in the mapping, guarded by this mutex.
        unsafe { self.raw().guard_lock(self.data()) }
    }

    /// Takes the lock if it is free.
    ///
    /// # Errors
    /// [`TryLockError::WouldBlock`] if another thread or process holds the lock;
    /// [`TryLockError::OwnerDied`] carrying the guard if a holder died.
    pub fn try_lock(&self) -> TryLockResult<'_, T> {
        // SAFETY: as in `lock`.
        unsafe { self.raw().guard_try_lock(self.data()) }
    }

    /// Blocks for at most `timeout`, on the monotonic clock.
    ///
    /// # Errors
    /// [`TryLockError::TimedOut`] if the lock was not free within `timeout`;
    /// [`TryLockError::OwnerDied`] carrying the guard if a holder died.
    pub fn lock_timeout(&self, timeout: Duration) -> TryLockResult<'_, T> {
        // SAFETY: as in `lock`.
        unsafe { self.raw().guard_lock_timeout(self.data(), timeout) }
    }

    /// Whether a holder died and the data has not been marked consistent.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.raw().is_poisoned()
    }

    /// The segment behind the mutex (name, unlink, persist).
    #[must_use]
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn raw_mutex_layout() {
        assert_eq!(size_of::<RawMutex>(), 16);
        assert_eq!(align_of::<RawMutex>(), 8);
        assert_eq!(LINE_REST, 48);
        assert_eq!(offset_of!(RawMutex, words), 0);
        assert_eq!(size_of::<LockWords>(), 16);
        assert_eq!(offset_of!(LockWords, owner), 0);
        assert_eq!(offset_of!(LockWords, poisoned), 8);
    }

    /// The data follows the lock in its cache line.
    #[test]
    fn mutex_data_shares_the_lock_line() {
        let m = Mutex::new([1u64; 6]).unwrap();
        let lock = m.raw() as *const RawMutex as usize;
        assert_eq!(lock % 64, 0);
        assert_eq!(m.seg.data_ptr() as usize, lock + 16);
        assert_eq!(*m.lock().unwrap(), [1; 6]);
    }

    #[test]
    fn lock_try_timeout_in_one_process() {
        let m = Mutex::new(5u32).unwrap();
        {
            let mut g = m.lock().unwrap();
            *g += 1;
            let m2 = m.clone();
            std::thread::spawn(move || {
                assert!(matches!(m2.try_lock(), Err(TryLockError::WouldBlock)));
                assert!(matches!(
                    m2.lock_timeout(Duration::from_millis(10)),
                    Err(TryLockError::TimedOut)
                ));
            })
            .join()
            .unwrap();
        }
        assert_eq!(*m.try_lock().unwrap(), 6);
        assert!(!m.is_poisoned());
    }
}

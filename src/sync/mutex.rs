//! [`Mutex`]: a robust, process-shared lock (a process that dies holding it does
//! not lock the others out), and [`RawMutex`], the `#[repr(C)]` word it places
//! in shared memory.

use crate::error::{Error, Result};
use crate::region::{Kind, RegionOptions, Segment, Spec, TypeInfo};
use crate::sync::wait::Backoff;
use crate::sys::pthread::{self, Locked};
use bytemuck::Pod;
use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The lock word placed in shared memory: a robust, process-shared,
/// error-checking pthread mutex, plus a poison flag.
///
/// Poisoning: when a holder dies, the next locker gets the lock with
/// [`OwnerDied`]; the pthread mutex itself is made consistent at once (so it can
/// never become `ENOTRECOVERABLE`), and the `poisoned` flag stays set — every
/// locker sees `OwnerDied` — until a holder calls
/// [`MutexGuard::mark_consistent`] after repairing the data.
#[repr(C, align(64))]
pub struct RawMutex {
    poisoned: AtomicU32,
    _pad: u32,
    inner: UnsafeCell<libc::pthread_mutex_t>,
}

// The pthread mutex in `inner` is only touched through pthread calls, which are
// thread- and process-safe; `poisoned` is atomic.
// SAFETY: see above.
unsafe impl Sync for RawMutex {}
// SAFETY: a RawMutex is plain memory; moving it (before use) is fine.
unsafe impl Send for RawMutex {}

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

fn corrupted(e: std::io::Error) -> ! {
    panic!(
        "shmkit: the shared mutex failed with {e}: either this thread already holds it \
         (EDEADLK), or its memory was overwritten (EINVAL/ENOTRECOVERABLE); recreate the segment"
    )
}

impl RawMutex {
    /// Initialises the mutex in place.
    ///
    /// # Safety
    /// `this` must be valid for writes and not in use by any thread or process.
    pub(crate) unsafe fn init(this: *mut RawMutex) -> std::io::Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe {
            std::ptr::addr_of_mut!((*this).poisoned).write(AtomicU32::new(0));
            std::ptr::addr_of_mut!((*this)._pad).write(0);
            pthread::init(UnsafeCell::raw_get(std::ptr::addr_of!((*this).inner)))
        }
    }

    fn ptr(&self) -> *mut libc::pthread_mutex_t {
        self.inner.get()
    }

    fn acquired(&self, l: Locked) -> Acquired {
        if l == Locked::OwnerDied {
            self.poisoned.store(1, Ordering::Relaxed);
        }
        if self.poisoned.load(Ordering::Relaxed) != 0 {
            Acquired::Poisoned
        } else {
            Acquired::Clean
        }
    }

    /// Blocks until acquired. Spins briefly on `trylock` first (a robust mutex
    /// never spins in glibc, and a cross-CPU wake costs ~15 µs here).
    ///
    /// # Panics
    /// If this thread already holds the lock, or the lock word is corrupted.
    pub(crate) fn lock(&self) -> Acquired {
        let mut backoff = Backoff::new();
        loop {
            if let Some(a) = self.try_lock() {
                return a;
            }
            if !backoff.spin() {
                break;
            }
        }
        // SAFETY: the mutex was initialised by the region's creator before
        // publication and lives as long as &self.
        match unsafe { pthread::lock(self.ptr()) } {
            Ok(l @ (Locked::Yes | Locked::OwnerDied)) => self.acquired(l),
            Ok(other) => unreachable!("blocking lock returned {other:?}"),
            Err(e) => corrupted(e),
        }
    }

    /// Acquires if free.
    pub(crate) fn try_lock(&self) -> Option<Acquired> {
        // SAFETY: as in `lock`.
        match unsafe { pthread::try_lock(self.ptr()) } {
            Ok(l @ (Locked::Yes | Locked::OwnerDied)) => Some(self.acquired(l)),
            Ok(_) => None,
            // This thread holds it: for try_lock that is just "busy", as in std.
            Err(e) if e.raw_os_error() == Some(libc::EDEADLK) => None,
            Err(e) => corrupted(e),
        }
    }

    /// Blocks for at most `timeout` (monotonic clock).
    pub(crate) fn lock_timeout(&self, timeout: Duration) -> Option<Acquired> {
        if let Some(a) = self.try_lock() {
            return Some(a);
        }
        // SAFETY: as in `lock`.
        match unsafe { pthread::lock_timeout(self.ptr(), timeout) } {
            Ok(l @ (Locked::Yes | Locked::OwnerDied)) => Some(self.acquired(l)),
            Ok(_) => None,
            Err(e) => corrupted(e),
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// The calling thread must hold it.
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: forwarded to the caller.
        if let Err(e) = unsafe { pthread::unlock(self.ptr()) } {
            corrupted(e)
        }
    }

    /// Whether a holder died and nobody has marked the data consistent since.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed) != 0
    }

    /// Clears the poison flag.
    ///
    /// # Safety
    /// The calling thread must hold the lock.
    pub(crate) unsafe fn clear_poison(&self) {
        self.poisoned.store(0, Ordering::Relaxed);
    }
}

/// A held lock and the data it protects. Unlocks on drop. Not `Send`: a pthread
/// mutex must be unlocked by the thread that locked it.
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
    }
}

pub(crate) fn init_mutex(control: *mut u8) -> Result<()> {
    // SAFETY: `control` is the unpublished control block, sized and aligned for
    // a RawMutex by the spec.
    unsafe { RawMutex::init(control.cast()) }.map_err(|e| Error::Io {
        op: "pthread_mutex_init",
        name: String::new(),
        source: e,
    })
}

impl<T: Pod> MutexBuilder<T> {
    region_setters!();

    fn spec(&self) -> Spec {
        spec_of::<RawMutex, T>(Kind::Mutex, 0, &self.opts)
    }

    /// Creates the mutex holding `value`.
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
    pub fn open(self) -> Result<Mutex<T>> {
        Ok(Mutex::from_segment(Segment::open(
            &self.opts,
            &self.spec(),
            Some(1),
        )?))
    }

    /// Opens the mutex, creating it with `value` if it does not exist.
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
    pub fn new(value: T) -> Result<Self> {
        Self::builder().create(value)
    }

    /// A builder for named, file-backed or otherwise configured mutexes.
    pub fn builder() -> MutexBuilder<T> {
        MutexBuilder {
            opts: RegionOptions::default(),
            _t: PhantomData,
        }
    }

    /// Opens the named mutex `name`.
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
    pub fn try_lock(&self) -> TryLockResult<'_, T> {
        // SAFETY: as in `lock`.
        unsafe { self.raw().guard_try_lock(self.data()) }
    }

    /// Blocks for at most `timeout`, on the monotonic clock.
    pub fn lock_timeout(&self, timeout: Duration) -> TryLockResult<'_, T> {
        // SAFETY: as in `lock`.
        unsafe { self.raw().guard_lock_timeout(self.data(), timeout) }
    }

    /// Whether a holder died and the data has not been marked consistent.
    pub fn is_poisoned(&self) -> bool {
        self.raw().is_poisoned()
    }

    /// The segment behind the mutex (name, unlink, persist).
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
        assert_eq!(align_of::<RawMutex>(), 64);
        assert_eq!(size_of::<RawMutex>(), 64);
        assert_eq!(offset_of!(RawMutex, poisoned), 0);
        assert_eq!(offset_of!(RawMutex, inner), 8);
        assert!(size_of::<libc::pthread_mutex_t>() <= 56);
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

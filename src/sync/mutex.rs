//! [`Mutex`]: a robust, process-shared lock (a process that dies holding it does
//! not lock the others out), and [`RawMutex`], the `#[repr(C)]` words it places
//! in shared memory.

use crate::error::{Error, Result};
use crate::region::{Kind, MIN_ALIGN, RegionOptions, Segment, Spec, TypeInfo};
use bytemuck::Pod;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

pub use super::raw_mutex::RawMutex;
pub(crate) use super::raw_mutex::{Acquired, LINE_REST, state_from_bytes};

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
        source: std::sync::Arc::new(e),
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
    /// As for any region: [`RegionError::AlreadyExists`](crate::error::RegionError::AlreadyExists) if the name is taken, [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for
    /// a bad name, [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if /dev/shm (or the file's filesystem) is too small,
    /// [`RegionError::PermissionDenied`](crate::error::RegionError::PermissionDenied) or [`Error::Io`](crate::Error::Io) if the OS refuses.
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
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name; [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name or
    /// none (open needs a name or a path); [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a mutex,
    /// [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type; and the other open errors of any region
    /// ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized), [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner), [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(self) -> Result<Mutex<T>> {
        Ok(Mutex::from_segment(Segment::open(
            &self.opts,
            &self.spec(),
            Some(1),
        )?))
    }

    /// Opens a mutex from a descriptor inherited across `exec`: what a child
    /// started with [`spawn`](crate::process::spawn) does with an anonymous
    /// one passed as an argument (see [`Segment::inheritable_fd`](crate::region::Segment::inheritable_fd)).
    ///
    /// # Errors
    /// The checks of an open: [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a mutex, [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type;
    /// [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if it was never published;
    /// [`Error::Io`](crate::Error::Io) if `fstat` or `mmap` fails.
    pub fn from_fd(self, fd: std::os::fd::OwnedFd) -> Result<Mutex<T>> {
        Ok(Mutex::from_segment(Segment::from_fd(
            fd,
            &self.opts,
            &self.spec(),
            Some(1),
        )?))
    }

    /// Opens the mutex, creating it with `value` if it does not exist.
    ///
    /// # Errors
    /// The errors of [`create`](Self::create) and of [`open`](Self::open);
    /// [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if the name keeps vanishing between the create and the open (8
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
    /// [`Error::Io`](crate::Error::Io) if the OS refuses the memory (`memfd_create`, `ftruncate`, `mmap`).
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
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name; [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name;
    /// [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a mutex, [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another
    /// type; and the other open errors of any region ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner), [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
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

    pub(crate) fn data(&self) -> *mut T {
        self.seg.data_ptr().cast()
    }

    /// What keeps the mapping alive, for a future's registration.
    #[cfg(feature = "async")]
    pub(crate) fn keep(&self) -> Arc<dyn std::any::Any + Send + Sync> {
        self.seg.clone()
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
    use crate::sync::lock_word::LockWords;
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

impl<T: Pod> crate::region::handle::Travels for Mutex<T> {}

crate::region::handle::region_handle_archive!(Mutex<T: Pod>, |h| {
    crate::region::handle::reopen_with!(h, Mutex::builder())
});

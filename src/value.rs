//! [`Value<T>`]: one `T: Pod` in shared memory (Python's `multiprocessing.Value`).

use crate::atomic::AtomicInt;
use crate::error::Result;
use crate::region::{Kind, RegionOptions, Segment};
use crate::shared::{LockChoice, Shared};
use crate::sync::Lock;
use crate::sync::mutex::{LockResult, MutexGuard, TryLockResult};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// One `T: Pod` in shared memory, guarded by a robust lock (the default), by a
/// [`Lock`] you pass, or by nothing (raw).
///
/// For integers, the atomic operations ([`fetch_add`](Self::fetch_add), ...)
/// work whatever the lock choice. On a value created
/// [`unlocked`](ValueBuilder::unlocked) they are lock-free and cost what the
/// hardware costs; on a locked value each takes the lock, so that it never
/// races with a [`lock`](Self::lock) guard's plain `&mut T` in another thread
/// or process (the two are exclusive by construction).
///
/// # Truncation by a peer
/// A process that may open a named or file-backed segment can `ftruncate` it.
/// shmkit's SIGBUS handler then keeps this process alive: the first access to
/// a cut page replaces the whole cut range of this process's mapping with
/// private zero pages. From then on, a `&mut T` from [`lock`](Self::lock) (or a raw
/// pointer) points into those pages: reads give zeroes (or whatever this
/// process wrote since), writes are private to this process and lost to every
/// other process, and nothing faults. [`check`](Self::check) (and
/// [`Segment::check`]) returns [`RegionError::Truncated`](crate::error::RegionError::Truncated);
/// the operations that return `LockResult` cannot carry that error, so call
/// `check` after work that must not be lost. Recreate the object.
/// Anonymous (memfd) regions are sealed and cannot be shrunk. The lock's
/// own words on a cut page read as zero afterwards: a free, clean lock that
/// is private to this process.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), shmkit::Error> {
/// use shmkit::Value;
/// let counter = Value::new(0u64)?;          // Python: Value('l', 0)
/// counter.fetch_add(1);                      // atomic (takes the lock)
/// *counter.lock()? += 1;                     // under the lock
/// assert_eq!(counter.get()?, 2);
///
/// let hits = Value::<u64>::builder().unlocked().create(0)?; // lock=False
/// hits.fetch_add(1);                         // lock-free
/// assert_eq!(hits.as_atomic().load(std::sync::atomic::Ordering::Relaxed), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Value<T> {
    inner: Shared<T>,
}

/// Builder for [`Value`].
#[derive(Debug)]
pub struct ValueBuilder<T> {
    opts: RegionOptions,
    lock: LockChoice,
    _t: PhantomData<T>,
}

impl<T: Pod> ValueBuilder<T> {
    region_setters!();

    /// Without a lock (Python's `lock=False`): atomic operations and raw
    /// volatile reads and writes only; [`Value::lock`] then panics. By
    /// default a value has its own lock.
    #[must_use]
    pub fn unlocked(mut self) -> Self {
        self.lock = LockChoice::None;
        self
    }

    /// Guarded by `lock`, shared with other objects (Python's `lock=my_lock`).
    #[must_use]
    pub fn with_lock(mut self, lock: Lock) -> Self {
        self.lock = LockChoice::External(lock);
        self
    }

    /// Creates the value.
    ///
    /// # Errors
    /// As for any region: [`RegionError::AlreadyExists`](crate::error::RegionError::AlreadyExists) if the name is
    /// taken, [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name,
    /// [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if /dev/shm (or the file's filesystem) is too
    /// small, [`RegionError::PermissionDenied`](crate::error::RegionError::PermissionDenied) or
    /// [`Error::Io`](crate::Error::Io) if the OS refuses.
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) if the region is named but its
    /// [`with_lock`](Self::with_lock) lock is anonymous.
    pub fn create(self, value: T) -> Result<Value<T>> {
        let inner = Shared::create(&self.opts, Kind::Value, self.lock, 1, |p: *mut T| {
            // SAFETY: `p` is the unpublished data area of one T.
            unsafe { p.write(value) }
        })?;
        Ok(Value { inner })
    }

    /// Opens the named value, or creates it holding `value` if it does not
    /// exist; the flag says whether this call created it. Safe against
    /// concurrent callers: exactly one creates, the others wait for it.
    ///
    /// # Errors
    /// The errors of [`create`](Self::create) and of [`open`](Self::open);
    /// [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if the name keeps vanishing between
    /// the create and the open (8 tries).
    pub fn open_or_create(self, value: T) -> Result<(Value<T>, bool)> {
        let (inner, created) =
            Shared::open_or_create(&self.opts, Kind::Value, self.lock, 1, |p: *mut T| {
                // SAFETY: `p` is the unpublished data area of one T.
                unsafe { p.write(value) }
            })?;
        Ok((Value { inner }, created))
    }

    /// Opens an existing named value, checking its element type.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name or none (open needs a name
    /// or a path); [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a Value,
    /// [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type; and the other
    /// open errors of any region ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...). With an external lock, also
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) if that lock is anonymous,
    /// [`RegionError::Corrupted`](crate::error::RegionError::Corrupted) if the lock mode or lock name stored is
    /// impossible, and the errors of opening the lock.
    pub fn open(self) -> Result<Value<T>> {
        Ok(Value {
            inner: Shared::open(&self.opts, Kind::Value, Some(1))?,
        })
    }

    /// Opens a value from a descriptor inherited across `exec`
    /// (see [`Segment::inheritable_fd`]).
    ///
    /// # Errors
    /// The checks of an open: [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a
    /// Value, [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type;
    /// [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if it was never published;
    /// [`Error::Io`](crate::Error::Io) if `fstat` or `mmap` fails. With an external lock, also
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) if that lock is anonymous,
    /// [`RegionError::Corrupted`](crate::error::RegionError::Corrupted) if the lock mode or lock name stored is
    /// impossible, and the errors of opening the lock.
    pub fn from_fd(self, fd: OwnedFd) -> Result<Value<T>> {
        Ok(Value {
            inner: Shared::from_fd(fd, &self.opts, Kind::Value, Some(1))?,
        })
    }
}

impl<T: Pod> Value<T> {
    pub(crate) fn shared(&self) -> &Shared<T> {
        &self.inner
    }

    /// A new anonymous value with its own lock, shared with children by `fork`.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the OS refuses the memory (`memfd_create`, `ftruncate`,
    /// `mmap`).
    pub fn new(value: T) -> Result<Self> {
        Self::builder().create(value)
    }

    /// A builder for named, raw, externally locked or otherwise configured values.
    #[must_use]
    pub fn builder() -> ValueBuilder<T> {
        ValueBuilder {
            opts: RegionOptions::default(),
            lock: LockChoice::Own,
            _t: PhantomData,
        }
    }

    /// Opens the named value `name`.
    ///
    /// # Errors
    /// [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another
    /// type, [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a
    /// Value, and the other open errors of [`Segment`].
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    /// Whether the value has a lock (its own or an external one).
    #[must_use]
    pub fn has_lock(&self) -> bool {
        self.inner.raw_lock().is_some()
    }

    /// Locks and gives `&mut T`.
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) with the guard if a holder died.
    ///
    /// # Panics
    /// If the value has no lock.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        // SAFETY: the lock guards the data.
        unsafe { self.inner.expect_lock().guard_lock(self.inner.data()) }
    }

    /// Locks if free.
    ///
    /// # Errors
    /// [`TryLockError::WouldBlock`](crate::sync::TryLockError::WouldBlock) if another thread or
    /// process holds the lock; [`TryLockError::OwnerDied`](crate::sync::TryLockError::OwnerDied)
    /// carrying the guard if a holder died.
    ///
    /// # Panics
    /// If the value has no lock.
    pub fn try_lock(&self) -> TryLockResult<'_, T> {
        // SAFETY: as in `lock`.
        unsafe { self.inner.expect_lock().guard_try_lock(self.inner.data()) }
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`TryLockError::TimedOut`](crate::sync::TryLockError::TimedOut) if the lock was not free
    /// within `timeout`; [`TryLockError::OwnerDied`](crate::sync::TryLockError::OwnerDied) carrying
    /// the guard if a holder died.
    ///
    /// # Panics
    /// If the value has no lock.
    pub fn lock_timeout(&self, timeout: Duration) -> TryLockResult<'_, T> {
        // SAFETY: as in `lock`.
        unsafe {
            self.inner
                .expect_lock()
                .guard_lock_timeout(self.inner.data(), timeout)
        }
    }

    /// Applies `f` under the lock (or, for a raw value, unsynchronised).
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying `f`'s result if a holder
    /// died (the update was still made; the lock stays poisoned).
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> LockResult<R> {
        if self.inner.raw_lock().is_none() {
            // SAFETY: a raw value is unsynchronised by the user's choice: the
            // copy may tear, but any bit pattern is a valid T (Pod).
            let mut v = unsafe { self.inner.data().read_volatile() };
            let r = f(&mut v);
            // SAFETY: as above.
            unsafe { self.inner.data().write_volatile(v) };
            return Ok(r);
        }
        match self.lock() {
            Ok(mut g) => Ok(f(&mut g)),
            Err(e) => Err(crate::sync::OwnerDied::new(f(&mut e.into_inner()))),
        }
    }

    /// A copy of the value, read under the lock (raw: unsynchronised, may tear
    /// for types wider than a machine word).
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying the copy if a holder of the lock died (the
    /// work was done; the lock stays poisoned). Never for a raw (unlocked) one.
    pub fn get(&self) -> LockResult<T> {
        self.update(|v| *v)
    }

    /// Replaces the value, under the lock (raw: unsynchronised).
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying `()` if a holder of the lock died (the work
    /// was done; the lock stays poisoned). Never for a raw (unlocked) one.
    pub fn set(&self, value: T) -> LockResult<()> {
        self.update(|v| *v = value)
    }

    /// The value's address in this process's mapping, for users who
    /// synchronise themselves.
    #[must_use]
    pub fn as_ptr(&self) -> *mut T {
        self.inner.data()
    }

    /// The segment behind the value (name, unlink, persist, descriptor).
    #[must_use]
    pub fn segment(&self) -> &Segment {
        self.inner.segment()
    }

    /// `Err(`[`RegionError::Truncated`](crate::error::RegionError::Truncated)`)` once another
    /// process has shrunk this value's segment and this process has touched a
    /// cut page (see *Truncation by a peer* above); `Ok` otherwise. One atomic
    /// load.
    ///
    /// # Errors
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated) with the segment's name,
    /// the size it needs and the size it has.
    pub fn check(&self) -> Result<()> {
        self.inner.segment().check()
    }
}

impl<T: AtomicInt> Value<T> {
    /// The value as a std atomic (`&AtomicU64` for `u64`, ...), for any
    /// operation and ordering, lock-free.
    ///
    /// # Panics
    /// If the value has a lock (the default): a `&mut T` from
    /// [`lock`](Self::lock) and a lock-free atomic on the same memory would
    /// race. Create it [`unlocked`](ValueBuilder::unlocked) (Python's
    /// `lock=False`) for lock-free atomics; a locked value's atomic methods
    /// ([`fetch_add`](Self::fetch_add), ...) take its lock instead.
    #[must_use]
    pub fn as_atomic(&self) -> &T::Atomic {
        assert!(
            self.inner.raw_lock().is_none(),
            "shmkit: as_atomic() on a Value with a lock would race with lock(); \
             create the value with .unlocked() for lock-free atomics"
        );
        self.atomic_ref()
    }

    fn atomic_ref(&self) -> &T::Atomic {
        // SAFETY: the data is one T, aligned to 8 at least (its layout), in
        // a mapping that lives as long as `self`; T and its atomic have equal
        // layout and alignment.
        unsafe { T::atomic_from_ptr(self.inner.data()) }
    }

    /// Runs one atomic operation: lock-free on an unlocked value; under the
    /// value's lock otherwise, so that it never races with a
    /// [`lock`](Self::lock) guard's plain `&mut T` (the two modes exclude
    /// each other by construction). A poisoned lock does not stop it: the
    /// operation is atomic on its own.
    ///
    /// # Panics
    /// If this thread holds the value's lock (use the guard instead).
    fn atomically<R>(&self, op: impl FnOnce(&T::Atomic) -> R) -> R {
        match self.inner.raw_lock() {
            None => op(self.atomic_ref()),
            Some(lock) => {
                let _how = lock.lock();
                let r = op(self.atomic_ref());
                // SAFETY: this thread took the lock just above.
                unsafe { lock.unlock() };
                r
            }
        }
    }

    /// Atomic load (SeqCst).
    #[allow(clippy::must_use_candidate)] // a load may only touch the page (truncation probes)
    pub fn load(&self) -> T {
        self.atomically(|a| T::load(a, Ordering::SeqCst))
    }
    /// Atomic store (SeqCst).
    pub fn store(&self, v: T) {
        self.atomically(|a| T::store(a, v, Ordering::SeqCst))
    }
    /// Atomic swap (SeqCst); returns the previous value.
    pub fn swap(&self, v: T) -> T {
        self.atomically(|a| T::swap(a, v, Ordering::SeqCst))
    }
    /// Atomic wrapping add (SeqCst); returns the previous value.
    pub fn fetch_add(&self, v: T) -> T {
        self.atomically(|a| T::fetch_add(a, v, Ordering::SeqCst))
    }
    /// Atomic wrapping subtract (SeqCst); returns the previous value.
    pub fn fetch_sub(&self, v: T) -> T {
        self.atomically(|a| T::fetch_sub(a, v, Ordering::SeqCst))
    }
    /// Atomic and (SeqCst); returns the previous value.
    pub fn fetch_and(&self, v: T) -> T {
        self.atomically(|a| T::fetch_and(a, v, Ordering::SeqCst))
    }
    /// Atomic or (SeqCst); returns the previous value.
    pub fn fetch_or(&self, v: T) -> T {
        self.atomically(|a| T::fetch_or(a, v, Ordering::SeqCst))
    }
    /// Atomic xor (SeqCst); returns the previous value.
    pub fn fetch_xor(&self, v: T) -> T {
        self.atomically(|a| T::fetch_xor(a, v, Ordering::SeqCst))
    }
    /// Atomic max (SeqCst); returns the previous value.
    pub fn fetch_max(&self, v: T) -> T {
        self.atomically(|a| T::fetch_max(a, v, Ordering::SeqCst))
    }
    /// Atomic min (SeqCst); returns the previous value.
    pub fn fetch_min(&self, v: T) -> T {
        self.atomically(|a| T::fetch_min(a, v, Ordering::SeqCst))
    }
    /// Atomic compare-and-exchange (SeqCst): `Ok(previous)` if it was
    /// `current` and is now `new`, else `Err(actual)`.
    ///
    /// # Errors
    /// `Err` with the value found if it was not `current` (nothing stored).
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        self.atomically(|a| {
            T::compare_exchange(a, current, new, Ordering::SeqCst, Ordering::SeqCst)
        })
    }
}

impl<T: Pod> crate::region::handle::Travels for Value<T> {
    fn check_travel(&self) -> Result<()> {
        self.shared().check_travel()
    }
}

crate::region::handle::region_handle_archive!(Value<T: Pod>, |h| {
    crate::region::handle::reopen_with!(h, Value::builder())
});

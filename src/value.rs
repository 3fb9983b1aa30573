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
/// work whatever the lock choice and cost what the hardware costs.
///
///
/// # Truncation by a peer
/// A process that may open a named or file-backed segment can `ftruncate` it.
/// shmkit's SIGBUS handler then keeps this process alive: the first access to
/// a cut page replaces the whole cut range of this process's mapping with
/// private zero pages. From then on, a `&mut T` from [`lock`](Self::lock) (or a raw
/// pointer) points into those pages: reads give zeroes (or whatever this
/// process wrote since), writes are private to this process and lost to every
/// other process, and nothing faults. [`check`](Self::check) (and
/// [`Segment::check`]) returns [`Error::Truncated`](crate::Error::Truncated);
/// the operations that return `LockResult` cannot carry that error, so call
/// `check` after work that must not be lost. Recreate the object.
/// Anonymous (memfd) regions are sealed and cannot be shrunk. Not yet
/// survived: a cut that lands *during* a lock or unlock of a lock on a cut
/// page (glibc's robust mutex reads its list links from that page half way
/// through: SIGSEGV or a panic), and blocking waits of the `src/sync` locks
/// on a cut page; lock-free access (the atomics) and operations after the
/// cut are survived.
/// # Examples
/// ```
/// # fn main() -> Result<(), shmkit::Error> {
/// use shmkit::Value;
/// let counter = Value::new(0u64)?;          // Python: Value('l', 0)
/// counter.fetch_add(1);                      // lock-free
/// *counter.lock()? += 1;                     // under the lock
/// assert_eq!(counter.get()?, 2);
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
    pub fn with_lock(mut self, lock: Lock) -> Self {
        self.lock = LockChoice::External(lock);
        self
    }

    /// Creates the value.
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
    pub fn open_or_create(self, value: T) -> Result<(Value<T>, bool)> {
        let (inner, created) =
            Shared::open_or_create(&self.opts, Kind::Value, self.lock, 1, |p: *mut T| {
                // SAFETY: `p` is the unpublished data area of one T.
                unsafe { p.write(value) }
            })?;
        Ok((Value { inner }, created))
    }

    /// Opens an existing named value, checking its element type.
    pub fn open(self) -> Result<Value<T>> {
        Ok(Value {
            inner: Shared::open(&self.opts, Kind::Value, Some(1))?,
        })
    }

    /// Opens a value from a descriptor inherited across `exec`
    /// (see [`Segment::inheritable_fd`]).
    pub fn from_fd(self, fd: OwnedFd) -> Result<Value<T>> {
        Ok(Value {
            inner: Shared::from_fd(fd, &self.opts, Kind::Value, Some(1))?,
        })
    }
}

impl<T: Pod> Value<T> {
    /// A new anonymous value with its own lock, shared with children by `fork`.
    pub fn new(value: T) -> Result<Self> {
        Self::builder().create(value)
    }

    /// A builder for named, raw, externally locked or otherwise configured values.
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
    /// [`Error::TypeMismatch`](crate::Error::TypeMismatch) if it holds another
    /// type, [`Error::KindMismatch`](crate::Error::KindMismatch) if it is not a
    /// Value, and the other open errors of [`Segment`].
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    /// Whether the value has a lock (its own or an external one).
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
    /// # Panics
    /// If the value has no lock.
    pub fn try_lock(&self) -> TryLockResult<'_, T> {
        // SAFETY: as in `lock`.
        unsafe { self.inner.expect_lock().guard_try_lock(self.inner.data()) }
    }

    /// Locks, waiting at most `timeout`.
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
    pub fn get(&self) -> LockResult<T> {
        self.update(|v| *v)
    }

    /// Replaces the value, under the lock (raw: unsynchronised).
    pub fn set(&self, value: T) -> LockResult<()> {
        self.update(|v| *v = value)
    }

    /// The value's address in this process's mapping, for users who
    /// synchronise themselves.
    pub fn as_ptr(&self) -> *mut T {
        self.inner.data()
    }

    /// The segment behind the value (name, unlink, persist, descriptor).
    pub fn segment(&self) -> &Segment {
        self.inner.segment()
    }

    /// `Err(`[`Error::Truncated`](crate::Error::Truncated)`)` once another
    /// process has shrunk this value's segment and this process has touched a
    /// cut page (see *Truncation by a peer* above); `Ok` otherwise. One atomic
    /// load.
    ///
    /// # Errors
    /// [`Error::Truncated`](crate::Error::Truncated) with the segment's name,
    /// the size it needs and the size it has.
    pub fn check(&self) -> Result<()> {
        self.inner.segment().check()
    }
}

impl<T: AtomicInt> Value<T> {
    /// The value as a std atomic (`&AtomicU64` for `u64`, ...), for any
    /// operation and ordering. Lock-free, whatever the lock choice; do not mix
    /// with non-atomic access under the lock at the same time.
    pub fn as_atomic(&self) -> &T::Atomic {
        // SAFETY: the data is one T at a 64-byte-aligned offset in a mapping
        // that lives as long as `self`; T and its atomic have equal layout.
        unsafe { T::atomic_from_ptr(self.inner.data()) }
    }

    /// Atomic load (SeqCst).
    pub fn load(&self) -> T {
        T::load(self.as_atomic(), Ordering::SeqCst)
    }
    /// Atomic store (SeqCst).
    pub fn store(&self, v: T) {
        T::store(self.as_atomic(), v, Ordering::SeqCst)
    }
    /// Atomic swap (SeqCst); returns the previous value.
    pub fn swap(&self, v: T) -> T {
        T::swap(self.as_atomic(), v, Ordering::SeqCst)
    }
    /// Atomic wrapping add (SeqCst); returns the previous value.
    pub fn fetch_add(&self, v: T) -> T {
        T::fetch_add(self.as_atomic(), v, Ordering::SeqCst)
    }
    /// Atomic wrapping subtract (SeqCst); returns the previous value.
    pub fn fetch_sub(&self, v: T) -> T {
        T::fetch_sub(self.as_atomic(), v, Ordering::SeqCst)
    }
    /// Atomic and (SeqCst); returns the previous value.
    pub fn fetch_and(&self, v: T) -> T {
        T::fetch_and(self.as_atomic(), v, Ordering::SeqCst)
    }
    /// Atomic or (SeqCst); returns the previous value.
    pub fn fetch_or(&self, v: T) -> T {
        T::fetch_or(self.as_atomic(), v, Ordering::SeqCst)
    }
    /// Atomic xor (SeqCst); returns the previous value.
    pub fn fetch_xor(&self, v: T) -> T {
        T::fetch_xor(self.as_atomic(), v, Ordering::SeqCst)
    }
    /// Atomic max (SeqCst); returns the previous value.
    pub fn fetch_max(&self, v: T) -> T {
        T::fetch_max(self.as_atomic(), v, Ordering::SeqCst)
    }
    /// Atomic min (SeqCst); returns the previous value.
    pub fn fetch_min(&self, v: T) -> T {
        T::fetch_min(self.as_atomic(), v, Ordering::SeqCst)
    }
    /// Atomic compare-and-exchange (SeqCst): `Ok(previous)` if it was
    /// `current` and is now `new`, else `Err(actual)`.
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        T::compare_exchange(
            self.as_atomic(),
            current,
            new,
            Ordering::SeqCst,
            Ordering::SeqCst,
        )
    }
}

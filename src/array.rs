//! [`Array<T>`]: `len` elements of `T: Pod` in shared memory (Python's
//! `multiprocessing.Array`), read and written in place.

use crate::atomic::AtomicInt;
use crate::error::Result;
use crate::region::{Kind, RegionOptions, Segment};
use crate::shared::{LockChoice, Shared};
use crate::sync::Lock;
use crate::sync::mutex::{LockResult, MutexGuard, OwnerDied, TryLockResult};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// A fixed-length array of `T: Pod` in shared memory.
///
/// Zero-copy: [`lock`](Self::lock) gives a guard that derefs to `&mut [T]`
/// over the shared pages themselves — readers and writers work in place. Copies
/// in and out ([`copy_from_slice`](Self::copy_from_slice),
/// [`to_vec`](Self::to_vec)) exist for convenience. For integers, elements are
/// also reachable as atomics ([`atomic`](Self::atomic)); for users who
/// synchronise themselves there are raw pointers and `_unchecked` views.
///
///
/// # Truncation by a peer
/// A process that may open a named or file-backed segment can `ftruncate` it.
/// shmkit's SIGBUS handler then keeps this process alive: the first access to
/// a cut page replaces the whole cut range of this process's mapping with
/// private zero pages. From then on, the elements of a `&mut [T]` from
/// [`lock`](Self::lock) (or an `_unchecked` view) that lie in the cut range are
/// those pages: reads give zeroes (or whatever this
/// process wrote since), writes are private to this process and lost to every
/// other process, and nothing faults. [`check`](Self::check) (and
/// [`Segment::check`]) returns [`RegionError::Truncated`](crate::error::RegionError::Truncated);
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
/// let a = shmkit::Array::<f64>::new(4)?;
/// a.lock()?.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
/// let sum: f64 = a.lock()?.iter().sum();   // read in place, under the lock
/// assert_eq!(sum, 10.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Array<T> {
    inner: Shared<T>,
}

/// Builder for [`Array`].
#[derive(Debug)]
pub struct ArrayBuilder<T> {
    opts: RegionOptions,
    lock: LockChoice,
    len: Option<u64>,
    _t: PhantomData<T>,
}

impl<T: Pod> ArrayBuilder<T> {
    region_setters!();

    /// Without a lock (Python's `lock=False`): atomic operations and raw
    /// volatile reads and writes only; [`Array::lock`] then panics. By
    /// default an array has its own lock.
    #[must_use]
    pub fn unlocked(mut self) -> Self {
        self.lock = LockChoice::None;
        self
    }

    /// Guarded by `lock`, shared with other objects.
    #[must_use]
    pub fn with_lock(mut self, lock: Lock) -> Self {
        self.lock = LockChoice::External(lock);
        self
    }

    /// For `open`: require exactly `len` elements
    /// ([`RegionError::LengthMismatch`](crate::error::RegionError::LengthMismatch) otherwise).
    #[must_use]
    pub fn expect_len(mut self, len: usize) -> Self {
        self.len = Some(len as u64);
        self
    }

    /// Creates an array of `len` zeroed elements.
    ///
    /// # Errors
    /// As for any region: [`RegionError::AlreadyExists`](crate::error::RegionError::AlreadyExists) if the name is
    /// taken, [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name,
    /// [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if /dev/shm (or the file's filesystem) is too
    /// small, [`RegionError::PermissionDenied`](crate::error::RegionError::PermissionDenied) or
    /// [`Error::Io`](crate::Error::Io) if the OS refuses. [`RegionError::NoSpace`](crate::error::RegionError::NoSpace)
    /// also if `len` elements do not fit the address space.
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) if the region is named but its
    /// [`with_lock`](Self::with_lock) lock is anonymous.
    pub fn create(self, len: usize) -> Result<Array<T>> {
        let inner = Shared::create(&self.opts, Kind::Array, self.lock, len as u64, |_| {})?;
        Ok(Array { inner })
    }

    /// Creates an array holding a copy of `items`.
    ///
    /// # Errors
    /// As for any region: [`RegionError::AlreadyExists`](crate::error::RegionError::AlreadyExists) if the name is
    /// taken, [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name,
    /// [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if /dev/shm (or the file's filesystem) is too
    /// small, [`RegionError::PermissionDenied`](crate::error::RegionError::PermissionDenied) or
    /// [`Error::Io`](crate::Error::Io) if the OS refuses.
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) if the region is named but its
    /// [`with_lock`](Self::with_lock) lock is anonymous.
    pub fn create_from(self, items: &[T]) -> Result<Array<T>> {
        let inner = Shared::create(
            &self.opts,
            Kind::Array,
            self.lock,
            items.len() as u64,
            |p| {
                // SAFETY: `p` is the unpublished data area of items.len() Ts.
                unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), p, items.len()) }
            },
        )?;
        Ok(Array { inner })
    }

    /// Opens the named array, or creates it with `len` zeroed elements if it
    /// does not exist; the flag says whether this call created it. An existing
    /// array must have `len` elements.
    ///
    /// # Errors
    /// The errors of [`create`](Self::create) and of [`open`](Self::open);
    /// [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if the name keeps vanishing between
    /// the create and the open (8 tries). [`RegionError::LengthMismatch`](crate::error::RegionError::LengthMismatch)
    /// if the existing array does not have `len` elements.
    pub fn open_or_create(self, len: usize) -> Result<(Array<T>, bool)> {
        let (inner, created) =
            Shared::open_or_create(&self.opts, Kind::Array, self.lock, len as u64, |_| {})?;
        Ok((Array { inner }, created))
    }

    /// Opens an existing named array, checking its element type (and length,
    /// with [`expect_len`](Self::expect_len)).
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name or none (open needs a name
    /// or a path); [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not an Array,
    /// [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type,
    /// [`RegionError::LengthMismatch`](crate::error::RegionError::LengthMismatch) if its length differs from
    /// [`expect_len`](Self::expect_len); and the other open errors of any region
    /// ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...). With an external lock, also
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) if that lock is anonymous,
    /// [`RegionError::Corrupted`](crate::error::RegionError::Corrupted) if the lock mode or lock name stored is
    /// impossible, and the errors of opening the lock.
    pub fn open(self) -> Result<Array<T>> {
        Ok(Array {
            inner: Shared::open(&self.opts, Kind::Array, self.len)?,
        })
    }

    /// Opens an array from a descriptor inherited across `exec`.
    ///
    /// # Errors
    /// The checks of an open: [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not an
    /// Array, [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type,
    /// [`RegionError::LengthMismatch`](crate::error::RegionError::LengthMismatch) if its length differs from
    /// [`expect_len`](Self::expect_len); [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if
    /// it was never published; [`Error::Io`](crate::Error::Io) if `fstat` or `mmap` fails. With an
    /// external lock, also [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) if that lock is
    /// anonymous, [`RegionError::Corrupted`](crate::error::RegionError::Corrupted) if the lock mode or lock name
    /// stored is impossible, and the errors of opening the lock.
    pub fn from_fd(self, fd: OwnedFd) -> Result<Array<T>> {
        Ok(Array {
            inner: Shared::from_fd(fd, &self.opts, Kind::Array, self.len)?,
        })
    }
}

impl<T: Pod> Array<T> {
    pub(crate) fn shared(&self) -> &Shared<T> {
        &self.inner
    }

    /// A new anonymous array of `len` zeroed elements, with its own lock.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the OS refuses the memory (`memfd_create`, `ftruncate`,
    /// `mmap`). [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if `len` elements do not fit the address
    /// space.
    pub fn new(len: usize) -> Result<Self> {
        Self::builder().create(len)
    }

    /// A new anonymous array holding a copy of `items`.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the OS refuses the memory (`memfd_create`, `ftruncate`,
    /// `mmap`).
    pub fn from_slice(items: &[T]) -> Result<Self> {
        Self::builder().create_from(items)
    }

    /// A builder for named, raw, externally locked or otherwise configured arrays.
    #[must_use]
    pub fn builder() -> ArrayBuilder<T> {
        ArrayBuilder {
            opts: RegionOptions::default(),
            lock: LockChoice::Own,
            len: None,
            _t: PhantomData,
        }
    }

    /// Opens the named array `name`, whatever its length.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name;
    /// [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not an Array,
    /// [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type; and the other
    /// open errors of any region ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...). With an external lock, also
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) if that lock is anonymous,
    /// [`RegionError::Corrupted`](crate::error::RegionError::Corrupted) if the lock mode or lock name stored is
    /// impossible, and the errors of opening the lock.
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the array has no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the array has a lock.
    #[must_use]
    pub fn has_lock(&self) -> bool {
        self.inner.raw_lock().is_some()
    }

    fn slice_ptr(&self) -> *mut [T] {
        std::ptr::slice_from_raw_parts_mut(self.inner.data(), self.len())
    }

    /// Locks and gives the elements in place: the guard derefs to `&mut [T]`.
    /// This is the zero-copy view, for readers and writers alike.
    ///
    /// # Errors
    /// [`OwnerDied`] with the guard if a holder died.
    ///
    /// # Panics
    /// If the array has no lock.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, [T]>> {
        // SAFETY: the lock guards the data.
        unsafe { self.inner.expect_lock().guard_lock(self.slice_ptr()) }
    }

    /// Locks if free.
    ///
    /// # Errors
    /// [`TryLockError::WouldBlock`](crate::sync::TryLockError::WouldBlock) if another thread or
    /// process holds the lock; [`TryLockError::OwnerDied`](crate::sync::TryLockError::OwnerDied)
    /// carrying the guard if a holder died.
    ///
    /// # Panics
    /// If the array has no lock.
    pub fn try_lock(&self) -> TryLockResult<'_, [T]> {
        // SAFETY: as in `lock`.
        unsafe { self.inner.expect_lock().guard_try_lock(self.slice_ptr()) }
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`TryLockError::TimedOut`](crate::sync::TryLockError::TimedOut) if the lock was not free
    /// within `timeout`; [`TryLockError::OwnerDied`](crate::sync::TryLockError::OwnerDied) carrying
    /// the guard if a holder died.
    ///
    /// # Panics
    /// If the array has no lock.
    pub fn lock_timeout(&self, timeout: Duration) -> TryLockResult<'_, [T]> {
        // SAFETY: as in `lock`.
        unsafe {
            self.inner
                .expect_lock()
                .guard_lock_timeout(self.slice_ptr(), timeout)
        }
    }

    /// Runs `f` on the elements under the lock, or unsynchronised for a raw
    /// array.
    fn with<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> LockResult<R> {
        if self.inner.raw_lock().is_none() {
            // SAFETY: raw by the user's choice: concurrent writers may make the
            // result inconsistent, but any bits are valid Ts (Pod).
            return Ok(f(unsafe { &mut *self.slice_ptr() }));
        }
        match self.lock() {
            Ok(mut g) => Ok(f(&mut g)),
            Err(e) => Err(OwnerDied::new(f(&mut e.into_inner()))),
        }
    }

    /// A copy of element `i`.
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying the copy if a holder of the lock died (the
    /// work was done; the lock stays poisoned). Never for a raw (unlocked) one.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> LockResult<T> {
        self.with(|s| s[i])
    }

    /// Sets element `i`.
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying `()` if a holder of the lock died (the work
    /// was done; the lock stays poisoned). Never for a raw (unlocked) one.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn set(&self, i: usize, v: T) -> LockResult<()> {
        self.with(|s| s[i] = v)
    }

    /// Copies all elements into `out`.
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying `()` if a holder of the lock died (the work
    /// was done; the lock stays poisoned). Never for a raw (unlocked) one.
    ///
    /// # Panics
    /// If `out.len() != len()`.
    pub fn copy_to_slice(&self, out: &mut [T]) -> LockResult<()> {
        self.with(|s| out.copy_from_slice(s))
    }

    /// Copies `src` over all elements.
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying `()` if a holder of the lock died (the work
    /// was done; the lock stays poisoned). Never for a raw (unlocked) one.
    ///
    /// # Panics
    /// If `src.len() != len()`.
    pub fn copy_from_slice(&self, src: &[T]) -> LockResult<()> {
        self.with(|s| s.copy_from_slice(src))
    }

    /// A copy of all elements.
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying the copy if a holder of the lock died (the
    /// work was done; the lock stays poisoned). Never for a raw (unlocked) one.
    pub fn to_vec(&self) -> LockResult<Vec<T>> {
        self.with(|s| s.to_vec())
    }

    /// The first element's address in this process's mapping.
    #[must_use]
    pub fn as_ptr(&self) -> *mut T {
        self.inner.data()
    }

    /// The elements as a shared slice, without locking.
    ///
    /// # Safety
    /// For the slice's lifetime no process may write the elements (for
    /// example: all writers finished and synchronised with the caller through a
    /// barrier, event, join or lock).
    #[must_use]
    pub unsafe fn as_slice_unchecked(&self) -> &[T] {
        // SAFETY: forwarded to the caller; the mapping outlives &self.
        unsafe { &*self.slice_ptr() }
    }

    /// The elements as a mutable slice, without locking.
    ///
    /// # Safety
    /// For the slice's lifetime nobody else (thread or process) may read or
    /// write the elements it covers.
    #[allow(clippy::mut_from_ref)]
    #[must_use]
    pub unsafe fn as_mut_slice_unchecked(&self) -> &mut [T] {
        // SAFETY: forwarded to the caller.
        unsafe { &mut *self.slice_ptr() }
    }

    /// The segment behind the array.
    #[must_use]
    pub fn segment(&self) -> &Segment {
        self.inner.segment()
    }

    /// `Err(`[`RegionError::Truncated`](crate::error::RegionError::Truncated)`)` once another
    /// process has shrunk this array's segment and this process has touched a
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

impl<T: AtomicInt> Array<T> {
    /// Element `i` as a std atomic, lock-free.
    ///
    /// # Panics
    /// If `i >= len()`.
    #[must_use]
    pub fn atomic(&self, i: usize) -> &T::Atomic {
        assert!(
            i < self.len(),
            "index {i} out of range for length {}",
            self.len()
        );
        // SAFETY: in bounds; each element is aligned (64-aligned base, stride
        // size_of::<T>() == align of the atomic); the mapping outlives &self.
        unsafe { T::atomic_from_ptr(self.inner.data().add(i)) }
    }
}

impl<T: Pod> crate::region::handle::Travels for Array<T> {
    fn check_travel(&self) -> Result<()> {
        self.shared().check_travel()
    }
}

crate::region::handle::region_handle_archive!(Array<T: Pod>, |h| {
    crate::region::handle::reopen_with!(h, Array::builder())
});

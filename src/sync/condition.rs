//! [`Condition`]: a condition variable bundled with the robust mutex and the
//! data it guards (Python's `multiprocessing.Condition`, std's `Condvar`).
//!
//! The algorithm is a sequence counter: a waiter reads `seq` while it holds the
//! mutex, unlocks, and sleeps while `seq` is unchanged; a notifier bumps `seq`
//! and wakes. A notify between the unlock and the sleep changes `seq`, so the
//! kernel's FUTEX_WAIT compare returns at once: no wake-up is lost. Spurious
//! wake-ups are possible, as with every condition variable: use `wait_while`.

use crate::error::Result;
use crate::region::{Kind, RegionOptions, Segment};
use crate::sync::mutex::{
    LINE_REST, LockResult, MutexGuard, OwnerDied, RawMutex, finish, init_mutex, spec_of,
};
use crate::sync::wait;
use crate::sys::futex;
use bytemuck::Pod;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The condition's shared state: its mutex, then the sequence word.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RawCondition {
    mutex: RawMutex,
    /// The lock keeps its cache line (sleepers wait on the words below).
    _lock_line: [u8; LINE_REST],
    /// Bumped by every notify (the futex word).
    seq: AtomicU32,
    waiters: AtomicU32,
}

/// Builder for [`Condition`].
#[derive(Debug)]
pub struct ConditionBuilder<T> {
    opts: RegionOptions,
    _t: PhantomData<T>,
}

fn init<T: Pod>(c: *mut u8, d: *mut u8, value: T) -> Result<()> {
    init_mutex(c)?; // the mutex is the first field
    let rc = c.cast::<RawCondition>();
    // SAFETY: `rc` is the unpublished control block; `d` holds one T.
    unsafe {
        std::ptr::addr_of_mut!((*rc).seq).write(AtomicU32::new(0));
        std::ptr::addr_of_mut!((*rc).waiters).write(AtomicU32::new(0));
        d.cast::<T>().write(value);
    }
    Ok(())
}

impl<T: Pod> ConditionBuilder<T> {
    region_setters!();

    /// The region's spec: one `RawCondition` control block and one `T`.
    fn spec(&self) -> crate::region::Spec {
        spec_of::<RawCondition, T>(Kind::Condition, 0, &self.opts)
    }

    /// Creates the condition guarding `value`.
    ///
    /// # Errors
    /// As for any region: [`RegionError::AlreadyExists`](crate::error::RegionError::AlreadyExists) if the name is
    /// taken, [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name,
    /// [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if /dev/shm (or the file's filesystem) is too
    /// small, [`RegionError::PermissionDenied`](crate::error::RegionError::PermissionDenied) or
    /// [`Error::Io`](crate::Error::Io) if the OS refuses.
    pub fn create(self, value: T) -> Result<Condition<T>> {
        let spec = self.spec();
        let seg = Segment::create(&self.opts, &spec, 1, |c, d| init(c, d, value))?;
        Ok(Condition::from_segment(seg))
    }

    /// Opens an existing named condition.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name or none (open needs a name
    /// or a path); [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a condition,
    /// [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type; and the other
    /// open errors of any region ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(self) -> Result<Condition<T>> {
        let spec = self.spec();
        Ok(Condition::from_segment(Segment::open(
            &self.opts,
            &spec,
            Some(1),
        )?))
    }

    /// Opens a condition from a descriptor inherited across `exec`: what a child
    /// started with [`spawn`](crate::process::spawn) does with an anonymous
    /// one passed as an argument (see [`Segment::inheritable_fd`](crate::region::Segment::inheritable_fd)).
    ///
    /// # Errors
    /// The checks of an open: [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a condition, [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type;
    /// [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if it was never published;
    /// [`Error::Io`](crate::Error::Io) if `fstat` or `mmap` fails.
    pub fn from_fd(self, fd: std::os::fd::OwnedFd) -> Result<Condition<T>> {
        let spec = self.spec();
        Ok(Condition::from_segment(Segment::from_fd(
            fd,
            &self.opts,
            &spec,
            Some(1),
        )?))
    }
}

/// A condition variable with its mutex and a `T: Pod` it guards.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), shmkit::Error> {
/// let c = shmkit::sync::Condition::new(0u32)?;
/// let c2 = c.clone();
/// let t = std::thread::spawn(move || {
///     *c2.lock().unwrap() = 1;
///     c2.notify_all();
/// });
/// let g = c.wait_while(c.lock()?, |v| *v == 0)?;
/// assert_eq!(*g, 1);
/// # drop(g); t.join().unwrap();
/// # Ok(()) }
/// ```
pub struct Condition<T> {
    seg: Arc<Segment>,
    _t: PhantomData<T>,
}

impl<T> Clone for Condition<T> {
    fn clone(&self) -> Self {
        Condition {
            seg: self.seg.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Condition<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("segment", &self.seg.id())
            .finish()
    }
}

impl<T: Pod> Condition<T> {
    /// A new anonymous condition guarding `value`.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the OS refuses the memory (`memfd_create`, `ftruncate`,
    /// `mmap`).
    pub fn new(value: T) -> Result<Self> {
        Self::builder().create(value)
    }

    /// A builder for named or otherwise configured conditions.
    #[must_use]
    pub fn builder() -> ConditionBuilder<T> {
        ConditionBuilder {
            opts: RegionOptions::default(),
            _t: PhantomData,
        }
    }

    /// Opens the named condition `name`.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name;
    /// [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a condition,
    /// [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type; and the other
    /// open errors of any region ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    fn from_segment(seg: Segment) -> Self {
        Condition {
            seg: Arc::new(seg),
            _t: PhantomData,
        }
    }

    fn raw(&self) -> &RawCondition {
        // SAFETY: a Kind::Condition region's control block is a RawCondition,
        // initialised before publication.
        unsafe { &*self.seg.control_ptr().cast::<RawCondition>() }
    }

    /// Locks the mutex (see [`Mutex::lock`](crate::sync::Mutex::lock)).
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) (carrying the guard) if a holder died and the data has
    /// not been marked consistent since.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        // SAFETY: the data is one T guarded by the condition's mutex.
        unsafe { self.raw().mutex.guard_lock(self.seg.data_ptr().cast::<T>()) }
    }

    /// Unlocks, sleeps until notified (or spuriously woken), and relocks.
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying the relocked guard if a holder of the mutex
    /// died.
    ///
    /// # Panics
    /// If `guard` belongs to another lock.
    pub fn wait<'a>(&'a self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        self.wait_until(guard, None)
            .map(|(g, _)| g)
            .map_err(|e| OwnerDied::new(e.into_inner().0))
    }

    /// As [`wait`](Self::wait), for at most `timeout`; the flag says whether it
    /// timed out.
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying the relocked guard and the flag if a holder
    /// of the mutex died.
    pub fn wait_timeout<'a>(
        &'a self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, bool)> {
        self.wait_until(guard, wait::deadline_after(timeout))
    }

    /// Waits while `condition` holds (it is re-checked after every wake-up).
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying the relocked guard if a holder of the mutex
    /// died (the wait stops there).
    pub fn wait_while<'a>(
        &'a self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> LockResult<MutexGuard<'a, T>> {
        while condition(&mut guard) {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// As [`wait_while`](Self::wait_while), for at most `timeout`; the flag says
    /// whether it timed out with the condition still holding.
    ///
    /// # Errors
    /// [`OwnerDied`](crate::sync::OwnerDied) carrying the relocked guard and the flag if a holder
    /// of the mutex died (the wait stops there).
    pub fn wait_timeout_while<'a>(
        &'a self,
        mut guard: MutexGuard<'a, T>,
        timeout: Duration,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> LockResult<(MutexGuard<'a, T>, bool)> {
        let deadline = wait::deadline_after(timeout);
        while condition(&mut guard) {
            let (g, timed_out) = self.wait_until(guard, deadline)?;
            guard = g;
            if timed_out {
                let still = condition(&mut guard);
                return Ok((guard, still));
            }
        }
        Ok((guard, false))
    }

    fn wait_until<'a>(
        &'a self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> LockResult<(MutexGuard<'a, T>, bool)> {
        let c = self.raw();
        assert!(
            std::ptr::eq(guard.raw(), &c.mutex),
            "Condition::wait called with a guard of another lock"
        );
        // Read seq while holding the lock: a notify after our unlock changes it.
        let seq = c.seq.load(Ordering::SeqCst);
        // SYNC(waiters): pairs with the SeqCst load in `wait::wake`.
        c.waiters.fetch_add(1, Ordering::SeqCst);
        let (lock, data) = guard.into_parts();
        // SAFETY: we held the lock through the guard we just took apart.
        unsafe { lock.unlock() };
        let timed_out = match wait::remaining(deadline) {
            Err(()) => true,
            Ok(t) => futex::wait(&c.seq, seq, t) == futex::WaitResult::TimedOut,
        };
        c.waiters.fetch_sub(1, Ordering::SeqCst);
        let a = lock.lock();
        // SAFETY: relocked; `data` is the same T.
        let guard = unsafe { MutexGuard::new(lock, data) };
        finish(a, (guard, timed_out)).map_err(|e| OwnerDied::new(e.into_inner()))
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.notify(1);
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }

    fn notify(&self, n: u32) {
        let c = self.raw();
        // SYNC(cond-seq): SeqCst bump, then the waiters check in `wake`.
        c.seq.fetch_add(1, Ordering::SeqCst);
        wait::wake(&c.seq, &c.waiters, n);
    }

    /// The segment behind the condition.
    #[must_use]
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(std::mem::size_of::<RawCondition>(), 128);
        assert_eq!(std::mem::offset_of!(RawCondition, mutex), 0);
        assert_eq!(std::mem::offset_of!(RawCondition, seq), 64);
        assert_eq!(std::mem::offset_of!(RawCondition, waiters), 68);
    }

    #[test]
    fn wait_timeout_times_out_and_keeps_the_lock() {
        let c = Condition::new(0u8).unwrap();
        let (g, timed_out) = c
            .wait_timeout(c.lock().unwrap(), Duration::from_millis(5))
            .unwrap();
        assert!(timed_out);
        assert_eq!(*g, 0);
    }
}

impl<T: Pod> crate::region::handle::Travels for Condition<T> {}

crate::region::handle::region_handle_archive!(Condition<T: Pod>, |h| {
    crate::region::handle::reopen_with!(h, Condition::builder())
});

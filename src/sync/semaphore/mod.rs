//! [`Semaphore`]: a counting semaphore in shared memory, optionally bounded
//! (Python's `Semaphore` and `BoundedSemaphore`).

use crate::error::Result;
use crate::region::{Kind, Segment};
use crate::sync::identity;
use crate::sync::object::Object;
use crate::sync::robust_state::{RobustState, Tx};
use crate::sync::wait;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

#[cfg(feature = "async")]
mod asynch;
#[cfg(feature = "async")]
pub use asynch::ProcessPermit;

/// The semaphore's shared state: a [`RobustState`] whose cells are the
/// permits available and the bound, and whose holders are the threads
/// holding [`SemaphorePermit`]s.
#[repr(C)]
#[derive(Debug)]
pub struct RawSemaphore {
    state: RobustState,
}

/// How often a blocked `acquire`/`permit` checks that the segment was not
/// cut by a peer.
const CUT_CHECK: Duration = Duration::from_secs(1);

const VALUE: usize = 0;
const MAX: usize = 1;

fn take_plain(tx: &mut Tx<'_>) -> Option<()> {
    let v = tx.get(VALUE);
    (v > 0).then(|| tx.set(VALUE, v - 1))
}

fn take_recorded(tx: &mut Tx<'_>, me: u64) -> Option<usize> {
    let v = tx.get(VALUE);
    if v == 0 {
        return None;
    }
    let slot = tx.slot_of(me, |who, _| who == 0)?;
    let (_, held) = tx.holder(slot);
    tx.set(VALUE, v - 1);
    tx.set_holder(slot, me, held.saturating_add(1));
    Some(slot)
}

/// Gives back what dead permit holders held (never past the bound).
fn reap(tx: &mut Tx<'_>) {
    tx.reap_dead(|tx, _, held| {
        let v = tx.get(VALUE).saturating_add(held).min(tx.get(MAX));
        tx.set(VALUE, v);
    });
}

/// Forgets one permit of `slot`'s holder, if that is still `me`.
fn drop_record(tx: &mut Tx<'_>, slot: usize, me: u64) -> bool {
    let (who, held) = tx.holder(slot);
    if who != me || held == 0 {
        return false;
    }
    if held == 1 {
        tx.set_holder(slot, 0, 0);
    } else {
        tx.set_holder(slot, me, held - 1);
    }
    true
}

/// Releasing would raise a bounded semaphore above its bound (Python raises
/// `ValueError` here): a permit was released that was never acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemaphoreFull {
    /// The bound.
    pub max: u32,
}

impl fmt::Display for SemaphoreFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "semaphore released too many times (bound {}): release only what you acquired",
            self.max
        )
    }
}

impl std::error::Error for SemaphoreFull {}

object_builder!(
    /// Builder for [`Semaphore`].
    SemaphoreBuilder
);

impl SemaphoreBuilder {
    /// Creates a semaphore with `value` permits and no bound.
    ///
    /// # Errors
    /// As for any region: [`RegionError::AlreadyExists`](crate::error::RegionError::AlreadyExists) if the name is
    /// taken, [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name,
    /// [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if /dev/shm (or the file's filesystem) is too
    /// small, [`RegionError::PermissionDenied`](crate::error::RegionError::PermissionDenied) or
    /// [`Error::Io`](crate::Error::Io) if the OS refuses.
    pub fn create(self, value: u32) -> Result<Semaphore> {
        self.create_bounded(value, u32::MAX)
    }

    /// Creates a semaphore with `value` permits that can never hold more than
    /// `max` (Python's `BoundedSemaphore(value)` is `create_bounded(value, value)`).
    ///
    /// # Errors
    /// As for any region: [`RegionError::AlreadyExists`](crate::error::RegionError::AlreadyExists) if the name is
    /// taken, [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name,
    /// [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if /dev/shm (or the file's filesystem) is too
    /// small, [`RegionError::PermissionDenied`](crate::error::RegionError::PermissionDenied) or
    /// [`Error::Io`](crate::Error::Io) if the OS refuses.
    ///
    /// # Panics
    /// If `value > max`.
    pub fn create_bounded(self, value: u32, max: u32) -> Result<Semaphore> {
        assert!(
            value <= max,
            "semaphore value {value} exceeds its bound {max}"
        );
        let obj = Object::create(&self.opts, Kind::Semaphore, |p: *mut RawSemaphore| {
            // SAFETY: `p` is the unpublished, suitably sized control block;
            // RawSemaphore is one RobustState.
            unsafe {
                RobustState::init(
                    p.cast(),
                    &[(VALUE, u64::from(value)), (MAX, u64::from(max))],
                )
            };
            Ok(())
        })?;
        Ok(Semaphore { obj })
    }

    /// Opens an existing named semaphore.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name or none (open needs a name
    /// or a path); [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a semaphore;
    /// and the other open errors of any region
    /// ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(self) -> Result<Semaphore> {
        Ok(Semaphore {
            obj: Object::open(&self.opts, Kind::Semaphore)?,
        })
    }

    /// Opens a semaphore from a descriptor inherited across `exec`: what a child
    /// started with [`spawn`](crate::process::spawn) does with an anonymous
    /// one passed as an argument (see [`Segment::inheritable_fd`](crate::region::Segment::inheritable_fd)).
    ///
    /// # Errors
    /// The checks of an open: [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a semaphore;
    /// [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if it was never published;
    /// [`Error::Io`](crate::Error::Io) if `fstat` or `mmap` fails.
    pub fn from_fd(self, fd: std::os::fd::OwnedFd) -> Result<Semaphore> {
        Ok(Semaphore {
            obj: Object::from_fd(fd, &self.opts, Kind::Semaphore)?,
        })
    }
}

/// A counting semaphore shared between processes.
///
/// Two ways to take a permit:
/// - [`permit`](Self::permit) (and `try_`/`_timeout`) returns a
///   [`SemaphorePermit`] that gives the permit back when dropped — Python's
///   `with sem:`. Its holder is recorded in the semaphore, so **a thread or
///   process that dies holding permits gives them back**: a waiter that
///   slept 10 ms without news looks for dead holders. At most 64 threads
///   hold permits at once; more wait.
/// - [`acquire`](Self::acquire) / [`release`](Self::release) count without
///   recording anybody, as Python's `acquire()`/`release()` do: use them when
///   a permit is a signal that one process releases and another consumes
///   (a dead consumer's permits were consumed, not held, and are not given
///   back).
///
/// # Examples
/// ```
/// # fn main() -> Result<(), shmkit::Error> {
/// let s = shmkit::sync::Semaphore::new(1)?;
/// {
///     let _p = s.permit()?;
///     assert!(s.try_permit().is_none());
/// }
/// s.acquire()?;
/// assert!(!s.try_acquire());
/// s.release().unwrap();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Semaphore {
    obj: Object<RawSemaphore>,
}

/// A permit taken with [`Semaphore::permit`]: given back on drop, or by a
/// waiter if the holder dies. Not `Send`: the permit is recorded for the
/// thread that took it.
#[derive(Debug)]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
    slot: usize,
    me: u64,
    /// The process that took it (a forked child's copy is not its own).
    pid: u32,
    _not_send: PhantomData<*const ()>,
}

impl SemaphorePermit<'_> {
    /// Keeps the permit taken for good: it is no longer recorded as held
    /// (and so not given back at drop nor at death), as if it had been taken
    /// with [`Semaphore::acquire`].
    pub fn forget(self) {
        let (sem, slot, me, pid) = (self.sem, self.slot, self.me, self.pid);
        std::mem::forget(self);
        sem.forget_record(slot, me, pid);
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        self.sem.give_back(self.slot, self.me, self.pid);
    }
}

impl Semaphore {
    /// An anonymous, unbounded semaphore with `value` permits.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the OS refuses the memory (`memfd_create`, `ftruncate`,
    /// `mmap`).
    pub fn new(value: u32) -> Result<Self> {
        Self::builder().create(value)
    }

    /// An anonymous semaphore bounded at its initial value.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the OS refuses the memory (`memfd_create`, `ftruncate`,
    /// `mmap`).
    pub fn bounded(value: u32) -> Result<Self> {
        Self::builder().create_bounded(value, value)
    }

    /// A builder for named or otherwise configured semaphores.
    #[must_use]
    pub fn builder() -> SemaphoreBuilder {
        SemaphoreBuilder::default()
    }

    /// Opens the named semaphore `name`.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name;
    /// [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a semaphore; and the other
    /// open errors of any region ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    fn state(&self) -> &RobustState {
        &self.obj.get().state
    }

    /// Forgets a recorded permit of `slot`'s holder `me` (it stays taken),
    /// taken in process `pid`; nothing in a forked child (see `give_back`).
    fn forget_record(&self, slot: usize, me: u64, pid: u32) {
        if crate::sys::proc::pid() == pid {
            self.state().transact(|tx| drop_record(tx, slot, me));
        }
    }

    /// Gives back a recorded permit of `slot`'s holder `me`, taken in
    /// process `pid`: not from a forked child's copy of it (whose record
    /// still names the parent, so the record alone would match; the
    /// parent's copy gives it back).
    fn give_back(&self, slot: usize, me: u64, pid: u32) {
        if crate::sys::proc::pid() != pid {
            return;
        }
        self.state().transact(|tx| {
            if drop_record(tx, slot, me) {
                let v = tx.get(VALUE).saturating_add(1).min(tx.get(MAX));
                tx.set(VALUE, v);
            }
        });
    }

    fn permit_until(&self, deadline: Option<Instant>) -> Option<SemaphorePermit<'_>> {
        let me = identity::me();
        let slot = self
            .state()
            .wait_for(deadline, |tx| take_recorded(tx, me), reap)?;
        Some(self.recorded_permit(slot, me))
    }

    /// The permit recorded in `slot` for this thread (`me`).
    fn recorded_permit(&self, slot: usize, me: u64) -> SemaphorePermit<'_> {
        SemaphorePermit {
            sem: self,
            slot,
            me,
            pid: crate::sys::proc::pid(),
            _not_send: PhantomData,
        }
    }

    /// Takes a permit, blocking until one is available; it is given back
    /// when the permit is dropped, or if this thread dies holding it.
    ///
    /// # Errors
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated) if another process cut
    /// the semaphore's segment while we waited (its zero pages hold no
    /// permits: without this the wait would never end); checked every second
    /// of waiting.
    pub fn permit(&self) -> Result<SemaphorePermit<'_>> {
        loop {
            if let Some(p) = self.permit_until(wait::deadline_after(CUT_CHECK)) {
                return Ok(p);
            }
            self.segment().check()?;
        }
    }

    /// [`permit`](Self::permit) if one is available now.
    #[must_use]
    pub fn try_permit(&self) -> Option<SemaphorePermit<'_>> {
        let me = identity::me();
        let slot = self.state().transact(|tx| take_recorded(tx, me))?;
        Some(self.recorded_permit(slot, me))
    }

    /// [`permit`](Self::permit), waiting at most `timeout`.
    #[must_use]
    pub fn permit_timeout(&self, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        self.permit_until(wait::deadline_after(timeout))
    }

    /// Takes a permit, blocking until one is available (not recorded: see
    /// the type's docs).
    ///
    /// # Errors
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), as for
    /// [`permit`](Self::permit).
    pub fn acquire(&self) -> Result<()> {
        loop {
            if self.acquire_timeout(CUT_CHECK) {
                return Ok(());
            }
            self.segment().check()?;
        }
    }

    /// Takes a permit if one is available now.
    pub fn try_acquire(&self) -> bool {
        self.state().transact(take_plain).is_some()
    }

    /// Takes a permit, waiting at most `timeout`. Returns whether it got one.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.state()
            .wait_for(wait::deadline_after(timeout), take_plain, reap)
            .is_some()
    }

    /// Returns a permit.
    ///
    /// # Errors
    /// [`SemaphoreFull`] if the semaphore is at its bound.
    pub fn release(&self) -> std::result::Result<(), SemaphoreFull> {
        self.release_n(1)
    }

    /// Returns `n` permits.
    ///
    /// # Errors
    /// [`SemaphoreFull`] (and nothing released) if that would pass the bound.
    pub fn release_n(&self, n: u32) -> std::result::Result<(), SemaphoreFull> {
        self.state().transact(|tx| {
            let max = tx.get(MAX);
            match tx.get(VALUE).checked_add(u64::from(n)) {
                Some(v) if v <= max => {
                    tx.set(VALUE, v);
                    Ok(())
                }
                _ => Err(SemaphoreFull {
                    max: max.min(u64::from(u32::MAX)) as u32,
                }),
            }
        })
    }

    /// Permits available now (a snapshot).
    #[must_use]
    pub fn value(&self) -> u32 {
        self.state().peek(VALUE).min(u64::from(u32::MAX)) as u32
    }

    /// The segment behind the semaphore.
    #[must_use]
    pub fn segment(&self) -> &Segment {
        self.obj.segment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layout() {
        assert_eq!(size_of::<RawSemaphore>(), size_of::<RobustState>());
        assert_eq!(offset_of!(RawSemaphore, state), 0);
    }

    #[test]
    fn permits_come_back_on_drop_and_from_dead_threads() {
        let s = Semaphore::bounded(2).unwrap();
        let p = s.permit().unwrap();
        assert_eq!(s.value(), 1);
        drop(p);
        assert_eq!(s.value(), 2);
        // A thread that ends holding a permit (its guard leaked) is dead: a
        // waiter gives its permits back.
        std::thread::scope(|sc| {
            sc.spawn(|| std::mem::forget((s.permit().unwrap(), s.permit().unwrap())));
        });
        assert_eq!(s.value(), 0);
        let p = s
            .permit_timeout(Duration::from_secs(30))
            .expect("given back");
        assert_eq!(s.value(), 1);
        // A forgotten permit is consumed: never given back.
        p.forget();
        assert!(s.permit_timeout(Duration::from_millis(30)).is_some());
        assert_eq!(s.value(), 1);
    }

    #[test]
    fn counts_bounds_and_times_out() {
        let s = Semaphore::bounded(2).unwrap();
        assert!(s.try_acquire() && s.try_acquire() && !s.try_acquire());
        assert!(!s.acquire_timeout(Duration::from_millis(10)));
        s.release().unwrap();
        s.release().unwrap();
        assert_eq!(s.release(), Err(SemaphoreFull { max: 2 }));
        assert_eq!(s.value(), 2);
    }

    #[test]
    fn release_wakes_a_blocked_thread() {
        let s = Semaphore::new(0).unwrap();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.acquire().unwrap());
        std::thread::sleep(Duration::from_millis(20));
        s.release().unwrap();
        t.join().unwrap();
        assert_eq!(s.value(), 0);
    }
}

impl crate::region::handle::Travels for Semaphore {}

crate::region::handle::region_handle_archive!(Semaphore, |h| {
    crate::region::handle::reopen_with!(h, Semaphore::builder())
});

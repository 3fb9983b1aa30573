//! [`Semaphore`]: a counting semaphore in shared memory, optionally bounded
//! (Python's `Semaphore` and `BoundedSemaphore`).

use crate::error::Result;
use crate::region::{Kind, Segment};
use crate::sync::object::Object;
use crate::sync::wait::{self, Attempt, block_on};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The semaphore's shared state.
#[repr(C)]
#[derive(Debug)]
pub struct RawSemaphore {
    /// Permits available (the futex word).
    count: AtomicU32,
    /// Sleepers, so that `release` skips the syscall when there are none.
    waiters: AtomicU32,
    /// Upper bound on `count` (`u32::MAX` = unbounded).
    max: u32,
    _pad: u32,
}

impl RawSemaphore {
    fn try_acquire(&self) -> Attempt {
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            if c == 0 {
                return Attempt::WaitWhile(0);
            }
            // SYNC(sem-permit): Acquire pairs with the Release in `release`, so
            // what the releaser wrote before releasing is visible.
            match self
                .count
                .compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Attempt::Done,
                Err(now) => c = now,
            }
        }
    }
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
    pub fn create(self, value: u32) -> Result<Semaphore> {
        self.create_bounded(value, u32::MAX)
    }

    /// Creates a semaphore with `value` permits that can never hold more than
    /// `max` (Python's `BoundedSemaphore(value)` is `create_bounded(value, value)`).
    ///
    /// # Panics
    /// If `value > max`.
    pub fn create_bounded(self, value: u32, max: u32) -> Result<Semaphore> {
        assert!(
            value <= max,
            "semaphore value {value} exceeds its bound {max}"
        );
        let obj = Object::create(&self.opts, Kind::Semaphore, |p: *mut RawSemaphore| {
            // SAFETY: `p` is the unpublished, suitably sized control block.
            unsafe {
                p.write(RawSemaphore {
                    count: AtomicU32::new(value),
                    waiters: AtomicU32::new(0),
                    max,
                    _pad: 0,
                })
            };
            Ok(())
        })?;
        Ok(Semaphore { obj })
    }

    /// Opens an existing named semaphore.
    pub fn open(self) -> Result<Semaphore> {
        Ok(Semaphore {
            obj: Object::open(&self.opts, Kind::Semaphore)?,
        })
    }
}

/// A counting semaphore shared between processes.
///
/// Not robust to death: a process that dies holding permits does not give them
/// back (as with Python's); use timeouts where that matters.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), shmkit::Error> {
/// let s = shmkit::sync::Semaphore::new(1)?;
/// s.acquire();
/// assert!(!s.try_acquire());
/// s.release().unwrap();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Semaphore {
    obj: Object<RawSemaphore>,
}

impl Semaphore {
    /// An anonymous, unbounded semaphore with `value` permits.
    pub fn new(value: u32) -> Result<Self> {
        Self::builder().create(value)
    }

    /// An anonymous semaphore bounded at its initial value.
    pub fn bounded(value: u32) -> Result<Self> {
        Self::builder().create_bounded(value, value)
    }

    /// A builder for named or otherwise configured semaphores.
    pub fn builder() -> SemaphoreBuilder {
        SemaphoreBuilder::default()
    }

    /// Opens the named semaphore `name`.
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    /// Takes a permit, blocking until one is available.
    pub fn acquire(&self) {
        let s = self.obj.get();
        block_on(&s.count, &s.waiters, None, || s.try_acquire());
    }

    /// Takes a permit if one is available now.
    pub fn try_acquire(&self) -> bool {
        self.obj.get().try_acquire() == Attempt::Done
    }

    /// Takes a permit, waiting at most `timeout`. Returns whether it got one.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        let s = self.obj.get();
        block_on(&s.count, &s.waiters, wait::deadline_after(timeout), || {
            s.try_acquire()
        })
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
        let s = self.obj.get();
        let mut c = s.count.load(Ordering::Relaxed);
        loop {
            let next = match c.checked_add(n) {
                Some(v) if v <= s.max => v,
                _ => return Err(SemaphoreFull { max: s.max }),
            };
            // SYNC(sem-permit): Release pairs with the Acquire in try_acquire;
            // SeqCst also orders it before the waiters check in `wake`.
            match s
                .count
                .compare_exchange_weak(c, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => c = now,
            }
        }
        wait::wake(&s.count, &s.waiters, n);
        Ok(())
    }

    /// Permits available now (a snapshot).
    pub fn value(&self) -> u32 {
        self.obj.get().count.load(Ordering::Relaxed)
    }

    /// The segment behind the semaphore.
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
        assert_eq!(size_of::<RawSemaphore>(), 16);
        assert_eq!(offset_of!(RawSemaphore, count), 0);
        assert_eq!(offset_of!(RawSemaphore, waiters), 4);
        assert_eq!(offset_of!(RawSemaphore, max), 8);
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
        let t = std::thread::spawn(move || s2.acquire());
        std::thread::sleep(Duration::from_millis(20));
        s.release().unwrap();
        t.join().unwrap();
        assert_eq!(s.value(), 0);
    }
}

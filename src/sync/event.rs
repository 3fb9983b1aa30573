//! [`Event`]: a flag processes wait on (Python's `multiprocessing.Event`).

use crate::error::Result;
use crate::region::{Kind, Segment};
use crate::sync::object::Object;
use crate::sync::wait::{self, Attempt, block_on};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The event's shared state.
#[repr(C)]
#[derive(Debug)]
pub struct RawEvent {
    /// 0 = clear, 1 = set (the futex word).
    flag: AtomicU32,
    waiters: AtomicU32,
}

object_builder!(
    /// Builder for [`Event`].
    EventBuilder
);

impl EventBuilder {
    /// Creates a clear event.
    ///
    /// # Errors
    /// As for any region: [`RegionError::AlreadyExists`](crate::error::RegionError::AlreadyExists) if the name is
    /// taken, [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name,
    /// [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if /dev/shm (or the file's filesystem) is too
    /// small, [`RegionError::PermissionDenied`](crate::error::RegionError::PermissionDenied) or
    /// [`Error::Io`](crate::Error::Io) if the OS refuses.
    pub fn create(self) -> Result<Event> {
        let obj = Object::create(&self.opts, Kind::Event, |p: *mut RawEvent| {
            // SAFETY: `p` is the unpublished, suitably sized control block.
            unsafe {
                p.write(RawEvent {
                    flag: AtomicU32::new(0),
                    waiters: AtomicU32::new(0),
                })
            };
            Ok(())
        })?;
        Ok(Event { obj })
    }

    /// Opens an existing named event.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name or none (open needs a name
    /// or a path); [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not an event; and
    /// the other open errors of any region
    /// ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(self) -> Result<Event> {
        Ok(Event {
            obj: Object::open(&self.opts, Kind::Event)?,
        })
    }

    /// Opens an event from a descriptor inherited across `exec`: what a child
    /// started with [`spawn`](crate::process::spawn) does with an anonymous
    /// one passed as an argument (see [`Segment::inheritable_fd`](crate::region::Segment::inheritable_fd)).
    ///
    /// # Errors
    /// The checks of an open: [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not an event;
    /// [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if it was never published;
    /// [`Error::Io`](crate::Error::Io) if `fstat` or `mmap` fails.
    pub fn from_fd(self, fd: std::os::fd::OwnedFd) -> Result<Event> {
        Ok(Event {
            obj: Object::from_fd(fd, &self.opts, Kind::Event)?,
        })
    }
}

/// A flag that processes set, clear and wait on.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), shmkit::Error> {
/// let e = shmkit::sync::Event::new()?;
/// assert!(!e.wait_timeout(std::time::Duration::from_millis(1)));
/// e.set();
/// e.wait();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Event {
    obj: Object<RawEvent>,
}

impl Event {
    /// A new anonymous, clear event.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the OS refuses the memory (`memfd_create`, `ftruncate`,
    /// `mmap`).
    pub fn new() -> Result<Self> {
        Self::builder().create()
    }

    /// A builder for named or otherwise configured events.
    #[must_use]
    pub fn builder() -> EventBuilder {
        EventBuilder::default()
    }

    /// Opens the named event `name`.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name;
    /// [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not an event; and the other
    /// open errors of any region ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        let e = self.obj.get();
        // SYNC(event): SeqCst swap; pairs with the Acquire load in `attempt`.
        if e.flag.swap(1, Ordering::SeqCst) == 0 {
            wait::wake(&e.flag, &e.waiters, u32::MAX);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.obj.get().flag.store(0, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    #[must_use]
    pub fn is_set(&self) -> bool {
        self.obj.get().flag.load(Ordering::Acquire) != 0
    }

    fn attempt(&self) -> Attempt {
        // SYNC(event): pairs with the SeqCst swap in `set`.
        if self.obj.get().flag.load(Ordering::Acquire) != 0 {
            Attempt::Done
        } else {
            Attempt::WaitWhile(0)
        }
    }

    /// Blocks until the flag is set.
    pub fn wait(&self) {
        let e = self.obj.get();
        block_on(&e.flag, &e.waiters, None, || self.attempt());
    }

    /// Blocks until the flag is set or `timeout` passes; returns whether it is set.
    #[allow(clippy::must_use_candidate)] // also an interruptible sleep
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let e = self.obj.get();
        block_on(&e.flag, &e.waiters, wait::deadline_after(timeout), || {
            self.attempt()
        })
    }

    /// The segment behind the event.
    #[must_use]
    pub fn segment(&self) -> &Segment {
        self.obj.segment()
    }
}

#[cfg(feature = "async")]
impl Event {
    /// [`wait`](Self::wait) as a future: ready once the flag is set, without
    /// blocking a thread (feature `async`; any executor).
    ///
    /// ```
    /// # fn main() -> Result<(), shmkit::Error> {
    /// let e = shmkit::sync::Event::new()?;
    /// let e2 = e.clone();
    /// std::thread::spawn(move || e2.set());
    /// futures::executor::block_on(e.wait_async());
    /// assert!(e.is_set());
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// If the process cannot start the waiter thread that serves every
    /// pending shmkit future (the OS refused a thread).
    pub fn wait_async(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        use crate::sync::watcher::{self, Watch};
        let e = self.obj.get();
        // SAFETY: both words lie in the event's mapping, which the segment
        // handle kept by the watch owns.
        let watch = unsafe { Watch::new(self.obj.keep(), &e.flag, &e.waiters) };
        // SYNC(event): SeqCst loads; pair with the SeqCst swap in `set`.
        let set = move || e.flag.load(Ordering::SeqCst) != 0;
        watcher::until(watch, move || set().then_some(()), set, || false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(std::mem::size_of::<RawEvent>(), 8);
        assert_eq!(std::mem::offset_of!(RawEvent, waiters), 4);
    }

    #[test]
    fn set_clear_wait() {
        let e = Event::new().unwrap();
        assert!(!e.is_set());
        let e2 = e.clone();
        let t = std::thread::spawn(move || e2.wait());
        std::thread::sleep(Duration::from_millis(10));
        e.set();
        t.join().unwrap();
        assert!(e.is_set());
        e.clear();
        assert!(!e.wait_timeout(Duration::from_millis(5)));
    }
}

impl crate::region::handle::Travels for Event {}

crate::region::handle::region_handle_archive!(Event, |h| {
    crate::region::handle::reopen_with!(h, Event::builder())
});

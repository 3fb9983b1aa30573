//! [`RwLock`]: many readers or one writer, across processes, surviving the
//! death of any of them.
//!
//! The state is a [`RobustState`]: its cells count the readers, name the
//! writer and the writer waiting (new readers queue behind a waiting writer,
//! so writers are not starved); its holders are the reading threads with
//! their read counts. Every change is a short transaction under a robust
//! lock; waiters sleep until a transaction changes something, and after a
//! slice (10 ms) without news release what dead holders held: a dead
//! writer's lock, a dead waiting writer's claim, a dead reader's reads.

#[cfg(feature = "async")]
mod asynch;
#[cfg(feature = "async")]
pub use asynch::{ProcessReadGuard, ProcessWriteGuard};

use crate::error::Result;
use crate::region::{Kind, RegionOptions, Segment};
use crate::sync::identity;
use crate::sync::mutex::spec_of;
use crate::sync::robust_state::{RobustState, SLOTS, Tx};
use crate::sync::wait;
use bytemuck::Pod;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lock's shared state.
#[repr(C)]
#[derive(Debug)]
pub struct RawRwLock {
    state: RobustState,
}

const READERS: usize = 0;
const WRITER: usize = 1;
const WRITER_WAITING: usize = 2;

fn try_read(tx: &mut Tx<'_>, me: u64) -> Option<usize> {
    let waiting = tx.get(WRITER_WAITING);
    if tx.get(WRITER) != 0 || (waiting != 0 && waiting != me) {
        return None;
    }
    let slot = tx.slot_of(me, |who, _| who == 0)?;
    let (_, held) = tx.holder(slot);
    tx.set(READERS, tx.get(READERS).saturating_add(1));
    tx.set_holder(slot, me, held.saturating_add(1));
    Some(slot)
}

fn try_write(tx: &mut Tx<'_>, me: u64, announce: bool) -> Option<()> {
    let waiting = tx.get(WRITER_WAITING);
    if tx.get(WRITER) == 0 && tx.get(READERS) == 0 {
        tx.set(WRITER, me);
        if waiting == me {
            tx.set(WRITER_WAITING, 0);
        }
        return Some(());
    }
    if announce && waiting == 0 {
        tx.set(WRITER_WAITING, me);
    }
    None
}

/// Releases what dead threads held: the writer's lock, a waiting writer's
/// claim, readers' reads.
fn reap(tx: &mut Tx<'_>) {
    for cell in [WRITER, WRITER_WAITING] {
        let who = tx.get(cell);
        if who != 0 && !identity::alive(who) {
            tx.set(cell, 0);
            tx.commit();
        }
    }
    tx.reap_dead(|tx, _, reads| {
        tx.set(READERS, tx.get(READERS).saturating_sub(reads));
    });
    // Every read is recorded: the count is the holders' sum (a count a peer
    // scribbled on would otherwise keep writers out for good).
    let sum = (0..SLOTS).fold(0u64, |n, slot| n.saturating_add(tx.holder(slot).1));
    if tx.get(READERS) != sum {
        tx.set(READERS, sum);
        tx.commit();
    }
}

impl RawRwLock {
    fn state(&self) -> &RobustState {
        &self.state
    }

    fn read_unlock(&self, slot: usize, me: u64) {
        self.state.transact(|tx| {
            let (who, held) = tx.holder(slot);
            // A forked child's copy of a guard is not its own.
            if who != me || held == 0 {
                return;
            }
            tx.set(READERS, tx.get(READERS).saturating_sub(1));
            if held == 1 {
                tx.set_holder(slot, 0, 0);
            } else {
                tx.set_holder(slot, me, held - 1);
            }
        });
    }

    fn write_unlock(&self, me: u64) {
        self.state.transact(|tx| {
            if tx.get(WRITER) == me {
                tx.set(WRITER, 0);
            }
        });
    }

    fn write(&self, me: u64, deadline: Option<Instant>) -> bool {
        let got = self
            .state
            .wait_for(deadline, |tx| try_write(tx, me, true), reap)
            .is_some();
        if !got {
            // Take back our "writer waiting" so readers are not held off by a
            // writer that left; other waiting writers set it again on retry.
            self.state.transact(|tx| {
                if tx.get(WRITER_WAITING) == me {
                    tx.set(WRITER_WAITING, 0);
                }
            });
        }
        got
    }
}

/// Builder for [`RwLock`].
#[derive(Debug)]
pub struct RwLockBuilder<T> {
    opts: RegionOptions,
    _t: PhantomData<T>,
}

impl<T: Pod> RwLockBuilder<T> {
    region_setters!();

    /// The region's spec: one `RawRwLock` control block and one `T`.
    fn spec(&self) -> crate::region::Spec {
        spec_of::<RawRwLock, T>(Kind::RwLock, 0, &self.opts)
    }

    /// Creates the lock guarding `value`.
    ///
    /// # Errors
    /// As for any region: [`RegionError::AlreadyExists`](crate::error::RegionError::AlreadyExists) if the name is
    /// taken, [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name,
    /// [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if /dev/shm (or the file's filesystem) is too
    /// small, [`RegionError::PermissionDenied`](crate::error::RegionError::PermissionDenied) or
    /// [`Error::Io`](crate::Error::Io) if the OS refuses.
    pub fn create(self, value: T) -> Result<RwLock<T>> {
        let spec = self.spec();
        let seg = Segment::create(&self.opts, &spec, 1, |c, d| {
            // SAFETY: unpublished control block (a RawRwLock, which is one
            // RobustState) and data area of the right sizes.
            unsafe {
                RobustState::init(c.cast(), &[]);
                d.cast::<T>().write(value);
            }
            Ok(())
        })?;
        Ok(RwLock::from_segment(seg))
    }

    /// Opens an existing named lock.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name or none (open needs a name
    /// or a path); [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a read-write
    /// lock, [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type; and the
    /// other open errors of any region ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(self) -> Result<RwLock<T>> {
        let spec = self.spec();
        Ok(RwLock::from_segment(Segment::open(
            &self.opts,
            &spec,
            Some(1),
        )?))
    }

    /// Opens a read-write lock from a descriptor inherited across `exec`: what a child
    /// started with [`spawn`](crate::process::spawn) does with an anonymous
    /// one passed as an argument (see [`Segment::inheritable_fd`](crate::region::Segment::inheritable_fd)).
    ///
    /// # Errors
    /// The checks of an open: [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a read-write lock, [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type;
    /// [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if it was never published;
    /// [`Error::Io`](crate::Error::Io) if `fstat` or `mmap` fails.
    pub fn from_fd(self, fd: std::os::fd::OwnedFd) -> Result<RwLock<T>> {
        let spec = self.spec();
        Ok(RwLock::from_segment(Segment::from_fd(
            fd,
            &self.opts,
            &spec,
            Some(1),
        )?))
    }
}

/// A readers-writer lock guarding a `T: Pod` in shared memory.
///
/// Robust to death: a thread or process that dies holding it (reading or
/// writing) or waiting to write is released by the others within about
/// 10 ms of one of them waiting for it. A writer that died may have left the
/// data half written: unlike [`Mutex`](crate::sync::Mutex), an RwLock does
/// not report it. At most 64 threads hold read locks at once; more wait.
/// A thread that asks for the write lock while it holds a read lock waits
/// for itself forever, as with std's.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), shmkit::Error> {
/// let l = shmkit::sync::RwLock::new([0u8; 4])?;
/// l.write()[0] = 7;
/// assert_eq!(l.read()[0], 7);
/// # Ok(()) }
/// ```
pub struct RwLock<T> {
    seg: Arc<Segment>,
    _t: PhantomData<T>,
}

impl<T> Clone for RwLock<T> {
    fn clone(&self) -> Self {
        RwLock {
            seg: self.seg.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RwLock")
            .field("segment", &self.seg.id())
            .finish()
    }
}

impl<T: Pod> RwLock<T> {
    /// A new anonymous lock guarding `value`.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the OS refuses the memory (`memfd_create`, `ftruncate`,
    /// `mmap`).
    pub fn new(value: T) -> Result<Self> {
        Self::builder().create(value)
    }

    /// A builder for named or otherwise configured locks.
    #[must_use]
    pub fn builder() -> RwLockBuilder<T> {
        RwLockBuilder {
            opts: RegionOptions::default(),
            _t: PhantomData,
        }
    }

    /// Opens the named lock `name`.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name;
    /// [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a read-write lock,
    /// [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if it holds another type; and the other
    /// open errors of any region ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    fn from_segment(seg: Segment) -> Self {
        RwLock {
            seg: Arc::new(seg),
            _t: PhantomData,
        }
    }

    fn raw(&self) -> &RawRwLock {
        // SAFETY: a Kind::RwLock region's control block is a RawRwLock
        // (atomics only), initialised before publication.
        unsafe { &*self.seg.control_ptr().cast::<RawRwLock>() }
    }

    /// Shared access, blocking while a writer holds or waits for the lock.
    #[must_use]
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.read_until(None).expect("no deadline")
    }

    fn read_until(&self, deadline: Option<Instant>) -> Option<RwLockReadGuard<'_, T>> {
        let me = identity::me();
        let slot = self
            .raw()
            .state()
            .wait_for(deadline, |tx| try_read(tx, me), reap)?;
        Some(RwLockReadGuard {
            lock: self.raw(),
            data: self.seg.data_ptr().cast(),
            slot,
            me,
        })
    }

    /// Shared access if available now.
    #[must_use]
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        let me = identity::me();
        let slot = self.raw().state().transact(|tx| try_read(tx, me))?;
        Some(RwLockReadGuard {
            lock: self.raw(),
            data: self.seg.data_ptr().cast(),
            slot,
            me,
        })
    }

    /// Shared access, waiting at most `timeout`.
    #[must_use]
    pub fn read_timeout(&self, timeout: Duration) -> Option<RwLockReadGuard<'_, T>> {
        self.read_until(wait::deadline_after(timeout))
    }

    fn write_guard(&self, me: u64) -> RwLockWriteGuard<'_, T> {
        RwLockWriteGuard {
            lock: self.raw(),
            data: self.seg.data_ptr().cast(),
            me,
        }
    }

    /// Exclusive access, blocking.
    #[must_use]
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        let me = identity::me();
        self.raw().write(me, None);
        self.write_guard(me)
    }

    /// Exclusive access if available now.
    #[must_use]
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        let me = identity::me();
        self.raw()
            .state()
            .transact(|tx| try_write(tx, me, false))
            .map(|()| self.write_guard(me))
    }

    /// Exclusive access, waiting at most `timeout`.
    #[must_use]
    pub fn write_timeout(&self, timeout: Duration) -> Option<RwLockWriteGuard<'_, T>> {
        let me = identity::me();
        self.raw()
            .write(me, wait::deadline_after(timeout))
            .then(|| self.write_guard(me))
    }

    /// The segment behind the lock.
    #[must_use]
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

/// Shared access to an [`RwLock`]'s data; released on drop.
#[derive(Debug)]
pub struct RwLockReadGuard<'a, T> {
    lock: &'a RawRwLock,
    data: *const T,
    slot: usize,
    me: u64,
}

impl<T> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold a read lock: cooperating processes do not write.
        unsafe { &*self.data }
    }
}

impl<T> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.read_unlock(self.slot, self.me);
    }
}

/// Exclusive access to an [`RwLock`]'s data; released on drop.
#[derive(Debug)]
pub struct RwLockWriteGuard<'a, T> {
    lock: &'a RawRwLock,
    data: *mut T,
    me: u64,
}

impl<T> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the write lock.
        unsafe { &*self.data }
    }
}

impl<T> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the write lock exclusively.
        unsafe { &mut *self.data }
    }
}

impl<T> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.write_unlock(self.me);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(
            std::mem::size_of::<RawRwLock>(),
            std::mem::size_of::<RobustState>()
        );
        assert_eq!(std::mem::offset_of!(RawRwLock, state), 0);
    }

    #[test]
    fn dead_readers_and_writers_are_released() {
        let l = RwLock::new(0u64).unwrap();
        // A thread that ends holding reads (leaked guards) is dead.
        std::thread::scope(|s| {
            s.spawn(|| std::mem::forget((l.read(), l.read())));
        });
        assert!(l.try_write().is_none());
        *l.write_timeout(Duration::from_secs(30))
            .expect("reads released") = 1;
        // A thread that ends holding the write lock.
        std::thread::scope(|s| {
            s.spawn(|| std::mem::forget(l.write()));
        });
        assert!(l.try_read().is_none());
        assert_eq!(
            *l.read_timeout(Duration::from_secs(30)).expect("released"),
            1
        );
    }

    #[test]
    fn readers_share_writers_exclude() {
        let l = RwLock::new(0u64).unwrap();
        let r1 = l.read();
        let r2 = l.try_read().expect("second reader");
        assert!(l.try_write().is_none());
        assert!(l.write_timeout(Duration::from_millis(5)).is_none());
        // The timed-out writer withdrew its claim: readers still get in.
        assert!(l.try_read().is_some());
        drop((r1, r2));
        *l.write() = 9;
        let w = l.write();
        assert!(l.try_read().is_none());
        drop(w);
        assert_eq!(*l.read(), 9);
    }

    #[test]
    fn writer_waits_for_readers_then_gets_in() {
        let l = RwLock::new(0u32).unwrap();
        let r = l.read();
        let l2 = l.clone();
        let t = std::thread::spawn(move || {
            *l2.write() += 1;
        });
        std::thread::sleep(Duration::from_millis(20));
        // A waiting writer holds new readers off.
        assert!(l.try_read().is_none());
        drop(r);
        t.join().unwrap();
        assert_eq!(*l.read(), 1);
    }
}

impl<T: Pod> crate::region::handle::Travels for RwLock<T> {}

crate::region::handle::region_handle_archive!(RwLock<T: Pod>, |h| {
    crate::region::handle::reopen_with!(h, RwLock::builder())
});

//! [`RwLock`]: many readers or one writer, across processes, on one futex word.
//!
//! State word: bits 0..30 count readers, bit 30 says a writer is waiting (new
//! readers then queue behind it, so writers are not starved), bit 31 says a
//! writer holds the lock. Unlocks that may unblock somebody wake all sleepers,
//! who re-check: simple and correct; contention on an RwLock across processes
//! is expected to be light.

use crate::error::Result;
use crate::region::{Kind, RegionOptions, Segment};
use crate::sync::mutex::spec_of;
use crate::sync::wait::{self, Attempt, block_on};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const WRITER: u32 = 1 << 31;
const WRITER_WAITING: u32 = 1 << 30;
const READERS: u32 = WRITER_WAITING - 1;

/// The lock's shared state.
#[repr(C)]
#[derive(Debug)]
pub struct RawRwLock {
    state: AtomicU32,
    waiters: AtomicU32,
}

impl RawRwLock {
    fn try_read(&self) -> Attempt {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & (WRITER | WRITER_WAITING) != 0 || s & READERS == READERS {
                return Attempt::WaitWhile(s);
            }
            // SYNC(rw-acquire): Acquire pairs with the Release in the unlocks.
            match self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Attempt::Done,
                Err(now) => s = now,
            }
        }
    }

    fn try_write(&self, announce: bool) -> Attempt {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & (WRITER | READERS) == 0 {
                // Free: take it (clearing our own or another writer's waiting
                // bit; waiting writers set it again when they retry).
                // SYNC(rw-acquire): as in try_read.
                match self.state.compare_exchange_weak(
                    s,
                    WRITER,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Attempt::Done,
                    Err(now) => s = now,
                }
            } else if announce && s & WRITER_WAITING == 0 {
                match self.state.compare_exchange_weak(
                    s,
                    s | WRITER_WAITING,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Attempt::WaitWhile(s | WRITER_WAITING),
                    Err(now) => s = now,
                }
            } else {
                return Attempt::WaitWhile(s);
            }
        }
    }

    fn read_unlock(&self) {
        // SYNC(rw-release): Release pairs with the Acquire in try_write.
        let prev = self.state.fetch_sub(1, Ordering::SeqCst);
        if prev & READERS == 1 {
            wait::wake(&self.state, &self.waiters, u32::MAX);
        }
    }

    fn write_unlock(&self) {
        // SYNC(rw-release): Release pairs with the Acquire in try_read/try_write.
        self.state.fetch_and(!WRITER, Ordering::SeqCst);
        wait::wake(&self.state, &self.waiters, u32::MAX);
    }

    fn write(&self, deadline: Option<Instant>) -> bool {
        let got = block_on(&self.state, &self.waiters, deadline, || {
            self.try_write(true)
        });
        if !got {
            // Take back our "writer waiting" so readers are not held off by a
            // writer that left; other waiting writers set it again on retry.
            self.state.fetch_and(!WRITER_WAITING, Ordering::SeqCst);
            wait::wake(&self.state, &self.waiters, u32::MAX);
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

    /// Creates the lock guarding `value`.
    pub fn create(self, value: T) -> Result<RwLock<T>> {
        let spec = spec_of::<RawRwLock, T>(Kind::RwLock, 0, &self.opts);
        let seg = Segment::create(&self.opts, &spec, 1, |c, d| {
            // SAFETY: unpublished control block and data area of the right sizes.
            unsafe {
                c.cast::<RawRwLock>().write(RawRwLock {
                    state: AtomicU32::new(0),
                    waiters: AtomicU32::new(0),
                });
                d.cast::<T>().write(value);
            }
            Ok(())
        })?;
        Ok(RwLock::from_segment(seg))
    }

    /// Opens an existing named lock.
    pub fn open(self) -> Result<RwLock<T>> {
        let spec = spec_of::<RawRwLock, T>(Kind::RwLock, 0, &self.opts);
        Ok(RwLock::from_segment(Segment::open(
            &self.opts,
            &spec,
            Some(1),
        )?))
    }
}

/// A readers-writer lock guarding a `T: Pod` in shared memory.
///
/// Not robust to death: a process that dies holding it leaves it held (the
/// timeout forms let the others notice). Use [`Mutex`](crate::sync::Mutex)
/// where a holder may be killed.
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
    pub fn new(value: T) -> Result<Self> {
        Self::builder().create(value)
    }

    /// A builder for named or otherwise configured locks.
    pub fn builder() -> RwLockBuilder<T> {
        RwLockBuilder {
            opts: RegionOptions::default(),
            _t: PhantomData,
        }
    }

    /// Opens the named lock `name`.
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

    fn read_guard(&self) -> RwLockReadGuard<'_, T> {
        RwLockReadGuard {
            lock: self.raw(),
            data: self.seg.data_ptr().cast(),
        }
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, T> {
        RwLockWriteGuard {
            lock: self.raw(),
            data: self.seg.data_ptr().cast(),
        }
    }

    /// Shared access, blocking while a writer holds or waits for the lock.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        let r = self.raw();
        block_on(&r.state, &r.waiters, None, || r.try_read());
        self.read_guard()
    }

    /// Shared access if available now.
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        (self.raw().try_read() == Attempt::Done).then(|| self.read_guard())
    }

    /// Shared access, waiting at most `timeout`.
    pub fn read_timeout(&self, timeout: Duration) -> Option<RwLockReadGuard<'_, T>> {
        let r = self.raw();
        block_on(&r.state, &r.waiters, wait::deadline_after(timeout), || {
            r.try_read()
        })
        .then(|| self.read_guard())
    }

    /// Exclusive access, blocking.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.raw().write(None);
        self.write_guard()
    }

    /// Exclusive access if available now.
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        (self.raw().try_write(false) == Attempt::Done).then(|| self.write_guard())
    }

    /// Exclusive access, waiting at most `timeout`.
    pub fn write_timeout(&self, timeout: Duration) -> Option<RwLockWriteGuard<'_, T>> {
        self.raw()
            .write(wait::deadline_after(timeout))
            .then(|| self.write_guard())
    }

    /// The segment behind the lock.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

/// Shared access to an [`RwLock`]'s data; released on drop.
#[derive(Debug)]
pub struct RwLockReadGuard<'a, T> {
    lock: &'a RawRwLock,
    data: *const T,
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
        self.lock.read_unlock();
    }
}

/// Exclusive access to an [`RwLock`]'s data; released on drop.
#[derive(Debug)]
pub struct RwLockWriteGuard<'a, T> {
    lock: &'a RawRwLock,
    data: *mut T,
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
        self.lock.write_unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(std::mem::size_of::<RawRwLock>(), 8);
        assert_eq!(std::mem::offset_of!(RawRwLock, waiters), 4);
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

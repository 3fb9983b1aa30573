//! The read-write lock's futures (feature `async`): [`RwLock::read_async`]
//! and [`RwLock::write_async`], whose guards are recorded for the
//! **process**, so they are `Send` and may be held across `.await` while
//! the task moves between threads.
//!
//! That is sound here, unlike for [`Mutex`](crate::sync::Mutex), because
//! nothing about an `RwLock` compares the recorded holder with the calling
//! thread: a guard gives back exactly what it recorded (its holder word and
//! slot), and a holder is released by others only once its process is
//! dead. The main thread's identity is the process's, so its blocking reads
//! share the tasks' record (whose count stays exact). As for
//! [`ProcessPermit`](crate::sync::ProcessPermit): a process whose main
//! thread ends before the others (`pthread_exit`) reads as dead, and what
//! its guards hold is released while other threads still hold them.

use super::{READERS, RawRwLock, RwLock, WRITER, WRITER_WAITING, reap, try_read, try_write};
use crate::error::Result;
use crate::region::Segment;
use crate::sync::identity;
use crate::sys::proc;
use bytemuck::Pod;
use std::future::Future;
use std::ops::{Deref, DerefMut};

/// A read lock taken with [`RwLock::read_async`] (feature `async`):
/// recorded for the process, `Send`, may be held across `.await`. Released
/// on drop, or by others once the process has died.
#[derive(Debug)]
pub struct ProcessReadGuard<'a, T> {
    lock: &'a RawRwLock,
    data: *const T,
    slot: usize,
    me: u64,
    /// The process that took it (a forked child's copy is not its own).
    pid: u32,
}

// SAFETY: the lock is recorded for the process, not a thread: any thread of
// it may use and drop the guard (the drop gives back the recorded slot and
// word); sharing the guard shares `&T`, hence `T: Sync`.
unsafe impl<T: Sync> Send for ProcessReadGuard<'_, T> {}
// SAFETY: as for Send: `&guard` gives only `&T`.
unsafe impl<T: Sync> Sync for ProcessReadGuard<'_, T> {}

impl<T> Deref for ProcessReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold a read lock: cooperating processes do not write.
        unsafe { &*self.data }
    }
}

impl<T> Drop for ProcessReadGuard<'_, T> {
    fn drop(&mut self) {
        if proc::pid() == self.pid {
            self.lock.read_unlock(self.slot, self.me);
        }
    }
}

/// The write lock taken with [`RwLock::write_async`] (feature `async`):
/// recorded for the process, `Send`, may be held across `.await`. Released
/// on drop, or by others once the process has died.
#[derive(Debug)]
pub struct ProcessWriteGuard<'a, T> {
    lock: &'a RawRwLock,
    data: *mut T,
    me: u64,
    /// The process that took it (a forked child's copy is not its own).
    pid: u32,
}

// SAFETY: as for `ProcessReadGuard`; the guard gives `&mut T`, which moves
// with it, hence `T: Send`.
unsafe impl<T: Send> Send for ProcessWriteGuard<'_, T> {}
// SAFETY: `&guard` gives only `&T`.
unsafe impl<T: Sync> Sync for ProcessWriteGuard<'_, T> {}

impl<T> Deref for ProcessWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the write lock.
        unsafe { &*self.data }
    }
}

impl<T> DerefMut for ProcessWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the write lock exclusively.
        unsafe { &mut *self.data }
    }
}

impl<T> Drop for ProcessWriteGuard<'_, T> {
    fn drop(&mut self) {
        if proc::pid() == self.pid {
            self.lock.write_unlock(self.me);
        }
    }
}

/// Takes back a pending writer's "writer waiting" claim when its future is
/// dropped before it got the lock (as a blocking writer that times out
/// does): new readers would otherwise queue behind a writer that left.
struct Withdraw<'a> {
    lock: &'a RawRwLock,
    seg: &'a Segment,
    me: u64,
    /// The process that claimed (a forked child's copy is not its own).
    pid: u32,
    armed: bool,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        // Not on a segment a peer cut (its pages would fault).
        if self.armed && proc::pid() == self.pid && self.seg.check().is_ok() {
            self.lock.state().transact(|tx| {
                if tx.get(WRITER_WAITING) == self.me {
                    tx.set(WRITER_WAITING, 0);
                }
            });
        }
    }
}

/// The futures (feature `async`): they wait without a thread of their own
/// (the process's waiter threads sleep on the lock's state word).
impl<T: Pod> RwLock<T> {
    /// [`read`](Self::read) as a future: a [`ProcessReadGuard`], recorded
    /// for this process (so it may be held across `.await`). Readers queue
    /// behind a writer waiting in another process or thread. Dropping the
    /// future before it completes takes nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), shmkit::Error> {
    /// let l = shmkit::sync::RwLock::new(7u32)?;
    /// let r = futures::executor::block_on(l.read_async())?;
    /// assert_eq!(*r, 7);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated) if
    /// another process cut the lock's segment.
    ///
    /// # Panics
    ///
    /// If the process cannot start the waiter thread that serves every
    /// pending shmkit future (the OS refused a thread).
    pub fn read_async(&self) -> impl Future<Output = Result<ProcessReadGuard<'_, T>>> + Send + '_ {
        let me = identity::process();
        let raw = self.raw();
        let st = raw.state();
        let seg = self.segment();
        let data = self.seg.data_ptr() as usize;
        let slot = st.until(
            self.seg.clone(),
            move |tx| {
                if let Err(e) = seg.check() {
                    return Some(Err(e));
                }
                try_read(tx, me).map(Ok)
            },
            reap,
            // As the attempt: no writer, none waiting but us, a slot.
            move || {
                let waiting = st.peek(WRITER_WAITING);
                (st.peek(WRITER) == 0 && (waiting == 0 || waiting == me) && st.peek_slot_for(me))
                    || seg.check().is_err()
            },
        );
        async move {
            let slot = slot.await?;
            Ok(ProcessReadGuard {
                lock: raw,
                data: data as *const T,
                slot,
                me,
                pid: proc::pid(),
            })
        }
    }

    /// [`write`](Self::write) as a future: a [`ProcessWriteGuard`], recorded
    /// for this process (so it may be held across `.await`). While it waits
    /// it claims "writer waiting", so new readers queue behind it; dropping
    /// the future before it completes takes that claim back and takes
    /// nothing. Another task of this process holding the write lock is
    /// waited for; a task that awaits it while holding it waits forever.
    ///
    /// ```
    /// # fn main() -> Result<(), shmkit::Error> {
    /// let l = shmkit::sync::RwLock::new(7u32)?;
    /// futures::executor::block_on(async {
    ///     let mut w = l.write_async().await?;
    ///     *w += 1;
    ///     Ok::<_, shmkit::Error>(())
    /// })?;
    /// assert_eq!(*l.read(), 8);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`read_async`](Self::read_async).
    ///
    /// # Panics
    ///
    /// As [`read_async`](Self::read_async).
    pub fn write_async(
        &self,
    ) -> impl Future<Output = Result<ProcessWriteGuard<'_, T>>> + Send + '_ {
        let me = identity::process();
        let raw = self.raw();
        let st = raw.state();
        let seg = self.segment();
        let data = self.seg.data_ptr() as usize;
        let wait = st.until(
            self.seg.clone(),
            move |tx| {
                if let Err(e) = seg.check() {
                    return Some(Err(e));
                }
                try_write(tx, me, true).map(Ok)
            },
            reap,
            move || (st.peek(WRITER) == 0 && st.peek(READERS) == 0) || seg.check().is_err(),
        );
        async move {
            let mut withdraw = Withdraw {
                lock: raw,
                seg,
                me,
                pid: proc::pid(),
                armed: true,
            };
            let got = wait.await;
            // Taken (the attempt cleared our claim), or the segment was cut.
            withdraw.armed = false;
            got?;
            Ok(ProcessWriteGuard {
                lock: raw,
                data: data as *mut T,
                me,
                pid: proc::pid(),
            })
        }
    }
}

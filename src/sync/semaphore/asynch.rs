//! The semaphore's futures (feature `async`): [`Semaphore::acquire_async`]
//! and [`Semaphore::permit_async`], whose [`ProcessPermit`] is recorded for
//! the process rather than a thread.

use super::{Semaphore, VALUE, reap, take_plain, take_recorded};
use crate::error::Result;
use crate::sync::identity;

/// A permit taken with [`Semaphore::permit_async`] (feature `async`):
/// recorded for the **process**, not a thread, so it is `Send` and may be
/// held across `.await` while the task moves between threads. Given back
/// on drop, or by a waiter once the process has died.
///
/// The process is named by its main thread's identity (the thread whose id
/// is the pid): permits taken by the main thread with
/// [`permit`](Semaphore::permit) and by tasks share one record, whose count
/// stays exact. A process whose main thread ends before the others
/// (`pthread_exit`) is taken for dead and its permits are given back.
#[derive(Debug)]
pub struct ProcessPermit<'a> {
    sem: &'a Semaphore,
    slot: usize,
    me: u64,
    /// The process that took it (a forked child's copy is not its own).
    pid: u32,
}

impl ProcessPermit<'_> {
    /// Keeps the permit taken for good, as [`SemaphorePermit::forget`](super::SemaphorePermit::forget).
    pub fn forget(self) {
        let (sem, slot, me, pid) = (self.sem, self.slot, self.me, self.pid);
        std::mem::forget(self);
        sem.forget_record(slot, me, pid);
    }
}

impl Drop for ProcessPermit<'_> {
    fn drop(&mut self) {
        self.sem.give_back(self.slot, self.me, self.pid);
    }
}

/// The futures (feature `async`): they wait without a thread of their own
/// (the process's waiter threads sleep on the semaphore's word).
impl Semaphore {
    /// [`acquire`](Self::acquire) as a future: takes a permit without
    /// recording anybody. Dropping the future before it completes takes
    /// nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), shmkit::Error> {
    /// let s = shmkit::sync::Semaphore::new(0)?;
    /// let s2 = s.clone();
    /// std::thread::spawn(move || s2.release().unwrap());
    /// futures::executor::block_on(s.acquire_async())?;
    /// assert_eq!(s.value(), 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated) if another process cut
    /// the semaphore's segment (its zero pages hold no permits), as for
    /// [`acquire`](Self::acquire).
    ///
    /// # Panics
    ///
    /// If the process cannot start the waiter thread that serves every
    /// pending shmkit future (the OS refused a thread).
    pub fn acquire_async(&self) -> impl std::future::Future<Output = Result<()>> + Send + '_ {
        let st = self.state();
        let seg = self.segment();
        st.until(
            self.obj.keep(),
            move |tx| {
                // A peer's truncation: the zero pages hold no permits, so
                // the wait would never end (as `acquire` checks).
                if let Err(e) = seg.check() {
                    return Some(Err(e));
                }
                take_plain(tx).map(Ok)
            },
            reap,
            move || st.peek(VALUE) > 0 || seg.check().is_err(),
        )
    }

    /// [`permit`](Self::permit) as a future: a [`ProcessPermit`], recorded
    /// for this process (so it may be held across `.await`), given back on
    /// drop or when the process dies. At most 64 holders (threads, or
    /// processes holding `ProcessPermit`s) are recorded at once; more wait.
    /// Dropping the future before it completes takes nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), shmkit::Error> {
    /// let s = shmkit::sync::Semaphore::new(1)?;
    /// let p = futures::executor::block_on(s.permit_async())?;
    /// assert_eq!(s.value(), 0);
    /// drop(p);
    /// assert_eq!(s.value(), 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`acquire_async`](Self::acquire_async).
    ///
    /// # Panics
    ///
    /// As [`acquire_async`](Self::acquire_async).
    pub fn permit_async(
        &self,
    ) -> impl std::future::Future<Output = Result<ProcessPermit<'_>>> + Send + '_ {
        let st = self.state();
        let seg = self.segment();
        let me = identity::process();
        let slot = st.until(
            self.obj.keep(),
            move |tx| {
                if let Err(e) = seg.check() {
                    return Some(Err(e));
                }
                take_recorded(tx, me).map(Ok)
            },
            reap,
            // As the attempt: a permit and a holder slot (free, or ours).
            move || (st.peek(VALUE) > 0 && st.peek_slot_for(me)) || seg.check().is_err(),
        );
        async move {
            Ok(ProcessPermit {
                sem: self,
                slot: slot.await?,
                me,
                pid: crate::sys::proc::pid(),
            })
        }
    }
}

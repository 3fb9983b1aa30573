//! [`Mutex::lock_async`] (feature `async`): a lock taken by a future, whose
//! guard is the blocking lock's [`MutexGuard`] — `!Send`, so it may be held
//! across `.await` only where the task stays on one thread.
//!
//! The owner word names the holding **thread** (relock detection and
//! unlocking compare it with the caller's), so the future records the
//! thread that polls it when it takes the lock, and the guard must be
//! dropped on that thread. Rust checks this: a task that holds the guard
//! across `.await` is not `Send`, so it runs only where a task never moves
//! (a current-thread runtime, `tokio::task::LocalSet`, `spawn_local`); on a
//! multi-thread runtime the guard must be dropped before the next `.await`.
//! Recording the process instead, as [`ProcessPermit`](super::ProcessPermit)
//! does, would make the main thread take a guard held by a task for a
//! forged owner word.
//!
//! A pending future sets the holder's contended bit (as a blocked locker
//! does) and registers the owner word's low half with the process's waiter
//! thread; the holder's unlock wakes it. Another task of the same thread
//! holding the lock is waited for (a blocking `lock` would panic instead):
//! a task that awaits the lock while it holds the guard itself waits
//! forever, as with any async mutex.

use super::lock_word::{self, Locked};
use super::mutex::{LockResult, Mutex, MutexGuard, finish};
use super::raw_mutex::{Acquired, RawMutex};
use super::watcher::{self, Watch};
use crate::sys::clock;
use bytemuck::Pod;
use std::future::Future;

impl RawMutex {
    /// One attempt of an awaiting locker: acquired, or `Err` with the low
    /// half of the owner word as this attempt left it marked (0: look again).
    fn try_lock_marking(&self, waited: bool, look: bool) -> Result<Acquired, u32> {
        let mut host = self.host();
        match self.words.try_lock_marking(&mut host, waited, look) {
            Ok(Locked::Clean) => Ok(Acquired::Clean),
            Ok(Locked::Poisoned) => Ok(Acquired::Poisoned),
            Ok(Locked::Busy | Locked::Relock) => Err(0),
            Err(marked) => Err(marked as u32),
        }
    }
}

impl<T: Pod> Mutex<T> {
    /// [`lock`](Self::lock) as a future. The guard is `!Send`: hold it
    /// across `.await` only on a current-thread runtime or a `LocalSet`
    /// (the compiler refuses a `Send` task that does); see the module's
    /// notes. Dropping the future before it completes takes nothing.
    ///
    /// A holder that died is noticed within the waiter's look (50 ms), then
    /// the future takes the lock with [`OwnerDied`](super::OwnerDied).
    ///
    /// ```
    /// # fn main() -> Result<(), shmkit::Error> {
    /// let m = shmkit::sync::Mutex::new(1u64)?;
    /// let held = m.lock().unwrap();
    /// let m2 = m.clone();
    /// let t = std::thread::spawn(move || {
    ///     futures::executor::block_on(async {
    ///         let mut g = m2.lock_async().await.unwrap();
    ///         *g += 1;
    ///     })
    /// });
    /// std::thread::sleep(std::time::Duration::from_millis(10));
    /// drop(held);
    /// t.join().unwrap();
    /// assert_eq!(*m.lock().unwrap(), 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`OwnerDied`](super::OwnerDied) carrying the guard if a holder died
    /// and the data has not been marked consistent since.
    ///
    /// # Panics
    ///
    /// If the process cannot start the waiter thread that serves every
    /// pending shmkit future (the OS refused a thread).
    pub fn lock_async(&self) -> impl Future<Output = LockResult<MutexGuard<'_, T>>> + Send + '_ {
        let raw = self.raw();
        // SAFETY: the owner word lies in the mutex's mapping, which `keep`
        // (the segment) keeps mapped.
        let watch = unsafe { Watch::low_half(self.keep(), &raw.words.owner) };
        // The address, not `&self`: the future stays `Send` whatever `T`
        // is (it holds no `T`; the guard it returns is `!Send`).
        let data = self.data() as usize;
        let mut waited = false;
        // The marked word last seen and since when (coarse clock, ns): its
        // holder's liveness is checked once it has stood for a slice, not
        // at every poll (each check reads `/proc`).
        let mut standing: Option<(u32, u64)> = None;
        watcher::until_marked(watch, move || {
            let now = clock::monotonic_coarse_ns();
            // The first attempt looks too (a future dropped before its
            // first 50 ms look must still notice a dead holder).
            let look = standing.is_none_or(|(_, since)| {
                now.saturating_sub(since) >= lock_word::SLICE.as_nanos() as u64
            });
            let acquired = raw.try_lock_marking(waited, look).inspect_err(|&marked| {
                waited = true;
                if look || standing.is_none_or(|(word, _)| word != marked) {
                    standing = Some((marked, now));
                }
            })?;
            // SAFETY: this thread holds the lock (taken just now, on the
            // polling thread, which receives the guard); the data is one T
            // in the mapping, guarded by this mutex.
            Ok(finish(acquired, unsafe {
                MutexGuard::new(raw, data as *mut T)
            }))
        })
    }
}

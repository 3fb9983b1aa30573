//! [`OwnerLock`]: a small process-shared lock for shmkit's own rare paths
//! (queue recovery), that trusts nothing a peer can write.
//!
//! A robust pthread mutex keeps glibc's state in shared memory: a peer that
//! scribbles over it can make `pthread_mutex_lock` wait forever (a lock word
//! naming no real owner) or fail with `EINVAL`. This lock is one word, `0`
//! when free, else the holder's thread id and the low 32 bits of that
//! thread's start time. A waiter that finds the word unchanged for a while
//! checks `/proc/<tid>/stat`: if no live thread has that id and start time —
//! the holder died, or the word is garbage — it takes the lock over with a
//! compare-and-swap. Whatever a peer writes by accident, a locker gets the
//! lock or waits only for a live holder. (A peer that deliberately names a
//! live thread with its start time can keep the lock held, as it could by
//! taking it and never letting go.)
//!
//! It is meant for short, idempotent critical sections (a taker-over may find
//! the previous holder's work half done) and polls instead of sleeping on a
//! futex: it is not a general-purpose mutex.

use crate::sync::identity::{alive as holder_alive, me};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The shared word, padded to its own cache line.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct OwnerLock {
    word: AtomicU64,
    _pad: [u64; 7],
}

/// How long a waiter sleeps between looks.
const POLL: Duration = Duration::from_micros(100);
/// Looks between liveness checks of the holder (about 10 ms).
const CHECK_EVERY: u32 = 100;

impl OwnerLock {
    /// A free lock (the zeroed state of a fresh segment is also free).
    #[cfg(test)]
    pub(crate) const fn new() -> Self {
        OwnerLock {
            word: AtomicU64::new(0),
            _pad: [0; 7],
        }
    }

    /// Blocks until held; returns whether it was taken over from a holder
    /// that is not alive (dead, or a garbage word).
    pub(crate) fn lock(&self) -> bool {
        let me = me();
        let mut looks = 0u32;
        let mut spins = crate::sync::wait::Backoff::new();
        loop {
            let seen = self.word.load(Ordering::Relaxed);
            if seen == 0 {
                if self.take(0, me) {
                    return false;
                }
                continue;
            }
            if seen == me {
                // Our own id: a word a peer forged (we never lock twice), or
                // left by a dead thread whose id and start we now reuse
                // (impossible: the start time differs). Take it.
                if self.take(seen, me) {
                    return true;
                }
                continue;
            }
            if spins.spin() {
                continue;
            }
            looks = looks.wrapping_add(1);
            if looks.is_multiple_of(CHECK_EVERY) && !holder_alive(seen) && self.take(seen, me) {
                return true;
            }
            std::thread::sleep(POLL);
        }
    }

    fn take(&self, from: u64, me: u64) -> bool {
        // SYNC: Acquire pairs with the Release in `unlock`: the previous
        // holder's writes are visible to us.
        self.word
            .compare_exchange(from, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Releases the lock if this thread still holds it (a peer may have
    /// overwritten the word; then there is nothing of ours to release).
    pub(crate) fn unlock(&self) {
        let _ = self
            .word
            .compare_exchange(me(), 0, Ordering::Release, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, size_of};
    use std::sync::Arc;

    #[test]
    fn layout() {
        assert_eq!(size_of::<OwnerLock>(), 64);
        assert_eq!(align_of::<OwnerLock>(), 64);
    }

    #[test]
    fn excludes_threads() {
        let l = Arc::new((OwnerLock::new(), AtomicU64::new(0)));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        l.0.lock();
                        // A non-atomic read-modify-write under the lock.
                        let v = l.1.load(Ordering::Relaxed);
                        l.1.store(v + 1, Ordering::Relaxed);
                        l.0.unlock();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(l.1.load(Ordering::Relaxed), 8000);
    }

    #[test]
    fn garbage_and_dead_holders_are_taken_over() {
        let l = OwnerLock::new();
        // A tid that does not exist, and a live tid with a wrong start time.
        for garbage in [
            u64::MAX,
            (u64::from(i32::MAX as u32 - 7) << 32) | 5,
            (me() & !0xffff_ffff) | 0xdead,
            (1u64 << 32) | 0xffff_ffff,
            // tid 2 (kthreadd outside containers) and tid 1 with start 0:
            // boot-time threads a garbage word must not make us wait for.
            2u64 << 32,
            1u64 << 32,
        ] {
            l.word.store(garbage, Ordering::Relaxed);
            assert!(l.lock(), "{garbage:#x} was waited for");
            l.unlock();
            assert_eq!(l.word.load(Ordering::Relaxed), 0);
        }
        // A thread that ended holding it.
        let l = Arc::new(l);
        let l2 = l.clone();
        std::thread::spawn(move || {
            l2.lock();
        })
        .join()
        .unwrap();
        assert!(l.lock());
        l.unlock();
    }

    #[test]
    fn unlock_leaves_a_word_that_is_not_ours() {
        let l = OwnerLock::new();
        l.lock();
        l.word.store(42 << 32, Ordering::Relaxed);
        l.unlock();
        assert_eq!(l.word.load(Ordering::Relaxed), 42 << 32);
    }
}

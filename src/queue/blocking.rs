//! Sleeping on a shared futex word and waking its sleepers, for the queue
//! and the pipe.

use crate::sys::futex;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::Instant;

/// Sleeps on `word` (which held `seen` before the caller's failed attempt)
/// until woken, `ready()` holds, or `until` passes.
pub(crate) fn sleep_until(
    word: &AtomicU32,
    waiters: &AtomicU32,
    seen: u32,
    until: Instant,
    ready: impl Fn() -> bool,
) {
    // SYNC(waiters): the SeqCst increment, then `ready()` re-checked, pairs
    // with the waker's fence(SeqCst) between its state change and its load of
    // the count (`wake_one`): either we see the change, or the waker sees us
    // and bumps the word.
    waiters.fetch_add(1, Ordering::SeqCst);
    if !ready() {
        let left = until.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            futex::wait(word, seen, Some(left));
        }
    }
    waiters.fetch_sub(1, Ordering::SeqCst);
}

/// Wakes one sleeper on `word` if any sleeps (see [`sleep_until`]).
pub(crate) fn wake_one(word: &AtomicU32, waiters: &AtomicU32) {
    wake(word, waiters, 1);
}

/// [`wake`] without the fence, for a sender whose claim was a SeqCst
/// read-modify-write (the queue's CAS on its head) and whose sleepers
/// judge readiness by that cursor (`Ring::claimed_not_held`): the count is
/// read with SeqCst after the claim, which orders it against a sleeper's
/// SeqCst count and cursor read without a fence (x86: the `lock cmpxchg`
/// of the claim is the barrier; the fence after the commit's plain store
/// waited for the slot's cache line, about a sixth of a u64 message).
pub(crate) fn wake_after_claim(word: &AtomicU32, waiters: &AtomicU32, n: u32) {
    if waiters.load(Ordering::SeqCst) > 0 {
        word.fetch_add(1, Ordering::SeqCst);
        futex::wake(word, n);
    }
}

/// Wakes up to `n` sleepers on `word` if any sleeps (see [`sleep_until`]):
/// after `n` commits (releases), each of which may let one sleeper on.
pub(crate) fn wake(word: &AtomicU32, waiters: &AtomicU32, n: u32) {
    wake_counted(word, waiters, || n);
}

/// [`wake`] of as many sleepers as `n()` says, asked only after the fence
/// and only when someone sleeps.
pub(crate) fn wake_counted(word: &AtomicU32, waiters: &AtomicU32, n: impl FnOnce() -> u32) {
    fence(Ordering::SeqCst);
    if waiters.load(Ordering::Relaxed) > 0 {
        word.fetch_add(1, Ordering::SeqCst);
        futex::wake(word, n());
    }
}

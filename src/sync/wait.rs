//! How every shmkit primitive blocks: a bounded spin, then a shared futex sleep.
//!
//! The spin is short on purpose (DESIGN.md, "Machine limits"): a cross-CPU futex wake costs
//! ~12–16 µs, so a brief spin pays when the other party runs on another CPU;
//! but when both share one CPU the spinner only burns the time slice the other
//! needs, so the spin is capped at 127 `PAUSE`s (a few µs) and skipped entirely
//! on a one-CPU machine. There is no unbounded busy loop anywhere.

use crate::sys::futex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Exponential spin: 1, 2, 4, ... 64 `PAUSE`s, then it says stop.
#[derive(Debug)]
pub(crate) struct Backoff {
    step: u32,
}

const SPIN_LIMIT: u32 = 6;

pub(crate) fn may_spin() -> bool {
    cpus() > 1
}

/// The CPUs this process may run on (read once).
pub(crate) fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { step: 0 }
    }

    /// Spins a little and returns `true`, or returns `false` once the spin
    /// budget is spent (time to sleep).
    pub(crate) fn spin(&mut self) -> bool {
        if self.step > SPIN_LIMIT || !may_spin() {
            return false;
        }
        for _ in 0..(1u32 << self.step) {
            std::hint::spin_loop();
        }
        self.step += 1;
        true
    }
}

/// What an attempt to take a resource found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Taken (or the awaited condition holds).
    Done,
    /// Not yet: sleep while the futex word still holds this value.
    WaitWhile(u32),
}

/// Time left until `deadline`: `Ok(None)` for no deadline, `Err(())` once it
/// has passed.
pub(crate) fn remaining(deadline: Option<Instant>) -> Result<Option<Duration>, ()> {
    match deadline {
        None => Ok(None),
        Some(d) => {
            let now = Instant::now();
            if now >= d { Err(()) } else { Ok(Some(d - now)) }
        }
    }
}

/// `Instant::now() + d`, saturating far in the future to "no deadline".
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// Repeats `attempt` until it returns `Done` (→ `true`) or `deadline` passes
/// (→ `false`), spinning briefly, then sleeping on `word` while it holds the
/// value the attempt reported.
///
/// `waiters` counts sleepers so that wakers can skip the syscall when there are
/// none. Lost wake-ups are impossible: a sleeper increments `waiters`, then
/// re-reads `word` (both SeqCst); a waker changes `word`, then reads `waiters`
/// (both SeqCst) — so either the waker sees the sleeper, or the sleeper sees the
/// new word (and the kernel re-checks the word atomically in FUTEX_WAIT).
pub(crate) fn block_on(
    word: &AtomicU32,
    waiters: &AtomicU32,
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> Attempt,
) -> bool {
    let mut backoff = Backoff::new();
    loop {
        let Attempt::WaitWhile(v) = attempt() else {
            return true;
        };
        if backoff.spin() {
            continue;
        }
        let Ok(timeout) = remaining(deadline) else {
            return false;
        };
        // SYNC(waiters): pairs with the SeqCst load in `wake`.
        waiters.fetch_add(1, Ordering::SeqCst);
        if word.load(Ordering::SeqCst) == v {
            futex::wait(word, v, timeout);
        }
        waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Wakes up to `n` sleepers on `word`, after the caller changed `word` with a
/// SeqCst (or stronger-ordered RMW) operation.
pub(crate) fn wake(word: &AtomicU32, waiters: &AtomicU32, n: u32) {
    // SYNC(waiters): pairs with the SeqCst increment in `block_on`.
    if waiters.load(Ordering::SeqCst) > 0 {
        futex::wake(word, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let mut b = Backoff::new();
        let mut n = 0;
        while b.spin() {
            n += 1;
            assert!(n <= 7);
        }
        assert!(!b.spin());
    }

    #[test]
    fn block_on_times_out_and_succeeds() {
        let w = AtomicU32::new(0);
        let waiters = AtomicU32::new(0);
        let d = deadline_after(Duration::from_millis(20));
        assert!(!block_on(&w, &waiters, d, || Attempt::WaitWhile(0)));
        assert_eq!(waiters.load(Ordering::SeqCst), 0);
        let mut calls = 0;
        assert!(block_on(&w, &waiters, None, || {
            calls += 1;
            if calls == 3 {
                Attempt::Done
            } else {
                Attempt::WaitWhile(1)
            }
        }));
    }
}

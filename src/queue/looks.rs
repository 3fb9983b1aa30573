//! When this process last looked for dead peers of one queue or pipe, and
//! how waits are cut so that the next look is never late.
//!
//! Looking (recovery) reads `/proc` for every participant, so it is
//! rate-limited: at most once per [`LOOK_EVERY`] per mapping in a process.
//! The record is **private memory** (a field of this process's handle on the
//! mapping, shared by its senders, receivers and threads), never the shared
//! segment: a peer could write any timestamp there and silence our looks.
//!
//! The record lives across calls, so the bound holds whatever the length of
//! each wait: a receiver looping `recv_timeout(1 ms)`, or `try_recv` with its
//! own sleep in between, looks as soon as the last look is [`LOOK_EVERY`]
//! old, exactly like one long blocking `recv`, which sleeps no longer than
//! the next look is due. The precise clock is read only when an operation
//! sleeps; a `try_` that fails (full, empty) reads the coarse clock
//! ([`monotonic_coarse_ns`], 6 ns against 36 ns here), so a look is then at
//! most one kernel tick late; a `try_` that succeeds reads no clock.

use crate::sys::clock::{monotonic_coarse_ns, monotonic_ns};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest time between two looks for dead peers while anything of
/// this process waits on (or keeps failing at) a queue or pipe.
pub(crate) const LOOK_EVERY: Duration = Duration::from_millis(50);

/// One `Instant` and the monotonic clock's nanoseconds at (about) the same
/// moment, to put `Instant`s on the nanosecond scale of the coarse clock.
fn epoch() -> (Instant, u64) {
    static EPOCH: OnceLock<(Instant, u64)> = OnceLock::new();
    *EPOCH.get_or_init(|| (Instant::now(), monotonic_ns()))
}

/// `t` as monotonic nanoseconds, plus one (0 means "never looked").
fn ticks(t: Instant) -> u64 {
    let (e, ns) = epoch();
    (ns + t.saturating_duration_since(e).as_nanos() as u64).saturating_add(1)
}

/// Why a failing wait does not sleep ([`Looks::wait_end`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoSleep {
    /// Its deadline passed.
    Timeout,
    /// A `try_`: it does not wait.
    WouldBlock,
}

/// The private record of the last look.
#[derive(Debug, Default)]
pub(crate) struct Looks {
    /// Monotonic nanoseconds of the last look, plus one; 0 before the first.
    last: AtomicU64,
}

impl Looks {
    pub(crate) fn new() -> Self {
        // Fix the epoch before the first look, so that every recorded time
        // (coarse or precise) is later than it, less a coarse lag.
        epoch();
        Looks::default()
    }

    /// Whether a look is due at `now`; if so, `now` is recorded as the last
    /// look, so that of several threads failing at once only one looks.
    pub(crate) fn take_due(&self, now: Instant) -> bool {
        self.take_due_at(ticks(now))
    }

    /// [`take_due`](Self::take_due) for a `try_` that failed: by the coarse
    /// clock, never the precise one.
    pub(crate) fn take_due_coarse(&self) -> bool {
        self.take_due_at(monotonic_coarse_ns().saturating_add(1))
    }

    /// The look check every failing wait of a queue or pipe starts with:
    /// whether a look is due, and the precise time for a wait that may sleep
    /// (`None` for [`Wait::No`], which reads only the coarse clock).
    pub(crate) fn take_due_for(&self, wait: Wait) -> (bool, Option<Instant>) {
        if wait == Wait::No {
            return (self.take_due_coarse(), None);
        }
        let now = Instant::now();
        (self.take_due(now), Some(now))
    }

    /// What a failing wait that is not due a look does next: the time to
    /// sleep until (the deadline, or the next look if sooner), or why it
    /// does not sleep. `now` as [`take_due_for`](Self::take_due_for) gave
    /// it. The one place queue and pipe waits are cut.
    pub(crate) fn wait_end(&self, wait: Wait, now: Option<Instant>) -> Result<Instant, NoSleep> {
        match (wait, now) {
            (Wait::Until(d), Some(now)) if d <= now => Err(NoSleep::Timeout),
            (Wait::Until(d), _) => Ok(d.min(self.next_due())),
            (Wait::Forever, _) => Ok(self.next_due()),
            (Wait::No, _) => Err(NoSleep::WouldBlock),
        }
    }

    fn take_due_at(&self, t: u64) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && t.saturating_sub(last) < LOOK_EVERY.as_nanos() as u64 {
            return false;
        }
        self.last
            .compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// When the next look is due (a sleeper wakes then at the latest).
    pub(crate) fn next_due(&self) -> Instant {
        let (e, ns) = epoch();
        let at = match self.last.load(Ordering::Relaxed) {
            0 => return e,
            // A coarse time may lie a tick before the epoch: count back.
            last if last > ns => e + Duration::from_nanos(last - 1 - ns),
            last => e
                .checked_sub(Duration::from_nanos(ns - (last - 1)))
                .unwrap_or(e),
        };
        at + LOOK_EVERY
    }
}

/// How long an operation may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Not at all (`try_`): fails with `WouldBlock` (Full, Empty).
    No,
    /// Until this instant: then `Timeout`.
    Until(Instant),
    /// Until it succeeds or the peer is gone.
    Forever,
}

impl Wait {
    /// `timeout` from now (a timeout too large for the clock waits forever).
    pub(crate) fn after(timeout: Duration) -> Wait {
        Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_is_due_at_first_then_once_per_interval() {
        let l = Looks::new();
        epoch(); // before t0, as it is for every look but a process's first
        let t0 = Instant::now();
        assert!(l.take_due(t0));
        assert!(!l.take_due(t0));
        assert!(!l.take_due(t0 + LOOK_EVERY / 2));
        let next = l.next_due();
        assert!(next > t0 && next <= t0 + LOOK_EVERY + Duration::from_micros(1));
        assert!(l.take_due(t0 + LOOK_EVERY));
        assert!(!l.take_due(t0 + LOOK_EVERY));
    }

    #[test]
    fn a_failed_try_looks_by_the_coarse_clock() {
        let l = Looks::new();
        epoch();
        // The first failure looks; the next ones within the interval do not,
        // whichever clock they read.
        assert!(l.take_due_coarse());
        assert!(!l.take_due_coarse());
        assert!(!l.take_due(Instant::now()));
        // A precise look's record is seen by the coarse check too.
        let l = Looks::new();
        assert!(l.take_due(Instant::now()));
        assert!(!l.take_due_coarse());
        std::thread::sleep(LOOK_EVERY + Duration::from_millis(15));
        assert!(l.take_due_coarse());
    }

    #[test]
    fn a_look_recorded_before_the_epoch_is_due_on_time() {
        // A coarse reading lags by up to a tick, so it may lie before the
        // epoch: the next look is still its time + LOOK_EVERY, not later.
        let l = Looks::new();
        let (e, ns) = epoch();
        let lag = Duration::from_millis(3);
        assert!(l.take_due_at(ns - lag.as_nanos() as u64 + 1));
        let want = e.checked_sub(lag).unwrap_or(e) + LOOK_EVERY;
        let got = l.next_due();
        assert!(got <= want + Duration::from_micros(1) && got + Duration::from_micros(1) >= want);
    }

    #[test]
    fn huge_timeouts_wait_forever() {
        assert_eq!(Wait::after(Duration::MAX), Wait::Forever);
        assert!(matches!(Wait::after(Duration::ZERO), Wait::Until(_)));
    }
}

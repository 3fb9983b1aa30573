//! The failure path of every queue operation: look for dead peers when a
//! look is due, else fail, sleep on the futex word, nap, or yield.

use super::blocking::sleep_until;
use super::looks::{NoSleep, Wait};
use super::raw::{RawQueue, Stop};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Yields a receiver makes to a sender that claimed the next slot and has
/// not committed it (a copy of a few bytes: it commits within them unless
/// it is descheduled or stopped), before it naps instead.
const YIELDS: u32 = 64;

/// A receiver's nap behind such a sender after [`YIELDS`]: its commit may
/// not wake us (no fence), so we look again after this long.
pub(crate) const STALLED_NAP: Duration = Duration::from_millis(1);

impl RawQueue {
    /// The failure path of every operation (the only place that reads the
    /// clock): looks for dead participants if the last look (by any handle
    /// of this process on this queue, in any call) is [`LOOK_EVERY`] old,
    /// then returns at once so that the caller tries again before it
    /// reports anything; else fails as `wait` says, or sleeps on `word`
    /// until woken, `ready()`, the deadline or the next look's time,
    /// whichever comes first. `nap`: at most this long (zero: yields the
    /// CPU once instead), for a peer that may change the state without
    /// waking us.
    ///
    /// [`LOOK_EVERY`]: super::looks::LOOK_EVERY
    pub(super) fn wait_or_look(
        &self,
        word: &AtomicU32,
        waiters: &AtomicU32,
        seen: u32,
        wait: Wait,
        nap: Option<Duration>,
        ready: impl Fn() -> bool,
    ) -> std::result::Result<(), Stop> {
        let (due, now) = self.looks.take_due_for(wait);
        if due {
            self.recover();
            return Ok(());
        }
        let until = self.looks.wait_end(wait, now).map_err(|no| match no {
            NoSleep::Timeout => Stop::Timeout,
            NoSleep::WouldBlock => Stop::WouldBlock,
        })?;
        match nap {
            Some(Duration::ZERO) => std::thread::yield_now(),
            Some(d) => sleep_until(word, waiters, seen, until.min(Instant::now() + d), ready),
            None => sleep_until(word, waiters, seen, until, ready),
        }
        Ok(())
    }

    /// The blocking part of `claim_recv`'s failure path, after its spin:
    /// `behind` is the position whose unheld sender we have been yielding
    /// to and how many times.
    #[inline(never)]
    pub(super) fn wait_for_items(
        &self,
        behind: &mut (Option<u64>, u32),
        seen: u32,
        wait: Wait,
    ) -> std::result::Result<(), Stop> {
        let ring = self.ring();
        let c = self.control();
        let w = &c.waits.0;
        // A message committed since the attempt: take it at once.
        if ring.can_recv() {
            return Ok(());
        }
        // A sender that claimed the next slot without holding it
        // commits without a fence and may miss us counted as a sleeper
        // (`Ring::claimed_not_held`): yield to it instead of sleeping,
        // a few times; a sender stalled there (stopped, or descheduled
        // for long) is then waited for in naps of STALLED_NAP, which a
        // wake-up may end sooner (an idle receiver costs no CPU).
        let nap = if ring.claimed_not_held() {
            // Counted per claim: the tail moving on starts again.
            let tail = ring.tail();
            let (behind_at, yields) = behind;
            if *behind_at != Some(tail) {
                (*behind_at, *yields) = (Some(tail), 0);
            }
            *yields += 1;
            Some(if *yields <= YIELDS {
                Duration::ZERO
            } else {
                STALLED_NAP
            })
        } else {
            None
        };
        self.wait_or_look(&w.items, &w.recv_waiters, seen, wait, nap, || {
            ring.can_recv()
                || (nap.is_none() && ring.claimed_not_held())
                || self.recv_disconnected()
                || c.state.0.orphan_count.load(Ordering::SeqCst) > 0
        })
    }
}

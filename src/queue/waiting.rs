//! The failure path of every queue operation: look for dead peers when a
//! look is due, else fail, sleep on the futex word, nap, or yield.

use super::blocking::sleep_until;
use super::looks::{NoSleep, Wait};
use super::raw::{RawQueue, Stop};
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

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
        let until = self.looks.sleep_until(wait, now).map_err(|no| match no {
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
}

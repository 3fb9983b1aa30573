//! The ring operations a batch is made of: runs of positions claimed with
//! one compare-and-swap, and commits and releases that defer their
//! wake-up, so that a run of messages pays the claim's `lock cmpxchg` and
//! the sleeper handshake (`fence(SeqCst)`, a load of the sleeper count, a
//! `FUTEX_WAKE` when someone sleeps) once per run instead of once per
//! message.
//!
//! A run's positions are committed (released) one by one, in order, each
//! moving the participant's intent on ([`ring`](super::ring), "Runs"), so
//! recovery from a participant killed mid-run finds exactly what it still
//! held: a sender's uncommitted rest of the run becomes skips, a receiver's
//! unreleased rest is delivered again. Deferring the wake-up is sound
//! because the deferred wake comes after every commit (release) it covers
//! and runs the same handshake ([`wake`](super::blocking::wake)): a sleeper
//! that counted itself before the fence is woken, one that counted itself
//! after it sees every commit. The caller must wake before it waits itself
//! (a batch that waits for room while its receivers sleep unwoken would
//! wait forever): [`Batch::flush`].

use super::atomic::AtomicU64;
use super::blocking::{wake, wake_after_claim};
use super::raw::RawQueue;
use super::ring::{MAX_RUN, Ring, SKIP};
use std::sync::atomic::Ordering;

/// Messages committed (slots released) whose wake-up is still owed.
///
/// The ring view and the participant's words are looked up once per batch,
/// not once per item: a run of u64s took 117 instructions an item (send
/// and receive) with five ring views built per item (callgrind).
#[must_use = "a batch owes its peers a wake-up: call `flush`"]
pub(crate) struct Batch<'a> {
    raw: &'a RawQueue,
    ring: Ring<'a>,
    intent: &'a AtomicU64,
    run_end: &'a AtomicU64,
    max_len: u64,
    /// Whether the owed wake-up is the receivers' (sending side) or the
    /// senders' (receiving side).
    sending: bool,
    owed: u32,
}

/// A run of claimed positions: `first..end`.
#[derive(Clone, Copy)]
pub(crate) struct Run {
    pub first: u64,
    pub end: u64,
}

impl Run {
    /// The run's positions, in the order they must be committed
    /// (released).
    pub(crate) fn positions(self) -> impl Iterator<Item = u64> {
        let n = self.end.wrapping_sub(self.first);
        (0..n).map(move |k| self.first.wrapping_add(k))
    }
}

impl<'a> Batch<'a> {
    /// A run of sends by the participant `entry`.
    pub(crate) fn sending(raw: &'a RawQueue, entry: usize) -> Self {
        Self::new(raw, entry, true)
    }

    /// A run of receives by the participant `entry`.
    pub(crate) fn receiving(raw: &'a RawQueue, entry: usize) -> Self {
        Self::new(raw, entry, false)
    }

    fn new(raw: &'a RawQueue, entry: usize, sending: bool) -> Self {
        Batch {
            raw,
            ring: raw.ring(),
            intent: raw.intent(entry),
            run_end: raw.run_end(entry),
            max_len: raw.max_len() as u64,
            sending,
            owed: 0,
        }
    }

    /// The data area of the claimed slot at `pos`.
    #[inline]
    pub(crate) fn data(&self, pos: u64) -> *mut u8 {
        self.ring.data(pos)
    }

    /// Claims up to `max` (1..=[`MAX_RUN`]) slots to send into, as many as
    /// are free now: no wait, no clock, no disconnection check (the caller
    /// makes it). Every position of the run must be committed, in order,
    /// with [`commit`](Self::commit).
    pub(crate) fn try_claim_send(&self, max: u64) -> Option<Run> {
        let max = max.clamp(1, MAX_RUN);
        let (first, n) = self
            .ring
            .try_claim_send_run(self.intent, self.run_end, max)?;
        Some(Run {
            first,
            end: first.wrapping_add(n),
        })
    }

    /// Commits `len` bytes at `pos` of `run` (see [`RawQueue::commit`]),
    /// the wake-up owed until [`flush`](Self::flush).
    #[inline]
    pub(crate) fn commit(&mut self, run: Run, pos: u64, len: u64) {
        self.raw.count_unfinished(len);
        self.ring.commit_in_run(pos, len, self.intent, run.end);
        self.owed = self.owed.saturating_add(1);
    }

    /// Claims up to `max` (1..=[`MAX_RUN`]) committed messages if at least
    /// one is ready now. Every position must then be passed, in order, to
    /// [`take`](Self::take).
    pub(crate) fn try_claim_recv(&self, max: u64) -> Option<Run> {
        let max = max.clamp(1, MAX_RUN);
        let (first, n) = self
            .ring
            .try_claim_recv_run(self.intent, self.run_end, max)
            .ok()?;
        Some(Run {
            first,
            end: first.wrapping_add(n),
        })
    }

    /// Reads the message at `pos` of `run` with `read` (given its data and
    /// length) and releases the slot, the wake-up owed until
    /// [`flush`](Self::flush). Skips and lengths beyond the slot (a peer's
    /// garbage, counted) are released unread: `None`.
    #[inline]
    pub(crate) fn take<R>(
        &mut self,
        run: Run,
        pos: u64,
        read: impl FnOnce(*const u8, usize) -> R,
    ) -> Option<R> {
        let len = self.ring.slot(pos).len.load(Ordering::Relaxed);
        let out = if len == SKIP {
            None
        } else if len > self.max_len {
            self.raw.drop_overlong(pos);
            None
        } else {
            Some(read(self.ring.data(pos), len as usize))
        };
        self.ring.release_in_run(pos, self.intent, run.end);
        self.owed = self.owed.saturating_add(1);
        out
    }

    /// Releases a slot claimed singly (`RawQueue::claim_recv`), the
    /// wake-up owed until [`flush`](Self::flush).
    pub(crate) fn release_single(&mut self, pos: u64) {
        self.ring.release(pos, self.intent);
        self.owed = self.owed.saturating_add(1);
    }

    /// Pays the owed wake-up: one handshake, waking as many sleepers as
    /// messages were committed (slots released) since the last flush.
    pub(crate) fn flush(&mut self) {
        if self.owed == 0 {
            return;
        }
        if self.sending {
            // The runs were claimed unheld, each with a SeqCst CAS.
            let (word, waiters) = self.raw.recv_words();
            wake_after_claim(word, waiters, self.owed);
        } else {
            let (word, waiters) = self.raw.space_words();
            wake(word, waiters, self.owed);
        }
        self.owed = 0;
    }
}

impl Drop for Batch<'_> {
    /// A batch left by a panic or an early return still wakes its peers.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::queue::{self, Receiver, Sender};

    /// A pid that no longer runs: a child started and reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    }

    /// Makes the participant of `entry` look killed: its pid gone. The
    /// handle must then be forgotten, not dropped (its drop would free an
    /// entry recovery frees, and may have handed on).
    fn kill(raw: &RawQueue, entry: usize) {
        raw.control().participants[entry]
            .pid
            .store(dead_pid(), std::sync::atomic::Ordering::SeqCst);
    }

    fn drain(rx: &Receiver<u64>) -> Vec<u64> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// A sender stopped between an unheld claim and its commit (as by
    /// SIGSTOP mid-copy): the receiver yields a little, then naps, so its
    /// wait costs next to no CPU; the commit, which does not wake it, is
    /// still received.
    #[test]
    fn a_receiver_behind_a_stalled_unheld_claim_naps() {
        let (tx, rx) = queue::bounded::<u64>(8).unwrap();
        let raw = tx.queue.raw.clone();
        let mut batch = Batch::sending(&raw, tx.entry);
        let run = batch.try_claim_send(1).unwrap();
        let cpu = crate::sys::clock::thread_cpu_ns();
        let waited = rx.recv_timeout(std::time::Duration::from_millis(300));
        let used = crate::sys::clock::thread_cpu_ns() - cpu;
        assert_eq!(waited, Err(queue::RecvTimeoutError::Timeout));
        // Checked: with yields only (no naps) it used about 300 ms.
        assert!(
            used < 100_000_000,
            "waiting used {used} ns of CPU in 300 ms"
        );
        // SAFETY: the claimed slot is ours and holds a u64.
        unsafe { raw.data(run.first).cast::<u64>().write_unaligned(5) };
        batch.commit(run, run.first, 8);
        batch.flush();
        let got = rx.recv_timeout(std::time::Duration::from_secs(120));
        assert_eq!(got, Ok(5));
    }

    #[test]
    fn a_sender_killed_mid_run_has_the_rest_of_its_run_skipped() {
        let (tx, rx) = queue::bounded::<u64>(8).unwrap();
        let raw = tx.queue.raw.clone();
        let mut batch = Batch::sending(&raw, tx.entry);
        let run = batch.try_claim_send(3).unwrap();
        let first = run.positions().next().unwrap();
        // SAFETY: the claimed slot is ours and holds a u64.
        unsafe { raw.data(first).cast::<u64>().write_unaligned(1) };
        batch.commit(run, first, 8);
        batch.flush();
        kill(&raw, tx.entry);
        std::mem::forget(tx);
        let tx2: Sender<u64> = rx.queue.sender().unwrap();
        tx2.send(9).unwrap();
        // The two positions it never committed hold the receiver (a `try_`
        // receive waits for a send in flight) until its look finds the
        // sender dead and skips them.
        assert_eq!(drain(&rx), vec![1, 9]);
        let st = rx.queue.stats();
        assert_eq!((st.skipped, st.reaped), (2, 1));
    }

    #[test]
    fn a_receiver_killed_mid_run_has_the_rest_of_its_run_redelivered() {
        let (tx, rx) = queue::bounded::<u64>(8).unwrap();
        tx.send_many(&[1, 2, 3, 4]).unwrap();
        let raw = rx.queue.raw.clone();
        let mut batch = Batch::receiving(&raw, rx.entry);
        let run = batch.try_claim_recv(3).unwrap();
        let first = run.positions().next().unwrap();
        // SAFETY: a claimed slot holds a committed u64.
        let got = batch.take(run, first, |d, _| unsafe {
            d.cast::<u64>().read_unaligned()
        });
        assert_eq!(got, Some(1));
        batch.flush();
        kill(&raw, rx.entry);
        std::mem::forget(rx);
        assert!(raw.recover());
        let rx2: Receiver<u64> = tx.queue.receiver().unwrap();
        let mut got = drain(&rx2);
        got.sort_unstable();
        assert_eq!(got, vec![2, 3, 4]);
        let st = tx.queue.stats();
        assert_eq!((st.redelivered, st.reaped), (2, 1));
        // The slots were released: the queue holds 8 again.
        assert_eq!(tx.try_send_many(&[0; 9]), Ok(8));
    }
}

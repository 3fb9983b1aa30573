//! Runs of `Pod` items in one call: [`Sender::send_many`] and
//! [`Receiver::recv_many`] with their `try_` and `_timeout` forms.
//!
//! Items are claimed in runs of up to 64 positions, each run with one
//! compare-and-swap, and the peers are woken once per run
//! (`queue::batch`). When no slot is ready, the call pays the wake-up it
//! owes and then claims one item as a single send (receive) does, with
//! its checks and its waits. A process killed mid-run holds at most the
//! rest of one run: a sender's is skipped, a receiver's delivered again,
//! and everything committed before it arrives, in order.

use super::super::batch::Batch;
use super::super::error::{
    AnyRecvError, AnySendError, RecvError, RecvTimeoutError, SendError, SendTimeoutError,
    TryRecvError, TrySendError,
};
use super::super::looks::Wait;
use super::{HOLD_ABOVE, Receiver, Sender};
use bytemuck::Pod;
use std::time::Duration;

impl<T: Pod> Sender<T> {
    /// Sends `items` in order; `Ok(n)` with the count sent, all of them
    /// unless `wait` is `Wait::No` and the queue filled up after the first.
    /// An error carries the count sent before it.
    fn send_many_until(&self, items: &[T], wait: Wait) -> Result<usize, AnySendError<usize>> {
        let raw = &*self.queue.raw;
        if !items.is_empty() && raw.send_disconnected() {
            return Err(AnySendError::Disconnected(0));
        }
        let mut batch = Batch::sending(raw, self.entry);
        let mut sent = 0;
        while sent < items.len() {
            let left = (items.len() - sent) as u64;
            // Runs are unheld: large items go one by one, held.
            let run = (size_of::<T>() <= HOLD_ABOVE)
                .then(|| batch.try_claim_send(left))
                .flatten();
            if let Some(run) = run {
                for (pos, item) in run.positions().zip(&items[sent..]) {
                    // SAFETY: as in `send_until`: each claimed slot is ours
                    // until its commit and holds size_of::<T>() bytes.
                    unsafe { batch.data(pos).cast::<T>().write_unaligned(*item) };
                    batch.commit(run, pos, size_of::<T>() as u64);
                    sent += 1;
                }
                // Paid before any wait: receivers asleep behind the run
                // would otherwise never make room.
                batch.flush();
                continue;
            }
            // No room now: a single send (disconnection check, waits,
            // truncation).
            match self.send_until(items[sent], wait) {
                Ok(()) => sent += 1,
                Err(AnySendError::Full(_)) if sent > 0 => break,
                Err(e) => return Err(e.with_message(sent)),
            }
        }
        self.check_sent(sent)?;
        Ok(sent)
    }

    /// Sends every item of `items` in order, waiting while the queue is
    /// full, and wakes the receivers once per run rather than once per item
    /// (a blocked receiver is woken before this waits for room). Items
    /// become visible one by one, as they are written. An empty slice
    /// sends nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), shmkit::Error> {
    /// let (tx, rx) = shmkit::queue::bounded::<u32>(8)?;
    /// let t = std::thread::spawn(move || tx.send_many(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    /// let mut buf = [0u32; 4];
    /// let mut got = Vec::new();
    /// while got.len() < 10 {
    ///     let n = rx.recv_many(&mut buf)?;
    ///     got.extend_from_slice(&buf[..n]);
    /// }
    /// assert_eq!(got, (1..=10).collect::<Vec<_>>());
    /// t.join().unwrap()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), each carrying how many items were sent
    /// before it (the items from that index on were not).
    pub fn send_many(&self, items: &[T]) -> Result<(), SendError<usize>> {
        self.send_many_until(items, Wait::Forever)
            .map(drop)
            .map_err(Into::into)
    }

    /// Sends as many items of `items`, in order, as there is room for now;
    /// `Ok(n)`: the first `n` were sent (`n < items.len()` when the queue
    /// filled up; 0 only for an empty slice). Never waits, reads no clock.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full(0)`](TrySendError::Full) when there is no room
    /// for the first item; otherwise as [`try_send`](Self::try_send), each
    /// carrying how many items were sent before it.
    pub fn try_send_many(&self, items: &[T]) -> Result<usize, TrySendError<usize>> {
        self.send_many_until(items, Wait::No).map_err(Into::into)
    }

    /// [`send_many`](Self::send_many), waiting at most `timeout` in all.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout(n)`](SendTimeoutError::Timeout) when the
    /// queue stayed full until the timeout after `n` items were sent;
    /// otherwise as [`send_many`](Self::send_many).
    pub fn send_many_timeout(
        &self,
        items: &[T],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<usize>> {
        self.send_many_until(items, Wait::after(timeout))
            .map(drop)
            .map_err(Into::into)
    }
}

impl<T: Pod> Receiver<T> {
    /// Fills `buf` from its start: waits (as `wait` allows) for the first
    /// item, then takes what is ready now; the count taken.
    fn recv_many_until(&self, buf: &mut [T], wait: Wait) -> Result<usize, AnyRecvError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let raw = &*self.queue.raw;
        let mut batch = Batch::receiving(raw, self.entry);
        let mut taken = 0;
        let read = |data: *const u8, _len: usize| {
            // SAFETY: `data` is a claimed slot's data area, which holds
            // max_len = size_of::<T>() bytes (checked on open); a committed
            // slot's bytes are read as a T (any bytes are a valid T; a
            // shorter length from a peer reads the slot's stale bytes,
            // within the slot, as `recv` does).
            unsafe { data.cast::<T>().read_unaligned() }
        };
        // Messages a dead receiver held go first, as in a single receive:
        // a run takes only the ring's.
        let mut single_first = raw.orphans_waiting();
        loop {
            while taken < buf.len() && !single_first {
                let left = (buf.len() - taken) as u64;
                let Some(run) = batch.try_claim_recv(left) else {
                    break;
                };
                for pos in run.positions() {
                    if let Some(v) = batch.take(run, pos, read) {
                        buf[taken] = v;
                        taken += 1;
                    }
                }
                batch.flush();
            }
            if taken > 0 && !single_first {
                break;
            }
            // Nothing ready (or skips only): the single receive's claim
            // (messages to redeliver, sends in flight, waits,
            // disconnection); every run's wake-up is paid already.
            let (pos, _) = self.claim(wait)?;
            buf[0] = read(batch.data(pos), size_of::<T>());
            batch.release_single(pos);
            taken = 1;
            single_first = false;
        }
        batch.flush();
        // The copies may be zeroes from the pages that replaced a cut range.
        if self.queue.segment().check().is_err() {
            return Err(AnyRecvError::Truncated);
        }
        Ok(taken)
    }

    /// Receives up to `buf.len()` items into the start of `buf`, in order:
    /// waits for the first while the queue is empty, then takes only what
    /// is ready now, and wakes the senders once for the run. `Ok(n)`: the
    /// first `n` elements of `buf` were written (`n >= 1`; `Ok(0)` at once
    /// for an empty `buf`). As tokio's `Receiver::recv_many`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv); `Disconnected` only when nothing is left to
    /// take (a run that finds the queue disconnected midway returns what it
    /// took).
    pub fn recv_many(&self, buf: &mut [T]) -> Result<usize, RecvError> {
        self.recv_many_until(buf, Wait::Forever).map_err(Into::into)
    }

    /// Receives up to `buf.len()` items that are ready now (see
    /// [`try_recv`](Self::try_recv) for what "ready" includes).
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when no item is ready; otherwise as
    /// [`recv_many`](Self::recv_many).
    pub fn try_recv_many(&self, buf: &mut [T]) -> Result<usize, TryRecvError> {
        self.recv_many_until(buf, Wait::No).map_err(Into::into)
    }

    /// [`recv_many`](Self::recv_many), waiting at most `timeout` for the
    /// first item.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if nothing arrived within `timeout`;
    /// otherwise as [`recv_many`](Self::recv_many).
    pub fn recv_many_timeout(
        &self,
        buf: &mut [T],
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        self.recv_many_until(buf, Wait::after(timeout))
            .map_err(Into::into)
    }
}

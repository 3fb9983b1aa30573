//! The byte forms of the variable kinds' endpoints (`Bytes`, `Rkyv<M>`,
//! `Serde<M>`): a message sent as bytes or written in place
//! (`send_bytes`, `reserve_bytes`), and received in place or as a copy
//! (`recv_bytes`, `recv_vec`).

use super::super::Variable;
use super::super::error::{
    AnySendError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};
use super::super::looks::Wait;
use super::guards::{RecvGuard, SendSlot};
use super::{Receiver, Sender};
use std::marker::PhantomData;
use std::time::Duration;

impl<T: Variable> Sender<T> {
    fn send_bytes_until(
        &self,
        bytes: &[u8],
        wait: Wait,
    ) -> std::result::Result<(), AnySendError<()>> {
        let max = self.queue.raw.max_len();
        if bytes.len() > max {
            return Err(AnySendError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        let pos = self.claim(wait).map_err(|s| Self::stop(s, ()))?;
        // SAFETY: the claimed slot's data area holds max_len >= bytes.len()
        // bytes and is ours until commit.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.queue.raw.data(pos), bytes.len())
        };
        self.commit(pos, bytes.len());
        self.check_sent(())
    }

    /// Sends a copy of `bytes`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] if `bytes` does not fit a slot; [`SendError::Disconnected`] when no
    /// receiver is left or the queue was closed; [`SendError::Truncated`] if a peer shrank the
    /// segment.
    pub fn send_bytes(&self, bytes: &[u8]) -> std::result::Result<(), SendError<()>> {
        self.send_bytes_until(bytes, Wait::Forever)
            .map_err(Into::into)
    }

    /// Sends a copy of `bytes` if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::TooLarge`] if `bytes` does not fit a slot; [`TrySendError::Full`] if there is no
    /// room now; [`TrySendError::Disconnected`] when no receiver is left or the queue was closed;
    /// [`TrySendError::Truncated`] if a peer shrank the segment.
    pub fn try_send_bytes(&self, bytes: &[u8]) -> std::result::Result<(), TrySendError<()>> {
        self.send_bytes_until(bytes, Wait::No).map_err(Into::into)
    }

    /// Sends a copy of `bytes`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::TooLarge`] if `bytes` does not fit a slot; [`SendTimeoutError::Timeout`] if no room
    /// came within `timeout`; [`SendTimeoutError::Disconnected`] when no receiver is left or the queue was
    /// closed; [`SendTimeoutError::Truncated`] if a peer shrank the segment.
    pub fn send_bytes_timeout(
        &self,
        bytes: &[u8],
        timeout: Duration,
    ) -> std::result::Result<(), SendTimeoutError<()>> {
        self.send_bytes_until(bytes, Wait::after(timeout))
            .map_err(Into::into)
    }

    /// Reserves the next slot and lends its first `len` bytes to write in
    /// place. Waits while the queue is full.
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] if `len` is more than a slot holds; [`SendError::Disconnected`] when
    /// no receiver is left or the queue was closed; [`SendError::Truncated`] if a peer shrank the
    /// segment.
    pub fn reserve_bytes(
        &mut self,
        len: usize,
    ) -> std::result::Result<SendSlot<'_, T, [u8]>, SendError<()>> {
        let max = self.queue.raw.max_len();
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        let pos = self.claim(Wait::Forever).map_err(|s| Self::stop(s, ()))?;
        Ok(SendSlot {
            sender: self,
            pos,
            len,
            committed: false,
            _t: PhantomData,
        })
    }
}

impl<T: Variable> Receiver<T> {
    /// Receives the next message in place as bytes; the guard frees the slot
    /// when dropped. Waits while the queue is empty.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once every sender is gone (or the queue closed) and the queue is
    /// drained; [`RecvError::Truncated`] if a peer shrank the segment.
    pub fn recv_bytes(&mut self) -> std::result::Result<RecvGuard<'_, T, [u8]>, RecvError> {
        let c = self.claim(Wait::Forever)?;
        Ok(self.guard(c))
    }

    /// [`recv_bytes`](Self::recv_bytes) if a message is ready now.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when nothing is ready; [`TryRecvError::Disconnected`] once every sender is
    /// gone (or the queue closed) and the queue is drained; [`TryRecvError::Truncated`] if a peer
    /// shrank the segment.
    pub fn try_recv_bytes(&mut self) -> std::result::Result<RecvGuard<'_, T, [u8]>, TryRecvError> {
        let c = self.claim(Wait::No)?;
        Ok(self.guard(c))
    }

    /// [`recv_bytes`](Self::recv_bytes) waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if nothing arrived within `timeout`; [`RecvTimeoutError::Disconnected`] once
    /// every sender is gone (or the queue closed) and the queue is drained;
    /// [`RecvTimeoutError::Truncated`] if a peer shrank the segment.
    pub fn recv_bytes_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<RecvGuard<'_, T, [u8]>, RecvTimeoutError> {
        let c = self.claim(Wait::after(timeout))?;
        Ok(self.guard(c))
    }

    /// Receives the next message as a copy.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once every sender is gone (or the queue closed) and the queue is
    /// drained; [`RecvError::Truncated`] if a peer shrank the segment.
    pub fn recv_vec(&self) -> std::result::Result<Vec<u8>, RecvError> {
        let (pos, len) = self.claim(Wait::Forever)?;
        // SAFETY: the claimed slot holds `len` committed bytes; `len` was
        // checked against the slot size before the claim was returned.
        let v = unsafe { std::slice::from_raw_parts(self.queue.raw.data(pos), len) }.to_vec();
        self.release(pos);
        if self.queue.segment().check().is_err() {
            return Err(RecvError::Truncated);
        }
        Ok(v)
    }
}

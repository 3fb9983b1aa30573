//! What a pipe carries: raw bytes on every variable kind, one copy per item
//! on a `Pod` pipe, rkyv or serde messages encoded straight into the slot.

use crate::error::Error;
#[cfg(feature = "serde")]
use crate::queue::Serde;
use crate::queue::kinds::Encoded;
use crate::queue::looks::Wait;
use crate::queue::{
    AnyRecvError, AnySendError, RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError,
};
use crate::queue::{Rkyv, Variable};
use std::borrow::Borrow;
use std::time::Duration;

use super::Connection;

impl<T: Variable> Connection<T> {
    /// Sends a copy of `bytes` (raw bytes on a pipe of any variable kind).
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] if `bytes` does not fit a slot; [`SendError::Disconnected`] once
    /// the peer is gone; [`SendError::Truncated`] if a peer shrank the segment;
    /// [`SendError::Corrupted`] if the ring state is impossible.
    pub fn send_bytes(&self, bytes: &[u8]) -> std::result::Result<(), SendError<()>> {
        self.send_bytes_waiting(bytes, Wait::Forever)
            .map_err(Into::into)
    }

    /// [`send_bytes`](Self::send_bytes), waiting as `wait` says.
    pub(super) fn send_bytes_waiting(
        &self,
        bytes: &[u8],
        wait: Wait,
    ) -> std::result::Result<(), AnySendError<()>> {
        let max = self.max_message();
        if bytes.len() > max {
            return Err(AnySendError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        self.send_with(wait, |buf| {
            buf[..bytes.len()].copy_from_slice(bytes);
            Ok(bytes.len())
        })
    }

    /// Receives the next message as bytes.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once the peer is gone and everything it sent was received;
    /// [`RecvError::Truncated`] if a peer shrank the segment; [`RecvError::Corrupted`] if the ring
    /// state is impossible.
    pub fn recv_bytes(&self) -> std::result::Result<Vec<u8>, RecvError> {
        self.recv_with(Wait::Forever, <[u8]>::to_vec)
            .map_err(Into::into)
    }

    /// Receives the next message and hands its bytes, in place, to `f`.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once the peer is gone and everything it sent was received;
    /// [`RecvError::Truncated`] if a peer shrank the segment; [`RecvError::Corrupted`] if the ring
    /// state is impossible.
    pub fn recv_with_bytes<R>(
        &self,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, RecvError> {
        self.recv_with(Wait::Forever, f).map_err(Into::into)
    }
}

impl<T: bytemuck::Pod> Connection<T> {
    fn send_pod(&self, value: T, wait: Wait) -> std::result::Result<(), AnySendError<T>> {
        self.send_with(wait, |buf| {
            buf[..size_of::<T>()].copy_from_slice(bytemuck::bytes_of(&value));
            Ok(size_of::<T>())
        })
        .map_err(|e| e.with_message(value))
    }

    fn recv_pod(&self, wait: Wait) -> std::result::Result<T, AnyRecvError> {
        self.recv_with(wait, |b| {
            bytemuck::try_pod_read_unaligned::<T>(b).map_err(|_| {
                AnyRecvError::Invalid(Error::Encoding {
                    what: std::any::type_name::<T>(),
                    reason: format!(
                        "a {}-byte message where a {}-byte item was expected",
                        b.len(),
                        size_of::<T>()
                    ),
                })
            })
        })?
    }

    /// Sends a copy of `value`, waiting while the direction is full.
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] (with `value`) once the peer is gone;
    /// [`SendError::Truncated`] if a peer shrank the segment; [`SendError::Corrupted`] if the ring
    /// state is impossible.
    pub fn send(&self, value: T) -> std::result::Result<(), SendError<T>> {
        self.send_pod(value, Wait::Forever).map_err(Into::into)
    }

    /// [`send`](Self::send) if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] (with `value`) if there is no room now; otherwise as
    /// [`send`](Self::send).
    pub fn try_send(&self, value: T) -> std::result::Result<(), TrySendError<T>> {
        self.send_pod(value, Wait::No).map_err(Into::into)
    }

    /// Receives the next item, waiting while none is ready.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once the peer is gone and everything it sent was received;
    /// [`RecvError::Invalid`] for a message of another size (a peer's garbage);
    /// [`RecvError::Truncated`] if a peer shrank the segment; [`RecvError::Corrupted`] if the ring
    /// state is impossible.
    pub fn recv(&self) -> std::result::Result<T, RecvError> {
        self.recv_pod(Wait::Forever).map_err(Into::into)
    }

    /// [`recv`](Self::recv) if an item is ready now.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if nothing is ready; otherwise as [`recv`](Self::recv).
    pub fn try_recv(&self) -> std::result::Result<T, TryRecvError> {
        self.recv_pod(Wait::No).map_err(Into::into)
    }

    /// [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if nothing arrived in time; otherwise as [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<T, RecvTimeoutError> {
        self.recv_pod(Wait::after(timeout)).map_err(Into::into)
    }
}

/// Encodes `msg` straight into the next slot of `conn`'s direction.
fn send_encoded<T: Encoded, B: Borrow<T::Msg>>(
    conn: &Connection<T>,
    msg: B,
    wait: Wait,
) -> std::result::Result<(), AnySendError<B>> {
    let r = conn.send_with(wait, |buf| T::write(msg.borrow(), buf));
    r.map_err(|e| e.with_message(msg))
}

/// Receives the next message of `conn` and decodes it; `read` copies the
/// bytes before it validates them.
fn recv_encoded<T: Encoded>(
    conn: &Connection<T>,
    wait: Wait,
) -> std::result::Result<T::Msg, AnyRecvError> {
    conn.recv_with(wait, T::read)?
        .map_err(AnyRecvError::Invalid)
}

/// The typed operations of a pipe of rkyv or serde messages.
macro_rules! typed_pipe {
    ($kind:ident, $($bound:tt)+) => {
        impl<M: $($bound)+> Connection<$kind<M>> {
            /// Sends `msg` (an `M` or a `&M`), serialised straight into the
            /// slot, waiting while the direction is full.
            ///
            /// # Errors
            ///
            /// [`SendError::Disconnected`] (with `msg`) once the peer is gone;
            /// [`SendError::TooLarge`] if its encoding does not fit a slot and
            /// [`SendError::Encoding`] if it cannot be encoded (the slot is skipped in both);
            /// [`SendError::Truncated`] if a peer shrank the segment; [`SendError::Corrupted`] if
            /// the ring state is impossible.
            pub fn send<B: Borrow<M>>(&self, msg: B) -> std::result::Result<(), SendError<B>> {
                send_encoded(self, msg, Wait::Forever).map_err(Into::into)
            }

            /// [`send`](Self::send) if there is room now.
            ///
            /// # Errors
            ///
            /// [`TrySendError::Full`] (with `msg`) if there is no room now; otherwise as
            /// [`send`](Self::send).
            pub fn try_send<B: Borrow<M>>(&self, msg: B) -> std::result::Result<(), TrySendError<B>> {
                send_encoded(self, msg, Wait::No).map_err(Into::into)
            }

            /// Receives the next message as a decoded copy, waiting while none
            /// is ready.
            ///
            /// # Errors
            ///
            /// [`RecvError::Invalid`] if the message fails validation (it is dropped);
            /// [`RecvError::Disconnected`] once the peer is gone and everything it sent was
            /// received; [`RecvError::Truncated`] if a peer shrank the segment;
            /// [`RecvError::Corrupted`] if the ring state is impossible.
            pub fn recv(&self) -> std::result::Result<M, RecvError> {
                recv_encoded(self, Wait::Forever).map_err(Into::into)
            }

            /// [`recv`](Self::recv) if a message is ready now.
            ///
            /// # Errors
            ///
            /// [`TryRecvError::Empty`] if nothing is ready; otherwise as [`recv`](Self::recv).
            pub fn try_recv(&self) -> std::result::Result<M, TryRecvError> {
                recv_encoded(self, Wait::No).map_err(Into::into)
            }

            /// [`recv`](Self::recv), waiting at most `timeout`.
            ///
            /// # Errors
            ///
            /// [`RecvTimeoutError::Timeout`] if nothing arrived in time; otherwise as
            /// [`recv`](Self::recv).
            pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<M, RecvTimeoutError> {
                recv_encoded(self, Wait::after(timeout)).map_err(Into::into)
            }
        }
    };
}

typed_pipe!(Rkyv, crate::Message + 'static);
#[cfg(feature = "serde")]
typed_pipe!(
    Serde,
    serde::Serialize + serde::de::DeserializeOwned + 'static
);

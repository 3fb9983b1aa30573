//! The operations of the typed kinds, `Queue<Rkyv<M>>` and `Queue<Serde<M>>`:
//! `send(M)` serialises straight into the claimed slot, `recv()` decodes a
//! private copy of it, and a [`RecvGuard`] from `recv_ref` reads the message
//! where it lies.

use super::endpoints::guards::{Iter, RecvGuard, TryIter};
use super::endpoints::{Receiver, Sender};
use super::error::{
    AnyRecvError, AnySendError, RecvError, RecvTimeoutError, SendError, SendTimeoutError,
    TryRecvError, TrySendError,
};
use super::kinds::{Encoded, Rkyv};
use super::looks::Wait;
use super::ring::SKIP;
use crate::codec::Message;
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use std::borrow::Borrow;
use std::time::Duration;

/// Encodes `msg` into the next slot (no intermediate buffer). A message
/// that does not fit, or cannot be encoded, leaves a skipped slot.
fn send_encoded<T: Encoded, B: Borrow<T::Msg>>(
    tx: &Sender<T>,
    msg: B,
    wait: Wait,
) -> std::result::Result<(), AnySendError<B>> {
    let pos = match tx.claim(wait) {
        Ok(pos) => pos,
        Err(h) => return Err(Sender::<T>::stop(h, msg)),
    };
    let max = tx.queue.raw.max_len();
    // SAFETY: the claimed slot's data area holds max_len bytes, is
    // 16-aligned, and is ours alone until we commit it.
    let buf = unsafe { std::slice::from_raw_parts_mut(tx.queue.raw.data(pos), max) };
    match T::write(msg.borrow(), buf) {
        Ok(n) => {
            tx.commit(pos, n);
            tx.check_sent(msg)
        }
        Err(e) => {
            // Receivers never see the half-written slot.
            tx.queue.raw.commit(tx.entry, pos, SKIP);
            Err(e.with_message(msg))
        }
    }
}

/// Takes the next message and decodes a private copy of it (a peer cannot
/// change the bytes between validation and use).
fn recv_encoded<T: Encoded>(
    rx: &Receiver<T>,
    wait: Wait,
) -> std::result::Result<T::Msg, AnyRecvError> {
    let (pos, len) = rx.claim(wait)?;
    // SAFETY: the claimed slot holds `len` committed bytes; `len` was
    // checked against the slot size before the claim was returned.
    let bytes = unsafe { std::slice::from_raw_parts(rx.queue.raw.data(pos), len) };
    // `read` copies the bytes before it validates them.
    let msg = T::read(bytes);
    rx.release(pos);
    if rx.queue.segment().check().is_err() {
        return Err(AnyRecvError::Truncated);
    }
    msg.map_err(AnyRecvError::Invalid)
}

/// The typed operations, the same for every encoded kind.
macro_rules! typed_kind {
    ($kind:ident, $($bound:tt)+) => {
        impl<M: $($bound)+> Sender<$kind<M>> {
            /// Sends `msg`, serialised straight into the next slot, waiting
            /// while the queue is full. `msg` is an `M` or a `&M` (any
            /// `Borrow<M>`): send a reference to keep a handle such as an
            /// `Array` alive until its receiver has opened it (the message
            /// names the region; a creator's drop unlinks it).
            ///
            /// # Errors
            ///
            /// [`SendError::Disconnected`] (with `msg`) when no receiver is left or the queue was
            /// closed; [`SendError::TooLarge`] if its encoding does not fit a slot and
            /// [`SendError::Encoding`] if it cannot be encoded (the slot is skipped in both);
            /// [`SendError::Truncated`] if a peer shrank the segment.
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

            /// [`send`](Self::send) waiting at most `timeout` for room.
            ///
            /// # Errors
            ///
            /// [`SendTimeoutError::Timeout`] (with `msg`) if no room came within `timeout`; otherwise as
            /// [`send`](Self::send).
            pub fn send_timeout<B: Borrow<M>>(
                &self,
                msg: B,
                timeout: Duration,
            ) -> std::result::Result<(), SendTimeoutError<B>> {
                send_encoded(self, msg, Wait::after(timeout)).map_err(Into::into)
            }
        }

        impl<M: $($bound)+> Receiver<$kind<M>> {
            /// Receives the next message as a decoded copy, waiting while the
            /// queue is empty. An invalid message is dropped with
            /// [`RecvError::Invalid`].
            ///
            /// # Errors
            ///
            /// [`RecvError::Invalid`] if the message fails validation (it is dropped);
            /// [`RecvError::Disconnected`] once every sender is gone (or the queue closed) and
            /// the queue is drained; [`RecvError::Truncated`] if a peer shrank the segment.
            pub fn recv(&self) -> std::result::Result<M, RecvError> {
                recv_encoded(self, Wait::Forever).map_err(Into::into)
            }

            /// [`recv`](Self::recv) if a message is ready now (linearizable,
            /// as the `Pod` queue's `try_recv`).
            ///
            /// # Errors
            ///
            /// [`TryRecvError::Empty`] when nothing is ready; otherwise as [`recv`](Self::recv).
            pub fn try_recv(&self) -> std::result::Result<M, TryRecvError> {
                recv_encoded(self, Wait::No).map_err(Into::into)
            }

            /// [`recv`](Self::recv) waiting at most `timeout`.
            ///
            /// # Errors
            ///
            /// [`RecvTimeoutError::Timeout`] if nothing arrived within `timeout`; otherwise as
            /// [`recv`](Self::recv).
            pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<M, RecvTimeoutError> {
                recv_encoded(self, Wait::after(timeout)).map_err(Into::into)
            }

            /// A blocking iterator of decoded messages, as the `Pod` queue's
            /// [`iter`](Receiver::iter); it ends at the first receive error.
            pub fn iter(&self) -> Iter<'_, $kind<M>> {
                Iter { receiver: self }
            }

            /// The messages ready now, as the `Pod` queue's
            /// [`try_iter`](Receiver::try_iter).
            pub fn try_iter(&self) -> TryIter<'_, $kind<M>> {
                TryIter { receiver: self }
            }
        }

        impl<M: $($bound)+> Iterator for Iter<'_, $kind<M>> {
            type Item = M;
            fn next(&mut self) -> Option<M> {
                self.receiver.recv().ok()
            }
        }

        impl<M: $($bound)+> Iterator for TryIter<'_, $kind<M>> {
            type Item = M;
            fn next(&mut self) -> Option<M> {
                self.receiver.try_recv().ok()
            }
        }

        impl<'a, M: $($bound)+> IntoIterator for &'a Receiver<$kind<M>> {
            type Item = M;
            type IntoIter = Iter<'a, $kind<M>>;
            fn into_iter(self) -> Iter<'a, $kind<M>> {
                self.iter()
            }
        }

        impl<M: $($bound)+> RecvGuard<'_, $kind<M>, [u8]> {
            /// Decodes a private copy of the message.
            ///
            /// # Errors
            ///
            /// [`Error::Encoding`](crate::Error::Encoding) if the bytes are not a valid message
            /// of type `M`.
            pub fn decode(&self) -> crate::Result<M> {
                <$kind<M> as Encoded>::read(self)
            }
        }
    };
}

typed_kind!(Rkyv, Message + 'static);
#[cfg(feature = "serde")]
use super::kinds::Serde;
#[cfg(feature = "serde")]
typed_kind!(
    Serde,
    serde::Serialize + serde::de::DeserializeOwned + 'static
);

impl<M: Message + rkyv::Archive + 'static> RecvGuard<'_, Rkyv<M>, [u8]> {
    /// The message's archive, validated (bytecheck) and read in place:
    /// zero-copy.
    ///
    /// Validation guards against a corrupted or hostile *message*. Reading
    /// in place afterwards assumes, as every shared-memory borrow does
    /// (`recv_ref` of a `Pod` queue, `Array::lock`), that no peer writes
    /// into a slot it does not hold. Against peers that might, use
    /// [`decode`](Self::decode), which validates a private copy.
    ///
    /// # Errors
    ///
    /// [`Error::Encoding`](crate::Error::Encoding) if the bytes are not a valid archive of `M`.
    pub fn archived(&self) -> crate::Result<&M::Archived>
    where
        M::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    {
        rkyv::access::<M::Archived, rancor::Error>(self).map_err(|e| crate::Error::Encoding {
            what: std::any::type_name::<M>(),
            reason: e.to_string(),
        })
    }

    /// [`archived`](Self::archived) without validation, for peers you trust.
    ///
    /// # Safety
    ///
    /// The message must be a valid archive of `M` written by a trusted
    /// sender; garbage is undefined behaviour when read.
    #[must_use]
    pub unsafe fn archived_unchecked(&self) -> &M::Archived {
        // SAFETY: the caller vouches for the bytes; they stay claimed (and
        // 16-aligned: slot data starts on 16 bytes) for the guard's life.
        unsafe { rkyv::access_unchecked::<M::Archived>(self) }
    }
}

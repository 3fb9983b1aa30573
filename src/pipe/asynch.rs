//! A pipe end's futures (feature `async`): receiving, and sending while the
//! direction is full, without blocking a thread, as the queue's
//! (`queue/endpoints/asynch.rs`, which says how).

use super::Connection;
use super::raw::RawPipe;
use crate::codec::Message;
#[cfg(feature = "serde")]
use crate::queue::Serde;
use crate::queue::looks::Wait;
use crate::queue::{
    AnyRecvError, RecvError, Rkyv, SendError, TrySendError, Variable, recv_result, send_attempt,
};
use crate::sync::watcher::{self, Watch};
use bytemuck::Pod;
use std::any::Any;
use std::borrow::Borrow;
use std::future::Future;
use std::sync::Arc;

/// Repeats `attempt` until it gives a result, between polls registered on
/// the word receivers at `end` sleep on.
fn recv_wait<R>(
    raw: Arc<RawPipe>,
    end: usize,
    attempt: impl FnMut() -> Option<R>,
) -> impl Future<Output = R> {
    let (word, waiters) = raw.recv_words(end);
    let keep: Arc<dyn Any + Send + Sync> = raw.clone();
    // SAFETY: both words lie in the pipe's mapping, which `keep` owns.
    let watch = unsafe { Watch::new(keep, word, waiters) };
    watcher::until(watch, attempt, move || raw.recv_ready(end), || false)
}

/// A send future over `try_send`: between polls registered on the word
/// senders at `end` sleep on (room); the message goes back into the future
/// while the direction is full.
fn send_wait<B>(
    raw: Arc<RawPipe>,
    end: usize,
    msg: B,
    try_send: impl FnMut(B) -> Result<(), TrySendError<B>>,
) -> impl Future<Output = Result<(), SendError<B>>> {
    let (word, waiters) = raw.send_words(end);
    let keep: Arc<dyn Any + Send + Sync> = raw.clone();
    // SAFETY: both words lie in the pipe's mapping, which `keep` owns.
    let watch = unsafe { Watch::new(keep, word, waiters) };
    watcher::until(
        watch,
        send_attempt(msg, try_send),
        move || raw.send_ready(end),
        || false,
    )
}

impl<T: Pod + Send> Connection<T> {
    /// [`send`](Self::send) as a future: waits for room without blocking a
    /// thread (feature `async`). Dropping it before it completes sends
    /// nothing (the value is dropped with it).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Panics
    ///
    /// As [`Connection::recv_async`].
    pub fn send_async(
        &mut self,
        value: T,
    ) -> impl Future<Output = Result<(), SendError<T>>> + Send + '_ {
        let (raw, end) = (self.raw.clone(), self.end);
        send_wait(raw, end, value, move |v| self.try_send(v))
    }

    /// [`recv`](Self::recv) as a future: waits for a message without
    /// blocking a thread (feature `async`; any executor). Dropping it before
    /// it completes loses no message.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Panics
    ///
    /// If the process cannot start the waiter thread that serves every
    /// pending shmkit future (the OS refused a thread).
    pub fn recv_async(&mut self) -> impl Future<Output = Result<T, RecvError>> + Send + '_ {
        let (raw, end) = (self.raw.clone(), self.end);
        recv_wait(raw, end, move || recv_result(self.try_recv()))
    }
}

impl<T: Variable> Connection<T> {
    /// [`send_bytes`](Self::send_bytes) as a future (feature `async`):
    /// waits for room without blocking a thread; dropping it sends nothing.
    ///
    /// # Errors
    ///
    /// As [`send_bytes`](Self::send_bytes).
    ///
    /// # Panics
    ///
    /// As [`Connection::recv_async`].
    pub fn send_bytes_async<'a>(
        &'a mut self,
        bytes: &'a [u8],
    ) -> impl Future<Output = Result<(), SendError<()>>> + Send + 'a {
        let (raw, end) = (self.raw.clone(), self.end);
        send_wait(raw, end, (), move |()| {
            self.send_bytes_waiting(bytes, Wait::No).map_err(Into::into)
        })
    }

    /// [`recv_bytes`](Self::recv_bytes) as a future (feature `async`).
    ///
    /// # Errors
    ///
    /// As [`recv_bytes`](Self::recv_bytes).
    ///
    /// # Panics
    ///
    /// As [`Connection::recv_async`].
    pub fn recv_bytes_async(
        &mut self,
    ) -> impl Future<Output = Result<Vec<u8>, RecvError>> + Send + '_ {
        let (raw, end) = (self.raw.clone(), self.end);
        recv_wait(raw, end, move || {
            match self.recv_with(Wait::No, <[u8]>::to_vec) {
                Err(AnyRecvError::Empty | AnyRecvError::Timeout) => None,
                r => Some(r.map_err(Into::into)),
            }
        })
    }
}

/// `recv_async` for the encoded kinds.
macro_rules! typed_async {
    ($kind:ident, $($bound:tt)+) => {
        impl<M: $($bound)+ + Send> Connection<$kind<M>> {
            /// [`recv`](Self::recv) as a future (feature `async`).
            ///
            /// # Errors
            ///
            /// As [`recv`](Self::recv).
            ///
            /// # Panics
            ///
            /// As [`Connection::recv_async`].
            pub fn recv_async(&mut self) -> impl Future<Output = Result<M, RecvError>> + Send + '_ {
                let (raw, end) = (self.raw.clone(), self.end);
                recv_wait(raw, end, move || recv_result(self.try_recv()))
            }

            /// [`send`](Self::send) as a future (feature `async`): waits for
            /// room without blocking a thread; dropping it sends nothing.
            ///
            /// # Errors
            ///
            /// As [`send`](Self::send).
            ///
            /// # Panics
            ///
            /// As [`Connection::recv_async`].
            pub fn send_async<'a, B: Borrow<M> + Send + 'a>(
                &'a mut self,
                msg: B,
            ) -> impl Future<Output = Result<(), SendError<B>>> + Send + 'a {
                let (raw, end) = (self.raw.clone(), self.end);
                send_wait(raw, end, msg, move |m| self.try_send(m))
            }
        }
    };
}

typed_async!(Rkyv, Message + 'static);
#[cfg(feature = "serde")]
typed_async!(
    Serde,
    serde::Serialize + serde::de::DeserializeOwned + 'static
);

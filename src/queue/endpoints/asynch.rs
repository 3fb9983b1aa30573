//! The queue's futures (feature `async`): a receive that waits for a
//! message and a send that waits for room, without blocking a thread.
//!
//! Each poll makes the non-blocking attempt (`try_recv`/`try_send`, which
//! also looks for dead peers when a look is due); if it would block, the
//! future registers the word a blocked thread would sleep on with the
//! process's waiter (`sync::watcher`) and returns `Pending`. A receive
//! completes within one poll (claim, copy or decode, release), so dropping
//! a pending future at an `.await` loses no message, and drops its
//! registration.
//!
//! The futures borrow the endpoint mutably: `&mut Receiver` is `Send` (the
//! endpoint is `Send`, not `Sync`), so the futures can be spawned on a
//! multi-threaded executor.

use super::super::error::{RecvError, SendError, TryRecvError, TrySendError};
#[cfg(feature = "serde")]
use super::super::kinds::Serde;
use super::super::kinds::{Rkyv, Variable};
use super::super::raw::RawQueue;
use super::{Receiver, Sender};
use crate::codec::Message;
use crate::sync::watcher::{self, Watch};
use bytemuck::Pod;
use std::any::Any;
use std::borrow::Borrow;
use std::future::Future;
use std::sync::Arc;

/// Which side of the queue a future waits on.
#[derive(Clone, Copy)]
enum Side {
    /// For a message (the receivers' word).
    Recv,
    /// For room (the senders' word).
    Send,
}

/// Repeats `attempt` (`None`: it would block) until it gives a result,
/// between polls registered with the waiter on `side`'s word of `raw`.
fn wait_for<R>(
    raw: Arc<RawQueue>,
    side: Side,
    attempt: impl FnMut() -> Option<R>,
) -> impl Future<Output = R> {
    let (word, waiters) = match side {
        Side::Recv => raw.recv_words(),
        Side::Send => raw.space_words(),
    };
    let keep: Arc<dyn Any + Send + Sync> = raw.clone();
    // SAFETY: both words lie in `raw`'s mapping, which `keep` owns.
    let watch = unsafe { Watch::new(keep, word, waiters) };
    let ready = move |raw: &RawQueue| match side {
        Side::Recv => raw.recv_ready(),
        Side::Send => raw.send_ready(),
    };
    let for_attempt = raw.clone();
    let for_behind = raw.clone();
    let mut attempt = attempt;
    watcher::until(
        watch,
        move || {
            // A receive that is not ready is not attempted: `try_recv` would
            // wait (up to 100 ms) for a send in flight, blocking the
            // executor's thread; that commit bumps the word we register on
            // instead. The dead-peer look a failed `try_` makes is made here,
            // by the coarse clock as a failed `try_` reads it.
            if matches!(side, Side::Recv) && !ready(&for_attempt) {
                for_attempt.look_if_due_coarse();
                if !ready(&for_attempt) {
                    return None;
                }
            }
            attempt()
        },
        move || ready(&raw),
        // Behind a send that commits without a fence: nap, then look.
        move || matches!(side, Side::Recv) && for_behind.ring().claimed_not_held(),
    )
}

/// `None` for `Empty`, else the receive's result as a blocking receive
/// would give it.
pub(crate) fn recv_result<M>(r: Result<M, TryRecvError>) -> Option<Result<M, RecvError>> {
    match r {
        Ok(m) => Some(Ok(m)),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => Some(Err(RecvError::Disconnected)),
        Err(TryRecvError::Invalid(e)) => Some(Err(RecvError::Invalid(e))),
        Err(TryRecvError::Truncated) => Some(Err(RecvError::Truncated)),
        Err(TryRecvError::Corrupted(e)) => Some(Err(RecvError::Corrupted(e))),
    }
}

/// `Err(msg)` back for `Full`, else the send's result as a blocking send
/// would give it.
pub(crate) fn send_result<B>(
    r: Result<(), TrySendError<B>>,
) -> Result<Result<(), SendError<B>>, B> {
    match r {
        Ok(()) => Ok(Ok(())),
        Err(TrySendError::Full(b)) => Err(b),
        Err(TrySendError::Disconnected(b)) => Ok(Err(SendError::Disconnected(b))),
        Err(TrySendError::TooLarge { len, max }) => Ok(Err(SendError::TooLarge { len, max })),
        Err(TrySendError::Encoding(e)) => Ok(Err(SendError::Encoding(e))),
        Err(TrySendError::Truncated(b)) => Ok(Err(SendError::Truncated(b))),
        Err(TrySendError::Corrupted(e)) => Ok(Err(SendError::Corrupted(e))),
    }
}

/// The attempt of a send future over `try_send` (queue or pipe end): `None`
/// while there is no room, the message kept for the next attempt.
pub(crate) fn send_attempt<B>(
    msg: B,
    mut try_send: impl FnMut(B) -> Result<(), TrySendError<B>>,
) -> impl FnMut() -> Option<Result<(), SendError<B>>> {
    let mut msg = Some(msg);
    move || {
        let m = msg.take().expect("polled after completion");
        match send_result(try_send(m)) {
            Ok(done) => Some(done),
            Err(back) => {
                msg = Some(back);
                None
            }
        }
    }
}

/// A send future over `try_send`: the message goes back into the future
/// while the queue is full.
fn send_with<B>(
    raw: Arc<RawQueue>,
    msg: B,
    try_send: impl FnMut(B) -> Result<(), TrySendError<B>>,
) -> impl Future<Output = Result<(), SendError<B>>> {
    wait_for(raw, Side::Send, send_attempt(msg, try_send))
}

impl<T: Pod> Receiver<T> {
    /// [`recv`](Self::recv) as a future: waits for a message without
    /// blocking a thread (feature `async`; any executor). Dropping it before
    /// it completes loses no message.
    ///
    /// ```
    /// # fn main() -> Result<(), shmkit::Error> {
    /// let (tx, mut rx) = shmkit::queue::bounded::<u64>(4)?;
    /// std::thread::spawn(move || tx.send(7).unwrap());
    /// let got = futures::executor::block_on(rx.recv_async());
    /// assert_eq!(got, Ok(7));
    /// # Ok(()) }
    /// ```
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
        let raw = self.queue.raw.clone();
        wait_for(raw, Side::Recv, move || recv_result(self.try_recv()))
    }
}

impl<T: Pod + Send> Sender<T> {
    /// [`send`](Self::send) as a future: waits for room without blocking a
    /// thread (feature `async`).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Panics
    ///
    /// As [`Receiver::recv_async`].
    pub fn send_async(
        &mut self,
        value: T,
    ) -> impl Future<Output = Result<(), SendError<T>>> + Send + '_ {
        let raw = self.queue.raw.clone();
        send_with(raw, value, move |v| self.try_send(v))
    }
}

impl<T: Variable> Receiver<T> {
    /// [`recv_vec`](Self::recv_vec) as a future (feature `async`).
    ///
    /// # Errors
    ///
    /// As [`recv_vec`](Self::recv_vec).
    ///
    /// # Panics
    ///
    /// As [`Receiver::recv_async`].
    pub fn recv_vec_async(
        &mut self,
    ) -> impl Future<Output = Result<Vec<u8>, RecvError>> + Send + '_ {
        let raw = self.queue.raw.clone();
        wait_for(raw, Side::Recv, move || {
            recv_result(self.try_recv_bytes().map(|g| g.to_vec()))
        })
    }
}

impl<T: Variable> Sender<T> {
    /// [`send_bytes`](Self::send_bytes) as a future (feature `async`).
    ///
    /// # Errors
    ///
    /// As [`send_bytes`](Self::send_bytes).
    ///
    /// # Panics
    ///
    /// As [`Receiver::recv_async`].
    pub fn send_bytes_async<'a>(
        &'a mut self,
        bytes: &'a [u8],
    ) -> impl Future<Output = Result<(), SendError<()>>> + Send + 'a {
        let raw = self.queue.raw.clone();
        send_with(raw, (), move |()| self.try_send_bytes(bytes))
    }
}

/// `recv_async` and `send_async` for the encoded kinds.
macro_rules! typed_async {
    ($kind:ident, $($bound:tt)+) => {
        impl<M: $($bound)+ + Send> Receiver<$kind<M>> {
            /// [`recv`](Self::recv) as a future (feature `async`).
            ///
            /// # Errors
            ///
            /// As [`recv`](Self::recv).
            ///
            /// # Panics
            ///
            /// As [`Receiver::recv_async`].
            pub fn recv_async(&mut self) -> impl Future<Output = Result<M, RecvError>> + Send + '_ {
                let raw = self.queue.raw.clone();
                wait_for(raw, Side::Recv, move || recv_result(self.try_recv()))
            }
        }

        impl<M: $($bound)+> Sender<$kind<M>> {
            /// [`send`](Self::send) as a future (feature `async`).
            ///
            /// # Errors
            ///
            /// As [`send`](Self::send).
            ///
            /// # Panics
            ///
            /// As [`Receiver::recv_async`].
            pub fn send_async<'a, B: Borrow<M> + Send + 'a>(
                &'a mut self,
                msg: B,
            ) -> impl Future<Output = Result<(), SendError<B>>> + Send + 'a {
                let raw = self.queue.raw.clone();
                send_with(raw, msg, move |m| self.try_send(m))
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

//! A pipe end's futures (feature `async`): receiving without blocking a
//! thread, as the queue's (`queue/endpoints/asynch.rs`, which says how).

use super::Connection;
use super::raw::RawPipe;
use crate::codec::Message;
#[cfg(feature = "serde")]
use crate::queue::Serde;
use crate::queue::looks::Wait;
use crate::queue::{AnyRecvError, RecvError, Rkyv, Variable, recv_result};
use crate::sync::watcher::{self, Watch};
use bytemuck::Pod;
use std::any::Any;
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
    watcher::until(watch, attempt, move || raw.recv_ready(end))
}

impl<T: Pod + Send> Connection<T> {
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
        }
    };
}

typed_async!(Rkyv, Message + 'static);
#[cfg(feature = "serde")]
typed_async!(
    Serde,
    serde::Serialize + serde::de::DeserializeOwned + 'static
);

//! [`Sender`] and [`Receiver`], and the guards of zero-copy sends and
//! receives.

use super::error::{
    AnyRecvError, AnySendError, RecvError, RecvTimeoutError, SendError, SendTimeoutError,
    TryRecvError, TrySendError,
};
#[cfg(feature = "async")]
pub(crate) mod asynch;
mod batch;
mod bytes;
mod chunks;
pub(super) mod guards;

pub(super) use chunks::Halt;
use chunks::chunked;

use super::looks::Wait;
use super::raw::Stop;
use super::ring::SKIP;
use super::{Item, Queue};
use crate::error::Result;
use bytemuck::Pod;
use guards::{Iter, RecvGuard, SendSlot, TryIter};
use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

/// `Pod` items larger than this are sent with a held claim and a fenced
/// commit (`ring::HOLD`): a receiver sleeps behind their copy rather than
/// yield to it.
pub(super) const HOLD_ABOVE: usize = 4096;

/// `Send` but not `Sync`: one participant entry is used by one thread.
type NotSync = PhantomData<Cell<()>>;

/// The sending end: one participant entry. Clone it for another thread
/// (a clone registers a new entry).
pub struct Sender<T: Item> {
    pub(super) queue: Queue<T>,
    pub(super) entry: usize,
    /// The adoption token once this handle was encoded to travel; then drop
    /// leaves the entry to the process that adopts it.
    transit: Cell<u64>,
    _not_sync: NotSync,
}

/// The receiving end: one participant entry. Clone it for another thread.
pub struct Receiver<T: Item> {
    pub(super) queue: Queue<T>,
    pub(super) entry: usize,
    transit: Cell<u64>,
    _not_sync: NotSync,
}

macro_rules! endpoint_common {
    ($ty:ident, $role:literal, $register:ident) => {
        impl<T: Item> $ty<T> {
            pub(crate) fn new(queue: Queue<T>, entry: usize) -> Self {
                $ty {
                    queue,
                    entry,
                    transit: Cell::new(0),
                    _not_sync: PhantomData,
                }
            }

            /// Marks the entry as travelling (once); the clean-up that frees
            /// it if nobody adopts it.
            pub(crate) fn start_transit(&self) -> Option<crate::region::handle::Abandon> {
                if self.transit.get() != 0 {
                    return None;
                }
                let token = self.queue.raw.begin_transit(self.entry);
                self.transit.set(token);
                let (raw, entry) = (self.queue.raw.clone(), self.entry);
                Some(Box::new(move || raw.abandon(entry, token)))
            }

            /// The portable form (after `start_transit`).
            pub(crate) fn portable(&self) -> EndpointHandle {
                EndpointHandle {
                    region: crate::region::handle::RegionHandle::of(self.queue.segment()),
                    entry: self.entry as u32,
                    token: self.transit.get(),
                }
            }

            /// The queue this end belongs to.
            pub fn queue(&self) -> &Queue<T> {
                &self.queue
            }

            /// The queue's region.
            pub fn segment(&self) -> &crate::region::Segment {
                self.queue.segment()
            }

            /// Another handle with its own participant entry.
            ///
            /// # Errors
            ///
            /// When all 64 participant entries of the queue are taken.
            pub fn try_clone(&self) -> Result<Self> {
                self.queue.$register()
            }
        }

        impl<T: Item> Clone for $ty<T> {
            /// # Panics
            ///
            /// When all 64 participant entries of the queue are taken; use
            /// [`try_clone`](Self::try_clone) to handle that.
            fn clone(&self) -> Self {
                self.try_clone().expect(concat!("cloning a queue ", $role))
            }
        }

        impl<T: Item> Drop for $ty<T> {
            fn drop(&mut self) {
                // A handle that travelled leaves its entry to the adopter.
                if self.transit.get() == 0 {
                    self.queue.raw.unregister(self.entry);
                }
            }
        }

        impl<T: Item> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("queue", &self.queue)
                    .field("entry", &self.entry)
                    .finish()
            }
        }
    };
}

endpoint_common!(Sender, "sender", sender);
endpoint_common!(Receiver, "receiver", receiver);

impl<T: Item> Sender<T> {
    /// Claims a slot marked held (`ring::HOLD`): the caller may take any
    /// time before [`commit`](Self::commit).
    pub(super) fn claim(&self, wait: Wait) -> std::result::Result<u64, Halt> {
        self.claim_as(wait, true)
    }

    /// Claims a slot; `hold` false only for a caller that writes it at once
    /// (a `Pod` copy) and commits with [`commit_claimed`](Self::commit_claimed).
    pub(super) fn claim_as(&self, wait: Wait, hold: bool) -> std::result::Result<u64, Halt> {
        let mut got = None;
        let r = chunked(self.queue.segment(), wait, |d| {
            let r = self.queue.raw.claim_send(self.entry, d, hold);
            got = r.as_ref().ok().copied();
            r
        });
        if let (Err(Halt::Truncated), Some(pos)) = (r.as_ref(), got) {
            // Publish the claim as a skip rather than leave it pending.
            self.queue.raw.commit(self.entry, pos, SKIP);
        }
        r
    }

    /// `Err(Truncated)` with the message if the segment was found truncated
    /// during the send (its writes may have gone to private zero pages).
    pub(super) fn check_sent<M>(&self, m: M) -> std::result::Result<(), AnySendError<M>> {
        match self.queue.segment().check() {
            Ok(()) => Ok(()),
            Err(_) => Err(AnySendError::Truncated(m)),
        }
    }

    pub(super) fn commit(&self, pos: u64, len: usize) {
        self.queue.raw.commit(self.entry, pos, len as u64);
    }

    /// Commits a slot claimed with `claim_as(_, false)`.
    pub(super) fn commit_claimed(&self, pos: u64, len: usize) {
        self.queue.raw.commit_claimed(self.entry, pos, len as u64);
    }

    pub(super) fn stop<M>(halt: Halt, m: M) -> AnySendError<M> {
        match halt {
            Halt::Ring(Stop::WouldBlock) => AnySendError::Full(m),
            Halt::Ring(Stop::Timeout) => AnySendError::Timeout(m),
            Halt::Ring(Stop::Disconnected) => AnySendError::Disconnected(m),
            Halt::Truncated => AnySendError::Truncated(m),
        }
    }
}

impl<T: Pod> Sender<T> {
    fn send_until(&self, value: T, wait: Wait) -> std::result::Result<(), AnySendError<T>> {
        // Not held: the copy below is all that happens before the commit
        // (unless it is large enough to take long: `HOLD_ABOVE`).
        let hold = size_of::<T>() > HOLD_ABOVE;
        match self.claim_as(wait, hold) {
            Ok(pos) => {
                // SAFETY: the claimed slot is ours until commit; its data area
                // holds max_len = size_of::<T>() bytes, 16-aligned (checked at
                // create: align_of::<T>() <= 16). Unaligned write for safety.
                unsafe { self.queue.raw.data(pos).cast::<T>().write_unaligned(value) };
                if hold {
                    self.commit(pos, size_of::<T>());
                } else {
                    self.commit_claimed(pos, size_of::<T>());
                }
                self.check_sent(value)
            }
            Err(s) => Err(Self::stop(s, value)),
        }
    }

    /// Sends `value`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] when no receiver is left or the queue was
    /// closed.
    pub fn send(&self, value: T) -> std::result::Result<(), SendError<T>> {
        self.send_until(value, Wait::Forever).map_err(Into::into)
    }

    /// Sends `value` if there is room now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] if there is no room now; [`TrySendError::Disconnected`] when no receiver is
    /// left or the queue was closed; [`TrySendError::Truncated`] if a peer shrank the segment.
    pub fn try_send(&self, value: T) -> std::result::Result<(), TrySendError<T>> {
        self.send_until(value, Wait::No).map_err(Into::into)
    }

    /// Sends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`] if no room came within `timeout`; [`SendTimeoutError::Disconnected`] when no
    /// receiver is left or the queue was closed; [`SendTimeoutError::Truncated`] if a peer shrank the
    /// segment.
    pub fn send_timeout(
        &self,
        value: T,
        timeout: Duration,
    ) -> std::result::Result<(), SendTimeoutError<T>> {
        self.send_until(value, Wait::after(timeout))
            .map_err(Into::into)
    }

    /// Reserves the next slot and lends it to write the message in place;
    /// [`SendSlot::commit`] publishes it. Waits while the queue is full.
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] when no receiver is left or the queue was closed;
    /// [`SendError::Truncated`] if a peer shrank the segment.
    pub fn reserve(&mut self) -> std::result::Result<SendSlot<'_, T, T>, SendError<()>> {
        let pos = self.claim(Wait::Forever).map_err(|s| Self::stop(s, ()))?;
        Ok(SendSlot {
            sender: self,
            pos,
            len: size_of::<T>(),
            committed: false,
            _t: PhantomData,
        })
    }
}

impl<T: Item> Receiver<T> {
    pub(super) fn claim(&self, wait: Wait) -> std::result::Result<(u64, usize), AnyRecvError> {
        let mut got = None;
        let r = chunked(self.queue.segment(), wait, |d| {
            let r = self.queue.raw.claim_recv(self.entry, d);
            got = r.as_ref().ok().copied();
            r
        });
        r.map_err(|h| match h {
            Halt::Ring(Stop::WouldBlock) => AnyRecvError::Empty,
            Halt::Ring(Stop::Timeout) => AnyRecvError::Timeout,
            Halt::Ring(Stop::Disconnected) => AnyRecvError::Disconnected,
            Halt::Truncated => {
                if let Some((pos, _)) = got {
                    self.release(pos);
                }
                AnyRecvError::Truncated
            }
        })
    }

    pub(super) fn release(&self, pos: u64) {
        self.queue.raw.release(self.entry, pos);
    }

    pub(super) fn guard<V: ?Sized>(&mut self, claim: (u64, usize)) -> RecvGuard<'_, T, V> {
        RecvGuard {
            receiver: self,
            pos: claim.0,
            len: claim.1,
            _v: PhantomData,
        }
    }

    /// Receives the next message in place: the guard borrows the slot and
    /// frees it when dropped. Waits while the queue is empty. The one way to
    /// read a message where it lies, for every kind of queue: a `Pod` item
    /// derefs to the item; a variable kind derefs to its bytes, and
    /// [`RecvGuard::archived`] / [`RecvGuard::decode`] read an rkyv or serde
    /// message from them.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once every sender is gone (or the queue closed) and the queue is
    /// drained; [`RecvError::Truncated`] if a peer shrank the segment.
    pub fn recv_ref(&mut self) -> std::result::Result<RecvGuard<'_, T, T::View>, RecvError> {
        let c = self.claim(Wait::Forever)?;
        Ok(self.guard(c))
    }

    /// [`recv_ref`](Self::recv_ref) if a message is ready now.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when nothing is ready; [`TryRecvError::Disconnected`] once every sender
    /// is gone (or the queue closed) and the queue is drained; [`TryRecvError::Truncated`] if a peer
    /// shrank the segment.
    pub fn try_recv_ref(&mut self) -> std::result::Result<RecvGuard<'_, T, T::View>, TryRecvError> {
        let c = self.claim(Wait::No)?;
        Ok(self.guard(c))
    }

    /// [`recv_ref`](Self::recv_ref) waiting at most `timeout` (zero: do not wait).
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if nothing arrived within `timeout`; [`RecvTimeoutError::Disconnected`] once
    /// every sender is gone (or the queue closed) and the queue is drained;
    /// [`RecvTimeoutError::Truncated`] if a peer shrank the segment.
    pub fn recv_ref_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<RecvGuard<'_, T, T::View>, RecvTimeoutError> {
        let c = self.claim(Wait::after(timeout))?;
        Ok(self.guard(c))
    }

    /// The queue, for [`Select`](crate::select::Select).
    pub(crate) fn raw_queue(&self) -> &std::sync::Arc<crate::queue::raw::RawQueue> {
        &self.queue.raw
    }

    /// Marks one received message as processed (joinable queues).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if called more often than messages
    /// were sent.
    pub fn task_done(&self) -> Result<()> {
        self.queue.task_done()
    }
}

impl<T: Pod> Receiver<T> {
    fn recv_until(&self, wait: Wait) -> std::result::Result<T, AnyRecvError> {
        let (pos, _) = self.claim(wait)?;
        // SAFETY: the claimed slot holds size_of::<T>() committed bytes (the
        // queue's max_len, checked on open); any bytes are a valid T.
        let v = unsafe { self.queue.raw.data(pos).cast::<T>().read_unaligned() };
        self.release(pos);
        // The copy may be zeroes from the pages that replaced a cut range.
        if self.queue.segment().check().is_err() {
            return Err(AnyRecvError::Truncated);
        }
        Ok(v)
    }

    /// Receives the next message, waiting while the queue is empty.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once every sender is gone (or the queue
    /// closed) and the queue is drained.
    pub fn recv(&self) -> std::result::Result<T, RecvError> {
        self.recv_until(Wait::Forever).map_err(Into::into)
    }

    /// Receives a message if one is ready now.
    ///
    /// Linearizable, as crossbeam's: once a `send` has returned in any
    /// process, a `try_recv` that starts after it does not report
    /// [`TryRecvError::Empty`] because an *earlier* send (claimed, still
    /// copying) has not committed yet — it waits for that commit. That wait
    /// ends when the sender commits, when the sender is found dead (its claim
    /// is skipped), or after 100 ms (a slot a live sender holds open with
    /// [`Sender::reserve`]); only then can it report `Empty` with messages
    /// behind the open slot.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when nothing is ready, [`TryRecvError::Disconnected`]
    /// once every sender is gone and the queue is drained.
    pub fn try_recv(&self) -> std::result::Result<T, TryRecvError> {
        self.recv_until(Wait::No).map_err(Into::into)
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if nothing arrived within `timeout`; [`RecvTimeoutError::Disconnected`] once
    /// every sender is gone (or the queue closed) and the queue is drained;
    /// [`RecvTimeoutError::Truncated`] if a peer shrank the segment.
    pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<T, RecvTimeoutError> {
        self.recv_until(Wait::after(timeout)).map_err(Into::into)
    }

    /// A blocking iterator of received messages: it waits for each and ends
    /// when the queue is disconnected and drained (or on any other receive
    /// error), as crossbeam's `Receiver::iter`. `for msg in &rx` does the same.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { receiver: self }
    }

    /// An iterator of the messages ready now: it never waits and ends at the
    /// first [`try_recv`](Self::try_recv) that fails, as crossbeam's
    /// `Receiver::try_iter`.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { receiver: self }
    }
}

/// The portable form of a queue [`Sender`] or [`Receiver`]: the region, and
/// the participant entry that travels with it.
///
/// Sending an endpoint *moves* its registration: the receiving process
/// adopts the entry (by its token), so the queue never sees zero senders in
/// between. An entry that is never adopted is freed when the child it was
/// spawned with ends, or when the sending process ends.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[doc(hidden)]
#[rkyv(attr(doc(hidden)))]
pub struct EndpointHandle {
    /// The queue region.
    pub region: crate::region::handle::RegionHandle,
    /// The participant entry.
    pub entry: u32,
    /// The adoption token.
    pub token: u64,
}

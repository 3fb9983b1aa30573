//! A bounded queue in shared memory for many producers and many consumers:
//! each message is taken by exactly one receiver.
//!
//! ```
//! # fn main() -> shmkit::Result<()> {
//! use shmkit::queue;
//! let (tx, rx) = queue::bounded::<u64>(1024)?;      // anonymous; or Queue::builder().name(..)
//! let child = shmkit::spawn(|tx: queue::Sender<u64>| {
//!     for i in 0..10 { tx.send(i).unwrap(); }
//! }, tx)?;                                            // the sender travels as a handle
//! for _ in 0..10 { println!("{}", rx.recv().unwrap()); }
//! child.join()?;
//! # Ok(()) }
//! ```
//!
//! - **Messages**: the message type is part of the queue's type, recorded
//!   in the region and checked when a peer opens it
//!   ([`RegionError::TypeMismatch`](crate::Error)):
//!   - `Queue<T>` for `T: Pod`: fixed slots; `send(T)` is one copy into
//!     the slot. (`bool` is not `Pod`: use `u8`, as Python's `c_bool` is.)
//!   - `Queue<Rkyv<M>>` for any rkyv type `M` ([`Rkyv`]): `send(M)`
//!     serialises straight into the slot, `recv()` validates and decodes a
//!     copy, [`RecvGuard::archived`] reads the archive in place.
//!   - `Queue<Serde<M>>` for any serde type `M` (feature `serde`, postcard
//!     format): `send(M)`, `recv()`.
//!   - `Queue<Bytes>` for raw bytes; every variable kind also has the
//!     `_bytes` forms ([`Sender::send_bytes`], [`Receiver::recv_bytes`]).
//!
//!   [`bounded`] makes a `Pod` queue, [`bounded_messages`] a variable one.
//! - **Zero-copy** both ways: [`Sender::reserve`] / [`Sender::reserve_bytes`]
//!   give the slot to write into, [`SendSlot::commit`] publishes it;
//!   [`Receiver::recv_ref`] / [`Receiver::recv_bytes`] borrow the slot until
//!   the guard drops. A `Value`/`Array` sent as a message travels as its name
//!   (a few bytes), never as its contents.
//! - **Batches** of `Pod` items: [`Sender::send_many`] /
//!   [`Receiver::recv_many`] (and their `try_` and `_timeout` forms) claim
//!   up to 64 slots with one compare-and-swap and wake the peer once per
//!   run; a process killed mid-run loses nothing it committed.
//! - **Blocking**: a bounded spin, then a shared futex sleep. Every form of
//!   waiting looks for dead peers ([`Queue::recover`]) once this process's
//!   last look at this queue is 50 ms old, whether that look happened in
//!   this call or an earlier one: a blocking `recv`, a loop of
//!   `recv_timeout(1 ms)`, or `try_recv` failing between the caller's own
//!   sleeps all see a peer's death within about 50 ms (plus the caller's own
//!   time between calls). A blocked call sleeps no longer than until its
//!   next look (an idle blocked receiver wakes about 20 times a second). The
//!   clock is read only when an operation fails or sleeps, never when a
//!   `try_` operation succeeds.
//! - **Lifecycle**: the queue counts its live sender and receiver handles.
//!   When every sender is gone (dropped *or dead*), receivers drain what was
//!   committed and then get [`RecvError::Disconnected`]; likewise senders when
//!   every receiver is gone. A queue that never had a sender (receiver) is
//!   not disconnected: receivers started before the producers wait for them.
//!   [`Queue::close`] shuts it down explicitly.
//!   Joinable queues count messages until [`Queue::task_done`]; [`Queue::join`]
//!   waits for zero.
//! - **Crashes**: a sender killed between claiming a slot and committing it
//!   leaves a claim that a blocked receiver finds (the claim is recorded in
//!   the sender's participant entry) and turns into a skip; a receiver killed
//!   while holding a received slot has that message delivered again to
//!   another receiver. Nothing committed is lost; a message is delivered
//!   twice only if a receiver died while holding it (at-least-once for that
//!   one message). Counted in [`Queue::stats`].
//! - **Hostile peers**: geometry is checked against the mapping on open,
//!   positions are masked, lengths are checked against the slot size before
//!   any read, archives are validated (bytecheck). A slot stamp or cursor
//!   that no legitimate operation can produce is repaired at the next look,
//!   so garbage never wedges the queue for good.
//!
//! Each handle (and each clone) is one participant entry, used by one thread
//! at a time: `Sender` and `Receiver` are `Send` but not `Sync`; clone them
//! for other threads. A queue has room for 64 participants.
//!
//! - **`&self` or `&mut self`**: an operation takes `&mut self` exactly when
//!   what it returns borrows the handle — a slot lent until a guard drops
//!   ([`Sender::reserve`], [`Sender::reserve_bytes`], [`Receiver::recv_ref`],
//!   [`Receiver::recv_bytes`] and their `try_`/`_timeout` forms). Every
//!   operation that copies or encodes (`send`, `try_send`, `send_timeout`,
//!   `send_bytes`, `recv`, `try_recv`, `recv_timeout`, `iter`, `try_iter`),
//!   of every kind, takes `&self`. The pipe's
//!   [`Connection`](crate::pipe::Connection) follows the same rule: all its
//!   operations copy, so all take `&self`.
//! - **Capacity** is exact: `capacity(1000)` holds 1,000 messages, as
//!   crossbeam's `bounded(1000)` and Python's `Queue(1000)`.
//! - **Waiting on several queues** (and pipe ends) at once:
//!   [`Select`](crate::select::Select).

pub(crate) mod atomic;
pub(crate) mod ring;

mod batch;
pub(crate) mod blocking;
pub(crate) mod control;
mod endpoints;
mod error;
pub(crate) mod geometry;
mod joinable;
pub(crate) mod kinds;
pub(crate) mod looks;
mod participants;
pub(crate) mod raw;
mod recovery;
mod travel;
mod typed;
pub(crate) mod waiting;

#[cfg(feature = "async")]
pub(crate) use endpoints::asynch::{recv_result, send_attempt};
pub use endpoints::guards::{Iter, RecvGuard, SendSlot, TryIter};
pub use endpoints::{Receiver, Sender};
pub(crate) use error::{AnyRecvError, AnySendError};
pub use error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
#[cfg(feature = "serde")]
pub use kinds::Serde;
pub use kinds::{Bytes, Item, Rkyv, Variable};

use crate::error::{Error, Result};
use crate::region::{RegionOptions, Segment};
use control::{FLAG_BYTES, FLAG_JOINABLE};
pub(crate) use control::{ROLE_RECEIVER, ROLE_SENDER};
use geometry::Geometry;
use raw::RawQueue;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// Counters of crash recovery, from [`Queue::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Slots claimed by senders that died before committing, skipped.
    pub skipped: u64,
    /// Messages held by receivers that died, delivered again.
    pub redelivered: u64,
    /// Dead participants removed.
    pub reaped: u64,
    /// Impossible words a peer wrote (slot stamps, cursors) that recovery
    /// repaired, so that the queue works again.
    pub repaired: u64,
}

/// One registered sender or receiver, from [`Queue::participants`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Its process.
    pub pid: u32,
    /// Whether it sends (else it receives).
    pub sender: bool,
    /// Whether the handle is travelling to another process.
    pub in_transit: bool,
    /// Whether its process still runs.
    pub alive: bool,
}

/// A handle on a queue region. Cheap to clone; make [`sender`](Self::sender)s
/// and [`receiver`](Self::receiver)s from it.
pub struct Queue<T> {
    pub(crate) raw: Arc<RawQueue>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            raw: self.raw.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("segment", &self.raw.segment().id())
            .field("capacity", &self.raw.capacity())
            .field("len", &self.raw.ring().len())
            .finish()
    }
}

/// Builder for [`Queue`].
#[derive(Debug)]
pub struct QueueBuilder<T> {
    opts: RegionOptions,
    capacity: usize,
    max_message: Option<usize>,
    joinable: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T: Item> QueueBuilder<T> {
    region_setters!();

    /// Messages the queue holds at most (default 1024), exactly, as
    /// crossbeam's `bounded(n)` and Python's `Queue(maxsize=n)`: with
    /// `capacity(1000)` the 1,001st send waits. The ring itself has the
    /// next power of two of slots (at least 2); the extra slots are never
    /// filled. [`create`](Self::create) refuses 0 with
    /// [`Error::InvalidArgument`] (there is no rendezvous queue).
    ///
    /// Slots are written in turn, so every slot is touched once per lap:
    /// for messages of megabytes keep the capacity small (2), so the slots
    /// stay in cache (4 MiB messages: about 0.2 ms each through 2 slots,
    /// 0.4-0.8 ms through 4, 1 ms through 8, on a 32 MiB L3; BENCHMARKS.md).
    #[must_use]
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// The largest message in bytes (encoded), for the variable kinds
    /// `Queue<Bytes>`, `Queue<Rkyv<M>>` and `Queue<Serde<M>>` (default 4096).
    /// Ignored for `T: Pod`, whose messages are `size_of::<T>()` bytes.
    #[must_use]
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = Some(bytes);
        self
    }

    /// Count sent messages until [`Queue::task_done`], so that
    /// [`Queue::join`] can wait for them (Python's `JoinableQueue`).
    #[must_use]
    pub fn joinable(mut self, yes: bool) -> Self {
        self.joinable = yes;
        self
    }

    fn flags(&self) -> u64 {
        let mut f = 0;
        if T::FIXED.is_none() {
            f |= FLAG_BYTES;
        }
        if self.joinable {
            f |= FLAG_JOINABLE;
        }
        f
    }

    fn max_len(&self) -> usize {
        T::FIXED.unwrap_or(self.max_message.unwrap_or(4096))
    }

    /// Creates the queue.
    ///
    /// # Errors
    ///
    /// As for any region ([`RegionError::AlreadyExists`](crate::error::RegionError::AlreadyExists), [`RegionError::NoSpace`](crate::error::RegionError::NoSpace), ...);
    /// [`Error::InvalidArgument`] for a capacity of 0 or a `T` aligned to
    /// more than 16 bytes.
    pub fn create(self) -> Result<Queue<T>> {
        if let Some(n) = T::FIXED
            && n > 0
            && align_needed::<T>() > 16
        {
            return Err(Error::InvalidArgument {
                argument: "queue item type",
                message: format!(
                    "{} is aligned to {} bytes; queue slots align items to at most 16: \
                     wrap it in a type of lower alignment or send its bytes",
                    std::any::type_name::<T>(),
                    align_needed::<T>()
                ),
            });
        }
        let g = Geometry {
            capacity: self.capacity as u64,
            max_len: self.max_len() as u64,
            flags: self.flags(),
        };
        Ok(Queue::wrap(RawQueue::create(&self.opts, &T::tag(), g)?))
    }

    /// Opens an existing queue, checking the item type (and, if
    /// [`max_message`](Self::max_message) was given, the message size).
    ///
    /// # Errors
    ///
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name; [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name or
    /// none (open needs a name or a path); [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a queue,
    /// [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if its item type (or tag) differs, [`RegionError::Corrupted`](crate::error::RegionError::Corrupted) if its
    /// geometry is impossible or its message kind (bytes or typed) differs,
    /// [`RegionError::LengthMismatch`](crate::error::RegionError::LengthMismatch) if its message size differs from
    /// [`max_message`](Self::max_message); and the other open errors of any region
    /// ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized), [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner), [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(self) -> Result<Queue<T>> {
        let max = T::FIXED.or(self.max_message).map(|m| m as u64);
        Ok(Queue::wrap(RawQueue::open(
            &self.opts,
            &T::tag(),
            self.flags(),
            max,
        )?))
    }

    /// Opens a queue from an inherited descriptor.
    ///
    /// # Errors
    ///
    /// The checks of an open: [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a queue, [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch)
    /// if its item type (or tag) differs, [`RegionError::Corrupted`](crate::error::RegionError::Corrupted) if its geometry is impossible or its
    /// message kind (bytes or typed) differs, [`RegionError::LengthMismatch`](crate::error::RegionError::LengthMismatch) if its message size differs
    /// from the item type's; [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if it was never published; [`Error::Io`] if
    /// `fstat` or `mmap` fails.
    pub fn from_fd(self, fd: std::os::fd::OwnedFd) -> Result<Queue<T>> {
        let max = T::FIXED.map(|m| m as u64);
        Ok(Queue::wrap(RawQueue::from_fd(
            fd,
            &self.opts,
            &T::tag(),
            self.flags(),
            max,
        )?))
    }
}

fn align_needed<T: Item>() -> usize {
    // Only Pod items reach here with FIXED = Some; Bytes is byte-aligned.
    std::mem::align_of::<T>()
}

/// A new anonymous queue of `T: Pod` with `capacity` slots: a sender and a
/// receiver. Pass either to a spawned child as an argument.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a capacity of 0 or a `T` aligned to more than 16 bytes;
/// [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if the slots do not fit the address space; [`Error::Io`] if the OS refuses
/// the memory (`memfd_create`, `ftruncate`, `mmap`).
pub fn bounded<T: bytemuck::Pod>(capacity: usize) -> Result<(Sender<T>, Receiver<T>)> {
    let q = Queue::<T>::builder().capacity(capacity).create()?;
    Ok((q.sender()?, q.receiver()?))
}

/// A new anonymous queue of raw byte messages up to `max_message` bytes:
/// [`bounded_messages::<Bytes>`](bounded_messages).
///
/// # Errors
///
/// As [`bounded_messages`].
pub fn bounded_bytes(
    capacity: usize,
    max_message: usize,
) -> Result<(Sender<Bytes>, Receiver<Bytes>)> {
    bounded_messages::<Bytes>(capacity, max_message)
}

/// A new anonymous queue of variable-size messages of kind `T` ([`Bytes`],
/// [`Rkyv<M>`](Rkyv), `Serde<M>`) up to `max_message` encoded bytes.
///
/// ```
/// # fn main() -> shmkit::Result<()> {
/// use shmkit::queue::{self, Rkyv};
/// use shmkit::rkyv; // no rkyv in your own Cargo.toml needed
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
/// #[rkyv(crate = shmkit::rkyv)]
/// struct Job { id: u32, name: String }
///
/// let (tx, rx) = queue::bounded_messages::<Rkyv<Job>>(8, 1024)?;
/// tx.send(Job { id: 7, name: "resize".into() }).unwrap();
/// let mut rx = rx;
/// let slot = rx.recv_ref().unwrap();        // read in place...
/// assert_eq!(slot.archived()?.id, 7);       // ...validated, zero-copy
/// drop(slot);
/// tx.send(Job { id: 8, name: "crop".into() }).unwrap();
/// assert_eq!(rx.recv().unwrap(), Job { id: 8, name: "crop".into() }); // or a decoded copy
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a capacity of 0; [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if the slots do not fit the
/// address space; [`Error::Io`] if the OS refuses the memory (`memfd_create`, `ftruncate`, `mmap`).
pub fn bounded_messages<T: Variable>(
    capacity: usize,
    max_message: usize,
) -> Result<(Sender<T>, Receiver<T>)> {
    let q = Queue::<T>::builder()
        .capacity(capacity)
        .max_message(max_message)
        .create()?;
    Ok((q.sender()?, q.receiver()?))
}

impl<T: Item> Queue<T> {
    fn wrap(raw: Arc<RawQueue>) -> Self {
        Queue {
            raw,
            _t: PhantomData,
        }
    }

    /// A builder: name, capacity, maximum message, joinable, ...
    #[must_use]
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder {
            opts: RegionOptions::default(),
            capacity: 1024,
            max_message: None,
            joinable: false,
            _t: PhantomData,
        }
    }

    /// Opens the named queue.
    ///
    /// # Errors
    ///
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name; [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name;
    /// [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a queue, [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch) if its item type
    /// differs, [`RegionError::Corrupted`](crate::error::RegionError::Corrupted) if its geometry is impossible or its message kind (bytes or
    /// typed) differs, [`RegionError::LengthMismatch`](crate::error::RegionError::LengthMismatch) if its message size differs from the item type's;
    /// and the other open errors of any region ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized), [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    /// A new sender: one participant entry of this process.
    ///
    /// # Errors
    ///
    /// [`RegionError::TooManyHandles`](crate::error::RegionError::TooManyHandles) when all participant entries of the queue are taken (after looking
    /// for dead ones).
    pub fn sender(&self) -> Result<Sender<T>> {
        let entry = self.raw.register(ROLE_SENDER)?;
        Ok(Sender::new(self.clone(), entry))
    }

    /// A new receiver: one participant entry of this process.
    ///
    /// # Errors
    ///
    /// [`RegionError::TooManyHandles`](crate::error::RegionError::TooManyHandles) when all participant entries of the queue are taken (after looking
    /// for dead ones).
    pub fn receiver(&self) -> Result<Receiver<T>> {
        let entry = self.raw.register(ROLE_RECEIVER)?;
        Ok(Receiver::new(self.clone(), entry))
    }

    /// Messages committed (or being written) and not yet received.
    #[must_use]
    pub fn len(&self) -> usize {
        self.raw.ring().len() as usize
    }

    /// Whether there is nothing to receive.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a send would have to wait.
    #[must_use]
    pub fn is_full(&self) -> bool {
        !self.raw.ring().can_send()
    }

    /// Messages the queue holds at most: the capacity it was created with.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.raw.capacity()
    }

    /// The largest message in bytes.
    #[must_use]
    pub fn max_message(&self) -> usize {
        self.raw.max_len()
    }

    /// Live sender handles (dead ones are removed when a waiting peer looks).
    #[must_use]
    pub fn sender_count(&self) -> usize {
        self.raw.senders() as usize
    }

    /// Live receiver handles.
    #[must_use]
    pub fn receiver_count(&self) -> usize {
        self.raw.receivers() as usize
    }

    /// Closes the queue for everyone: sends fail with `Disconnected`,
    /// receivers drain what was committed and then get `Disconnected`.
    pub fn close(&self) {
        self.raw.close();
    }

    /// Whether [`close`](Self::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.raw.is_closed()
    }

    /// Looks for dead participants now and repairs what they held, and
    /// repairs impossible bytes a peer wrote into the cursors or slot
    /// stamps (counted in [`QueueStats::repaired`]); `true` if anything was
    /// found. Every waiting or failing operation does this by itself once
    /// this process's last look at this queue is 50 ms old (in this call or
    /// an earlier one).
    #[allow(clippy::must_use_candidate)] // called for its repairs; the flag is only informational
    pub fn recover(&self) -> bool {
        self.raw.recover()
    }

    /// The registered senders and receivers.
    #[must_use]
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        self.raw.participants()
    }

    /// Crash-recovery counters.
    #[must_use]
    pub fn stats(&self) -> QueueStats {
        let (skipped, redelivered, reaped, repaired) = self.raw.stats();
        QueueStats {
            skipped,
            redelivered,
            reaped,
            repaired,
        }
    }

    /// Marks one received message as processed (joinable queues).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if called more often than messages were sent.
    pub fn task_done(&self) -> Result<()> {
        self.raw.task_done()
    }

    /// Waits until every sent message was marked done (joinable queues).
    pub fn join(&self) {
        while !self.raw.join(looks::Wait::Forever) {}
    }

    /// [`join`](Self::join) for at most `timeout`; `false` on timeout.
    #[must_use]
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.raw.join(looks::Wait::after(timeout))
    }

    /// The region beneath.
    #[must_use]
    pub fn segment(&self) -> &Segment {
        self.raw.segment()
    }

    pub(crate) fn from_handle(h: crate::region::handle::RegionHandle) -> Result<Self> {
        crate::region::handle::reopen_with!(h, Self::builder())
    }
}

impl<T: Item> crate::region::handle::Travels for Queue<T> {}

crate::region::handle::region_handle_archive!(Queue<T: Item>, Queue::from_handle);

//! A duplex pipe in shared memory: two connected ends, each direction a
//! single-producer single-consumer ring (the queue's ring with plain stores
//! instead of compare-and-swap). The message kind is part of the type, as
//! for a queue: `Connection<T>` for a `Pod` `T`, `Connection<Rkyv<M>>`,
//! `Connection<Serde<M>>` (feature `serde`), `Connection<Bytes>`; the region
//! records it, and opening an end as another kind is
//! [`RegionError::TypeMismatch`].
//!
//! ```
//! # fn main() -> shmkit::Result<()> {
//! use shmkit::pipe::{self, Connection};
//! use shmkit::queue::Rkyv;
//!
//! let (parent, child_end) = pipe::pipe::<Rkyv<String>>()?;
//! let child = shmkit::spawn(|conn: Connection<Rkyv<String>>| {
//!     conn.send(String::from("hello")).unwrap();
//!     conn.recv().unwrap().len()
//! }, child_end)?;
//! assert_eq!(parent.recv().unwrap(), "hello");
//! parent.send("a reply".to_string()).unwrap();
//! assert_eq!(child.join()?, 7);
//! # Ok(()) }
//! ```
//!
//! Python's `Pipe()`: `send`, `recv`, `poll`. An end learns that its peer is
//! gone when the peer drops its `Connection` (at once) or dies: every wait
//! (`send`, `recv`, `recv_timeout` of any length, `poll` of any length,
//! even zero) looks whether the peer's process is alive once the last look
//! by this process is 50 ms old, so a death is seen within about 50 ms by
//! an end that keeps waiting, however it slices its waits
//! ([`Connection::recover`] looks at once). Then `recv` drains what was sent
//! and returns [`RecvError::Disconnected`](crate::queue::RecvError::Disconnected), and `send` fails with
//! [`SendError::Disconnected`](crate::queue::SendError::Disconnected).
//!
//! [`PipeBuilder::open`] takes an end over. If its previous holder is dead
//! (or closed it), its half-done work is repaired first, as queue recovery
//! does: a message it had received but not finished is delivered again to
//! the new holder, and a slot it had claimed to send into but not committed
//! is skipped, so that the other end's writer is never blocked for good and
//! no committed message is lost.

#[cfg(feature = "async")]
mod asynch;
mod raw;
mod travel;
mod typed;

use crate::error::RegionError;
pub(crate) use raw::RawPipe;
use raw::{PipeControl, Waited, spec};
#[doc(hidden)]
pub use travel::{ArchivedPipeHandle, PipeHandle};

use crate::error::{Error, Result};
use crate::queue::atomic::AtomicU64 as RingU64;
use crate::queue::blocking::wake_one;
use crate::queue::looks::Wait;
use crate::queue::ring::SlotHeader;
use crate::queue::{AnyRecvError, AnySendError};
use crate::queue::{Bytes, Item};
use crate::region::handle::{RegionHandle, Reopen};
use crate::region::{RegionOptions, Segment};
use crate::sync::wait::Backoff;
use crate::sys::proc;
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Builder for a [`pipe`] with a name, a capacity or a larger maximum
/// message.
#[derive(Debug)]
pub struct PipeBuilder<T: Item = Bytes> {
    opts: RegionOptions,
    capacity: usize,
    max_message: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T: Item> Default for PipeBuilder<T> {
    fn default() -> Self {
        PipeBuilder {
            opts: RegionOptions::default(),
            capacity: 64,
            max_message: T::FIXED.unwrap_or(64 * 1024),
            _t: PhantomData,
        }
    }
}

impl<T: Item> PipeBuilder<T> {
    region_setters!();

    /// Messages in flight per direction, rounded up to a power of two, at
    /// least 2 (default 64).
    #[must_use]
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// The largest message in bytes (default 64 KiB), for the variable
    /// kinds (`Bytes`, `Rkyv<M>`, `Serde<M>`). Ignored for `T: Pod`, whose
    /// messages are `size_of::<T>()` bytes.
    #[must_use]
    pub fn max_message(mut self, bytes: usize) -> Self {
        if T::FIXED.is_none() {
            self.max_message = bytes;
        }
        self
    }

    /// Creates the pipe; its two connected ends.
    ///
    /// # Errors
    ///
    /// [`RegionError::NoSpace`] if the capacity and message size do not fit the address space; as for any
    /// region: [`RegionError::AlreadyExists`] if the name is taken, [`RegionError::InvalidName`] for a bad
    /// name, [`RegionError::NoSpace`] if /dev/shm (or the file's filesystem) is too small,
    /// [`RegionError::PermissionDenied`] or [`Error::Io`] if the OS refuses.
    pub fn create(self) -> Result<(Connection<T>, Connection<T>)> {
        let too_big = || {
            Error::Region(RegionError::NoSpace {
                name: "<new pipe>".into(),
                requested: u64::MAX,
                available: 0,
            })
        };
        let capacity = (self.capacity.max(2) as u64)
            .checked_next_power_of_two()
            .ok_or_else(too_big)?;
        let stride = (size_of::<SlotHeader>() as u64)
            .checked_add(self.max_message as u64)
            .and_then(|s| s.checked_next_multiple_of(64))
            .ok_or_else(too_big)?;
        let bytes = capacity
            .checked_mul(stride)
            .and_then(|b| b.checked_mul(2))
            .ok_or_else(too_big)?;
        let max_len = self.max_message as u64;
        let seg = Segment::create(&self.opts, &spec::<T>(), bytes, |control, data| {
            let c = control.cast::<PipeControl>();
            // SAFETY: unpublished, zeroed, sized and aligned for PipeControl
            // (zero is valid for every field); the slots lie in the data area.
            unsafe {
                (*c).capacity = capacity;
                (*c).stride = stride;
                (*c).max_len = max_len;
                for i in 0..2 * capacity {
                    let slot = data.add((i * stride) as usize).cast::<SlotHeader>();
                    std::ptr::addr_of_mut!((*slot).seq).write(RingU64::new(i % capacity));
                }
            }
            Ok(())
        })?;
        let raw = RawPipe::check(seg)?;
        Ok((Connection::claim(raw.clone(), 0), Connection::claim(raw, 1)))
    }

    /// Opens end `end` (0 or 1) of a named pipe, taking it over.
    ///
    /// If the previous holder of that end is dead (or dropped it), what it
    /// left half done is repaired first: a message it had received but not
    /// finished (killed inside `recv`) is received again by this end, and a
    /// slot it had claimed to send into but not committed is skipped, so no
    /// committed message is lost and the other end never waits for good.
    /// Taking over an end whose holder is alive repairs nothing (both would
    /// then use one end: don't).
    ///
    /// # Errors
    ///
    /// [`RegionError::NotFound`] if no segment has the name; [`RegionError::InvalidName`] for a bad name or
    /// none (open needs a name or a path); [`RegionError::KindMismatch`] if it is not a pipe,
    /// [`RegionError::TypeMismatch`] if its tag differs, [`RegionError::Corrupted`] if its geometry is
    /// impossible; and the other open errors of any region ([`RegionError::NotInitialized`],
    /// [`RegionError::ForeignOwner`], [`RegionError::Truncated`], ...).
    pub fn open(self, end: usize) -> Result<Connection<T>> {
        let raw = RawPipe::check(Segment::open(&self.opts, &spec::<T>(), None)?)?;
        Ok(Connection::take_over(raw, end.min(1)))
    }
}

/// A new anonymous duplex pipe of messages of kind `T` (64 in flight per
/// direction, up to 64 KiB each): its two ends. Give one to a child as an
/// argument. `T` is a `Pod` type, [`Rkyv<M>`](crate::queue::Rkyv),
/// `Serde<M>` or [`Bytes`], as for a queue.
///
/// # Errors
///
/// [`Error::Io`] if the OS refuses the memory (`memfd_create`, `ftruncate`, `mmap`).
pub fn pipe<T: Item>() -> Result<(Connection<T>, Connection<T>)> {
    PipeBuilder::default().create()
}

/// One end of a pipe carrying messages of kind `T`. `Send`, not `Sync`
/// (one thread at a time).
pub struct Connection<T: Item = Bytes> {
    pub(super) raw: Arc<RawPipe>,
    pub(super) end: usize,
    pub(super) transit: Cell<u64>,
    pub(super) _t: PhantomData<fn() -> T>,
}

impl<T: Item> Connection<T> {
    /// The pipe and this end, for [`Select`](crate::select::Select).
    pub(crate) fn raw_end(&self) -> (&Arc<RawPipe>, usize) {
        (&self.raw, self.end)
    }
}

impl<T: Item> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("segment", &self.raw.seg.id())
            .field("end", &self.end)
            .finish()
    }
}

impl<T: Item> Connection<T> {
    fn claim(raw: Arc<RawPipe>, end: usize) -> Connection<T> {
        let e = &raw.control().ends[end];
        e.start.store(proc::own_start_time(), Ordering::SeqCst);
        e.pid.store(proc::pid(), Ordering::SeqCst);
        e.token.store(0, Ordering::SeqCst);
        e.closed.store(0, Ordering::SeqCst);
        Connection {
            raw,
            end,
            transit: Cell::new(0),
            _t: PhantomData,
        }
    }

    /// Takes over end `end` of an existing pipe (see [`PipeBuilder::open`]).
    fn take_over(raw: Arc<RawPipe>, end: usize) -> Connection<T> {
        let e = &raw.control().ends[end];
        // While the token is set, the peer does not judge this end
        // (`check_peer`): it cannot mark us closed halfway.
        e.token.store(TAKING_OVER, Ordering::SeqCst);
        let me = proc::pid();
        let prev = e.pid.load(Ordering::SeqCst);
        let prev_done = prev == 0
            || e.closed.load(Ordering::SeqCst) != 0
            || !proc::is_alive(prev, e.start.load(Ordering::SeqCst));
        // One taker repairs: whoever swaps the previous holder's pid out. A
        // taker that loses takes over from the winner, alive: no repair.
        let won = e
            .pid
            .compare_exchange(prev, me, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if !won {
            e.pid.store(me, Ordering::SeqCst);
        }
        let won = won && prev_done;
        e.start.store(proc::own_start_time(), Ordering::SeqCst);
        if won {
            // We are the one producer of direction `end` and the one
            // consumer of the other: nobody races these repairs.
            raw.ring(end).skip_abandoned_send_spsc();
            raw.ring(1 - end).unclaim_held_spsc();
        }
        e.closed.store(0, Ordering::SeqCst);
        e.token.store(0, Ordering::SeqCst);
        raw.wake_all();
        Connection {
            raw,
            end,
            transit: Cell::new(0),
            _t: PhantomData,
        }
    }

    /// Looks now whether the peer's process died (SIGKILL included); if so,
    /// marks it gone, so that `recv` drains what it sent and then returns
    /// [`RecvError::Disconnected`](crate::queue::RecvError::Disconnected) and `send` fails with
    /// [`SendError::Disconnected`](crate::queue::SendError::Disconnected). `true` if this call found it dead.
    ///
    /// Every waiting call (`send`, `recv`, `recv_timeout`, `poll`, with
    /// any timeout) does this by itself once this process's last look at
    /// this pipe is 50 ms old, whether that look was made in this call or
    /// an earlier one; this is for callers that want to know now.
    pub fn recover(&self) -> bool {
        self.raw.check_peer(self.end)
    }

    /// A builder for named pipes or other sizes:
    /// `Connection::<Rkyv<Job>>::builder()`.
    #[must_use]
    pub fn builder() -> PipeBuilder<T> {
        PipeBuilder::default()
    }

    /// The region beneath.
    pub fn segment(&self) -> &Segment {
        &self.raw.seg
    }

    /// The largest message in bytes.
    pub fn max_message(&self) -> usize {
        self.raw.geometry.2 as usize
    }

    fn send_with(
        &self,
        wait: Wait,
        write: impl FnOnce(&mut [u8]) -> std::result::Result<usize, AnySendError<()>>,
    ) -> std::result::Result<(), AnySendError<()>> {
        let ring = self.raw.ring(self.end);
        let w = &self.raw.control().dirs[self.end].waits.0;
        let unused = RingU64::new(0);
        let mut backoff = Backoff::new();
        let pos = loop {
            // A peer's truncation: this view of the ring is private zero
            // pages now (checked on every turn of the wait, which sleeps at
            // most one look interval).
            if self.raw.seg.check().is_err() {
                return Err(AnySendError::Truncated(()));
            }
            if self.raw.peer_gone(self.end) {
                return Err(AnySendError::Disconnected(()));
            }
            let seen = w[2].load(Ordering::SeqCst);
            if let Some(pos) = ring.try_claim_send(&unused) {
                break pos;
            }
            if wait != Wait::No && backoff.spin() {
                continue;
            }
            match self
                .raw
                .wait_or_look(self.end, &w[2], &w[3], seen, wait, || {
                    ring.can_send() || self.raw.peer_gone(self.end)
                }) {
                Ok(()) => {}
                Err(Waited::WouldBlock) => return Err(AnySendError::Full(())),
                Err(Waited::Timeout) => return Err(AnySendError::Timeout(())),
                Err(Waited::Corrupted(e)) => return Err(AnySendError::Corrupted(Box::new(e))),
            }
        };
        let max = self.max_message();
        // SAFETY: the claimed slot is ours (single producer) until commit;
        // its data area holds max_len bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(ring.data(pos), max) };
        let (len, result) = match write(buf) {
            Ok(n) => (n as u64, Ok(())),
            Err(e) => (crate::queue::ring::SKIP, Err(e)),
        };
        ring.commit(pos, len, &unused);
        wake_one(&w[0], &w[1]);
        if self.raw.seg.check().is_err() {
            // The message may have gone to the zero pages.
            return Err(AnySendError::Truncated(()));
        }
        result
    }

    fn recv_with<R>(
        &self,
        wait: Wait,
        read: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, AnyRecvError> {
        let dir = 1 - self.end;
        let ring = self.raw.ring(dir);
        let w = &self.raw.control().dirs[dir].waits.0;
        let unused = RingU64::new(0);
        let max = self.max_message() as u64;
        let mut backoff = Backoff::new();
        let mut read = Some(read);
        loop {
            if self.raw.seg.check().is_err() {
                return Err(AnyRecvError::Truncated);
            }
            let seen = w[0].load(Ordering::SeqCst);
            match ring.try_claim_recv(&unused) {
                Ok((pos, len)) if len > max => {
                    // A skip or a hostile length: never read past the slot.
                    ring.release(pos, &unused);
                    wake_one(&w[2], &w[3]);
                }
                Ok((pos, len)) => {
                    let read = read.take().expect("read once");
                    // SAFETY: claimed slot, len checked against the slot.
                    let r =
                        read(unsafe { std::slice::from_raw_parts(ring.data(pos), len as usize) });
                    ring.release(pos, &unused);
                    wake_one(&w[2], &w[3]);
                    if self.raw.seg.check().is_err() {
                        // What was read may have been the zero pages.
                        return Err(AnyRecvError::Truncated);
                    }
                    return Ok(r);
                }
                Err(_) if self.raw.peer_gone(self.end) => {
                    if ring.can_recv() {
                        continue;
                    }
                    return Err(AnyRecvError::Disconnected);
                }
                Err(_) => {}
            }
            if wait != Wait::No && backoff.spin() {
                continue;
            }
            match self
                .raw
                .wait_or_look(self.end, &w[0], &w[1], seen, wait, || {
                    ring.can_recv() || self.raw.peer_gone(self.end)
                }) {
                Ok(()) => {}
                Err(Waited::WouldBlock) => return Err(AnyRecvError::Empty),
                Err(Waited::Timeout) => return Err(AnyRecvError::Timeout),
                Err(Waited::Corrupted(e)) => return Err(AnyRecvError::Corrupted(Box::new(e))),
            }
        }
    }

    /// Whether a message is ready to receive, waiting up to `timeout`
    /// (Python's `poll`). Also `true` once the peer is gone (dropped, or
    /// dead: looked for as in every wait, so a loop of short polls sees a
    /// SIGKILLed peer too), so that `recv` returns at once.
    pub fn poll(&self, timeout: Duration) -> bool {
        let dir = 1 - self.end;
        let ring = self.raw.ring(dir);
        let w = &self.raw.control().dirs[dir].waits.0;
        let wait = Wait::after(timeout);
        // Ready also once the segment was cut: `recv` then says Truncated.
        let ready =
            || self.raw.seg.check().is_err() || ring.can_recv() || self.raw.peer_gone(self.end);
        loop {
            let seen = w[0].load(Ordering::SeqCst);
            if ready() {
                return true;
            }
            match self
                .raw
                .wait_or_look(self.end, &w[0], &w[1], seen, wait, ready)
            {
                Ok(()) => {}
                // `recv` then says what is wrong.
                Err(Waited::Corrupted(_)) => return true,
                Err(_) => return ready(),
            }
        }
    }

    /// Marks this end as travelling (once); the clean-up that closes it if
    /// nobody adopts it.
    pub(crate) fn start_transit(&self) -> Option<crate::region::handle::Abandon> {
        if self.transit.get() != 0 {
            return None;
        }
        let token = crate::region::handle::transit_token();
        self.raw.control().ends[self.end]
            .token
            .store(token, Ordering::SeqCst);
        self.transit.set(token);
        let (raw, end) = (self.raw.clone(), self.end);
        Some(Box::new(move || {
            let e = &raw.control().ends[end];
            if e.token
                .compare_exchange(token, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                raw.close(end);
            }
        }))
    }

    pub(crate) fn portable(&self) -> PipeHandle {
        PipeHandle {
            region: RegionHandle::of(&self.raw.seg),
            end: self.end as u32,
            token: self.transit.get(),
        }
    }

    pub(crate) fn adopt(h: &ArchivedPipeHandle) -> Result<Connection<T>> {
        let seg = match h.region.to_handle().reopen()? {
            Reopen::At(opts) => Segment::open(&opts, &spec::<T>(), None)?,
            Reopen::Fd(fd) => Segment::from_fd(fd, &RegionOptions::default(), &spec::<T>(), None)?,
        };
        let raw = RawPipe::check(seg)?;
        let end = (h.end.to_native() as usize).min(1);
        let token = h.token.to_native();
        let e = &raw.control().ends[end];
        let taken = || Error::Encoding {
            what: "pipe end",
            reason: "this end was already taken over by another process".into(),
        };
        if token == 0 || e.token.load(Ordering::SeqCst) != token {
            return Err(taken());
        }
        // While the token is set, the peer does not judge this end's
        // liveness (`check_peer`), so pid and start may change one by one;
        // the token is cleared last.
        e.start.store(proc::own_start_time(), Ordering::SeqCst);
        e.pid.store(proc::pid(), Ordering::SeqCst);
        if e.token
            .compare_exchange(token, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(taken());
        }
        Ok(Connection {
            raw,
            end,
            transit: Cell::new(0),
            _t: PhantomData,
        })
    }
}

impl<T: Item> Drop for Connection<T> {
    fn drop(&mut self) {
        if self.transit.get() == 0 {
            self.raw.close(self.end);
        }
    }
}

/// The token of an end being taken over (transit tokens are random and
/// never this value in practice; either way the peer leaves the end alone).
const TAKING_OVER: u64 = u64::MAX;

#[cfg(test)]
mod tests;

//! A duplex pipe in shared memory: two connected ends, each direction a
//! single-producer single-consumer ring (the queue's ring with plain stores
//! instead of compare-and-swap). The message kind is part of the type, as
//! for a queue: `Connection<T>` for a `Pod` `T`, `Connection<Rkyv<M>>`,
//! `Connection<Serde<M>>` (feature `serde`), `Connection<Bytes>`; the region
//! records it, and opening an end as another kind is
//! [`Error::TypeMismatch`].
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
//! and returns [`RecvError::Disconnected`], and `send` fails with
//! [`SendError::Disconnected`].
//!
//! [`PipeBuilder::open`] takes an end over. If its previous holder is dead
//! (or closed it), its half-done work is repaired first, as queue recovery
//! does: a message it had received but not finished is delivered again to
//! the new holder, and a slot it had claimed to send into but not committed
//! is skipped, so that the other end's writer is never blocked for good and
//! no committed message is lost.

use crate::error::{Error, Result};
#[cfg(feature = "serde")]
use crate::queue::Serde;
use crate::queue::atomic::AtomicU64 as RingU64;
use crate::queue::blocking::{sleep_until, wake_one};
use crate::queue::control::Padded;
use crate::queue::kinds::Encoded;
use crate::queue::looks::{Looks, Wait};
use crate::queue::ring::{Ring, SlotHeader};
use crate::queue::{Bytes, Item, Rkyv, Variable};
use crate::queue::{RecvError, SendError};
use crate::region::handle::{RegionHandle, Reopen, cause, note_outgoing, note_transit};
use crate::region::{Kind, RegionOptions, Segment, Spec, TypeInfo};
use crate::sync::wait::Backoff;
use crate::sys::proc;
use rkyv::rancor::Source as _;
use std::borrow::Borrow;
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One direction: cursors, wait words.
#[repr(C)]
#[derive(Debug)]
struct Direction {
    head: Padded<RingU64>,
    tail: Padded<RingU64>,
    waits: Padded<[AtomicU32; 4]>, // items, recv_waiters, space, send_waiters
}

/// One end: who holds it.
#[repr(C, align(64))]
#[derive(Debug)]
struct End {
    pid: AtomicU32,
    closed: AtomicU32,
    start: AtomicU64,
    /// Non-zero while the end travels to another process.
    token: AtomicU64,
}

/// The control block: two directions (0: end 0 → end 1, 1: end 1 → end 0),
/// two ends, the geometry.
#[repr(C, align(128))]
#[derive(Debug)]
struct PipeControl {
    dirs: [Direction; 2],
    ends: [End; 2],
    capacity: u64,
    stride: u64,
    max_len: u64,
}

const TAG: &str = "shmkit::pipe";

/// The pipe's spec; its type tag names the message kind, so that an end
/// opened as another message type is refused.
fn spec<T: Item>() -> Spec {
    Spec {
        kind: Kind::Pipe,
        flags: 0,
        ty: TypeInfo::tagged::<u8>(&format!("{TAG}<{}>", T::tag())),
        control_size: size_of::<PipeControl>() as u64,
        control_align: align_of::<PipeControl>() as u64,
        data_align: crate::region::MIN_ALIGN,
    }
}

/// Why a wait of a pipe end ended without news.
enum Waited {
    WouldBlock,
    Timeout,
    Corrupted(Error),
}

#[derive(Debug)]
pub(crate) struct RawPipe {
    seg: Segment,
    /// (capacity, stride, max_len) as validated at open; the shared copy is
    /// never read again (a peer may rewrite it).
    geometry: (u64, u64, u64),
    /// When this process last looked whether the peer is alive (private:
    /// see `queue::looks`).
    looks: Looks,
}

impl RawPipe {
    fn control(&self) -> &PipeControl {
        // SAFETY: the header check guarantees a published PipeControl of this
        // size and alignment; its fields are atomics and integers only read.
        unsafe { &*self.seg.control_ptr().cast::<PipeControl>() }
    }

    fn ring(&self, dir: usize) -> Ring<'_> {
        let d = &self.control().dirs[dir];
        let (capacity, stride, _) = self.geometry;
        // SAFETY: `check` verified 2 * capacity * stride == the data area, the
        // capacity a power of two >= 2, the stride a multiple of 64 covering
        // a SlotHeader and max_len (our private copies); direction `dir` owns
        // the `dir`th half.
        unsafe {
            Ring::new(
                &d.head.0,
                &d.tail.0,
                self.seg.data_ptr().add(dir * (capacity * stride) as usize),
                capacity,
                stride as usize,
                true,
                true,
            )
        }
    }

    fn check(seg: Segment) -> Result<Arc<RawPipe>> {
        let mut p = RawPipe {
            seg,
            geometry: (0, 0, 0),
            looks: Looks::new(),
        };
        let c = p.control();
        // SAFETY: plain u64 fields of the published control block, copied
        // once with volatile reads (a peer may write them concurrently).
        let (cap, stride, len) = unsafe {
            (
                std::ptr::read_volatile(&c.capacity),
                std::ptr::read_volatile(&c.stride),
                std::ptr::read_volatile(&c.max_len),
            )
        };
        if !cap.is_power_of_two()
            || cap < 2
            || stride % 64 != 0
            || stride < size_of::<SlotHeader>() as u64 + len
            || cap.checked_mul(stride).and_then(|b| b.checked_mul(2)) != Some(p.seg.element_count())
        {
            return Err(Error::Corrupted {
                name: p.seg.id(),
                what: format!(
                    "pipe geometry (capacity {cap}, stride {stride}, max message {len}) does \
                     not match its slot area"
                ),
            });
        }
        p.geometry = (cap, stride, len);
        Ok(Arc::new(p))
    }

    /// Impossible states of either direction as seen from `end` (which
    /// sends on `end` and receives on `1 - end`), repaired where the right
    /// stamp is certain, otherwise described, for `Corrupted`. Run at look
    /// time (every `LOOK_EVERY` of waiting), so a garbage stamp never wedges
    /// a pipe silently.
    ///
    /// Each direction has one sender and one receiver, each one thread at a
    /// time, which claim and finish one position at a time: every position
    /// before `head - 1` is committed, and every position before `tail - 1`
    /// is released. So the stamp of the receiver's next position `tail` must
    /// be `tail` (not written yet) or `tail + 1` (committed) and is certain
    /// unless `tail == head - 1` (the sender may be writing it); the stamp of
    /// the sender's next position `head` must be `head` (released) or
    /// `head - cap + 1` (the last lap's message, not released yet) and is
    /// certain unless `tail == head - cap + 1` (the receiver may be reading
    /// that message).
    fn impossible(&self, end: usize) -> Option<String> {
        let cap = self.geometry.0;
        for dir in [end, 1 - end] {
            let ring = self.ring(dir);
            let (head, tail) = ring.cursors();
            let used = head.wrapping_sub(tail);
            if used > cap {
                return Some(format!(
                    "pipe direction {dir}: {used} messages between its cursors (head {head}, \
                     tail {tail}), more than its {cap} slots"
                ));
            }
            // Checked from both ends: each end repairs what it can see.
            let checks = [
                // The receiver's next position.
                (
                    tail,
                    [tail, tail.wrapping_add(1)],
                    match used {
                        0 => Some(tail),
                        1 => None,
                        _ => Some(tail.wrapping_add(1)),
                    },
                ),
                // The sender's next position.
                (
                    head,
                    [head, head.wrapping_sub(cap).wrapping_add(1)],
                    match cap - used {
                        0 => Some(head.wrapping_sub(cap).wrapping_add(1)),
                        1 => None,
                        _ => Some(head),
                    },
                ),
            ];
            for (pos, valid, certain) in checks {
                let seq = &ring.slot(pos).seq;
                let now = seq.load(Ordering::Acquire);
                if valid.contains(&now) {
                    continue;
                }
                match certain {
                    Some(right) => {
                        let _ =
                            seq.compare_exchange(now, right, Ordering::AcqRel, Ordering::Relaxed);
                    }
                    None => {
                        return Some(format!(
                            "pipe direction {dir}: the slot of position {pos} has the impossible \
                             stamp {now}; the message there may be lost"
                        ));
                    }
                }
            }
        }
        None
    }

    fn peer_gone(&self, end: usize) -> bool {
        let e = &self.control().ends[1 - end];
        e.closed.load(Ordering::SeqCst) != 0
    }

    /// Marks the peer closed if its process died; whether this call did.
    /// An end in transit or being taken over (token set) is not judged.
    fn check_peer(&self, end: usize) -> bool {
        let e = &self.control().ends[1 - end];
        if e.token.load(Ordering::SeqCst) != 0 || e.closed.load(Ordering::SeqCst) != 0 {
            return false;
        }
        let (pid, start) = (e.pid.load(Ordering::SeqCst), e.start.load(Ordering::SeqCst));
        if pid == 0 || proc::is_alive(pid, start) {
            return false;
        }
        // A take-over sets the token before it changes pid and start: judge
        // only an end that stayed the same while /proc was read.
        if e.token.load(Ordering::SeqCst) != 0
            || e.pid.load(Ordering::SeqCst) != pid
            || e.start.load(Ordering::SeqCst) != start
        {
            return false;
        }
        e.closed.store(1, Ordering::SeqCst);
        self.wake_all();
        true
    }

    /// The failure path of every wait (the only place that reads the
    /// clock): looks whether the peer died if the last look is
    /// `LOOK_EVERY` old (then returns at once, for the caller to try
    /// again; a look also repairs or reports impossible ring states), else
    /// fails as `wait` says (would block, timed out) or sleeps on `word`
    /// until woken, `ready()`, the deadline or the next look's time.
    fn wait_or_look(
        &self,
        end: usize,
        word: &AtomicU32,
        waiters: &AtomicU32,
        seen: u32,
        wait: Wait,
        ready: impl Fn() -> bool,
    ) -> std::result::Result<(), Waited> {
        let now = Instant::now();
        if self.looks.take_due(now) {
            self.check_peer(end);
            if let Some(what) = self.impossible(end) {
                return Err(Waited::Corrupted(Error::Corrupted {
                    name: self.seg.id(),
                    what,
                }));
            }
            return Ok(());
        }
        let until = match wait {
            Wait::No => return Err(Waited::WouldBlock),
            Wait::Until(d) if d <= now => return Err(Waited::Timeout),
            Wait::Until(d) => d.min(self.looks.next_due()),
            Wait::Forever => self.looks.next_due(),
        };
        sleep_until(word, waiters, seen, until, ready);
        Ok(())
    }

    // ---- select (src/select.rs) ----

    /// The word a receiver at `end` sleeps on and its sleeper count.
    pub(crate) fn recv_words(&self, end: usize) -> (&AtomicU32, &AtomicU32) {
        let w = &self.control().dirs[1 - end].waits.0;
        (&w[0], &w[1])
    }

    /// Whether a receive at `end` would not wait (what `poll` reports).
    pub(crate) fn recv_ready(&self, end: usize) -> bool {
        self.seg.check().is_err() || self.ring(1 - end).can_recv() || self.peer_gone(end)
    }

    /// Looks whether the peer died if a look is due (as every failing wait
    /// does); whether the state is impossible (then `recv` reports it, so
    /// the end counts as ready); when the next look is due.
    pub(crate) fn look_if_due(&self, end: usize, now: Instant) -> (bool, Instant) {
        let mut impossible = false;
        if self.looks.take_due(now) {
            self.check_peer(end);
            impossible = self.impossible(end).is_some();
        }
        (impossible, self.looks.next_due())
    }

    fn wake_all(&self) {
        for d in &self.control().dirs {
            for w in [&d.waits.0[0], &d.waits.0[2]] {
                w.fetch_add(1, Ordering::SeqCst);
                crate::sys::futex::wake(w, i32::MAX as u32);
            }
        }
    }

    fn close(&self, end: usize) {
        self.control().ends[end].closed.store(1, Ordering::SeqCst);
        self.wake_all();
    }
}

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
    /// [`Error::NoSpace`] if the capacity and message size do not fit the address space; as for any
    /// region: [`Error::AlreadyExists`] if the name is taken, [`Error::InvalidName`] for a bad
    /// name, [`Error::NoSpace`] if /dev/shm (or the file's filesystem) is too small,
    /// [`Error::PermissionDenied`] or [`Error::Io`] if the OS refuses.
    pub fn create(self) -> Result<(Connection<T>, Connection<T>)> {
        let too_big = || Error::NoSpace {
            name: "<new pipe>".into(),
            requested: u64::MAX,
            available: 0,
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
    /// [`Error::NotFound`] if no segment has the name; [`Error::InvalidName`] for a bad name or
    /// none (open needs a name or a path); [`Error::KindMismatch`] if it is not a pipe,
    /// [`Error::TypeMismatch`] if its tag differs, [`Error::Corrupted`] if its geometry is
    /// impossible; and the other open errors of any region ([`Error::NotInitialized`],
    /// [`Error::ForeignOwner`], [`Error::Truncated`], ...).
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
    raw: Arc<RawPipe>,
    end: usize,
    transit: Cell<u64>,
    _t: PhantomData<fn() -> T>,
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
    /// [`RecvError::Disconnected`] and `send` fails with
    /// [`SendError::Disconnected`]. `true` if this call found it dead.
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
        write: impl FnOnce(&mut [u8]) -> std::result::Result<usize, SendError<()>>,
    ) -> std::result::Result<(), SendError<()>> {
        let ring = self.raw.ring(self.end);
        let w = &self.raw.control().dirs[self.end].waits.0;
        let unused = RingU64::new(0);
        let mut backoff = Backoff::new();
        let pos = loop {
            // A peer's truncation: this view of the ring is private zero
            // pages now (checked on every turn of the wait, which sleeps at
            // most one look interval).
            if self.raw.seg.check().is_err() {
                return Err(SendError::Truncated(()));
            }
            if self.raw.peer_gone(self.end) {
                return Err(SendError::Disconnected(()));
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
                Err(Waited::WouldBlock) => return Err(SendError::Full(())),
                Err(Waited::Timeout) => return Err(SendError::Timeout(())),
                Err(Waited::Corrupted(e)) => return Err(SendError::Corrupted(Box::new(e))),
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
            return Err(SendError::Truncated(()));
        }
        result
    }

    fn recv_with<R>(
        &self,
        wait: Wait,
        read: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, RecvError> {
        let dir = 1 - self.end;
        let ring = self.raw.ring(dir);
        let w = &self.raw.control().dirs[dir].waits.0;
        let unused = RingU64::new(0);
        let max = self.max_message() as u64;
        let mut backoff = Backoff::new();
        let mut read = Some(read);
        loop {
            if self.raw.seg.check().is_err() {
                return Err(RecvError::Truncated);
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
                        return Err(RecvError::Truncated);
                    }
                    return Ok(r);
                }
                Err(_) if self.raw.peer_gone(self.end) => {
                    if ring.can_recv() {
                        continue;
                    }
                    return Err(RecvError::Disconnected);
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
                Err(Waited::WouldBlock) => return Err(RecvError::Empty),
                Err(Waited::Timeout) => return Err(RecvError::Timeout),
                Err(Waited::Corrupted(e)) => return Err(RecvError::Corrupted(Box::new(e))),
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

impl<T: Variable> Connection<T> {
    /// Sends a copy of `bytes` (raw bytes on a pipe of any variable kind).
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] if `bytes` does not fit a slot; [`SendError::Disconnected`] once
    /// the peer is gone; [`SendError::Truncated`] if a peer shrank the segment;
    /// [`SendError::Corrupted`] if the ring state is impossible.
    pub fn send_bytes(&self, bytes: &[u8]) -> std::result::Result<(), SendError<()>> {
        let max = self.max_message();
        if bytes.len() > max {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        self.send_with(Wait::Forever, |buf| {
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
        self.recv_with(Wait::Forever, f)
    }
}

/// Puts the unsent message back into an error of the byte layer.
fn with_msg<M>(e: SendError<()>, msg: M) -> SendError<M> {
    match e {
        SendError::Full(()) => SendError::Full(msg),
        SendError::Timeout(()) => SendError::Timeout(msg),
        SendError::Disconnected(()) => SendError::Disconnected(msg),
        SendError::Truncated(()) => SendError::Truncated(msg),
        SendError::TooLarge { len, max } => SendError::TooLarge { len, max },
        SendError::Encoding(e) => SendError::Encoding(e),
        SendError::Corrupted(e) => SendError::Corrupted(e),
    }
}

impl<T: bytemuck::Pod> Connection<T> {
    fn send_pod(&self, value: T, wait: Wait) -> std::result::Result<(), SendError<T>> {
        self.send_with(wait, |buf| {
            buf[..size_of::<T>()].copy_from_slice(bytemuck::bytes_of(&value));
            Ok(size_of::<T>())
        })
        .map_err(|e| with_msg(e, value))
    }

    fn recv_pod(&self, wait: Wait) -> std::result::Result<T, RecvError> {
        self.recv_with(wait, |b| {
            bytemuck::try_pod_read_unaligned::<T>(b).map_err(|_| {
                RecvError::Invalid(Error::Encoding {
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
        self.send_pod(value, Wait::Forever)
    }

    /// [`send`](Self::send) if there is room now.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] (with `value`) if there is no room now; otherwise as
    /// [`send`](Self::send).
    pub fn try_send(&self, value: T) -> std::result::Result<(), SendError<T>> {
        self.send_pod(value, Wait::No)
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
        self.recv_pod(Wait::Forever)
    }

    /// [`recv`](Self::recv) if an item is ready now.
    ///
    /// # Errors
    ///
    /// [`RecvError::Empty`] if nothing is ready; otherwise as [`recv`](Self::recv).
    pub fn try_recv(&self) -> std::result::Result<T, RecvError> {
        self.recv_pod(Wait::No)
    }

    /// [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvError::Timeout`] if nothing arrived in time; otherwise as [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<T, RecvError> {
        self.recv_pod(Wait::after(timeout))
    }
}

/// Encodes `msg` straight into the next slot of `conn`'s direction.
fn send_encoded<T: Encoded, B: Borrow<T::Msg>>(
    conn: &Connection<T>,
    msg: B,
    wait: Wait,
) -> std::result::Result<(), SendError<B>> {
    let r = conn.send_with(wait, |buf| {
        let max = buf.len();
        T::write(msg.borrow(), buf).map_err(|e| match e {
            None => match T::encoded_len(msg.borrow()) {
                Ok(len) => SendError::TooLarge { len, max },
                Err(e) => SendError::Encoding(e),
            },
            Some(e) => SendError::Encoding(e),
        })
    });
    r.map_err(|e| with_msg(e, msg))
}

/// Receives the next message of `conn` and decodes it; `read` copies the
/// bytes before it validates them.
fn recv_encoded<T: Encoded>(
    conn: &Connection<T>,
    wait: Wait,
) -> std::result::Result<T::Msg, RecvError> {
    conn.recv_with(wait, T::read)?.map_err(RecvError::Invalid)
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
                send_encoded(self, msg, Wait::Forever)
            }

            /// [`send`](Self::send) if there is room now.
            ///
            /// # Errors
            ///
            /// [`SendError::Full`] (with `msg`) if there is no room now; otherwise as
            /// [`send`](Self::send).
            pub fn try_send<B: Borrow<M>>(&self, msg: B) -> std::result::Result<(), SendError<B>> {
                send_encoded(self, msg, Wait::No)
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
                recv_encoded(self, Wait::Forever)
            }

            /// [`recv`](Self::recv) if a message is ready now.
            ///
            /// # Errors
            ///
            /// [`RecvError::Empty`] if nothing is ready; otherwise as [`recv`](Self::recv).
            pub fn try_recv(&self) -> std::result::Result<M, RecvError> {
                recv_encoded(self, Wait::No)
            }

            /// [`recv`](Self::recv), waiting at most `timeout`.
            ///
            /// # Errors
            ///
            /// [`RecvError::Timeout`] if nothing arrived in time; otherwise as
            /// [`recv`](Self::recv).
            pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<M, RecvError> {
                recv_encoded(self, Wait::after(timeout))
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

// How an end travels: its portable form (region, end, adoption token).
impl<T: Item> rkyv::Archive for Connection<T> {
    type Archived = ArchivedPipeHandle;
    type Resolver = PipeHandleResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        self.portable().resolve(resolver, out)
    }
}

impl<T: Item, S: rkyv::rancor::Fallible + ?Sized> rkyv::Serialize<S> for Connection<T>
where
    PipeHandle: rkyv::Serialize<S>,
    S::Error: rkyv::rancor::Source,
{
    fn serialize(&self, s: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
        note_outgoing(&RegionHandle::of(self.segment())).map_err(S::Error::new)?;
        if let Some(abandon) = self.start_transit() {
            note_transit(abandon);
        }
        self.portable().serialize(s)
    }
}

impl<T: Item, D: rkyv::rancor::Fallible + ?Sized> rkyv::Deserialize<Connection<T>, D>
    for ArchivedPipeHandle
where
    D::Error: rkyv::rancor::Source,
{
    fn deserialize(&self, _: &mut D) -> std::result::Result<Connection<T>, D::Error> {
        Connection::adopt(self).map_err(cause)
    }
}

/// The token of an end being taken over (transit tokens are random and
/// never this value in practice; either way the peer leaves the end alone).
const TAKING_OVER: u64 = u64::MAX;

/// The portable form of a pipe end (what a `Connection` encodes to; an
/// implementation detail of its `rkyv::Archive` impl, hidden from the docs).
#[doc(hidden)]
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(attr(doc(hidden)))]
pub struct PipeHandle {
    /// The pipe region.
    pub region: RegionHandle,
    /// Which end.
    pub end: u32,
    /// The adoption token.
    pub token: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn layout() {
        assert_eq!(size_of::<Direction>(), 384);
        assert_eq!(offset_of!(PipeControl, ends), 768);
        assert_eq!(size_of::<End>(), 64);
        assert_eq!(offset_of!(PipeControl, capacity), 896);
        assert_eq!(offset_of!(End, token), 16);
    }

    #[test]
    fn a_pod_pipe_copies_items_and_refuses_other_sizes() {
        let (a, b) = pipe::<u64>().unwrap();
        assert_eq!(a.max_message(), 8);
        for v in [0, 1, u64::MAX] {
            a.send(v).unwrap();
            assert_eq!(b.recv().unwrap(), v);
        }
        assert_eq!(b.try_recv(), Err(RecvError::Empty));
        assert_eq!(
            b.recv_timeout(Duration::from_millis(1)),
            Err(RecvError::Timeout)
        );
        // Fill one direction (64 in flight): try_send gives the item back.
        let mut sent = 0u64;
        while a.try_send(sent).is_ok() {
            sent += 1;
        }
        assert_eq!(sent, 64);
        assert_eq!(a.try_send(7), Err(SendError::Full(7)));
        // A message of the wrong size (a peer's garbage) is Invalid, not read.
        let (c, d) = pipe::<Bytes>().unwrap();
        c.send_bytes(&[1, 2, 3]).unwrap();
        let raw: Connection<u64> = Connection {
            raw: d.raw.clone(),
            end: d.end,
            transit: Cell::new(1), // never closes the end on drop
            _t: PhantomData,
        };
        assert!(matches!(raw.recv(), Err(RecvError::Invalid(_))));
    }

    #[test]
    fn opening_a_pipe_as_another_message_type_is_refused() {
        let name = format!("shmkit-test-{}-pipe-type", std::process::id());
        let (_a, _b) = Connection::<Rkyv<String>>::builder()
            .name(&name)
            .create()
            .unwrap();
        let e = Connection::<Rkyv<u64>>::builder()
            .name(&name)
            .open(1)
            .unwrap_err();
        assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
        let e = Connection::<u64>::builder()
            .name(&name)
            .open(1)
            .unwrap_err();
        assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    }

    #[test]
    fn in_process_round_trip_and_disconnect() {
        let (a, b) = Connection::<Rkyv<(u32, String)>>::builder()
            .capacity(2)
            .max_message(64)
            .create()
            .unwrap();
        a.send_bytes(b"ping").unwrap();
        assert_eq!(b.recv_bytes().unwrap(), b"ping");
        b.send((1u32, String::from("pong"))).unwrap();
        assert!(a.poll(Duration::ZERO));
        assert_eq!(a.recv().unwrap(), (1, "pong".into()));
        assert!(!a.poll(Duration::from_millis(5)));
        assert!(matches!(
            a.recv_timeout(Duration::from_millis(5)),
            Err(RecvError::Timeout)
        ));
        assert_eq!(a.try_recv(), Err(RecvError::Empty));
        assert!(matches!(
            a.send_bytes(&[0; 65]),
            Err(SendError::TooLarge { len: 65, max: 64 })
        ));
        b.send_bytes(b"last").unwrap();
        drop(b);
        assert_eq!(a.recv_bytes().unwrap(), b"last");
        assert!(matches!(a.recv_bytes(), Err(RecvError::Disconnected)));
        assert!(matches!(
            a.send_bytes(b"x"),
            Err(SendError::Disconnected(()))
        ));
    }
}

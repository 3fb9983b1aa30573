//! The queue region and everything around the ring that needs the OS: the
//! participant table, blocking (bounded spin, then a shared futex sleep cut
//! at the next look for dead peers), disconnection, joinable counting, and
//! recovery from dead participants and from impossible bytes.

use super::atomic::AtomicU64 as RingU64;
use super::blocking::{wake_after_claim, wake_counted, wake_one};
use super::control::{FLAG_BYTES, FLAG_JOINABLE, QueueControl, ROLE_RECEIVER, ROLE_SENDER};
use super::geometry::{Geometry, Slots};
use super::looks::{Looks, Wait};
use super::ring::{Empty, MAX_RUN, Ring, SKIP, SlotHeader};
use crate::error::{Error, RegionError, Result};
use crate::region::{Kind, RegionOptions, Segment, Spec, TypeInfo};
use crate::sync::wait::Backoff;
use crate::sys::futex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How many times a receiver looks again at a disconnected queue that seems
/// to hold something before it concludes (see `claim_recv`).
const LAST_LOOKS: u32 = 64;

/// Why a blocking operation stopped without its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Non-blocking attempt found the ring full/empty.
    WouldBlock,
    Timeout,
    Disconnected,
}

/// The queue region.
#[derive(Debug)]
pub(crate) struct RawQueue {
    pub(super) seg: Segment,
    /// The geometry as validated at open, kept privately: a peer may rewrite
    /// the shared copy at any time, so it is never read again.
    pub(super) slots: Slots,
    /// When this process last looked for dead participants (private: see
    /// `looks`).
    pub(super) looks: Looks,
}

/// How long a `try_` receive waits for a send that has claimed the next
/// slot but not yet committed it (linearizability, as in crossbeam); a live
/// sender copies within microseconds, so only a slot held open with
/// `reserve`, a sender stopped mid-copy, or scribbled cursors wait this long.
const IN_FLIGHT_WAIT: Duration = Duration::from_millis(100);

fn spec(opts: &RegionOptions, tag: &str, flags: u64) -> Spec {
    Spec {
        kind: Kind::Queue,
        flags: flags as u32,
        ty: TypeInfo::tagged::<u8>(opts.tag.as_deref().unwrap_or(tag)),
        control_size: size_of::<QueueControl>() as u64,
        control_align: align_of::<QueueControl>() as u64,
        data_align: crate::region::MIN_ALIGN,
    }
}

impl RawQueue {
    pub(crate) fn create(opts: &RegionOptions, tag: &str, g: Geometry) -> Result<Arc<RawQueue>> {
        if g.capacity == 0 {
            return Err(Error::InvalidArgument {
                argument: "capacity",
                message: "0; give at least 1 (shmkit has no rendezvous queue)".into(),
            });
        }
        let limit = g.capacity;
        let capacity = g
            .capacity
            .max(2)
            .checked_next_power_of_two()
            .ok_or_else(|| Error::InvalidArgument {
                argument: "capacity",
                message: format!("{limit} is too large; give at most 2^63"),
            })?;
        let g = Geometry { capacity, ..g };
        let stride = g.stride();
        let bytes = capacity
            .checked_mul(stride)
            .ok_or(Error::Region(RegionError::NoSpace {
                name: "<new queue>".into(),
                requested: u64::MAX,
                available: 0,
            }))?;
        let seg = Segment::create(opts, &spec(opts, tag, g.flags), bytes, |control, data| {
            let c = control.cast::<QueueControl>();
            // SAFETY: the segment is unpublished and zero-filled; the control
            // block is sized and aligned for a QueueControl (spec), whose
            // fields are all valid when zero (the recovery lock is free)
            // except the geometry, written here.
            unsafe {
                let st = std::ptr::addr_of_mut!((*c).state.0);
                (*st).capacity = capacity;
                (*st).limit = limit;
                (*st).stride = stride;
                (*st).max_len = g.max_len;
                (*st).flags = g.flags;
            }
            for i in 0..capacity {
                // SAFETY: slot i lies within the data area of capacity*stride
                // bytes (64-aligned; the stride a multiple of 16); a zeroed SlotHeader is valid, we set seq.
                unsafe {
                    let slot = data.add((i * stride) as usize).cast::<SlotHeader>();
                    std::ptr::addr_of_mut!((*slot).seq).write(RingU64::new(i));
                }
            }
            Ok(())
        })?;
        Self::checked(seg, g.flags, Some(g.max_len))
    }

    /// Opens a queue and checks its geometry against the data area, so that
    /// no later index can leave the mapping whatever a peer wrote.
    pub(crate) fn open(
        opts: &RegionOptions,
        tag: &str,
        flags: u64,
        max_len: Option<u64>,
    ) -> Result<Arc<RawQueue>> {
        let seg = Segment::open(opts, &spec(opts, tag, flags), None)?;
        Self::checked(seg, flags, max_len)
    }

    pub(crate) fn from_fd(
        fd: std::os::fd::OwnedFd,
        opts: &RegionOptions,
        tag: &str,
        flags: u64,
        max_len: Option<u64>,
    ) -> Result<Arc<RawQueue>> {
        let seg = Segment::from_fd(fd, opts, &spec(opts, tag, flags), None)?;
        Self::checked(seg, flags, max_len)
    }

    pub(super) fn checked(seg: Segment, flags: u64, max_len: Option<u64>) -> Result<Arc<RawQueue>> {
        let mut q = RawQueue {
            seg,
            slots: Slots::default(),
            looks: Looks::new(),
        };
        let st = &q.control().state.0;
        // The geometry is plain u64s a peer may write concurrently: copied
        // once with volatile reads; every later use goes through the private
        // copy validated below.
        let read = |f: &u64| {
            // SAFETY: `f` is a valid, aligned u64 in the mapping.
            unsafe { std::ptr::read_volatile(f) }
        };
        let (cap, limit, stride, len, stored_flags) = (
            read(&st.capacity),
            read(&st.limit),
            read(&st.stride),
            read(&st.max_len),
            read(&st.flags),
        );
        let corrupt = |what: String| {
            Error::Region(RegionError::Corrupted {
                name: q.seg.id(),
                what,
            })
        };
        if !cap.is_power_of_two()
            || cap < 2
            || limit == 0
            || limit > cap
            || stride % 16 != 0
            || (size_of::<SlotHeader>() as u64)
                .checked_add(len)
                .is_none_or(|need| stride < need)
            || cap.checked_mul(stride) != Some(q.seg.element_count())
        {
            return Err(corrupt(format!(
                "queue geometry (capacity {limit} in {cap} slots, stride {stride}, max message \
                 {len}) does not match its {}-byte slot area",
                q.seg.element_count()
            )));
        }
        if stored_flags & FLAG_BYTES != flags & FLAG_BYTES {
            return Err(corrupt("message kind (bytes or typed) differs".into()));
        }
        if let Some(m) = max_len
            && m != len
        {
            return Err(Error::Region(RegionError::LengthMismatch {
                name: q.seg.id(),
                expected: m,
                found: len,
            }));
        }
        q.slots = Slots {
            capacity: cap,
            limit,
            stride,
            max_len: len,
            flags: stored_flags,
        };
        Ok(Arc::new(q))
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    #[inline]
    pub(crate) fn control(&self) -> &QueueControl {
        // SAFETY: the header check guarantees a published control block of
        // QueueControl's size and alignment; it is made of atomics, plain
        // integers only read, and an OwnerLock (one atomic word).
        unsafe { &*self.seg.control_ptr().cast::<QueueControl>() }
    }

    #[inline]
    pub(crate) fn ring(&self) -> Ring<'_> {
        let c = self.control();
        // SAFETY: `checked` verified that capacity (a power of two, >= 2)
        // times stride equals the data area, and that the stride is a
        // multiple of 16 covering a SlotHeader plus max_len; these are our
        // private copies, which no peer can change; the slots were
        // initialised before publication.
        unsafe {
            Ring::new(
                &c.head.0,
                &c.tail.0,
                self.seg.data_ptr(),
                self.slots.capacity,
                self.slots.stride as usize,
                false,
                false,
            )
            .with_limit(self.slots.limit)
        }
    }

    #[inline]
    pub(crate) fn max_len(&self) -> usize {
        self.slots.max_len as usize
    }

    /// Messages the queue holds at most (what its creator asked for).
    pub(crate) fn capacity(&self) -> usize {
        self.slots.limit as usize
    }

    #[inline]
    pub(super) fn joinable(&self) -> bool {
        self.slots.flags & FLAG_JOINABLE != 0
    }

    // ---- participants ----

    pub(crate) fn is_closed(&self) -> bool {
        self.control().state.0.closed.load(Ordering::SeqCst) != 0
    }

    pub(crate) fn close(&self) {
        self.control().state.0.closed.store(1, Ordering::SeqCst);
        self.wake_all();
    }

    pub(super) fn wake_all(&self) {
        let w = &self.control().waits.0;
        for word in [&w.items, &w.space, &w.done] {
            word.fetch_add(1, Ordering::SeqCst);
            futex::wake(word, i32::MAX as u32);
        }
    }

    // ---- sending ----

    pub(super) fn ever(&self, role: u32) -> bool {
        self.control().state.0.ever.load(Ordering::SeqCst) & (1 << role) != 0
    }

    /// Closed, or every peer of role `peer` that ever registered is gone (a
    /// queue that never had one is waited on, not disconnected).
    pub(super) fn disconnected(&self, peer: u32) -> bool {
        self.is_closed() || (self.count(peer).load(Ordering::SeqCst) == 0 && self.ever(peer))
    }

    // ---- select (src/select.rs) ----

    /// The word receivers sleep on and its sleeper count.
    pub(crate) fn recv_words(&self) -> (&AtomicU32, &AtomicU32) {
        let w = &self.control().waits.0;
        (&w.items, &w.recv_waiters)
    }

    /// The word senders sleep on and its sleeper count.
    pub(crate) fn space_words(&self) -> (&AtomicU32, &AtomicU32) {
        let w = &self.control().waits.0;
        (&w.space, &w.send_waiters)
    }

    /// Whether a send would not wait: room, no receiver left, or the
    /// segment was cut.
    #[cfg(feature = "async")]
    pub(crate) fn send_ready(&self) -> bool {
        self.ring().can_send() || self.send_disconnected() || self.seg.check().is_err()
    }

    /// Whether a receive would not wait: a message (or one to redeliver) is
    /// ready, every sender is gone, or the segment was cut.
    pub(crate) fn recv_ready(&self) -> bool {
        self.ring().can_recv()
            || self.recv_disconnected()
            || self.control().state.0.orphan_count.load(Ordering::SeqCst) > 0
            || self.seg.check().is_err()
    }

    /// The look a failed `try_` makes: if one is due by the coarse clock
    /// (no precise clock read), looks for dead participants.
    #[cfg(feature = "async")]
    pub(crate) fn look_if_due_coarse(&self) {
        if self.looks.take_due_for(Wait::No).0 {
            self.recover();
        }
    }

    /// Looks for dead participants if a look is due (as every failing wait
    /// does); when the next one is due.
    pub(crate) fn look_if_due(&self, now: Instant) -> Instant {
        if self.looks.take_due(now) {
            self.recover();
        }
        self.looks.next_due()
    }

    pub(super) fn send_disconnected(&self) -> bool {
        self.disconnected(ROLE_RECEIVER)
    }

    /// Claims a slot to send into, blocking as `wait` allows; `hold`: the
    /// slot is marked [`HOLD`](super::ring::HOLD) (the sender may take long before it commits,
    /// and must commit with [`commit`](Self::commit)); otherwise the
    /// sender writes it at once and commits with
    /// [`commit_claimed`](Self::commit_claimed).
    pub(crate) fn claim_send(
        &self,
        entry: usize,
        wait: Wait,
        hold: bool,
    ) -> std::result::Result<u64, Stop> {
        let ring = self.ring();
        let intent = self.intent(entry);
        let w = &self.control().waits.0;
        let mut backoff = Backoff::new();
        loop {
            if self.send_disconnected() {
                return Err(Stop::Disconnected);
            }
            let seen = w.space.load(Ordering::SeqCst);
            if let Some(pos) = ring.try_claim_send(intent) {
                if hold {
                    ring.hold(pos);
                }
                return Ok(pos);
            }
            if wait != Wait::No && backoff.spin() {
                continue;
            }
            self.wait_or_look(&w.space, &w.send_waiters, seen, wait, None, || {
                ring.can_send() || self.send_disconnected()
            })?;
        }
    }

    /// Publishes a claimed slot with `len` bytes (or [`SKIP`]).
    pub(crate) fn commit(&self, entry: usize, pos: u64, len: u64) {
        self.commit_quiet(entry, pos, len);
        let w = &self.control().waits.0;
        // Receivers may sleep behind a held slot while unheld senders
        // commit after it without waking them (they did not see them
        // counted): wake one per position claimed from here on, so each
        // message behind this one has its receiver (at most a run's worth).
        // The head is read after the fence: an unheld sender whose count
        // read missed a sleeper claimed before that sleeper counted itself,
        // so before our fence.
        let head = &self.control().head.0;
        wake_counted(&w.items, &w.recv_waiters, || {
            head.load(Ordering::SeqCst)
                .wrapping_sub(pos)
                .clamp(1, MAX_RUN) as u32
        });
    }

    /// [`commit`](Self::commit) of a slot claimed without `hold`: the
    /// wake-up needs no fence (`blocking::wake_after_claim`).
    pub(crate) fn commit_claimed(&self, entry: usize, pos: u64, len: u64) {
        self.commit_quiet(entry, pos, len);
        let w = &self.control().waits.0;
        wake_after_claim(&w.items, &w.recv_waiters, 1);
    }

    /// The commit of a single claim at `pos`, without its wake-up (which
    /// [`commit`](Self::commit) and [`commit_claimed`](Self::commit_claimed)
    /// pay; a batch commits through its own ring view, `batch::Batch`).
    fn commit_quiet(&self, entry: usize, pos: u64, len: u64) {
        self.count_unfinished(len);
        self.ring().commit(pos, len, self.intent(entry));
    }

    /// A joinable queue counts a message (not a skip) as unfinished before
    /// its commit, so no receiver's `task_done` can come first.
    #[inline]
    pub(super) fn count_unfinished(&self, len: u64) {
        if len != SKIP && self.joinable() {
            self.control()
                .state
                .0
                .unfinished
                .fetch_add(1, Ordering::SeqCst);
        }
    }

    // ---- receiving ----

    pub(super) fn recv_disconnected(&self) -> bool {
        self.disconnected(ROLE_SENDER)
    }

    /// Claims the next message (skips are released here, never returned):
    /// its position and length.
    pub(crate) fn claim_recv(
        &self,
        entry: usize,
        wait: Wait,
    ) -> std::result::Result<(u64, usize), Stop> {
        let ring = self.ring();
        let intent = self.intent(entry);
        let c = self.control();
        let w = &c.waits.0;
        let max = self.max_len() as u64;
        let mut backoff = Backoff::new();
        // Rounds in a row that found the queue disconnected yet something
        // apparently left to take. Legitimately a round or two (a last
        // commit, an orphan another receiver took first); garbage written
        // by a peer (a slot that looks ready but cannot be claimed) would
        // make it endless.
        let mut last_looks = 0;
        // When a `try_` receive started waiting for an in-flight send.
        let mut in_flight_until = None;
        // The position whose sender claimed it and has not committed it,
        // and how many times in a row we yielded to it.
        let mut behind = (None, 0);
        loop {
            if c.state.0.orphan_count.load(Ordering::SeqCst) > 0
                && let Some(claim) = self.take_orphan(entry)
            {
                return Ok(claim);
            }
            let seen = w.items.load(Ordering::SeqCst);
            match ring.try_claim_recv(intent) {
                Ok((pos, len)) if len == SKIP => {
                    self.release(entry, pos);
                    continue;
                }
                Ok((pos, len)) if len > max => {
                    self.drop_overlong(pos);
                    self.release(entry, pos);
                    continue;
                }
                Ok((pos, len)) => return Ok((pos, len as usize)),
                Err(Empty) => {
                    if self.recv_disconnected() {
                        last_looks += 1;
                        if last_looks > LAST_LOOKS {
                            return Err(Stop::Disconnected);
                        }
                        // Before concluding: a dead receiver may hold a
                        // message nobody has handed on yet.
                        self.recover();
                        if c.state.0.orphan_count.load(Ordering::SeqCst) > 0 {
                            continue;
                        }
                        // A message committed before the last sender left is
                        // visible now (SeqCst load after its Release commit).
                        if ring.can_recv() {
                            continue;
                        }
                        return Err(Stop::Disconnected);
                    }
                }
            }
            // Linearizable `try_recv`, as crossbeam's: a sender has claimed
            // the next slot but not committed it yet (its `send` has not
            // returned, but a later one may have), so the queue is not empty:
            // wait for that commit instead of reporting `Empty`. The wait is
            // bounded by dead-peer detection (a dead sender's claim becomes a
            // skip at the next look) and by the sender's own copy; a slot a
            // live sender holds open with `reserve` is waited for too, for at
            // most IN_FLIGHT_WAIT (a `try_` call must not block on a peer
            // that keeps a slot open, nor on cursors a peer scribbled).
            let this_wait = if wait == Wait::No && ring.send_in_flight() {
                Wait::Until(*in_flight_until.get_or_insert_with(|| Instant::now() + IN_FLIGHT_WAIT))
            } else {
                wait
            };
            if this_wait == Wait::No {
                // A failed `try_`: the look for dead peers if one is due
                // (then the attempt again), else the failure. None of the
                // waiting below, whose state stays out of this path (a
                // failed try_recv took 303 instructions with it inline
                // against 263 before the naps; callgrind).
                self.wait_or_look(&w.items, &w.recv_waiters, seen, Wait::No, None, || false)?;
                continue;
            }
            if backoff.spin() {
                continue;
            }
            match self.wait_for_items(&mut behind, seen, this_wait) {
                Err(Stop::Timeout) if wait == Wait::No => return Err(Stop::WouldBlock),
                other => other?,
            }
        }
    }

    /// A claimed message whose length a hostile or broken peer wrote beyond
    /// the slot: never read, counted as skipped, and its length reset (a
    /// garbage HOLD must not make the next lap's unheld claim look held).
    /// The caller releases the slot.
    pub(super) fn drop_overlong(&self, pos: u64) {
        self.ring().slot(pos).len.store(0, Ordering::Relaxed);
        let st = &self.control().state.0;
        st.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether messages a dead receiver held wait to be delivered again.
    pub(super) fn orphans_waiting(&self) -> bool {
        self.control().state.0.orphan_count.load(Ordering::SeqCst) > 0
    }

    /// Frees a received slot for the next lap's sender.
    pub(crate) fn release(&self, entry: usize, pos: u64) {
        self.ring().release(pos, self.intent(entry));
        let w = &self.control().waits.0;
        wake_one(&w.space, &w.send_waiters);
    }

    #[inline]
    pub(crate) fn data(&self, pos: u64) -> *mut u8 {
        self.ring().data(pos)
    }

    // ---- recovery ----
}

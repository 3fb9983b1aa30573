//! The queue region and everything around the ring that needs the OS: the
//! participant table, blocking (bounded spin, then a shared futex sleep cut
//! at the next look for dead peers), disconnection, joinable counting, and
//! recovery from dead participants and from impossible bytes.

use super::atomic::AtomicU64 as RingU64;
use super::control::{
    FLAG_BYTES, FLAG_JOINABLE, MAX_PARTICIPANTS, Participant, QueueControl, ROLE_RECEIVER,
    ROLE_SENDER,
};
use super::looks::{Looks, Wait};
use super::ring::{Empty, Ring, SKIP, SlotHeader};
use crate::error::{Error, Result};
use crate::region::{Kind, RegionOptions, Segment, Spec, TypeInfo};
use crate::sync::owner_lock::OwnerLock;
use crate::sync::wait::Backoff;
use crate::sys::{futex, proc};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering, fence};
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
    seg: Segment,
    /// The geometry as validated at open, kept privately: a peer may rewrite
    /// the shared copy at any time, so it is never read again.
    slots: Slots,
    /// When this process last looked for dead participants (private: see
    /// `looks`).
    looks: Looks,
}

/// The validated geometry of an open queue.
#[derive(Clone, Copy, Debug, Default)]
struct Slots {
    capacity: u64,
    limit: u64,
    stride: u64,
    max_len: u64,
    flags: u64,
}

/// Geometry of a new queue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub capacity: u64,
    pub max_len: u64,
    pub flags: u64,
}

impl Geometry {
    fn stride(&self) -> u64 {
        (size_of::<SlotHeader>() as u64 + self.max_len).next_multiple_of(64)
    }
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
        let bytes = capacity.checked_mul(stride).ok_or(Error::NoSpace {
            name: "<new queue>".into(),
            requested: u64::MAX,
            available: 0,
        })?;
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
                // bytes, 64-aligned; a zeroed SlotHeader is valid, we set seq.
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

    fn checked(seg: Segment, flags: u64, max_len: Option<u64>) -> Result<Arc<RawQueue>> {
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
        let corrupt = |what: String| Error::Corrupted {
            name: q.seg.id(),
            what,
        };
        if !cap.is_power_of_two()
            || cap < 2
            || limit == 0
            || limit > cap
            || stride % 64 != 0
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
            return Err(Error::LengthMismatch {
                name: q.seg.id(),
                expected: m,
                found: len,
            });
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

    pub(crate) fn control(&self) -> &QueueControl {
        // SAFETY: the header check guarantees a published control block of
        // QueueControl's size and alignment; it is made of atomics, plain
        // integers only read, and an OwnerLock (one atomic word).
        unsafe { &*self.seg.control_ptr().cast::<QueueControl>() }
    }

    pub(crate) fn ring(&self) -> Ring<'_> {
        let c = self.control();
        // SAFETY: `checked` verified that capacity (a power of two, >= 2)
        // times stride equals the data area, and that the stride is a
        // multiple of 64 covering a SlotHeader plus max_len; these are our
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

    pub(crate) fn max_len(&self) -> usize {
        self.slots.max_len as usize
    }

    /// Messages the queue holds at most (what its creator asked for).
    pub(crate) fn capacity(&self) -> usize {
        self.slots.limit as usize
    }

    fn joinable(&self) -> bool {
        self.slots.flags & FLAG_JOINABLE != 0
    }

    // ---- participants ----

    /// Registers a sender or receiver of this process; its entry index.
    pub(crate) fn register(&self, role: u32) -> Result<usize> {
        let me = proc::pid();
        let start = proc::own_start_time();
        for attempt in 0..2 {
            for (i, p) in self.control().participants.iter().enumerate() {
                if p.pid
                    .compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    p.start.store(start, Ordering::SeqCst);
                    p.intent.store(0, Ordering::SeqCst);
                    p.token.store(0, Ordering::SeqCst);
                    // Counted before the role is visible: a recoverer only
                    // uncounts entries with a role (a death between the two
                    // stores leaves one count too many; two instructions).
                    self.count(role).fetch_add(1, Ordering::SeqCst);
                    self.control()
                        .state
                        .0
                        .ever
                        .fetch_or(1 << role, Ordering::SeqCst);
                    p.role.store(role, Ordering::SeqCst);
                    return Ok(i);
                }
            }
            if attempt == 0 {
                self.recover();
            }
        }
        Err(Error::TooManyHandles {
            name: self.seg.id(),
            max: MAX_PARTICIPANTS,
        })
    }

    fn count(&self, role: u32) -> &AtomicU32 {
        let st = &self.control().state.0;
        if role == ROLE_SENDER {
            &st.senders
        } else {
            &st.receivers
        }
    }

    pub(crate) fn unregister(&self, entry: usize) {
        let p = &self.control().participants[entry];
        let role = p.role.load(Ordering::SeqCst);
        // Uncount first, while the entry still shows its role: a recount
        // that runs in between counts the entry and never goes below us.
        if role != 0 {
            self.count(role).fetch_sub(1, Ordering::SeqCst);
        }
        p.role.store(0, Ordering::SeqCst);
        p.intent.store(0, Ordering::SeqCst);
        p.token.store(0, Ordering::SeqCst);
        p.pid.store(0, Ordering::SeqCst);
        self.wake_all();
    }

    /// Marks the entry as travelling to another process; the token that
    /// process presents to [`adopt`](Self::adopt) it.
    pub(crate) fn begin_transit(&self, entry: usize) -> u64 {
        let token = crate::region::handle::transit_token();
        self.control().participants[entry]
            .token
            .store(token, Ordering::SeqCst);
        token
    }

    /// Takes over a registration that travelled here: registers a new
    /// entry for this process first, then retires the travelling one, so
    /// the count of senders (receivers) never drops to zero in between.
    /// The retiring entry is marked with our pid, so that if we die midway
    /// a recoverer finishes the job.
    pub(crate) fn adopt(&self, entry: u32, token: u64, role: u32) -> Result<usize> {
        let mine = self.register(role)?;
        if let Some(p) = self.control().participants.get(entry as usize)
            && token != 0
            && token & RELEASING == 0
            && p.role.load(Ordering::SeqCst) == role
            && p.token
                .compare_exchange(
                    token,
                    RELEASING | proc::pid() as u64,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
        {
            self.unregister(entry as usize);
        }
        Ok(mine)
    }

    /// Frees an entry whose journey ended without adoption (the receiving
    /// process died first).
    pub(crate) fn abandon(&self, entry: usize, token: u64) {
        let p = &self.control().participants[entry];
        if token != 0
            && p.token
                .compare_exchange(token, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.unregister(entry);
        }
    }

    pub(crate) fn intent(&self, entry: usize) -> &RingU64 {
        &self.control().participants[entry].intent
    }

    pub(crate) fn senders(&self) -> u32 {
        self.control().state.0.senders.load(Ordering::SeqCst)
    }

    pub(crate) fn receivers(&self) -> u32 {
        self.control().state.0.receivers.load(Ordering::SeqCst)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.control().state.0.closed.load(Ordering::SeqCst) != 0
    }

    pub(crate) fn close(&self) {
        self.control().state.0.closed.store(1, Ordering::SeqCst);
        self.wake_all();
    }

    fn wake_all(&self) {
        let w = &self.control().waits.0;
        for word in [&w.items, &w.space, &w.done] {
            word.fetch_add(1, Ordering::SeqCst);
            futex::wake(word, i32::MAX as u32);
        }
    }

    // ---- sending ----

    fn ever(&self, role: u32) -> bool {
        self.control().state.0.ever.load(Ordering::SeqCst) & (1 << role) != 0
    }

    /// Closed, or every peer of role `peer` that ever registered is gone (a
    /// queue that never had one is waited on, not disconnected).
    fn disconnected(&self, peer: u32) -> bool {
        self.is_closed() || (self.count(peer).load(Ordering::SeqCst) == 0 && self.ever(peer))
    }

    // ---- select (src/select.rs) ----

    /// The word receivers sleep on and its sleeper count.
    pub(crate) fn recv_words(&self) -> (&AtomicU32, &AtomicU32) {
        let w = &self.control().waits.0;
        (&w.items, &w.recv_waiters)
    }

    /// Whether a receive would not wait: a message (or one to redeliver) is
    /// ready, every sender is gone, or the segment was cut.
    pub(crate) fn recv_ready(&self) -> bool {
        self.ring().can_recv()
            || self.recv_disconnected()
            || self.control().state.0.orphan_count.load(Ordering::SeqCst) > 0
            || self.seg.check().is_err()
    }

    /// Looks for dead participants if a look is due (as every failing wait
    /// does); when the next one is due.
    pub(crate) fn look_if_due(&self, now: Instant) -> Instant {
        if self.looks.take_due(now) {
            self.recover();
        }
        self.looks.next_due()
    }

    fn send_disconnected(&self) -> bool {
        self.disconnected(ROLE_RECEIVER)
    }

    /// Claims a slot to send into, blocking as `wait` allows.
    pub(crate) fn claim_send(&self, entry: usize, wait: Wait) -> std::result::Result<u64, Stop> {
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
                return Ok(pos);
            }
            if wait != Wait::No && backoff.spin() {
                continue;
            }
            self.wait_or_look(&w.space, &w.send_waiters, seen, wait, || {
                ring.can_send() || self.send_disconnected()
            })?;
        }
    }

    /// Publishes a claimed slot with `len` bytes (or [`SKIP`]).
    pub(crate) fn commit(&self, entry: usize, pos: u64, len: u64) {
        if len != SKIP && self.joinable() {
            self.control()
                .state
                .0
                .unfinished
                .fetch_add(1, Ordering::SeqCst);
        }
        self.ring().commit(pos, len, self.intent(entry));
        let w = &self.control().waits.0;
        wake_one(&w.items, &w.recv_waiters);
    }

    // ---- receiving ----

    fn recv_disconnected(&self) -> bool {
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
                    // A hostile or broken peer wrote a length beyond the slot:
                    // never read past it; drop the message, count it.
                    self.release(entry, pos);
                    c.state.0.skipped.fetch_add(1, Ordering::Relaxed);
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
            if this_wait != Wait::No && backoff.spin() {
                continue;
            }
            let waited = self.wait_or_look(&w.items, &w.recv_waiters, seen, this_wait, || {
                ring.can_recv()
                    || self.recv_disconnected()
                    || c.state.0.orphan_count.load(Ordering::SeqCst) > 0
            });
            match waited {
                Err(Stop::Timeout) if wait == Wait::No => return Err(Stop::WouldBlock),
                other => other?,
            }
        }
    }

    /// Frees a received slot for the next lap's sender.
    pub(crate) fn release(&self, entry: usize, pos: u64) {
        self.ring().release(pos, self.intent(entry));
        let w = &self.control().waits.0;
        wake_one(&w.space, &w.send_waiters);
    }

    pub(crate) fn data(&self, pos: u64) -> *mut u8 {
        self.ring().data(pos)
    }

    // ---- joinable ----

    pub(crate) fn task_done(&self) -> Result<()> {
        let st = &self.control().state.0;
        let prev = st
            .unfinished
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match prev {
            Ok(1) => {
                let w = &self.control().waits.0;
                w.done.fetch_add(1, Ordering::SeqCst);
                futex::wake(&w.done, i32::MAX as u32);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(_) => Err(Error::InvalidArgument {
                argument: "task_done",
                message: format!(
                    "called more times than messages were sent on queue {}: call it once per \
                     received message",
                    self.seg.id()
                ),
            }),
        }
    }

    pub(crate) fn join(&self, wait: Wait) -> bool {
        let st = &self.control().state.0;
        let w = &self.control().waits.0;
        loop {
            let seen = w.done.load(Ordering::SeqCst);
            if st.unfinished.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if self
                .wait_or_look(&w.done, &w.join_waiters, seen, wait, || {
                    st.unfinished.load(Ordering::SeqCst) == 0
                })
                .is_err()
            {
                return false;
            }
        }
    }

    // ---- waiting ----

    /// The failure path of every operation (the only place that reads the
    /// clock): looks for dead participants if the last look (by any handle
    /// of this process on this queue, in any call) is [`LOOK_EVERY`] old,
    /// then returns at once so that the caller tries again before it
    /// reports anything; else fails as `wait` says, or sleeps on `word`
    /// until woken, `ready()`, the deadline or the next look's time,
    /// whichever comes first.
    ///
    /// [`LOOK_EVERY`]: super::looks::LOOK_EVERY
    fn wait_or_look(
        &self,
        word: &AtomicU32,
        waiters: &AtomicU32,
        seen: u32,
        wait: Wait,
        ready: impl Fn() -> bool,
    ) -> std::result::Result<(), Stop> {
        let now = Instant::now();
        if self.looks.take_due(now) {
            self.recover();
            return Ok(());
        }
        let until = match wait {
            Wait::No => return Err(Stop::WouldBlock),
            Wait::Until(d) if d <= now => return Err(Stop::Timeout),
            Wait::Until(d) => d.min(self.looks.next_due()),
            Wait::Forever => self.looks.next_due(),
        };
        sleep_until(word, waiters, seen, until, ready);
        Ok(())
    }

    // ---- recovery ----

    /// Looks for dead participants and repairs what they held: an
    /// uncommitted send claim becomes a skip, a received-but-unreleased
    /// message is queued for redelivery, and the entry is freed. Before
    /// that, repairs impossible cursors and slot stamps (`repair_garbage`).
    /// Returns whether anything was done.
    pub(crate) fn recover(&self) -> bool {
        let c = self.control();
        // /proc is read before the lock is taken (each entry is judged again
        // under it), so that receivers taking orphans wait less.
        let dead: Vec<usize> = c
            .participants
            .iter()
            .enumerate()
            .filter(|(_, p)| is_dead(p))
            .map(|(i, _)| i)
            .collect();
        let _guard = RecoveryGuard::lock(&c.recovery);
        // Garbage first: a dead sender's claim whose stamp a peer overwrote
        // is set back to "uncommitted" here, then skipped below.
        let mut changed = self.repair_garbage();
        let ring = self.ring();
        for i in dead {
            let p = &c.participants[i];
            if !is_dead(p) {
                continue; // freed (and maybe reused) meanwhile
            }
            let role = p.role.load(Ordering::SeqCst);
            let intent = p.intent.load(Ordering::SeqCst);
            if intent != 0 {
                let pos = intent - 1;
                // First the cursor (is_uncommitted/is_held load it with
                // SeqCst): having seen the CAS that claimed `pos`, we see the
                // winner's intent, stored before it.
                let stuck = (role == ROLE_SENDER && ring.is_uncommitted(pos))
                    || (role == ROLE_RECEIVER && ring.is_held(pos));
                // Another participant with the same intent that is alive may
                // be the real holder: leave this entry for a later round.
                if stuck && self.live_holder(role, intent, i) {
                    continue;
                }
                if stuck && role == ROLE_SENDER && ring.skip_abandoned_send(pos) {
                    c.state.0.skipped.fetch_add(1, Ordering::Relaxed);
                } else if stuck && role == ROLE_RECEIVER && !self.add_orphan(pos) {
                    continue; // the orphan list is full: keep the entry
                }
            }
            // Freed without uncounting: the recount below sets the counts
            // from the table (the dead process may or may not have uncounted
            // itself before it died).
            p.intent.store(0, Ordering::SeqCst);
            p.role.store(0, Ordering::SeqCst);
            p.token.store(0, Ordering::SeqCst);
            p.pid.store(0, Ordering::SeqCst);
            c.state.0.reaped.fetch_add(1, Ordering::Relaxed);
            changed = true;
        }
        drop(_guard);
        changed |= self.recount();
        if changed {
            self.wake_all();
        }
        changed
    }

    /// Repairs what no legitimate operation can produce and what would
    /// otherwise wedge the queue for good (each sender sees "full", each
    /// receiver "empty", forever): cursors more than a lap apart or the head
    /// behind the tail, and slot stamps that fit neither the cursors nor a
    /// claim some participant shows ([`Ring::repaired_stamp`]). Runs under
    /// the recovery lock, at every look. Only the two slots at the cursors
    /// are read each time (where a wedge shows); when one of them was wrong,
    /// or a cursor was, every slot is checked. Every store is a
    /// compare-and-swap against what was judged, made only if the cursors
    /// did not move meanwhile, so a racing legitimate store wins.
    fn repair_garbage(&self) -> bool {
        let c = self.control();
        let ring = self.ring();
        let cap = ring.capacity();
        let st = &c.state.0;
        let mut repaired = false;
        for _ in 0..2 {
            // The tail read twice around the head: then `head - tail` is at
            // most a lap, unless the bytes are garbage. A moving tail means
            // receivers make progress: nothing is wedged, look next time.
            let t = c.tail.0.load(Ordering::SeqCst);
            let h = c.head.0.load(Ordering::SeqCst);
            if c.tail.0.load(Ordering::SeqCst) != t {
                return repaired;
            }
            // At most `limit` messages are ever claimed and not taken (a
            // sender checks before it claims): more is garbage, which would
            // keep senders out for good.
            if h.wrapping_sub(t) > ring.limit() {
                // Keep the tail; the head goes to the end of the committed
                // run that follows it (the messages a garbage head hid).
                let mut end = t;
                while end.wrapping_sub(t) < ring.limit()
                    && ring.slot(end).seq.load(Ordering::SeqCst) == end.wrapping_add(1)
                {
                    end = end.wrapping_add(1);
                }
                if c.head
                    .0
                    .compare_exchange(h, end, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    return repaired;
                }
                st.repaired.fetch_add(1, Ordering::Relaxed);
                repaired = true;
                continue; // now every slot, against the new cursors
            }
            let mut at_cursors = self.repair_slot(t, h, t);
            if h.wrapping_sub(t) < cap {
                at_cursors |= self.repair_slot(t, h, h);
            }
            if at_cursors || repaired {
                for k in 0..cap {
                    self.repair_slot(t, h, t.wrapping_add(k));
                }
            }
            return repaired || at_cursors;
        }
        repaired
    }

    /// Repairs the stamp of the slot serving `pos` (in `[t, t + capacity)`
    /// for the cursors `t`, `h`) if it is impossible; whether it did.
    fn repair_slot(&self, t: u64, h: u64, pos: u64) -> bool {
        let c = self.control();
        let ring = self.ring();
        let slot = ring.slot(pos);
        let seq = slot.seq.load(Ordering::SeqCst);
        // An intent (an orphan) of 0 means none: never a holder of `pos`
        // (in the first lap, `pos - capacity + 1` wraps to 0).
        let shows = |role: u32, intent: u64| {
            intent != 0
                && c.participants.iter().any(|p| {
                    p.pid.load(Ordering::SeqCst) != 0
                    && p.role.load(Ordering::SeqCst) == role
                    // SYNC(intent-clear): pairs with the Release intent
                    // stores of the ring: an intent that moved on means
                    // the commit (release) before it is visible to our CAS.
                    && p.intent.load(Ordering::SeqCst) == intent
                })
        };
        let prev = pos.wrapping_sub(ring.capacity());
        let Some(stamp) = ring.repaired_stamp(
            pos,
            h,
            seq,
            || shows(ROLE_SENDER, pos.wrapping_add(1)),
            || {
                let held = prev.wrapping_add(1);
                held != 0
                    && (shows(ROLE_RECEIVER, held)
                        || c.orphans.iter().any(|o| o.load(Ordering::SeqCst) == held))
            },
        ) else {
            return false;
        };
        if c.tail.0.load(Ordering::SeqCst) != t || c.head.0.load(Ordering::SeqCst) != h {
            return false;
        }
        if slot
            .seq
            .compare_exchange(seq, stamp, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        c.state.0.repaired.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Repairs the sender/receiver counts from the table, downwards only:
    /// dead entries are freed without uncounting, and a process killed
    /// between the count and the role store of a registration leaves one
    /// count too many. The count is set to the number of entries with that
    /// role, but only when no entry is half-registered and the count did not
    /// move meanwhile (CAS), so a concurrent registration or unregistration
    /// (which uncounts before it clears its role) is never undercounted.
    fn recount(&self) -> bool {
        let c = self.control();
        let mut repaired = false;
        for role in [ROLE_SENDER, ROLE_RECEIVER] {
            let count = self.count(role);
            let before = count.load(Ordering::SeqCst);
            let mut actual = 0;
            for p in &c.participants {
                let pid = p.pid.load(Ordering::SeqCst);
                let r = p.role.load(Ordering::SeqCst);
                if pid != 0 && r == 0 {
                    return repaired; // an entry in flux: next time
                }
                if pid != 0 && r == role {
                    actual += 1;
                }
            }
            if before > actual
                && count
                    .compare_exchange(before, actual, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                repaired = true;
            }
        }
        repaired
    }

    fn live_holder(&self, role: u32, intent: u64, except: usize) -> bool {
        self.control()
            .participants
            .iter()
            .enumerate()
            .any(|(j, q)| {
                j != except
                    && q.role.load(Ordering::SeqCst) == role
                    && q.intent.load(Ordering::SeqCst) == intent
                    && !is_dead(q)
            })
    }

    /// Queues `pos` for redelivery; `false` if the orphan list is full (the
    /// dead entry is then kept, and handed on in a later round).
    fn add_orphan(&self, pos: u64) -> bool {
        let c = self.control();
        if c.orphans
            .iter()
            .any(|o| o.load(Ordering::SeqCst) == pos.wrapping_add(1))
        {
            return true;
        }
        match c.orphans.iter().find(|o| o.load(Ordering::SeqCst) == 0) {
            Some(o) => {
                o.store(pos.wrapping_add(1), Ordering::SeqCst);
                c.state.0.orphan_count.fetch_add(1, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Takes a message a dead receiver held, recording it in our intent
    /// first (so our own death hands it on again).
    fn take_orphan(&self, entry: usize) -> Option<(u64, usize)> {
        let c = self.control();
        let _guard = RecoveryGuard::lock(&c.recovery);
        let ring = self.ring();
        for o in &c.orphans {
            let v = o.load(Ordering::SeqCst);
            if v == 0 {
                continue;
            }
            let pos = v - 1;
            o.store(0, Ordering::SeqCst);
            c.state.0.orphan_count.fetch_sub(1, Ordering::SeqCst);
            if !ring.is_held(pos) {
                continue;
            }
            self.intent(entry).store(v, Ordering::SeqCst);
            let len = ring.slot(pos).len.load(Ordering::Acquire);
            if len == SKIP || len > self.max_len() as u64 {
                ring.release(pos, self.intent(entry));
                continue;
            }
            c.state.0.redelivered.fetch_add(1, Ordering::Relaxed);
            return Some((pos, len as usize));
        }
        // No orphan left: a count above zero is garbage (entries and count
        // change only under the recovery lock); repair it, or every waiter
        // would wake for nothing.
        c.state.0.orphan_count.store(0, Ordering::SeqCst);
        None
    }

    pub(crate) fn participants(&self) -> Vec<super::ParticipantInfo> {
        self.control()
            .participants
            .iter()
            .filter(|p| p.pid.load(Ordering::SeqCst) != 0)
            .map(|p| super::ParticipantInfo {
                pid: p.pid.load(Ordering::SeqCst),
                sender: p.role.load(Ordering::SeqCst) == ROLE_SENDER,
                in_transit: p.token.load(Ordering::SeqCst) != 0,
                alive: !is_dead(p),
            })
            .collect()
    }

    /// Statistics: (skipped claims, redelivered messages, reaped
    /// participants, repaired words).
    pub(crate) fn stats(&self) -> (u64, u64, u64, u64) {
        let st = &self.control().state.0;
        (
            st.skipped.load(Ordering::Relaxed),
            st.redelivered.load(Ordering::Relaxed),
            st.reaped.load(Ordering::Relaxed),
            st.repaired.load(Ordering::Relaxed),
        )
    }
}

/// Sleeps on `word` (which held `seen` before the caller's failed attempt)
/// until woken, `ready()` holds, or `until` passes.
pub(crate) fn sleep_until(
    word: &AtomicU32,
    waiters: &AtomicU32,
    seen: u32,
    until: Instant,
    ready: impl Fn() -> bool,
) {
    // SYNC(waiters): the SeqCst increment, then `ready()` re-checked, pairs
    // with the waker's fence(SeqCst) between its state change and its load of
    // the count (`wake_one`): either we see the change, or the waker sees us
    // and bumps the word.
    waiters.fetch_add(1, Ordering::SeqCst);
    if !ready() {
        let left = until.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            futex::wait(word, seen, Some(left));
        }
    }
    waiters.fetch_sub(1, Ordering::SeqCst);
}

/// Wakes one sleeper on `word` if any sleeps (see [`sleep_until`]).
pub(crate) fn wake_one(word: &AtomicU32, waiters: &AtomicU32) {
    fence(Ordering::SeqCst);
    if waiters.load(Ordering::Relaxed) > 0 {
        word.fetch_add(1, Ordering::SeqCst);
        futex::wake(word, 1);
    }
}

/// Marks a token as "being retired by the adopter whose pid is in the low
/// 32 bits" (transit tokens never have this bit).
const RELEASING: u64 = 1 << 63;

fn pid_gone(pid: u32) -> bool {
    matches!(proc::kill(pid, 0), Err(e) if e.raw_os_error() == Some(libc::ESRCH))
}

/// Whether the participant's process is gone (or, for an entry being
/// retired by an adopter, whether that adopter is gone). An entry still being
/// registered (role not yet stored) has no start time yet: only a pid that
/// no longer exists counts as dead then.
fn is_dead(p: &Participant) -> bool {
    let pid = p.pid.load(Ordering::SeqCst);
    if pid == 0 {
        return false;
    }
    let token = p.token.load(Ordering::SeqCst);
    if token & RELEASING != 0 {
        // Being retired by its adopter: only the adopter's death matters
        // (the adopter finishes the retirement itself otherwise).
        return pid_gone(token as u32);
    }
    if p.role.load(Ordering::SeqCst) == 0 {
        return pid_gone(pid);
    }
    !proc::is_alive(pid, p.start.load(Ordering::SeqCst))
}

/// The recovery lock, held for a scope. A recoverer that died inside left
/// only idempotent steps half done, so a taker-over simply goes on. An
/// [`OwnerLock`]: garbage a peer writes into it cannot make recovery wait
/// forever (as it could in a pthread mutex).
struct RecoveryGuard<'a>(&'a OwnerLock);

impl<'a> RecoveryGuard<'a> {
    fn lock(m: &'a OwnerLock) -> Self {
        m.lock();
        RecoveryGuard(m)
    }
}

impl Drop for RecoveryGuard<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

//! The implementation is based on Dmitry Vyukov's bounded MPMC queue
//! (<https://www.1024cores.net/home/lock-free-algorithms/queues/bounded-mpmc-queue>),
//! with two additions for processes that die:
//!
//! - **Intents.** Before a sender (receiver) tries to claim position `p` with
//!   its compare-and-swap on `head` (`tail`), it stores `p + 1` in its own
//!   intent word (before the CAS, which releases it). Whoever later sees `head > p`
//!   (`tail > p`) and slot `p` not yet committed (not yet released) can find
//!   every participant that may hold `p`: the winner of the CAS still has
//!   `p + 1` in its intent, and keeps it until it commits (releases). A loser
//!   may also show `p + 1` for a moment; the recovery rule (act only when
//!   *every* participant showing `p + 1` is dead) handles both.
//! - **Skips.** A committed slot may carry the length [`SKIP`]: a claim whose
//!   sender died (or dropped a reservation uncommitted) is committed as a skip
//!   by a recoverer, and receivers release skips without delivering them.
//!
//! - **Runs.** A batch claims up to `max` consecutive positions with one
//!   compare-and-swap (`try_claim_send_run`/`try_claim_recv_run`): before
//!   it, the claimer stores the run's end in its `run_end` word, then its
//!   intent `p + 1` (Release, as above). It commits (releases) the run's
//!   positions in order, each moving the intent on to the next position
//!   (and to 0 after the last), so a participant's intent and run end
//!   always name what it may still hold: `[intent - 1, run_end)`
//!   ([`covers`]).
//!
//! A single-producer (single-consumer) ring replaces the CAS by a plain store
//! and needs no intent: its one sender cannot race anyone for a position.
//!
//! The ring touches memory only through [`SlotHeader`]s at `base + i * stride`
//! and two cursors; it makes no system call, so the same code runs on heap
//! memory under loom (see `loom_tests`).

use super::atomic::{AtomicU64, Ordering};

/// Length of a slot whose claim was abandoned: receivers skip it.
pub(crate) const SKIP: u64 = u64::MAX;

/// Length a claimed slot shows while its sender holds it for work of any
/// length (a reservation, a large copy, an encoding): such a sender
/// commits with the fenced wake-up, so a receiver may sleep behind it.
/// Every commit replaces it with the real length (or [`SKIP`]).
pub(crate) const HOLD: u64 = u64::MAX - 1;

/// The start of every slot; the message bytes follow.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SlotHeader {
    /// Vyukov's stamp: `p` free for the sender of position `p`, `p + 1`
    /// committed for its receiver, `p + capacity` released for the next lap.
    pub seq: AtomicU64,
    /// Message length in bytes, or [`SKIP`].
    pub len: AtomicU64,
}

/// A receive found nothing committed at the tail (the sender of that
/// position may still be writing it; the sending side's cursor is not read
/// here, to keep the receiver off the sender's cache line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Empty;

/// A view of a ring: two cursors and `capacity` slots of `stride` bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ring<'a> {
    head: &'a AtomicU64,
    tail: &'a AtomicU64,
    base: *const u8,
    stride: usize,
    mask: u64,
    /// Messages the ring may hold (1..=capacity): a sender claims only while
    /// fewer than this many are claimed and not yet taken by a receiver,
    /// so a queue holds exactly what its user asked for (crossbeam's and
    /// Python's bounded queues), whatever power of two the slots round to.
    limit: u64,
    single_producer: bool,
    single_consumer: bool,
}

/// Whether position `a` is after position `b` (positions never wrap in
/// practice: 2^64 messages).
fn after(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) > 0
}

/// The most positions one run claims: bounds what a participant killed
/// mid-run leaves to recovery (and to the orphan list, which holds 64),
/// and how far a run end read from a peer's entry is believed.
pub(crate) const MAX_RUN: u64 = 64;

/// Whether a participant showing `intent` and `run_end` may hold `pos`:
/// its claim `intent - 1`, or a position of its run `[intent - 1,
/// run_end)`. An intent of 0 holds nothing. A run end left from an earlier
/// run is at or before the intent (positions only grow; a failed run claim
/// sets it back to its first position), so it widens nothing. A run end
/// more than [`MAX_RUN`] past the intent is a peer's garbage and is read
/// as a single claim: garbage can widen what counts as held (which makes
/// recovery wait, never act on a live claim) by at most a run.
pub(crate) fn covers(intent: u64, run_end: u64, pos: u64) -> bool {
    if intent == 0 {
        return false;
    }
    let (first, count) = held_run(intent, run_end);
    pos.wrapping_sub(first) < count
}

/// The positions a participant showing `intent` (non-zero) and `run_end`
/// may hold: the first and the count (1 for a single claim; at most
/// [`MAX_RUN`], whatever a peer wrote).
pub(crate) fn held_run(intent: u64, run_end: u64) -> (u64, u64) {
    let first = intent.wrapping_sub(1);
    let count = run_end.wrapping_sub(first);
    (
        first,
        if (1..=MAX_RUN).contains(&count) {
            count
        } else {
            1
        },
    )
}

impl<'a> Ring<'a> {
    /// A view of the ring whose slots start at `base`.
    ///
    /// # Safety
    ///
    /// `base` must point to `capacity` slots of `stride` bytes each (stride a
    /// multiple of 16 and at least `size_of::<SlotHeader>()`), each starting
    /// with an initialised `SlotHeader`, valid for `'a`; `capacity` a power of
    /// two and at least 2 (with one slot, "released" and "committed" would be
    /// the same stamp — found by loom). Every process using the ring must
    /// pass the same flags.
    #[inline]
    pub(crate) unsafe fn new(
        head: &'a AtomicU64,
        tail: &'a AtomicU64,
        base: *const u8,
        capacity: u64,
        stride: usize,
        single_producer: bool,
        single_consumer: bool,
    ) -> Self {
        debug_assert!(capacity.is_power_of_two() && capacity >= 2);
        Ring {
            head,
            tail,
            base,
            stride,
            mask: capacity - 1,
            limit: capacity,
            single_producer,
            single_consumer,
        }
    }

    /// Slots in the ring.
    #[inline]
    pub(crate) fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// The same ring holding at most `limit` messages (1..=capacity; other
    /// values are clamped).
    #[inline]
    pub(crate) fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit.clamp(1, self.capacity());
        self
    }

    /// Messages the ring holds at most.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether claiming `pos` would exceed the limit: `limit` messages are
    /// claimed and not yet taken. Only read when the limit is below the
    /// slot count (otherwise the slot stamps say it alone, with no extra
    /// load of the receivers' cursor). A tail ahead of `pos` is a peer's
    /// garbage: left to the stamps and to repair.
    fn over_limit(&self, pos: u64) -> bool {
        if self.limit >= self.capacity() {
            return false;
        }
        let used = pos.wrapping_sub(self.tail.load(Ordering::SeqCst)) as i64;
        used >= self.limit as i64
    }

    #[inline]
    pub(crate) fn slot(&self, pos: u64) -> &'a SlotHeader {
        // SAFETY: the index is masked into 0..capacity, and `new`'s contract
        // says each such slot starts with an initialised SlotHeader.
        unsafe {
            &*self
                .base
                .add((pos & self.mask) as usize * self.stride)
                .cast::<SlotHeader>()
        }
    }

    /// The message bytes of the slot for `pos` (`stride - 16` of them).
    #[inline]
    pub(crate) fn data(&self, pos: u64) -> *mut u8 {
        // SAFETY: in bounds of the slot, per `new`'s contract.
        unsafe {
            self.base
                .add((pos & self.mask) as usize * self.stride + size_of::<SlotHeader>())
                .cast_mut()
        }
    }

    /// Claims the next position for sending, or `None` if the ring is full.
    /// The caller writes the message into [`data`](Self::data) and then calls
    /// [`commit`](Self::commit); until then `intent` must stay untouched.
    pub(crate) fn try_claim_send(&self, intent: &AtomicU64) -> Option<u64> {
        let mut pos = self.head.load(Ordering::Relaxed);
        loop {
            // SYNC(seq): pairs with the Release store in `release` (the slot's
            // previous message was read before we overwrite it).
            let seq = self.slot(pos).seq.load(Ordering::Acquire);
            let dif = seq.wrapping_sub(pos) as i64;
            if dif == 0 && self.over_limit(pos) {
                if !self.single_producer {
                    intent.store(0, Ordering::Release);
                }
                return None;
            }
            if dif == 0 {
                if self.single_producer {
                    self.head.store(pos.wrapping_add(1), Ordering::Relaxed);
                    return Some(pos);
                }
                // SYNC(intent): sequenced before the CAS, whose success
                // ordering releases it: a recoverer whose SeqCst load sees
                // `head > pos` also sees this intent (or a later value).
                // Every intent store is Release (SYNC(intent-clear)): a
                // recoverer that reads a later value also sees the commit
                // or release that came before it.
                intent.store(pos.wrapping_add(1), Ordering::Release);
                match self.head.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(pos),
                    Err(now) => pos = now,
                }
            } else if dif < 0 {
                if !self.single_producer {
                    intent.store(0, Ordering::Release);
                }
                return None;
            } else {
                // Another sender took `pos`: the head has moved (we saw its
                // slot's newer sequence through an Acquire load, which
                // happens after that sender's CAS). An unmoved head means the
                // sequence is a peer's garbage: report the ring full rather
                // than spin on it forever.
                let now = self.head.load(Ordering::Relaxed);
                if now == pos {
                    if !self.single_producer {
                        intent.store(0, Ordering::Release);
                    }
                    return None;
                }
                pos = now;
            }
        }
    }

    /// Publishes the message at `pos` with `len` bytes (or [`SKIP`]).
    #[inline]
    pub(crate) fn commit(&self, pos: u64, len: u64, intent: &AtomicU64) {
        self.commit_in_run(pos, len, intent, pos.wrapping_add(1));
    }

    /// [`commit`](Self::commit) of position `pos` of a run that ends
    /// before `end`: the intent moves on to the next position, or to 0
    /// after the last. The run's positions are committed in order.
    #[inline]
    pub(crate) fn commit_in_run(&self, pos: u64, len: u64, intent: &AtomicU64, end: u64) {
        let slot = self.slot(pos);
        slot.len.store(len, Ordering::Relaxed);
        // SYNC(seq): pairs with the Acquire load in `try_claim_recv`; the
        // message bytes and `len` are visible to the receiver.
        slot.seq.store(pos.wrapping_add(1), Ordering::Release);
        if !self.single_producer {
            // A stale intent after the commit is harmless: recovery acts only
            // on a slot that is still uncommitted (or still held).
            // SYNC(intent-clear): Release, so that a recoverer whose SeqCst
            // load sees this (or a later) intent also sees the commit above;
            // pairs with the intent loads of `repaired_stamp`'s callers.
            intent.store(Self::next_intent(pos, end), Ordering::Release);
        }
    }

    /// The intent after position `pos` of a run ending before `end` is
    /// done: the next position, + 1, or 0 after the last.
    #[inline]
    fn next_intent(pos: u64, end: u64) -> u64 {
        let next = pos.wrapping_add(1);
        if next == end { 0 } else { next.wrapping_add(1) }
    }

    /// Claims the next committed message: its position and length (which may
    /// be [`SKIP`]). The caller reads [`data`](Self::data), then calls
    /// [`release`](Self::release).
    pub(crate) fn try_claim_recv(&self, intent: &AtomicU64) -> Result<(u64, u64), Empty> {
        let mut pos = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(pos);
            // SYNC(seq): pairs with the Release store in `commit`.
            let seq = slot.seq.load(Ordering::Acquire);
            let dif = seq.wrapping_sub(pos.wrapping_add(1)) as i64;
            if dif == 0 {
                if self.single_consumer {
                    self.tail.store(pos.wrapping_add(1), Ordering::Relaxed);
                    return Ok((pos, slot.len.load(Ordering::Relaxed)));
                }
                // SYNC(intent): as in try_claim_send.
                intent.store(pos.wrapping_add(1), Ordering::Release);
                match self.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok((pos, slot.len.load(Ordering::Relaxed))),
                    Err(now) => pos = now,
                }
            } else if dif < 0 {
                if !self.single_consumer {
                    intent.store(0, Ordering::Release);
                }
                return Err(Empty);
            } else {
                // As in `try_claim_send`: an unmoved tail means a garbage
                // sequence number; report empty rather than spin forever.
                let now = self.tail.load(Ordering::Relaxed);
                if now == pos {
                    if !self.single_consumer {
                        intent.store(0, Ordering::Release);
                    }
                    return Err(Empty);
                }
                pos = now;
            }
        }
    }

    /// Frees the slot at `pos` for the sender of the next lap.
    #[inline]
    pub(crate) fn release(&self, pos: u64, intent: &AtomicU64) {
        self.release_in_run(pos, intent, pos.wrapping_add(1));
    }

    /// [`release`](Self::release) of position `pos` of a run that ends
    /// before `end` (as [`commit_in_run`](Self::commit_in_run)).
    #[inline]
    pub(crate) fn release_in_run(&self, pos: u64, intent: &AtomicU64, end: u64) {
        // SYNC(seq): pairs with the Acquire load in `try_claim_send`.
        self.slot(pos)
            .seq
            .store(pos.wrapping_add(self.capacity()), Ordering::Release);
        if !self.single_consumer {
            intent.store(Self::next_intent(pos, end), Ordering::Release);
        }
    }

    /// Claims up to `max` (at least 1) consecutive positions for sending
    /// with one compare-and-swap on `head`, as many as are free now and
    /// within the limit: the first and the count. `None` if not even one is
    /// (then as [`try_claim_send`](Self::try_claim_send)). The caller
    /// writes and commits each with [`commit_in_run`](Self::commit_in_run),
    /// in order; until the last, `intent` and `run_end` stay untouched.
    pub(crate) fn try_claim_send_run(
        &self,
        intent: &AtomicU64,
        run_end: &AtomicU64,
        max: u64,
    ) -> Option<(u64, u64)> {
        debug_assert!((1..=MAX_RUN).contains(&max) && !self.single_producer);
        self.claim_run(self.head, intent, run_end, |first| {
            self.free_run(first, max)
        })
    }

    /// Moves `cursor` past the run `ready` counts from it (0: none ready
    /// now), with the run's end and then the intent stored before the CAS;
    /// the first position and the count. `None`: nothing ready and the
    /// cursor did not move (a moved cursor is tried again, as the single
    /// claims do), the intent cleared.
    fn claim_run(
        &self,
        cursor: &AtomicU64,
        intent: &AtomicU64,
        run_end: &AtomicU64,
        ready: impl Fn(u64) -> u64,
    ) -> Option<(u64, u64)> {
        let mut pos = cursor.load(Ordering::Relaxed);
        loop {
            let first = pos;
            let n = ready(first);
            if n == 0 {
                let now = cursor.load(Ordering::Relaxed);
                if now == first {
                    // A run end left from a lost CAS would be ahead of a
                    // later single claim: set it back.
                    intent.store(0, Ordering::Release);
                    run_end.store(first, Ordering::Release);
                    return None;
                }
                pos = now;
                continue;
            }
            let end = first.wrapping_add(n);
            // SYNC(intent): the run's end, then the intent (Release), both
            // before the CAS: a recoverer that sees the intent sees the end.
            run_end.store(end, Ordering::Release);
            intent.store(first.wrapping_add(1), Ordering::Release);
            match cursor.compare_exchange_weak(first, end, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return Some((first, n)),
                Err(now) => pos = now,
            }
        }
    }

    /// How many positions from `first` (at most `max`) are free for their
    /// senders now and within the limit.
    fn free_run(&self, first: u64, max: u64) -> u64 {
        let room = if self.limit >= self.capacity() {
            max
        } else {
            // A tail ahead of `first` is a peer's garbage: left to the
            // stamps and to repair (as `over_limit` does).
            let used = first.wrapping_sub(self.tail.load(Ordering::SeqCst)) as i64;
            match u64::try_from(used) {
                Err(_) => max,
                Ok(used) => self.limit.saturating_sub(used).min(max),
            }
        };
        let mut n = 0;
        // SYNC(seq): as in `try_claim_send`, for each slot of the run.
        while n < room
            && self.slot(first.wrapping_add(n)).seq.load(Ordering::Acquire) == first.wrapping_add(n)
        {
            n += 1;
        }
        n
    }

    /// Claims up to `max` (at least 1) consecutive committed messages with
    /// one compare-and-swap on `tail`: the first position and the count;
    /// `Err(Empty)` if the next is not committed. Lengths are read per slot
    /// (`slot(p).len`; any may be [`SKIP`]). The caller releases each with
    /// [`release_in_run`](Self::release_in_run), in order.
    pub(crate) fn try_claim_recv_run(
        &self,
        intent: &AtomicU64,
        run_end: &AtomicU64,
        max: u64,
    ) -> Result<(u64, u64), Empty> {
        debug_assert!((1..=MAX_RUN).contains(&max) && !self.single_consumer);
        let committed = |first: u64| {
            let mut n = 0;
            // SYNC(seq): as in `try_claim_recv`, for each slot of the run.
            while n < max
                && self.slot(first.wrapping_add(n)).seq.load(Ordering::Acquire)
                    == first.wrapping_add(n).wrapping_add(1)
            {
                n += 1;
            }
            n
        };
        self.claim_run(self.tail, intent, run_end, committed)
            .ok_or(Empty)
    }

    /// Whether the slot at `head` is free for a sender (the ring is not full,
    /// and no receiver still holds that slot from the previous lap).
    pub(crate) fn can_send(&self) -> bool {
        let head = self.head.load(Ordering::SeqCst);
        self.slot(head).seq.load(Ordering::SeqCst) == head && !self.over_limit(head)
    }

    /// Marks the claimed slot at `pos` as held ([`HOLD`]).
    pub(crate) fn hold(&self, pos: u64) {
        // Release: a receiver that reads HOLD (Acquire) and then the stamp
        // sees this lap's claim, not an older one (`claimed_not_held`).
        self.slot(pos).len.store(HOLD, Ordering::Release);
    }

    /// Where receivers take next.
    pub(crate) fn tail(&self) -> u64 {
        self.tail.load(Ordering::SeqCst)
    }

    /// Whether a receiver must not sleep: the message at `tail` is claimed
    /// (the head is past it) and either committed or claimed by a sender
    /// that did not mark it [`HOLD`]. Such a sender commits without a
    /// fence: it reads the sleeper count after its claim's SeqCst CAS on
    /// the head, and a sleeper that counted itself (SeqCst RMW) before that
    /// read loads the head here after it (SeqCst): in the single total
    /// order of SeqCst operations one of the two sees the other. So a
    /// sleeper sleeps only while nothing is claimed (the next claim's
    /// sender will see it counted) or behind a held slot (whose commit is
    /// fenced and re-reads the count).
    pub(crate) fn claimed_not_held(&self) -> bool {
        let tail = self.tail.load(Ordering::SeqCst);
        let head = self.head.load(Ordering::SeqCst);
        if head == tail {
            return false;
        }
        let slot = self.slot(tail);
        // Held only if the stamp still says "claimed at `tail`" after the
        // HOLD was read: a HOLD of a later lap (the tail moved on meanwhile)
        // must not send us to sleep behind committed messages.
        slot.seq.load(Ordering::SeqCst) != tail
            || slot.len.load(Ordering::Acquire) != HOLD
            || slot.seq.load(Ordering::SeqCst) != tail
    }

    /// Whether the message at `tail` is committed.
    pub(crate) fn can_recv(&self) -> bool {
        let tail = self.tail.load(Ordering::SeqCst);
        self.slot(tail).seq.load(Ordering::SeqCst) == tail.wrapping_add(1)
    }

    /// (head, tail): where senders claim next and receivers take next.
    pub(crate) fn cursors(&self) -> (u64, u64) {
        (
            self.head.load(Ordering::SeqCst),
            self.tail.load(Ordering::SeqCst),
        )
    }

    /// Whether a sender has claimed a slot that no receiver has taken yet
    /// (committed or still being written): the queue is not empty in the
    /// linearizable sense, though the next slot may not be ready.
    pub(crate) fn send_in_flight(&self) -> bool {
        let (head, tail) = self.cursors();
        head != tail
    }

    /// Messages committed or being written, not yet claimed by a receiver.
    pub(crate) fn len(&self) -> u64 {
        let tail = self.tail.load(Ordering::SeqCst);
        let head = self.head.load(Ordering::SeqCst);
        head.wrapping_sub(tail).min(self.limit)
    }

    /// Recovery: position `pos` was claimed by a sender that is dead. If it
    /// never committed, commit it as a skip. Only one recoverer may run at a
    /// time (the caller holds the recovery lock).
    pub(crate) fn skip_abandoned_send(&self, pos: u64) -> bool {
        let slot = self.slot(pos);
        if slot.seq.load(Ordering::Acquire) == pos && after(self.head.load(Ordering::SeqCst), pos) {
            slot.len.store(SKIP, Ordering::Relaxed);
            slot.seq.store(pos.wrapping_add(1), Ordering::Release);
            true
        } else {
            false
        }
    }

    /// Take-over of a single producer (the one new producer, before it
    /// sends): if the last claimed position was never committed (its
    /// producer died between claim and commit), commit it as a skip.
    pub(crate) fn skip_abandoned_send_spsc(&self) -> bool {
        debug_assert!(self.single_producer);
        self.skip_abandoned_send(self.head.load(Ordering::SeqCst).wrapping_sub(1))
    }

    /// Take-over of a single consumer (the one new consumer, before it
    /// receives): if the last claimed message is still held (its consumer
    /// died between claim and release), move the tail back onto it, so that
    /// it is received again rather than lost, and its slot freed.
    pub(crate) fn unclaim_held_spsc(&self) -> bool {
        debug_assert!(self.single_consumer);
        let tail = self.tail.load(Ordering::SeqCst);
        let pos = tail.wrapping_sub(1);
        // Stamp `pos + 1` with the tail past `pos`: received, not released
        // (released would be `pos + capacity`).
        if self.slot(pos).seq.load(Ordering::Acquire) == tail {
            self.tail.store(pos, Ordering::SeqCst);
            true
        } else {
            false
        }
    }

    /// Recovery: whether the message at `pos` was claimed by a receiver and
    /// not released.
    pub(crate) fn is_held(&self, pos: u64) -> bool {
        self.slot(pos).seq.load(Ordering::Acquire) == pos.wrapping_add(1)
            && after(self.tail.load(Ordering::SeqCst), pos)
    }

    /// Recovery: the stamp the slot serving `pos` should carry instead of
    /// `seq`, or `None` when `seq` is possible. `pos` lies in
    /// `[tail, tail + capacity)` for cursors read while the tail stood still
    /// (so `head - tail <= capacity`); `sender_holds()` says whether any
    /// participant (live or dead) shows the intent `pos + 1` as a sender,
    /// `receiver_holds()` whether a receiver (or the orphan list) holds
    /// `pos - capacity`, the same slot's previous lap.
    ///
    /// A claimed position (`head > pos`) is uncommitted (`pos`, while its
    /// sender shows it) or committed (`pos + 1`); anything else is garbage
    /// and becomes `pos` if a sender shows the claim (it will commit), else
    /// `pos + 1`: committed with whatever length and bytes it has (checked
    /// by the receiver like any other). A free position (`head <= pos`) is
    /// released for its sender (`pos`) or still held from the last lap
    /// (`pos - capacity + 1`, while a receiver holds that); anything else
    /// becomes held if a receiver holds it, else released. No stamp a live
    /// participant may still store is ever replaced by one that lets a peer
    /// into a slot that participant is using.
    pub(crate) fn repaired_stamp(
        &self,
        pos: u64,
        head: u64,
        seq: u64,
        sender_holds: impl FnOnce() -> bool,
        receiver_holds: impl FnOnce() -> bool,
    ) -> Option<u64> {
        if after(head, pos) {
            let committed = pos.wrapping_add(1);
            if seq == committed {
                return None;
            }
            let holds = sender_holds();
            if seq == pos && holds {
                return None;
            }
            Some(if holds { pos } else { committed })
        } else {
            let held = pos.wrapping_sub(self.capacity()).wrapping_add(1);
            if seq == pos {
                return None;
            }
            let holds = receiver_holds();
            if seq == held && holds {
                return None;
            }
            Some(if holds { held } else { pos })
        }
    }

    /// Recovery: whether a sender claimed `pos` and has not committed it.
    pub(crate) fn is_uncommitted(&self, pos: u64) -> bool {
        self.slot(pos).seq.load(Ordering::Acquire) == pos
            && after(self.head.load(Ordering::SeqCst), pos)
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Every interleaving with up to 3 preemptions (the bound that finds
    /// nearly all real bugs, per the loom docs, and keeps retry loops finite).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.max_branches = 100_000;
        b.check(f);
    }

    /// A slot for loom: the header, then the message as an atomic so that
    /// loom can show a stale read if the ring's orderings were too weak.
    #[repr(C)]
    struct TestSlot {
        header: SlotHeader,
        value: AtomicU64,
    }

    /// Runs `f` on a new loom thread with its own intent and view of the
    /// ring (`single`: the SPSC flags).
    fn spawn<T: Send + 'static>(
        heap: &Arc<Heap>,
        single: bool,
        f: impl FnOnce(&Heap, &Ring<'_>, &AtomicU64) -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let heap = heap.clone();
        thread::spawn(move || {
            let intent = AtomicU64::new(0);
            let ring = heap.ring(single, single);
            f(&heap, &ring, &intent)
        })
    }

    struct Heap {
        head: AtomicU64,
        tail: AtomicU64,
        slots: Vec<TestSlot>,
        limit: u64,
    }

    impl Heap {
        fn new(capacity: u64) -> Arc<Heap> {
            Self::limited(capacity, capacity)
        }

        fn limited(capacity: u64, limit: u64) -> Arc<Heap> {
            Arc::new(Heap {
                limit,
                head: AtomicU64::new(0),
                tail: AtomicU64::new(0),
                slots: (0..capacity)
                    .map(|i| TestSlot {
                        header: SlotHeader {
                            seq: AtomicU64::new(i),
                            len: AtomicU64::new(0),
                        },
                        value: AtomicU64::new(0),
                    })
                    .collect(),
            })
        }

        fn ring(&self, sp: bool, sc: bool) -> Ring<'_> {
            // SAFETY: the Vec holds `capacity` TestSlots, each starting with
            // an initialised SlotHeader, stride = size_of::<TestSlot>().
            unsafe {
                Ring::new(
                    &self.head,
                    &self.tail,
                    self.slots.as_ptr().cast(),
                    self.slots.len() as u64,
                    size_of::<TestSlot>(),
                    sp,
                    sc,
                )
                .with_limit(self.limit)
            }
        }

        /// Sends `v`, yielding while the ring is full.
        fn send_waiting(&self, ring: &Ring<'_>, intent: &AtomicU64, v: u64) {
            while !self.send(ring, intent, v) {
                thread::yield_now();
            }
        }

        fn value(&self, ring: &Ring<'_>, pos: u64) -> &AtomicU64 {
            &self.slots[(pos % ring.capacity()) as usize].value
        }

        fn send(&self, ring: &Ring<'_>, intent: &AtomicU64, v: u64) -> bool {
            match ring.try_claim_send(intent) {
                Some(pos) => {
                    self.value(ring, pos).store(v, Ordering::Relaxed);
                    ring.commit(pos, 8, intent);
                    true
                }
                None => false,
            }
        }

        /// Sends what one run claim takes of `values` (committing in
        /// order); how many.
        fn send_run(&self, ring: &Ring<'_>, words: &[AtomicU64; 2], values: &[u64]) -> usize {
            let [intent, run_end] = words;
            let Some((first, n)) = ring.try_claim_send_run(intent, run_end, values.len() as u64)
            else {
                return 0;
            };
            for k in 0..n {
                let pos = first + k;
                self.value(ring, pos)
                    .store(values[k as usize], Ordering::Relaxed);
                ring.commit_in_run(pos, 8, intent, first + n);
            }
            n as usize
        }

        /// Receives what one run claim takes, up to `max` (skips dropped).
        fn recv_run(&self, ring: &Ring<'_>, words: &[AtomicU64; 2], max: u64) -> Vec<u64> {
            let [intent, run_end] = words;
            let mut got = Vec::new();
            if let Ok((first, n)) = ring.try_claim_recv_run(intent, run_end, max) {
                for pos in first..first + n {
                    let len = ring.slot(pos).len.load(Ordering::Relaxed);
                    let v = self.value(ring, pos).load(Ordering::Relaxed);
                    ring.release_in_run(pos, intent, first + n);
                    if len != SKIP {
                        got.push(v);
                    }
                }
            }
            got
        }

        fn recv(&self, ring: &Ring<'_>, intent: &AtomicU64) -> Option<u64> {
            loop {
                match ring.try_claim_recv(intent) {
                    Ok((pos, len)) => {
                        let v = self.value(ring, pos).load(Ordering::Relaxed);
                        ring.release(pos, intent);
                        if len == SKIP {
                            continue;
                        }
                        return Some(v);
                    }
                    Err(_) => return None,
                }
            }
        }
    }

    #[test]
    fn two_producers_two_consumers_exactly_once() {
        model(|| {
            let heap = Heap::new(2);
            let producers: Vec<_> = (0..2u64)
                // Values 1.. so a stale zero shows.
                .map(|p| spawn(&heap, false, move |h, r, i| h.send_waiting(r, i, p + 1)))
                .collect();
            let consumer = spawn(&heap, false, |h, r, i| h.recv(r, i));
            let intent = AtomicU64::new(0);
            let ring = heap.ring(false, false);
            for p in producers {
                p.join().unwrap();
            }
            let a = consumer.join().unwrap();
            let mut got: Vec<u64> = a.into_iter().collect();
            while let Some(v) = heap.recv(&ring, &intent) {
                got.push(v);
            }
            got.sort();
            assert_eq!(got, vec![1, 2]);
        });
    }

    #[test]
    fn wraparound_never_loses_or_duplicates() {
        model(|| {
            let heap = Heap::new(2);
            let producer = spawn(&heap, false, |h, r, i| {
                assert!(h.send(r, i, 1)); // the ring is empty
                assert!(h.send(r, i, 2));
                // Succeeds only if the consumer released slot 0 first: then
                // nothing stale may be read.
                h.send(r, i, 3)
            });
            let consumer = spawn(&heap, false, |h, r, i| h.recv(r, i));
            let sent_third = producer.join().unwrap();
            let first = consumer.join().unwrap();
            let intent = AtomicU64::new(0);
            let ring = heap.ring(false, false);
            let mut got: Vec<u64> = first.into_iter().collect();
            while let Some(v) = heap.recv(&ring, &intent) {
                got.push(v);
            }
            let expected = if sent_third {
                vec![1, 2, 3]
            } else {
                vec![1, 2]
            };
            assert_eq!(got, expected);
        });
    }

    /// A limit below the slot count (capacity 1 in 2 slots): a second send
    /// succeeds only after the consumer took the first, and nothing is lost
    /// or duplicated.
    #[test]
    fn a_limit_of_one_holds_one() {
        model(|| {
            let heap = Heap::limited(2, 1);
            let producer = spawn(&heap, false, |h, r, i| {
                assert!(h.send(r, i, 1)); // the ring is empty
                h.send(r, i, 2)
            });
            let consumer = spawn(&heap, false, |h, r, i| h.recv(r, i));
            let sent_second = producer.join().unwrap();
            let first = consumer.join().unwrap();
            let intent = AtomicU64::new(0);
            let ring = heap.ring(false, false);
            if sent_second {
                assert_eq!(first, Some(1), "the second send needs the first taken");
            }
            assert!(ring.len() <= 1);
            let mut got: Vec<u64> = first.into_iter().collect();
            while let Some(v) = heap.recv(&ring, &intent) {
                got.push(v);
            }
            let expected = if sent_second { vec![1, 2] } else { vec![1] };
            assert_eq!(got, expected);
        });
    }

    #[test]
    fn spsc_in_order() {
        model(|| {
            let heap = Heap::new(2);
            let producer = spawn(&heap, true, |h, r, i| {
                for v in 1..=3 {
                    h.send_waiting(r, i, v);
                }
            });
            let intent = AtomicU64::new(0);
            let ring = heap.ring(true, true);
            let mut got = Vec::new();
            while got.len() < 3 {
                match heap.recv(&ring, &intent) {
                    Some(v) => got.push(v),
                    None => thread::yield_now(),
                }
            }
            producer.join().unwrap();
            assert_eq!(got, vec![1, 2, 3]);
        });
    }

    /// Runs beside single claims: one producer sends two values in runs
    /// while another sends one singly; one consumer takes runs, the other
    /// single messages. Every value arrives once, and a run consumer sees
    /// one producer's run in order.
    #[test]
    fn runs_and_single_claims_deliver_exactly_once() {
        model(|| {
            // Room for all three: the consumers are joined before draining.
            let heap = Heap::new(4);
            let words = || [AtomicU64::new(0), AtomicU64::new(0)];
            let runs = spawn(&heap, false, move |h, r, _| {
                let w = words();
                let mut sent = 0;
                while sent < 2 {
                    sent += h.send_run(r, &w, &[1, 2][sent..]);
                    if sent < 2 {
                        thread::yield_now();
                    }
                }
            });
            let single = spawn(&heap, false, |h, r, i| h.send_waiting(r, i, 3));
            let taker = spawn(&heap, false, move |h, r, _| h.recv_run(r, &words(), 2));
            runs.join().unwrap();
            single.join().unwrap();
            let mut got = taker.join().unwrap();
            let run_order = got.iter().filter(|&&v| v != 3).copied().collect::<Vec<_>>();
            assert!(run_order.windows(2).all(|w| w[0] < w[1]), "{got:?}");
            let (intent, ring) = (AtomicU64::new(0), heap.ring(false, false));
            while let Some(v) = heap.recv(&ring, &intent) {
                got.push(v);
            }
            got.sort();
            assert_eq!(got, vec![1, 2, 3]);
        });
    }

    /// Runs across a lap of a ring of two, and against a limit of one in
    /// two slots: a run takes only slots released by the last lap's
    /// receiver (nothing stale is read) and never more than the limit.
    #[test]
    fn runs_wrap_around_and_keep_the_limit() {
        for limit in [2, 1] {
            model(move || {
                let heap = Heap::limited(2, limit);
                let producer = spawn(&heap, false, move |h, r, _| {
                    let w = [AtomicU64::new(0), AtomicU64::new(0)];
                    let first = h.send_run(r, &w, &[1, 2]);
                    assert_eq!(first as u64, limit); // the ring is empty
                    let second = h.send_run(r, &w, &[3, 4][..first]);
                    (first, second)
                });
                let consumer = spawn(&heap, false, |h, r, _| {
                    h.recv_run(r, &[AtomicU64::new(0), AtomicU64::new(0)], 2)
                });
                let (first, second) = producer.join().unwrap();
                let mut got = consumer.join().unwrap();
                let (intent, ring) = (AtomicU64::new(0), heap.ring(false, false));
                assert!(ring.len() <= limit);
                while let Some(v) = heap.recv(&ring, &intent) {
                    got.push(v);
                }
                let mut want: Vec<u64> = [1, 2][..first].to_vec();
                want.extend_from_slice(&[3, 4][..second]);
                assert_eq!(got, want);
            });
        }
    }

    /// A futex word for loom: `wait` sleeps while the word holds `seen`
    /// (compare and sleep are one step, as in the kernel); `bump` changes
    /// it and wakes every sleeper. A sleeper nobody wakes is a deadlock,
    /// which loom reports.
    struct Futex {
        word: loom::sync::Mutex<u32>,
        woken: loom::sync::Condvar,
    }

    impl Futex {
        fn value(&self) -> u32 {
            *self.word.lock().unwrap()
        }

        fn wait(&self, seen: u32) {
            let mut w = self.word.lock().unwrap();
            while *w == seen {
                w = self.woken.wait(w).unwrap();
            }
        }

        fn bump(&self) {
            *self.word.lock().unwrap() += 1;
            self.woken.notify_all();
        }
    }

    /// The receive side's sleeper handshake (`RawQueue::claim_recv` and
    /// `blocking::sleep_until`) against one sender that claims, writes,
    /// commits and reads the sleeper count. An unheld sender's count read
    /// (`wake_after_claim`, a SeqCst load with no fence after the commit's
    /// plain store) is ordered after its claim's CAS but may take effect
    /// before the commit is visible (x86 lets a load pass an earlier
    /// store): modelled as an RMW read right after the claim, the strongest
    /// place loom can check it (loom models a SeqCst load as an acquire
    /// load, tokio-rs/loom#180). A held sender's read follows its fenced
    /// commit. A lost wake-up leaves the receiver asleep: a loom deadlock.
    /// (Checked: with the receiver judging readiness by the stamp alone,
    /// as before `claimed_not_held`, the unheld case deadlocks.)
    #[test]
    fn handshake_wakes_or_sees_the_claim() {
        for held in [false, true] {
            model(move || {
                let heap = Heap::new(2);
                let shared = Arc::new((
                    AtomicU64::new(0), // the receivers' sleeper count
                    Futex {
                        word: loom::sync::Mutex::new(0),
                        woken: loom::sync::Condvar::new(),
                    },
                ));
                let s2 = shared.clone();
                let sender = spawn(&heap, false, move |h, r, i| {
                    let (waiters, futex) = &*s2;
                    let pos = r.try_claim_send(i).unwrap();
                    let early = (!held).then(|| waiters.fetch_add(0, Ordering::SeqCst));
                    if held {
                        r.hold(pos);
                    }
                    h.value(r, pos).store(9, Ordering::Relaxed);
                    r.commit(pos, 8, i);
                    let count = early.unwrap_or_else(|| waiters.fetch_add(0, Ordering::SeqCst));
                    if count > 0 {
                        futex.bump();
                    }
                });
                let (waiters, futex) = &*shared;
                let (intent, ring) = (AtomicU64::new(0), heap.ring(false, false));
                let got = loop {
                    let seen = futex.value();
                    if let Some(v) = heap.recv(&ring, &intent) {
                        break v;
                    }
                    waiters.fetch_add(1, Ordering::SeqCst);
                    let ready = ring.can_recv() || ring.claimed_not_held();
                    if !ready {
                        futex.wait(seen);
                    }
                    waiters.fetch_sub(1, Ordering::SeqCst);
                    if ring.claimed_not_held() {
                        thread::yield_now();
                    }
                };
                assert_eq!(got, 9);
                sender.join().unwrap();
            });
        }
    }

    /// A sender that claimed a run of two and committed only the first
    /// "dies": recovery finds the rest from its intent and run end and
    /// skips it; the committed message and later ones flow.
    #[test]
    fn a_dead_senders_run_rest_is_skipped() {
        model(|| {
            let heap = Heap::new(4);
            let ring = heap.ring(false, false);
            let [intent, run_end] = [AtomicU64::new(0), AtomicU64::new(0)];
            let (first, n) = ring.try_claim_send_run(&intent, &run_end, 2).unwrap();
            assert_eq!((first, n), (0, 2));
            heap.value(&ring, 0).store(5, Ordering::Relaxed);
            ring.commit_in_run(0, 8, &intent, 2);
            let live = spawn(&heap, false, |h, r, i| h.send_waiting(r, i, 7));
            let taker = spawn(&heap, false, |h, r, i| h.recv(r, i));
            // The recoverer: what the dead sender may still hold.
            let held = held_run(
                intent.load(Ordering::SeqCst),
                run_end.load(Ordering::SeqCst),
            );
            assert_eq!(held, (1, 1));
            assert!(ring.is_uncommitted(1));
            assert!(ring.skip_abandoned_send(1));
            live.join().unwrap();
            let mut got: Vec<u64> = taker.join().unwrap().into_iter().collect();
            let mine = AtomicU64::new(0);
            while let Some(v) = heap.recv(&ring, &mine) {
                got.push(v);
            }
            assert_eq!(got, vec![5, 7]);
        });
    }

    #[test]
    fn a_dead_senders_claim_is_skipped_and_later_messages_flow() {
        model(|| {
            let heap = Heap::new(2);
            let ring = heap.ring(false, false);
            // A sender claims position 0 and "dies" before committing.
            let dead_intent = AtomicU64::new(0);
            let pos = ring.try_claim_send(&dead_intent).unwrap();
            assert_eq!(dead_intent.load(Ordering::SeqCst), pos + 1);
            let live = spawn(&heap, false, |h, r, i| h.send_waiting(r, i, 7));
            let intent = AtomicU64::new(0);
            // The receiver is stalled on position 0 until it is recovered.
            assert_eq!(ring.try_claim_recv(&intent), Err(Empty));
            assert!(ring.is_uncommitted(pos));
            assert!(ring.skip_abandoned_send(pos));
            live.join().unwrap();
            assert_eq!(heap.recv(&ring, &intent), Some(7));
            assert_eq!(heap.recv(&ring, &intent), None);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn slot_header_layout() {
        assert_eq!(size_of::<SlotHeader>(), 16);
        assert_eq!(std::mem::offset_of!(SlotHeader, len), 8);
    }

    #[test]
    fn impossible_stamps_are_repaired_possible_ones_kept() {
        let slots: Vec<[u64; 2]> = vec![[0; 2]; 4];
        let (head, tail) = (AtomicU64::new(0), AtomicU64::new(0));
        // SAFETY: 4 slots of 16 bytes, each a zeroed (valid) SlotHeader.
        let ring = unsafe { Ring::new(&head, &tail, slots.as_ptr().cast(), 4, 16, false, false) };
        let (yes, no) = (|| true, || false);
        // Tail 10, head 12: positions 10 and 11 claimed, 12 and 13 free.
        assert_eq!(ring.repaired_stamp(10, 12, 11, no, no), None); // committed
        assert_eq!(ring.repaired_stamp(10, 12, 10, yes, no), None); // being written
        assert_eq!(ring.repaired_stamp(10, 12, 10, no, no), Some(11)); // nobody writes it
        assert_eq!(ring.repaired_stamp(10, 12, 0, yes, no), Some(10));
        assert_eq!(ring.repaired_stamp(10, 12, u64::MAX, no, no), Some(11));
        assert_eq!(ring.repaired_stamp(12, 12, 12, no, no), None); // released
        assert_eq!(ring.repaired_stamp(12, 12, 9, no, yes), None); // 8 still held
        assert_eq!(ring.repaired_stamp(12, 12, 9, no, no), Some(12)); // held by nobody
        assert_eq!(ring.repaired_stamp(13, 12, 13 + 4 * 7, no, no), Some(13));
        assert_eq!(ring.repaired_stamp(13, 12, 0, no, yes), Some(10));
    }

    #[test]
    fn a_run_covers_what_is_left_of_it_and_a_stale_end_nothing_more() {
        // Run 10..14, intent moved on to 12: holds 12 and 13.
        assert!(!covers(13, 14, 11));
        assert!(covers(13, 14, 12) && covers(13, 14, 13));
        assert!(!covers(13, 14, 14));
        assert_eq!(held_run(13, 14), (12, 2));
        // A single claim at 20 with the end of an earlier run: only 20.
        assert!(covers(21, 14, 20) && !covers(21, 14, 21) && !covers(21, 14, 13));
        assert_eq!(held_run(21, 14), (20, 1));
        // No intent holds nothing; a garbage end beyond a run is a single
        // claim; a run of exactly MAX_RUN is believed.
        assert!(!covers(0, u64::MAX, 5));
        assert_eq!(held_run(1, u64::MAX / 2), (0, 1));
        assert!(!covers(1, u64::MAX / 2, 1));
        assert_eq!(held_run(1, MAX_RUN), (0, MAX_RUN));
        // Across the wrap of positions.
        assert!(covers(u64::MAX, 2, 0) && covers(u64::MAX, 2, u64::MAX - 1));
    }

    #[test]
    fn after_compares_positions() {
        assert!(after(1, 0));
        assert!(!after(0, 0));
        assert!(!after(0, 1));
        assert!(after(0, u64::MAX));
    }
}

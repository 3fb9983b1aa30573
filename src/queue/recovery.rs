//! Recovery: what dead participants left half done (a claimed slot never
//! committed is skipped, a received slot never released is delivered again,
//! dead entries are reaped), and the repair of impossible bytes a peer wrote
//! (slot stamps, cursors), under the queue's recovery lock.

use super::control::{ROLE_RECEIVER, ROLE_SENDER};
use super::participants::is_dead;
use super::raw::RawQueue;
use super::ring::{SKIP, covers, held_run};
use crate::sync::owner_lock::OwnerLock;
use std::sync::atomic::Ordering;

impl RawQueue {
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
                // The claim, or what is left of a run: the intent names the
                // first position not yet committed (released).
                let run_end = p.run_end.load(Ordering::SeqCst);
                let (first, count) = held_run(intent, run_end);
                let mut keep = false;
                for pos in (0..count).map(|k| first.wrapping_add(k)) {
                    // First the cursor (is_uncommitted/is_held load it with
                    // SeqCst): having seen the CAS that claimed `pos`, we see
                    // the winner's intent and run end, stored before it.
                    let stuck = (role == ROLE_SENDER && ring.is_uncommitted(pos))
                        || (role == ROLE_RECEIVER && ring.is_held(pos));
                    // Another participant showing `pos` that is alive may be
                    // the real holder: leave this entry for a later round.
                    if stuck && self.live_holder(role, pos, i) {
                        keep = true;
                    } else if stuck && role == ROLE_SENDER && ring.skip_abandoned_send(pos) {
                        c.state.0.skipped.fetch_add(1, Ordering::Relaxed);
                    } else if stuck && role == ROLE_RECEIVER && !self.add_orphan(pos) {
                        keep = true; // the orphan list is full: keep the entry
                    }
                }
                if keep {
                    continue;
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
    pub(super) fn repair_garbage(&self) -> bool {
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
    pub(super) fn repair_slot(&self, t: u64, h: u64, pos: u64) -> bool {
        let c = self.control();
        let ring = self.ring();
        let slot = ring.slot(pos);
        let seq = slot.seq.load(Ordering::SeqCst);
        // An intent (an orphan) of 0 means none: never a holder of `pos`
        // (in the first lap, `pos - capacity + 1` wraps to 0).
        let shows = |role: u32, at: u64| {
            c.participants.iter().any(|p| {
                p.pid.load(Ordering::SeqCst) != 0
                    && p.role.load(Ordering::SeqCst) == role
                    // SYNC(intent-clear): pairs with the Release intent
                    // stores of the ring: an intent that moved on means
                    // the commit (release) before it is visible to our CAS.
                    && covers(
                        p.intent.load(Ordering::SeqCst),
                        p.run_end.load(Ordering::SeqCst),
                        at,
                    )
            })
        };
        let prev = pos.wrapping_sub(ring.capacity());
        let Some(stamp) = ring.repaired_stamp(
            pos,
            h,
            seq,
            || shows(ROLE_SENDER, pos),
            || {
                let held = prev.wrapping_add(1);
                held != 0
                    && (shows(ROLE_RECEIVER, prev)
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
    pub(super) fn recount(&self) -> bool {
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

    /// Whether a live participant other than `except` shows `pos` as
    /// claimed in `role` (`ring::covers`).
    pub(super) fn live_holder(&self, role: u32, pos: u64, except: usize) -> bool {
        self.control()
            .participants
            .iter()
            .enumerate()
            .any(|(j, q)| {
                j != except
                    && q.role.load(Ordering::SeqCst) == role
                    && covers(
                        q.intent.load(Ordering::SeqCst),
                        q.run_end.load(Ordering::SeqCst),
                        pos,
                    )
                    && !is_dead(q)
            })
    }

    /// Queues `pos` for redelivery; `false` if the orphan list is full (the
    /// dead entry is then kept, and handed on in a later round).
    pub(super) fn add_orphan(&self, pos: u64) -> bool {
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
    pub(super) fn take_orphan(&self, entry: usize) -> Option<(u64, usize)> {
        let c = self.control();
        let _guard = RecoveryGuard::lock(&c.recovery);
        let ring = self.ring();
        for o in &c.orphans {
            let v = o.load(Ordering::SeqCst);
            if v == 0 {
                continue;
            }
            let pos = v - 1;
            let held = ring.is_held(pos);
            if held {
                // Ours before it leaves the list: a death in between leaves
                // it in both (recovery queues it once), never in neither.
                // A single claim: no run behind it (a run end left from an
                // earlier run would be after this older position).
                self.run_end(entry).store(0, Ordering::SeqCst);
                self.intent(entry).store(v, Ordering::SeqCst);
            }
            o.store(0, Ordering::SeqCst);
            c.state.0.orphan_count.fetch_sub(1, Ordering::SeqCst);
            if !held {
                continue;
            }
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

/// The recovery lock, held for a scope. A recoverer that died inside left
/// only idempotent steps half done, so a taker-over simply goes on. An
/// [`OwnerLock`]: garbage a peer writes into it cannot make recovery wait
/// forever (as it could in a pthread mutex).
struct RecoveryGuard<'a>(&'a OwnerLock);

impl<'a> RecoveryGuard<'a> {
    pub(super) fn lock(m: &'a OwnerLock) -> Self {
        m.lock();
        RecoveryGuard(m)
    }
}

impl Drop for RecoveryGuard<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

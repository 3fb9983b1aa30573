//! The map's layout and its algorithm: stripes of open-addressing slots,
//! each with a robust lock, a seqlock sequence and an undo record; lookups,
//! writes, backward-shift deletion, and the repair of a dead writer's
//! half-done change.

use super::SharedMap;
use crate::error::{Error, RegionError, Result};
use crate::region::{Kind, RegionOptions, Spec, TypeInfo};
use crate::sync::mutex::{Acquired, LINE_REST, RawMutex};
use bytemuck::Pod;
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Slot states.
pub(super) const EMPTY: u32 = 0;
pub(super) const FULL: u32 = 1;
// Deletion shifts entries back, so no tombstones are written; any other
// state (a peer's garbage) is skipped by probes and reused by inserts.

/// Undo record states.
pub(super) const UNDO_NONE: u64 = 0;
pub(super) const UNDO_SLOT: u64 = 1;
pub(super) const UNDO_CLEAR: u64 = 2;
pub(super) const UNDO_SHIFT: u64 = 3;

/// Optimistic read attempts before a reader takes the stripe's lock (a
/// writer that died mid-write leaves the sequence odd until then).
pub(super) const READ_ATTEMPTS: u32 = 64;

/// One entry. `hash` is the high half of the key's hash (a fast reject).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Slot<K, V> {
    pub(super) state: u32,
    pub(super) hash: u32,
    pub(super) key: K,
    pub(super) value: V,
}

/// A stripe's lock, sequence number, count and undo record.
#[repr(C, align(64))]
pub(super) struct Stripe {
    pub(super) lock: RawMutex,
    /// The lock keeps its cache line (sleepers wait on the words below).
    pub(super) _lock_line: [u8; LINE_REST],
    /// Odd while a writer changes the stripe.
    pub(super) seq: AtomicU64,
    /// Live entries.
    pub(super) len: AtomicU64,
    /// `UNDO_SLOT`: the slot `undo_slot` is being changed, its old contents
    /// are in the undo area and `undo_len` is the old count (repair rolls
    /// back); `UNDO_SHIFT`: a deletion is shifting entries back into the
    /// hole at `undo_slot`, to leave `undo_len` entries (repair rolls
    /// forward); `UNDO_CLEAR`: a clear is under way (rolled forward).
    pub(super) undo: AtomicU64,
    pub(super) undo_slot: AtomicU64,
    pub(super) undo_len: AtomicU64,
    pub(super) _pad: [u64; 3],
}

/// The control block: the geometry, written once at creation.
#[repr(C, align(64))]
pub(super) struct MapControl {
    /// Entries asked for at creation.
    pub(super) capacity: u64,
    pub(super) stripes: u64,
    /// Slots per stripe (a power of two).
    pub(super) per_stripe: u64,
    /// `size_of::<Slot<K, V>>()`.
    pub(super) stride: u64,
    /// Size and alignment of `K` and of `V`, checked on open besides the
    /// type name (which a caller may replace with a tag).
    pub(super) key_size: u32,
    pub(super) key_align: u32,
    pub(super) value_size: u32,
    pub(super) value_align: u32,
    pub(super) _pad: [u64; 2],
}

/// Where things are in the data area.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub(super) capacity: u64,
    pub(super) stripes: u64,
    pub(super) per_stripe: u64,
    pub(super) slots_at: u64,
    pub(super) undo_at: u64,
    pub(super) bytes: u64,
}

impl Geometry {
    pub(super) fn for_capacity<K, V>(capacity: u64) -> Option<Geometry> {
        let slots = capacity
            .checked_mul(2)?
            .max(16)
            .checked_next_power_of_two()?;
        let stripes = (slots / 16).clamp(1, 64);
        Self::layout::<K, V>(capacity, stripes, slots / stripes)
    }

    pub(super) fn layout<K, V>(capacity: u64, stripes: u64, per_stripe: u64) -> Option<Geometry> {
        let stride = size_of::<Slot<K, V>>() as u64;
        let slots_at = stripes
            .checked_mul(size_of::<Stripe>() as u64)?
            .checked_next_multiple_of(64)?;
        let undo_at = slots_at
            .checked_add(stripes.checked_mul(per_stripe)?.checked_mul(stride)?)?
            .checked_next_multiple_of(64)?;
        let bytes = undo_at.checked_add(stripes.checked_mul(stride)?)?;
        Some(Geometry {
            capacity,
            stripes,
            per_stripe,
            slots_at,
            undo_at,
            bytes,
        })
    }
}

pub(super) fn spec<K, V>(opts: &RegionOptions) -> Spec {
    let tag = std::any::type_name::<SharedMap<K, V>>();
    Spec {
        kind: Kind::Map,
        flags: 0,
        ty: TypeInfo::tagged::<u8>(opts.tag.as_deref().unwrap_or(tag)),
        control_size: size_of::<MapControl>() as u64,
        control_align: align_of::<MapControl>() as u64,
        data_align: crate::region::MIN_ALIGN,
    }
}

/// The key's hash: murmur3's finaliser over 8-byte words of its bytes. The
/// same in every process (no random seed).
pub(super) fn hash_of<K: Pod>(key: &K) -> u64 {
    let bytes = bytemuck::bytes_of(key);
    let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(31);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h ^= u64::from_le_bytes(tail);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Holds a stripe's lock; repairs a dead holder's half-done write first.
pub(super) struct StripeGuard<'a> {
    pub(super) stripe: &'a Stripe,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard's thread took the lock in `lock_stripe`.
        unsafe { self.stripe.lock.unlock() };
    }
}

impl<K: Pod, V: Pod> SharedMap<K, V> {
    pub(super) fn stripe(&self, s: usize) -> &Stripe {
        debug_assert!((s as u64) < self.inner.geo.stripes);
        // SAFETY: `s < stripes` and the data area holds `stripes` Stripes
        // at offset 0 (geometry checked against the mapping on open).
        unsafe { &*self.inner.seg.data_ptr().cast::<Stripe>().add(s) }
    }

    pub(super) fn slot_ptr(&self, s: usize, i: usize) -> *mut Slot<K, V> {
        let g = &self.inner.geo;
        debug_assert!((i as u64) < g.per_stripe);
        // SAFETY: s < stripes and i < per_stripe: inside the slot area
        // (checked against the mapping on open).
        unsafe {
            self.inner
                .seg
                .data_ptr()
                .add(g.slots_at as usize)
                .cast::<Slot<K, V>>()
                .add(s * g.per_stripe as usize + i)
        }
    }

    pub(super) fn undo_ptr(&self, s: usize) -> *mut Slot<K, V> {
        // SAFETY: s < stripes: inside the undo area (checked on open).
        unsafe {
            self.inner
                .seg
                .data_ptr()
                .add(self.inner.geo.undo_at as usize)
                .cast::<Slot<K, V>>()
                .add(s)
        }
    }

    pub(super) fn read_slot(&self, s: usize, i: usize) -> Slot<K, V> {
        // SAFETY: in bounds (slot_ptr); any bits are a valid Slot (Pod
        // fields, u32 state); a racing writer may tear the copy, which the
        // caller detects through the stripe's sequence number or prevents
        // by holding the lock.
        unsafe { std::ptr::read_volatile(self.slot_ptr(s, i)) }
    }

    /// Where `key` lives: its stripe and home slot.
    pub(super) fn place(&self, key: &K) -> (usize, usize, u32) {
        let h = hash_of(key);
        let g = &self.inner.geo;
        let s = (h & (g.stripes - 1)) as usize;
        let home = ((h >> 32) & (g.per_stripe - 1)) as usize;
        // The tag comes from other bits than the home slot's, so that
        // neighbours in a probe run differ in it.
        (s, home, (h >> 8) as u32)
    }

    /// Probes stripe `s` for `key`: `Ok(slot)` if present, else
    /// `Err(Some(free slot))` / `Err(None)` if the stripe is full.
    pub(super) fn find(
        &self,
        s: usize,
        home: usize,
        tag: u32,
        key: &K,
    ) -> std::result::Result<usize, Option<usize>> {
        let n = self.inner.geo.per_stripe as usize;
        let mut free = None;
        for j in 0..n {
            let i = (home + j) & (n - 1);
            let slot = self.read_slot(s, i);
            match slot.state {
                EMPTY => return Err(free.or(Some(i))),
                FULL if slot.hash == tag
                    && bytemuck::bytes_of(&slot.key) == bytemuck::bytes_of(key) =>
                {
                    return Ok(i);
                }
                FULL => {}
                _ => {
                    free.get_or_insert(i);
                }
            }
        }
        Err(free)
    }

    /// Runs `read` until it saw the stripe unchanged (no lock); after
    /// [`READ_ATTEMPTS`], under the lock (which repairs a dead writer).
    pub(super) fn read_stable<T>(&self, s: usize, read: impl Fn() -> T) -> T {
        let st = self.stripe(s);
        for _ in 0..READ_ATTEMPTS {
            let before = st.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let r = read();
                // SYNC(seq): the slot copies above happen before the
                // re-read; pairs with the writer's odd/even increments.
                fence(Ordering::Acquire);
                if st.seq.load(Ordering::Relaxed) == before {
                    return r;
                }
            }
            std::hint::spin_loop();
        }
        let _g = self.lock_stripe(s);
        read()
    }

    pub(super) fn lock_stripe(&self, s: usize) -> StripeGuard<'_> {
        let st = self.stripe(s);
        if let Acquired::Poisoned = st.lock.lock() {
            self.repair(s);
            // SAFETY: we hold the lock.
            unsafe { st.lock.clear_poison() };
        }
        StripeGuard { stripe: st }
    }

    /// Under the lock, after its holder died: puts back the slot it was
    /// changing, or finishes its clear; ends its odd sequence.
    pub(super) fn repair(&self, s: usize) {
        let st = self.stripe(s);
        self.begin_write(st);
        match st.undo.load(Ordering::Acquire) {
            UNDO_SLOT => {
                let i = st.undo_slot.load(Ordering::SeqCst);
                if i < self.inner.geo.per_stripe {
                    // SAFETY: both in bounds; Pod copies; we hold the lock.
                    unsafe {
                        let old = std::ptr::read_volatile(self.undo_ptr(s));
                        std::ptr::write_volatile(self.slot_ptr(s, i as usize), old);
                    }
                    st.len
                        .store(st.undo_len.load(Ordering::SeqCst), Ordering::SeqCst);
                }
            }
            UNDO_CLEAR => self.clear_stripe(s),
            UNDO_SHIFT => {
                let hole = st.undo_slot.load(Ordering::Acquire);
                if hole < self.inner.geo.per_stripe {
                    self.shift_from(s, hole as usize);
                }
                st.len
                    .store(st.undo_len.load(Ordering::Acquire), Ordering::Relaxed);
            }
            _ => {}
        }
        let odd = st.seq.load(Ordering::Relaxed) | 1;
        self.end_write(st, odd);
    }

    /// Under the lock: starts a change of the stripe (readers retry until
    /// [`end_write`](Self::end_write)). The returned odd sequence number
    /// goes to `end_write`.
    pub(super) fn begin_write(&self, st: &Stripe) -> u64 {
        // We hold the lock: the only writer of `seq` and the undo record.
        // `| 1` keeps the protocol right even if a peer left `seq` odd.
        let odd = st.seq.load(Ordering::Relaxed) | 1;
        st.seq.store(odd, Ordering::Relaxed);
        // SYNC(seq): the odd number is visible before any write below;
        // pairs with the reader's fence before its second load.
        fence(Ordering::Release);
        odd
    }

    /// Arms the undo record (`UNDO_SLOT` after its contents are written, or
    /// `UNDO_CLEAR`): from here a death is repaired by the next locker.
    pub(super) fn arm(&self, st: &Stripe, kind: u64) {
        // The release store keeps the record's contents before the flag; the
        // fence keeps the flag before the changes that follow (a compiler
        // may otherwise move either across: the dead writer's program order
        // is what the repairer sees).
        st.undo.store(kind, Ordering::Release);
        fence(Ordering::Release);
    }

    /// Ends a change: the undo record is disarmed (the change counts),
    /// then readers may read again.
    pub(super) fn end_write(&self, st: &Stripe, odd: u64) {
        st.undo.store(UNDO_NONE, Ordering::Release);
        st.seq.store(odd.wrapping_add(1), Ordering::Release);
    }

    /// Under the lock: replaces slot `i` of stripe `s` with `new`, and the
    /// count with `len`, so that a death at any point leaves the old slot or
    /// the new one.
    pub(super) fn write_slot(&self, s: usize, i: usize, new: Slot<K, V>, len: u64) {
        let st = self.stripe(s);
        let odd = self.begin_write(st);
        // SAFETY: in bounds; we hold the stripe's lock, so no other writer
        // touches the slot or the undo area; Pod copies.
        unsafe {
            std::ptr::write_volatile(self.undo_ptr(s), self.read_slot(s, i));
        }
        st.undo_slot.store(i as u64, Ordering::Relaxed);
        st.undo_len
            .store(st.len.load(Ordering::Relaxed), Ordering::Relaxed);
        self.arm(st, UNDO_SLOT);
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(self.slot_ptr(s, i), new) };
        st.len.store(len, Ordering::Relaxed);
        self.end_write(st, odd);
    }

    pub(super) fn clear_stripe(&self, s: usize) {
        let empty: Slot<K, V> = Slot {
            state: EMPTY,
            hash: 0,
            key: K::zeroed(),
            value: V::zeroed(),
        };
        for i in 0..self.inner.geo.per_stripe as usize {
            // SAFETY: in bounds; the caller holds the lock.
            unsafe { std::ptr::write_volatile(self.slot_ptr(s, i), empty) };
        }
        self.stripe(s).len.store(0, Ordering::SeqCst);
    }

    /// Under the lock: removes the entry in slot `i` by backward-shift
    /// deletion (no tombstones: later entries of the probe run move back
    /// into the hole), leaving `len` entries. Rolled forward by
    /// [`repair`](Self::repair) if the writer dies midway.
    pub(super) fn delete_at(&self, s: usize, i: usize, len: u64) {
        let st = self.stripe(s);
        let odd = self.begin_write(st);
        st.undo_slot.store(i as u64, Ordering::Relaxed);
        st.undo_len.store(len, Ordering::Relaxed);
        self.arm(st, UNDO_SHIFT);
        self.shift_from(s, i);
        st.len.store(len, Ordering::Relaxed);
        self.end_write(st, odd);
    }

    /// Fills the hole at `hole` with the next entry of its probe run that
    /// may move there, then fills the hole that leaves, until an empty slot
    /// ends the run. Idempotent from any point: the current hole is kept in
    /// `undo_slot` (stored after the slot that fills it), so a rerun after a
    /// death makes the same moves.
    pub(super) fn shift_from(&self, s: usize, mut hole: usize) {
        let st = self.stripe(s);
        let n = self.inner.geo.per_stripe as usize;
        let mut j = hole;
        for _ in 1..n {
            j = (j + 1) & (n - 1);
            let slot = self.read_slot(s, j);
            if slot.state == EMPTY {
                break;
            }
            let home = self.place(&slot.key).1;
            // May the entry at j move back to `hole`? Only if its home is
            // not cyclically within (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if slot.state != FULL || stays {
                continue;
            }
            // SAFETY: in bounds; we hold the stripe's lock; Pod copy.
            unsafe { std::ptr::write_volatile(self.slot_ptr(s, hole), slot) };
            st.undo_slot.store(j as u64, Ordering::Release);
            fence(Ordering::Release);
            hole = j;
        }
        let mut empty = self.read_slot(s, hole);
        empty.state = EMPTY;
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(self.slot_ptr(s, hole), empty) };
    }

    pub(super) fn update_locked(
        &self,
        key: &K,
        f: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<Option<V>> {
        let (s, home, tag) = self.place(key);
        let _g = self.lock_stripe(s);
        let st = self.stripe(s);
        let len = st.len.load(Ordering::SeqCst);
        match self.find(s, home, tag, key) {
            Ok(i) => {
                let mut slot = self.read_slot(s, i);
                match f(Some(slot.value)) {
                    Some(v) => {
                        slot.value = v;
                        self.write_slot(s, i, slot, len);
                        Ok(Some(v))
                    }
                    None => {
                        self.delete_at(s, i, len.saturating_sub(1));
                        Ok(None)
                    }
                }
            }
            Err(free) => {
                let Some(v) = f(None) else { return Ok(None) };
                let Some(i) = free else {
                    return Err(Error::Region(RegionError::MapFull {
                        name: self.inner.seg.id(),
                        capacity: self.capacity(),
                    }));
                };
                let slot = Slot {
                    state: FULL,
                    hash: tag,
                    key: *key,
                    value: v,
                };
                self.write_slot(s, i, slot, len.saturating_add(1));
                Ok(Some(v))
            }
        }
    }
}

/// A map's figures read from outside (the CLI), with `read(offset, buf)`
/// reading its file: (capacity, entries, stripes). Counts are snapshots,
/// capped as `len` caps them; `None` if unreadable or impossible.
pub(crate) fn figures_from(
    read: impl Fn(u64, &mut [u8]) -> bool,
    control: u64,
    data: u64,
) -> Option<(u64, u64, u64)> {
    let word = |at: u64| {
        let mut b = [0u8; 8];
        read(at, &mut b).then(|| u64::from_ne_bytes(b))
    };
    let capacity = word(control + std::mem::offset_of!(MapControl, capacity) as u64)?;
    let stripes = word(control + std::mem::offset_of!(MapControl, stripes) as u64)?;
    if stripes == 0 || stripes > 64 {
        return None;
    }
    let mut len = 0u64;
    for s in 0..stripes {
        let at = data + s * std::mem::size_of::<Stripe>() as u64;
        len = len.saturating_add(word(at + std::mem::offset_of!(Stripe, len) as u64)?);
    }
    Some((capacity, len.min(capacity.saturating_mul(2)), stripes))
}

//! The `#[repr(C)]` control block of a queue region, and its participant
//! table. Byte layout (offsets in DESIGN.md, checked by `layout` below):
//!
//! ```text
//! 0     head (send cursor)           own 128-byte line pair
//! 128   tail (receive cursor)        own 128-byte line pair
//! 256   wait words                   futex words and sleeper counts
//! 384   state                        counts, flags, statistics, geometry
//! 512   recovery lock                OwnerLock (64 B)
//! ...   orphans[64]                  positions held by dead receivers, +1
//! ...   participants[64]             pid, start time, role, intent, run end
//! ```
//!
//! Slots follow in the region's data area: `capacity` slots of `stride`
//! bytes, each a [`SlotHeader`](super::ring::SlotHeader) then the message.

use super::atomic::AtomicU64 as RingU64;
use crate::sync::owner_lock::OwnerLock;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// Participants (sender and receiver handles, one per handle) a queue can
/// have at once.
pub(crate) const MAX_PARTICIPANTS: usize = 64;

/// A participant's role.
pub(crate) const ROLE_SENDER: u32 = 1;
pub(crate) const ROLE_RECEIVER: u32 = 2;

/// Flags (the `flags` field and the header's flags).
pub(crate) const FLAG_JOINABLE: u64 = 1;
/// Messages are variable-size bytes rather than one `T: Pod`.
pub(crate) const FLAG_BYTES: u64 = 2;

/// Keeps `T` on its own pair of cache lines (the adjacent-line prefetcher
/// pulls lines in pairs), with a layout that is a cross-binary contract.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub T);

/// Futex words and the sleeper counts that let wakers skip the syscall.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Waits {
    /// Bumped when a message is committed and receivers sleep.
    pub items: AtomicU32,
    pub recv_waiters: AtomicU32,
    /// Bumped when a slot is released and senders sleep.
    pub space: AtomicU32,
    pub send_waiters: AtomicU32,
    /// Bumped when `unfinished` reaches zero (joinable queues).
    pub done: AtomicU32,
    pub join_waiters: AtomicU32,
}

/// Counts, flags and statistics.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Registered live sender / receiver handles.
    pub senders: AtomicU32,
    pub receivers: AtomicU32,
    /// Non-zero once `close()` was called.
    pub closed: AtomicU32,
    /// Entries in `orphans`.
    pub orphan_count: AtomicU32,
    /// Messages sent and not yet marked done (joinable queues).
    pub unfinished: AtomicU64,
    /// Claims of dead senders committed as skips.
    pub skipped: AtomicU64,
    /// Messages of dead receivers delivered again.
    pub redelivered: AtomicU64,
    /// Dead participants removed.
    pub reaped: AtomicU64,
    /// Geometry, fixed at creation (checked on open).
    pub capacity: u64,
    pub stride: u64,
    pub max_len: u64,
    pub flags: u64,
    /// Roles that have ever registered (bit `1 << role`): a queue that never
    /// had a sender is empty, not disconnected.
    pub ever: AtomicU32,
    /// Impossible words (cursors, slot stamps) repaired by recovery.
    pub repaired: AtomicU64,
    /// Messages the queue holds at most, as its creator asked (1..=capacity;
    /// `capacity` is the slot count, the next power of two, at least 2).
    pub limit: u64,
}

/// One sender or receiver handle.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub(crate) struct Participant {
    /// 0 when the entry is free.
    pub pid: AtomicU32,
    pub role: AtomicU32,
    /// The process's start time (so a reused pid is not mistaken for it).
    pub start: AtomicU64,
    /// The ring position this participant may hold, + 1; 0 for none.
    pub intent: RingU64,
    /// Non-zero while the handle travels to another process, which adopts
    /// the entry by presenting this token.
    pub token: AtomicU64,
    /// The end of the run of positions claimed at `intent - 1` (a batch);
    /// at or before `intent` for a single claim (`ring::covers`).
    pub run_end: RingU64,
}

/// The control block.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct QueueControl {
    pub head: Padded<RingU64>,
    pub tail: Padded<RingU64>,
    pub waits: Padded<Waits>,
    pub state: Padded<State>,
    /// Serialises recovery and the taking of orphans (rare paths only).
    pub recovery: OwnerLock,
    pub orphans: [AtomicU64; MAX_PARTICIPANTS],
    pub participants: [Participant; MAX_PARTICIPANTS],
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn layout() {
        assert_eq!(offset_of!(QueueControl, head), 0);
        assert_eq!(offset_of!(QueueControl, tail), 128);
        assert_eq!(offset_of!(QueueControl, waits), 256);
        assert_eq!(offset_of!(QueueControl, state), 384);
        assert_eq!(offset_of!(QueueControl, recovery), 512);
        assert_eq!(offset_of!(QueueControl, recovery) % 64, 0);
        assert_eq!(size_of::<Participant>(), 64);
        assert_eq!(size_of::<Waits>(), 24);
        assert_eq!(offset_of!(State, unfinished), 16);
        assert_eq!(offset_of!(State, capacity), 48);
        assert_eq!(offset_of!(State, flags), 72);
        assert_eq!(offset_of!(State, ever), 80);
        assert_eq!(offset_of!(State, repaired), 88);
        assert_eq!(offset_of!(State, limit), 96);
        assert!(size_of::<State>() <= 128);
        assert_eq!(offset_of!(Participant, intent), 16);
        assert_eq!(offset_of!(Participant, token), 24);
        assert_eq!(offset_of!(Participant, run_end), 32);
        assert_eq!(align_of::<QueueControl>(), 128);
        let orphans = offset_of!(QueueControl, orphans);
        assert_eq!(orphans, 512 + size_of::<OwnerLock>());
        assert_eq!(
            offset_of!(QueueControl, participants),
            (orphans + 8 * MAX_PARTICIPANTS).next_multiple_of(64)
        );
    }

    #[test]
    fn design_md_queue_table_matches_the_code() {
        let rows = crate::region::header_tests::design_rows("## Queue (src/queue)");
        let fields = [
            ("head", offset_of!(QueueControl, head)),
            ("tail", offset_of!(QueueControl, tail)),
            ("waits:", offset_of!(QueueControl, waits)),
            ("state:", offset_of!(QueueControl, state)),
            ("recovery", offset_of!(QueueControl, recovery)),
            ("orphans[64]", offset_of!(QueueControl, orphans)),
            ("participants[64]", offset_of!(QueueControl, participants)),
        ];
        assert_eq!(rows.len(), fields.len(), "one row per QueueControl field");
        for ((offset, field, _), (name, at)) in rows.iter().zip(fields) {
            assert_eq!(field.split_whitespace().next(), Some(name));
            assert_eq!(offset.parse::<usize>().unwrap(), at, "offset of {name}");
        }
        assert_eq!(MAX_PARTICIPANTS, 64);
    }
}

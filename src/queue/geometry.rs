//! A queue's geometry: how many slots, how large, and the private copy of
//! what `RawQueue::checked` validated at open.

use super::control::FLAG_PACKED;
use super::ring::SlotHeader;

/// The validated geometry of an open queue.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Slots {
    pub(crate) capacity: u64,
    pub(crate) limit: u64,
    pub(crate) stride: u64,
    pub(crate) max_len: u64,
    pub(crate) flags: u64,
}

/// Geometry of a new queue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub capacity: u64,
    pub max_len: u64,
    pub flags: u64,
}

impl Geometry {
    /// Whether the slots are packed (`control::FLAG_PACKED`).
    pub(crate) fn packed(&self) -> bool {
        self.flags & FLAG_PACKED != 0
    }

    /// Bytes before the message in a slot: the [`SlotHeader`] (16), or the
    /// stamp alone (8) in a packed queue.
    pub(crate) fn header(&self) -> u64 {
        header(self.flags)
    }

    /// Bytes per slot: a slot of up to 64 bytes is a power of two (8 to
    /// 64), so several small slots share a cache line and none straddles
    /// two lines; a larger slot is a whole number of lines. Every stride is
    /// a multiple of the header, so message bytes stay 16-aligned (8 in a
    /// packed queue, whose items are aligned to at most 8).
    pub(crate) fn stride(&self) -> u64 {
        let need = self.header() + self.max_len;
        if need <= 64 {
            need.next_power_of_two()
        } else {
            need.next_multiple_of(64)
        }
    }

    /// Bytes of the data area: the slots, and a packed queue's lengths.
    pub(crate) fn area(&self) -> Option<u64> {
        let slots = self.capacity.checked_mul(self.stride())?;
        if self.packed() {
            slots.checked_add(self.capacity.checked_mul(8)?)
        } else {
            Some(slots)
        }
    }
}

/// Bytes before the message in a slot of a queue with `flags`.
pub(crate) fn header(flags: u64) -> u64 {
    if flags & FLAG_PACKED != 0 {
        size_of::<u64>() as u64
    } else {
        size_of::<SlotHeader>() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::{FLAG_PACKED, Geometry};

    #[test]
    fn small_slots_share_a_cache_line_and_none_straddles_two() {
        let stride = |max_len| {
            Geometry {
                capacity: 2,
                max_len,
                flags: 0,
            }
            .stride()
        };
        // (max message, stride): 16 bytes of header, then the message.
        for (len, want) in [
            (0, 16),
            (1, 32),
            (8, 32),
            (16, 32),
            (17, 64),
            (48, 64),
            (49, 128),
        ] {
            assert_eq!(stride(len), want, "max message {len}");
        }
        assert_eq!(stride(1024), 1088);
        assert_eq!(stride(65536), 65600);
    }

    #[test]
    fn packed_slots_are_the_stamp_then_the_item() {
        let g = |capacity, max_len| Geometry {
            capacity,
            max_len,
            flags: FLAG_PACKED,
        };
        // (item size, stride): 8 bytes of stamp, then the item; four u64s
        // to a cache line.
        for (len, want) in [
            (0, 8),
            (1, 16),
            (8, 16),
            (9, 32),
            (24, 32),
            (56, 64),
            (57, 128),
        ] {
            assert_eq!(g(2, len).stride(), want, "item {len}");
        }
        // The side array of lengths: 8 bytes a slot after the slots.
        assert_eq!(g(4, 8).area(), Some(4 * 16 + 4 * 8));
        assert_eq!(g(u64::MAX / 16, 8).area(), None);
        let unpacked = Geometry {
            flags: 0,
            ..g(4, 8)
        };
        assert_eq!(unpacked.area(), Some(4 * 32));
    }
}

//! A queue's geometry: how many slots, how large, and the private copy of
//! what `RawQueue::checked` validated at open.

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
    /// Bytes per slot: a slot of up to 64 bytes is a power of two (16, 32 or
    /// 64), so two or four small slots share a cache line and none straddles
    /// two lines; a larger slot is a whole number of lines. Every stride is a
    /// multiple of 16, so message bytes (at offset 16) stay 16-aligned.
    pub(crate) fn stride(&self) -> u64 {
        let need = size_of::<SlotHeader>() as u64 + self.max_len;
        if need <= 64 {
            need.next_power_of_two()
        } else {
            need.next_multiple_of(64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Geometry;

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
}

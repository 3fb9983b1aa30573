//! Large-buffer handoff, 4 KiB to 1 GiB (benches/handoff.rs).

use crate::model::{Role::*, Table, row};

/// One buffer `size`; `k` is the leading digit of its bench ids.
pub fn handoff(k: usize, size: &str) -> Table {
    Table {
        title: format!("Large-buffer handoff, {size}"),
        what: "Per handoff the producer writes one byte of every 4 KiB page (fresh data) and hands \
               the buffer over; the consumer reads one byte of every page. Zero-copy rows hand \
               over a buffer both processes have mapped; producers may run a few handoffs ahead.",
        rows: vec![
            row(
                format!("handoff/{k}6-{size}-bare-futex-notify-touch (limit)"),
                "bare futex notification + reading one byte per page in place",
                Limit,
            ),
            row(
                format!("handoff/{k}0-{size}-touch-pages"),
                "reading one byte per page of the shared array in one process (no handoff)",
                Context,
            ),
            row(
                format!("handoff/{k}1-{size}-memcpy-once"),
                "one memcpy (what any copy pays)",
                Context,
            ),
            row(
                format!("handoff/{k}2-{size}-shmkit-array-zero-copy"),
                "shmkit `Array<u8>` + a `Queue<u64>` notification",
                Shmkit,
            ),
            row(format!("handoff/{k}3-{size}-unix-pipe"), "Unix pipe", Rust),
            row(
                format!("handoff/{k}4-{size}-unix-socket"),
                "Unix stream socket",
                Rust,
            ),
            row(
                format!("handoff/{k}7-{size}-shared-mmap-unix-pipe-notify"),
                "do-it-yourself: a shared mapping + an 8-byte Unix pipe write",
                Rust,
            ),
            row(
                format!("handoff/{k}5-{size}-ipc-channel-shared-memory"),
                "ipc-channel `IpcSharedMemory::from_bytes` per handoff (immutable once made, so fresh data is copied into a new one)",
                Rust,
            ),
            row(
                format!("python/handoff/{size}-shared-memory-zero-copy"),
                "Python `shared_memory` + `mp.Pipe` notification",
                Python,
            ),
            row(
                format!("python/handoff/{size}-mp-pipe-send-bytes"),
                "Python `Connection.send_bytes`",
                Python,
            ),
        ],
        why_loses: WHY_HANDOFF,
    }
}

const WHY_HANDOFF: &str = "A zero-copy handoff costs the notification plus the page writes and \
    reads, which every zero-copy row pays alike. For small buffers the notification dominates: \
    shmkit's is a queue message (a slot claim, the recovery intent word, a shared-futex wake when \
    the consumer sleeps), heavier than the bare counter of the limit row.";

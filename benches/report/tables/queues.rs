//! Queue throughput, 1 → 1 and 2 → 2, of u64 words and of 1 KiB and
//! 64 KiB byte messages (benches/queue.rs).

use crate::model::{Role::*, Row, Table, row};

/// One producer process, one consumer process; `prefix` is the leading
/// digit of the bench ids for `size`, `label` how the title says it (e.g.
/// `"3"`, `"1KiB"`, `"1 KiB"`).
pub fn spsc(prefix: &str, size: &str, label: &str) -> Table {
    let (rows, why_loses) = if size == "u64" {
        (spsc_word_rows(), WHY_QUEUE_WORDS)
    } else {
        (spsc_bytes_rows(prefix, size), WHY_QUEUE_BYTES)
    };
    Table {
        title: format!("Queue throughput, {label} messages, 1 producer → 1 consumer"),
        what: "Messages per second from one process to another (threads for crossbeam, which \
               sends a freshly allocated `Vec` per sized message, as users do). shmkit's consumer \
               reads each message in place, one byte per cache line; pipe and socket consumers \
               copy it out.",
        rows,
        why_loses,
    }
}

fn spsc_word_rows() -> Vec<Row> {
    vec![
        row(
            "queue/19-u64-spsc-bare-shared-ring (limit)",
            "bare SPSC ring in shared memory, spinning",
            Limit,
        ),
        row(
            "queue/11-u64-spsc-shmkit-queue",
            "shmkit `Queue<u64>`",
            Shmkit,
        ),
        row(
            "queue/10-u64-spsc-crossbeam-threads",
            "crossbeam-channel, 2 threads",
            Rust,
        ),
        row(
            "queue/12-u64-spsc-unix-pipe-8B-writes",
            "Unix pipe, one write per message",
            Rust,
        ),
        row(
            "queue/13-u64-spsc-unix-socket-8B-writes",
            "Unix stream socket",
            Rust,
        ),
        row("queue/14-u64-spsc-ipc-channel", "ipc-channel", Rust),
        row(
            "queue/15-u64-spsc-iceoryx2",
            "iceoryx2 publish-subscribe (polling)",
            Rust,
        ),
        row(
            "python/queue/u64-spsc-mp-queue",
            "Python `mp.Queue`",
            Python,
        ),
    ]
}

fn spsc_bytes_rows(prefix: &str, size: &str) -> Vec<Row> {
    vec![
        row(
            format!("queue/{prefix}9-{size}-memcpy (limit)"),
            "one memcpy of the message",
            Limit,
        ),
        row(
            format!("queue/{prefix}1-{size}-shmkit-queue"),
            "shmkit `Queue<Bytes>`",
            Shmkit,
        ),
        row(
            format!("queue/{prefix}0-{size}-crossbeam-threads"),
            "crossbeam-channel, 2 threads (moves a Vec)",
            Rust,
        ),
        row(
            format!("queue/{prefix}2-{size}-unix-pipe"),
            "Unix pipe",
            Rust,
        ),
        row(
            format!("queue/{prefix}3-{size}-unix-socket"),
            "Unix stream socket",
            Rust,
        ),
        row(
            format!("queue/{prefix}4-{size}-ipc-channel"),
            "ipc-channel",
            Rust,
        ),
        row(
            format!("queue/{prefix}i-{size}-iceoryx2"),
            "iceoryx2 publish-subscribe (polling; one copy into the loan)",
            Rust,
        ),
        row(
            format!("python/queue/{size}-spsc-mp-queue"),
            "Python `mp.Queue`",
            Python,
        ),
    ]
}

/// Two producer and two consumer processes, ids as for [`spsc`].
pub fn mpmc(prefix: &str, size: &str, label: &str) -> Table {
    let rows = if size == "u64" {
        mpmc_word_rows()
    } else {
        mpmc_bytes_rows(prefix, size)
    };
    Table {
        title: format!("Queue throughput, {label} messages, 2 producers → 2 consumers"),
        what: "Two producers and two consumers on one queue, on this 2-CPU machine (4 parties \
               share 2 CPUs). Pipes, sockets and ipc-channel are not multi-consumer queues and \
               have no row here.",
        rows,
        why_loses: "With four parties on two CPUs, each side often finds the other asleep; a \
                    cross-process wake is a shared-futex syscall, and crossbeam's threads park and \
                    wake inside one process more cheaply.",
    }
}

fn mpmc_word_rows() -> Vec<Row> {
    vec![
        row(
            "queue/19-u64-spsc-bare-shared-ring (limit)",
            "bare SPSC ring (the SPSC limit)",
            Limit,
        ),
        row(
            "queue/21-u64-mpmc-2x2-shmkit-queue",
            "shmkit `Queue<u64>`, 2+2 processes",
            Shmkit,
        ),
        row(
            "queue/20-u64-mpmc-2x2-crossbeam-threads",
            "crossbeam-channel, 2+2 threads",
            Rust,
        ),
        row(
            "python/queue/u64-mpmc-2x2-mp-queue",
            "Python `mp.Queue`, 2+2 processes",
            Python,
        ),
    ]
}

fn mpmc_bytes_rows(prefix: &str, size: &str) -> Vec<Row> {
    vec![
        row(
            format!("queue/{prefix}9-{size}-memcpy (limit)"),
            "one memcpy of the message",
            Limit,
        ),
        row(
            format!("queue/{prefix}6-{size}-mpmc-2x2-shmkit-queue"),
            "shmkit `Queue<Bytes>`, 2+2 processes",
            Shmkit,
        ),
        row(
            format!("queue/{prefix}5-{size}-mpmc-2x2-crossbeam-threads"),
            "crossbeam-channel, 2+2 threads",
            Rust,
        ),
        row(
            format!("python/queue/{size}-mpmc-2x2-mp-queue"),
            "Python `mp.Queue`, 2+2 processes",
            Python,
        ),
    ]
}

/// A queue of two 64 KiB slots: each message waits for the peer's copy.
pub fn short_ring() -> Table {
    Table {
        title: "Queue throughput, 64 KiB messages through 2 slots, 1 producer → 1 consumer".into(),
        what: "A queue of capacity 2: the producer usually finds it full and the consumer empty, \
               so every message waits for the other side's 64 KiB copy. The limit is a bare ring \
               of two page-aligned 64 KiB slots in shared memory, both sides spinning.",
        rows: vec![
            row(
                "queue-short-ring/0-64KiB-2-slot-bare-ring (limit)",
                "bare 2-slot ring in shared memory, spinning",
                Limit,
            ),
            row(
                "queue-short-ring/1-64KiB-2-slot-shmkit-queue",
                "shmkit `Queue<Bytes>`, capacity 2",
                Shmkit,
            ),
        ],
        why_loses: "When a wait outlasts the fixed spin (127 `PAUSE`s), shmkit sleeps on a futex, and \
                    a wake-up across CPUs costs more than the copy it waited for.",
    }
}

/// u64 words in runs of 64: the batch API against a bare ring batched.
pub fn runs() -> Table {
    Table {
        title: "Queue throughput, u64 messages in runs of 64, 1 producer → 1 consumer".into(),
        what: "One producer process sends 64 words per call with `send_many`; this process                takes up to 64 per call with `recv_many`. The limit is a bare ring that moves each                cursor once per run of 64; one word per message, as in the unbatched table.",
        rows: vec![
            row(
                "queue/18-u64-spsc-bare-shared-ring-runs-of-64 (limit)",
                "bare SPSC ring, cursors moved once per run",
                Limit,
            ),
            row(
                "queue/16-u64-spsc-shmkit-queue-runs-of-64",
                "shmkit `Queue<u64>`, `send_many` / `recv_many`",
                Shmkit,
            ),
            row(
                "queue/11-u64-spsc-shmkit-queue",
                "shmkit `Queue<u64>`, one `send` / `recv` per message",
                Context,
            ),
        ],
        why_loses: "A run is claimed with one CAS and wakes its peer once, but each message still \
                    has its own 16-byte slot header (stamp and length; a u64 slot is 32 bytes, two \
                    per cache line against the bare ring's eight), and each slot's stamp is loaded \
                    and stored on both sides as the receiver follows right behind the sender, so \
                    the lines cross between the CPUs per message, not per eight. Packing a u64 \
                    into 16 bytes (stamp, item; lengths in a side array) was measured slower on \
                    this guest (10-11 ns against 8-9 ns a message) and reverted.",
    }
}

/// 4 MiB messages, shmkit's queue beside iceoryx2.
pub fn huge() -> Table {
    Table {
        title: "Queue throughput, 4 MiB messages, 1 producer → 1 consumer".into(),
        what: "One producer process copies each 4 MiB message once into shared memory (shmkit's \
               slot, iceoryx2's loaned sample); this process reads it in place, one byte per cache \
               line. The limit is one memcpy of the message (no read after it). The verdict \
               compares like with like, 4 messages held on both sides; capacity 2 (shmkit's \
               recipe for large messages) and iceoryx2's buffer of 2 are shown beside them.",
        rows: vec![
            row(
                "queue/69-4MiB-memcpy (limit)",
                "one memcpy of the message",
                Limit,
            ),
            row(
                "queue/61-4MiB-shmkit-queue",
                "shmkit `Queue<Bytes>`, capacity 4",
                Shmkit,
            ),
            row(
                "queue/6i-4MiB-iceoryx2",
                "iceoryx2 publish-subscribe (polling), buffer 4",
                Rust,
            ),
            row(
                "queue/62-4MiB-shmkit-queue-2-slots",
                "shmkit `Queue<Bytes>`, capacity 2 (the recipe for large messages)",
                Context,
            ),
            row(
                "queue/6j-4MiB-iceoryx2-buffer-2",
                "iceoryx2 publish-subscribe (polling), buffer 2",
                Context,
            ),
        ],
        why_loses: "Both transports copy the message once and read it once; the reader's pass over \
                    4 MiB (cache lines that the writer's CPU holds) is what the memcpy row leaves \
                    out. shmkit's ring writes its slots in turn, so its working set grows with the \
                    capacity: 4 slots of 4 MiB cycle 16 MiB through a 32 MiB L3 that the guest \
                    shares (measured side by side: 187-269 us a message with 2 slots, 391-832 us \
                    with 4, 928-1,021 us with 8). For messages of megabytes, give the queue a \
                    capacity of 2.",
    }
}

/// 1 KiB messages received as copies, awaited against blocking.
pub fn async_1kib() -> Table {
    Table {
        title: "Queue throughput, 1 KiB messages received by an awaiting task (async)".into(),
        what: "One producer process; this process receives each message as a `Vec<u8>` with \
               `recv_vec_async` on tokio (feature `async`), against blocking `recv_vec` (the \
               baseline) and tokio's own channel between two tasks of one process (a fresh `Vec` \
               per message).",
        rows: vec![
            row(
                "queue/37-1KiB-shmkit-queue-recv-vec-blocking",
                "shmkit `Queue<Bytes>`, blocking `recv_vec` (the baseline)",
                Limit,
            ),
            row(
                "queue/38-1KiB-shmkit-queue-recv-vec-async",
                "shmkit `Queue<Bytes>`, `recv_vec_async` on tokio (current-thread)",
                Shmkit,
            ),
            row(
                "queue/3a-1KiB-tokio-mpsc-tasks",
                "tokio `mpsc` between two tasks (one process, 2 threads)",
                Rust,
            ),
        ],
        why_loses: "tokio's channel moves a pointer within one address space; across processes each \
                    message is copied into and out of shared memory.",
    }
}

const WHY_QUEUE_WORDS: &str = "crossbeam between threads moves a word inside one address space; a \
    cross-process queue also claims a slot, stamps a length, keeps the crash-recovery intent word and \
    wakes a sleeping peer through a shared futex. With messages of a few bytes that bookkeeping is the \
    whole cost.";

const WHY_QUEUE_BYTES: &str = "crossbeam moves a `Vec` (a pointer) between threads of one address \
    space; between processes the bytes must be in shared memory, and `send_bytes` copies each message \
    into its slot (the memcpy row is that copy's cost; writing the message in place with \
    `reserve_bytes` avoids it, not measured here). iceoryx2 copies once too, but its receiver only \
    polls: no sleep path, no claim and release of a slot, no recovery intent word; and between \
    runs these cross-process rows move by 2-3x on this guest.";

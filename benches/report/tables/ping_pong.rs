//! Ping-pong: one message there and back, spinning and blocking
//! (benches/queue.rs, benches/pipe.rs).

use crate::model::{Role::*, Table, row};

pub fn spinning() -> Table {
    Table {
        title: "Ping-pong round trip, spinning".into(),
        what: "One message there and back between two processes that poll instead of sleeping.",
        rows: vec![
            row(
                "queue/50-ping-pong-bare-cache-line-spin",
                "bare cache line bounced by two spinners",
                Limit,
            ),
            row(
                "queue/51-ping-pong-shmkit-queue-spin",
                "shmkit queues, `try_recv` loop",
                Shmkit,
            ),
            row(
                "queue/56-ping-pong-crossbeam-threads-spin",
                "crossbeam-channel between 2 threads, `try_recv` loop",
                Rust,
            ),
            row(
                "python/ping-pong/mp-pipe",
                "Python `mp.Pipe` (blocking; nothing spins in Python)",
                Python,
            ),
        ],
        why_loses: "crossbeam's channels between threads of one process do less per message than a \
                    cross-process queue (no slot claims, no recovery intent word).",
    }
}

pub fn blocking() -> Table {
    Table {
        title: "Ping-pong round trip, blocking".into(),
        what: "One message there and back between two processes that block in `recv`. The bare futex \
               pair sleeps at once; shmkit (and the pipe's shmkit row) first spins briefly (up to 127 \
               `PAUSE`s, a few µs, only when more than one CPU is available) and so beats the futex \
               pair here: that row is the cost of sleeping at once, not a floor for shmkit.",
        rows: vec![
            row(
                "queue/52-ping-pong-bare-futex",
                "bare shared futex pair",
                Limit,
            ),
            row(
                "queue/53-ping-pong-shmkit-queue-blocking",
                "shmkit queues, `recv`",
                Shmkit,
            ),
            row("pipe/31-ping-pong-shmkit-pipe", "shmkit `Pipe`", Context),
            row("queue/54-ping-pong-unix-pipe", "Unix pipe", Rust),
            row("pipe/33-ping-pong-unix-socket", "Unix stream socket", Rust),
            row("queue/55-ping-pong-ipc-channel", "ipc-channel", Rust),
            row("python/ping-pong/mp-pipe", "Python `mp.Pipe`", Python),
            row("python/ping-pong/mp-queue", "Python `mp.Queue`", Python),
        ],
        why_loses: "Not analysed.",
    }
}

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
                "queue/5i-ping-pong-iceoryx2-spin",
                "iceoryx2 publish-subscribe, `receive` loop",
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

pub fn awaited() -> Table {
    Table {
        title: "Ping-pong round trip, the reply awaited (async)".into(),
        what: "One process sends a u64, another answers; this side awaits the answer on tokio \
               (`recv_async`, feature `async`), against the same round trip blocking in `recv` \
               (the baseline) and tokio's own channel between two tasks of one process.",
        rows: vec![
            row(
                "queue/53-ping-pong-shmkit-queue-blocking",
                "shmkit `Queue<u64>`, blocking `recv` (the baseline)",
                Limit,
            ),
            row(
                "queue/57-ping-pong-shmkit-queue-async",
                "shmkit `Queue<u64>`, `recv_async` on tokio (current-thread)",
                Shmkit,
            ),
            row(
                "queue/58-ping-pong-tokio-mpsc-tasks",
                "tokio `mpsc` between two tasks (one process, 2 threads)",
                Rust,
            ),
        ],
        why_loses: "tokio's channel wakes a task of the same process through its scheduler; across \
                    processes the wake-up goes through a shared futex and, when the reply outlasts \
                    the short spin, through shmkit's waiter thread.",
    }
}

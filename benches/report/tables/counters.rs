//! The shared counter, bare and through a lock (benches/value.rs).

use crate::model::{Role::*, Table, row};

pub fn counter() -> Table {
    Table {
        title: "Shared counter, 2 processes incrementing at once".into(),
        what: "One increment in each of two processes started together (threads for the \
               std rows). Throughput counts increments.",
        rows: vec![
            row(
                "value/increment-2-processes/0-raw-atomic-u64 (limit)",
                "raw AtomicU64 in a shared mapping",
                Limit,
            ),
            row(
                "value/increment-2-processes/1-shmkit-atomic-value",
                "shmkit `Value<u64>` atomic (`fetch_add`)",
                Shmkit,
            ),
            row(
                "value/increment-2-processes/4-shmkit-locked-value",
                "shmkit `Value<u64>` with its lock",
                Context,
            ),
            row(
                "value/increment-2-processes/2-raw-pthread-mutex (pshared)",
                "raw process-shared pthread mutex",
                Context,
            ),
            row(
                "value/increment-2-processes/5-std-atomic-u64-2-threads",
                "std `AtomicU64`, 2 threads",
                Rust,
            ),
            row(
                "value/increment-2-processes/6-std-mutex-u64-2-threads",
                "std `Mutex<u64>`, 2 threads",
                Rust,
            ),
            row(
                "python/counter-2-processes/mp-value-locked",
                "Python `mp.Value` with its lock",
                Python,
            ),
            row(
                "python/counter-2-processes/mp-rawvalue-unlocked",
                "Python `mp.RawValue` (no lock, loses counts)",
                Python,
            ),
        ],
        why_loses: "Both the shmkit atomic and std's atomic are one `lock xadd` on a contended cache \
                    line; the difference is noise, and forked processes and threads bounce the line \
                    the same way.",
    }
}

pub fn counter_locked() -> Table {
    Table {
        title: "Shared counter with a lock, 2 processes".into(),
        what: "The same, through a lock: shmkit's own owner-word lock (the holder's thread id and \
               start time in one word, no address; a dead holder is taken over as `OwnerDied`), \
               beside glibc's process-shared mutex, plain and robust. Like glibc's, it sleeps at \
               once when contended.",
        rows: vec![
            row(
                "value/increment-2-processes/0-raw-atomic-u64 (limit)",
                "raw AtomicU64 (no lock: the counter's limit)",
                Limit,
            ),
            row(
                "value/increment-2-processes/2-raw-pthread-mutex (pshared)",
                "raw process-shared pthread mutex (glibc, not robust)",
                Context,
            ),
            row(
                "value/increment-2-processes/3-raw-pthread-mutex (pshared, robust)",
                "raw robust pthread mutex",
                Context,
            ),
            row(
                "value/increment-2-processes/4-shmkit-locked-value",
                "shmkit `Value<u64>` locked",
                Shmkit,
            ),
            row(
                "value/increment-2-processes/6-std-mutex-u64-2-threads",
                "std `Mutex<u64>`, 2 threads",
                Rust,
            ),
            row(
                "python/counter-2-processes/mp-value-locked",
                "Python `mp.Value` with its lock",
                Python,
            ),
        ],
        why_loses: "A process-shared lock that survives its holder's death does more per lock than \
                    std's futex mutex between threads: it names its holder (thread id and start \
                    time, from a per-thread cache) and keeps a per-thread record of held locks (to \
                    tell a relock from a forged owner word), and sleeps on a shared (non-private) \
                    futex; it buys survival of a holder's death, which std's mutex cannot offer \
                    across processes.",
    }
}

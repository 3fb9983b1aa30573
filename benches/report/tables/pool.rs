//! The pool: `map` of trivial and of heavier items, and one
//! `apply_async` round trip (benches/pool.rs).

use crate::model::{Role::*, Table, row};

pub fn map_trivial() -> Table {
    Table {
        title: "Pool map, 1,000,000 trivial items".into(),
        what: "`map` of a function that does almost nothing over 1M integers, all workers (2 here).",
        rows: vec![
            row(
                "pool/13-map-1M-floor-copy-in-and-out",
                "floor: inputs into shared memory and outputs out, no process",
                Limit,
            ),
            row(
                "pool/12-map-1M-shmkit-pool",
                "shmkit `Pool::map` (processes)",
                Shmkit,
            ),
            row(
                "pool/11-map-1M-rayon-threads",
                "rayon `par_iter` (threads)",
                Rust,
            ),
            row("pool/10-map-1M-sequential", "sequential loop", Context),
            row("python/pool/map-1M-mp-pool", "Python `Pool.map`", Python),
        ],
        why_loses: "With a function that does nothing, a process pool only moves data: every item is \
                    encoded, written to shared memory, decoded, and its result goes back the same way, \
                    while rayon touches each item once in one address space. The floor row (one copy \
                    in, one copy out, no process at all) is about as fast as rayon: a process pool \
                    cannot beat threads on work this small. With ~1 µs of work per item the pool \
                    ties with rayon (next table).",
    }
}

pub fn map_heavy() -> Table {
    Table {
        title: "Pool map, 20,000 items of ~0.8 µs work".into(),
        what: "`map` of a function that computes for about a microsecond per item.",
        rows: vec![
            row(
                "pool/16-map-20k-heavy-shmkit-pool",
                "shmkit `Pool::map`",
                Shmkit,
            ),
            row(
                "pool/15-map-20k-heavy-rayon-threads",
                "rayon `par_iter`",
                Rust,
            ),
            row(
                "pool/14-map-20k-heavy-sequential",
                "sequential loop",
                Context,
            ),
        ],
        why_loses: "Each chunk still crosses processes (encode, queue, decode) and workers are woken \
                    through shared futexes; rayon steals work inside one process.",
    }
}

pub fn map_pod_trivial() -> Table {
    Table {
        title: "Pool map of `Pod` items over shared arrays, 1,000,000 trivial items".into(),
        what: "The same map as above through `Pool::map_pod` (items copied into a shared array \
               once, index ranges as tasks, results copied out once) and `Pool::map_into` (input \
               and output already in shmkit arrays: nothing copied), both calls repeated over the \
               arrays they kept.",
        rows: vec![
            row(
                "pool/13-map-1M-floor-copy-in-and-out",
                "floor: inputs into shared memory and outputs out, no process",
                Limit,
            ),
            row(
                "pool/17-map-1M-shmkit-map-pod",
                "shmkit `Pool::map_pod` (processes)",
                Shmkit,
            ),
            row(
                "pool/18-map-1M-shmkit-map-into",
                "shmkit `Pool::map_into` (processes, arrays already shared)",
                Context,
            ),
            row(
                "pool/11-map-1M-rayon-threads",
                "rayon `par_iter` (threads)",
                Rust,
            ),
            row(
                "pool/12-map-1M-shmkit-pool",
                "shmkit `Pool::map` (encoded items)",
                Context,
            ),
        ],
        why_loses: "rayon's map reads nothing (its input is a range) and writes each result once into \
                    its `Vec`; `map_pod` copies the items into shared memory, the workers read them \
                    and write the results on the other CPU, and the results are copied out: six \
                    passes over 8 MB where rayon makes one, most of them moving cache lines between \
                    CPUs. `map_into`, which copies nothing, is faster than rayon.",
    }
}

pub fn map_pod_heavy() -> Table {
    Table {
        title: "Pool map of `Pod` items over shared arrays, 20,000 items of ~0.8 µs work".into(),
        what: "`Pool::map_pod` of the heavier function.",
        rows: vec![
            row(
                "pool/19-map-20k-heavy-shmkit-map-pod",
                "shmkit `Pool::map_pod`",
                Shmkit,
            ),
            row(
                "pool/15-map-20k-heavy-rayon-threads",
                "rayon `par_iter`",
                Rust,
            ),
            row(
                "pool/16-map-20k-heavy-shmkit-pool",
                "shmkit `Pool::map` (encoded items)",
                Context,
            ),
            row(
                "pool/14-map-20k-heavy-sequential",
                "sequential loop",
                Context,
            ),
        ],
        why_loses: "Ranges are fixed in advance (four per worker) while rayon steals work, so a worker \
                    that finishes first waits for the other; and the items still cross processes.",
    }
}

pub fn apply_async() -> Table {
    Table {
        title: "Pool apply_async round trip".into(),
        what: "Submit one small task, wait for its result.",
        rows: vec![
            row(
                "queue/50-ping-pong-bare-cache-line-spin",
                "bare cache-line round trip between spinning processes",
                Limit,
            ),
            row(
                "queue/52-ping-pong-bare-futex",
                "bare futex round trip between processes",
                Context,
            ),
            row(
                "pool/21-round-trip-shmkit-apply-async",
                "shmkit `apply_async(..).get()`",
                Shmkit,
            ),
            row(
                "pool/20-round-trip-crossbeam-thread",
                "crossbeam channel to a thread and back",
                Rust,
            ),
            row(
                "python/pool/apply-async-round-trip-mp-pool",
                "Python `apply_async(..).get()`",
                Python,
            ),
        ],
        why_loses: "A thread round trip within one process needs no shared-futex wake and no encoding; \
                    shmkit's round trip is two cross-process wake-ups plus encoding and a task record.",
    }
}

//! The tables of BENCHMARKS.md, in the order it shows them: one module per
//! area (mostly one per bench file), one function per table or per family
//! of tables differing only in a size or an operation, each with the reason
//! shmkit loses where it does.

mod counters;
mod handoff;
mod map;
mod ping_pong;
mod pool;
mod process;
mod queues;

use crate::model::Table;

/// Every table, in the order BENCHMARKS.md shows them.
pub fn tables() -> Vec<Table> {
    let mut t = vec![counters::counter(), counters::counter_locked()];
    for (prefix, size, label) in [
        ("1", "u64", "u64"),
        ("3", "1KiB", "1 KiB"),
        ("4", "64KiB", "64 KiB"),
    ] {
        t.push(queues::spsc(prefix, size, label));
        t.push(queues::mpmc(prefix, size, label));
    }
    t.push(queues::runs());
    t.push(queues::huge());
    t.push(queues::short_ring());
    t.push(queues::async_1kib());
    t.push(ping_pong::spinning());
    t.push(ping_pong::blocking());
    t.push(ping_pong::awaited());
    for (k, size) in ["4KiB", "1MiB", "64MiB", "1GiB"].iter().enumerate() {
        t.push(handoff::handoff(k, size));
    }
    t.extend([
        pool::map_trivial(),
        pool::map_heavy(),
        pool::map_pod_trivial(),
        pool::map_pod_heavy(),
        pool::apply_async(),
    ]);
    t.push(process::start_join());
    for (op, n) in [("insert", "1"), ("get", "1"), ("insert", "2"), ("get", "2")] {
        t.push(map::map(op, n));
    }
    t
}

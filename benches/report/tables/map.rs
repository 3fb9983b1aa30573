//! The shared map: insert and get, in 1 process and in 2 at once
//! (benches/map.rs).

use crate::model::{Role::*, Row, Table, row};

/// `op` ("insert" or "get") in `n` ("1" or "2") processes at once.
pub fn map(op: &str, n: &str) -> Table {
    Table {
        title: format!(
            "Shared map {op}, {n} {}",
            if n == "1" {
                "process"
            } else {
                "processes at once"
            }
        ),
        what: "u64 keys and values, 100,000 keys; operations per second.",
        rows: map_rows(op, n),
        why_loses: if op == "insert" {
            WHY_MAP_INSERT
        } else {
            WHY_MAP_GET
        },
    }
}

fn map_rows(op: &str, n: &str) -> Vec<Row> {
    let lead = if op == "insert" {
        if n == "1" { "1" } else { "3" }
    } else if n == "1" {
        "2"
    } else {
        "4"
    };
    let mut rows = vec![];
    if n == "1" {
        rows.push(row(
            format!("map/{lead}3-{op}-1-std-hashmap-no-lock (limit)"),
            "std `HashMap`, no lock, one thread",
            Limit,
        ));
        rows.push(row(
            format!("map/{lead}0-{op}-1-shmkit-process"),
            "shmkit `SharedMap`",
            Shmkit,
        ));
        rows.push(row(
            format!("map/{lead}1-{op}-1-std-mutex-hashmap"),
            "std `Mutex<HashMap>`",
            Rust,
        ));
        rows.push(row(format!("map/{lead}2-{op}-1-dashmap"), "dashmap", Rust));
    } else {
        rows.push(row(
            format!("map/{lead}0-{op}-2-shmkit-processes"),
            "shmkit `SharedMap`, 2 processes",
            Shmkit,
        ));
        rows.push(row(
            format!("map/{lead}1-{op}-2-std-mutex-hashmap-threads"),
            "std `Mutex<HashMap>`, 2 threads",
            Rust,
        ));
        rows.push(row(
            format!("map/{lead}2-{op}-2-dashmap-threads"),
            "dashmap, 2 threads",
            Rust,
        ));
    }
    if op == "insert" || n == "1" {
        rows.push(row(
            format!("python/map/{op}-{n}-manager-dict"),
            "Python `Manager().dict()`",
            Python,
        ));
    }
    rows
}

const WHY_MAP_INSERT: &str = "Each shmkit write takes its stripe's process-shared lock (shmkit's \
    owner-word lock, which names its holder) and keeps an undo record so that a writer's death never tears an \
    entry; std's and dashmap's locks do neither, and their tables live in private memory.";

const WHY_MAP_GET: &str = "A shmkit get takes no lock but copies the slot under a seqlock \
    (volatile copies, the stripe's sequence read before and after) from a table in shared memory; in \
    one thread, std's `HashMap` behind an uncontended lock and dashmap do one lookup in private memory. \
    Between two processes the lock-free read wins (next tables).";

//! Writes `BENCHMARKS.md` and `docs/benchmarks.svg` from the last
//! `cargo bench` run (`target/criterion/**/new/`) and the Python rows
//! (`target/bench-python.json`, from `benches/python/bench.py`).
//!
//! Run by `benches/run` after the benches; alone: `cargo run --release
//! --example bench-report`. Refuses to write when a Rust row is missing
//! (a partial `cargo bench` run), unless given `--partial`.
//!
//! Every ratio is a ratio of speeds measured in the same run: `speed =
//! (elements or bytes per iteration) / (mean time per iteration)`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// The physical limit the table is held against.
    Limit,
    /// shmkit's row.
    Shmkit,
    /// What a Rust user would pick instead.
    Rust,
    /// Python's multiprocessing.
    Python,
    /// Shown for context, not compared (e.g. a second limit).
    Context,
}

struct Row {
    id: String,
    label: String,
    role: Role,
}

struct Table {
    title: String,
    what: &'static str,
    rows: Vec<Row>,
    /// Why shmkit is slower than the best alternative, if it is.
    why_loses: &'static str,
}

#[derive(Clone, Copy)]
struct Measured {
    /// Mean time per iteration, ns.
    ns: f64,
    /// Elements per iteration (0 if bytes).
    elements: f64,
    /// Bytes per iteration (0 if elements).
    bytes: f64,
}

impl Measured {
    fn speed(&self) -> f64 {
        let units = if self.bytes > 0.0 {
            self.bytes
        } else {
            self.elements.max(1.0)
        };
        units / self.ns
    }
}

fn row(id: impl Into<String>, label: impl Into<String>, role: Role) -> Row {
    Row {
        id: id.into(),
        label: label.into(),
        role,
    }
}

use Role::*;

fn tables() -> Vec<Table> {
    let mut t = vec![
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
        },
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
        },
    ];
    for (prefix, size, label) in [
        ("1", "u64", "u64"),
        ("3", "1KiB", "1 KiB"),
        ("4", "64KiB", "64 KiB"),
    ] {
        let spsc = if size == "u64" {
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
                    "python/queue/u64-spsc-mp-queue",
                    "Python `mp.Queue`",
                    Python,
                ),
            ]
        } else {
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
                    format!("python/queue/{size}-spsc-mp-queue"),
                    "Python `mp.Queue`",
                    Python,
                ),
            ]
        };
        let why_spsc = if size == "u64" {
            WHY_QUEUE_WORDS
        } else {
            WHY_QUEUE_BYTES
        };
        t.push(Table {
            title: format!("Queue throughput, {label} messages, 1 producer → 1 consumer"),
            what: "Messages per second from one process to another (threads for crossbeam, which \
                   sends a freshly allocated `Vec` per sized message, as users do). shmkit's consumer \
                   reads each message in place, one byte per cache line; pipe and socket consumers \
                   copy it out.",
            rows: spsc,
            why_loses: why_spsc,
        });
        let mpmc = if size == "u64" {
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
        } else {
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
        };
        t.push(Table {
            title: format!("Queue throughput, {label} messages, 2 producers → 2 consumers"),
            what: "Two producers and two consumers on one queue, on this 2-CPU machine (4 parties \
                   share 2 CPUs). Pipes, sockets and ipc-channel are not multi-consumer queues and \
                   have no row here.",
            rows: mpmc,
            why_loses: "With four parties on two CPUs, each side often finds the other asleep; a \
                        cross-process wake is a shared-futex syscall, and crossbeam's threads park and \
                        wake inside one process more cheaply.",
        });
    }
    t.push(Table {
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
    });
    t.push(Table {
        title: "Ping-pong round trip, blocking".into(),
        what: "One message there and back between two processes that block in `recv`. The bare futex \
               pair sleeps at once; shmkit (and the pipe's shmkit row) first spins briefly (up to 127 \
               `PAUSE`s, a few µs, only when more than one CPU is available) and so beats the futex \
               pair here: that row is the cost of sleeping at once, not a floor for shmkit.",
        rows: vec![
            row("queue/52-ping-pong-bare-futex", "bare shared futex pair", Limit),
            row("queue/53-ping-pong-shmkit-queue-blocking", "shmkit queues, `recv`", Shmkit),
            row("pipe/31-ping-pong-shmkit-pipe", "shmkit `Pipe`", Context),
            row("queue/54-ping-pong-unix-pipe", "Unix pipe", Rust),
            row("pipe/33-ping-pong-unix-socket", "Unix stream socket", Rust),
            row("queue/55-ping-pong-ipc-channel", "ipc-channel", Rust),
            row("python/ping-pong/mp-pipe", "Python `mp.Pipe`", Python),
            row("python/ping-pong/mp-queue", "Python `mp.Queue`", Python),        ],
        why_loses: "Not analysed.",
    });
    for (k, size) in ["4KiB", "1MiB", "64MiB", "1GiB"].iter().enumerate() {
        t.push(Table {
            title: format!("Large-buffer handoff, {size}"),
            what: "Per handoff the producer writes one byte of every 4 KiB page (fresh data) and hands \
                   the buffer over; the consumer reads one byte of every page. Zero-copy rows hand \
                   over a buffer both processes have mapped; producers may run a few handoffs ahead.",
            rows: vec![
                row(format!("handoff/{k}6-{size}-bare-futex-notify-touch (limit)"), "bare futex notification + reading one byte per page in place", Limit),
                row(format!("handoff/{k}0-{size}-touch-pages"), "reading one byte per page of the shared array in one process (no handoff)", Context),
                row(format!("handoff/{k}1-{size}-memcpy-once"), "one memcpy (what any copy pays)", Context),
                row(format!("handoff/{k}2-{size}-shmkit-array-zero-copy"), "shmkit `Array<u8>` + a `Queue<u64>` notification", Shmkit),
                row(format!("handoff/{k}3-{size}-unix-pipe"), "Unix pipe", Rust),
                row(format!("handoff/{k}4-{size}-unix-socket"), "Unix stream socket", Rust),
                row(format!("handoff/{k}7-{size}-shared-mmap-unix-pipe-notify"), "do-it-yourself: a shared mapping + an 8-byte Unix pipe write", Rust),
                row(format!("handoff/{k}5-{size}-ipc-channel-shared-memory"), "ipc-channel `IpcSharedMemory::from_bytes` per handoff (immutable once made, so fresh data is copied into a new one)", Rust),
                row(format!("python/handoff/{size}-shared-memory-zero-copy"), "Python `shared_memory` + `mp.Pipe` notification", Python),
                row(format!("python/handoff/{size}-mp-pipe-send-bytes"), "Python `Connection.send_bytes`", Python),
            ],
            why_loses: WHY_HANDOFF,
        });
    }
    t.push(Table {
        title: "Pool map, 1,000,000 trivial items".into(),
        what: "`map` of a function that does almost nothing over 1M integers, all workers (2 here).",
        rows: vec![
            row("pool/13-map-1M-floor-copy-in-and-out", "floor: inputs into shared memory and outputs out, no process", Limit),
            row("pool/12-map-1M-shmkit-pool", "shmkit `Pool::map` (processes)", Shmkit),
            row("pool/11-map-1M-rayon-threads", "rayon `par_iter` (threads)", Rust),
            row("pool/10-map-1M-sequential", "sequential loop", Context),
            row("python/pool/map-1M-mp-pool", "Python `Pool.map`", Python),
        ],
        why_loses: "With a function that does nothing, a process pool only moves data: every item is \
                    encoded, written to shared memory, decoded, and its result goes back the same way, \
                    while rayon touches each item once in one address space. The floor row (one copy \
                    in, one copy out, no process at all) is about as fast as rayon: a process pool \
                    cannot beat threads on work this small. With ~1 µs of work per item the pool \
                    ties with rayon (next table).",
    });
    t.push(Table {
        title: "Pool map, 20,000 items of ~0.8 µs work".into(),
        what: "`map` of a function that computes for about a microsecond per item.",
        rows: vec![
            row("pool/16-map-20k-heavy-shmkit-pool", "shmkit `Pool::map`", Shmkit),
            row("pool/15-map-20k-heavy-rayon-threads", "rayon `par_iter`", Rust),
            row("pool/14-map-20k-heavy-sequential", "sequential loop", Context),
        ],
        why_loses: "Each chunk still crosses processes (encode, queue, decode) and workers are woken \
                    through shared futexes; rayon steals work inside one process.",
    });
    t.push(Table {
        title: "Pool apply_async round trip".into(),
        what: "Submit one small task, wait for its result.",
        rows: vec![
            row("queue/50-ping-pong-bare-cache-line-spin", "bare cache-line round trip between spinning processes", Limit),
            row("queue/52-ping-pong-bare-futex", "bare futex round trip between processes", Context),
            row("pool/21-round-trip-shmkit-apply-async", "shmkit `apply_async(..).get()`", Shmkit),
            row("pool/20-round-trip-crossbeam-thread", "crossbeam channel to a thread and back", Rust),
            row("python/pool/apply-async-round-trip-mp-pool", "Python `apply_async(..).get()`", Python),
        ],
        why_loses: "A thread round trip within one process needs no shared-futex wake and no encoding; \
                    shmkit's round trip is two cross-process wake-ups plus encoding and a task record.",
    });
    t.push(Table {
        title: "Start and join a process".into(),
        what: "Start a child that does nothing, wait for it, get its exit status (and result where the \
               row says so).",
        rows: vec![
            row("process/start-join/0-raw-fork-waitpid", "raw `fork` + `waitpid`", Limit),
            row("process/start-join/2-shmkit-fork", "shmkit `Process` (fork), result carried back", Shmkit),
            row("process/start-join/4-shmkit-spawn", "shmkit `Process` (spawn: re-exec, result carried back)", Context),
            row("process/start-join/1-raw-fork-pipe-result", "raw `fork` with a result over a pipe", Rust),
            row("process/start-join/3-raw-command-same-binary", "`std::process::Command` of the same binary", Rust),
            row("python/process/start-join-fork", "Python `Process` (fork)", Python),
            row("python/process/start-join-spawn", "Python `Process` (spawn)", Python),
        ],
        why_loses: "shmkit's fork path also creates the shared result region, registers the child with \
                    its reaper and decodes the returned value; a bare fork with a pipe does less.",
    });
    for (op, n) in [("insert", "1"), ("get", "1"), ("insert", "2"), ("get", "2")] {
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
        t.push(Table {
            title: format!(
                "Shared map {op}, {n} {}",
                if n == "1" {
                    "process"
                } else {
                    "processes at once"
                }
            ),
            what: "u64 keys and values, 100,000 keys; operations per second.",
            rows,
            why_loses: if op == "insert" {
                WHY_MAP_INSERT
            } else {
                WHY_MAP_GET
            },
        });
    }
    t
}

const WHY_HANDOFF: &str = "A zero-copy handoff costs the notification plus the page writes and \
    reads, which every zero-copy row pays alike. For small buffers the notification dominates: \
    shmkit's is a queue message (a slot claim, the recovery intent word, a shared-futex wake when \
    the consumer sleeps), heavier than the bare counter of the limit row.";

const WHY_MAP_INSERT: &str = "Each shmkit write takes its stripe's process-shared lock (shmkit's \
    owner-word lock, which names its holder) and keeps an undo record so that a writer's death never tears an \
    entry; std's and dashmap's locks do neither, and their tables live in private memory.";

const WHY_MAP_GET: &str = "A shmkit get takes no lock but copies the slot under a seqlock \
    (volatile copies, the stripe's sequence read before and after) from a table in shared memory; in \
    one thread, std's `HashMap` behind an uncontended lock and dashmap do one lookup in private memory. \
    Between two processes the lock-free read wins (next tables).";

const WHY_QUEUE_WORDS: &str = "crossbeam between threads moves a word inside one address space; a \
    cross-process queue also claims a slot, stamps a length, keeps the crash-recovery intent word and \
    wakes a sleeping peer through a shared futex. With messages of a few bytes that bookkeeping is the \
    whole cost.";

const WHY_QUEUE_BYTES: &str = "crossbeam moves a `Vec` (a pointer) between threads of one address \
    space; between processes the bytes must be in shared memory, and `send_bytes` copies each message \
    into its slot (the memcpy row is that copy's cost; writing the message in place with \
    `reserve_bytes` avoids it, not measured here).";

/// Rows measured before `since` (the start of this `benches/run`) are left
/// out: they belong to an earlier run.
fn load_criterion(
    dir: &Path,
    since: Option<std::time::SystemTime>,
    out: &mut BTreeMap<String, Measured>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") {
                let fresh = since.is_none_or(|t| {
                    std::fs::metadata(p.join("estimates.json"))
                        .and_then(|m| m.modified())
                        .is_ok_and(|m| m >= t)
                });
                if fresh && let Some(m) = read_criterion(&p) {
                    out.insert(m.0, m.1);
                }
            } else {
                load_criterion(&p, since, out);
            }
        }
    }
}

fn read_criterion(new: &Path) -> Option<(String, Measured)> {
    let bench: Value =
        serde_json::from_str(&std::fs::read_to_string(new.join("benchmark.json")).ok()?).ok()?;
    let est: Value =
        serde_json::from_str(&std::fs::read_to_string(new.join("estimates.json")).ok()?).ok()?;
    let id = bench["full_id"].as_str()?.to_owned();
    let ns = est["mean"]["point_estimate"].as_f64()?;
    let t = &bench["throughput"];
    Some((
        id,
        Measured {
            ns,
            elements: t["Elements"].as_f64().unwrap_or(0.0),
            bytes: t["Bytes"].as_f64().unwrap_or(0.0),
        },
    ))
}

fn load_python(path: &Path, out: &mut BTreeMap<String, Measured>) -> Option<String> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    for (id, r) in v["results"].as_object()? {
        out.insert(
            id.clone(),
            Measured {
                ns: r["ns"].as_f64()?,
                elements: r["elements"].as_f64().unwrap_or(0.0),
                bytes: r["bytes"].as_f64().unwrap_or(0.0),
            },
        );
    }
    Some(v["python"].as_str().unwrap_or("?").to_owned())
}

fn fmt_time(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{:.2} s", n / 1e9),
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.1} ns"),
    }
}

fn fmt_rate(m: &Measured) -> String {
    if m.bytes > 0.0 {
        let gib = m.bytes / m.ns * 1e9 / (1u64 << 30) as f64;
        if gib >= 1.0 {
            format!("{gib:.2} GiB/s")
        } else {
            format!("{:.0} MiB/s", gib * 1024.0)
        }
    } else {
        let ops = m.elements.max(1.0) / m.ns * 1e9;
        match ops {
            o if o >= 1e6 => format!("{:.2} M/s", o / 1e6),
            o if o >= 1e3 => format!("{:.1} k/s", o / 1e3),
            o => format!("{o:.1} /s"),
        }
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Limit => "limit",
        Shmkit => "**shmkit**",
        Rust => "Rust alternative",
        Python => "Python",
        Context => "context",
    }
}

struct Verdict {
    title: String,
    vs_limit: Option<f64>,
    best_alt: Option<(String, f64)>,
    vs_python: Option<(String, f64)>,
}

/// Below this ratio shmkit loses; up to its inverse it is a tie (this VM's
/// run-to-run noise is larger than 5%).
const TIE: f64 = 0.95;

impl Verdict {
    fn loses(&self) -> bool {
        [&self.best_alt, &self.vs_python]
            .into_iter()
            .flatten()
            .any(|(_, r)| *r < TIE)
    }
}

fn command(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cpus} CPUs available, {mem} RAM, Linux {}, {}",
        kernel.trim(),
        command("rustc", &["--version"])
    )
}

fn main() {
    let partial = std::env::args().any(|a| a == "--partial");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut m = BTreeMap::new();
    let since = std::fs::metadata(root.join("target/bench-run-start"))
        .and_then(|m| m.modified())
        .ok();
    load_criterion(&root.join("target/criterion"), since, &mut m);
    let python = load_python(&root.join("target/bench-python.json"), &mut m);
    let tables = tables();
    let missing: Vec<&str> = tables
        .iter()
        .flat_map(|t| &t.rows)
        .filter(|r| r.role != Python && !m.contains_key(&r.id))
        .map(|r| r.id.as_str())
        .collect();
    if !missing.is_empty() && !partial {
        eprintln!(
            "bench-report: {} Rust rows have no measurement from this run; run `benches/run` first, or pass --partial:",
            missing.len()
        );
        for id in &missing {
            eprintln!("  {id}");
        }
        std::process::exit(1);
    }

    let date = command("date", &["-u", "+%Y-%m-%d"]);
    let mut md = String::new();
    let mut verdicts = vec![];
    let mut body = String::new();
    for t in &tables {
        let get = |r: &Row| m.get(&r.id).copied();
        let limit = t.rows.iter().find(|r| r.role == Limit).and_then(get);
        let shm = t.rows.iter().find(|r| r.role == Shmkit).and_then(get);
        let best = |role: Role| {
            t.rows
                .iter()
                .filter(|r| r.role == role)
                .filter_map(|r| get(r).map(|x| (r.label.clone(), x)))
                .max_by(|a, b| a.1.speed().total_cmp(&b.1.speed()))
        };
        let best_rust = best(Rust);
        let best_py = best(Python);
        let _ = writeln!(body, "### {}\n\n{}\n", t.title, t.what);
        let _ = writeln!(
            body,
            "| row | kind | time / iteration | throughput | speed vs limit | shmkit vs this row |"
        );
        let _ = writeln!(body, "|---|---|---:|---:|---:|---:|");
        for r in &t.rows {
            let Some(x) = get(r) else {
                let note = if r.role == Python {
                    "not measured (python3 missing?)"
                } else {
                    "not measured"
                };
                let _ = writeln!(
                    body,
                    "| {} | {} | {note} | | | |",
                    r.label,
                    role_name(r.role)
                );
                continue;
            };
            let vs_limit = limit.map_or("".into(), |l| fmt_ratio(x.speed() / l.speed()));
            let shm_vs = match (shm, r.role) {
                (_, Shmkit) => "1".into(),
                (Some(s), _) => fmt_ratio(s.speed() / x.speed()),
                _ => "".into(),
            };
            let label = if r.role == Shmkit {
                format!("**{}**", r.label)
            } else {
                r.label.clone()
            };
            let _ = writeln!(
                body,
                "| {label} | {} | {} | {} | {vs_limit} | {shm_vs} |",
                role_name(r.role),
                fmt_time(x.ns),
                fmt_rate(&x)
            );
        }
        let v = Verdict {
            title: t.title.clone(),
            vs_limit: shm.zip(limit).map(|(s, l)| s.speed() / l.speed()),
            best_alt: shm
                .zip(best_rust.clone())
                .map(|(s, (n, b))| (n, s.speed() / b.speed())),
            vs_python: shm
                .zip(best_py.clone())
                .map(|(s, (n, b))| (n, s.speed() / b.speed())),
        };
        body.push('\n');
        let mut parts = vec![];
        if let Some(r) = v.vs_limit {
            parts.push(format!(
                "shmkit reaches **{}** of the limit's speed",
                fmt_ratio(r)
            ));
        }
        if let Some((n, r)) = &v.best_alt {
            parts.push(format!(
                "against the fastest Rust alternative ({n}) it is **{}**",
                fmt_ratio(*r)
            ));
        }
        if let Some((n, r)) = &v.vs_python {
            parts.push(format!("against Python ({n}) **{}**", fmt_ratio(*r)));
        }
        if !parts.is_empty() {
            let _ = writeln!(body, "{}.", parts.join("; "));
        }
        if v.loses() {
            let _ = writeln!(body, "\n**shmkit loses here.** {}", t.why_loses);
        }
        body.push('\n');
        verdicts.push(v);
    }

    let _ = writeln!(md, "# shmkit benchmarks\n");
    let _ = writeln!(
        md,
        "<!-- Generated by `benches/run` (benches/report/main.rs) from one run; edit the generator, not this file. -->\n"
    );
    let _ = writeln!(md, "Measured on {date}: {}.", machine());
    match &python {
        Some(v) => {
            let _ = writeln!(
                md,
                "Python rows: CPython {v} `multiprocessing` (benches/python/bench.py), same machine, same run."
            );
        }
        None => {
            let _ = writeln!(
                md,
                "Python rows: **skipped** (python3 was not found, or benches/python/bench.py failed)."
            );
        }
    }
    let _ = writeln!(
        md,
        "\nRegenerate everything with one command: `benches/run` (all criterion benches, then the Python \
         script when python3 is present, then this report and the chart; about 15 minutes). Criterion's \
         HTML reports with their plots are under `target/criterion/report/index.html`.\n\n\
         Every ratio compares speeds measured in the same run on the same machine (a ratio above 1 means \
         shmkit is faster). Ratios between 0.95 and 1.05 are not counted as losses; between runs, \
         figures on this VM move by tens of percent, so read any ratio near 1 as about equal. \"Speed vs limit\" is how close a row comes to the physical limit of the \
         table (1 = the limit). This is a 2-CPU virtual machine: absolute figures move ±30% from run to \
         run; the ratios within one run are what to read.\n"
    );
    let _ = writeln!(
        md,
        "![shmkit against the fastest alternative and Python, per use](docs/benchmarks.svg)\n"
    );
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "| use | shmkit vs limit | vs fastest Rust alternative | vs Python |"
    );
    let _ = writeln!(md, "|---|---:|---|---|");
    for v in &verdicts {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            v.title,
            v.vs_limit.map_or("".into(), fmt_ratio),
            v.best_alt
                .as_ref()
                .map_or("".into(), |(n, r)| format!("{} ({n})", fmt_ratio(*r))),
            v.vs_python
                .as_ref()
                .map_or("".into(), |(n, r)| format!("{} ({n})", fmt_ratio(*r))),
        );
    }
    let losses: Vec<&Verdict> = verdicts.iter().filter(|v| v.loses()).collect();
    let _ = writeln!(md, "\n## Where shmkit loses\n");
    if losses.is_empty() {
        let _ = writeln!(md, "Nowhere in this run.\n");
    } else {
        for v in losses {
            let why = tables
                .iter()
                .find(|t| t.title == v.title)
                .map_or("", |t| t.why_loses);
            let (n, r) = [&v.best_alt, &v.vs_python]
                .into_iter()
                .flatten()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            let _ = writeln!(md, "- **{}**: {} of {n}. {why}", v.title, fmt_ratio(*r));
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Tables\n\n{body}");
    let _ = writeln!(md, "{}", NOTES);

    std::fs::write(root.join("BENCHMARKS.md"), md).expect("write BENCHMARKS.md");
    std::fs::create_dir_all(root.join("docs")).expect("docs/");
    std::fs::write(root.join("docs/benchmarks.svg"), svg(&verdicts, &date)).expect("write svg");
    println!(
        "wrote BENCHMARKS.md and docs/benchmarks.svg ({} tables, {} measurements{})",
        tables.len(),
        m.len(),
        if missing.is_empty() {
            String::new()
        } else {
            format!(", {} rows missing", missing.len())
        }
    );
}

const NOTES: &str = "## How to read the limits\n\n\
- **Counters**: a raw `AtomicU64` in a shared mapping is what any cross-process counter costs at \
  least; with two processes hammering one cache line, the line's transfer between CPUs dominates.\n\
- **Queues**: for words, a bare single-producer ring in shared memory (two spinning processes, no \
  claims, no lengths, no recovery); for 1 KiB and 64 KiB messages, one `memcpy` of the message \
  between page-aligned buffers (shmkit writes each message once into its slot and reads it in place). \
  Note: on this machine glibc's `memcpy` of 64 KiB between buffers whose addresses differ in the low \
  bits runs ~15x slower than between aligned ones (measured while writing these benches), so the \
  limit rows use aligned buffers.\n\
- **Ping-pong**: a cache line bounced between two spinning processes, and a pair of shared futex \
  waits/wakes (this run's figures are in the tables; DESIGN.md's \"Machine limits\" records separate \
  measurements of this kind of machine: ~12-16 µs per cross-CPU futex wake and 0.17 µs per spinning \
  handoff).\n\
- **Handoff**: a bare shared futex counter as the notification, with the same page writes and \
  reads, is the floor of a zero-copy handoff between processes; a memcpy is what any copying \
  transport pays at least (pipes and sockets pay two).\n\
- **Pool**: the floor row copies 1M inputs into shared memory and the outputs back with no process at \
  all; the apply_async limit is one cache-line round trip between spinning processes.\n\
- **Processes**: a raw `fork` + `waitpid`.\n\
- **Map**: std's `HashMap` without any lock, in one thread.\n";

fn svg(verdicts: &[Verdict], date: &str) -> String {
    // Horizontal bars on a log2 axis from 1/64 to 2^12: shmkit's speed
    // over the fastest Rust alternative (dark) and over Python (light).
    let rows: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.best_alt.is_some() || v.vs_python.is_some())
        .collect();
    let (left, width, bar, gap, top) = (420.0, 560.0, 9.0, 8.0, 48.0);
    let (lo, hi) = (-6.0f64, 12.0f64);
    let x = |r: f64| left + (r.log2().clamp(lo, hi) - lo) / (hi - lo) * width;
    let height = top + rows.len() as f64 * (2.0 * bar + gap) + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="11">"##,
        w = left + width + 70.0
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="10" y="18" font-size="14" font-weight="bold">shmkit speed ÷ alternative's speed (log scale; right of 1 = shmkit faster), {date}</text>"##
    );
    let _ = writeln!(
        s,
        r##"<rect x="10" y="28" width="10" height="9" fill="#1f5f99"/><text x="24" y="36">vs the fastest Rust alternative</text><rect x="210" y="28" width="10" height="9" fill="#9cc3e6"/><text x="224" y="36">vs Python multiprocessing</text>"##
    );
    for e in (lo as i32..=hi as i32).step_by(2) {
        let r = 2f64.powi(e);
        let xx = x(r);
        let label = if e < 0 {
            format!("1/{}", 1 << -e)
        } else {
            format!("{}", 1 << e)
        };
        let stroke = if e == 0 { "#333" } else { "#ddd" };
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{y2:.1}" stroke="{stroke}"/><text x="{xx:.1}" y="{ty:.1}" text-anchor="middle" fill="#555">{label}</text>"##,
            y2 = height - 30.0,
            ty = height - 16.0
        );
    }
    for (i, v) in rows.iter().enumerate() {
        let y = top + 4.0 + i as f64 * (2.0 * bar + gap);
        let _ = writeln!(
            s,
            r##"<text x="{tx}" y="{ty:.1}" text-anchor="end">{}</text>"##,
            xml(&v.title),
            tx = left - 6.0,
            ty = y + bar + 3.0
        );
        for (k, (r, color)) in [
            (v.best_alt.as_ref().map(|b| b.1), "#1f5f99"),
            (v.vs_python.as_ref().map(|b| b.1), "#9cc3e6"),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(r) = r else { continue };
            let (x0, x1) = (x(1.0), x(r));
            let yy = y + k as f64 * bar;
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{yy:.1}" width="{:.1}" height="{}" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="9" fill="#333">{}</text>"##,
                x0.min(x1),
                (x1 - x0).abs().max(1.0),
                bar - 1.0,
                x0.max(x1) + 3.0,
                yy + bar - 2.0,
                fmt_ratio(r)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn xml(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

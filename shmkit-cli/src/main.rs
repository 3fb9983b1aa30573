//! `shmkit`: list, inspect and clean shmkit's shared-memory segments.
//!
//! ```text
//! shmkit ls [--prefix P] [--json]        every segment: kind, type, size, creator, users, state
//! shmkit inspect NAME [--json]            one segment: header, users, its kind's live figures
//! shmkit clean [--dry-run] [--prefix P] [--force]
//!                                         remove stale segments of ours (creator dead, unused)
//! ```
//!
//! Exit codes: 0 done (also when the reader of our output went away), 1 an
//! error, 2 a usage error.

use clap::{Parser, Subcommand};
use shmkit::admin::{self, CleanOptions, LockFigures, SegmentInfo, Skipped};
use std::io::{self, Write};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "shmkit",
    version,
    about = "List, inspect and clean shmkit shared-memory segments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// List every shmkit segment in /dev/shm, who uses it, and what was
    /// skipped and why.
    Ls {
        /// Only segments whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Show one segment's header and live figures.
    Inspect {
        /// The segment's name (with or without the leading '/').
        name: String,
    },
    /// Remove stale segments: ours, whose creating process is dead and that
    /// no process maps.
    Clean {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Only segments whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Also remove segments whose creator is dead but that processes
        /// still map (they keep their memory; the name then no longer
        /// reaches it: a new open makes a new segment).
        #[arg(long)]
        force: bool,
    },
}

/// `s` as a JSON string.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "null".into(), f)
}

fn json(i: &SegmentInfo) -> String {
    let queue = json_opt(i.queue, |q| {
        format!(
            "{{\"depth\":{},\"capacity\":{},\"senders\":{},\"receivers\":{}}}",
            q.depth, q.capacity, q.senders, q.receivers
        )
    });
    let map = json_opt(i.map, |m| {
        format!(
            "{{\"capacity\":{},\"len\":{},\"stripes\":{}}}",
            m.capacity, m.len, m.stripes
        )
    });
    let lock = json_opt(i.lock, |l| {
        format!(
            "{{\"held\":{},\"holder_tid\":{},\"holder_pid\":{},\"holder_alive\":{},\"poisoned\":{}}}",
            l.holder_tid.is_some(),
            json_opt(l.holder_tid, |t| t.to_string()),
            json_opt(l.holder_pid, |p| p.to_string()),
            l.holder_alive,
            l.poisoned
        )
    });
    let users: Vec<String> = i
        .users
        .pids
        .iter()
        .map(|(p, c)| format!("{{\"pid\":{p},\"command\":{}}}", json_str(c)))
        .collect();
    format!(
        "{{\"name\":{},\"kind\":{},\"type\":{},\"bytes\":{},\"elements\":{},\"element_size\":{},\
         \"creator_pid\":{},\"creator_uid\":{},\"owner_uid\":{},\"creator_alive\":{},\"stale\":{},\
         \"ready\":{},\"attached\":[{}],\"attached_unknown\":{},\"queue\":{},\"map\":{},\"lock\":{}}}",
        json_str(&i.name),
        json_str(&i.kind),
        json_str(&i.type_name),
        i.bytes,
        i.elements,
        i.element_size,
        i.creator_pid,
        i.creator_uid,
        i.owner_uid,
        i.creator_alive,
        i.is_stale(),
        i.ready,
        users.join(","),
        i.users.unknown,
        queue,
        map,
        lock
    )
}

fn json_skipped(s: &[Skipped]) -> String {
    let items: Vec<String> = s
        .iter()
        .map(|k| {
            format!(
                "{{\"name\":{},\"reason\":{}}}",
                json_str(&k.name),
                json_str(&k.reason)
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}K", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

fn state(i: &SegmentInfo) -> &'static str {
    match (i.creator_alive, i.ready) {
        (true, true) => "alive",
        (true, false) => "initialising",
        (false, _) if i.is_stale() => "stale",
        (false, _) if i.users.pids.is_empty() => "unknown",
        (false, _) => "in-use",
    }
}

fn users_text(i: &SegmentInfo) -> String {
    let mut parts: Vec<String> = i
        .users
        .pids
        .iter()
        .map(|(p, c)| {
            if c.is_empty() {
                p.to_string()
            } else {
                format!("{p}({c})")
            }
        })
        .collect();
    if i.users.unknown > 0 {
        parts.push(format!("{} uninspectable", i.users.unknown));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// One line per segment; the type whole on its own indented line when it
/// does not fit its column.
fn row(out: &mut impl Write, i: &SegmentInfo) -> io::Result<()> {
    let fits = i.type_name.chars().count() <= 28;
    let ty = if fits {
        i.type_name.as_str()
    } else {
        "(below)"
    };
    writeln!(
        out,
        "{:<32} {:<10} {:<28} {:>8} {:>8} {:<8} {:>5} {}",
        i.name,
        i.kind,
        ty,
        size(i.bytes),
        i.creator_pid,
        state(i),
        i.users.pids.len(),
        users_text(i)
    )?;
    if !fits {
        writeln!(out, "    type: {}", i.type_name)?;
    }
    Ok(())
}

fn lock_text(l: &LockFigures) -> String {
    let held = match (l.holder_tid, l.holder_pid, l.holder_alive) {
        (None, _, _) => "free".to_owned(),
        (Some(t), Some(p), true) => format!("held by pid {p} (thread {t})"),
        (Some(t), None, true) => format!("held by thread {t}"),
        (Some(t), _, false) => {
            format!("held by thread {t}, which is dead (the next locker takes it over)")
        }
    };
    if l.poisoned {
        format!("{held}; poisoned (a holder died; repair and mark_consistent)")
    } else {
        held
    }
}

fn inspect_text(out: &mut impl Write, i: &SegmentInfo) -> io::Result<()> {
    writeln!(out, "name:          {}", i.name)?;
    writeln!(out, "kind:          {}", i.kind)?;
    writeln!(out, "type:          {}", i.type_name)?;
    writeln!(out, "bytes:         {} ({})", i.bytes, size(i.bytes))?;
    match i.kind.as_str() {
        "Value" | "Array" | "Mutex" | "RwLock" | "Condition" => writeln!(
            out,
            "elements:      {} of {} bytes",
            i.elements, i.element_size
        )?,
        _ => {}
    }
    writeln!(out, "ready:         {}", i.ready)?;
    writeln!(
        out,
        "creator:       pid {} uid {} ({})",
        i.creator_pid,
        i.creator_uid,
        if i.creator_alive { "alive" } else { "dead" }
    )?;
    writeln!(out, "owner uid:     {}", i.owner_uid)?;
    writeln!(
        out,
        "attached:      {} process(es): {}",
        i.users.pids.len(),
        users_text(i)
    )?;
    writeln!(out, "state:         {}", state(i))?;
    if let Some(q) = i.queue {
        writeln!(
            out,
            "queue:         {} of {} slots used, {} senders, {} receivers",
            q.depth, q.capacity, q.senders, q.receivers
        )?;
    }
    if let Some(m) = i.map {
        writeln!(
            out,
            "map:           {} entries of capacity {}, {} stripes",
            m.len, m.capacity, m.stripes
        )?;
    } else if i.kind == "Map" {
        writeln!(
            out,
            "map:           figures unreadable (control block impossible)"
        )?;
    }
    if let Some(l) = &i.lock {
        writeln!(out, "lock:          {}", lock_text(l))?;
    }
    Ok(())
}

fn run(cli: Cli, out: &mut impl Write) -> Result<(), Failure> {
    match cli.command {
        Command::Ls { prefix } => {
            let listing = admin::list(prefix.as_deref().unwrap_or(""))?;
            if cli.json {
                let items: Vec<String> = listing.segments.iter().map(json).collect();
                writeln!(
                    out,
                    "{{\"segments\":[{}],\"skipped\":{}}}",
                    items.join(","),
                    json_skipped(&listing.skipped)
                )?;
            } else {
                writeln!(
                    out,
                    "{:<32} {:<10} {:<28} {:>8} {:>8} {:<8} {:>5} PIDS",
                    "NAME", "KIND", "TYPE", "SIZE", "CREATOR", "STATE", "USERS"
                )?;
                for i in &listing.segments {
                    row(out, i)?;
                }
                if !listing.skipped.is_empty() {
                    writeln!(out, "skipped {} entr(ies):", listing.skipped.len())?;
                    for s in &listing.skipped {
                        writeln!(out, "  {}: {}", s.name, s.reason)?;
                    }
                }
            }
        }
        Command::Inspect { name } => {
            let i = admin::inspect_segment(&name)?;
            if cli.json {
                writeln!(out, "{}", json(&i))?;
            } else {
                inspect_text(out, &i)?;
            }
        }
        Command::Clean {
            dry_run,
            prefix,
            force,
        } => {
            let r = admin::clean(&CleanOptions {
                prefix: prefix.unwrap_or_default(),
                dry_run,
                force,
            })?;
            if cli.json {
                let names =
                    |v: &[String]| v.iter().map(|n| json_str(n)).collect::<Vec<_>>().join(",");
                let in_use: Vec<String> = r
                    .in_use
                    .iter()
                    .map(|(n, p)| {
                        let pids: Vec<String> = p.iter().map(u32::to_string).collect();
                        format!("{{\"name\":{},\"pids\":[{}]}}", json_str(n), pids.join(","))
                    })
                    .collect();
                let foreign: Vec<String> = r
                    .foreign
                    .iter()
                    .map(|(n, u)| format!("{{\"name\":{},\"uid\":{u}}}", json_str(n)))
                    .collect();
                writeln!(
                    out,
                    "{{\"dry_run\":{dry_run},\"force\":{force},\"removed\":[{}],\"in_use\":[{}],\
                     \"foreign\":[{}],\"skipped\":{}}}",
                    names(&r.removed),
                    in_use.join(","),
                    foreign.join(","),
                    json_skipped(&r.skipped)
                )?;
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                for (n, pids) in &r.in_use {
                    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                    let who = if pids.is_empty() {
                        "possibly by processes we cannot inspect".to_owned()
                    } else {
                        format!("by pid(s) {}", pids.join(","))
                    };
                    if force {
                        writeln!(
                            out,
                            "{verb} {n} although it is in use {who} (--force): they keep their \
                             memory, but a new open of the name makes a segment they do not share"
                        )?;
                    } else {
                        writeln!(
                            out,
                            "kept {n}: creator dead but in use {who} (--force removes it)"
                        )?;
                    }
                }
                for (n, uid) in &r.foreign {
                    writeln!(
                        out,
                        "kept {n}: stale but owned by uid {uid} (only your own are removed)"
                    )?;
                }
                for n in r
                    .removed
                    .iter()
                    .filter(|n| !r.in_use.iter().any(|(m, _)| m == *n))
                {
                    writeln!(out, "{verb} {n}")?;
                }
                writeln!(out, "{verb} {} stale segment(s)", r.removed.len())?;
                if !r.skipped.is_empty() {
                    writeln!(
                        out,
                        "skipped {} unreadable entr(ies) (see shmkit ls)",
                        r.skipped.len()
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Why `run` stopped: a library error, or stdout went away.
enum Failure {
    Shmkit(shmkit::Error),
    Output(io::Error),
}

impl From<shmkit::Error> for Failure {
    fn from(e: shmkit::Error) -> Self {
        Failure::Shmkit(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's convention), failures with 1.
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let r = run(cli, &mut out).and_then(|()| out.flush().map_err(Failure::Output));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped reading (`shmkit ls | head -1`): done.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Output(e)) => {
            eprintln!("shmkit: cannot write the output: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Shmkit(e)) => {
            eprintln!("shmkit: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `shmkit`: list, inspect and clean shmkit's shared-memory segments.
//!
//! ```text
//! shmkit ls [--json]                      every segment: kind, type, size, creator, alive or stale
//! shmkit inspect NAME [--json]            one segment's header and live figures
//! shmkit clean [--dry-run] [--prefix P]   remove stale segments of ours (creator dead)
//! ```

use clap::{Parser, Subcommand};
use shmkit::region::{self, SegmentInfo};
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
    /// List every shmkit segment in /dev/shm.
    Ls,
    /// Show one segment's header and live figures.
    Inspect {
        /// The segment's name (with or without the leading '/').
        name: String,
    },
    /// Remove stale segments: ours, whose creating process is dead.
    Clean {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Only segments whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
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

fn json(i: &SegmentInfo) -> String {
    let queue = match i.queue {
        Some(q) => format!(
            "{{\"depth\":{},\"capacity\":{},\"senders\":{},\"receivers\":{}}}",
            q.depth, q.capacity, q.senders, q.receivers
        ),
        None => "null".into(),
    };
    format!(
        "{{\"name\":{},\"kind\":{},\"type\":{},\"bytes\":{},\"elements\":{},\"creator_pid\":{},\
         \"creator_uid\":{},\"creator_alive\":{},\"stale\":{},\"ready\":{},\"queue\":{}}}",
        json_str(&i.name),
        json_str(&i.kind),
        json_str(&i.type_name),
        i.bytes,
        i.elements,
        i.creator_pid,
        i.creator_uid,
        i.creator_alive,
        i.is_stale(),
        i.ready,
        queue
    )
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}K", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

fn row(i: &SegmentInfo) -> String {
    let state = match (i.creator_alive, i.ready) {
        (true, true) => "alive",
        (true, false) => "initialising",
        (false, _) => "stale",
    };
    let queue = i.queue.map_or(String::new(), |q| {
        format!(
            "  depth {}/{} senders {} receivers {}",
            q.depth, q.capacity, q.senders, q.receivers
        )
    });
    format!(
        "{:<32} {:<10} {:<28} {:>8} {:>8} {:<12}{}",
        i.name,
        i.kind,
        i.type_name.chars().take(28).collect::<String>(),
        size(i.bytes),
        i.creator_pid,
        state,
        queue
    )
}

fn run(cli: Cli) -> shmkit::Result<()> {
    match cli.command {
        Command::Ls => {
            let all = region::list_segments()?;
            if cli.json {
                let items: Vec<String> = all.iter().map(json).collect();
                println!("[{}]", items.join(","));
            } else {
                println!(
                    "{:<32} {:<10} {:<28} {:>8} {:>8} {:<12}",
                    "NAME", "KIND", "TYPE", "SIZE", "CREATOR", "STATE"
                );
                for i in &all {
                    println!("{}", row(i));
                }
            }
        }
        Command::Inspect { name } => {
            let i = region::inspect_segment(&name)?;
            if cli.json {
                println!("{}", json(&i));
            } else {
                println!("name:          {}", i.name);
                println!("kind:          {}", i.kind);
                println!("type:          {}", i.type_name);
                println!("bytes:         {} ({})", i.bytes, size(i.bytes));
                println!("elements:      {}", i.elements);
                println!("ready:         {}", i.ready);
                println!(
                    "creator:       pid {} uid {} ({})",
                    i.creator_pid,
                    i.creator_uid,
                    if i.creator_alive {
                        "alive"
                    } else {
                        "dead: stale"
                    }
                );
                if let Some(q) = i.queue {
                    println!(
                        "queue:         {} of {} slots used, {} senders, {} receivers",
                        q.depth, q.capacity, q.senders, q.receivers
                    );
                }
            }
        }
        Command::Clean { dry_run, prefix } => {
            let prefix = prefix.unwrap_or_default();
            let prefix = prefix.trim_start_matches('/');
            let names = region::cleanup_stale_matching(|n| n.starts_with(prefix), dry_run)?;
            if cli.json {
                let items: Vec<String> = names.iter().map(|n| json_str(n)).collect();
                println!(
                    "{{\"dry_run\":{dry_run},\"removed\":[{}]}}",
                    items.join(",")
                );
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                for n in &names {
                    println!("{verb} {n}");
                }
                println!("{verb} {} stale segment(s)", names.len());
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmkit: {e}");
            ExitCode::FAILURE
        }
    }
}

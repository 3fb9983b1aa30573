//! Reading this run's measurements (criterion's `target/criterion/**/new/`
//! and the Python script's `target/bench-python.json`) and describing the
//! machine they were taken on.

use crate::model::{Measured, Measurements};
use serde_json::Value;
use std::path::Path;

/// Every measurement of this run under `root/target`, and the Python
/// version if the Python rows exist.
pub fn load(root: &Path) -> (Measurements, Option<String>) {
    let mut m = Measurements::new();
    let since = std::fs::metadata(root.join("target/bench-run-start"))
        .and_then(|m| m.modified())
        .ok();
    load_criterion(&root.join("target/criterion"), since, &mut m);
    let python = load_python(&root.join("target/bench-python.json"), &mut m);
    (m, python)
}

fn load_criterion(dir: &Path, since: Option<std::time::SystemTime>, out: &mut Measurements) {
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

fn load_python(path: &Path, out: &mut Measurements) -> Option<String> {
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

/// The trimmed standard output of `cmd args`, or "" if it cannot run.
pub fn command(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// CPU model, CPUs available, RAM, kernel and rustc, in one line.
pub fn machine() -> String {
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

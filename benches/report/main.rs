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

mod chart;
mod load;
mod markdown;
mod model;
mod tables;

use model::{Measurements, Role, Table, Verdict};
use std::path::{Path, PathBuf};

fn main() {
    let partial = std::env::args().any(|a| a == "--partial");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (m, python) = load::load(&root);
    let tables = tables::tables();
    let missing = missing(&tables, &m);
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
    let date = load::command("date", &["-u", "+%Y-%m-%d"]);
    let (sections, verdicts): (Vec<String>, Vec<Verdict>) =
        tables.iter().map(|t| markdown::table(t, &m)).unzip();
    let md = markdown::document(
        &date,
        python.as_deref(),
        &tables,
        &verdicts,
        &sections.concat(),
    );
    write(&root, &md, &chart::svg(&verdicts, &date));
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

/// The Rust rows this run did not measure (Python rows may be absent: the
/// machine may have no python3).
fn missing<'a>(tables: &'a [Table], m: &Measurements) -> Vec<&'a str> {
    tables
        .iter()
        .flat_map(|t| &t.rows)
        .filter(|r| r.role != Role::Python && !m.contains_key(&r.id))
        .map(|r| r.id.as_str())
        .collect()
}

/// BENCHMARKS.md and docs/benchmarks.svg, under `root`.
fn write(root: &Path, md: &str, svg: &str) {
    std::fs::write(root.join("BENCHMARKS.md"), md).expect("write BENCHMARKS.md");
    std::fs::create_dir_all(root.join("docs")).expect("docs/");
    std::fs::write(root.join("docs/benchmarks.svg"), svg).expect("write svg");
}

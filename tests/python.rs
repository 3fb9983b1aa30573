//! The README's "Other languages" snippet (`examples/python/read_array.py`)
//! run by a real Python against an `Array<f64>` made here: it reads the
//! elements in place with numpy, and the segment survives Python's exit
//! (Python < 3.13 unlinks segments it attached to unless the snippet
//! unregisters them from its resource tracker).

mod common;

use common::{unique, watchdog};
use std::process::Command;

/// `python3` with numpy, installing numpy with pip if it is missing; `None`
/// (the test then says why it skipped) where there is no Python 3 or numpy
/// cannot be installed.
fn python_with_numpy() -> Option<&'static str> {
    let has = |code: &str| {
        Command::new("python3")
            .args(["-c", code])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("import sys; assert sys.version_info >= (3, 8)") {
        println!("skipped: no python3 (3.8 or newer) on PATH");
        return None;
    }
    if !has("import numpy") {
        let installed = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "numpy"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed || !has("import numpy") {
            println!("skipped: numpy is not installed and `pip install numpy` failed");
            return None;
        }
    }
    Some("python3")
}

#[test]
fn python_reads_a_rust_array_in_place_and_leaves_it() {
    let _w = watchdog("python snippet");
    let Some(python) = python_with_numpy() else {
        return;
    };
    let name = unique("py");
    let a = shmkit::Array::<f64>::builder()
        .name(&name)
        .create(1000)
        .unwrap();
    for (i, x) in a.lock().unwrap().iter_mut().enumerate() {
        *x = i as f64 * 0.5;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/read_array.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: f64 = (0..1000).map(|i| f64::from(i) * 0.5).sum();
    assert_eq!(parse(&out.stdout), (1000, expected));
    // Python exited and did not unlink the segment: it still opens by name.
    let again = shmkit::Array::<f64>::builder().name(&name).open().unwrap();
    assert_eq!(again.get(999).unwrap(), 499.5);
    // A write from Rust is seen by the next Python run (shared, not copied).
    a.set(0, 1e6).unwrap();
    let out = Command::new(python)
        .arg(script)
        .arg(&name)
        .output()
        .unwrap();
    assert_eq!(parse(&out.stdout), (1000, expected + 1e6));
}

/// The snippet's output: the element count and the sum.
fn parse(stdout: &[u8]) -> (u64, f64) {
    let text = String::from_utf8_lossy(stdout);
    let mut words = text.split_whitespace();
    let count = words.next().and_then(|w| w.parse().ok());
    let sum = words.next().and_then(|w| w.parse().ok());
    match (count, sum) {
        (Some(c), Some(s)) => (c, s),
        _ => panic!("python printed {text:?}"),
    }
}

//! The `shmkit` command-line tool, run as a binary against real segments:
//! a stale segment (its creator killed) is listed as stale and removed by
//! `shmkit clean`; a live one is left alone; a queue shows live figures.

mod common;

use common::{unique, watchdog};
use shmkit::{Error, Queue, Value};
use std::process::Command;

fn shmkit(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shmkit"))
        .args(args)
        .output()
        .expect("run the shmkit binary");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Creates a named value and dies without cleaning up (as a SIGKILLed
/// creator does).
fn create_and_die(name: String) {
    let v = Value::<u64>::builder().name(&name).create(7).unwrap();
    std::mem::forget(v);
    // SAFETY: raising SIGKILL at ourselves, on purpose.
    unsafe { libc::raise(libc::SIGKILL) };
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

#[test]
fn clean_removes_a_stale_segment_and_leaves_a_live_one() {
    let _w = watchdog("cli clean");
    let prefix = unique("cli");
    let stale = format!("{prefix}-stale");
    let live = format!("{prefix}-live");
    let died = shmkit::spawn(create_and_die, stale.clone()).unwrap().join();
    assert!(
        matches!(died, Err(Error::ProcessDied { exitcode: -9, .. })),
        "{died:?}"
    );
    assert!(exists(&stale));
    let keep = Value::<u64>::builder().name(&live).create(1).unwrap();

    let (ok, ls) = shmkit(&["ls", "--json"]);
    assert!(ok, "{ls}");
    let entry = |name: &str| {
        let at = ls.find(&format!("\"name\":\"{name}\"")).expect("listed");
        ls[at..at + ls[at..].find('}').unwrap()].to_owned()
    };
    assert!(
        entry(&stale).contains("\"stale\":true"),
        "{}",
        entry(&stale)
    );
    assert!(entry(&live).contains("\"stale\":false"), "{}", entry(&live));
    assert!(entry(&live).contains("\"kind\":\"Value\""));
    let (ok, table) = shmkit(&["ls"]);
    assert!(
        ok && table.contains(&stale) && table.contains("stale"),
        "{table}"
    );

    let (ok, dry) = shmkit(&["clean", "--dry-run", "--prefix", &prefix]);
    assert!(
        ok && dry.contains(&format!("would remove {stale}")),
        "{dry}"
    );
    assert!(!dry.contains(&live));
    assert!(exists(&stale), "a dry run removed it");

    let (ok, out) = shmkit(&["clean", "--json", "--prefix", &prefix]);
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        format!("{{\"dry_run\":false,\"removed\":[\"{stale}\"]}}")
    );
    assert!(!exists(&stale), "the stale segment is still there");
    assert!(exists(&live), "the live segment was removed");
    assert_eq!(keep.load(), 1);
}

#[test]
fn inspect_shows_a_queues_live_figures() {
    let _w = watchdog("cli inspect");
    let name = unique("cli-queue");
    let q = Queue::<u64>::builder()
        .name(&name)
        .capacity(16)
        .create()
        .unwrap();
    let (tx, _rx) = (q.sender().unwrap(), q.receiver().unwrap());
    for i in 0..3 {
        tx.send(i).unwrap();
    }
    let (ok, out) = shmkit(&["inspect", &name, "--json"]);
    assert!(ok, "{out}");
    assert!(out.contains("\"kind\":\"Queue\""), "{out}");
    assert!(
        out.contains("\"queue\":{\"depth\":3,\"capacity\":16,\"senders\":1,\"receivers\":1}"),
        "{out}"
    );
    let (ok, text) = shmkit(&["inspect", &format!("/{name}")]);
    assert!(
        ok && text.contains("3 of 16 slots used, 1 senders, 1 receivers"),
        "{text}"
    );
    let (ok, err) = shmkit(&["inspect", &unique("cli-missing")]);
    assert!(!ok && err.contains("shmkit:"), "{err}");
}

#[test]
fn cleanup_stale_is_a_library_call_too() {
    let _w = watchdog("cleanup_stale");
    let prefix = unique("cli-api");
    let stale = format!("{prefix}-x");
    let _ = shmkit::spawn(create_and_die, stale.clone()).unwrap().join();
    let info = shmkit::region::inspect_segment(&stale).unwrap();
    assert!(info.is_stale() && info.ready && info.kind == "Value");
    let removed =
        shmkit::region::cleanup_stale_matching(|n| n.starts_with(&prefix), false).unwrap();
    assert_eq!(removed, std::slice::from_ref(&stale));
    assert!(!exists(&stale));
}

//! This process's children: who they are (for `active_children`) and who
//! reaps the ones whose handles were dropped while they still ran.
//!
//! The reaper is a thread that exists only while it has children to reap: it
//! polls them with `waitpid(WNOHANG)` and exits when none are left, so a
//! program that joins its children never has it (and `fork` stays possible).

use super::handle::Abandon;
use crate::sys::proc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A child started by this process and not yet reaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its pid.
    pub pid: u32,
    /// Its name (`Process-1`, or the name given to the builder).
    pub name: String,
}

struct Children {
    /// The process these entries belong to: a forked child starts afresh.
    owner: u32,
    /// Unreaped children.
    live: Vec<ChildInfo>,
    /// Children handed to the reaper, with their clean-ups.
    orphans: Vec<(u32, Vec<Abandon>)>,
    /// Whether the reaper thread runs.
    reaper_running: bool,
    /// Children started so far (for default names).
    started: u64,
}

static CHILDREN: Mutex<Children> = Mutex::new(Children {
    owner: 0,
    live: Vec::new(),
    orphans: Vec::new(),
    reaper_running: false,
    started: 0,
});

fn children() -> MutexGuard<'static, Children> {
    let mut c = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    let me = proc::pid();
    if c.owner != me {
        // First use, or we are a forked child holding our parent's list.
        *c = Children {
            owner: me,
            live: Vec::new(),
            orphans: Vec::new(),
            reaper_running: false,
            started: 0,
        };
    }
    c
}

/// Holds the children lock for the caller's scope: a `fork` made while it is
/// held cannot copy it locked by the reaper thread (both processes then
/// release their own copy when the guard drops).
pub(crate) fn lock_for_fork() -> impl Drop {
    children()
}

/// The next child's sequence number, from 1.
pub(crate) fn next_number() -> u64 {
    let mut c = children();
    c.started += 1;
    c.started
}

pub(crate) fn register(pid: u32, name: &str) {
    children().live.push(ChildInfo {
        pid,
        name: name.to_owned(),
    });
}

pub(crate) fn unregister(pid: u32) {
    children().live.retain(|c| c.pid != pid);
}

/// Children started by this process that have not ended (ended ones stay
/// unreaped, so their handles can still collect the exit status).
pub fn active_children() -> Vec<ChildInfo> {
    let live = children().live.clone();
    live.into_iter()
        .filter(|c| !proc::has_exited(c.pid).unwrap_or(true))
        .collect()
}

/// Hands a running child, whose handle is gone, to the reaper.
pub(crate) fn hand_to_reaper(pid: u32, abandons: Vec<Abandon>) {
    let mut c = children();
    c.orphans.push((pid, abandons));
    if !c.reaper_running {
        c.reaper_running = true;
        let spawned = std::thread::Builder::new()
            .name("shmkit-reaper".into())
            .spawn(reap_orphans);
        if spawned.is_err() {
            // No thread: the child stays a zombie until we exit; nothing else
            // breaks. Try again with the next orphan.
            c.reaper_running = false;
        }
    }
}

fn reap_orphans() {
    let mut pause = Duration::from_millis(1);
    loop {
        {
            let mut c = children();
            let mut reaped = Vec::new();
            let orphans = std::mem::take(&mut c.orphans);
            for (pid, abandons) in orphans {
                match proc::reap(pid, false) {
                    Ok(None) => c.orphans.push((pid, abandons)),
                    // Reaped, or not ours any more (ECHILD): done with it.
                    Ok(Some(_)) | Err(_) => {
                        reaped.push(pid);
                        abandons.into_iter().for_each(|f| f());
                    }
                }
            }
            c.live.retain(|ch| !reaped.contains(&ch.pid));
            if c.orphans.is_empty() {
                c.reaper_running = false;
                return;
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

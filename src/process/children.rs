//! This process's children: who they are (for `active_children`) and who
//! reaps the ones whose handles were dropped while they still ran.
//!
//! The reaper is a thread that exists only while it has children to reap: it
//! polls them with `waitpid(WNOHANG)` and exits when none are left, so a
//! program that joins its children never has it (and `fork` stays possible).

use crate::region::handle::Abandon;
use crate::sys::proc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

/// A child started by this process and not yet reaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its pid.
    pub pid: u32,
    /// Its name (`Process-1`, or the name given to the builder).
    pub name: String,
    /// Whether it is a daemon (terminated when this process exits).
    pub daemon: bool,
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

pub(crate) fn register(pid: u32, name: &str, daemon: bool) {
    install_exit_hook();
    children().live.push(ChildInfo {
        pid,
        name: name.to_owned(),
        daemon,
    });
}

/// Whether this process joins its non-daemon children when it exits
/// normally (the default, as Python does).
static JOIN_AT_EXIT: AtomicBool = AtomicBool::new(true);

/// Sets whether a normal exit of this process (`main` returning, or
/// `std::process::exit`) waits for its running non-daemon children, as
/// Python's `multiprocessing` does (the default: `true`). With `false`
/// they run on and are reaped by init. Daemon children are terminated at a
/// normal exit either way (SIGTERM, then SIGKILL after one second), and are
/// killed when this process dies.
pub fn join_children_at_exit(yes: bool) {
    JOIN_AT_EXIT.store(yes, Ordering::SeqCst);
}

fn install_exit_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // Without the hook children are neither joined nor terminated at
        // exit: what happened before it existed, not worth failing a spawn.
        let _ = proc::at_exit(at_exit);
    });
}

/// At a normal exit of the process that started them (not of a forked
/// child that inherited the list): terminates the daemons, then waits for
/// the other children, as Python's `multiprocessing` exit handler does.
extern "C" fn at_exit() {
    // Never wait for the lock at exit: another thread may hold it forever.
    let live = match CHILDREN.try_lock() {
        Ok(c) if c.owner == proc::pid() => c.live.clone(),
        _ => return,
    };
    let running = |c: &&ChildInfo| !proc::has_exited(c.pid).unwrap_or(true);
    let daemons: Vec<u32> = live
        .iter()
        .filter(|c| c.daemon)
        .filter(running)
        .map(|c| c.pid)
        .collect();
    for &pid in &daemons {
        let _ = proc::kill(pid, proc::SIGTERM);
    }
    for &pid in &daemons {
        let ended = proc::pidfd_open(pid)
            .and_then(|fd| proc::poll_readable(&fd, Duration::from_secs(1)))
            .unwrap_or(true);
        if !ended {
            let _ = proc::kill(pid, proc::SIGKILL);
        }
    }
    if JOIN_AT_EXIT.load(Ordering::SeqCst) {
        for c in live.iter().filter(|c| !c.daemon).filter(running) {
            // Blocks until it ends (its status stays for its handle, if any).
            if let Ok(fd) = proc::pidfd_open(c.pid) {
                while let Ok(false) = proc::poll_readable(&fd, Duration::from_secs(3600)) {}
            }
        }
    }
}

pub(crate) fn unregister(pid: u32) {
    children().live.retain(|c| c.pid != pid);
}

/// Children started by this process that have not ended (ended ones stay
/// unreaped, so their handles can still collect the exit status).
#[must_use]
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

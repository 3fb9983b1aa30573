//! The exit watcher behind [`Process::join_async`](super::Process::join_async)
//! (feature `async`): one thread of this process sleeps in `poll` on the
//! pidfds of every awaited child, plus an eventfd that a new registration
//! bumps, and wakes the task awaiting a child when its pidfd becomes
//! readable (the child ended). Pidfds are level-triggered, so a child that
//! ends before its registration is seen at the thread's next `poll`.
//!
//! - The thread starts with the first registration and ends when none is
//!   left, so a program that awaits no child holds no extra thread (a
//!   thread makes [`Builder::fork`](super::Builder::fork) refuse).
//! - A child whose pidfd cannot be opened (Linux before 5.3, or no
//!   descriptor left: `EMFILE`) is registered without one and woken every
//!   [`FALLBACK`] to look again: correct, but it polls.
//! - A registration dropped while the thread sleeps is removed at once; the
//!   thread holds its own reference to each descriptor it sleeps on, so a
//!   descriptor is never closed (and its number reused) under its `poll`.

use crate::sys::{poll, proc};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

/// How often a child registered without a pidfd is looked at.
pub(crate) const FALLBACK: Duration = Duration::from_millis(10);

struct Entry {
    id: u64,
    /// `None`: no pidfd (woken every [`FALLBACK`]).
    fd: Option<Arc<OwnedFd>>,
    waker: Waker,
}

struct Table {
    /// The process the table belongs to: a forked child starts afresh (the
    /// thread was not copied).
    owner: u32,
    next: u64,
    entries: Vec<Entry>,
    /// Whether the thread runs (or is about to end, having seen no entry).
    running: bool,
    control: Option<Arc<OwnedFd>>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    owner: 0,
    next: 0,
    entries: Vec::new(),
    running: false,
    control: None,
});

fn table() -> MutexGuard<'static, Table> {
    let mut t = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let me = proc::pid();
    if t.owner != me {
        // Inherited by fork (or the first use): the entries' tasks and the
        // thread stayed in the parent.
        std::mem::forget(std::mem::take(&mut t.entries));
        t.owner = me;
        t.running = false;
        t.control = None;
    }
    t
}

/// A child awaited by one task; dropping it withdraws the task.
pub(crate) struct Registration {
    id: u64,
    owner: u32,
}

/// Registers `waker` to be woken when the process behind `fd` ends (or
/// every [`FALLBACK`] without one).
pub(crate) fn register(fd: Option<Arc<OwnedFd>>, waker: &Waker) -> std::io::Result<Registration> {
    let mut t = table();
    let control = match &t.control {
        Some(c) => c.clone(),
        None => {
            let c = Arc::new(poll::event_fd()?);
            t.control = Some(c.clone());
            c
        }
    };
    let id = t.next;
    t.next += 1;
    t.entries.push(Entry {
        id,
        fd,
        waker: waker.clone(),
    });
    if t.running {
        poll::event_signal(&control);
    } else {
        let started = std::thread::Builder::new()
            .name("shmkit-exits".into())
            .spawn(move || run(&control));
        if let Err(e) = started {
            t.entries.retain(|e| e.id != id);
            return Err(e);
        }
        t.running = true;
    }
    Ok(Registration { id, owner: t.owner })
}

impl Registration {
    /// Whether the task is still registered (not yet woken): then its
    /// waker is replaced by `waker`.
    pub(crate) fn renew(&self, waker: &Waker) -> bool {
        let mut t = table();
        if t.owner != self.owner {
            return false;
        }
        match t.entries.iter_mut().find(|e| e.id == self.id) {
            Some(e) => {
                if !e.waker.will_wake(waker) {
                    e.waker = waker.clone();
                }
                true
            }
            _ => false,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut t = table();
        if t.owner != self.owner {
            return;
        }
        let before = t.entries.len();
        t.entries.retain(|e| e.id != self.id);
        if t.entries.len() != before
            && let Some(c) = &t.control
        {
            // The thread drops its reference to the pidfd at its next
            // round (and ends if none is left).
            poll::event_signal(c);
        }
    }
}

/// Wakes a task; a waker that panics must not end the thread.
fn wake(w: Waker) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()));
}

/// The watcher thread: sleeps on the control eventfd and every registered
/// pidfd until one is readable, wakes those tasks, and ends when no
/// registration is left.
fn run(control: &OwnedFd) {
    loop {
        // A snapshot: the descriptors (kept open by these references) and
        // the ids they stand for.
        let (held, ids, timed): (Vec<Arc<OwnedFd>>, Vec<u64>, bool) = {
            let mut t = table();
            if t.entries.is_empty() {
                t.running = false;
                return;
            }
            let with_fd = t.entries.iter().filter_map(|e| Some((e.fd.clone()?, e.id)));
            let (held, ids) = with_fd.unzip();
            (held, ids, t.entries.iter().any(|e| e.fd.is_none()))
        };
        let raw: Vec<RawFd> = std::iter::once(control.as_raw_fd())
            .chain(held.iter().map(|f| f.as_raw_fd()))
            .collect();
        let ready = match poll::poll_many(&raw, timed.then_some(FALLBACK)) {
            Ok(ready) => Some(ready),
            // More descriptors than RLIMIT_NOFILE (EINVAL) or no kernel
            // memory (ENOMEM): every task looks for itself, after a pause
            // that keeps this from spinning.
            Err(_) => {
                std::thread::sleep(FALLBACK);
                None
            }
        };
        let woken: Vec<Waker> = {
            let mut t = table();
            let fired: Vec<u64> = match &ready {
                Some(r) => r.iter().filter(|&&i| i > 0).map(|&i| ids[i - 1]).collect(),
                None => t.entries.iter().map(|e| e.id).collect(),
            };
            if ready.as_ref().is_some_and(|r| r.contains(&0)) {
                poll::event_drain(control);
            }
            let (go, stay): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut t.entries)
                .into_iter()
                .partition(|e| e.fd.is_none() || fired.contains(&e.id));
            t.entries = stay;
            go.into_iter().map(|e| e.waker).collect()
        };
        drop(held);
        woken.into_iter().for_each(wake);
    }
}

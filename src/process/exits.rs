//! The exit watcher behind [`Process::join_async`](super::Process::join_async)
//! (feature `async`): one thread of this process sleeps in `poll` on the
//! pidfds of every awaited child, plus an eventfd that a new registration
//! bumps, and wakes the task awaiting a child when its pidfd becomes
//! readable (the child ended). Pidfds are level-triggered, so a child that
//! ends before its registration is seen at the thread's next `poll`.
//!
//! - The thread starts with the first registration and ends 500 ms after
//!   the last one is gone, so a program that awaits no child holds no extra
//!   thread (a thread makes [`Builder::fork`](super::Builder::fork) refuse).
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
    /// Whether a thread runs and will see new entries: set by whoever
    /// starts it, cleared (under the table's lock) by the thread itself
    /// when it decides to end.
    running: bool,
    /// The eventfd that ends the thread's `poll` early; `None` if none could
    /// be made (then the thread polls every [`FALLBACK`]).
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
        // thread stayed in the parent. Their pidfds are closed here; their
        // wakers are the parent's executor's, never run nor dropped here.
        for e in std::mem::take(&mut t.entries) {
            std::mem::forget(e.waker);
            drop(e.fd);
        }
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
///
/// # Errors
/// If the watcher thread cannot be started (the OS refused a thread).
pub(crate) fn register(fd: Option<Arc<OwnedFd>>, waker: &Waker) -> std::io::Result<Registration> {
    let mut t = table();
    if t.control.is_none() {
        // No eventfd (descriptors exhausted): the thread then polls every
        // FALLBACK, and a new entry waits at most that for it.
        t.control = poll::event_fd().ok().map(Arc::new);
    }
    let control = t.control.clone();
    let id = t.next;
    t.next += 1;
    t.entries.push(Entry {
        id,
        fd,
        waker: waker.clone(),
    });
    if t.running {
        if let Some(c) = &control {
            poll::event_signal(c);
        }
    } else {
        let started = std::thread::Builder::new()
            .name("shmkit-exits".into())
            .spawn(move || run(control.as_deref()));
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

/// How long the thread lingers without registrations before it ends (so
/// that joins awaited one after another do not start a thread each).
const IDLE: Duration = Duration::from_millis(500);

/// The watcher thread: sleeps on the control eventfd and every registered
/// pidfd until one is readable, wakes those tasks, and ends after [`IDLE`]
/// without registrations.
fn run(control: Option<&OwnedFd>) {
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        // A snapshot: the descriptors (kept open by these references) and
        // the ids they stand for.
        let (held, ids, timed): (Vec<Arc<OwnedFd>>, Vec<u64>, bool) = {
            let mut t = table();
            if t.entries.is_empty() {
                let since = *idle_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= IDLE {
                    t.running = false;
                    return;
                }
            } else {
                idle_since = None;
            }
            let with_fd = t.entries.iter().filter_map(|e| Some((e.fd.clone()?, e.id)));
            let (held, ids) = with_fd.unzip();
            (held, ids, t.entries.iter().any(|e| e.fd.is_none()))
        };
        // The control eventfd first (index 0), if there is one.
        let base = usize::from(control.is_some());
        let raw: Vec<RawFd> = control
            .map(AsRawFd::as_raw_fd)
            .into_iter()
            .chain(held.iter().map(|f| f.as_raw_fd()))
            .collect();
        let timeout = if timed || control.is_none() {
            Some(FALLBACK)
        } else if idle_since.is_some() {
            Some(IDLE)
        } else {
            None
        };
        let ready = match poll::poll_many(&raw, timeout) {
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
                Some(r) => r
                    .iter()
                    .filter(|&&i| i >= base)
                    .map(|&i| ids[i - base])
                    .collect(),
                None => t.entries.iter().map(|e| e.id).collect(),
            };
            if let Some(c) = control
                && ready.as_ref().is_some_and(|r| r.contains(&0))
            {
                poll::event_drain(c);
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

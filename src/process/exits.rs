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
    /// be made (then the thread polls every [`FALLBACK`]). Made once per
    /// process and owned here alone (the thread polls its number).
    control: Option<OwnedFd>,
    /// Pidfds of withdrawn entries, which the thread may be polling: closed
    /// by the thread once its `poll` has returned, never under it (their
    /// numbers could be reused meanwhile). The thread holds no descriptor
    /// of its own, so a forked child, which has no thread, closes them all.
    retired: Vec<Arc<OwnedFd>>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    owner: 0,
    next: 0,
    entries: Vec::new(),
    running: false,
    control: None,
    retired: Vec::new(),
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
        t.retired.clear();
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
        t.control = poll::event_fd().ok();
    }
    let id = t.next;
    t.next += 1;
    t.entries.push(Entry {
        id,
        fd,
        waker: waker.clone(),
    });
    if t.running {
        if let Some(c) = &t.control {
            poll::event_signal(c);
        }
    } else {
        let started = std::thread::Builder::new()
            .name("shmkit-exits".into())
            .spawn(run);
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
        let Some(i) = t.entries.iter().position(|e| e.id == self.id) else {
            return;
        };
        let e = t.entries.swap_remove(i);
        // The thread may be polling this pidfd: it closes it after its
        // `poll` returns, which this signal makes happen now.
        t.retired.extend(e.fd);
        if let Some(c) = &t.control {
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
/// without registrations. It holds no descriptor: it polls the numbers of
/// descriptors the table owns, which are not closed while it polls
/// (withdrawn ones wait in `retired`).
fn run() {
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        // A snapshot of the numbers to poll and the ids they stand for.
        let (raw, ids, base, timeout) = {
            let mut t = table();
            // No `poll` runs now: the withdrawn pidfds can be closed.
            t.retired.clear();
            let mut idle_left = None;
            if t.entries.is_empty() {
                let since = *idle_since.get_or_insert_with(std::time::Instant::now);
                match IDLE.checked_sub(since.elapsed()) {
                    Some(left) if !left.is_zero() => idle_left = Some(left),
                    _ => {
                        t.running = false;
                        return;
                    }
                }
            } else {
                idle_since = None;
            }
            let control = t.control.as_ref().map(AsRawFd::as_raw_fd);
            let with_fd = t
                .entries
                .iter()
                .filter_map(|e| Some((e.fd.as_ref()?.as_raw_fd(), e.id)));
            let (fds, ids): (Vec<RawFd>, Vec<u64>) = with_fd.unzip();
            let timed = t.entries.iter().any(|e| e.fd.is_none());
            // The control eventfd first (index 0), if there is one.
            let raw: Vec<RawFd> = control.into_iter().chain(fds).collect();
            let timeout = if timed || control.is_none() {
                Some(FALLBACK)
            } else {
                idle_left
            };
            (raw, ids, usize::from(control.is_some()), timeout)
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
            if base == 1
                && ready.as_ref().is_some_and(|r| r.contains(&0))
                && let Some(c) = &t.control
            {
                poll::event_drain(c);
            }
            let (go, stay): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut t.entries)
                .into_iter()
                .partition(|e| e.fd.is_none() || fired.contains(&e.id));
            t.entries = stay;
            go.into_iter().map(|e| e.waker).collect()
        };
        woken.into_iter().for_each(wake);
    }
}

//! The waiter behind every shmkit future: threads of this process that
//! sleep in `futex_waitv` on the shared words pending futures wait on, and
//! wake their [`Waker`]s.
//!
//! - A pending future **registers** its word (the one a blocking wait would
//!   sleep on, with the value it saw) and counts itself among the word's
//!   sleepers, exactly as a blocked thread does, so a peer that changes the
//!   state bumps the word and `FUTEX_WAKE`s it. Then it re-checks its
//!   condition (the same handshake as a blocking sleep: either it sees the
//!   change, or the peer sees it counted) and returns `Pending`.
//! - A **shard** is one thread and up to [`PER_SHARD`] registrations: it
//!   sleeps on all their words at once, plus a private control word that a
//!   new registration bumps (a `futex_waitv` cannot grow while it sleeps).
//!   When a word no longer holds the value its future saw, the thread
//!   removes the registration and wakes the future. More registrations start
//!   more shards: 1,000 pending futures are served by 8 threads, not 1,000.
//! - **Dead peers**: a registration older than [`LOOK_EVERY`] is woken too,
//!   so its future polls again, and the poll looks for dead peers as any
//!   failing wait does: an awaiting receiver notices a killed sender within
//!   the bound of a blocking one. (That wake-up is the only timed one.)
//! - **Cancellation**: dropping a [`Registration`] removes it (and its count
//!   among the sleepers); the thread drops its own reference to the word's
//!   mapping at its next round, which the removal triggers.
//! - A shard thread left without registrations for [`IDLE`] ends, so a
//!   process whose futures are done holds no waiter thread.
//! - Before Linux 5.16 (`futex_waitv` missing) a shard sleeps in slices of
//!   1 ms and checks its words after each: correct, but it polls.
//!
//! [`LOOK_EVERY`]: crate::queue::looks::LOOK_EVERY

use crate::queue::looks::LOOK_EVERY;
use crate::sys::futex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

mod futures;
#[cfg(test)]
mod tests;
mod watch;

pub(crate) use futures::{until, until_any, until_marked};
pub(crate) use watch::Watch;

/// Registrations one shard thread serves: `futex_waitv`'s limit less its
/// control word.
pub(crate) const PER_SHARD: usize = futex::WAITV_MAX - 1;

/// Re-checks per poll after registering (each a fresh attempt when the
/// readiness check says yes); then the poll yields to the executor.
const RECHECKS: u32 = 3;

/// How soon a future registered behind a sender that commits without a
/// fence (`queue::ring::Ring::claimed_not_held`) looks again: that commit
/// may not wake it.
pub(crate) const NAP: Duration = Duration::from_millis(1);

/// How long a shard thread without registrations lingers before it ends
/// (futures that come and go, as in a request loop, reuse it instead of
/// starting a thread each time).
pub(crate) const IDLE: Duration = Duration::from_millis(500);

struct Entry {
    id: u64,
    watch: Watch,
    seen: u32,
    waker: Waker,
    since: Instant,
    /// How long before the future is woken to look again though its word
    /// did not change: [`LOOK_EVERY`], or [`NAP`] behind a sender that may
    /// not wake it.
    every: Duration,
}

/// One thread and its registrations.
struct Shard {
    /// Bumped by every registration and removal: the thread re-reads its
    /// table.
    control: AtomicU32,
    entries: Mutex<Vec<Entry>>,
}

impl Shard {
    fn entries(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A panic while holding it (none is possible: no user code runs
        // under it) leaves a consistent Vec.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poke(&self) {
        self.control.fetch_add(1, Ordering::SeqCst);
        futex::wake(&self.control, 1);
    }

    /// The thread: sleep on every registered word, wake the futures whose
    /// word changed (or whose look is due), repeat; end after [`IDLE`]
    /// without a registration.
    fn run(&self) {
        let mut watched: Vec<(Watch, u32)> = Vec::with_capacity(PER_SHARD);
        loop {
            let control = self.control.load(Ordering::SeqCst);
            watched.clear();
            let mut first = None::<Instant>;
            // At most PER_SHARD by construction (`place`).
            for e in self.entries().iter().take(PER_SHARD) {
                watched.push((e.watch.clone(), e.seen));
                let due = e.since + e.every;
                first = Some(first.map_or(due, |f| f.min(due)));
            }
            if watched.is_empty() {
                // A registration bumps the control word first (`poke`).
                let idle = futex::wait(&self.control, control, Some(IDLE));
                if idle == futex::WaitResult::TimedOut && self.retire() {
                    return;
                }
                continue;
            }
            let mut words: Vec<(*const u32, u32)> = Vec::with_capacity(watched.len() + 1);
            words.push((self.control.as_ptr().cast_const(), control));
            words.extend(watched.iter().map(|(w, seen)| (w.addr(), *seen)));
            // Until the oldest registration's look is due.
            let timeout = first.map_or(Duration::from_secs(3600), |f| {
                f.saturating_duration_since(Instant::now())
            });
            // SAFETY: the control word is ours; every other address is a
            // watched word whose mapping `watched` keeps alive until after
            // the call (its `keep`).
            let woke = match unsafe { futex::wait_any_at(&words, timeout) } {
                Some(r) => r != futex::WaitResult::TimedOut,
                None => {
                    // No futex_waitv (Linux < 5.16): poll in short slices.
                    futex::wait(&self.control, control, Some(Duration::from_millis(1)));
                    false
                }
            };
            drop(words);
            self.fire(woke);
        }
    }

    /// Leaves the shard list if no registration is left: then `place` can
    /// no longer put one here (it looks only at listed shards, under the
    /// list's lock, which this takes before the table's, in `place`'s
    /// order), and the thread may end. A process whose futures are all done
    /// keeps no waiter thread, so `Builder::fork` works in it again.
    fn retire(&self) -> bool {
        let mut shards = SHARDS.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.entries().is_empty() {
            return false;
        }
        shards.1.retain(|s| !std::ptr::eq(Arc::as_ptr(s), self));
        true
    }

    /// Removes and wakes every registration whose word changed or whose
    /// look is due (`woke`: the sleep ended by a change or a wake-up, not by
    /// its timeout).
    fn fire(&self, woke: bool) {
        let _ = woke; // read by the tests' count only
        let now = Instant::now();
        let mut due = Vec::new();
        self.entries().retain(|e| {
            let changed = e.watch.value() != e.seen;
            #[cfg(test)]
            if changed && woke {
                tests::FIRED_BY_CHANGE.fetch_add(1, Ordering::SeqCst);
            }
            let fire = changed || now.saturating_duration_since(e.since) >= e.every;
            if fire {
                e.watch.count(false);
                due.push(e.waker.clone());
            }
            !fire
        });
        for waker in due {
            // A waker that panics (a broken executor) must not end this
            // thread: every future it serves would then wait forever.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
        }
    }
}

/// The shards of this process (and the process they were started in: a
/// forked child has none of its parent's threads, and starts its own).
static SHARDS: Mutex<(u32, Vec<Arc<Shard>>)> = Mutex::new((0, Vec::new()));

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A pending future's registration; dropping it withdraws it.
pub(crate) struct Registration {
    shard: Arc<Shard>,
    id: u64,
    /// The process that registered: a copy of this value in a forked child
    /// must not withdraw the parent's registration (nor give back its
    /// sleeper count a second time).
    pid: u32,
    /// The word and the value registered, for a wake-up to pass on when a
    /// future that was woken is dropped without looking.
    watch: Watch,
    seen: u32,
    /// Dropped by its future's next poll, which looks itself: nothing to
    /// pass on for a wake-up it was given.
    spent: bool,
}

impl Registration {
    /// Withdraws the registration at its future's poll (which is about to
    /// look at the state itself).
    fn spend(mut self) {
        self.spent = true;
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}

/// Registers `waker` to be woken when `watch`'s word no longer holds `seen`
/// (or a dead-peer look is due), counting it among the word's sleepers. The
/// caller re-checks its condition after this, as a blocking sleeper does
/// after counting itself.
///
/// # Errors
/// If no shard thread can be started (the OS refused a thread).
fn register(watch: &Watch, seen: u32, waker: &Waker) -> std::io::Result<Registration> {
    register_every(watch, seen, waker, LOOK_EVERY)
}

/// [`register`], woken after `every` at the latest.
fn register_every(
    watch: &Watch,
    seen: u32,
    waker: &Waker,
    every: Duration,
) -> std::io::Result<Registration> {
    // SYNC(waiters): counted before the caller's re-check, as in
    // `queue::blocking::sleep_until`: a waker that changes the state after
    // that re-check sees the count and bumps the word.
    watch.count(true);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let entry = Entry {
        id,
        watch: watch.clone(),
        seen,
        waker: waker.clone(),
        since: Instant::now(),
        every,
    };
    match place(entry) {
        Ok(shard) => {
            shard.poke();
            Ok(Registration {
                shard,
                id,
                pid: crate::sys::proc::pid(),
                watch: watch.clone(),
                seen,
                spent: false,
            })
        }
        Err(e) => {
            watch.count(false);
            Err(e)
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if crate::sys::proc::pid() != self.pid {
            return;
        }
        let mut entries = self.shard.entries();
        if let Some(i) = entries.iter().position(|e| e.id == self.id) {
            let e = entries.swap_remove(i);
            drop(entries);
            e.watch.count(false);
            // A sleeper withdrawn may have been woken in its place: pass the
            // wake-up on, as a blocked waiter that gives up does (not when
            // its own poll withdraws it: the poll looks itself).
            if !self.spent && e.watch.value() != e.seen {
                e.watch.wake_one();
            }
            self.shard.poke();
        } else if !self.spent && self.watch.value() != self.seen {
            drop(entries);
            // Fired (the word changed, or a look was due) and then dropped
            // before its future looked: the wake-up may have been meant for
            // another sleeper of the word (a peer's `FUTEX_WAKE` of one,
            // taken by this process's waiter thread): pass it on.
            self.watch.wake_one();
        }
    }
}

/// Puts `entry` into a shard with room, starting a new shard if none has
/// any. The room is checked and taken under one lock of the shard's table
/// (with the shard list locked), so no shard ever holds more than
/// [`PER_SHARD`]: one more would make its `futex_waitv` invalid.
fn place(entry: Entry) -> std::io::Result<Arc<Shard>> {
    let mut shards = SHARDS.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = crate::sys::proc::pid();
    if shards.0 != pid {
        // A forked child: its parent's threads do not run here.
        *shards = (pid, Vec::new());
    }
    let mut entry = Some(entry);
    for s in &shards.1 {
        let mut entries = s.entries();
        if entries.len() < PER_SHARD {
            entries.extend(entry.take());
            return Ok(s.clone());
        }
    }
    let shard = Arc::new(Shard {
        control: AtomicU32::new(0),
        entries: Mutex::new(Vec::with_capacity(PER_SHARD)),
    });
    shard.entries().extend(entry.take());
    let run = shard.clone();
    std::thread::Builder::new()
        .name("shmkit-async".into())
        .spawn(move || run.run())?;
    shards.1.push(shard.clone());
    Ok(shard)
}

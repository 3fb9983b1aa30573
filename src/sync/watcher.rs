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
use std::any::Any;
use std::future::Future;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Registrations one shard thread serves: `futex_waitv`'s limit less its
/// control word.
pub(crate) const PER_SHARD: usize = futex::WAITV_MAX - 1;

/// Re-checks per poll after registering (each a fresh attempt when the
/// readiness check says yes); then the poll yields to the executor.
const RECHECKS: u32 = 3;

/// How long a shard thread without registrations lingers before it ends
/// (futures that come and go, as in a request loop, reuse it instead of
/// starting a thread each time).
pub(crate) const IDLE: Duration = Duration::from_millis(500);

/// A shared futex word a future waits on, its sleeper count, and what keeps
/// both mapped.
pub(crate) struct Watch {
    keep: Arc<dyn Any + Send + Sync>,
    word: Word,
    /// The word's sleeper count (none for a lock's owner word, whose
    /// sleepers announce themselves with its contended bit instead).
    waiters: Option<NonNull<AtomicU32>>,
}

/// The futex word of a [`Watch`].
#[derive(Clone, Copy)]
enum Word {
    U32(NonNull<AtomicU32>),
    /// The low half of a 64-bit word (a lock's owner word): read as the
    /// 64-bit atomic it is, given to the kernel as its low 32 bits.
    Low(NonNull<AtomicU64>),
}

// SAFETY: the pointers are into memory that `keep` (Send + Sync) keeps
// mapped; they are only used to reach atomics, which any thread may use.
unsafe impl Send for Watch {}
// SAFETY: as for Send.
unsafe impl Sync for Watch {}

impl Clone for Watch {
    fn clone(&self) -> Self {
        Watch {
            keep: self.keep.clone(),
            word: self.word,
            waiters: self.waiters,
        }
    }
}

impl Watch {
    /// # Safety
    /// `word` and `waiters` must stay valid as long as `keep` lives (they
    /// lie in a mapping it owns).
    pub(crate) unsafe fn new(
        keep: Arc<dyn Any + Send + Sync>,
        word: &AtomicU32,
        waiters: &AtomicU32,
    ) -> Self {
        Watch {
            keep,
            word: Word::U32(NonNull::from(word)),
            waiters: Some(NonNull::from(waiters)),
        }
    }

    /// A watch on the low half of a lock's owner word, which has no sleeper
    /// count: the waiting future sets the word's contended bit itself, so
    /// the holder's unlock wakes the word.
    ///
    /// # Safety
    /// `owner` must stay valid as long as `keep` lives.
    pub(crate) unsafe fn low_half(keep: Arc<dyn Any + Send + Sync>, owner: &AtomicU64) -> Self {
        Watch {
            keep,
            word: Word::Low(NonNull::from(owner)),
            waiters: None,
        }
    }

    /// The word's value (the low 32 bits of a 64-bit word), as the kernel
    /// compares it.
    fn value(&self) -> u32 {
        match self.word {
            // SAFETY: valid while `keep` lives (`new`'s contract), and
            // `self` holds `keep`.
            Word::U32(w) => unsafe { w.as_ref() }.load(Ordering::SeqCst),
            // SAFETY: as above (`low_half`'s contract).
            Word::Low(w) => unsafe { w.as_ref() }.load(Ordering::SeqCst) as u32,
        }
    }

    /// The address the kernel sleeps on.
    fn addr(&self) -> *const u32 {
        match self.word {
            Word::U32(w) => w.as_ptr().cast_const().cast(),
            // SAFETY: as in `value`.
            Word::Low(w) => futex::low_half(unsafe { w.as_ref() }).cast_const(),
        }
    }

    /// Wakes one sleeper of the word.
    fn wake_one(&self) {
        match self.word {
            // SAFETY: as in `value`.
            Word::U32(w) => futex::wake(unsafe { w.as_ref() }, 1),
            // SAFETY: as in `value`.
            Word::Low(w) => futex::wake_low_half(unsafe { w.as_ref() }, 1),
        };
    }

    /// Counts a sleeper in (`true`) or out, where the word has a count.
    fn count(&self, sleeping: bool) {
        if let Some(w) = self.waiters {
            // SAFETY: as in `value`.
            let waiters = unsafe { w.as_ref() };
            if sleeping {
                waiters.fetch_add(1, Ordering::SeqCst);
            } else {
                waiters.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

struct Entry {
    id: u64,
    watch: Watch,
    seen: u32,
    waker: Waker,
    since: Instant,
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
                first = Some(first.map_or(e.since, |f| f.min(e.since)));
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
                (f + LOOK_EVERY).saturating_duration_since(Instant::now())
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
            let fire = changed || now.saturating_duration_since(e.since) >= LOOK_EVERY;
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
    };
    match place(entry) {
        Ok(shard) => {
            shard.poke();
            Ok(Registration {
                shard,
                id,
                pid: crate::sys::proc::pid(),
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
            // wake-up on, as a blocked waiter that gives up does.
            if e.watch.value() != e.seen {
                e.watch.wake_one();
            }
            self.shard.poke();
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

/// The future behind every shmkit async wait: repeats `attempt` (`None`:
/// it would block) until it gives a result, first within the blocking
/// path's short spin (a few µs of the executor's thread, as a blocking
/// `recv` spends before it sleeps). Between polls it is registered
/// on `watch`'s word with the value seen before the failed attempt, and
/// `ready` re-checks the condition after registering (as a blocking
/// sleeper re-checks after counting itself). Dropping it withdraws the
/// registration.
///
/// # Panics
/// If the process cannot start a waiter thread (the OS refused a thread).
pub(crate) fn until<R>(
    watch: Watch,
    mut attempt: impl FnMut() -> Option<R>,
    mut ready: impl FnMut() -> bool,
) -> impl Future<Output = R> {
    // `until_any` for one word, without its vectors: no allocation per
    // future (measured: two allocations per receive cost a tenth of a
    // 1 KiB message's async throughput).
    let mut registration: Option<Registration> = None;
    std::future::poll_fn(move |cx| {
        drop(registration.take());
        let mut backoff = super::wait::Backoff::new();
        let mut rechecks = 0;
        loop {
            let seen = watch.value();
            if let Some(r) = attempt() {
                return Poll::Ready(r);
            }
            if backoff.spin() {
                continue;
            }
            let reg = register(&watch, seen, cx.waker())
                .unwrap_or_else(|e| panic!("shmkit: cannot start the async waiter thread: {e}"));
            // A readiness check that keeps saying yes while the attempt
            // fails (a hint that disagrees with the attempt) must not hold
            // the executor's thread: after a few tries the future yields,
            // asking to be polled again (it must not sleep: the change it
            // saw may have been made before it counted itself, so nobody
            // will bump the word for it).
            if ready() {
                if rechecks < RECHECKS {
                    rechecks += 1;
                    continue; // `reg` is withdrawn as it drops
                }
                cx.waker().wake_by_ref();
            }
            registration = Some(reg);
            return Poll::Pending;
        }
    })
}

/// The future behind an awaited lock: repeats `attempt` until it gives a
/// result; between polls it is registered on `watch`'s word with the value
/// the failed attempt left there (`Err(v)`: the lock's owner word with its
/// contended bit, which the holder's unlock changes and wakes). No spin
/// (a spinner pulls the lock's line away from its holder) and no
/// readiness re-check: the attempt itself marked the word. `Err(0)`: the
/// word kept moving; the future yields and is polled again. Dropping it
/// withdraws the registration.
///
/// # Panics
/// As [`until`].
pub(crate) fn until_marked<R>(
    watch: Watch,
    mut attempt: impl FnMut() -> Result<R, u32>,
) -> impl Future<Output = R> {
    let mut registration: Option<Registration> = None;
    std::future::poll_fn(move |cx| {
        drop(registration.take());
        match attempt() {
            Ok(r) => Poll::Ready(r),
            Err(0) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Err(marked) => {
                registration = Some(register(&watch, marked, cx.waker()).unwrap_or_else(|e| {
                    panic!("shmkit: cannot start the async waiter thread: {e}")
                }));
                Poll::Pending
            }
        }
    })
}

/// [`until`] over several words at once (a select): registered on each,
/// woken by whichever changes first.
///
/// # Panics
/// As [`until`].
pub(crate) fn until_any<R>(
    watches: Vec<Watch>,
    mut attempt: impl FnMut() -> Option<R>,
    mut ready: impl FnMut() -> bool,
) -> impl Future<Output = R> {
    let mut registrations: Vec<Registration> = Vec::new();
    let mut seen: Vec<u32> = Vec::with_capacity(watches.len());
    std::future::poll_fn(move |cx| {
        // Woken (or polled spuriously): the old registrations are spent.
        registrations.clear();
        // The blocking path's short spin first (127 PAUSEs at most, none on
        // one CPU): a reply that comes within it costs no thread wake-up.
        let mut backoff = super::wait::Backoff::new();
        let mut rechecks = 0;
        loop {
            seen.clear();
            seen.extend(watches.iter().map(Watch::value));
            if let Some(r) = attempt() {
                return Poll::Ready(r);
            }
            if backoff.spin() {
                continue;
            }
            for (w, &v) in watches.iter().zip(&seen) {
                let reg = register(w, v, cx.waker()).unwrap_or_else(|e| {
                    panic!("shmkit: cannot start the async waiter thread: {e}")
                });
                registrations.push(reg);
            }
            // As in `until`: a bounded number of re-checks per poll, then
            // a yield (not a sleep) while the check still says ready.
            if ready() {
                if rechecks < RECHECKS {
                    rechecks += 1;
                    registrations.clear(); // withdrawn as they drop
                    continue;
                }
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    /// Registrations fired after a sleep that a change or a wake-up ended
    /// (not the look timeout) and whose word had changed.
    pub(super) static FIRED_BY_CHANGE: AtomicU64 = AtomicU64::new(0);

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// Heap words (a `Vec` keeps them alive) stand in for a shared mapping.
    fn words() -> (Arc<Vec<AtomicU32>>, Watch) {
        let keep = Arc::new(vec![AtomicU32::new(0), AtomicU32::new(0)]);
        // SAFETY: both atomics live in the Vec the watch keeps.
        let watch = unsafe { Watch::new(keep.clone(), &keep[0], &keep[1]) };
        (keep, watch)
    }

    fn wait_for(flag: &Flag) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !flag.0.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "watchdog: never woken");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_changed_word_wakes_its_future_and_a_withdrawn_one_is_gone() {
        let (w, watch) = words();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let before = FIRED_BY_CHANGE.load(Ordering::SeqCst);
        let reg = register(&watch, 0, &waker).unwrap();
        assert_eq!(w[1].load(Ordering::SeqCst), 1, "counted among the sleepers");
        // Let the shard go back to sleep with this word among its own (the
        // registration's poke wakes it once); well before the look is due.
        std::thread::sleep(Duration::from_millis(10));
        // What a peer's wake_one does: change the word, then FUTEX_WAKE.
        w[0].fetch_add(1, Ordering::SeqCst);
        futex::wake(&w[0], 1);
        wait_for(&flag);
        assert!(
            FIRED_BY_CHANGE.load(Ordering::SeqCst) > before,
            "by the change, not a look"
        );
        assert_eq!(w[1].load(Ordering::SeqCst), 0, "no longer a sleeper");
        drop(reg);
        assert_eq!(w[1].load(Ordering::SeqCst), 0);

        // Withdrawn before any change: its count goes, nothing fires.
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let reg = register(&watch, 1, &Waker::from(flag.clone())).unwrap();
        assert_eq!(w[1].load(Ordering::SeqCst), 1);
        drop(reg);
        assert_eq!(w[1].load(Ordering::SeqCst), 0);
        assert!(!flag.0.load(Ordering::SeqCst));
    }

    #[test]
    fn a_registration_whose_word_already_changed_fires_at_once() {
        let (w, watch) = words();
        w[0].store(5, Ordering::SeqCst);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let _reg = register(&watch, 4, &Waker::from(flag.clone())).unwrap();
        wait_for(&flag);
    }

    #[test]
    fn a_shard_left_without_registrations_ends() {
        let (w, watch) = words();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let reg = register(&watch, 0, &Waker::from(flag.clone())).unwrap();
        let shard = Arc::downgrade(&reg.shard);
        w[0].store(1, Ordering::SeqCst);
        futex::wake(&w[0], 1);
        wait_for(&flag);
        drop(reg);
        // Ended after IDLE without registrations (later: other tests may
        // place theirs in the same shard meanwhile).
        let deadline = Instant::now() + Duration::from_secs(60);
        while shard.upgrade().is_some() {
            assert!(Instant::now() < deadline, "watchdog: the shard never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn more_registrations_than_one_shard_holds_start_more_shards() {
        let (_w, watch) = words();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let regs: Vec<_> = (0..=PER_SHARD)
            .map(|_| register(&watch, 0, &waker).unwrap())
            .collect();
        let shards = SHARDS.lock().unwrap().1.len();
        for s in &SHARDS.lock().unwrap().1 {
            assert!(s.entries().len() <= PER_SHARD);
        }
        assert!(
            shards >= 2,
            "{shards} shards for {} registrations",
            regs.len()
        );
        drop(regs);
    }
}

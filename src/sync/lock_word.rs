//! The robust lock algorithm behind every shmkit mutex: one owner word that
//! names its holder, and a poison flag — numbers in shared memory, no address.
//!
//! The implementation is Ulrich Drepper's "mutex 2" from "Futexes Are Tricky"
//! (2011), with the holder's identity in place of the 1/2 states:
//!
//! - The owner word is 0 when free, else the holder's identity word
//!   ([`identity`](super::identity)), whose bit 0 ([`CONTENDED`]) says that
//!   somebody may be sleeping.
//! - **lock**: compare-and-swap 0 → `me`; if that fails, spin briefly; then
//!   set the contended bit on the holder's word and sleep on the word's low
//!   half (the kernel's futex word) while it still reads so, for at most one
//!   *slice*. A locker that has slept takes the lock as `me | CONTENDED`
//!   (others may sleep too), so its unlock wakes the next one.
//! - **unlock**: compare-and-swap `me` → 0; if the word was
//!   `me | CONTENDED`, swap that to 0 and wake one sleeper. Every wake-up
//!   goes through one word's read-modify-writes: none is lost.
//! - **death**: a sleep that times out while the same owner word stands makes
//!   the sleeper check that owner: if no live thread has that id and start
//!   time — the holder died, or the word is garbage — it takes the lock over
//!   with a compare-and-swap and sets the poison flag. Lockers see
//!   `OwnerDied` until a holder clears it, as with a robust pthread mutex. A
//!   blocked locker sees a holder's death within one slice ([`SLICE`] for
//!   the real host); `try_lock` checks at once (the host may answer from a
//!   check less than a slice old).
//!
//! Whatever a peer writes into these words, a locker gets the lock, gets
//! `OwnerDied`, or waits for a live thread: nothing here is dereferenced,
//! and every sleep is bounded by a slice. The futex compares the low 32 bits
//! only: a sleeper may stay asleep across a change of the high half (another
//! holder with the same low half), which is harmless because that holder's
//! word has the contended bit and its unlock wakes somebody.
//!
//! The algorithm makes no system call itself: the [`Host`] sleeps, wakes and
//! checks liveness, so the same code runs on heap memory under loom (see
//! `loom_tests`).

use super::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How long a blocked locker sleeps before it checks that the holder lives:
/// the bound on noticing a holder's death while blocked.
pub(crate) const SLICE: Duration = Duration::from_millis(4);

/// Bit 0 of the owner word: a locker may be sleeping.
pub(crate) const CONTENDED: u64 = super::identity::FLAG;

/// The shared words of one lock.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct LockWords {
    /// 0 when free, else the holder's identity word (| [`CONTENDED`]).
    pub(crate) owner: AtomicU64,
    /// Non-zero from a holder's death until a holder marks the data
    /// consistent.
    pub(crate) poisoned: AtomicU32,
}

/// How a lock attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locked {
    /// Held; no death since the data was last marked consistent.
    Clean,
    /// Held; a holder died (now or earlier) and nobody marked the data
    /// consistent since.
    Poisoned,
    /// Not taken: another thread holds it (`try_lock`) or the deadline passed.
    Busy,
    /// Not taken: the calling thread already holds it.
    Relock,
}

/// Why [`Host::sleep`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slept {
    /// Woken, or the word had already changed: look again.
    Woken,
    /// The sleep timed out (a slice, or the caller's deadline): check the
    /// holder (the host may answer from a recent check).
    SliceEnded,
}

/// What the algorithm needs from its surroundings (the OS, or loom).
pub(crate) trait Host {
    /// The calling thread's identity word (never 0, bit 0 clear).
    fn me(&self) -> u64;
    /// Whether the calling thread holds (or may hold) this lock.
    fn may_hold(&self) -> bool;
    /// Records that the calling thread took (`true`) or released the lock.
    fn note(&self, held: bool);
    /// Whether a live thread has this identity word (bit 0 ignored).
    fn alive(&self, owner: u64) -> bool;
    /// Spins a little; `false` once it is time to sleep.
    fn spin(&mut self) -> bool;
    /// Sleeps while `owner` still reads `seen` (the real host compares the
    /// low 32 bits), for at most one slice and not past the caller's
    /// deadline (reported by [`expired`](Host::expired) next).
    fn sleep(&mut self, owner: &AtomicU64, seen: u64) -> Slept;
    /// Whether the caller's deadline has passed.
    fn expired(&self) -> bool;
    /// Wakes one sleeper on `owner`.
    fn wake(&self, owner: &AtomicU64);
}

/// One round of a contended lock: finished, or look again.
enum Round {
    Done(Locked),
    Again,
}

impl LockWords {
    /// The free, clean state (all zero, as in a fresh segment).
    #[cfg(any(test, loom))]
    pub(crate) fn new() -> Self {
        LockWords {
            owner: AtomicU64::new(0),
            poisoned: AtomicU32::new(0),
        }
    }

    fn take(&self, from: u64, to: u64) -> bool {
        // SYNC: Acquire pairs with the Release of `unlock`: the previous
        // holder's writes are visible to us (AcqRel when taking over from a
        // dead holder costs nothing more on x86).
        self.owner
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    fn finish(&self, host: &impl Host, took_over: bool) -> Locked {
        if took_over {
            self.poisoned.store(1, Ordering::Relaxed);
        }
        host.note(true);
        if self.poisoned.load(Ordering::Relaxed) != 0 {
            Locked::Poisoned
        } else {
            Locked::Clean
        }
    }

    fn take_or_again(&self, host: &impl Host, from: u64, to: u64, took_over: bool) -> Round {
        if self.take(from, to) {
            Round::Done(self.finish(host, took_over))
        } else {
            Round::Again
        }
    }

    /// Takes the lock if it is free, or if its owner word names no live
    /// thread (checked by the host, which may answer from a recent check).
    pub(crate) fn try_lock(&self, host: &mut impl Host) -> Locked {
        let me = host.me();
        let seen = match self
            .owner
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => return self.finish(host, false),
            Err(seen) => seen,
        };
        match self.stale(host, me, seen) {
            Some(Round::Done(done)) => done,
            Some(Round::Again) => Locked::Busy,
            None if !host.alive(seen) => {
                // Keep the contended bit: sleepers may wait on this word.
                match self.take_or_again(host, seen, me | (seen & CONTENDED), true) {
                    Round::Done(done) => done,
                    Round::Again => Locked::Busy,
                }
            }
            None => Locked::Busy,
        }
    }

    /// One attempt of an awaiting locker (a future, which cannot sleep
    /// here): takes the lock if it is free, or if its owner word names no
    /// live thread (the host may answer from a recent check), or names the
    /// calling thread without it holding the lock (forged); else sets the
    /// contended bit on the holder's word, so that its unlock wakes the
    /// word, and returns the word as marked: the caller sleeps while the
    /// word still holds it (a value read before this attempt could be one
    /// the word returns to, 0 after an unlock, and the wake-up would be
    /// lost to a sleep that starts after it). A lock the calling thread
    /// holds (another task of the same thread holds the guard) is busy too,
    /// not [`Locked::Relock`]: the task waits for the other to unlock.
    /// `Err(0)` (look again) after a few rounds in which the word kept
    /// moving.
    ///
    /// `waited`: the caller waited before (it may have been the one woken,
    /// and others may sleep): it takes the lock as contended, as a blocked
    /// locker that slept does, so its unlock wakes the next. `look`: the
    /// holder has stood for a slice, so its liveness is checked (as a
    /// blocked locker checks when its slice ends, not at every wake-up).
    #[cfg(any(feature = "async", loom))]
    pub(crate) fn try_lock_marking(
        &self,
        host: &mut impl Host,
        waited: bool,
        look: bool,
    ) -> Result<Locked, u64> {
        let me = host.me();
        let flag = if waited { CONTENDED } else { 0 };
        // A few rounds: each failed compare-and-swap means the word moved
        // (a peer locked, unlocked or marked it); garbage a peer keeps
        // rewriting cannot hold the executor's thread.
        for _ in 0..4 {
            let seen = self.owner.load(Ordering::Relaxed);
            let round = if seen == 0 {
                self.take_or_again(host, 0, me | flag, false)
            } else if seen & !CONTENDED == me && !host.may_hold() {
                // Forged, as in `stale`.
                self.take_or_again(host, seen, seen | flag, true)
            } else if look && seen & !CONTENDED != me && !host.alive(seen) {
                self.take_or_again(host, seen, me | (seen & CONTENDED), true)
            } else if seen & CONTENDED != 0 || self.take(seen, seen | CONTENDED) {
                return Err(seen | CONTENDED);
            } else {
                Round::Again
            };
            if let Round::Done(done) = round {
                return Ok(done);
            }
        }
        Err(0)
    }

    /// What to do with an owner word that is free or names the calling
    /// thread; `None` for a word naming somebody else.
    fn stale(&self, host: &impl Host, me: u64, seen: u64) -> Option<Round> {
        if seen == 0 {
            return Some(self.take_or_again(host, 0, me, false));
        }
        if seen & !CONTENDED == me {
            if host.may_hold() {
                return Some(Round::Done(Locked::Relock));
            }
            // Our identity, but we do not hold it: forged, or left by a
            // thread whose id and start time we now reuse (impossible).
            return Some(self.take_or_again(host, seen, seen, true));
        }
        None
    }

    /// Blocks until the lock is taken or the host's deadline passes.
    #[inline]
    pub(crate) fn lock(&self, host: &mut impl Host) -> Locked {
        let me = host.me();
        match self
            .owner
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => self.finish(host, false),
            Err(seen) => self.lock_contended(host, me, seen),
        }
    }

    /// The rest of [`lock`](Self::lock) once the lock was not free: out of
    /// line, so the free path saves no registers and sets up no frame for
    /// it.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self, host: &mut impl Host, me: u64, seen: u64) -> Locked {
        let mut seen = seen;
        // Whether we slept: from then on we take the lock as contended.
        let mut slept = false;
        loop {
            let flag = if slept { CONTENDED } else { 0 };
            let round = if seen == 0 {
                self.take_or_again(host, 0, me | flag, false)
            } else if let Some(r) = self.stale(host, me, seen) {
                r
            } else if host.spin() {
                Round::Again
            } else if host.expired() {
                // Before giving up, as `try_lock` does: a holder that is not
                // alive is taken over (a loop of short timeouts must notice
                // a death too, even one whose deadline passes while spinning).
                if !host.alive(seen)
                    && let Round::Done(done) =
                        self.take_or_again(host, seen, me | (seen & CONTENDED), true)
                {
                    return done;
                }
                if slept {
                    // We may have been the one woken: pass the wake-up on.
                    host.wake(&self.owner);
                }
                return Locked::Busy;
            } else {
                slept = true;
                self.sleep_once(host, me, seen)
            };
            match round {
                Round::Done(done) => return done,
                // Look again with a compare-and-swap from free rather than a
                // load: a woken locker then takes the cache line once, for
                // writing, instead of reading it and then writing it (measured
                // on the 2-process bench: the reload after a wake-up was 14%
                // of the lock's samples).
                Round::Again => {
                    let flag = if slept { CONTENDED } else { 0 };
                    match self.owner.compare_exchange(
                        0,
                        me | flag,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return self.finish(host, false),
                        Err(now) => seen = now,
                    }
                }
            }
        }
    }

    /// Marks the holder's word contended and sleeps once on it; takes the
    /// lock over if the sleep timed out and the holder is not alive.
    fn sleep_once(&self, host: &mut impl Host, me: u64, seen: u64) -> Round {
        let marked = seen | CONTENDED;
        if seen != marked && !self.take(seen, marked) {
            return Round::Again;
        }
        if host.sleep(&self.owner, marked) == Slept::SliceEnded
            && self.owner.load(Ordering::Relaxed) == marked
            && !host.alive(marked)
        {
            return self.take_or_again(host, marked, me | CONTENDED, true);
        }
        Round::Again
    }

    /// Releases the lock if the calling thread holds it (a peer may have
    /// overwritten the word: then there is nothing of ours to release).
    #[inline]
    pub(crate) fn unlock(&self, host: &impl Host) {
        host.note(false);
        let me = host.me();
        // SYNC: Release pairs with the Acquire of `take`.
        if let Err(now) = self
            .owner
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
        {
            self.unlock_contended(host, me, now);
        }
    }

    /// The rest of [`unlock`](Self::unlock) once the word was not plainly
    /// ours: wake a sleeper, or leave a word a peer overwrote.
    #[cold]
    #[inline(never)]
    fn unlock_contended(&self, host: &impl Host, me: u64, now: u64) {
        // Only we change a word naming us (sleepers only set the bit, which
        // is set): this succeeds unless a peer wrote. Any other word is not
        // ours to release.
        if now == me | CONTENDED
            && self
                .owner
                .compare_exchange(now, 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
        {
            host.wake(&self.owner);
        }
    }

    /// Whether a holder died and nobody marked the data consistent since.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed) != 0
    }

    /// Clears the poison flag. The caller holds the lock.
    pub(crate) fn clear_poison(&self) {
        self.poisoned.store(0, Ordering::Relaxed);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.max_branches = 100_000;
        b.check(f);
    }

    /// The lock, a futex emulation (the kernel's compare-and-sleep is atomic
    /// with respect to wakes: here, under `futex`), the identity words of dead
    /// threads, and a protected counter that is not atomic in effect.
    struct Shared {
        lock: LockWords,
        futex: Mutex<()>,
        cv: Condvar,
        dead: AtomicU64,
        counter: AtomicU64,
    }

    struct LoomHost<'a> {
        shared: &'a Shared,
        me: u64,
        held: std::cell::Cell<bool>,
    }

    impl Host for LoomHost<'_> {
        fn me(&self) -> u64 {
            self.me
        }
        fn may_hold(&self) -> bool {
            self.held.get()
        }
        fn note(&self, held: bool) {
            self.held.set(held);
        }
        fn alive(&self, owner: u64) -> bool {
            let owner = owner & !CONTENDED;
            owner != self.shared.dead.load(Ordering::SeqCst) && [2, 4, 6, 8].contains(&owner)
        }
        fn spin(&mut self) -> bool {
            false
        }
        fn sleep(&mut self, owner: &AtomicU64, seen: u64) -> Slept {
            let g = self.shared.futex.lock().unwrap();
            // A dead (or garbage) holder: the slice times out. (Checked under
            // the futex lock, under which deaths are announced.)
            let now = owner.load(Ordering::SeqCst);
            if now != 0 && !self.alive(now) {
                return Slept::SliceEnded;
            }
            if now == seen {
                drop(self.shared.cv.wait(g).unwrap());
            }
            Slept::Woken
        }
        fn expired(&self) -> bool {
            false
        }
        fn wake(&self, _owner: &AtomicU64) {
            let _g = self.shared.futex.lock().unwrap();
            self.shared.cv.notify_all();
        }
    }

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            lock: LockWords::new(),
            futex: Mutex::new(()),
            cv: Condvar::new(),
            dead: AtomicU64::new(0),
            counter: AtomicU64::new(0),
        })
    }

    fn host(shared: &Shared, me: u64) -> LoomHost<'_> {
        LoomHost {
            shared,
            me,
            held: std::cell::Cell::new(false),
        }
    }

    /// The critical section: a load and a store, so a lost update shows
    /// that two threads held the lock at once.
    fn add_one(s: &Shared) {
        let v = s.counter.load(Ordering::Relaxed);
        s.counter.store(v + 1, Ordering::Relaxed);
    }

    /// Increments under the lock.
    fn increment(s: &Shared, me: u64) {
        let mut h = host(s, me);
        assert_eq!(s.lock.lock(&mut h), Locked::Clean);
        add_one(s);
        s.lock.unlock(&h);
    }

    #[test]
    fn excludes_and_never_loses_a_wakeup() {
        model(|| {
            let s = shared();
            let s2 = s.clone();
            let t = thread::spawn(move || increment(&s2, 4));
            increment(&s, 2);
            t.join().unwrap();
            assert_eq!(s.counter.load(Ordering::Relaxed), 2);
            assert_eq!(s.lock.owner.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn three_lockers() {
        model(|| {
            let s = shared();
            let ts: Vec<_> = [4u64, 6]
                .into_iter()
                .map(|me| {
                    let s = s.clone();
                    thread::spawn(move || increment(&s, me))
                })
                .collect();
            increment(&s, 2);
            for t in ts {
                t.join().unwrap();
            }
            assert_eq!(s.counter.load(Ordering::Relaxed), 3);
        });
    }

    #[test]
    fn a_dead_holder_is_taken_over_and_poison_stays() {
        model(|| {
            let s = shared();
            let s2 = s.clone();
            // Thread 2 takes the lock and dies holding it.
            let t = thread::spawn(move || {
                let mut h = host(&s2, 4);
                assert_eq!(s2.lock.lock(&mut h), Locked::Clean);
                // Dying; time passes: a sleeper's slice ends (the real sleep
                // has a timeout; loom's condition variable has none).
                let _g = s2.futex.lock().unwrap();
                s2.dead.store(4, Ordering::SeqCst);
                s2.cv.notify_all();
            });
            let mut h = host(&s, 2);
            // Either we got it first (and release it), or it was taken over.
            let first = s.lock.lock(&mut h);
            s.lock.unlock(&h);
            t.join().unwrap();
            let second = s.lock.lock(&mut h);
            if first == Locked::Clean && s.lock.owner.load(Ordering::SeqCst) & !CONTENDED == 2 {
                // Thread 2 ran after our first unlock and died holding: the
                // second lock took it over.
                assert_eq!(second, Locked::Poisoned);
            }
            s.lock.clear_poison();
            s.lock.unlock(&h);
            assert_eq!(s.lock.lock(&mut h), Locked::Clean);
        });
    }

    #[test]
    fn garbage_owner_is_taken_over() {
        model(|| {
            let s = shared();
            s.lock.owner.store(99, Ordering::SeqCst);
            let s2 = s.clone();
            let t = thread::spawn(move || increment_poisoned(&s2, 4));
            increment_poisoned(&s, 2);
            t.join().unwrap();
            assert_eq!(s.counter.load(Ordering::Relaxed), 2);
        });
    }

    /// Increments under the lock taken as a future does
    /// (`try_lock_marking`, then a wait while the word holds the value the
    /// attempt marked, as the waiter thread's `futex_waitv` does).
    fn increment_awaiting(s: &Shared, me: u64) {
        let mut h = host(s, me);
        let mut waited = false;
        loop {
            let seen = match s.lock.try_lock_marking(&mut h, waited, true) {
                Ok(Locked::Clean) => break,
                Ok(other) => panic!("{other:?}"),
                Err(0) => continue, // the word kept moving: look again
                Err(seen) => seen,
            };
            waited = true;
            let g = s.futex.lock().unwrap();
            if s.lock.owner.load(Ordering::SeqCst) == seen {
                drop(s.cv.wait(g).unwrap());
            }
        }
        add_one(s);
        s.lock.unlock(&h);
    }

    #[test]
    fn an_awaiting_locker_excludes_and_is_woken() {
        model(|| {
            let s = shared();
            let s2 = s.clone();
            let t = thread::spawn(move || increment(&s2, 4));
            increment_awaiting(&s, 2);
            t.join().unwrap();
            assert_eq!(s.counter.load(Ordering::Relaxed), 2);
            assert_eq!(s.lock.owner.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn awaiting_and_blocked_lockers_pass_the_wake_up_on() {
        model(|| {
            let s = shared();
            let ts: Vec<_> = [4u64, 6]
                .into_iter()
                .map(|me| {
                    let s = s.clone();
                    thread::spawn(move || {
                        if me == 4 {
                            increment_awaiting(&s, me)
                        } else {
                            increment(&s, me)
                        }
                    })
                })
                .collect();
            increment_awaiting(&s, 2);
            for t in ts {
                t.join().unwrap();
            }
            assert_eq!(s.counter.load(Ordering::Relaxed), 3);
            assert_eq!(s.lock.owner.load(Ordering::Relaxed), 0);
        });
    }

    fn increment_poisoned(s: &Shared, me: u64) {
        let mut h = host(s, me);
        assert_eq!(s.lock.lock(&mut h), Locked::Poisoned);
        add_one(s);
        s.lock.unlock(&h);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A host with no sleeping: every sleep is a slice that ended.
    struct Fake {
        me: u64,
        live: Vec<u64>,
        held: Cell<bool>,
        deadline_in: Cell<u32>,
        wakes: Cell<u32>,
    }

    impl Host for Fake {
        fn me(&self) -> u64 {
            self.me
        }
        fn may_hold(&self) -> bool {
            self.held.get()
        }
        fn note(&self, held: bool) {
            self.held.set(held);
        }
        fn alive(&self, owner: u64) -> bool {
            self.live.contains(&(owner & !CONTENDED))
        }
        fn spin(&mut self) -> bool {
            false
        }
        fn sleep(&mut self, _: &AtomicU64, _: u64) -> Slept {
            Slept::SliceEnded
        }
        fn expired(&self) -> bool {
            let n = self.deadline_in.get();
            self.deadline_in.set(n.saturating_sub(1));
            n == 0
        }
        fn wake(&self, _: &AtomicU64) {
            self.wakes.set(self.wakes.get() + 1);
        }
    }

    fn fake(me: u64, live: &[u64]) -> Fake {
        Fake {
            me,
            live: live.to_vec(),
            held: Cell::new(false),
            deadline_in: Cell::new(u32::MAX),
            wakes: Cell::new(0),
        }
    }

    #[test]
    fn relock_forged_contended_and_live_holders() {
        let l = LockWords::new();
        let mut a = fake(6, &[6, 8]);
        assert_eq!(l.lock(&mut a), Locked::Clean);
        assert_eq!(l.try_lock(&mut a), Locked::Relock);
        assert_eq!(l.lock(&mut a), Locked::Relock);
        // Another live thread: try says busy; a deadline ends a blocked lock,
        // which marked the word contended and passes its wake-up on.
        let mut b = fake(8, &[6, 8]);
        assert_eq!(l.try_lock(&mut b), Locked::Busy);
        b.deadline_in.set(3);
        assert_eq!(l.lock(&mut b), Locked::Busy);
        assert_eq!(l.owner.load(Ordering::Relaxed), 6 | CONTENDED);
        assert_eq!(b.wakes.get(), 1);
        // The holder's unlock of a contended word wakes a sleeper.
        l.unlock(&a);
        assert_eq!(l.owner.load(Ordering::Relaxed), 0);
        assert_eq!(a.wakes.get(), 1);
        // An uncontended unlock does not.
        assert_eq!(l.lock(&mut a), Locked::Clean);
        l.unlock(&a);
        assert_eq!(a.wakes.get(), 1);
        // Our own word, which we do not hold (forged): taken over, poisoned.
        l.owner.store(8, Ordering::Relaxed);
        let mut b = fake(8, &[6, 8]);
        assert_eq!(l.lock(&mut b), Locked::Poisoned);
        l.clear_poison();
        l.unlock(&b);
        assert_eq!(l.try_lock(&mut b), Locked::Clean);
        // Unlock by a thread that does not hold it changes nothing.
        l.unlock(&a);
        assert_eq!(l.owner.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn garbage_everywhere_never_wedges() {
        for owner in [u64::MAX, 1, 3, 0xdead_beef_0000_0000, 9, 6 | CONTENDED] {
            for poisoned in [0, 1, u32::MAX] {
                let l = LockWords::new();
                l.owner.store(owner, Ordering::Relaxed);
                l.poisoned.store(poisoned, Ordering::Relaxed);
                let mut h = fake(8, &[8]);
                assert_eq!(l.lock(&mut h), Locked::Poisoned, "{owner:#x}");
                l.unlock(&h);
                assert_eq!(l.owner.load(Ordering::Relaxed), 0);
                l.owner.store(owner, Ordering::Relaxed);
                let mut h = fake(8, &[8]);
                assert_eq!(l.try_lock(&mut h), Locked::Poisoned);
            }
        }
    }
}

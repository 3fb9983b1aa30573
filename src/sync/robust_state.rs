//! [`RobustState`]: the shared state of a primitive whose holders may die —
//! RwLock, Semaphore, Barrier — kept so that a death at any instruction is
//! undone or given back.
//!
//! Every change happens under a robust lock ([`RawMutex`]) and writes through
//! a small undo journal: a transaction records each cell's old value before
//! it writes the new one, and clears the journal when done. A locker that
//! takes the lock over from a dead holder (the lock reports it poisoned)
//! rolls the journal back first, so the cells are as the last complete
//! transaction left them.
//!
//! Holders are recorded in a table of [`SLOTS`] entries (identity word,
//! count), changed in the same transactions as the counts they explain. A
//! waiter that sleeps a whole slice without news looks for entries whose
//! thread is not alive ([`identity::alive`]) and gives their holdings back
//! (the primitive says how), so that a holder's death is undone within about
//! one slice of a waiter noticing.
//!
//! Whatever a peer writes here, nothing is dereferenced: cells are numbers,
//! journal indices are bounds-checked, a garbage journal length is clamped,
//! garbage holders are not alive and are given back (at worst a count is
//! wrong, which the primitives clamp; never a crash or a wait for a thread
//! that does not exist).

use crate::sync::identity;
use crate::sync::mutex::{Acquired, LINE_REST, RawMutex};
use crate::sync::wait::{Backoff, remaining};
use crate::sys::futex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Holders recorded at once (distinct threads holding a read lock, permits
/// or a barrier arrival). More wait for a slot.
pub(crate) const SLOTS: usize = 64;
/// The primitive's own cells.
pub(crate) const CELLS: usize = 8;
/// Writes one transaction may make.
const JOURNAL: usize = 6;
/// How long a waiter sleeps before it looks for dead holders.
pub(crate) const SLICE: Duration = Duration::from_millis(10);

/// One recorded holder.
#[repr(C)]
#[derive(Debug)]
struct Holder {
    /// The holder's identity word, 0 when free.
    who: AtomicU64,
    /// What it holds (the primitive's unit).
    count: AtomicU64,
}

/// The shared state: lock, wake word, journal, cells and holders.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct RobustState {
    lock: RawMutex,
    /// The lock keeps its cache line (sleepers wait on the words below).
    _lock_line: [u8; LINE_REST],
    /// Bumped by every transaction that may let a waiter on (the futex word).
    seq: AtomicU32,
    waiters: AtomicU32,
    /// Valid journal entries (clamped to [`JOURNAL`] when read).
    journal_len: AtomicU64,
    /// (cell index, old value).
    journal: [[AtomicU64; 2]; JOURNAL],
    cells: [AtomicU64; CELLS],
    holders: [Holder; SLOTS],
}

/// A transaction: the lock is held; writes are journaled.
pub(crate) struct Tx<'a> {
    st: &'a RobustState,
    changed: bool,
}

/// Cell index of holder `slot`'s identity word (holders follow the cells).
const fn who_cell(slot: usize) -> usize {
    CELLS + 2 * slot
}

impl Tx<'_> {
    fn cell(&self, i: usize) -> &AtomicU64 {
        if i < CELLS {
            &self.st.cells[i]
        } else {
            let h = &self.st.holders[(i - CELLS) / 2];
            if (i - CELLS).is_multiple_of(2) {
                &h.who
            } else {
                &h.count
            }
        }
    }

    /// Cell `i` of the primitive.
    pub(crate) fn get(&self, i: usize) -> u64 {
        self.cell(i).load(Ordering::Relaxed)
    }

    /// Writes cell `i` (journaled: undone if we die before the end).
    pub(crate) fn set(&mut self, i: usize, v: u64) {
        let old = self.get(i);
        if old == v {
            return;
        }
        // Our transactions make at most JOURNAL writes between commits; a
        // larger length is a peer's garbage: clamp (the rollback of a
        // scribbled journal is as good as the scribble, never out of bounds).
        let n = (self.st.journal_len.load(Ordering::Relaxed) as usize).min(JOURNAL - 1);
        self.st.journal[n][0].store(i as u64, Ordering::Relaxed);
        self.st.journal[n][1].store(old, Ordering::Relaxed);
        // SYNC: Release: the entry is complete before it counts (a taker-over
        // acquires the lock, which orders all of this anyway).
        self.st.journal_len.store(n as u64 + 1, Ordering::Release);
        self.cell(i).store(v, Ordering::Relaxed);
        self.changed = true;
    }

    /// Ends one transaction and starts the next (the journal is cleared).
    pub(crate) fn commit(&mut self) {
        self.st.journal_len.store(0, Ordering::Release);
    }

    /// The holder entry `slot`: (identity, count).
    pub(crate) fn holder(&self, slot: usize) -> (u64, u64) {
        (self.get(who_cell(slot)), self.get(who_cell(slot) + 1))
    }

    /// Sets holder `slot` (an identity of 0 frees it).
    pub(crate) fn set_holder(&mut self, slot: usize, who: u64, count: u64) {
        self.set(who_cell(slot), who);
        self.set(who_cell(slot) + 1, count);
    }

    /// The slot recorded for `me` for which `mine` holds, else a slot that
    /// `free` says is free; `None` when the table is full.
    pub(crate) fn slot_of(&self, me: u64, free: impl Fn(u64, u64) -> bool) -> Option<usize> {
        let mut empty = None;
        for slot in 0..SLOTS {
            let (who, count) = self.holder(slot);
            if who == me && !free(who, count) {
                return Some(slot);
            }
            if empty.is_none() && (who == 0 || free(who, count)) {
                empty = Some(slot);
            }
        }
        empty
    }

    /// Gives back the holdings of every holder whose thread is not alive:
    /// `give_back(tx, count)` undoes what `count` held, then the entry is
    /// freed; one transaction per holder. Returns how many were found.
    pub(crate) fn reap_dead(&mut self, mut give_back: impl FnMut(&mut Self, u64, u64)) -> usize {
        let mut found = 0;
        for slot in 0..SLOTS {
            let (who, count) = self.holder(slot);
            if who != 0 && !identity::alive(who) {
                give_back(self, who, count);
                self.set_holder(slot, 0, 0);
                self.commit();
                found += 1;
            }
        }
        found
    }
}

impl RobustState {
    /// Initialises the state in place: everything zero, then `cells`.
    ///
    /// # Safety
    /// `this` must be valid for writes and not in use by anyone.
    pub(crate) unsafe fn init(this: *mut RobustState, cells: &[(usize, u64)]) {
        // SAFETY: forwarded to the caller; all-zero is a valid state of every
        // field (atomics, a free clean lock).
        unsafe {
            std::ptr::write_bytes(this, 0, 1);
            for &(i, v) in cells {
                (*this).cells[i].store(v, Ordering::Relaxed);
            }
        }
    }

    /// Cell `i`, read without the lock (a snapshot).
    pub(crate) fn peek(&self, i: usize) -> u64 {
        self.cells[i].load(Ordering::Relaxed)
    }

    /// Whether a holder slot is free or names `me`, read without the lock
    /// (a hint, for a future's readiness check).
    #[cfg(feature = "async")]
    pub(crate) fn peek_slot_for(&self, me: u64) -> bool {
        self.holders.iter().any(|h| {
            let who = h.who.load(Ordering::Relaxed);
            who == 0 || who == me
        })
    }

    /// Runs `f` as a transaction under the lock; wakes waiters if it wrote.
    pub(crate) fn transact<R>(&self, f: impl FnOnce(&mut Tx<'_>) -> R) -> R {
        // A dead holder's half transaction is undone; so is a journal that a
        // peer scribbled on (every transaction of ours ends committed).
        if self.lock.lock() == Acquired::Poisoned || self.journal_len.load(Ordering::Relaxed) != 0 {
            self.roll_back();
        }
        let mut tx = Tx {
            st: self,
            changed: false,
        };
        let r = f(&mut tx);
        tx.commit();
        let changed = tx.changed;
        // SAFETY: we took the lock above, on this thread.
        unsafe { self.lock.unlock() };
        if changed {
            self.wake_all();
        }
        r
    }

    /// Undoes a dead holder's unfinished transaction. The lock is held.
    fn roll_back(&self) {
        let n = (self.journal_len.load(Ordering::Acquire) as usize).min(JOURNAL);
        let tx = Tx {
            st: self,
            changed: false,
        };
        for k in (0..n).rev() {
            let i = self.journal[k][0].load(Ordering::Relaxed);
            if i < (CELLS + 2 * SLOTS) as u64 {
                tx.cell(i as usize).store(
                    self.journal[k][1].load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
            }
        }
        self.journal_len.store(0, Ordering::Release);
        // SAFETY: we hold the lock (we just took it over).
        unsafe { self.lock.clear_poison() };
    }

    fn wake_all(&self) {
        // SYNC(waiters): the bump and the waiters read pair with the
        // sleeper's increment and seq compare in `wait_for`.
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake(&self.seq, u32::MAX);
        }
    }

    /// Repeats `attempt` (a transaction) until it returns `Some`, or
    /// `deadline` passes (`None`). Between attempts it spins briefly, then
    /// sleeps until a transaction changes something, for at most a slice;
    /// after a slice without news it runs `reap` (a transaction that gives
    /// back what dead holders held).
    pub(crate) fn wait_for<R>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut Tx<'_>) -> Option<R>,
        mut reap: impl FnMut(&mut Tx<'_>),
    ) -> Option<R> {
        let mut backoff = Backoff::new();
        loop {
            let seen = self.seq.load(Ordering::SeqCst);
            if let Some(r) = self.transact(&mut attempt) {
                return Some(r);
            }
            if backoff.spin() {
                continue;
            }
            let Ok(left) = remaining(deadline) else {
                return None;
            };
            let slice = left.map_or(SLICE, |l| l.min(SLICE));
            // SYNC(waiters): see `wake_all`.
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let r = futex::wait(&self.seq, seen, Some(slice));
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if r == futex::WaitResult::TimedOut {
                self.transact(&mut reap);
            }
        }
    }
}

/// The futures' side (feature `async`).
#[cfg(feature = "async")]
impl RobustState {
    /// [`wait_for`](Self::wait_for) as a future, without a deadline: the
    /// attempt is repeated on every poll, and between polls the future is
    /// registered with the process's waiter on the word a blocked waiter
    /// sleeps on (`keep` owns the mapping); `ready` re-checks without the
    /// lock after registering. `reap` runs once a slice (10 ms) has passed
    /// since the last failed attempt that reaped, on the coarse clock: an
    /// idle future is polled at least every 50 ms (the waiter's look), so a
    /// dead holder is noticed within that.
    pub(crate) fn until<'a, R: 'a>(
        &'a self,
        keep: std::sync::Arc<dyn std::any::Any + Send + Sync>,
        mut attempt: impl FnMut(&mut Tx<'_>) -> Option<R> + 'a,
        mut reap: impl FnMut(&mut Tx<'_>) + 'a,
        ready: impl FnMut() -> bool + 'a,
    ) -> impl std::future::Future<Output = R> + 'a {
        use crate::sync::watcher::{self, Watch};
        use crate::sys::clock;
        // SAFETY: both words lie in the state's mapping, which `keep` owns.
        let watch = unsafe { Watch::new(keep, &self.seq, &self.waiters) };
        let mut reaped_at: Option<u64> = None;
        watcher::until(
            watch,
            move || {
                if let Some(r) = self.transact(&mut attempt) {
                    return Some(r);
                }
                let now = clock::monotonic_coarse_ns();
                match reaped_at {
                    None => reaped_at = Some(now),
                    Some(t) if now.saturating_sub(t) >= SLICE.as_nanos() as u64 => {
                        reaped_at = Some(now);
                        self.transact(&mut reap);
                        return self.transact(&mut attempt);
                    }
                    Some(_) => {}
                }
                None
            },
            ready,
            || false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layout() {
        assert_eq!(offset_of!(RobustState, lock), 0);
        assert_eq!(offset_of!(RobustState, seq), 64);
        assert_eq!(offset_of!(RobustState, waiters), 68);
        assert_eq!(offset_of!(RobustState, journal_len), 72);
        assert_eq!(offset_of!(RobustState, journal), 80);
        assert_eq!(offset_of!(RobustState, cells), 80 + 16 * JOURNAL);
        assert_eq!(
            offset_of!(RobustState, holders),
            80 + 16 * JOURNAL + 8 * CELLS
        );
        assert_eq!(size_of::<RobustState>(), 1280);
    }

    fn fresh() -> Box<RobustState> {
        let mut b = Box::<RobustState>::new_uninit();
        // SAFETY: a fresh allocation nobody else sees.
        unsafe {
            RobustState::init(b.as_mut_ptr(), &[(0, 5)]);
            b.assume_init()
        }
    }

    #[test]
    fn a_dead_holders_half_transaction_is_rolled_back() {
        let st = fresh();
        // A thread takes the lock, writes two cells, and ends without
        // finishing (as a SIGKILL would leave it).
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(st.lock.lock(), Acquired::Clean);
                let mut tx = Tx {
                    st: &st,
                    changed: false,
                };
                tx.set(0, 99);
                tx.set_holder(3, 1234, 7);
            });
        });
        let (v, h) = st.transact(|tx| (tx.get(0), tx.holder(3)));
        assert_eq!((v, h), (5, (0, 0)), "rolled back");
        assert!(!st.lock.is_poisoned());
    }

    #[test]
    fn garbage_journal_and_holders_are_harmless() {
        let st = fresh();
        st.journal_len.store(u64::MAX, Ordering::Relaxed);
        st.journal[0][0].store(u64::MAX, Ordering::Relaxed);
        st.journal[1][0].store(1, Ordering::Relaxed);
        st.journal[1][1].store(42, Ordering::Relaxed);
        st.holders[5].who.store(u64::MAX, Ordering::Relaxed);
        st.holders[5].count.store(3, Ordering::Relaxed);
        // A garbage owner word: the lock is taken over and the journal rolled
        // back (clamped, out-of-range index skipped).
        st.lock_words_garbage();
        let (c1, reaped, given) = st.transact(|tx| {
            let c1 = tx.get(1);
            let mut given = 0;
            let reaped = tx.reap_dead(|_, _, count| given += count);
            (c1, reaped, given)
        });
        assert_eq!((c1, reaped, given), (42, 1, 3));
        assert_eq!(st.transact(|tx| tx.holder(5)), (0, 0));
    }

    impl RobustState {
        fn lock_words_garbage(&self) {
            // SAFETY: the lock's first word is its owner word (layout test
            // in mutex.rs); nobody uses it concurrently in this test.
            unsafe {
                (*(std::ptr::addr_of!(self.lock).cast::<AtomicU64>()))
                    .store(0xdead_0000_0000_0001, Ordering::Relaxed)
            };
        }
    }

    #[test]
    fn wait_for_times_out_and_succeeds() {
        let st = fresh();
        let d = Instant::now() + Duration::from_millis(15);
        let mut reaps = 0;
        assert_eq!(st.wait_for(Some(d), |_| None::<()>, |_| reaps += 1), None);
        assert!(reaps >= 1);
        assert_eq!(
            st.wait_for(None, |tx| (tx.get(0) == 5).then_some(1), |_| {}),
            Some(1)
        );
    }
}

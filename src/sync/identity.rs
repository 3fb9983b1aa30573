//! Who holds a shmkit lock: a word that names a thread and that a peer can
//! read and check, never follow.
//!
//! A holder is written into shared memory as one `u64`: the thread id in the
//! high half; in the low half the low 30 bits of the thread's start time
//! (clock ticks since boot, `/proc/<tid>/stat` field 22) shifted left by 2,
//! with bit 1 set (so the low half is never 0) and bit 0 left to the lock
//! (its "contended" flag, ignored when the word is checked). A word whose low
//! half is 0 or 1 is therefore garbage (or a thread that could not read its
//! own start time), and no live thread matches it. A thread id is reused only
//! after its thread ended, and the new thread then has another start time: a
//! dead holder is never mistaken for a live one, except across a wrap of the
//! 30-bit tick count (124 days at 100 Hz) landing on the same tick.
//!
//! Each thread also keeps a private record of the shmkit locks it holds, so
//! that a lock word naming the calling thread is told apart: a relock by its
//! holder (a bug: it panics or reports busy, as before) from a word a peer
//! forged or a stale one (taken over).

use crate::sys::proc;
use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped in the child of every `fork` (registered on first use): a child's
/// thread is another thread, with its own identity and no locks held.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked() {
    // Async-signal-safe: one atomic add.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

#[inline]
fn generation() -> u64 {
    static REGISTER: Once = Once::new();
    if !REGISTER.is_completed() {
        register(&REGISTER);
    }
    FORK_GENERATION.load(Ordering::Relaxed)
}

#[cold]
#[inline(never)]
fn register(once: &Once) {
    once.call_once(|| {
        // Without the handler a forked child would reuse its parent's cached
        // identity; failing to register (ENOMEM) is not survivable quietly.
        proc::at_fork_child(forked).expect("shmkit: pthread_atfork failed");
    });
}

/// The word for thread `tid` started at `start` ticks.
pub(crate) fn word_of(tid: u32, start: u64) -> u64 {
    (u64::from(tid) << 32) | u64::from(start_half(start))
}

fn start_half(start: u64) -> u32 {
    ((start as u32) << 2) | 2
}

/// The bit of a word that is not part of the identity (a lock's flag).
pub(crate) const FLAG: u64 = 1;

/// Records this many held locks exactly; more are counted, and then any lock
/// not among the recorded ones counts as possibly held (never taken over).
const HELD_SLOTS: usize = 8;

thread_local! {
    /// (generation + 1, word); 0 in the first field: not computed.
    static ME: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    static HELD_GENERATION: Cell<u64> = const { Cell::new(0) };
    /// Locks held (recorded or not).
    static HELD_COUNT: Cell<usize> = const { Cell::new(0) };
    /// Of which recorded in `HELD[..HELD_RECORDED]`.
    static HELD_RECORDED: Cell<usize> = const { Cell::new(0) };
    static HELD: [Cell<usize>; HELD_SLOTS] = const { [const { Cell::new(0) }; HELD_SLOTS] };
}

/// This thread's word (never 0). Cached per thread and fork generation; a
/// failed read of our own start time is not cached and gives a word with a
/// start half of 0, which waiters treat as not alive (the lock then degrades
/// to "held briefly" instead of wedging everyone).
#[inline]
pub(crate) fn me() -> u64 {
    // Inlined: every lock and unlock asks (measured: as an out-of-line call
    // it was a fifth of an uncontended lock+unlock's time).
    let generation = generation() + 1;
    let (g, word) = ME.get();
    if g == generation {
        return word;
    }
    me_slow(generation)
}

#[cold]
#[inline(never)]
fn me_slow(generation: u64) -> u64 {
    let tid = proc::tid();
    match proc::start_time(tid) {
        Ok(start) => {
            let word = word_of(tid, start);
            ME.set((generation, word));
            word
        }
        Err(_) => u64::from(tid) << 32,
    }
}

/// Whether a live thread has the word's tid and start time. Only "no such
/// thread" means dead: any other failure to read `/proc` (descriptors or
/// memory exhausted) counts as alive, so a live holder is never taken over by
/// a waiter that merely failed to look. A start half of 0 is garbage, and so
/// is a tid beyond the kernel's range.
pub(crate) fn alive(word: u64) -> bool {
    let tid = (word >> 32) as u32;
    let start = word as u32 & !(FLAG as u32);
    if tid == 0 || tid > i32::MAX as u32 || start == 0 {
        return false;
    }
    match proc::thread_state(tid) {
        Ok((now, zombie)) => start_half(now) == start && !zombie,
        Err(e) => !matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)),
    }
}

#[inline]
fn held_fresh() {
    let generation = generation();
    if HELD_GENERATION.get() != generation {
        // A forked child: the parent thread's locks are not ours.
        HELD_GENERATION.set(generation);
        HELD_COUNT.set(0);
        HELD_RECORDED.set(0);
    }
}

/// Records that this thread now holds the lock at `addr`.
#[inline]
pub(crate) fn note_locked(addr: usize) {
    held_fresh();
    let recorded = HELD_RECORDED.get();
    if recorded < HELD_SLOTS {
        HELD.with(|h| h[recorded].set(addr));
        HELD_RECORDED.set(recorded + 1);
    }
    HELD_COUNT.set(HELD_COUNT.get() + 1);
}

/// Records that this thread released the lock at `addr`.
#[inline]
pub(crate) fn note_unlocked(addr: usize) {
    held_fresh();
    let (n, recorded) = (HELD_COUNT.get(), HELD_RECORDED.get());
    let found = HELD.with(|h| {
        let i = (0..recorded).rev().find(|&i| h[i].get() == addr)?;
        // Keep the recorded ones packed: move the last recorded one here.
        h[i].set(h[recorded - 1].get());
        Some(())
    });
    if found.is_some() {
        HELD_RECORDED.set(recorded - 1);
    } else if n == recorded {
        // Not recorded and nothing unrecorded is held: not ours to forget.
        return;
    }
    HELD_COUNT.set(n - 1);
    if n == 1 {
        HELD_RECORDED.set(0);
    }
}

/// Whether this thread may hold the lock at `addr`: exact while every lock it
/// holds is recorded (at most [`HELD_SLOTS`] at once), "maybe" (true) for any
/// unrecorded address while more are held than were recorded. A lock held
/// through another mapping of the same memory (a named lock opened twice)
/// counts as held: addresses are compared by what backs them (read from
/// `/proc/self/maps`; only on this rare path, when a lock word names the
/// calling thread).
pub(crate) fn may_hold(addr: usize) -> bool {
    held_fresh();
    let recorded = HELD_RECORDED.get();
    if HELD_COUNT.get() > recorded {
        return true;
    }
    let mut addrs = [0usize; HELD_SLOTS + 1];
    HELD.with(|h| {
        for (i, a) in addrs.iter_mut().enumerate().take(recorded) {
            *a = h[i].get();
        }
    });
    if addrs[..recorded].contains(&addr) {
        return true;
    }
    if recorded == 0 {
        return false;
    }
    addrs[recorded] = addr;
    match proc::backing_of(&addrs[..=recorded]) {
        Ok(keys) => match keys[recorded] {
            Some(k) => keys[..recorded].contains(&Some(k)),
            // Not in any mapping we can see: only the address could match.
            None => false,
        },
        // Cannot tell: never take over a lock we may hold.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_name_live_threads_only() {
        let me = me();
        assert_ne!(me, 0);
        assert_eq!(me as u32 & 3, 2);
        assert!(alive(me));
        assert!(alive(me | FLAG), "the flag bit is not identity");
        assert_eq!(me, super::me(), "cached");
        for garbage in [
            0,
            u64::MAX,
            me & !0xffff_ffff,
            me ^ 4,
            me ^ 2,
            (1u64 << 32) | 1,
            2u64 << 32,
        ] {
            assert!(!alive(garbage), "{garbage:#x}");
        }
        let other = std::thread::spawn(super::me).join().unwrap();
        assert_ne!(other, me);
        // `join` returns when the thread has cleared its tid word, a moment
        // before the kernel removes its /proc entry: dead within a bound.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alive(other) {
            assert!(
                std::time::Instant::now() < deadline,
                "an ended thread is dead"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn held_record_is_exact_up_to_its_slots() {
        let addrs: Vec<usize> = (1..=10).map(|i| i * 64).collect();
        for &a in &addrs[..3] {
            note_locked(a);
        }
        assert!(may_hold(64) && may_hold(128) && may_hold(192));
        assert!(!may_hold(256));
        note_unlocked(128);
        assert!(!may_hold(128) && may_hold(64) && may_hold(192));
        note_unlocked(4096); // never held: ignored
        assert!(may_hold(64) && may_hold(192));
        for &a in &addrs[3..] {
            note_locked(a);
        }
        // 9 held, 8 recorded: an unknown lock counts as maybe held.
        assert!(may_hold(1 << 20));
        for &a in addrs.iter().rev() {
            note_unlocked(a);
        }
        assert!(!may_hold(64) && !may_hold(1 << 20));
        assert_eq!(HELD_COUNT.get(), 0);
    }
}

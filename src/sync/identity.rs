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

/// Bumped in the child of every `fork` (registered before any thread
/// caches anything, see [`refresh`]): a child's thread is another thread,
/// with its own identity and no locks held.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked() {
    // Async-signal-safe: one atomic add.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
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

/// What a thread knows of itself: its word and the locks it holds, valid
/// for one fork generation. One thread-local, so that a lock or an unlock
/// checks the generation once and finds every field at one base (measured:
/// five thread-locals, each with its own generation check behind a `Once`,
/// were a third of an uncontended lock+unlock's bookkeeping).
struct ThreadRecord {
    /// [`FORK_GENERATION`] + 1 when the fields below were last reset; 0:
    /// never.
    generation: Cell<u64>,
    /// This thread's word; 0: not read yet (or the read failed).
    me: Cell<u64>,
    /// Locks held (recorded or not).
    held_count: Cell<usize>,
    /// Of which recorded in `held[..held_recorded]`.
    held_recorded: Cell<usize>,
    held: [Cell<usize>; HELD_SLOTS],
}

thread_local! {
    static THREAD: ThreadRecord = const {
        ThreadRecord {
            generation: Cell::new(0),
            me: Cell::new(0),
            held_count: Cell::new(0),
            held_recorded: Cell::new(0),
            held: [const { Cell::new(0) }; HELD_SLOTS],
        }
    };
}

/// Runs `f` on this thread's record, reset first if this process was forked
/// since it was last used (or it never was).
#[inline]
fn with_record<R>(f: impl FnOnce(&ThreadRecord) -> R) -> R {
    THREAD.with(|t| {
        if t.generation.get() != FORK_GENERATION.load(Ordering::Relaxed).wrapping_add(1) {
            refresh(t);
        }
        f(t)
    })
}

/// Resets a record made in another fork generation (or never made). The
/// fork handler is registered first: from then on every fork bumps the
/// generation, so a record stamped after this is never carried into a child
/// unnoticed.
#[cold]
#[inline(never)]
fn refresh(t: &ThreadRecord) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // Without the handler a forked child would reuse its parent's cached
        // identity; failing to register (ENOMEM) is not survivable quietly.
        proc::at_fork_child(forked).expect("shmkit: pthread_atfork failed");
    });
    t.generation
        .set(FORK_GENERATION.load(Ordering::Relaxed).wrapping_add(1));
    t.me.set(0);
    t.held_count.set(0);
    t.held_recorded.set(0);
}

/// This thread's word (never 0). Cached per thread and fork generation; a
/// failed read of our own start time is not cached and gives a word with a
/// start half of 0, which waiters treat as not alive (the lock then degrades
/// to "held briefly" instead of wedging everyone).
#[inline]
pub(crate) fn me() -> u64 {
    // Inlined: every lock and unlock asks (measured: as an out-of-line call
    // it was a fifth of an uncontended lock+unlock's time).
    with_record(|t| match t.me.get() {
        0 => me_slow(t),
        word => word,
    })
}

#[cold]
#[inline(never)]
fn me_slow(t: &ThreadRecord) -> u64 {
    let tid = proc::tid();
    match proc::start_time(tid) {
        Ok(start) => {
            let word = word_of(tid, start);
            t.me.set(word);
            word
        }
        Err(_) => u64::from(tid) << 32,
    }
}

/// The word of this process's main thread (its tid is the pid, its start
/// time the process's): what a holder that is not a thread — a task, which
/// moves between threads — is recorded as. A failed read of our start time
/// gives a start half of 0 (treated as not alive), as in [`me`].
#[cfg(feature = "async")]
pub(crate) fn process() -> u64 {
    let pid = proc::pid();
    // Read once per process (0: the read failed; no process starts at tick 0).
    match proc::own_start_time() {
        0 => u64::from(pid) << 32,
        start => word_of(pid, start),
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

/// Runs `f` on this thread's record as it is: for the calls that follow a
/// [`me`] in the same lock operation, which refreshed it (one generation
/// check per operation; a fork between the two cannot happen in this
/// thread, and the next operation's [`me`] resets a record a child
/// inherited).
#[inline]
fn with_record_as_is<R>(f: impl FnOnce(&ThreadRecord) -> R) -> R {
    THREAD.with(f)
}

/// Records that this thread now holds the lock at `addr`. Call after [`me`]
/// in the same operation.
#[inline]
pub(crate) fn note_locked(addr: usize) {
    with_record_as_is(|t| {
        let recorded = t.held_recorded.get();
        if let Some(slot) = t.held.get(recorded) {
            slot.set(addr);
            t.held_recorded.set(recorded + 1);
        }
        t.held_count.set(t.held_count.get() + 1);
    })
}

/// Records that this thread released the lock at `addr`. Call after [`me`]
/// in the same operation.
#[inline]
pub(crate) fn note_unlocked(addr: usize) {
    with_record_as_is(|t| {
        let (n, recorded) = (t.held_count.get(), t.held_recorded.get());
        let held = &t.held[..recorded.min(HELD_SLOTS)];
        if let Some(i) = held.iter().rposition(|h| h.get() == addr) {
            // Keep the recorded ones packed: move the last recorded one here.
            held[i].set(held[held.len() - 1].get());
            t.held_recorded.set(recorded - 1);
        } else if n == recorded {
            // Not recorded and nothing unrecorded is held: not ours to forget.
            return;
        }
        t.held_count.set(n - 1);
        if n == 1 {
            t.held_recorded.set(0);
        }
    })
}

/// Whether this thread may hold the lock at `addr`: exact while every lock it
/// holds is recorded (at most [`HELD_SLOTS`] at once), "maybe" (true) for any
/// unrecorded address while more are held than were recorded. A lock held
/// through another mapping of the same memory (a named lock opened twice)
/// counts as held: addresses are compared by what backs them (read from
/// `/proc/self/maps`; only on this rare path, when a lock word names the
/// calling thread).
pub(crate) fn may_hold(addr: usize) -> bool {
    let (count, recorded, addrs) = with_record(|t| {
        let mut addrs = [0usize; HELD_SLOTS + 1];
        let recorded = t.held_recorded.get().min(HELD_SLOTS);
        for (a, h) in addrs.iter_mut().zip(&t.held[..recorded]) {
            *a = h.get();
        }
        (t.held_count.get(), recorded, addrs)
    });
    if count > recorded {
        return true;
    }
    let mut addrs = addrs;
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
        // As a lock operation does: `me` first, which readies the record.
        me();
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
        assert_eq!(with_record(|t| t.held_count.get()), 0);
    }
}

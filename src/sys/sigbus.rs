//! Surviving a peer's `ftruncate` of a shared mapping: a process-wide SIGBUS
//! handler and the registry of shmkit's mappings it consults.
//!
//! A named segment or a file can be shrunk by any process that may open it;
//! our next access to a page past the new end raises SIGBUS (`BUS_ADRERR`),
//! which kills the process by default. Every [`Segment`](crate::region::Segment)
//! registers its mapping here. The handler, for a fault inside a registered
//! mapping whose file now ends before the faulting page, maps private zero
//! pages (`MAP_FIXED|MAP_PRIVATE|MAP_ANONYMOUS`) over the whole cut range (from
//! the file's new end, rounded up to a page, to the mapping's end), marks the
//! registration truncated and returns: the faulting access is retried and
//! succeeds on the zero page. The object's next checked operation reports
//! [`RegionError::Truncated`](crate::error::RegionError::Truncated).
//!
//! Any other SIGBUS (an address in no registered mapping, a registered page
//! that the file still covers, e.g. tmpfs running out of pages for an
//! unreserved region, or a hardware error) goes to the handler that was
//! installed before ours; if that was the default (or "ignore"), the default
//! is restored and the fault re-raised, so the process dies of SIGBUS as it
//! would without shmkit.
//!
//! Async-signal-safety: the handler allocates nothing and takes no lock. It
//! reads a fixed table of atomics, and calls only `fstat`, `mmap`, `sigaction`
//! and `raise` (raw system calls), saving and restoring `errno`.
//!
//! The table has [`SLOTS`] entries. A slot is `FREE → CLAIMED → ACTIVE →
//! REMOVING → FREE`. The handler announces itself on a slot (`busy += 1`,
//! SeqCst) *then* re-reads the state (SeqCst); unregistering stores `REMOVING`
//! (SeqCst) *then* waits for `busy == 0`: one of the two sees the other
//! (Dekker), so the handler never maps over a range that has been unmapped
//! and perhaps reused. (Safe Rust cannot drop a `Segment` while another thread
//! uses its memory, so this only guards against unsound callers; it costs an
//! atomic increment per handled fault.) When all slots are taken a new mapping
//! is not registered: it works as before this module existed (a truncation
//! kills the process with SIGBUS), and
//! [`Segment::truncation_guarded`](crate::region::Segment::truncation_guarded)
//! says so.

use std::ffi::c_void;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};

/// How many mappings can be guarded at once in one process.
pub(crate) const SLOTS: usize = 4096;

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const ACTIVE: u32 = 2;
const REMOVING: u32 = 3;

struct Slot {
    state: AtomicU32,
    /// Handlers currently working on this slot.
    busy: AtomicU32,
    fd: AtomicI32,
    start: AtomicUsize,
    len: AtomicUsize,
    /// Bytes from `start` still mapped from the file; the rest is zero pages.
    cut: AtomicUsize,
    truncated: AtomicBool,
    /// Faults on pages the file covered again by the time we looked.
    covered: AtomicU32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU32::new(FREE),
            busy: AtomicU32::new(0),
            fd: AtomicI32::new(-1),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            cut: AtomicUsize::new(0),
            truncated: AtomicBool::new(false),
            covered: AtomicU32::new(0),
        }
    }
}

/// How many faults on pages the file covers again a mapping may retry.
const COVERED_RETRIES: u32 = 1024;

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// One past the highest slot ever claimed: the handler scans no further.
static HIGH: AtomicUsize = AtomicUsize::new(0);
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The handler installed before ours: `sa_sigaction` and `sa_flags`.
static PREV_ACTION: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREV_FLAGS: AtomicI32 = AtomicI32::new(0);

/// A mapping registered with the SIGBUS handler; unregisters on drop. Drop it
/// before the mapping is unmapped and before `fd` is closed.
#[derive(Debug)]
pub(crate) struct Registration {
    slot: Option<usize>,
}

impl Registration {
    /// Registers `len` bytes at `start`, mapped `MAP_SHARED` from offset 0 of
    /// `fd`, installing the handler first if this is the first mapping.
    /// Returns an unguarded registration if the handler could not be installed
    /// or the table is full.
    pub(crate) fn new(start: *mut u8, len: usize, fd: i32) -> Registration {
        INSTALL.call_once(install);
        if !INSTALLED.load(Ordering::Acquire) {
            return Registration { slot: None };
        }
        for (i, s) in TABLE.iter().enumerate() {
            if s.state
                .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                s.fd.store(fd, Ordering::Relaxed);
                s.start.store(start as usize, Ordering::Relaxed);
                s.len.store(len, Ordering::Relaxed);
                s.cut.store(len, Ordering::Relaxed);
                s.truncated.store(false, Ordering::Relaxed);
                s.covered.store(0, Ordering::Relaxed);
                HIGH.fetch_max(i + 1, Ordering::SeqCst);
                // SYNC(sigbus-slot): publishes the fields above; pairs with the
                // handler's Acquire/SeqCst loads of `state`.
                s.state.store(ACTIVE, Ordering::SeqCst);
                return Registration { slot: Some(i) };
            }
        }
        Registration { slot: None }
    }

    /// Whether the handler guards this mapping.
    pub(crate) fn is_guarded(&self) -> bool {
        self.slot.is_some()
    }

    /// Whether the handler has found this mapping truncated (and replaced the
    /// cut range with zero pages).
    #[inline]
    pub(crate) fn is_truncated(&self) -> bool {
        match self.slot {
            // SYNC(sigbus-mark): pairs with the handler's Release store.
            Some(i) => TABLE[i].truncated.load(Ordering::Acquire),
            None => false,
        }
    }
}

impl Registration {
    /// Unregisters now (before the mapping is unmapped). Returns, for a
    /// mapping found truncated, how many bytes from its start are still mapped
    /// from the file (a page multiple): the rest is the handler's zero pages.
    pub(crate) fn release(&mut self) -> Option<usize> {
        let i = self.slot.take()?;
        let s = &TABLE[i];
        // SYNC(sigbus-busy): Dekker with the handler's `busy += 1` then
        // state re-read; after this loop no handler works on the slot.
        s.state.store(REMOVING, Ordering::SeqCst);
        while s.busy.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
        let cut = s
            .truncated
            .load(Ordering::Acquire)
            .then(|| s.cut.load(Ordering::SeqCst));
        s.fd.store(-1, Ordering::Relaxed);
        s.state.store(FREE, Ordering::Release);
        cut
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.release();
    }
}

fn install() {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        PAGE.store(page as usize, Ordering::Relaxed);
    }
    let mut prev = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags).
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) = on_sigbus;
    act.sa_sigaction = handler as usize;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: act.sa_mask is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // Read the previous action first and store it before ours can run, so
    // the handler always finds what to chain to.
    // SAFETY: querying with a null new action and a valid out-pointer.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), prev.as_mut_ptr()) } != 0 {
        return;
    }
    // SAFETY: sigaction filled it (or it stays zeroed: SIG_DFL).
    let prev = unsafe { prev.assume_init() };
    PREV_ACTION.store(prev.sa_sigaction, Ordering::Release);
    PREV_FLAGS.store(prev.sa_flags, Ordering::Release);
    // SAFETY: act is fully initialised; on_sigbus is async-signal-safe.
    if unsafe { libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) } == 0 {
        INSTALLED.store(true, Ordering::Release);
    }
}

enum Outcome {
    /// Truncation: zero pages mapped, retry the access.
    Handled,
    /// Not a truncation of a shmkit mapping.
    NotOurs,
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: errno is thread-local; we restore what the interrupted code saw.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // Only a fault (si_code > 0) names an address; a SIGBUS sent by kill(2)
    // is never ours.
    let outcome = if code > 0 {
        handle(addr)
    } else {
        Outcome::NotOurs
    };
    if let Outcome::NotOurs = outcome {
        chain(sig, info, ctx, code);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn handle(addr: usize) -> Outcome {
    let high = HIGH.load(Ordering::SeqCst).min(SLOTS);
    for s in &TABLE[..high] {
        if s.state.load(Ordering::Acquire) != ACTIVE {
            continue;
        }
        let (start, len) = (
            s.start.load(Ordering::Relaxed),
            s.len.load(Ordering::Relaxed),
        );
        if addr < start || addr - start >= len {
            continue;
        }
        // SYNC(sigbus-busy): announce, then re-check the slot is still this
        // mapping's (pairs with Registration::drop).
        s.busy.fetch_add(1, Ordering::SeqCst);
        let same = s.state.load(Ordering::SeqCst) == ACTIVE
            && s.start.load(Ordering::Relaxed) == start
            && s.len.load(Ordering::Relaxed) == len;
        let outcome = if same {
            cut(s, start, len, addr)
        } else {
            Outcome::NotOurs
        };
        s.busy.fetch_sub(1, Ordering::SeqCst);
        if same {
            return outcome;
        }
    }
    Outcome::NotOurs
}

/// Maps zero pages over the part of the mapping the file no longer covers,
/// if the faulting address is in it.
fn cut(s: &Slot, start: usize, len: usize, addr: usize) -> Outcome {
    let page = PAGE.load(Ordering::Relaxed);
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat is async-signal-safe; fd stays open while the slot is
    // ACTIVE (the Segment drops its registration before its descriptor).
    if unsafe { libc::fstat(s.fd.load(Ordering::Relaxed), st.as_mut_ptr()) } != 0 {
        return Outcome::NotOurs;
    }
    // SAFETY: fstat succeeded.
    let size = unsafe { st.assume_init() }.st_size.max(0) as u64;
    let keep = usize::try_from(size.div_ceil(page as u64) * page as u64)
        .unwrap_or(usize::MAX)
        .min(len);
    if addr - start < keep {
        // The file covers this page now. Either it was cut and grown again
        // between the fault and our fstat (the retried access then finds the
        // new page), or this is not a truncation at all (tmpfs out of pages
        // for an unreserved region, a hardware error), which faults again at
        // once. Retry a bounded number of times per mapping, then let it
        // crash honestly.
        return if s.covered.fetch_add(1, Ordering::Relaxed) < COVERED_RETRIES {
            Outcome::Handled
        } else {
            Outcome::NotOurs
        };
    }
    let mut old = s.cut.load(Ordering::SeqCst);
    while keep < old {
        match s
            .cut
            .compare_exchange(old, keep, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => {
                // SAFETY: [start+keep, start+old) lies inside our registered
                // mapping, which cannot be unmapped while we are busy on its
                // slot; MAP_FIXED replaces those pages only.
                let p = unsafe {
                    libc::mmap(
                        (start + keep) as *mut c_void,
                        old - keep,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    return Outcome::NotOurs;
                }
                break;
            }
            Err(now) => old = now,
        }
    }
    // Another handler may have won the CAS and not yet mapped: the retried
    // access then faults again and comes back here until it has.
    // SYNC(sigbus-mark): pairs with Registration::is_truncated.
    s.truncated.store(true, Ordering::Release);
    Outcome::Handled
}

/// Passes the signal to the handler installed before ours, or dies of it.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void, code: libc::c_int) {
    let prev = PREV_ACTION.load(Ordering::Acquire);
    let flags = PREV_FLAGS.load(Ordering::Acquire);
    if prev == libc::SIG_DFL || prev == libc::SIG_IGN {
        // SAFETY: a zeroed sigaction with SIG_DFL is valid; sigaction and raise
        // are async-signal-safe.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
            // A fault re-executes the instruction on return and dies of it; a
            // sent signal must be raised again (delivered once we return).
            if code <= 0 {
                libc::raise(sig);
            }
        }
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it
        // has this signature; we pass it what the kernel passed us.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(prev) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a plain handler takes the signal number only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev) };
        f(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_take_and_free_slots() {
        let mut buf = [0u8; 64];
        let a = Registration::new(buf.as_mut_ptr(), buf.len(), -1);
        assert!(a.is_guarded());
        assert!(!a.is_truncated());
        let i = a.slot.unwrap();
        assert_eq!(TABLE[i].state.load(Ordering::SeqCst), ACTIVE);
        drop(a);
        // Freed: the slot no longer guards our range. (Other tests register
        // mappings in parallel and may take the same slot at once, so its
        // state alone proves nothing.)
        let ours = TABLE[i].state.load(Ordering::SeqCst) == ACTIVE
            && TABLE[i].start.load(Ordering::SeqCst) == buf.as_ptr() as usize;
        assert!(!ours, "the slot still guards a dropped registration");
    }

    #[test]
    fn a_full_table_leaves_new_mappings_unguarded() {
        let mut buf = [0u8; 64];
        let mut held = Vec::new();
        loop {
            let r = Registration::new(buf.as_mut_ptr(), buf.len(), -1);
            if !r.is_guarded() {
                break;
            }
            held.push(r);
            assert!(held.len() <= SLOTS);
        }
        assert!(!Registration::new(buf.as_mut_ptr(), buf.len(), -1).is_guarded());
        assert!(!Registration { slot: None }.is_truncated());
        held.pop();
        let again = Registration::new(buf.as_mut_ptr(), buf.len(), -1);
        assert!(again.is_guarded(), "a freed slot is reused");
    }
}

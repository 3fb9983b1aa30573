//! Shared futex wait and wake.
//!
//! These futexes are **process-shared**: they are called WITHOUT
//! `FUTEX_PRIVATE_FLAG`. A private futex (std's, and the `atomic-wait` crate's)
//! is keyed on the waiter's address space and is never woken by another process,
//! which is exactly the bug this module exists to avoid.

use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

/// Why a [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitResult {
    /// Woken (or spuriously returned); re-check the condition.
    Woken,
    /// The word did not hold the expected value when the kernel looked.
    ValueChanged,
    /// The relative timeout elapsed.
    TimedOut,
}

/// Sleeps while `*word == expected`, for at most `timeout` (measured by the
/// kernel on `CLOCK_MONOTONIC`).
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitResult {
    wait_at(word.as_ptr(), expected, timeout)
}

/// The address of `word`'s low 32 bits (what the kernel compares).
pub(crate) fn low_half(word: &AtomicU64) -> *mut u32 {
    let p = word.as_ptr().cast::<u32>();
    if cfg!(target_endian = "little") {
        p
    } else {
        p.wrapping_add(1)
    }
}

/// [`wait`] on the low 32 bits of a 64-bit word: sleeps while they equal
/// `expected` (the kernel compares those 32 bits only).
pub(crate) fn wait_low_half(
    word: &AtomicU64,
    expected: u32,
    timeout: Option<Duration>,
) -> WaitResult {
    wait_at(low_half(word), expected, timeout)
}

/// [`wake`] for sleepers of [`wait_low_half`] on `word`.
pub(crate) fn wake_low_half(word: &AtomicU64, n: u32) -> u32 {
    wake_at(low_half(word), n)
}

fn wait_at(word: *mut u32, expected: u32, timeout: Option<Duration>) -> WaitResult {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` points into a live, aligned atomic of the caller's for
    // the duration of the call; the kernel only reads it (atomically). `ts_ptr`
    // is null or points to a live timespec. FUTEX_WAIT without
    // FUTEX_PRIVATE_FLAG: shared across processes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == 0 {
        return WaitResult::Woken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => WaitResult::ValueChanged,
        Some(libc::ETIMEDOUT) => WaitResult::TimedOut,
        // EINTR: a signal arrived; the caller re-checks its condition.
        _ => WaitResult::Woken,
    }
}

/// Wakes up to `n` waiters sleeping on `word`, in any process. Returns how many
/// were woken.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> u32 {
    wake_at(word.as_ptr(), n)
}

fn wake_at(word: *mut u32, n: u32) -> u32 {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `word` points into a live aligned atomic; FUTEX_WAKE does not
    // dereference user memory beyond using its address as the key. No
    // FUTEX_PRIVATE_FLAG: waiters in other processes must be found.
    let r = unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, n) };
    r.max(0) as u32
}

/// One entry of `futex_waitv` (Linux ≥ 5.16), as the kernel lays it out.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`: a 32-bit futex word; without `FUTEX2_PRIVATE`, so the
/// futex is shared across processes.
const FUTEX2_SIZE_U32: u32 = 0x02;

/// The most words one `futex_waitv` takes (the kernel's `FUTEX_WAITV_MAX`).
pub(crate) const WAITV_MAX: usize = 128;

/// Sleeps until one of `words` no longer holds its expected value (or is
/// woken), or `timeout` passes: `futex_waitv`, shared futexes. Returns
/// `None` where the kernel has no `futex_waitv` (before 5.16: ENOSYS); the
/// caller then sleeps in short slices instead.
pub(crate) fn wait_any(words: &[(&AtomicU32, u32)], timeout: Duration) -> Option<WaitResult> {
    let at: Vec<(*const u32, u32)> = words
        .iter()
        .map(|&(w, v)| (w.as_ptr().cast_const(), v))
        .collect();
    // SAFETY: each address is a live atomic the caller borrows for the call.
    unsafe { wait_any_at(&at, timeout) }
}

/// [`wait_any`] on addresses (the low half of a 64-bit word among them).
///
/// # Safety
/// Each address must point to an aligned `u32` (or the low half of an
/// atomic) that stays mapped for the duration of the call.
pub(crate) unsafe fn wait_any_at(
    words: &[(*const u32, u32)],
    timeout: Duration,
) -> Option<WaitResult> {
    debug_assert!(!words.is_empty() && words.len() <= WAITV_MAX);
    let waiters: Vec<FutexWaitv> = words
        .iter()
        .map(|&(w, expected)| FutexWaitv {
            val: u64::from(expected),
            uaddr: w as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    // futex_waitv takes an absolute CLOCK_MONOTONIC deadline (a timeout past
    // u64 nanoseconds, 584 years, saturates).
    let at = super::clock::monotonic_ns()
        .saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
    let deadline = libc::timespec {
        tv_sec: (at / 1_000_000_000) as libc::time_t,
        tv_nsec: (at % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `waiters` holds `len` initialised entries whose addresses
    // point into live, aligned words of the caller's for the duration of
    // the call (this function's contract) (the kernel only reads them); `deadline` is a live timespec;
    // flags 0 as the ABI requires.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0 as libc::c_uint,
            &deadline as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r >= 0 {
        return Some(WaitResult::Woken);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        // No futex_waitv (before 5.16), or one a seccomp filter refuses
        // (EPERM), or arguments it rejects: the caller's slices instead of
        // a loop that fails at once forever.
        Some(libc::ENOSYS | libc::EPERM | libc::EINVAL | libc::EFAULT) => None,
        Some(libc::EAGAIN) => Some(WaitResult::ValueChanged),
        Some(libc::ETIMEDOUT) => Some(WaitResult::TimedOut),
        _ => Some(WaitResult::Woken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn wait_returns_at_once_when_value_differs() {
        let w = AtomicU32::new(1);
        assert_eq!(wait(&w, 0, None), WaitResult::ValueChanged);
    }

    #[test]
    fn wait_times_out() {
        let w = AtomicU32::new(0);
        assert_eq!(
            wait(&w, 0, Some(Duration::from_millis(5))),
            WaitResult::TimedOut
        );
    }

    #[test]
    fn wake_reaches_a_sleeping_thread() {
        let w = std::sync::Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            while w2.load(Ordering::Acquire) == 0 {
                wait(&w2, 0, Some(Duration::from_secs(10)));
            }
        });
        std::thread::sleep(Duration::from_millis(10));
        w.store(1, Ordering::Release);
        wake(&w, u32::MAX);
        t.join().unwrap();
    }
}

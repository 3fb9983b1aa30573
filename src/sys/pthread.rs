//! The robust, process-shared pthread mutex.
//!
//! Robustness is the kernel's: glibc registers every robust mutex a thread holds
//! on that thread's robust list (`set_robust_list(2)`), and when the thread dies
//! the kernel marks the lock word `FUTEX_OWNER_DIED` and wakes one waiter, whose
//! `pthread_mutex_lock` then returns `EOWNERDEAD`. A futex design of our own could
//! not get this without competing with glibc for the one robust list per thread.

use std::io;
use std::time::Duration;

unsafe extern "C" {
    // glibc >= 2.30. Not in the libc crate; same signature as
    // pthread_mutex_timedlock plus the clock, so the deadline is monotonic.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// What a lock attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locked {
    /// Acquired normally.
    Yes,
    /// Acquired, but the previous holder died holding it. The pthread mutex has
    /// already been marked consistent again (so it never becomes
    /// `ENOTRECOVERABLE`); the caller must record the poisoning.
    OwnerDied,
    /// `try_lock`: another holder has it.
    WouldBlock,
    /// The deadline passed.
    TimedOut,
}

/// Initialises a process-shared, robust, error-checking mutex in place.
///
/// # Safety
/// `m` must be valid for writes, aligned, and not in use by anyone (the creator
/// calls this before the region is published).
pub(crate) unsafe fn init(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: attr is initialised by pthread_mutexattr_init before any other use,
    // and destroyed on every path after.
    unsafe {
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        let a = attr.as_mut_ptr();
        let r = (|| {
            check(libc::pthread_mutexattr_setpshared(
                a,
                libc::PTHREAD_PROCESS_SHARED,
            ))?;
            check(libc::pthread_mutexattr_setrobust(
                a,
                libc::PTHREAD_MUTEX_ROBUST,
            ))?;
            // ERRORCHECK: a thread that locks twice gets EDEADLK instead of a
            // silent deadlock; for robust mutexes glibc makes that check anyway.
            check(libc::pthread_mutexattr_settype(
                a,
                libc::PTHREAD_MUTEX_ERRORCHECK,
            ))?;
            check(libc::pthread_mutex_init(m, a))
        })();
        libc::pthread_mutexattr_destroy(a);
        r
    }
}

/// Blocks until the mutex is acquired.
///
/// # Safety
/// `m` must point to a mutex initialised by [`init`] in a live mapping.
pub(crate) unsafe fn lock(m: *mut libc::pthread_mutex_t) -> io::Result<Locked> {
    // SAFETY: forwarded to the caller.
    unsafe { finish(m, libc::pthread_mutex_lock(m)) }
}

/// Acquires the mutex if it is free.
///
/// # Safety
/// As for [`lock`].
pub(crate) unsafe fn try_lock(m: *mut libc::pthread_mutex_t) -> io::Result<Locked> {
    // SAFETY: forwarded to the caller.
    unsafe { finish(m, libc::pthread_mutex_trylock(m)) }
}

/// Blocks for at most `timeout`, measured on `CLOCK_MONOTONIC` (so a wall-clock
/// jump neither shortens nor stretches it).
///
/// # Safety
/// As for [`lock`].
pub(crate) unsafe fn lock_timeout(
    m: *mut libc::pthread_mutex_t,
    timeout: Duration,
) -> io::Result<Locked> {
    let deadline = monotonic_deadline(timeout);
    // SAFETY: forwarded to the caller; deadline is a normalised timespec.
    unsafe {
        finish(
            m,
            pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &deadline),
        )
    }
}

/// Releases the mutex.
///
/// # Safety
/// As for [`lock`], and the calling thread must hold it.
pub(crate) unsafe fn unlock(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    // SAFETY: forwarded to the caller.
    check(unsafe { libc::pthread_mutex_unlock(m) })
}

/// Now + `d` on `CLOCK_MONOTONIC`, with `tv_nsec` normalised into [0, 1e9)
/// (raw_sync's timed lock forgot this and returns EINVAL).
pub(crate) fn monotonic_deadline(d: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let mut sec = (now.tv_sec as i128) + d.as_secs() as i128;
    let mut nsec = now.tv_nsec as i128 + d.subsec_nanos() as i128;
    if nsec >= 1_000_000_000 {
        sec += 1;
        nsec -= 1_000_000_000;
    }
    libc::timespec {
        tv_sec: sec.min(libc::time_t::MAX as i128) as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    }
}

unsafe fn finish(m: *mut libc::pthread_mutex_t, r: libc::c_int) -> io::Result<Locked> {
    match r {
        0 => Ok(Locked::Yes),
        libc::EBUSY => Ok(Locked::WouldBlock),
        libc::ETIMEDOUT => Ok(Locked::TimedOut),
        libc::EOWNERDEAD => {
            // SAFETY: we hold the mutex (EOWNERDEAD means acquired).
            check(unsafe { libc::pthread_mutex_consistent(m) })?;
            Ok(Locked::OwnerDied)
        }
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_normalised() {
        for ms in [0u64, 1, 999, 1000, 1001, 123_456] {
            let t = monotonic_deadline(Duration::from_millis(ms));
            assert!(
                (0..1_000_000_000).contains(&t.tv_nsec),
                "{ms}: {}",
                t.tv_nsec
            );
        }
        let t = monotonic_deadline(Duration::from_nanos(999_999_999));
        assert!((0..1_000_000_000).contains(&t.tv_nsec));
    }

    #[test]
    fn relock_by_owner_is_an_error_not_a_deadlock() {
        let mut m = std::mem::MaybeUninit::<libc::pthread_mutex_t>::zeroed();
        // SAFETY: fresh local storage, used only on this thread.
        unsafe {
            init(m.as_mut_ptr()).unwrap();
            assert_eq!(lock(m.as_mut_ptr()).unwrap(), Locked::Yes);
            let e = lock(m.as_mut_ptr()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EDEADLK));
            let e = try_lock(m.as_mut_ptr()).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EDEADLK));
            unlock(m.as_mut_ptr()).unwrap();
            assert_eq!(
                lock_timeout(m.as_mut_ptr(), Duration::from_millis(1)).unwrap(),
                Locked::Yes
            );
            unlock(m.as_mut_ptr()).unwrap();
        }
    }
}

//! The coarse monotonic clock: the time of the kernel's last tick, read from
//! the vDSO's data page without reading the TSC.
//!
//! Measured on this project's 2-core AMD EPYC guest (TSC clocksource):
//! `clock_gettime(CLOCK_MONOTONIC_COARSE)` 6.0 ns, `CLOCK_MONOTONIC` (what
//! `Instant::now` reads) 35.8 ns. It lags the precise clock by up to one
//! tick (1–4 ms, by the kernel's `HZ`) and shares its origin, so both give
//! nanoseconds on the same scale.

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds.
pub(crate) fn monotonic_coarse_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC_COARSE)
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock of `Instant`).
pub(crate) fn monotonic_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

/// CPU time the calling thread has used, in nanoseconds (tests: what a
/// wait costs while it waits).
#[cfg(test)]
pub(crate) fn thread_cpu_ns() -> u64 {
    read(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every
    // Linux this crate supports (COARSE since 2.6.32), so the call cannot
    // fail; a failure would leave zero, an early time, which only makes a
    // look due sooner.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_and_precise_share_a_scale() {
        let precise = monotonic_ns();
        let coarse = monotonic_coarse_ns();
        // The coarse clock is the last tick: behind by less than a tick
        // (at most 10 ms at HZ=100), never ahead.
        assert!(coarse <= precise + 1_000_000, "{coarse} vs {precise}");
        assert!(
            precise - coarse.min(precise) < 10_000_000,
            "{coarse} vs {precise}"
        );
        assert!(monotonic_coarse_ns() >= coarse);
    }
}

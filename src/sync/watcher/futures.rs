//! The futures of the waiter: one shared word ([`until`]), a lock's owner
//! word ([`until_marked`]), several words at once ([`until_any`]).

use super::{NAP, RECHECKS, Registration, Watch, register, register_every};
use std::future::Future;
use std::task::Poll;

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
    mut behind: impl FnMut() -> bool,
) -> impl Future<Output = R> {
    // `until_any` for one word, without its vectors: no allocation per
    // future (measured: two allocations per receive cost a tenth of a
    // 1 KiB message's async throughput).
    let mut registration: Option<Registration> = None;
    std::future::poll_fn(move |cx| {
        if let Some(r) = registration.take() {
            r.spend();
        }
        let mut backoff = crate::sync::wait::Backoff::new();
        let mut rechecks = 0;
        loop {
            let seen = watch.value();
            if let Some(r) = attempt() {
                return Poll::Ready(r);
            }
            if backoff.spin() {
                continue;
            }
            let mut reg = register(&watch, seen, cx.waker())
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
                    reg.spend(); // withdrawn: the attempt looks itself
                    continue;
                }
                cx.waker().wake_by_ref();
            } else if behind() {
                // A sender that commits without a fence may have missed
                // this registration: look again after a nap.
                reg.spend();
                reg = register_every(&watch, seen, cx.waker(), NAP).unwrap_or_else(|e| {
                    panic!("shmkit: cannot start the async waiter thread: {e}")
                });
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
        if let Some(r) = registration.take() {
            r.spend();
        }
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
    mut behind: impl FnMut() -> bool,
) -> impl Future<Output = R> {
    let mut registrations: Vec<Registration> = Vec::new();
    let mut seen: Vec<u32> = Vec::with_capacity(watches.len());
    std::future::poll_fn(move |cx| {
        // Woken (or polled spuriously): the old registrations are spent.
        registrations.drain(..).for_each(Registration::spend);
        // The blocking path's short spin first (127 PAUSEs at most, none on
        // one CPU): a reply that comes within it costs no thread wake-up.
        let mut backoff = crate::sync::wait::Backoff::new();
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
            // As in `until`: behind a sender that may not wake us, one
            // more registration (on the first word) looks again after a
            // nap; whichever fires first wakes the future.
            if !ready() && behind() {
                let again =
                    register_every(&watches[0], seen[0], cx.waker(), NAP).unwrap_or_else(|e| {
                        panic!("shmkit: cannot start the async waiter thread: {e}")
                    });
                registrations.push(again);
            }
            // As in `until`: a bounded number of re-checks per poll, then
            // a yield (not a sleep) while the check still says ready.
            if ready() {
                if rechecks < RECHECKS {
                    rechecks += 1;
                    registrations.drain(..).for_each(Registration::spend); // the attempt looks itself
                    continue;
                }
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
    })
}

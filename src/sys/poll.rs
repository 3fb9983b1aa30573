//! Sleeping on many descriptors at once (feature `async`: the exit
//! watcher, which waits for any of the processes awaited by `join_async`
//! through their pidfds): an eventfd to interrupt the sleep, and `poll`.

use super::cvt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A fresh eventfd (close-on-exec, non-blocking): a counter that another
/// thread bumps ([`event_signal`]) to end a [`poll_many`].
pub(crate) fn event_fd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes a counter and flags; it returns a new descriptor.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter (it becomes readable).
pub(crate) fn event_signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of `one` to a descriptor we own. It can only
    // fail with EAGAIN once the counter nears u64::MAX, when it is readable
    // anyway: the result is not needed.
    unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
}

/// Empties an eventfd's counter (it is no longer readable).
pub(crate) fn event_drain(fd: &OwnedFd) {
    let mut count: u64 = 0;
    // SAFETY: reads 8 bytes into `count`; a non-blocking eventfd whose
    // counter is 0 fails with EAGAIN, which needs nothing either.
    unsafe { libc::read(fd.as_raw_fd(), (&raw mut count).cast(), 8) };
}

/// Waits until one of `fds` is readable, hung up or in error, or `timeout`
/// passes (`None`: no limit); which ones are, by index (empty on timeout or
/// on a signal). The caller loops.
pub(crate) fn poll_many(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| {
        (t.as_millis().min(i32::MAX as u128 - 1) as libc::c_int)
            + i32::from(!t.subsec_nanos().is_multiple_of(1_000_000))
    });
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds that the call
    // may write (`revents` only).
    match cvt(unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) }) {
        Ok(_) => Ok(pfds
            .iter()
            .enumerate()
            .filter(|(_, p)| p.revents != 0)
            .map(|(i, _)| i)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

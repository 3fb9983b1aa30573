//! Descriptor calls: duplicate, close-on-exec on and off, close, dup2.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A close-on-exec duplicate of `fd` numbered 3 or above, owned by the caller.
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on any number: a new descriptor or -1.
    let dup = super::cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `dup` was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// Sets (`true`) or clears close-on-exec on `fd`.
pub(crate) fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: fcntl(F_SETFD) on a descriptor number touches no memory; at
    // worst EBADF.
    super::cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) }).map(drop)
}

/// Clears close-on-exec between `fork` and `exec`: async-signal-safe (one
/// `fcntl`, no allocation), for `Command::pre_exec`.
pub(crate) fn clear_cloexec_in_child(fd: RawFd) -> io::Result<()> {
    set_cloexec(fd, false)
}

/// Closes a descriptor number that nothing in this process owns.
///
/// # Safety
///
/// No `OwnedFd`, `File` or other owner may hold `fd`: it would close a
/// descriptor reused by then.
pub(crate) unsafe fn close_unowned(fd: RawFd) {
    // SAFETY: the caller vouches that nobody owns `fd`.
    unsafe { libc::close(fd) };
}

/// Makes `to` a copy of `from` (atomically replacing what `to` was).
pub(crate) fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on descriptor numbers touches no memory; at worst EBADF.
    super::cvt(unsafe { libc::dup2(from, to) }).map(drop)
}

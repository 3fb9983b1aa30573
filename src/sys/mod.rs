//! The only place that talks to the operating system through FFI.
//!
//! Everything above this module works with safe wrappers: shared-memory objects
//! (`shm`), descriptors (`fd`), futexes (`futex`), the coarse clock (`clock`),
//! descriptor sets (`poll`, feature `async`), processes (`proc`: identity,
//! fork, signals, exit) and the SIGBUS
//! handler that survives a peer's truncation of a mapping (`sigbus`).

pub(crate) mod clock;
pub(crate) mod fd;
pub(crate) mod futex;
#[cfg(feature = "async")]
pub(crate) mod poll;
pub(crate) mod proc;
pub(crate) mod shm;
pub(crate) mod sigbus;

use std::io;

/// Turns a `-1`-on-error libc return value into an `io::Result`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retries a libc call while it fails with `EINTR`.
pub(crate) fn cvt_retry(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

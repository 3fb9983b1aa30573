//! Errors: one [`enum@Error`] nested by layer ([`RegionError`], [`ProcessError`],
//! [`PoolError`]) for setup, OS and process failures, and per-operation types
//! ([`OwnerDied`](crate::sync::OwnerDied), [`TryLockError`](crate::sync::TryLockError), ...)
//! in the modules whose operations return them.

mod pool;
mod process;
mod region;

pub use pool::PoolError;
pub use process::ProcessError;
pub use region::RegionError;
use std::fmt;
use std::io;
use std::sync::Arc;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure of shmkit outside a channel operation (those have their own
/// types in [`queue`](crate::queue), converted to [`Error::Channel`] by `?`),
/// nested by layer: [`Region`](Error::Region) for shared regions,
/// [`Process`](Error::Process), [`Pool`](Error::Pool), and the leaves every
/// layer shares.
///
/// Each message says what was expected, what was found, and what to do.
/// `Corrupted` (a region's) is kept for bytes that are really impossible;
/// a caller's mistake is [`InvalidArgument`](Error::InvalidArgument).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// Creating, opening or checking a shared region, or an OS call on one.
    Region(RegionError),
    /// Starting, running or joining a child process.
    Process(ProcessError),
    /// A pool's task or worker, or the pool itself.
    Pool(PoolError),
    /// A process died while holding a lock; converted from
    /// [`OwnerDied`](crate::sync::OwnerDied) by `?`.
    OwnerDied,
    /// Arguments or a return value could not be encoded, or failed validation
    /// when decoded.
    Encoding {
        /// What was being encoded or decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A queue or pipe send or receive failed; converted by `?` from
    /// the per-operation errors of [`queue`](crate::queue) (`SendError`,
    /// `TrySendError`, `RecvTimeoutError`, ...; match those for details).
    Channel {
        /// The operation: `send`, `try_send`, `recv_timeout`, ...
        op: &'static str,
        /// What happened.
        reason: String,
    },
    /// A wait ran out of time.
    Timeout,
    /// Any other OS failure, in any layer.
    Io {
        /// The operation that failed.
        op: &'static str,
        /// What it was done to: a segment's name, or a process.
        name: String,
        /// The OS error (shared, so that the error is `Clone`).
        source: Arc<io::Error>,
    },
    /// An argument is out of its range (Python's `ValueError`).
    InvalidArgument {
        /// The argument (a builder setter's name).
        argument: &'static str,
        /// What is wrong and what to give instead.
        message: String,
    },
}

impl Error {
    /// An OS error from a call that is not about a region (a process's
    /// `kill`, `waitpid`, `fork`, a `/proc` read): always [`Error::Io`], so
    /// that an `ENOENT` or `EPERM` there is not reported as a segment's.
    pub(crate) fn from_os(op: &'static str, what: &str, e: io::Error) -> Error {
        Error::Io {
            op,
            name: what.to_owned(),
            source: Arc::new(e),
        }
    }

    /// Maps an OS error from operation `op` on segment `name`, turning the errno
    /// values that have a meaning of their own into their variants.
    pub(crate) fn from_io(op: &'static str, name: &str, e: io::Error) -> Error {
        let name = name.to_owned();
        Error::Region(match e.raw_os_error() {
            Some(libc::EEXIST) => RegionError::AlreadyExists { name },
            Some(libc::ENOENT) => RegionError::NotFound { name },
            Some(libc::EACCES) | Some(libc::EPERM) => RegionError::PermissionDenied {
                name,
                source: Arc::new(e),
            },
            Some(libc::ENAMETOOLONG) => RegionError::InvalidName {
                name,
                reason: "too long",
            },
            _ => {
                return Error::Io {
                    op,
                    name,
                    source: Arc::new(e),
                };
            }
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Region(e) => write!(f, "{e}"),
            Error::Process(e) => write!(f, "{e}"),
            Error::Pool(e) => write!(f, "{e}"),
            Error::OwnerDied => write!(
                f,
                "a process died while holding the lock: call lock(), repair the data, and \
                 call mark_consistent() on the guard"
            ),
            Error::Encoding { what, reason } => write!(
                f,
                "could not encode or decode the {what}: {reason}; use types that derive \
                 rkyv's Archive, Serialize and Deserialize"
            ),
            Error::Channel { op, reason } => write!(f, "{op} failed: {reason}"),
            Error::Timeout => write!(f, "timed out"),
            Error::InvalidArgument { argument, message } => {
                write!(f, "invalid {argument}: {message}")
            }
            Error::Io { op, name, source } => write!(f, "{op} failed for {name}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Region(e) => e.source(),
            Error::Io { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

macro_rules! wrap {
    ($($kind:ident => $variant:ident),+) => {$(
        impl From<$kind> for Error {
            fn from(e: $kind) -> Error {
                Error::$variant(e)
            }
        }
    )+};
}
wrap!(RegionError => Region, ProcessError => Process, PoolError => Pool);

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn os_errors_land_in_their_layer() {
        let e = |errno| Error::from_io("open", "/x", io::Error::from_raw_os_error(errno));
        assert!(matches!(
            e(libc::ENOENT),
            Error::Region(RegionError::NotFound { .. })
        ));
        assert!(matches!(
            e(libc::EEXIST),
            Error::Region(RegionError::AlreadyExists { .. })
        ));
        assert!(matches!(
            e(libc::EACCES),
            Error::Region(RegionError::PermissionDenied { .. })
        ));
        assert!(matches!(e(libc::EIO), Error::Io { op: "open", .. }));
    }

    #[test]
    fn a_chain_prints_each_message_once() {
        // The wrapper shows its kind's text and passes on the kind's source,
        // so `e` then `e.source()` never repeats a line.
        let e = Error::from_io("open", "/x", io::Error::from_raw_os_error(libc::EACCES));
        let Error::Region(inner) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(e.to_string(), inner.to_string());
        let src = e.source().expect("the io::Error");
        assert_eq!(
            src.to_string(),
            io::Error::from_raw_os_error(libc::EACCES).to_string()
        );
        assert!(src.source().is_none());
        let io = Error::from_io("mmap", "/y", io::Error::from_raw_os_error(libc::EIO));
        assert!(io.source().is_some());
        let pool: Error = PoolError::Closed.into();
        assert!(matches!(pool, Error::Pool(PoolError::Closed)));
        assert!(pool.source().is_none());
        let died: Error = ProcessError::Died {
            pid: 7,
            name: "w".into(),
            exitcode: -9,
        }
        .into();
        assert_eq!(
            died.to_string(),
            "process w (pid 7) was killed by signal 9 before returning a result"
        );
    }
}

//! Errors: one [`enum@Error`] nested by layer ([`RegionError`], [`ProcessError`],
//! [`PoolError`]) for setup, OS and process failures, and per-operation types
//! ([`OwnerDied`](crate::sync::OwnerDied), [`TryLockError`](crate::sync::TryLockError), ...)
//! in the modules whose operations return them.

use crate::region::kind::{Kind, MAGIC, TypeInfo};
use std::fmt;
use std::io;
use std::time::Duration;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure of shmkit outside a channel operation (those have their own
/// types in [`queue`](crate::queue), converted to [`Error::Channel`] by `?`),
/// nested by layer: [`Region`](Error::Region) for shared regions and the OS,
/// [`Process`](Error::Process), [`Pool`](Error::Pool), and the leaves every
/// layer shares.
///
/// Each message says what was expected, what was found, and what to do.
/// `Corrupted` (a region's) is kept for bytes that are really impossible;
/// a caller's mistake is [`InvalidArgument`](Error::InvalidArgument).
#[derive(Debug)]
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
        /// The OS error.
        source: io::Error,
    },
    /// An argument is out of its range (Python's `ValueError`).
    InvalidArgument {
        /// The argument (a builder setter's name).
        argument: &'static str,
        /// What is wrong and what to give instead.
        message: String,
    },
}

/// Creating, opening and checking a shared region, and the fixed tables
/// inside one (a map's entries, a queue's handles).
///
/// `name` is the segment's name (`/shmkit-...`), its file path, or
/// `<anonymous>` for a memfd region.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegionError {
    /// `create` found the name taken (we never adopt a pre-planted segment).
    AlreadyExists {
        /// The segment name.
        name: String,
    },
    /// `open` found no segment under the name.
    NotFound {
        /// The segment name.
        name: String,
    },
    /// The OS refused access (mode bits, or another user's segment).
    PermissionDenied {
        /// The segment name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// The name cannot be used as a POSIX shared-memory name.
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Not enough room in the filesystem that backs the segment (often a small
    /// /dev/shm in a container).
    NoSpace {
        /// The segment name.
        name: String,
        /// Bytes asked for.
        requested: u64,
        /// Bytes free when we looked.
        available: u64,
    },
    /// The segment does not start with shmkit's magic number.
    NotShmkit {
        /// The segment name.
        name: String,
        /// The first eight bytes found.
        found_magic: u64,
    },
    /// The segment was made by an incompatible shmkit layout version.
    VersionMismatch {
        /// The segment name.
        name: String,
        /// Our layout version.
        expected: u32,
        /// The segment's.
        found: u32,
    },
    /// The segment holds another kind of object (an Array opened as a Value, ...).
    KindMismatch {
        /// The segment name.
        name: String,
        /// What the caller opened it as.
        expected: Kind,
        /// What the header says (raw, as a hostile peer may write anything).
        found: u32,
    },
    /// The element type differs (size, alignment, or type name/tag).
    TypeMismatch {
        /// The segment name.
        name: String,
        /// The caller's type.
        expected: TypeInfo,
        /// The segment's.
        found: TypeInfo,
    },
    /// The element count differs from the one the caller asked for.
    LengthMismatch {
        /// The segment name.
        name: String,
        /// The caller's count.
        expected: u64,
        /// The segment's.
        found: u64,
    },
    /// The backing object is shorter than its header says.
    Truncated {
        /// The segment name.
        name: String,
        /// Bytes the header requires.
        expected: u64,
        /// Bytes the object has.
        found: u64,
    },
    /// The creator has not published the segment within the open timeout.
    NotInitialized {
        /// The segment name.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The segment belongs to another user.
    ForeignOwner {
        /// The segment name.
        name: String,
        /// The owner's uid.
        owner_uid: u32,
        /// Ours.
        our_uid: u32,
    },
    /// A header field is impossible (offsets out of range, ...): the segment was
    /// damaged or written by a hostile peer.
    Corrupted {
        /// The segment name.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// A queue (or pipe) already has as many live handles as its participant
    /// table holds.
    TooManyHandles {
        /// The segment.
        name: String,
        /// Live senders and receivers a queue can have at once.
        max: usize,
    },
    /// A new key found no free slot in its part of a
    /// [`SharedMap`](crate::SharedMap).
    MapFull {
        /// The map's segment.
        name: String,
        /// The capacity it was created with.
        capacity: usize,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::AlreadyExists { name } => write!(
                f,
                "segment {name} already exists: open it instead, pick another name, \
                 or remove it (`shmkit clean`) if it is stale"
            ),
            RegionError::NotFound { name } => write!(
                f,
                "no segment named {name}: check the name, or create it first"
            ),
            RegionError::PermissionDenied { name, source } => write!(
                f,
                "permission denied on segment {name} ({source}): it belongs to another \
                 user or its mode forbids us"
            ),
            RegionError::InvalidName { name, reason } => write!(
                f,
                "invalid segment name {name:?}: {reason} (use up to 200 characters from \
                 [A-Za-z0-9._-], optionally after one leading '/')"
            ),
            RegionError::NoSpace {
                name,
                requested,
                available,
            } => write!(
                f,
                "not enough shared memory for {name}: asked for {requested} bytes \
                 ({:.1} MiB) but {available} bytes ({:.1} MiB) are free; free space in \
                 /dev/shm (`shmkit clean`), enlarge it (docker --shm-size), or ask for less",
                *requested as f64 / 1048576.0,
                *available as f64 / 1048576.0
            ),
            RegionError::NotShmkit { name, found_magic } => write!(
                f,
                "segment {name} is not a shmkit segment (magic {found_magic:#018x}, \
                 expected {:#018x}): another program owns this name",
                MAGIC
            ),
            RegionError::VersionMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "segment {name} has layout version {found}, this shmkit reads version \
                 {expected}: use the same shmkit version in every process"
            ),
            RegionError::KindMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "segment {name} holds a {}, not a {expected:?}: open it with the type \
                 that created it",
                Kind::from_raw(*found)
                    .map_or_else(|| format!("kind #{found}"), |k| format!("{k:?}"))
            ),
            RegionError::TypeMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "segment {name} holds elements of type {found}, but was opened as \
                 {expected}: open it with the same element type (or the same tag)"
            ),
            RegionError::LengthMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "segment {name} holds {found} elements, but {expected} were expected"
            ),
            RegionError::Truncated {
                name,
                expected,
                found,
            } => write!(
                f,
                "segment {name} is truncated: its header needs {expected} bytes but the \
                 object has {found}; somebody shrank it, recreate it"
            ),
            RegionError::NotInitialized { name, waited } => write!(
                f,
                "segment {name} was not initialised within {waited:?}: its creator is \
                 still building it or died doing so; retry with a longer open timeout, or \
                 remove it (`shmkit clean`) if its creator is gone"
            ),
            RegionError::ForeignOwner {
                name,
                owner_uid,
                our_uid,
            } => write!(
                f,
                "segment {name} belongs to uid {owner_uid}, not to us (uid {our_uid}); \
                 refusing to trust it. Use allow_foreign_owner(true) if that is intended"
            ),
            RegionError::Corrupted { name, what } => {
                write!(f, "segment {name} is corrupted: {what}; recreate it")
            }
            RegionError::TooManyHandles { name, max } => write!(
                f,
                "queue {name} has too many handles: at most {max} live senders and receivers \
                 per queue (each handle, clone or thread uses one); drop unused ones"
            ),
            RegionError::MapFull { name, capacity } => write!(
                f,
                "shared map {name} is full (created for {capacity} entries; its stripe for \
                 this key has no free slot): remove entries, or create a larger map"
            ),
        }
    }
}

/// Starting, running and joining a child process.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcessError {
    /// A child process panicked; `message` is its panic payload.
    Panicked {
        /// The child's pid.
        pid: u32,
        /// The child's name.
        name: String,
        /// The panic message.
        message: String,
    },
    /// A child process ended without reporting a result: it called `exit`,
    /// was killed, or crashed. `exitcode` follows Python: negative is `-signal`.
    Died {
        /// The child's pid.
        pid: u32,
        /// The child's name.
        name: String,
        /// Its exit code, or minus the signal that killed it.
        exitcode: i32,
    },
    /// The child could not run the function it was sent: the code it names
    /// is not in the executable the child runs, or the signature differs.
    FunctionNotFound {
        /// What the child found wrong.
        reason: String,
    },
    /// `fork` was refused because the process runs more than one thread.
    ForkRefused {
        /// Threads counted in /proc/self/status.
        threads: usize,
    },
    /// The process was already joined; its result has been taken.
    AlreadyJoined {
        /// The child's pid.
        pid: u32,
    },
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Panicked { pid, name, message } => {
                write!(f, "process {name} (pid {pid}) panicked: {message}")
            }
            ProcessError::Died {
                pid,
                name,
                exitcode,
            } if *exitcode < 0 => write!(
                f,
                "process {name} (pid {pid}) was killed by signal {} before returning a result",
                -exitcode
            ),
            ProcessError::Died {
                pid,
                name,
                exitcode,
            } => write!(
                f,
                "process {name} (pid {pid}) exited with code {exitcode} before returning a \
                 result: return from the function instead of calling exit"
            ),
            ProcessError::FunctionNotFound { reason } => write!(
                f,
                "the child could not find the function to run: {reason}; spawn only \
                 functions of this executable, and run the same build in parent and child"
            ),
            ProcessError::ForkRefused { threads } => write!(
                f,
                "refusing to fork: this process runs {threads} threads, and a forked child \
                 may deadlock on a lock another thread held; use the spawn start method, or \
                 `unsafe` fork_unchecked if you know every thread is quiescent"
            ),
            ProcessError::AlreadyJoined { pid } => {
                write!(f, "process {pid} was already joined and its result taken")
            }
        }
    }
}

/// A pool's tasks and workers.
#[derive(Debug)]
#[non_exhaustive]
pub enum PoolError {
    /// A pool task panicked; the worker that ran it lives on.
    TaskPanicked {
        /// The panic message.
        message: String,
    },
    /// The pool worker running the task died (killed, aborted, crashed, or
    /// exited) before it returned; it was replaced.
    WorkerDied {
        /// The worker's pid.
        pid: u32,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
        /// Its exit code, or minus the signal (as [`Process::exitcode`](crate::Process::exitcode)).
        exitcode: i32,
    },
    /// The encoded arguments of one task do not fit a task slot.
    TaskTooLarge {
        /// Bytes the task needs.
        size: usize,
        /// Bytes a task slot holds.
        max: usize,
    },
    /// The pool no longer takes tasks (`close` or `terminate` was called).
    Closed,
    /// The pool was terminated (or dropped) before the task finished.
    Terminated,
    /// The pool cannot run tasks: a worker's initializer failed.
    Broken {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::TaskPanicked { message } => write!(f, "the task panicked: {message}"),
            PoolError::WorkerDied {
                pid,
                signal,
                exitcode,
            } => match signal {
                Some(s) => write!(
                    f,
                    "pool worker {pid} was killed by signal {s} while running the task; \
                     it was replaced (retry the task, or set retries on the pool)"
                ),
                None => write!(
                    f,
                    "pool worker {pid} exited with code {exitcode} while running the task; \
                     it was replaced (retry the task, or set retries on the pool)"
                ),
            },
            PoolError::TaskTooLarge { size, max } => write!(
                f,
                "a task's arguments take {size} bytes but a task slot holds {max}: pass large \
                 data as an Array or Value handle (shared, not copied), use a smaller \
                 chunksize, or raise PoolBuilder::max_message"
            ),
            PoolError::Closed => write!(f, "the pool is closed and takes no more tasks"),
            PoolError::Terminated => {
                write!(f, "the pool was terminated before the task finished")
            }
            PoolError::Broken { reason } => write!(f, "the pool cannot run tasks: {reason}"),
        }
    }
}

impl Error {
    /// Maps an OS error from operation `op` on segment `name`, turning the errno
    /// values that have a meaning of their own into their variants.
    pub(crate) fn from_io(op: &'static str, name: &str, e: io::Error) -> Error {
        let name = name.to_owned();
        Error::Region(match e.raw_os_error() {
            Some(libc::EEXIST) => RegionError::AlreadyExists { name },
            Some(libc::ENOENT) => RegionError::NotFound { name },
            Some(libc::EACCES) | Some(libc::EPERM) => {
                RegionError::PermissionDenied { name, source: e }
            }
            Some(libc::ENAMETOOLONG) => RegionError::InvalidName {
                name,
                reason: "too long",
            },
            _ => {
                return Error::Io {
                    op,
                    name,
                    source: e,
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
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl std::error::Error for RegionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegionError::PermissionDenied { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl std::error::Error for ProcessError {}
impl std::error::Error for PoolError {}

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

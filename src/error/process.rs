//! [`ProcessError`]: a child process.

use std::fmt;

/// Starting, running and joining a child process.
#[derive(Debug, Clone)]
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
    /// The private channel between a parent and its child holds an
    /// impossible frame (another process wrote into it, or the two run
    /// different builds).
    ChannelCorrupted {
        /// What is wrong.
        what: String,
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
            ProcessError::ChannelCorrupted { what } => write!(
                f,
                "the channel to a child process is corrupted: {what}; run the same build in \
                 parent and child, and start the process again"
            ),
        }
    }
}

impl std::error::Error for ProcessError {}

//! [`PoolError`]: a pool, its tasks and workers.

use std::fmt;

/// A pool's tasks and workers.
#[derive(Debug, Clone)]
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
    /// The result was already taken (a second `get`, `wait_result` or
    /// iteration of one `AsyncResult` or `MapResult`).
    AlreadyTaken,
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
            PoolError::AlreadyTaken => {
                write!(
                    f,
                    "the result was already taken: keep the value the first call returned"
                )
            }
            PoolError::Broken { reason } => write!(f, "the pool cannot run tasks: {reason}"),
        }
    }
}

impl std::error::Error for PoolError {}

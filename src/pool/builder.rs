//! [`PoolBuilder`]: how many workers, how they start, what they run first.

use super::collector::{Config, Shared};
use super::state::State;
use crate::codec::Message;
use crate::error::{Error, Result};
use crate::process::{StartMethod, cpu_count};
use crate::queue::{Bytes, Queue};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};

use super::{MAX_WORKERS, Pool};
use super::{collector, wire};

/// Settings for a [`Pool`].
pub struct PoolBuilder {
    workers: Option<usize>,
    method: StartMethod,
    init: Option<Result<wire::InitCall>>,
    max_tasks: u64,
    max_message: usize,
    retries: u32,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("workers", &self.workers)
            .field("method", &self.method)
            .field("initializer", &self.init.is_some())
            .field("max_tasks_per_child", &self.max_tasks)
            .field("max_message", &self.max_message)
            .field("retries", &self.retries)
            .finish()
    }
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            workers: None,
            method: StartMethod::Spawn,
            init: None,
            max_tasks: 0,
            max_message: 1 << 20,
            retries: 0,
        }
    }
}

impl PoolBuilder {
    /// The number of workers (default: [`cpu_count`]); at least 1 and at
    /// most [`MAX_WORKERS`], else [`build`](Self::build) fails with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) (Python raises `ValueError` for 0).
    #[must_use]
    pub fn processes(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Runs `f(args)` once in each worker before it takes tasks (Python's
    /// `initializer` and `initargs`). If it panics, the pool cannot run
    /// tasks: [`build`](Self::build) fails with [`PoolError::Broken`](crate::error::PoolError::Broken).
    pub fn initializer<A: Message + 'static>(mut self, f: fn(A), args: A) -> Self {
        self.init = Some(wire::InitCall::new(f, &args));
        self
    }

    /// How the first workers start (default [`StartMethod::Spawn`]).
    /// [`StartMethod::Fork`] needs a single-threaded process at
    /// [`build`](Self::build); replacements are always spawned, since the
    /// pool runs a thread by then.
    #[must_use]
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = method;
        self
    }

    /// Chunks a worker runs before it is replaced by a fresh one (Python's
    /// `maxtasksperchild`; 0, the default, for no limit).
    #[must_use]
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks = n;
        self
    }

    /// The largest task or result message in bytes (default 1 MiB): the
    /// size of a queue slot. Results larger than this travel in pieces;
    /// chunks larger are cut; a single item larger fails with
    /// [`PoolError::TaskTooLarge`](crate::error::PoolError::TaskTooLarge).
    #[must_use]
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes.max(4096);
        self
    }

    /// How many times a chunk whose worker died while running it is run
    /// again on another worker before it fails with [`PoolError::WorkerDied`](crate::error::PoolError::WorkerDied)
    /// (default 0: the caller decides).
    #[must_use]
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Starts the workers and waits until each has run its initializer.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for 0 workers or more than the pool supports; [`Error::Encoding`](crate::Error::Encoding)
    /// if the initializer's arguments cannot be encoded; [`PoolError::Broken`](crate::error::PoolError::Broken) if a worker's
    /// initializer failed; [`ProcessError::ForkRefused`](crate::error::ProcessError::ForkRefused) with [`StartMethod::Fork`] in a multithreaded
    /// process; the errors of creating the pool's queues and status array, and of starting a worker
    /// ([`Error::Io`](crate::Error::Io), ...).
    pub fn build(self) -> Result<Pool> {
        let workers = self.workers.unwrap_or_else(|| cpu_count().max(1));
        if workers == 0 || workers > MAX_WORKERS {
            return Err(Error::InvalidArgument {
                argument: "processes",
                message: format!(
                    "{workers} workers asked: a pool needs at least 1 and supports at most \
                     {MAX_WORKERS}"
                ),
            });
        }
        let init = self.init.transpose()?;
        let results = Queue::<Bytes>::builder()
            .capacity((2 * workers + 2).next_power_of_two())
            .max_message(self.max_message)
            .create()?;
        let rx = results.receiver()?;
        let helper = results.receiver()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(workers, self.max_tasks)),
            config: Config {
                workers,
                init,
                max_message: self.max_message,
                retries: self.retries,
            },
            waker: Mutex::new(results.sender()?),
            results,
            status: crate::Array::new(workers)?,
            started: AtomicU64::new(0),
            startup: Mutex::new((0, None)),
            startup_cv: Condvar::new(),
            pieces: Mutex::new(Default::default()),
            helper: Mutex::new(helper),
            deferred: Mutex::new(Vec::new()),
        });
        if self.method == StartMethod::Fork {
            // Forked from this thread, before the pool's thread exists.
            for slot in 0..workers {
                let w = shared.start_worker(slot, StartMethod::Fork)?;
                shared.lock().workers[slot] = Some(w);
            }
        }
        let pool = Pool {
            collector: Mutex::new(Some(collector::start(shared.clone(), rx)?)),
            shared,
            scratch: Mutex::default(),
        };
        pool.wait_started()?;
        Ok(pool)
    }
}

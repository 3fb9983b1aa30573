//! A pool of worker processes: [`Pool::map`], [`Pool::imap`],
//! [`Pool::apply_async`], ... as in Python's `multiprocessing.Pool` — and it
//! never hangs when a worker dies.
//!
//! ```
//! # fn main() -> shmkit::Result<()> {
//! fn square(x: u64) -> u64 { x * x }
//! let pool = shmkit::Pool::new()?;                 // cpu_count() workers
//! assert_eq!(pool.map(square, 0..10)?, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//! let pending = pool.apply_async(square, 7)?;
//! assert_eq!(pending.get()?, 49);
//! # Ok(()) }
//! ```
//!
//! - **Functions** are `fn(A) -> R` (or `fn(A, B) -> R` for
//!   [`starmap`](Pool::starmap)) of this executable; arguments and results
//!   are rkyv archives ([`Message`]), validated on arrival. Workers are
//!   spawned (re-executed) by default, so `main` never runs in them.
//! - **Chunks**: `map` cuts its input into chunks as Python does (a quarter
//!   of an even share per worker); each chunk is one message to a worker and
//!   one back. A chunk too large for a slot is cut in two (and an item alone
//!   too large is [`PoolError::TaskTooLarge`]: pass big data as an
//!   [`Array`](crate::Array) handle, which travels as its name, or, for an
//!   anonymous one, as a descriptor of the pool's process that the worker
//!   opens through `/proc/<pid>/fd`, kept open until the task is done).
//! - **Lazy input**: [`imap`](Pool::imap) and
//!   [`imap_unordered`](Pool::imap_unordered) read their input only as far as
//!   a bounded lookahead (Python reads it all first).
//! - **Failures**: a panicking item fails alone with
//!   [`PoolError::TaskPanicked`]; its worker lives on. A worker that dies (killed,
//!   aborted, crashed, exited) fails only the chunk it was running, with
//!   [`PoolError::WorkerDied`] (or runs it again, [`PoolBuilder::retries`]); the
//!   chunks queued behind it go to other workers; a new worker takes its
//!   place. Each worker writes which chunk it runs into a shared status
//!   word, so the pool knows exactly what it held.
//! - **Lifecycle**: [`close`](Pool::close), [`join`](Pool::join) (finish,
//!   then stop the workers), [`terminate`](Pool::terminate) (stop now:
//!   outstanding calls fail with [`PoolError::Terminated`]). Dropping the
//!   pool terminates it, as leaving Python's `with Pool()` block does; join
//!   first to let the work finish. No worker outlives the pool.
//!
//! Callbacks ([`apply_async_with`](Pool::apply_async_with), progress) run
//! on the pool's thread: keep them short, and do not wait there for other
//! results of the same pool.

#[cfg(feature = "async")]
mod asynch;
mod collector;
mod job;
mod results;
mod state;
pub(crate) mod wire;
pub(crate) mod worker;

pub use job::Progress;
pub use results::{AsyncResult, MapResult};
pub use state::PoolStats;
pub use wire::Callable;

use crate::codec::Message;
use crate::error::{Error, PoolError, Result};
use collector::Shared;
use state::Stop;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

mod builder;
mod options;
mod ranges;
mod submit;

#[cfg(feature = "async")]
pub use asynch::ImapStream;
pub use builder::PoolBuilder;
pub use options::{CallOptions, Imap};
use submit::both;
/// Most workers a pool may have (the result queue has 64 participant
/// entries: one per worker, two receivers and a waker of the pool's, and
/// room for replacements taking over their entries).
pub const MAX_WORKERS: usize = 56;

/// A pool of worker processes. See the [module docs](self).
///
/// All methods take `&self`: a pool can be shared between threads.
pub struct Pool {
    shared: Arc<Shared>,
    collector: Mutex<Option<JoinHandle<()>>>,
    /// `map_pod`'s shared input and output arrays, kept between calls.
    scratch: Mutex<ranges::Scratch>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Pool")
            .field("processes", &self.shared.config.workers)
            .field("outstanding", &st.outstanding())
            .field("closed", &st.closed)
            .finish()
    }
}

impl Pool {
    /// A pool of [`cpu_count`](crate::cpu_count) spawned workers.
    ///
    /// # Errors
    ///
    /// As for [`PoolBuilder::build`].
    pub fn new() -> Result<Pool> {
        Pool::builder().build()
    }

    /// A builder, for the number of workers, an initializer, ...
    #[must_use]
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers.
    pub fn processes(&self) -> usize {
        self.shared.config.workers
    }

    /// The pids of the running workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        let st = self.shared.lock();
        st.workers
            .iter()
            .flatten()
            .map(|w| w.process.pid())
            .collect()
    }

    /// Counters of chunks and workers.
    pub fn stats(&self) -> PoolStats {
        self.shared.lock().stats
    }

    /// Settings for one call: chunk size, lookahead, a progress callback.
    pub fn options(&self) -> CallOptions<'_> {
        CallOptions {
            pool: self,
            chunksize: None,
            lookahead: None,
            progress: None,
        }
    }

    /// `f` over every item, results in input order (Python's `map`). The
    /// first error by position if an item failed; every item is finished
    /// (or failed) before this returns.
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`PoolError::Broken`] if a worker's initializer failed; then the first item's error by
    /// position, as for [`MapResult::get`].
    pub fn map<A, R>(&self, f: fn(A) -> R, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
    {
        self.options().map(f, items)
    }

    /// Like [`map`](Self::map), without waiting.
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`PoolError::Broken`] if a worker's initializer failed. An item whose arguments are too
    /// large ([`PoolError::TaskTooLarge`]) or cannot be encoded fails in the result, not here.
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<MapResult<R>>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
    {
        self.options().map_async(f, items)
    }

    /// Like [`map_async`](Self::map_async), with callbacks run on the pool's
    /// thread when the call finishes: `callback` with every output, or
    /// `error_callback` with the first error.
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`PoolError::Broken`] if a worker's initializer failed. An item whose arguments are too
    /// large ([`PoolError::TaskTooLarge`]) or cannot be encoded fails in the result, not here.
    pub fn map_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        callback: impl FnOnce(&[R]) + Send + 'static,
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<MapResult<R>>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
    {
        self.options()
            .submit_map(f, items, Some(both(callback, error_callback)))
    }

    /// `f(a, b)` over every pair (Python's `starmap`).
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`PoolError::Broken`] if a worker's initializer failed; then the first item's error by
    /// position, as for [`MapResult::get`].
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>>
    where
        A: 'static,
        B: 'static,
        (A, B): Message,
        R: Message + Send + 'static,
    {
        self.options().starmap(f, items)
    }

    /// Results as they come, in input order, reading the input lazily
    /// (Python's `imap`, chunk size 1 unless set with [`options`](Self::options)).
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, items: I) -> Imap<'_, fn(A) -> R, I::IntoIter>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.options().imap(f, items)
    }

    /// Results in the order they finish (Python's `imap_unordered`).
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
    ) -> Imap<'_, fn(A) -> R, I::IntoIter>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.options().imap_unordered(f, items)
    }

    /// Runs `f(args)` in a worker and waits for it (Python's `apply`).
    ///
    /// # Errors
    ///
    /// [`PoolError::TaskTooLarge`] or [`Error::Encoding`] if `args` cannot be sent;
    /// [`PoolError::Closed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`PoolError::Broken`] if a worker's initializer failed; then the task's error, as for
    /// [`AsyncResult::get`].
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
    {
        self.apply_async(f, args)?.get()
    }

    /// Runs `f(args)` in a worker; the handle gets its value.
    ///
    /// # Errors
    ///
    /// [`PoolError::TaskTooLarge`] or [`Error::Encoding`] if `args` cannot be sent;
    /// [`PoolError::Closed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`PoolError::Broken`] if a worker's initializer failed.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> Result<AsyncResult<R>>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
    {
        self.submit_one(f, args, None)
    }

    /// Like [`apply_async`](Self::apply_async), with callbacks run on the
    /// pool's thread: `callback` with the value, or `error_callback` with
    /// the error.
    ///
    /// # Errors
    ///
    /// [`PoolError::TaskTooLarge`] or [`Error::Encoding`] if `args` cannot be sent;
    /// [`PoolError::Closed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`PoolError::Broken`] if a worker's initializer failed.
    pub fn apply_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        args: A,
        callback: impl FnOnce(&R) + Send + 'static,
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<R>>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
    {
        let first = move |v: &[R]| {
            if let Some(r) = v.first() {
                callback(r)
            }
        };
        self.submit_one(f, args, Some(both(first, error_callback)))
    }

    /// Takes no more tasks; the workers stop once the outstanding ones are
    /// done and [`join`](Self::join) is called (or the pool drops).
    pub fn close(&self) {
        self.shared.lock().closed = true;
    }

    /// Closes the pool, waits for every outstanding task, then stops the
    /// workers and waits for them to exit.
    pub fn join(&self) {
        {
            let mut st = self.shared.lock();
            st.closed = true;
            if st.stop == Stop::Running {
                st.stop = Stop::Join;
            }
        }
        self.stop_thread();
    }

    /// Stops the workers now (SIGTERM, then SIGKILL after a second); every
    /// outstanding task fails with [`PoolError::Terminated`].
    pub fn terminate(&self) {
        {
            let mut st = self.shared.lock();
            st.closed = true;
            st.stop = Stop::Terminate;
        }
        self.stop_thread();
    }

    /// Wakes the pool's thread and waits for it to stop the workers. A
    /// second caller waits for the first to finish (the lock is held).
    fn stop_thread(&self) {
        let mut handle = self.collector.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = handle.take() {
            self.shared.wake();
            let _ = h.join();
        }
    }

    fn wait_started(&self) -> Result<()> {
        let workers = self.shared.config.workers;
        let mut s = self
            .shared
            .startup
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(why) = &s.1 {
                let reason = why.clone();
                drop(s);
                self.terminate();
                return Err(Error::Pool(PoolError::Broken { reason }));
            }
            if s.0 >= workers {
                return Ok(());
            }
            s = self
                .shared
                .startup_cv
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

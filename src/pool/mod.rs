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
//!   too large is [`Error::TaskTooLarge`]: pass big data as an
//!   [`Array`](crate::Array) handle, which travels as its name, or, for an
//!   anonymous one, as a descriptor of the pool's process that the worker
//!   opens through `/proc/<pid>/fd`, kept open until the task is done).
//! - **Lazy input**: [`imap`](Pool::imap) and
//!   [`imap_unordered`](Pool::imap_unordered) read their input only as far as
//!   a bounded lookahead (Python reads it all first).
//! - **Failures**: a panicking item fails alone with
//!   [`Error::TaskPanicked`]; its worker lives on. A worker that dies (killed,
//!   aborted, crashed, exited) fails only the chunk it was running, with
//!   [`Error::WorkerDied`] (or runs it again, [`PoolBuilder::retries`]); the
//!   chunks queued behind it go to other workers; a new worker takes its
//!   place. Each worker writes which chunk it runs into a shared status
//!   word, so the pool knows exactly what it held.
//! - **Lifecycle**: [`close`](Pool::close), [`join`](Pool::join) (finish,
//!   then stop the workers), [`terminate`](Pool::terminate) (stop now:
//!   outstanding calls fail with [`Error::PoolTerminated`]). Dropping the
//!   pool terminates it, as leaving Python's `with Pool()` block does; join
//!   first to let the work finish. No worker outlives the pool.
//!
//! Callbacks ([`apply_async_with`](Pool::apply_async_with), progress) run
//! on the pool's thread: keep them short, and do not wait there for other
//! results of the same pool.

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
use crate::error::{Error, Result};
use crate::process::{StartMethod, cpu_count};
use crate::queue::{Bytes, Queue};
use collector::{Config, Shared};
use job::{Chunk, Job, OnComplete, OnProgress, Sink};
use state::{State, Stop, TaskRec};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use wire::{ChunkTrampoline, HEADER, TASK_MAGIC, TaskHeader};

/// Most workers a pool may have (the result queue has 64 participant
/// entries: one per worker, two receivers and a waker of the pool's, and
/// room for replacements taking over their entries).
pub const MAX_WORKERS: usize = 56;

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
    /// [`Error::InvalidArgument`] (Python raises `ValueError` for 0).
    #[must_use]
    pub fn processes(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Runs `f(args)` once in each worker before it takes tasks (Python's
    /// `initializer` and `initargs`). If it panics, the pool cannot run
    /// tasks: [`build`](Self::build) fails with [`Error::PoolBroken`].
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
    /// [`Error::TaskTooLarge`].
    #[must_use]
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes.max(4096);
        self
    }

    /// How many times a chunk whose worker died while running it is run
    /// again on another worker before it fails with [`Error::WorkerDied`]
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
    /// [`Error::InvalidArgument`] for 0 workers or more than the pool supports; [`Error::Encoding`]
    /// if the initializer's arguments cannot be encoded; [`Error::PoolBroken`] if a worker's
    /// initializer failed; [`Error::ForkRefused`] with [`StartMethod::Fork`] in a multithreaded
    /// process; the errors of creating the pool's queues and status array, and of starting a worker
    /// ([`Error::Io`], ...).
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
        };
        pool.wait_started()?;
        Ok(pool)
    }
}

/// A pool of worker processes. See the [module docs](self).
///
/// All methods take `&self`: a pool can be shared between threads.
pub struct Pool {
    shared: Arc<Shared>,
    collector: Mutex<Option<JoinHandle<()>>>,
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

/// Per-call settings: [`Pool::options`].
pub struct CallOptions<'p> {
    pool: &'p Pool,
    chunksize: Option<usize>,
    lookahead: Option<usize>,
    progress: Option<OnProgress>,
}

impl std::fmt::Debug for CallOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOptions")
            .field("chunksize", &self.chunksize)
            .field("lookahead", &self.lookahead)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Pool {
    /// A pool of [`cpu_count`] spawned workers.
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
    /// [`Error::PoolClosed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`Error::PoolBroken`] if a worker's initializer failed; then the first item's error by
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
    /// [`Error::PoolClosed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`Error::PoolBroken`] if a worker's initializer failed. An item whose arguments are too
    /// large ([`Error::TaskTooLarge`]) or cannot be encoded fails in the result, not here.
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
    /// [`Error::PoolClosed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`Error::PoolBroken`] if a worker's initializer failed. An item whose arguments are too
    /// large ([`Error::TaskTooLarge`]) or cannot be encoded fails in the result, not here.
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
    /// [`Error::PoolClosed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`Error::PoolBroken`] if a worker's initializer failed; then the first item's error by
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
    /// [`Error::TaskTooLarge`] or [`Error::Encoding`] if `args` cannot be sent;
    /// [`Error::PoolClosed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`Error::PoolBroken`] if a worker's initializer failed; then the task's error, as for
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
    /// [`Error::TaskTooLarge`] or [`Error::Encoding`] if `args` cannot be sent;
    /// [`Error::PoolClosed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`Error::PoolBroken`] if a worker's initializer failed.
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
    /// [`Error::TaskTooLarge`] or [`Error::Encoding`] if `args` cannot be sent;
    /// [`Error::PoolClosed`] after [`close`](Self::close) or [`terminate`](Self::terminate),
    /// [`Error::PoolBroken`] if a worker's initializer failed.
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

    fn submit_one<A, R>(
        &self,
        f: fn(A) -> R,
        args: A,
        on_complete: Option<OnComplete<R>>,
    ) -> Result<AsyncResult<R>>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
    {
        let job = Arc::new(Job::new(on_complete, None));
        let mut pieces = Vec::new();
        encode_chunk(
            f,
            0,
            vec![args],
            self.shared.config.max_message,
            &mut pieces,
        );
        let frames = pieces
            .into_iter()
            .map(|p| p.map_err(|(_, _, e)| e))
            .collect::<Result<Vec<_>>>()?;
        self.enqueue(&job, frames)?;
        self.input_done(&job);
        Ok(AsyncResult {
            job,
            pool: self.shared.clone(),
        })
    }

    /// Encodes and queues one chunk of a call (its items from index
    /// `first`); the number of frames it took. A chunk that cannot be
    /// encoded fails its items in place; a pool that takes no more tasks is
    /// an error.
    fn submit_chunk<F: Callable>(
        &self,
        f: F,
        job: &Arc<Job<F::Output>>,
        first: usize,
        chunk: Vec<F::Args>,
    ) -> Result<usize>
    where
        F::Output: Send,
    {
        let mut pieces = Vec::new();
        encode_chunk(f, first, chunk, self.shared.config.max_message, &mut pieces);
        let n = pieces.len();
        let (frames, failed): (Vec<_>, Vec<_>) = pieces.into_iter().partition(|p| p.is_ok());
        self.enqueue(job, frames.into_iter().flatten().collect())?;
        for (first, count, e) in failed.into_iter().filter_map(|p| p.err()) {
            self.fail_in_place(job, first, count, e);
        }
        Ok(n)
    }

    /// Items that could not be sent fail where they stand.
    fn fail_in_place<R: Message + Send + 'static>(
        &self,
        job: &Arc<Job<R>>,
        first: usize,
        count: usize,
        e: Error,
    ) {
        job.submitted(count);
        let sink: Arc<dyn Sink> = job.clone();
        self.shared
            .deliver(&sink, first as u64, count, job::Delivery::Failed(e.into()));
    }

    /// Declares a call's input complete.
    fn input_done<R: Message + Send + 'static>(&self, job: &Arc<Job<R>>) {
        if job.input_done() {
            let sink: Arc<dyn Sink> = job.clone();
            self.shared.settle_later(&sink);
        }
    }

    /// Queues the frames of one call.
    fn enqueue<R: Message + Send + 'static>(
        &self,
        job: &Arc<Job<R>>,
        frames: Vec<Frame>,
    ) -> Result<()> {
        let mut st = self.shared.lock();
        if let Some(reason) = &st.broken {
            return Err(Error::PoolBroken {
                reason: reason.clone(),
            });
        }
        if st.closed {
            return Err(Error::PoolClosed);
        }
        let sink: Arc<dyn Sink> = job.clone();
        for fr in frames {
            job.submitted(fr.count);
            st.push(TaskRec {
                id: 0,
                seq: fr.first as u64,
                count: fr.count,
                frame: fr.bytes,
                _open: fr.fds,
                job: sink.clone(),
                retries_left: self.shared.config.retries,
            });
        }
        st.dispatch();
        Ok(())
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
    /// outstanding task fails with [`Error::PoolTerminated`].
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
                return Err(Error::PoolBroken { reason });
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

/// One encoded chunk.
pub(crate) struct Frame {
    first: usize,
    count: usize,
    bytes: rkyv::util::AlignedVec,
    /// Descriptors its anonymous regions travel as.
    fds: Vec<std::os::fd::OwnedFd>,
}

/// A chunk ready to send, or items that cannot be sent: `(first, count,
/// why)`.
type Piece = std::result::Result<Frame, (usize, usize, Error)>;

/// Encodes `items` (the call's items from index `first`) as task frames of
/// at most `max` bytes, cutting the chunk in two while it is too large; an
/// item too large alone becomes a failed piece of its own.
fn encode_chunk<F: Callable>(
    f: F,
    first: usize,
    mut items: Vec<F::Args>,
    max: usize,
    out: &mut Vec<Piece>,
) {
    // Anonymous regions in the items travel as this process's descriptors,
    // which the chunk keeps open until it is done.
    let (bytes, fds) = crate::region::handle::collecting_via_proc(|| {
        F::Args::encode_vec(&items, rkyv::util::AlignedVec::new(), HEADER)
    });
    let mut bytes = match bytes {
        Ok(b) => b,
        Err(e) => return out.push(Err((first, items.len(), e))),
    };
    if bytes.len() > max {
        if items.len() == 1 {
            let size = bytes.len();
            return out.push(Err((first, 1, Error::TaskTooLarge { size, max })));
        }
        drop(bytes);
        let right = items.split_off(items.len() / 2);
        let mid = first + items.len();
        encode_chunk(f, first, items, max, out);
        return encode_chunk(f, mid, right, max, out);
    }
    let trampoline: ChunkTrampoline = wire::chunk_trampoline::<F>;
    let head = TaskHeader {
        magic: TASK_MAGIC,
        count: items.len() as u32,
        id: 0,
        trampoline: crate::process::child::offset_of_code(trampoline as usize),
        function: crate::process::child::offset_of_code(wire::address(f)),
        signature: wire::signature::<F>(),
        len: (bytes.len() - HEADER) as u64,
    };
    bytes[..size_of::<TaskHeader>()].copy_from_slice(bytemuck::bytes_of(&head));
    out.push(Ok(Frame {
        first,
        count: items.len(),
        bytes,
        fds,
    }));
}

/// One completion callback from a success and an error callback.
fn both<R: 'static>(
    ok: impl FnOnce(&[R]) + Send + 'static,
    err: impl FnOnce(&Error) + Send + 'static,
) -> OnComplete<R> {
    Box::new(move |outcome: &Result<Vec<R>>| match outcome {
        Ok(v) => ok(v),
        Err(e) => err(e),
    })
}

/// Python's rule for `map`: four chunks per worker.
fn auto_chunksize(items: usize, workers: usize) -> usize {
    items.div_ceil(workers * 4).max(1)
}

impl<'p> CallOptions<'p> {
    /// Items per chunk (one message each way). Default: `map` cuts its input
    /// into four chunks per worker, as Python does; `imap` sends one item
    /// per chunk.
    #[must_use]
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = Some(n.max(1));
        self
    }

    /// For `imap`: chunks submitted ahead of the consumer (default: two per
    /// worker). Bounds how much input is read and how many results wait.
    #[must_use]
    pub fn lookahead(mut self, chunks: usize) -> Self {
        self.lookahead = Some(chunks.max(1));
        self
    }

    /// Called on the pool's thread as chunks finish.
    pub fn progress(mut self, f: impl FnMut(Progress) + Send + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// [`Pool::map`] with these options.
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`] after [`close`](Pool::close) or [`terminate`](Pool::terminate),
    /// [`Error::PoolBroken`] if a worker's initializer failed; then the first item's error by
    /// position, as for [`MapResult::get`].
    pub fn map<A, R>(self, f: fn(A) -> R, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
    {
        self.submit_map(f, items, None)?.get()
    }

    /// [`Pool::map_async`] with these options.
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`] after [`close`](Pool::close) or [`terminate`](Pool::terminate),
    /// [`Error::PoolBroken`] if a worker's initializer failed. An item whose arguments are too
    /// large ([`Error::TaskTooLarge`]) or cannot be encoded fails in the result, not here.
    pub fn map_async<A, R>(
        self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<MapResult<R>>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
    {
        self.submit_map(f, items, None)
    }

    /// [`Pool::starmap`] with these options.
    ///
    /// # Errors
    ///
    /// [`Error::PoolClosed`] after [`close`](Pool::close) or [`terminate`](Pool::terminate),
    /// [`Error::PoolBroken`] if a worker's initializer failed; then the first item's error by
    /// position, as for [`MapResult::get`].
    pub fn starmap<A, B, R>(
        self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>>
    where
        A: 'static,
        B: 'static,
        (A, B): Message,
        R: Message + Send + 'static,
    {
        self.submit_map(f, items, None)?.get()
    }

    fn submit_map<F: Callable>(
        self,
        f: F,
        items: impl IntoIterator<Item = F::Args>,
        on_complete: Option<OnComplete<F::Output>>,
    ) -> Result<MapResult<F::Output>>
    where
        F::Output: Send,
    {
        // The length decides the chunk size; an iterator that does not know
        // it exactly is collected first (as Python's map does).
        let items = items.into_iter();
        let (n, mut items): (usize, Box<dyn Iterator<Item = F::Args> + '_>) =
            match items.size_hint() {
                (lo, Some(hi)) if lo == hi => (lo, Box::new(items)),
                _ => {
                    let all: Vec<F::Args> = items.collect();
                    (all.len(), Box::new(all.into_iter()))
                }
            };
        let size = self
            .chunksize
            .unwrap_or_else(|| auto_chunksize(n, self.pool.processes()));
        let job = Arc::new(Job::new(on_complete, self.progress));
        job.expect(n);
        let mut first = 0;
        // Each chunk goes out as soon as it is encoded, so the workers start
        // while the rest is encoded.
        loop {
            let chunk: Vec<F::Args> = items.by_ref().take(size).collect();
            if chunk.is_empty() {
                break;
            }
            let count = chunk.len();
            self.pool.submit_chunk(f, &job, first, chunk)?;
            first += count;
        }
        self.pool.input_done(&job);
        Ok(MapResult {
            job,
            pool: self.pool.shared.clone(),
        })
    }

    /// [`Pool::imap`] with these options.
    pub fn imap<A, R, I>(self, f: fn(A) -> R, items: I) -> Imap<'p, fn(A) -> R, I::IntoIter>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.iterate(f, items.into_iter(), true)
    }

    /// [`Pool::imap_unordered`] with these options.
    pub fn imap_unordered<A, R, I>(
        self,
        f: fn(A) -> R,
        items: I,
    ) -> Imap<'p, fn(A) -> R, I::IntoIter>
    where
        A: Message + 'static,
        R: Message + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.iterate(f, items.into_iter(), false)
    }

    fn iterate<F: Callable, I>(self, f: F, input: I, ordered: bool) -> Imap<'p, F, I>
    where
        F::Output: Send,
    {
        Imap {
            pool: self.pool,
            f,
            chunksize: self.chunksize.unwrap_or(1),
            lookahead: self.lookahead.unwrap_or(2 * self.pool.processes().max(1)),
            job: Arc::new(Job::new(None, self.progress)),
            input: Some(input),
            ordered,
            next_first: 0,
            next_take: 0,
            chunks_out: 0,
            current: None,
        }
    }
}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: one
/// `Result` per input item.
pub struct Imap<'p, F: Callable, I> {
    pool: &'p Pool,
    f: F,
    chunksize: usize,
    lookahead: usize,
    job: Arc<Job<F::Output>>,
    /// `None` once exhausted.
    input: Option<I>,
    ordered: bool,
    /// Index of the next item to submit.
    next_first: usize,
    /// Index of the first item of the next chunk to hand out (ordered).
    next_take: u64,
    /// Chunks submitted and not yet handed out.
    chunks_out: usize,
    current: Option<Box<dyn Iterator<Item = Result<F::Output>>>>,
}

impl<F: Callable, I> std::fmt::Debug for Imap<'_, F, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("submitted", &self.next_first)
            .field("chunks_out", &self.chunks_out)
            .finish()
    }
}

impl<F: Callable, I: Iterator<Item = F::Args>> Imap<'_, F, I>
where
    F::Output: Send,
{
    /// Submits chunks until `lookahead` are out or the input ends.
    fn top_up(&mut self) {
        while self.chunks_out < self.lookahead {
            let Some(input) = self.input.as_mut() else {
                return;
            };
            let chunk: Vec<F::Args> = input.take(self.chunksize).collect();
            if chunk.is_empty() {
                self.input = None;
                self.pool.input_done(&self.job);
                return;
            }
            let first = self.next_first;
            self.next_first += chunk.len();
            let count = chunk.len();
            match self.pool.submit_chunk(self.f, &self.job, first, chunk) {
                Ok(n) => self.chunks_out += n,
                Err(e) => {
                    // The pool takes no more: the chunk's items yield the error.
                    self.pool.fail_in_place(&self.job, first, count, e);
                    self.chunks_out += 1;
                }
            }
        }
    }
}

impl<F: Callable, I: Iterator<Item = F::Args>> Iterator for Imap<'_, F, I>
where
    F::Output: Send,
{
    type Item = Result<F::Output>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.as_mut().and_then(Iterator::next) {
                return Some(item);
            }
            self.current = None;
            self.top_up();
            if self.chunks_out == 0 {
                return None;
            }
            let ordered = self.ordered;
            let key = self.next_take;
            let ready = |s: &job::JobState<F::Output>| {
                if ordered {
                    s.chunks.contains_key(&key)
                } else {
                    !s.arrived.is_empty()
                }
            };
            self.pool.shared.help_until(|| ready(&self.job.lock()));
            let mut st = self.job.wait_until(None, ready).expect("no deadline");
            let seq = if ordered {
                key
            } else {
                st.arrived.pop_front().expect("waited for one")
            };
            let chunk: Chunk<F::Output> = st.chunks.remove(&seq).expect("present");
            if ordered {
                // Arrival order only matters unordered; keep it bounded.
                st.arrived.retain(|&s| s != seq);
            }
            drop(st);
            self.chunks_out -= 1;
            if ordered {
                self.next_take += chunk.len() as u64;
            }
            self.current = Some(chunk.into_items());
        }
    }
}

//! The caller's side of a submitted call: where chunk outcomes land (the
//! handles that wait for them are in `results`).

use super::wire;
use crate::codec::Message;
use crate::error::{Error, Result};
use crate::error::{PoolError, ProcessError};
use crate::process::child::panic_message;
use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

/// Why a chunk (every item in it) failed. Cloneable, unlike [`Error`].
#[derive(Clone, Debug)]
pub(crate) enum TaskFailure {
    WorkerDied {
        pid: u32,
        signal: Option<i32>,
        exitcode: i32,
    },
    NotRun {
        function_not_found: bool,
        message: String,
    },
    Terminated,
    Broken(String),
    /// Anything else that kept the chunk from running (its error's text).
    Other(String),
    TooLarge {
        size: usize,
        max: usize,
    },
    Closed,
}

impl From<Error> for TaskFailure {
    fn from(e: Error) -> TaskFailure {
        match e {
            Error::Pool(PoolError::TaskTooLarge { size, max }) => {
                TaskFailure::TooLarge { size, max }
            }
            Error::Pool(PoolError::Closed) => TaskFailure::Closed,
            Error::Pool(PoolError::Terminated) => TaskFailure::Terminated,
            Error::Pool(PoolError::Broken { reason }) => TaskFailure::Broken(reason),
            other => TaskFailure::Other(other.to_string()),
        }
    }
}

impl TaskFailure {
    pub(crate) fn to_error(&self) -> Error {
        match self.clone() {
            TaskFailure::WorkerDied {
                pid,
                signal,
                exitcode,
            } => Error::Pool(PoolError::WorkerDied {
                pid,
                signal,
                exitcode,
            }),
            TaskFailure::NotRun {
                function_not_found: true,
                message,
            } => Error::Process(ProcessError::FunctionNotFound { reason: message }),
            TaskFailure::NotRun { message, .. } => Error::Encoding {
                what: "a pool task",
                reason: message,
            },
            TaskFailure::Terminated => Error::Pool(PoolError::Terminated),
            TaskFailure::Broken(reason) => Error::Pool(PoolError::Broken { reason }),
            TaskFailure::TooLarge { size, max } => {
                Error::Pool(PoolError::TaskTooLarge { size, max })
            }
            TaskFailure::Closed => Error::Pool(PoolError::Closed),
            TaskFailure::Other(reason) => Error::Encoding {
                what: "a pool task",
                reason,
            },
        }
    }
}

/// How far a call has got, for a progress callback: items done, and the
/// total once the input is exhausted (`None` before, for `imap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Items finished (returned, panicked or failed).
    pub done: usize,
    /// Items submitted in all, once known.
    pub total: Option<usize>,
}

/// A chunk's outcome, as the collector hands it to a job.
pub(crate) enum Delivery<'a> {
    /// The result payload (after the header) and its outputs length.
    Done {
        payload: &'a [u8],
        outputs: usize,
    },
    Failed(TaskFailure),
}

/// A job as the dispatcher sees it, whatever its output type.
pub(crate) trait Sink: Send + Sync {
    /// Stores the outcome of chunk `seq`, which held `count` items. `true`
    /// if the job's callbacks must now run, on the pool's thread.
    #[must_use]
    fn deliver(&self, seq: u64, count: usize, outcome: Delivery<'_>) -> bool;
    /// Runs due callbacks (progress, then completion), and marks a complete
    /// job ready. Only on the pool's thread.
    fn settle(&self);
}

/// One chunk's outputs.
pub(crate) enum Chunk<R> {
    Values(Vec<R>),
    Mixed(Vec<std::result::Result<R, String>>),
    Failed(TaskFailure, usize),
}

impl<R> Chunk<R> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Chunk::Values(v) => v.len(),
            Chunk::Mixed(v) => v.len(),
            Chunk::Failed(_, n) => *n,
        }
    }

    /// Its items, in order.
    pub(crate) fn into_items(self) -> Box<dyn Iterator<Item = Result<R>> + Send>
    where
        R: Send + 'static,
    {
        match self {
            Chunk::Values(v) => Box::new(v.into_iter().map(Ok)),
            Chunk::Mixed(v) => Box::new(
                v.into_iter()
                    .map(|r| r.map_err(|message| Error::Pool(PoolError::TaskPanicked { message }))),
            ),
            Chunk::Failed(f, n) => Box::new((0..n).map(move |_| Err(f.to_error()))),
        }
    }
}

/// A completion callback: gets the whole call's outcome.
pub(crate) type OnComplete<R> = Box<dyn FnOnce(&Result<Vec<R>>) + Send>;
/// A progress callback.
pub(crate) type OnProgress = Box<dyn FnMut(Progress) + Send>;

pub(crate) struct Counts {
    pub chunks_submitted: u64,
    pub items_submitted: usize,
    pub chunks_done: u64,
    pub items_done: usize,
    /// Whether every chunk has been submitted.
    pub input_done: bool,
    /// The number of items, when known before they are all submitted.
    pub expected: Option<usize>,
}

impl Counts {
    fn complete(&self) -> bool {
        self.input_done && self.chunks_done == self.chunks_submitted
    }
}

pub(crate) struct JobState<R> {
    pub counts: Counts,
    /// Finished chunks not yet taken, by sequence number.
    pub chunks: BTreeMap<u64, Chunk<R>>,
    /// Their arrival order (for unordered iteration).
    pub arrived: VecDeque<u64>,
    /// The assembled outcome, once built for a callback.
    pub outcome: Option<Result<Vec<R>>>,
    /// Whether every item returned, once assembled.
    pub succeeded: Option<bool>,
    pub taken: bool,
    /// The task awaiting this job (feature `async`: the job's one handle,
    /// polled as a future or a stream), woken wherever the condition
    /// variable is notified.
    pub waker: Option<Waker>,
}

/// A job's callbacks. Lock order: `Callbacks`, then `JobState`.
struct Callbacks<R> {
    on_complete: Option<OnComplete<R>>,
    on_progress: Option<OnProgress>,
    /// Items done at the last progress report.
    reported: usize,
}

/// Where one call's chunk outcomes land.
///
/// User callbacks run only on the pool's thread ([`Sink::settle`]), never on
/// a caller that happened to take an outcome off the queue; a job with
/// callbacks becomes ready only after they ran, so `get` never returns before
/// its callback did (as in Python).
pub(crate) struct Job<R> {
    state: Mutex<JobState<R>>,
    cond: Condvar,
    pub(super) ready: AtomicBool,
    /// Set by whoever completes the job first.
    finishing: AtomicBool,
    callbacks: Mutex<Callbacks<R>>,
    has_callbacks: bool,
}

impl<R: Message + Send + 'static> Job<R> {
    pub(crate) fn new(on_complete: Option<OnComplete<R>>, on_progress: Option<OnProgress>) -> Self {
        Job {
            state: Mutex::new(JobState {
                counts: Counts {
                    chunks_submitted: 0,
                    items_submitted: 0,
                    chunks_done: 0,
                    items_done: 0,
                    input_done: false,
                    expected: None,
                },
                chunks: BTreeMap::new(),
                arrived: VecDeque::new(),
                outcome: None,
                succeeded: None,
                taken: false,
                waker: None,
            }),
            cond: Condvar::new(),
            ready: AtomicBool::new(false),
            finishing: AtomicBool::new(false),
            has_callbacks: on_complete.is_some() || on_progress.is_some(),
            callbacks: Mutex::new(Callbacks {
                on_complete,
                on_progress,
                reported: 0,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, JobState<R>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces the number of items (for progress reports).
    pub(crate) fn expect(&self, items: usize) {
        self.lock().counts.expected = Some(items);
    }

    /// Counts a chunk as submitted.
    pub(crate) fn submitted(&self, items: usize) {
        let mut s = self.lock();
        s.counts.chunks_submitted += 1;
        s.counts.items_submitted += items;
    }

    /// No more chunks will come. `true` if the job's callbacks must now run
    /// on the pool's thread ([`Shared::settle_later`]).
    #[must_use]
    pub(crate) fn input_done(&self) -> bool {
        let (complete, waker) = {
            let mut s = self.lock();
            s.counts.input_done = true;
            (s.counts.complete(), s.waker.take())
        };
        self.cond.notify_all();
        wake(waker);
        self.after_change(complete)
    }

    /// After a change: marks a complete job without callbacks ready; `true`
    /// if callbacks must run.
    fn after_change(&self, complete: bool) -> bool {
        if self.has_callbacks {
            return true;
        }
        if complete && !self.finishing.swap(true, Ordering::AcqRel) {
            self.mark_ready();
        }
        false
    }

    fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
        let waker = self.lock().waker.take();
        self.cond.notify_all();
        wake(waker);
    }

    /// Whether a caller about to wait for this job should take outcomes off
    /// the result queue itself for a moment (`Shared::help_until`): only
    /// while fewer of its chunks are out (queued or running) than there
    /// are CPUs. Otherwise every CPU is likely busy with its workers, and a
    /// spinning caller would take one from them (measured: a map of 8 chunks of ~2 ms on 2 CPUs lost 0.6
    /// ms of its 9 to the caller's spins).
    pub(crate) fn worth_helping(&self) -> bool {
        let s = self.lock();
        let running = s
            .counts
            .chunks_submitted
            .saturating_sub(s.counts.chunks_done);
        running < crate::sync::wait::cpus() as u64
    }

    /// Whether every chunk has finished.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Waits until `ready(state)` or the deadline; the state on success.
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&JobState<R>) -> bool,
    ) -> Option<MutexGuard<'_, JobState<R>>> {
        let mut s = self.lock();
        while !ready(&s) {
            s = match deadline {
                None => self.cond.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.cond
                        .wait_timeout(s, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        Some(s)
    }

    /// The assembled outcome (once).
    pub(crate) fn take_outcome(&self, deadline: Option<Instant>) -> Option<Result<Vec<R>>> {
        let mut s = self.wait_until(deadline, |_| self.is_ready())?;
        if s.taken {
            return Some(Err(Error::Pool(PoolError::AlreadyTaken)));
        }
        s.taken = true;
        Some(s.outcome.take().unwrap_or_else(|| assemble(&mut s)))
    }

    /// The assembled outcome once ready; until then `cx`'s waker is kept,
    /// to be woken when the job becomes ready. (Ready is stored before the
    /// state lock that takes the waker: a poll sees it, or its waker is
    /// taken.)
    #[cfg(feature = "async")]
    pub(crate) fn poll_outcome(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Vec<R>>> {
        let mut s = self.lock();
        if !self.is_ready() {
            keep_waker(&mut s, cx);
            return std::task::Poll::Pending;
        }
        if s.taken {
            return std::task::Poll::Ready(Err(Error::Pool(PoolError::AlreadyTaken)));
        }
        s.taken = true;
        std::task::Poll::Ready(s.outcome.take().unwrap_or_else(|| assemble(&mut s)))
    }

    /// Whether the job finished with every item returned, once ready.
    pub(crate) fn successful(&self) -> Option<bool> {
        if !self.is_ready() {
            return None;
        }
        let s = self.lock();
        Some(s.succeeded.unwrap_or_else(|| {
            s.chunks.values().all(|c| match c {
                Chunk::Values(_) => true,
                Chunk::Mixed(v) => v.iter().all(|r| r.is_ok()),
                Chunk::Failed(..) => false,
            })
        }))
    }
}

/// Keeps `cx`'s waker in the job's state (replacing an older one: a job has
/// one handle, so one task awaits it).
#[cfg(feature = "async")]
pub(crate) fn keep_waker<R>(s: &mut JobState<R>, cx: &std::task::Context<'_>) {
    match &s.waker {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => s.waker = Some(cx.waker().clone()),
    }
}

/// Wakes the task awaiting a job, on the pool's thread: a waker that panics
/// must not take that thread down.
fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        run_callback("waker", || w.wake());
    }
}

/// All chunks in order: every output, or the first error by position.
fn assemble<R: Send + 'static>(s: &mut JobState<R>) -> Result<Vec<R>> {
    let mut out = Vec::with_capacity(s.counts.items_submitted);
    let chunks = std::mem::take(&mut s.chunks);
    s.arrived.clear();
    let outcome = (|| {
        for (_, chunk) in chunks {
            match chunk {
                Chunk::Values(v) => out.extend(v),
                other => {
                    for item in other.into_items() {
                        out.push(item?);
                    }
                }
            }
        }
        Ok(out)
    })();
    s.succeeded = Some(outcome.is_ok());
    outcome
}

/// Runs a user callback; a panic in it is reported, not propagated (it
/// would take the pool's thread down).
fn run_callback(what: &str, f: impl FnOnce()) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        eprintln!(
            "shmkit pool: a {what} callback panicked: {}",
            panic_message(&*p)
        );
    }
}

impl<R: Message + Send + 'static> Sink for Job<R> {
    fn deliver(&self, seq: u64, count: usize, outcome: Delivery<'_>) -> bool {
        let chunk = match outcome {
            Delivery::Done { payload, outputs } => {
                match wire::decode_outputs::<R>(payload, outputs, count) {
                    Ok(wire::Outputs::Values(v)) => Chunk::Values(v),
                    Ok(wire::Outputs::Mixed(v)) => Chunk::Mixed(v),
                    Err(e) => Chunk::Failed(
                        TaskFailure::NotRun {
                            function_not_found: false,
                            message: format!("the worker's result: {e}"),
                        },
                        count,
                    ),
                }
            }
            Delivery::Failed(f) => Chunk::Failed(f, count),
        };
        let (complete, waker) = {
            let mut s = self.lock();
            s.counts.chunks_done += 1;
            s.counts.items_done += chunk.len();
            s.chunks.insert(seq, chunk);
            s.arrived.push_back(seq);
            (s.counts.complete(), s.waker.take())
        };
        self.cond.notify_all();
        wake(waker);
        self.after_change(complete)
    }

    fn settle(&self) {
        let mut cbs = self.callbacks.lock().unwrap_or_else(|p| p.into_inner());
        let (progress, complete) = {
            let s = self.lock();
            let c = &s.counts;
            let total = c.expected.or(c.input_done.then_some(c.items_submitted));
            (
                Progress {
                    done: c.items_done,
                    total,
                },
                c.complete(),
            )
        };
        let reported = cbs.reported;
        if let Some(report) = cbs.on_progress.as_mut()
            && progress.done > reported
        {
            run_callback("progress", || report(progress));
            cbs.reported = progress.done;
        }
        if !complete || self.finishing.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(cb) = cbs.on_complete.take() {
            let outcome = assemble(&mut self.lock());
            run_callback("completion", || cb(&outcome));
            self.lock().outcome = Some(outcome);
        }
        drop(cbs);
        self.mark_ready();
    }
}

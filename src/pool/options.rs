//! Per-call settings ([`CallOptions`]) and the lazy iterator of `imap`
//! ([`Imap`]).

use super::job::{Chunk, Job, OnComplete, OnProgress};
use crate::codec::Message;
use crate::error::Result;
use std::sync::Arc;

use super::job;
use super::submit::auto_chunksize;
use super::{Callable, MapResult, Pool, Progress};

/// Per-call settings: [`Pool::options`].
pub struct CallOptions<'p> {
    pub(super) pool: &'p Pool,
    pub(super) chunksize: Option<usize>,
    pub(super) lookahead: Option<usize>,
    pub(super) progress: Option<OnProgress>,
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
    /// [`PoolError::Closed`](crate::error::PoolError::Closed) after [`close`](Pool::close) or [`terminate`](Pool::terminate),
    /// [`PoolError::Broken`](crate::error::PoolError::Broken) if a worker's initializer failed; then the first item's error by
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
    /// [`PoolError::Closed`](crate::error::PoolError::Closed) after [`close`](Pool::close) or [`terminate`](Pool::terminate),
    /// [`PoolError::Broken`](crate::error::PoolError::Broken) if a worker's initializer failed. An item whose arguments are too
    /// large ([`PoolError::TaskTooLarge`](crate::error::PoolError::TaskTooLarge)) or cannot be encoded fails in the result, not here.
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
    /// [`PoolError::Closed`](crate::error::PoolError::Closed) after [`close`](Pool::close) or [`terminate`](Pool::terminate),
    /// [`PoolError::Broken`](crate::error::PoolError::Broken) if a worker's initializer failed; then the first item's error by
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

    pub(super) fn submit_map<F: Callable>(
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

    pub(super) fn iterate<F: Callable, I>(self, f: F, input: I, ordered: bool) -> Imap<'p, F, I>
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
    pub(super) job: Arc<Job<F::Output>>,
    /// `None` once exhausted.
    input: Option<I>,
    ordered: bool,
    /// Index of the next item to submit.
    next_first: usize,
    /// Index of the first item of the next chunk to hand out (ordered).
    next_take: u64,
    /// Chunks submitted and not yet handed out.
    pub(super) chunks_out: usize,
    pub(super) current: Option<Box<dyn Iterator<Item = Result<F::Output>> + Send>>,
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
    pub(super) fn top_up(&mut self) {
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
            let job = self.job.clone();
            let ready = |s: &job::JobState<F::Output>| self.chunk_ready(s);
            if job.worth_helping() {
                self.pool.shared.help_until(|| ready(&job.lock()));
            }
            let st = job.wait_until(None, ready).expect("no deadline");
            self.take_chunk(st);
        }
    }
}

impl<F: Callable, I: Iterator<Item = F::Args>> Imap<'_, F, I>
where
    F::Output: Send,
{
    /// Whether the chunk to hand out next has arrived.
    pub(super) fn chunk_ready(&self, s: &job::JobState<F::Output>) -> bool {
        if self.ordered {
            s.chunks.contains_key(&self.next_take)
        } else {
            !s.arrived.is_empty()
        }
    }

    /// Takes the chunk to hand out next (it has arrived) out of the job's
    /// state, as the current one.
    pub(super) fn take_chunk(
        &mut self,
        mut st: std::sync::MutexGuard<'_, job::JobState<F::Output>>,
    ) {
        let seq = if self.ordered {
            self.next_take
        } else {
            st.arrived.pop_front().expect("waited for one")
        };
        let chunk: Chunk<F::Output> = st.chunks.remove(&seq).expect("present");
        if self.ordered {
            // Arrival order only matters unordered; keep it bounded.
            st.arrived.retain(|&s| s != seq);
        }
        drop(st);
        self.chunks_out -= 1;
        if self.ordered {
            self.next_take += chunk.len() as u64;
        }
        self.current = Some(chunk.into_items());
    }
}

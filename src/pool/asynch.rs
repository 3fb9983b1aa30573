//! The pool's futures (feature `async`): [`AsyncResult`] and [`MapResult`]
//! are futures of their outcome, and [`Imap::into_stream`] turns an
//! [`Imap`] into a [`Stream`](futures_core::Stream) of its items.
//!
//! No waiter thread is needed here: outcomes reach a job on the pool's own
//! collector thread, which wakes the task awaiting it wherever it notifies
//! the job's condition variable (a chunk delivered, the input declared
//! complete, the job ready). A job has one handle, so it keeps one waker.
//! Dropping a pending future or stream loses nothing that was promised: the
//! outcome stays with the job, which the pool drops when it is done.

use super::job::{self, Job};
use super::options::Imap;
use super::results::one;
use super::{AsyncResult, Callable, MapResult};
use crate::codec::Message;
use crate::error::Result;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The task's return value or its error, as [`AsyncResult::get`] gives it.
impl<R: Message + Send + 'static> Future for AsyncResult<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        self.job.poll_outcome(cx).map(one)
    }
}

/// Every output in input order, or the first error by position, as
/// [`MapResult::get`] gives them.
impl<R: Message + Send + 'static> Future for MapResult<R> {
    type Output = Result<Vec<R>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Vec<R>>> {
        self.job.poll_outcome(cx)
    }
}

impl<'p, F: Callable, I> Imap<'p, F, I> {
    /// The same items as a [`Stream`](futures_core::Stream) (feature
    /// `async`): in input order for [`Pool::imap`](super::Pool::imap), as
    /// they finish for [`Pool::imap_unordered`](super::Pool::imap_unordered).
    /// Polling submits further chunks as the iterator does (up to its
    /// look-ahead), pulling them from your input iterator on the polling
    /// thread (which should therefore not block), and never waits for the
    /// workers. (A separate type, so that `Iterator` and `StreamExt`
    /// methods never clash.)
    ///
    /// ```
    /// use futures::StreamExt;
    /// fn square(x: u64) -> u64 { x * x }
    /// # fn main() -> shmkit::Result<()> {
    /// let pool = shmkit::pool::Pool::builder().processes(2).build()?;
    /// let squares: Vec<u64> = futures::executor::block_on(
    ///     pool.imap(square, 0..10).into_stream().map(Result::unwrap).collect(),
    /// );
    /// assert_eq!(squares[9], 81);
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> ImapStream<'p, F, I> {
        ImapStream { imap: self }
    }
}

/// [`Imap`] as a [`Stream`](futures_core::Stream): see
/// [`Imap::into_stream`].
#[derive(Debug)]
pub struct ImapStream<'p, F: Callable, I> {
    imap: Imap<'p, F, I>,
}

impl<F, I> futures_core::Stream for ImapStream<'_, F, I>
where
    F: Callable + Unpin,
    F::Output: Send,
    I: Iterator<Item = F::Args> + Unpin,
{
    type Item = Result<F::Output>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut self.get_mut().imap;
        loop {
            if let Some(item) = this.current.as_mut().and_then(Iterator::next) {
                return Poll::Ready(Some(item));
            }
            this.current = None;
            this.top_up();
            if this.chunks_out == 0 {
                return Poll::Ready(None);
            }
            let job: std::sync::Arc<Job<F::Output>> = this.job.clone();
            let mut st = job.lock();
            if !this.chunk_ready(&st) {
                job::keep_waker(&mut st, cx);
                return Poll::Pending;
            }
            this.take_chunk(st);
        }
    }
}

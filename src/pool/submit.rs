//! How a call becomes task frames on the workers' queues: chunking,
//! encoding (a chunk too large for a slot is cut in two), and the backlog.

use super::job::{Job, OnComplete, Sink};
use super::state::TaskRec;
use super::wire::{ChunkTrampoline, HEADER, TASK_MAGIC, TaskHeader};
use crate::codec::Message;
use crate::error::{Error, PoolError, Result};
use std::sync::Arc;

use super::{AsyncResult, Callable, Pool};
use super::{job, wire};

impl Pool {
    pub(super) fn submit_one<A, R>(
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
    pub(super) fn submit_chunk<F: Callable>(
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
    pub(super) fn fail_in_place<R: Message + Send + 'static>(
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
    pub(super) fn input_done<R: Message + Send + 'static>(&self, job: &Arc<Job<R>>) {
        if job.input_done() {
            let sink: Arc<dyn Sink> = job.clone();
            self.shared.settle_later(&sink);
        }
    }

    /// Queues the frames of one call.
    pub(super) fn enqueue<R: Message + Send + 'static>(
        &self,
        job: &Arc<Job<R>>,
        frames: Vec<Frame>,
    ) -> Result<()> {
        let mut st = self.shared.lock();
        if let Some(reason) = &st.broken {
            return Err(Error::Pool(PoolError::Broken {
                reason: reason.clone(),
            }));
        }
        if st.closed {
            return Err(Error::Pool(PoolError::Closed));
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
pub(super) type Piece = std::result::Result<Frame, (usize, usize, Error)>;

/// Encodes `items` (the call's items from index `first`) as task frames of
/// at most `max` bytes, cutting the chunk in two while it is too large; an
/// item too large alone becomes a failed piece of its own.
pub(super) fn encode_chunk<F: Callable>(
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
            return out.push(Err((
                first,
                1,
                Error::Pool(PoolError::TaskTooLarge { size, max }),
            )));
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
pub(super) fn both<R: 'static>(
    ok: impl FnOnce(&[R]) + Send + 'static,
    err: impl FnOnce(&Error) + Send + 'static,
) -> OnComplete<R> {
    Box::new(move |outcome: &Result<Vec<R>>| match outcome {
        Ok(v) => ok(v),
        Err(e) => err(e),
    })
}

/// Python's rule for `map`: four chunks per worker.
pub(super) fn auto_chunksize(items: usize, workers: usize) -> usize {
    items.div_ceil(workers * 4).max(1)
}

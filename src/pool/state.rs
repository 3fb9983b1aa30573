//! The pool's bookkeeping, behind one mutex: the backlog, each worker's
//! chunks in flight, and what happens to them when a worker ends.
//!
//! The mutex is never held across a blocking call: a send into a worker's
//! task queue happens only when the queue has room (each chunk in flight
//! holds at most one slot, and a worker gets at most [`IN_FLIGHT`]), and
//! decoding results and running callbacks happen outside it.

use super::job::{Sink, TaskFailure};
use super::worker::{RUNNING, SENT};
use crate::process::Process;
use crate::queue::{Bytes, Sender};
use rkyv::util::AlignedVec;
use std::collections::VecDeque;
use std::sync::Arc;

/// Chunks a worker holds at once: one running, one waiting in its queue, so
/// it never idles between chunks while the pool's collector catches up.
pub(crate) const IN_FLIGHT: usize = 2;

/// One chunk on its way.
pub(crate) struct TaskRec {
    pub id: u64,
    /// The index of its first item in the call (orders the outcomes).
    pub seq: u64,
    pub count: usize,
    /// Header and payload, as sent (kept for a re-send).
    pub frame: AlignedVec,
    /// Descriptors of anonymous regions the items name (through /proc):
    /// open until the chunk is done.
    pub _open: Vec<std::os::fd::OwnedFd>,
    pub job: Arc<dyn Sink>,
    pub retries_left: u32,
}

/// A running worker.
pub(crate) struct WorkerSlot {
    pub process: Process<()>,
    pub tasks: Sender<Bytes>,
    /// Chunks sent to it, oldest first (its queue is FIFO).
    pub in_flight: VecDeque<TaskRec>,
    /// Chunks sent to it in all.
    pub dispatched: u64,
    /// False once its queue is disconnected (it is dying).
    pub usable: bool,
    /// Whether it reported ready (ran its initializer).
    pub ready: bool,
}

/// How the pool is being shut down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    /// Finish the outstanding chunks, then stop the workers.
    Join,
    /// Stop the workers now; outstanding chunks fail.
    Terminate,
}

/// Counters, from [`Pool::stats`](super::Pool::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Chunks whose outcome came back.
    pub chunks_done: u64,
    /// Workers that died while the pool ran (not counting recycling).
    pub workers_died: u64,
    /// Workers that exited after `max_tasks_per_child` chunks.
    pub workers_recycled: u64,
    /// Workers started to replace dead or recycled ones.
    pub workers_replaced: u64,
    /// Chunks failed with [`WorkerDied`](crate::error::PoolError::WorkerDied).
    pub chunks_lost: u64,
    /// Chunks sent again after their worker died while running them.
    pub chunks_retried: u64,
    /// Chunks a dying worker had not started, sent to another.
    pub chunks_requeued: u64,
}

pub(crate) struct State {
    /// `None` while a worker is being (re)started.
    pub workers: Vec<Option<WorkerSlot>>,
    pub backlog: VecDeque<TaskRec>,
    /// Chunks of dead workers whose outcome is in the result queue.
    pub orphans: Vec<TaskRec>,
    pub closed: bool,
    pub stop: Stop,
    pub broken: Option<String>,
    pub next_id: u64,
    pub max_tasks: u64,
    pub stats: PoolStats,
    /// Workers in a row that died before they were ready.
    pub early_deaths: u32,
}

/// A failure to hand to a job outside the lock.
pub(crate) type Failed = (TaskRec, TaskFailure);

impl State {
    pub(crate) fn new(workers: usize, max_tasks: u64) -> State {
        State {
            workers: (0..workers).map(|_| None).collect(),
            backlog: VecDeque::new(),
            orphans: Vec::new(),
            closed: false,
            stop: Stop::Running,
            broken: None,
            next_id: 1,
            max_tasks,
            stats: PoolStats::default(),
            early_deaths: 0,
        }
    }

    /// Chunks not yet finished.
    pub(crate) fn outstanding(&self) -> usize {
        self.backlog.len()
            + self.orphans.len()
            + self
                .workers
                .iter()
                .flatten()
                .map(|w| w.in_flight.len())
                .sum::<usize>()
    }

    /// Queues a chunk.
    pub(crate) fn push(&mut self, mut task: TaskRec) {
        self.renumber(&mut task);
        self.backlog.push_back(task);
    }

    /// Gives a chunk a new id (in its frame too): a chunk sent again must
    /// not be mistaken for its earlier sending, whose outcome may still
    /// arrive.
    fn renumber(&mut self, task: &mut TaskRec) {
        task.id = self.next_id;
        self.next_id += 1;
        task.frame[8..16].copy_from_slice(&task.id.to_ne_bytes());
    }

    /// The least-loaded worker that may take another chunk.
    fn pick(&self) -> Option<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| Some((i, w.as_ref()?)))
            .filter(|(_, w)| {
                w.usable
                    && w.in_flight.len() < IN_FLIGHT
                    && (self.max_tasks == 0 || w.dispatched < self.max_tasks)
            })
            .min_by_key(|(_, w)| w.in_flight.len())
            .map(|(i, _)| i)
    }

    /// Sends backlog chunks to workers with room. Never blocks.
    pub(crate) fn dispatch(&mut self) {
        if self.stop == Stop::Terminate {
            return;
        }
        while !self.backlog.is_empty() {
            let Some(i) = self.pick() else { break };
            let task = self.backlog.pop_front().expect("not empty");
            let w = self.workers[i].as_mut().expect("picked");
            match w.tasks.try_send_bytes(&task.frame) {
                Ok(()) => {
                    w.in_flight.push_back(task);
                    w.dispatched += 1;
                }
                Err(e) => {
                    // Disconnected: its worker is dying; Truncated: its task
                    // queue was cut, the worker will fail. (Full cannot happen:
                    // at most IN_FLIGHT chunks, each one slot; if it did, the
                    // chunk waits for the next dispatch.)
                    if matches!(
                        e,
                        crate::queue::TrySendError::Disconnected(_)
                            | crate::queue::TrySendError::Truncated(_)
                    ) {
                        w.usable = false;
                    }
                    self.backlog.push_front(task);
                    if !w.usable {
                        continue;
                    }
                    break;
                }
            }
        }
    }

    /// Removes chunk `id`, reported by the worker in `slot`.
    pub(crate) fn take(&mut self, slot: usize, id: u64) -> Option<TaskRec> {
        if let Some(w) = self.workers.get_mut(slot).and_then(Option::as_mut)
            && let Some(pos) = w.in_flight.iter().position(|t| t.id == id)
        {
            return w.in_flight.remove(pos);
        }
        let pos = self.orphans.iter().position(|t| t.id == id)?;
        Some(self.orphans.swap_remove(pos))
    }

    /// The worker in `slot` ended with `exitcode`; its status word read
    /// `status`. Sorts its chunks: the one it was running fails (or is
    /// retried), those it had not started go back to the backlog, those it
    /// had answered wait for their outcome in the queue.
    pub(crate) fn worker_ended(
        &mut self,
        slot: usize,
        exitcode: i32,
        status: u64,
    ) -> (Option<WorkerSlot>, Vec<Failed>) {
        let Some(mut w) = self.workers[slot].take() else {
            return (None, Vec::new());
        };
        let (id, phase) = (status >> 2, status & 3);
        let pid = w.process.pid();
        let running = w.in_flight.iter().position(|t| t.id == id);
        let mut failed = Vec::new();
        let mut requeue = Vec::new();
        let tasks: Vec<TaskRec> = w.in_flight.drain(..).collect();
        for (i, mut task) in tasks.into_iter().enumerate() {
            match running {
                Some(r) if i < r || (i == r && phase == SENT) => self.orphans.push(task),
                Some(r) if i == r && phase == RUNNING => {
                    if task.retries_left > 0 {
                        task.retries_left -= 1;
                        self.stats.chunks_retried += 1;
                        requeue.push(task);
                    } else {
                        self.stats.chunks_lost += 1;
                        let signal = (exitcode < 0).then_some(-exitcode);
                        failed.push((
                            task,
                            TaskFailure::WorkerDied {
                                pid,
                                signal,
                                exitcode,
                            },
                        ));
                    }
                }
                _ => {
                    self.stats.chunks_requeued += 1;
                    requeue.push(task);
                }
            }
        }
        for mut task in requeue.into_iter().rev() {
            self.renumber(&mut task);
            self.backlog.push_front(task);
        }
        if exitcode == 0 && failed.is_empty() && self.max_tasks != 0 {
            self.stats.workers_recycled += 1;
        } else {
            self.stats.workers_died += 1;
        }
        (Some(w), failed)
    }

    /// Every chunk not finished, to fail (terminate, or a broken pool).
    pub(crate) fn drain_all(&mut self, why: TaskFailure) -> Vec<Failed> {
        let mut all: Vec<TaskRec> = self.backlog.drain(..).collect();
        all.append(&mut self.orphans);
        for w in self.workers.iter_mut().flatten() {
            all.extend(w.in_flight.drain(..));
        }
        all.into_iter().map(|t| (t, why.clone())).collect()
    }
}

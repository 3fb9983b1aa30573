//! The pool's thread: it starts the workers, receives every outcome from the
//! result queue, notices workers that end, replaces them, and shuts the pool
//! down. Workers are started from this thread so that their parent-death
//! signal (Linux ties it to the starting *thread*) lasts as long as the pool.

use super::job::{Delivery, Sink, TaskFailure};
use super::state::{self, State, Stop, WorkerSlot};
use super::wire::{self, ResultHeader, ResultKind};
use super::worker::{self, WorkerArgs};
use crate::Array;
use crate::codec::Message;
use crate::error::{Error, Result};
use crate::process::child::Failure;
use crate::process::{Builder, StartMethod};
use crate::queue::{Bytes, Queue, Receiver, RecvTimeoutError, Sender};
use rkyv::util::AlignedVec;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the collector looks for ended workers while chunks are out.
const BUSY_CHECK: Duration = Duration::from_millis(10);
/// ... and while the pool is idle.
const IDLE_CHECK: Duration = Duration::from_millis(100);
/// How long `terminate` waits after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);

/// Fixed at construction.
pub(crate) struct Config {
    pub workers: usize,
    pub init: Option<wire::InitCall>,
    pub max_message: usize,
    pub retries: u32,
}

/// What the pool's handle and its thread share.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub config: Config,
    pub results: Queue<Bytes>,
    /// The pool's own sender, to wake the collector.
    pub waker: Mutex<Sender<Bytes>>,
    pub status: Array<u64>,
    /// Workers started, for their names.
    pub started: AtomicU64,
    /// Initial workers that reported ready (or the first failure).
    pub startup: Mutex<(usize, Option<String>)>,
    /// Signalled when `startup` changes.
    pub startup_cv: Condvar,
    /// Payloads arriving in pieces, by (worker pid, task id). Pieces may be
    /// taken by the collector and a helper in either order.
    pub pieces: Mutex<HashMap<(u32, u64), Partial>>,
    /// A second receiver on the result queue, for a caller that waits on a
    /// result: it takes outcomes itself instead of waiting for the
    /// collector to hand them over (one wake-up less).
    pub helper: Mutex<Receiver<Bytes>>,
    /// Jobs whose callbacks are due, for the pool's thread to run.
    pub deferred: Mutex<Vec<Arc<dyn Sink>>>,
}

thread_local! {
    /// Whether this thread is a pool's collector (where callbacks run).
    static ON_POOL_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The largest result payload a worker may announce (a hostile or corrupt
/// header must not make the pool allocate without bound).
const MAX_RESULT: u64 = 1 << 32;

/// Workers in a row that die before they are ready, after which the pool
/// stops replacing them (an initializer that crashes instead of panicking).
const EARLY_DEATHS: u32 = 3;

/// A payload being put together from pieces.
pub(crate) struct Partial {
    buf: AlignedVec,
    filled: usize,
}

/// How long a waiting caller takes outcomes itself before it sleeps.
const HELP_SPIN: Duration = Duration::from_micros(100);

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the collector out of its receive.
    pub(crate) fn wake(&self) {
        let head = ResultHeader {
            kind: ResultKind::Wake as u32,
            ..bytemuck::Zeroable::zeroed()
        };
        let mut frame = [0u8; wire::HEADER];
        frame[..size_of::<ResultHeader>()].copy_from_slice(bytemuck::bytes_of(&head));
        let _ = self
            .waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_send_bytes(&frame);
    }

    pub(crate) fn startup(&self) -> MutexGuard<'_, (usize, Option<String>)> {
        self.startup.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether every initial worker reported (or one failed).
    pub(crate) fn started(&self) -> bool {
        let s = self.startup();
        s.0 >= self.config.workers || s.1.is_some()
    }

    pub(crate) fn startup_failed(&self, why: String) {
        self.startup().1.get_or_insert(why);
        self.startup_cv.notify_all();
    }

    pub(crate) fn handle(&self, frame: &[u8]) {
        let Some((head, piece)) = wire::split::<ResultHeader>(frame) else {
            return;
        };
        let Some(kind) = ResultKind::from_raw(head.kind) else {
            return;
        };
        match kind {
            ResultKind::Wake => {}
            ResultKind::Ready => {
                {
                    let mut st = self.lock();
                    st.early_deaths = 0;
                    if let Some(w) = st
                        .workers
                        .get_mut(head.slot as usize)
                        .and_then(Option::as_mut)
                        && w.process.pid() == head.pid
                    {
                        w.ready = true;
                    }
                }
                self.startup().0 += 1;
                self.startup_cv.notify_all();
            }
            ResultKind::InitFailed => {
                let why = String::from_utf8_lossy(piece).into_owned();
                self.startup_failed(why.clone());
                self.broken(why);
            }
            ResultKind::Done | ResultKind::Failed => {
                if head.total > MAX_RESULT
                    || head.offset.checked_add(piece.len() as u64) > Some(head.total)
                {
                    return; // a corrupt header: the chunk is settled when its worker ends
                }
                let total = head.total as usize;
                if head.offset == 0 && piece.len() == total {
                    // Read in place: the slot is written only by our own
                    // worker, which no longer touches it once committed.
                    self.finished(&head, kind, piece);
                    return;
                }
                let whole = {
                    let mut pieces = self.pieces.lock().unwrap_or_else(|p| p.into_inner());
                    let key = (head.pid, head.id);
                    let part = pieces.entry(key).or_insert_with(|| {
                        let mut buf = AlignedVec::with_capacity(total);
                        buf.resize(total, 0);
                        Partial { buf, filled: 0 }
                    });
                    let at = head.offset as usize;
                    let sized = part.buf.len() == total;
                    match part.buf.get_mut(at..at + piece.len()) {
                        Some(dst) if sized => {
                            // (A duplicated piece would be counted twice;
                            // the decoder then rejects the payload.)
                            dst.copy_from_slice(piece);
                            part.filled += piece.len();
                        }
                        _ => {
                            // Inconsistent pieces: a corrupted sender.
                            pieces.remove(&key);
                            return;
                        }
                    }
                    if part.filled < total {
                        return;
                    }
                    pieces.remove(&key).expect("present").buf
                };
                self.finished(&head, kind, &whole);
            }
        }
    }

    /// A chunk's whole outcome arrived.
    fn finished(&self, head: &ResultHeader, kind: ResultKind, payload: &[u8]) {
        let task = {
            let mut st = self.lock();
            let task = st.take(head.slot as usize, head.id);
            if task.is_some() {
                st.stats.chunks_done += 1;
            }
            st.dispatch();
            task
        };
        let Some(task) = task else { return };
        let outcome = match kind {
            ResultKind::Done => Delivery::Done {
                payload,
                outputs: head.outputs as usize,
            },
            _ => Delivery::Failed(match <Failure as Message>::decode(payload) {
                Ok(f) => TaskFailure::NotRun {
                    function_not_found: f.function_not_found,
                    message: f.message,
                },
                Err(e) => TaskFailure::NotRun {
                    function_not_found: false,
                    message: e.to_string(),
                },
            }),
        };
        self.deliver(&task.job, task.seq, task.count, outcome);
    }

    /// Hands a chunk's outcome to its job; its callbacks, if due, run on
    /// the pool's thread.
    pub(crate) fn deliver(&self, job: &Arc<dyn Sink>, seq: u64, count: usize, outcome: Delivery) {
        if job.deliver(seq, count, outcome) {
            self.settle_later(job);
        }
    }

    /// Fails whole chunks (call without the state lock).
    pub(crate) fn fail(&self, failed: Vec<state::Failed>) {
        for (task, why) in failed {
            self.deliver(&task.job, task.seq, task.count, Delivery::Failed(why));
        }
    }

    /// Runs `job`'s due callbacks now if this is the pool's thread, else
    /// asks the pool's thread to.
    pub(crate) fn settle_later(&self, job: &Arc<dyn Sink>) {
        if ON_POOL_THREAD.with(|t| t.get()) {
            job.settle();
        } else {
            self.deferred
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(job.clone());
            self.wake();
        }
    }

    /// Runs the callbacks other threads left for the pool's thread.
    fn settle_deferred(&self) {
        let jobs = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        for job in jobs {
            job.settle();
        }
    }

    /// Fails everything: a worker's initializer failed, or the pool cannot
    /// go on.
    pub(crate) fn broken(&self, why: String) {
        let failed = {
            let mut st = self.lock();
            st.broken.get_or_insert(why.clone());
            st.closed = true;
            st.drain_all(TaskFailure::Broken(why))
        };
        self.fail(failed);
    }

    /// Handles a frame; a panic (a bug: frames are checked) breaks the pool
    /// instead of killing the thread that handles it.
    fn handle_guarded(&self, frame: &[u8]) {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| self.handle(frame))) {
            self.broken(format!(
                "internal error handling a worker's frame: {}",
                crate::process::child::panic_message(&*p)
            ));
        }
    }

    /// Handles every frame waiting for the helper receiver.
    fn drain_helper(&self, rx: &mut Receiver<Bytes>) -> bool {
        let mut any = false;
        while let Ok(frame) = rx.try_recv_bytes() {
            self.handle_guarded(&frame);
            any = true;
        }
        any
    }

    /// Takes whatever outcomes wait in the queue, through the helper
    /// receiver, unless another thread is helping.
    pub(crate) fn help_once(&self) -> bool {
        let mut rx = match self.helper.try_lock() {
            Ok(rx) => rx,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        self.drain_helper(&mut rx)
    }

    /// A caller about to wait for `done()`: takes outcomes itself for a
    /// short while (when another CPU can run the worker meanwhile).
    pub(crate) fn help_until(&self, done: impl Fn() -> bool) {
        if !crate::sync::wait::may_spin() {
            return;
        }
        let until = Instant::now() + HELP_SPIN;
        while !done() && Instant::now() < until {
            if !self.help_once() {
                std::hint::spin_loop();
            }
        }
    }

    /// Starts a worker for `slot` by `method`.
    pub(crate) fn start_worker(&self, slot: usize, method: StartMethod) -> Result<WorkerSlot> {
        let queue = Queue::<Bytes>::builder()
            .capacity(state::IN_FLIGHT)
            .max_message(self.config.max_message)
            .create()?;
        let tasks = queue.sender()?;
        self.status.atomic(slot).store(0, Ordering::SeqCst);
        let args = WorkerArgs {
            slot: slot as u32,
            tasks: queue.receiver()?,
            results: self.results.sender()?,
            status: self.status.clone(),
            init: self.config.init.clone(),
            max_tasks: self.lock().max_tasks,
        };
        let n = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        let kind = match method {
            StartMethod::Spawn => "Spawn",
            StartMethod::Fork => "Fork",
        };
        let process = Builder::new()
            .name(format!("{kind}PoolWorker-{n}"))
            .daemon(true)
            .start_method(method)
            .start(worker::worker_main, args)?;
        Ok(WorkerSlot {
            process,
            tasks,
            in_flight: Default::default(),
            dispatched: 0,
            usable: true,
            ready: false,
        })
    }
}

/// The collector's own state.
pub(crate) struct Collector<'a> {
    shared: &'a Shared,
    last_check: Instant,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Self {
        Collector {
            shared,
            last_check: Instant::now(),
        }
    }

    /// Starts the workers not started yet (by spawn), then serves until the
    /// pool stops; then stops the workers.
    pub(crate) fn run(mut self, mut rx: Receiver<Bytes>) {
        ON_POOL_THREAD.with(|t| t.set(true));
        for slot in 0..self.shared.config.workers {
            if self.shared.lock().workers[slot].is_some() {
                continue; // forked by the pool's constructor
            }
            match self.shared.start_worker(slot, StartMethod::Spawn) {
                Ok(w) => self.shared.lock().workers[slot] = Some(w),
                Err(e) => self.shared.startup_failed(e.to_string()),
            }
        }
        loop {
            let (stop, busy) = {
                let st = self.shared.lock();
                (st.stop, st.outstanding() > 0)
            };
            match stop {
                Stop::Terminate => break,
                Stop::Join if !busy => break,
                _ => {}
            }
            let slice = if busy { BUSY_CHECK } else { IDLE_CHECK };
            let received = match rx.recv_bytes_timeout(slice) {
                Ok(frame) => {
                    self.shared.handle_guarded(&frame);
                    true
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Truncated) => {
                    // Another process of our uid cut the pool's own results
                    // queue (anonymous: it would need /proc access to us).
                    // Nothing can arrive any more: end as for a dead pool.
                    self.shared.broken(
                        "the pool's results queue was truncated by another process".to_owned(),
                    );
                    break; // then stop the workers, as for a stop
                }
                Err(_) => {
                    std::thread::sleep(slice);
                    false
                }
            };
            if received {
                // Take what else is there before looking at workers.
                self.drain(&mut rx, false);
            }
            self.shared.settle_deferred();
            if self.last_check.elapsed() >= slice {
                self.check_workers(&mut rx);
            }
        }
        self.shutdown();
        self.shared.settle_deferred();
    }

    /// Handles every frame there now; with `all`, through the helper
    /// receiver too, waiting for a helper that is handling one.
    fn drain(&mut self, rx: &mut Receiver<Bytes>, all: bool) {
        while let Ok(frame) = rx.try_recv_bytes() {
            self.shared.handle_guarded(&frame);
        }
        if all {
            let mut helper = self.shared.helper.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.drain_helper(&mut helper);
        }
    }

    /// Finds workers that ended, settles their chunks, replaces them.
    fn check_workers(&mut self, rx: &mut Receiver<Bytes>) {
        self.last_check = Instant::now();
        let ended: Vec<(usize, i32)> = {
            let st = self.shared.lock();
            st.workers
                .iter()
                .enumerate()
                .filter_map(|(i, w)| Some((i, w.as_ref()?.process.exitcode()?)))
                .collect()
        };
        if ended.is_empty() {
            return;
        }
        // A worker killed while sending left a claim that blocks the queue
        // until recovery skips it; its entry is freed for a replacement.
        self.shared.results.recover();
        // Outcomes it committed before it ended are in the queue: take them
        // first, so that they count as answered.
        self.drain(rx, true);
        let starting = !self.shared.started();
        for (slot, code) in ended {
            if starting {
                self.shared.startup_failed(format!(
                    "a worker exited with code {code} before it was ready"
                ));
            }
            let status = self.shared.status.atomic(slot).load(Ordering::SeqCst);
            let (old, failed, early) = {
                let mut st = self.shared.lock();
                let (old, failed) = st.worker_ended(slot, code, status);
                let early = old.as_ref().is_some_and(|w| !w.ready);
                st.early_deaths = if early { st.early_deaths + 1 } else { 0 };
                (old, failed, st.early_deaths)
            };
            if let Some(w) = &old {
                self.forget_pieces(w.process.pid());
            }
            drop(old);
            self.shared.fail(failed);
            if early >= EARLY_DEATHS {
                self.shared.broken(format!(
                    "{early} workers in a row died before they were ready (the last with \
                     exit code {code}): does the initializer crash?"
                ));
            }
            self.replace(slot);
        }
    }

    /// Drops the partial payloads of a dead worker, except those of chunks
    /// whose outcome it committed in full (a helper may still hold a piece).
    fn forget_pieces(&self, pid: u32) {
        let keep: Vec<u64> = self.shared.lock().orphans.iter().map(|t| t.id).collect();
        self.shared
            .pieces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&(p, id), _| p != pid || keep.contains(&id));
    }

    fn replace(&mut self, slot: usize) {
        if self.shared.startup().1.is_some() {
            return; // the pool is broken
        }
        {
            // While joining, workers are still needed for what is left.
            let st = self.shared.lock();
            let needed = match st.stop {
                Stop::Running => true,
                Stop::Join => st.outstanding() > 0,
                Stop::Terminate => false,
            };
            if !needed || st.broken.is_some() {
                return;
            }
        }
        match self.shared.start_worker(slot, StartMethod::Spawn) {
            Ok(w) => {
                let mut st = self.shared.lock();
                st.stats.workers_replaced += 1;
                st.workers[slot] = Some(w);
                st.dispatch();
            }
            Err(e) => self
                .shared
                .broken(format!("cannot start a replacement worker: {e}")),
        }
    }

    /// Stops every worker: by closing their queues (join) or by signal
    /// (terminate), and reaps them.
    fn shutdown(&mut self) {
        let (stop, workers) = {
            let mut st = self.shared.lock();
            let failed = st.drain_all(TaskFailure::Terminated);
            let workers: Vec<WorkerSlot> = st.workers.iter_mut().filter_map(Option::take).collect();
            let stop = st.stop;
            drop(st);
            self.shared.fail(failed);
            (stop, workers)
        };
        let mut processes = Vec::new();
        for w in workers {
            if stop == Stop::Terminate {
                let _ = w.process.terminate();
            }
            // Dropping the sender disconnects the worker's queue: it exits.
            processes.push(w.process);
        }
        let deadline = Instant::now() + TERM_GRACE;
        for p in &processes {
            let left = deadline.saturating_duration_since(Instant::now());
            if !matches!(p.wait_timeout(left), Ok(Some(_))) {
                let _ = p.kill();
                let _ = p.wait();
            }
        }
    }
}

/// Starts the collector thread.
pub(crate) fn start(
    shared: Arc<Shared>,
    rx: Receiver<Bytes>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("shmkit-pool".into())
        .spawn(move || Collector::new(&shared).run(rx))
        .map_err(|e| Error::from_os("spawn", "<pool thread>", e))
}

//! The worker's side: a child process that runs the initializer, then chunks
//! from its own task queue, one at a time, and sends each outcome back.
//!
//! Before it runs a chunk the worker writes `(id, RUNNING)` into its status
//! word, and `(id, SENT)` once the outcome is committed to the result queue.
//! If the worker dies, the pool reads that word: a chunk marked RUNNING was
//! held and fails (or is retried); chunks after it never started and go to
//! another worker; a chunk marked SENT has its outcome in the queue.

use super::wire::{
    self, ChunkTrampoline, HEADER, InitCall, InitTrampoline, ResultHeader, ResultKind, TASK_MAGIC,
    TaskHeader,
};
use crate::Array;
use crate::process::child::{Failure, anchor};
use crate::queue::{Bytes, Receiver, Sender};
use crate::sys::proc;
use rkyv::util::AlignedVec;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long an idle worker looks for its next chunk before it sleeps.
const SPIN_AFTER_TASK: Duration = Duration::from_micros(50);

/// Status word phases (the low two bits; the task id is above them).
pub(crate) const RUNNING: u64 = 1;
pub(crate) const SENT: u64 = 2;

/// What a worker is started with.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct WorkerArgs {
    /// Its slot in the pool (and index of its status word).
    pub slot: u32,
    pub tasks: Receiver<Bytes>,
    pub results: Sender<Bytes>,
    pub status: Array<u64>,
    pub init: Option<InitCall>,
    /// Chunks to run before exiting (0: no limit).
    pub max_tasks: u64,
}

/// This executable's code, read once: the worker checks every function
/// address a task names against it.
struct Code {
    ranges: Vec<(usize, usize)>,
}

impl Code {
    fn load() -> Result<Code, String> {
        let [dev, ino, ..] =
            proc::exe_identity().map_err(|e| format!("cannot stat /proc/self/exe: {e}"))?;
        let maps = std::fs::read_to_string("/proc/self/maps")
            .map_err(|e| format!("cannot read /proc/self/maps: {e}"))?;
        Ok(Code {
            ranges: proc::code_ranges(&maps, dev, ino).collect(),
        })
    }

    /// The address at `offset` from the anchor, if it is code of ours.
    fn resolve(&self, offset: i64) -> Result<usize, String> {
        let addr = (anchor as fn() as usize).wrapping_add(offset as usize);
        if self.ranges.iter().any(|&(lo, hi)| (lo..hi).contains(&addr)) {
            Ok(addr)
        } else {
            Err(format!(
                "the address {addr:#x} is not in this executable's code"
            ))
        }
    }
}

/// The worker process's function.
pub(crate) fn worker_main(args: WorkerArgs) {
    let WorkerArgs {
        slot,
        mut tasks,
        mut results,
        status,
        init,
        max_tasks,
    } = args;
    keep_freed_memory();
    let mut out = Outbox {
        results: &mut results,
        slot,
        pid: proc::pid(),
    };
    let code = match Code::load() {
        Ok(c) => c,
        Err(e) => {
            out.send(ResultKind::InitFailed, 0, e.as_bytes(), 0);
            return;
        }
    };
    if let Some(init) = init
        && let Err(e) = run_init(&code, &init)
    {
        out.send(ResultKind::InitFailed, 0, e.as_bytes(), 0);
        return;
    }
    if !out.send(ResultKind::Ready, 0, &[], 0) {
        return;
    }
    let word = status.atomic(slot as usize);
    let spin = if crate::sync::wait::may_spin() {
        SPIN_AFTER_TASK
    } else {
        Duration::ZERO
    };
    let mut scratch = AlignedVec::new();
    let mut done = 0u64;
    while max_tasks == 0 || done < max_tasks {
        // The next chunk often follows at once (a caller waiting on
        // `apply_async` sends its next task within microseconds): look for it
        // a little before sleeping, which would cost a ~15 µs wake-up.
        let until = Instant::now() + spin;
        while tasks.queue().is_empty() && Instant::now() < until {
            std::hint::spin_loop();
        }
        let Ok(frame) = tasks.recv_bytes() else {
            break; // the pool closed this queue, or died
        };
        let Some((head, payload)) = wire::split::<TaskHeader>(&frame) else {
            continue; // no header, no id to answer (only the pool writes here)
        };
        if head.magic != TASK_MAGIC || head.len != payload.len() as u64 {
            drop(frame);
            let failure = Failure {
                function_not_found: false,
                message: "a corrupt task frame".into(),
            };
            if !out.send_failure(head.id, &failure) {
                break;
            }
            continue;
        }
        word.store(head.id << 2 | RUNNING, Ordering::SeqCst);
        let outcome = run_chunk(&code, &head, payload, std::mem::take(&mut scratch));
        drop(frame);
        let sent = match outcome {
            Ok(enc) => {
                let sent = out.send(ResultKind::Done, head.id, &enc.bytes[HEADER..], enc.outputs);
                scratch = enc.bytes;
                sent
            }
            Err(failure) => out.send_failure(head.id, &failure),
        };
        if !sent {
            break;
        }
        word.store(head.id << 2 | SENT, Ordering::SeqCst);
        done += 1;
    }
}

/// Chunks allocate and free buffers of about a slot each; glibc would return
/// them to the OS and fault them in again for every chunk (measured: a fifth
/// of a worker's time). A worker keeps freed memory for reuse instead.
fn keep_freed_memory() {
    crate::sys::proc::keep_freed_memory();
}

fn run_init(code: &Code, init: &InitCall) -> Result<(), String> {
    let trampoline = code.resolve(init.trampoline)?;
    let function = code.resolve(init.function)?;
    // SAFETY: the address lies in this executable's code and was computed by
    // the pool, running the same file, from an `InitTrampoline`; the
    // trampoline checks the signature before it calls the function.
    let t = unsafe { std::mem::transmute::<usize, InitTrampoline>(trampoline) };
    t(function, init.signature, &init.args)
}

fn run_chunk(
    code: &Code,
    head: &TaskHeader,
    payload: &[u8],
    scratch: AlignedVec,
) -> Result<wire::Encoded, Failure> {
    let not_found = |message| Failure {
        function_not_found: true,
        message,
    };
    let trampoline = code.resolve(head.trampoline).map_err(not_found)?;
    let function = code.resolve(head.function).map_err(not_found)?;
    // SAFETY: as in `run_init`, for a `ChunkTrampoline`.
    let t = unsafe { std::mem::transmute::<usize, ChunkTrampoline>(trampoline) };
    let enc = t(function, head.signature, payload, scratch)?;
    if enc.outputs > enc.bytes.len() - HEADER {
        return Err(Failure {
            function_not_found: false,
            message: "the trampoline returned a malformed outcome".into(),
        });
    }
    Ok(enc)
}

/// The worker's end of the result queue.
struct Outbox<'a> {
    results: &'a mut Sender<Bytes>,
    slot: u32,
    pid: u32,
}

impl Outbox<'_> {
    /// Reports that chunk `id` could not run.
    fn send_failure(&mut self, id: u64, failure: &Failure) -> bool {
        let bytes = crate::codec::Message::encode(failure)
            .map(|b| b.to_vec())
            .unwrap_or_default();
        self.send(ResultKind::Failed, id, &bytes, 0)
    }

    /// Sends a result frame (in pieces if the payload exceeds a slot);
    /// `false` if the pool is gone.
    fn send(&mut self, kind: ResultKind, id: u64, payload: &[u8], outputs: usize) -> bool {
        let room = self.results.queue().max_message() - HEADER;
        let mut offset = 0;
        loop {
            let piece = &payload[offset..payload.len().min(offset + room)];
            let head = ResultHeader {
                kind: kind as u32,
                slot: self.slot,
                pid: self.pid,
                _pad: 0,
                id,
                total: payload.len() as u64,
                offset: offset as u64,
                outputs: outputs as u64,
            };
            let Ok(mut frame) = self.results.reserve_bytes(HEADER + piece.len()) else {
                return false;
            };
            frame[..size_of::<ResultHeader>()].copy_from_slice(bytemuck::bytes_of(&head));
            frame[HEADER..].copy_from_slice(piece);
            frame.commit();
            offset += piece.len();
            if offset >= payload.len() {
                return true;
            }
        }
    }
}

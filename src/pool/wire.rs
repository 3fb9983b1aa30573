//! What travels between a pool and its workers: task frames (pool → worker,
//! one per chunk, in the worker's own task queue) and result frames (worker →
//! pool, in the shared result queue), and the trampolines that run a chunk.
//!
//! A frame is a `#[repr(C)]` header followed, at offset 48 (16-aligned), by
//! its payload: an rkyv archive, validated before it is read.

use crate::codec::Message;
use crate::error::{Error, Result};
use crate::process::child::{self, Failure, panic_message};
use crate::region::fnv1a;
use bytemuck::{Pod, Zeroable};
use rkyv::util::AlignedVec;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Bytes before a frame's payload.
pub(crate) const HEADER: usize = 48;

/// Marks a task frame.
pub(crate) const TASK_MAGIC: u32 = 0x5348_5441; // "SHTA"

/// The header of a task frame: run `count` items through a function.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub(crate) struct TaskHeader {
    pub magic: u32,
    /// Items in the chunk.
    pub count: u32,
    /// The task's id (pool-wide, from 1).
    pub id: u64,
    /// Offsets of the chunk trampoline and of the user's function from
    /// [`child::anchor`].
    pub trampoline: i64,
    pub function: i64,
    /// Hash of the function's type.
    pub signature: u64,
    /// Payload bytes after the header.
    pub len: u64,
}

/// What a result frame carries.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResultKind {
    /// The worker ran its initializer and waits for tasks.
    Ready = 1,
    /// The initializer panicked or could not run; payload: the message.
    InitFailed = 2,
    /// A chunk ran; payload: the outputs, then the failures (see [`Outputs`]).
    Done = 3,
    /// The chunk could not run at all; payload: an encoded [`Failure`].
    Failed = 4,
    /// Sent by the pool to itself, to wake its collector.
    Wake = 5,
}

impl ResultKind {
    pub(crate) fn from_raw(raw: u32) -> Option<ResultKind> {
        Some(match raw {
            1 => ResultKind::Ready,
            2 => ResultKind::InitFailed,
            3 => ResultKind::Done,
            4 => ResultKind::Failed,
            5 => ResultKind::Wake,
            _ => return None,
        })
    }
}

/// The header of a result frame. A payload larger than a slot travels in
/// several frames with the same `id` and increasing `offset`, back to back
/// (one worker sends them in order, and the queue keeps each sender's order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
pub(crate) struct ResultHeader {
    /// A [`ResultKind`].
    pub kind: u32,
    /// The worker's slot in the pool.
    pub slot: u32,
    /// The worker's pid.
    pub pid: u32,
    pub _pad: u32,
    /// The task's id (0 for Ready / InitFailed / Wake).
    pub id: u64,
    /// The whole payload's length.
    pub total: u64,
    /// Where this frame's bytes go in the payload.
    pub offset: u64,
    /// For `Done`: the length of the outputs archive; the failures archive
    /// starts at the next multiple of 16.
    pub outputs: u64,
}

/// The bytes after a header, if the frame is long enough to have one.
pub(crate) fn split<H: Pod>(frame: &[u8]) -> Option<(H, &[u8])> {
    let head = frame.get(..HEADER)?;
    Some((
        bytemuck::pod_read_unaligned(&head[..size_of::<H>()]),
        &frame[HEADER..],
    ))
}

mod sealed {
    pub trait Sealed {}
    impl<A, R> Sealed for fn(A) -> R {}
    impl<A, B, R> Sealed for fn(A, B) -> R {}
    impl<T, R> Sealed for super::super::ranges::RangeMap<T, R> {}
}

/// A function a pool can run: `fn(A) -> R`, or `fn(A, B) -> R` for
/// `starmap`, whose arguments travel as the tuple `(A, B)`. Sealed.
pub trait Callable: sealed::Sealed + Copy + Send + Sync + 'static {
    /// What travels to the worker.
    type Args: Message;
    /// What comes back.
    type Output: Message;
    #[doc(hidden)]
    fn call(self, args: Self::Args) -> Self::Output;
}

impl<A: Message + 'static, R: Message + 'static> Callable for fn(A) -> R {
    type Args = A;
    type Output = R;
    fn call(self, args: A) -> R {
        self(args)
    }
}

impl<A: 'static, B: 'static, R: Message + 'static> Callable for fn(A, B) -> R
where
    (A, B): Message,
{
    type Args = (A, B);
    type Output = R;
    fn call(self, (a, b): (A, B)) -> R {
        self(a, b)
    }
}

/// A chunk trampoline: decodes the items, runs the function on each (a panic
/// fails only its item), encodes the outputs after [`HEADER`] bytes of the
/// buffer it is given (whose capacity it reuses).
pub(crate) type ChunkTrampoline =
    fn(usize, u64, &[u8], AlignedVec) -> std::result::Result<Encoded, Failure>;

/// An encoded result payload (after [`HEADER`] bytes) and the length of its
/// outputs archive.
pub(crate) struct Encoded {
    pub bytes: AlignedVec,
    pub outputs: usize,
}

/// The signature hash of a function type.
pub(crate) fn signature<F: 'static>() -> u64 {
    fnv1a(std::any::type_name::<F>().as_bytes())
}

/// The address of a function pointer.
pub(crate) fn address<F: Callable>(f: F) -> usize {
    const { assert!(size_of::<F>() == size_of::<usize>()) };
    // SAFETY: `F` is a function pointer type, or `RangeMap` (one function
    // pointer, `repr(transparent)`): the `Callable`s, sealed. Each has the
    // size (asserted above) and representation of a `usize` address.
    unsafe { std::mem::transmute_copy::<F, usize>(&f) }
}

pub(crate) fn chunk_trampoline<F: Callable>(
    function: usize,
    signature_sent: u64,
    args: &[u8],
    buf: AlignedVec,
) -> std::result::Result<Encoded, Failure> {
    if signature_sent != signature::<F>() {
        return Err(Failure {
            function_not_found: true,
            message: format!(
                "the signature differs: the trampoline found is for {}",
                std::any::type_name::<F>()
            ),
        });
    }
    const { assert!(size_of::<F>() == size_of::<usize>()) };
    // SAFETY: the worker checked that `function` lies in this executable's
    // code, and the pool computed it (and this trampoline's address) from an
    // `F` of this same executable; the signature hash just matched. `F` is
    // a function pointer, or `RangeMap` (one function pointer,
    // `repr(transparent)`): the address is its whole value (asserted
    // just above to be one address wide).
    let f: F = unsafe { std::mem::transmute_copy::<usize, F>(&function) };
    let items = F::Args::decode_vec(args).map_err(|e| Failure {
        function_not_found: false,
        message: e.to_string(),
    })?;
    let mut outputs = Vec::with_capacity(items.len());
    let mut failures: Vec<(u32, String)> = Vec::new();
    // One unwind guard for the whole chunk; after a panic, the rest of the
    // chunk runs under a new one.
    let mut rest = items.into_iter().enumerate();
    let mut current = 0;
    while let Err(p) = catch_unwind(AssertUnwindSafe(|| {
        for (i, item) in &mut rest {
            current = i;
            outputs.push(f.call(item));
        }
    })) {
        failures.push((current as u32, panic_message(&*p)));
    }
    let encoding_failed = |e: Error| Failure {
        function_not_found: false,
        message: format!("the return value: {e}"),
    };
    let mut bytes = F::Output::encode_vec(&outputs, buf, HEADER).map_err(encoding_failed)?;
    let outputs = bytes.len() - HEADER;
    if !failures.is_empty() {
        let tail = failures.encode().map_err(encoding_failed)?;
        bytes.resize(bytes.len().next_multiple_of(16), 0);
        bytes.extend_from_slice(&tail);
    }
    Ok(Encoded { bytes, outputs })
}

/// Decodes a `Done` payload into one outcome per item, in order.
pub(crate) fn decode_outputs<R: Message>(
    payload: &[u8],
    outputs: usize,
    count: usize,
) -> Result<Outputs<R>> {
    let corrupted = |what: &str| Error::Encoding {
        what: "pool result",
        reason: what.to_owned(),
    };
    let head = payload
        .get(..outputs)
        .ok_or_else(|| corrupted("outputs longer than the payload"))?;
    let values = R::decode_vec(head)?;
    let failures = match payload.get(outputs.next_multiple_of(16)..) {
        Some(tail) if !tail.is_empty() => Vec::<(u32, String)>::decode(tail)?,
        _ => Vec::new(),
    };
    if values.len() + failures.len() != count {
        return Err(corrupted("the outputs do not match the chunk"));
    }
    if failures.is_empty() {
        return Ok(Outputs::Values(values));
    }
    let mut values = values.into_iter();
    let mut failures = failures.into_iter().peekable();
    let mut out = Vec::with_capacity(count);
    for i in 0..count as u32 {
        if failures.peek().is_some_and(|f| f.0 == i) {
            out.push(Err(failures.next().expect("peeked").1));
        } else {
            out.push(Ok(values
                .next()
                .ok_or_else(|| corrupted("failures out of order"))?));
        }
    }
    Ok(Outputs::Mixed(out))
}

/// A chunk's decoded outputs.
#[derive(Debug, PartialEq)]
pub(crate) enum Outputs<R> {
    /// Every item returned.
    Values(Vec<R>),
    /// Some panicked (with these messages).
    Mixed(Vec<std::result::Result<R, String>>),
}

/// An initializer: `fn(A)` with its encoded arguments.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub(crate) struct InitCall {
    pub trampoline: i64,
    pub function: i64,
    pub signature: u64,
    pub args: Vec<u8>,
}

/// An initializer trampoline.
pub(crate) type InitTrampoline = fn(usize, u64, &[u8]) -> std::result::Result<(), String>;

pub(crate) fn init_trampoline<A: Message + 'static>(
    function: usize,
    signature_sent: u64,
    args: &[u8],
) -> std::result::Result<(), String> {
    if signature_sent != signature::<fn(A)>() {
        return Err(format!(
            "the initializer's signature differs: the trampoline found is for {}",
            std::any::type_name::<fn(A)>()
        ));
    }
    // SAFETY: as in `chunk_trampoline`: checked to be code of this
    // executable, computed from a `fn(A)`, signature matched.
    let f = unsafe { std::mem::transmute::<usize, fn(A)>(function) };
    let args = A::decode(args).map_err(|e| e.to_string())?;
    catch_unwind(AssertUnwindSafe(|| f(args)))
        .map_err(|p| format!("the initializer panicked: {}", panic_message(&*p)))
}

impl InitCall {
    pub(crate) fn new<A: Message + 'static>(f: fn(A), args: &A) -> Result<InitCall> {
        let trampoline: InitTrampoline = init_trampoline::<A>;
        Ok(InitCall {
            trampoline: child::offset_of_code(trampoline as usize),
            function: child::offset_of_code(f as usize),
            signature: signature::<fn(A)>(),
            args: args.encode()?.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_48_bytes() {
        assert_eq!(size_of::<TaskHeader>(), 48);
        assert_eq!(size_of::<ResultHeader>(), 48);
        assert!(size_of::<TaskHeader>() <= HEADER);
        assert_eq!(std::mem::offset_of!(TaskHeader, id), 8);
        assert_eq!(std::mem::offset_of!(TaskHeader, len), 40);
        assert_eq!(std::mem::offset_of!(ResultHeader, id), 16);
        assert_eq!(std::mem::offset_of!(ResultHeader, outputs), 40);
    }

    fn square(x: u64) -> u64 {
        if x == 3 {
            panic!("three");
        }
        x * x
    }

    #[test]
    fn a_chunk_runs_and_a_panic_fails_only_its_item() {
        type F = fn(u64) -> u64;
        let t: ChunkTrampoline = chunk_trampoline::<F>;
        let f = address::<F>(square);
        let run = |sig, args: &[u8]| t(f, sig, args, AlignedVec::new());
        let encode = |v: Vec<u64>| u64::encode_vec(&v, AlignedVec::new(), 0).unwrap();
        let enc = run(signature::<F>(), &encode(vec![1, 2, 3, 4]))
            .map_err(|f| f.message)
            .unwrap();
        let out = decode_outputs::<u64>(&enc.bytes[HEADER..], enc.outputs, 4).unwrap();
        let want = vec![Ok(1), Ok(4), Err("three".to_owned()), Ok(16)];
        assert_eq!(out, Outputs::Mixed(want));
        let args = encode(vec![1, 2]);
        let enc = run(signature::<F>(), &args).map_err(|f| f.message).unwrap();
        let out = decode_outputs::<u64>(&enc.bytes[HEADER..], enc.outputs, 2).unwrap();
        assert_eq!(out, Outputs::Values(vec![1, 4]));
        // A wrong count, a wrong signature, garbage arguments.
        assert!(decode_outputs::<u64>(&enc.bytes[HEADER..], enc.outputs, 5).is_err());
        assert!(run(signature::<fn(u32) -> u64>(), &args).is_err_and(|e| e.function_not_found));
        assert!(run(signature::<F>(), b"\x07").is_err_and(|e| !e.function_not_found));
    }
}

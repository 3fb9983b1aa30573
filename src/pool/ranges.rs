//! Maps of `Pod` items over shared memory ([`Pool::map_pod`],
//! [`Pool::map_into`]): the input and the results are shared arrays, and a
//! task is an index range, so nothing is encoded per item. A worker maps
//! both arrays and writes `f(input[i])` to `output[i]` for its range, in
//! place; what travels per task is two array handles and two indices.
//!
//! - The function is a function item or a closure that captures nothing: a
//!   zero-sized type, so the range loop is compiled for it (the function is
//!   inlined into the loop; through a function pointer every item paid an
//!   indirect call). Its code travels as the address of its own trampoline,
//!   checked in the worker as every pool function's.
//! - A range is one item of an ordinary pool call (chunks of one range), so
//!   everything a call has holds for it: a panic fails its range (reported
//!   as the first error by position, since ranges are in order and a range
//!   stops at its first panic), a worker's death fails or retries its range
//!   (a rerun writes the same results), termination fails the rest.
//! - Measured on a 2-CPU guest, where each tmpfs page costs microseconds to
//!   allocate and free and each mapped page a page-table entry: `map_pod`
//!   keeps its shared arrays between calls (the pool's scratch), and a
//!   worker keeps the last arrays it mapped for a range task, so a repeated
//!   `map_pod` or `map_into` over the same arrays allocates, maps and
//!   unmaps nothing. (A map of 1M items spent 32 ms allocating and freeing
//!   tmpfs pages before, and 4 ms mapping per task; 0.8 ms after.)

use super::{CallOptions, Pool};
use crate::array::Array;
use crate::error::{Error, Result};
use bytemuck::Pod;
use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

/// A range task: `f` over `input[start..end]` into `output[start..end]`.
pub(crate) struct RangeMap<T, R, F> {
    f: F,
    _types: PhantomData<fn(T) -> R>,
}

impl<T, R, F: Copy> Clone for RangeMap<T, R, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, R, F: Copy> Copy for RangeMap<T, R, F> {}

// SAFETY-relevant: `F` is zero-sized (checked where a `RangeMap` is made),
// so `chunk_trampoline` may conjure it from no bytes.
impl<T, R, F> super::Callable for RangeMap<T, R, F>
where
    T: Pod,
    R: Pod,
    F: Fn(T) -> R + Copy + Send + Sync + 'static,
{
    /// The input, the output and the range.
    type Args = (Array<T>, Array<R>, u64, u64);
    type Output = ();

    fn call(self, (input, output, start, end): Self::Args) {
        let (s, e) = (start as usize, end as usize);
        // A frame is the pool's own, but its indices are still checked: an
        // out-of-bounds range fails its item instead of writing elsewhere.
        assert!(
            s <= e && e <= input.len() && e <= output.len(),
            "the range {s}..{e} lies outside the arrays ({} and {} elements)",
            input.len(),
            output.len()
        );
        // SAFETY: in bounds (checked above); the two arrays are separate
        // regions (`map_into` refused one array for both); the caller does
        // not write them while the map runs (documented on `map_into`), and
        // every other task writes other indices of `output`. Elements are
        // `Pod`: any bytes a peer left are a value.
        let (src, dst) = unsafe {
            (
                &input.as_slice_unchecked()[s..e],
                &mut output.as_mut_slice_unchecked()[s..e],
            )
        };
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = (self.f)(x);
        }
        // A peer's truncation turns the cut pages into private zero pages:
        // the results written there are lost, so the range fails.
        if let Err(e) = input.check().and(output.check()) {
            panic!("{e}");
        }
        KEPT.with(|k| *k.borrow_mut() = Some(Box::new((input, output))));
    }

    fn code_address(self) -> usize {
        let trampoline: super::wire::ChunkTrampoline = super::wire::chunk_trampoline::<Self>;
        trampoline as usize
    }
}

thread_local! {
    /// In a worker: the last arrays a range task mapped, kept so that the
    /// next task over them finds them mapped (`Shared::from_fd` reuses a
    /// live mapping of the same region).
    static KEPT: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// The pool's `map_pod` arrays between calls: input and output pairs by
/// element types, at most [`SCRATCH_PAIRS`].
#[derive(Default)]
pub(crate) struct Scratch(Vec<Box<dyn Any + Send>>);

/// Pairs of scratch arrays a pool keeps (one per concurrent `map_pod` of a
/// kind; more are made and dropped).
const SCRATCH_PAIRS: usize = 2;

impl Pool {
    /// `map` for `Pod` items, over shared memory: the items are copied once
    /// into a shared array, each worker computes index ranges of it in
    /// place into a shared result array, and the results are copied out
    /// once. Nothing is encoded per item, so for small items and cheap
    /// functions this is many times faster than [`map`](Self::map) (see
    /// BENCHMARKS.md). For data already in an [`Array`], use
    /// [`map_into`](Self::map_into) and skip both copies.
    ///
    /// `f` is a function item or a closure that captures nothing (a
    /// zero-sized type: its loop is compiled with `f` inlined); a function
    /// pointer or a capturing closure does not compile. The pool keeps the
    /// shared arrays of the largest call (by element types) for the next
    /// one, until it is dropped.
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// # fn main() -> shmkit::Result<()> {
    /// let pool = shmkit::pool::Pool::builder().processes(2).build()?;
    /// let squares = pool.map_pod(square, &(0..10_000).collect::<Vec<u64>>())?;
    /// assert_eq!(squares[9_999], 9_999 * 9_999);
    /// let halves = pool.map_pod(|x: f64| x / 2.0, &[1.0, 3.0])?;
    /// assert_eq!(halves, [0.5, 1.5]);
    /// # Ok(()) }
    /// ```
    ///
    /// A function pointer does not compile (its loop could not inline it,
    /// and its value would have to travel):
    ///
    /// ```compile_fail
    /// # fn main() -> shmkit::Result<()> {
    /// let pool = shmkit::pool::Pool::builder().processes(1).build()?;
    /// let f: fn(u64) -> u64 = |x| x + 1;
    /// pool.map_pod(f, &[1u64])?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`map_into`](Self::map_into); [`Error::Io`] if the shared arrays
    /// cannot be created.
    pub fn map_pod<T, R, F>(&self, f: F, items: &[T]) -> Result<Vec<R>>
    where
        T: Pod + Send,
        R: Pod + Send,
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
    {
        self.options().map_pod(f, items)
    }

    /// Writes `f(input[i])` to `output[i]` for every index of `input`, in
    /// the workers, in place: `input` and `output` are shared arrays the
    /// caller already holds, and nothing but index ranges travels. The
    /// arrays' locks are not taken (the workers write disjoint ranges): the
    /// caller must not write either array while the map runs. If it does,
    /// the results are unspecified values of `R`, never undefined behaviour
    /// (`Pod`). `f` as for [`map_pod`](Self::map_pod).
    ///
    /// Each worker keeps the last pair of arrays it mapped, so that the
    /// next map over them maps nothing; the memory of arrays the caller has
    /// dropped is therefore released at the worker's next `map_into` or
    /// `map_pod`, or when the pool ends.
    ///
    /// ```
    /// fn half(x: f64) -> f64 { x / 2.0 }
    /// # fn main() -> shmkit::Result<()> {
    /// let pool = shmkit::pool::Pool::builder().processes(2).build()?;
    /// let input = shmkit::Array::from_slice(&[2.0, 4.0, 8.0])?;
    /// let output = shmkit::Array::<f64>::new(3)?;
    /// pool.map_into(half, &input, &output)?;
    /// assert_eq!(output.to_vec().unwrap(), [1.0, 2.0, 4.0]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `output` is shorter than `input`, or
    /// both are the same region; [`PoolError::Closed`](crate::error::PoolError::Closed) after
    /// [`close`](Self::close); then the first failure by position: [`PoolError::TaskPanicked`](crate::error::PoolError::TaskPanicked)
    /// if `f` panicked (the rest of that range was not computed),
    /// [`PoolError::WorkerDied`](crate::error::PoolError::WorkerDied) if a worker died (with retries off),
    /// [`PoolError::Terminated`](crate::error::PoolError::Terminated), or a failure to open the arrays in a worker.
    pub fn map_into<T, R, F>(&self, f: F, input: &Array<T>, output: &Array<R>) -> Result<()>
    where
        T: Pod,
        R: Pod,
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
    {
        self.options().map_into(f, input, output)
    }

    /// A pair of scratch arrays of at least `n` elements (the pool's, or new).
    fn take_scratch<T: Pod + Send, R: Pod + Send>(&self, n: usize) -> Result<(Array<T>, Array<R>)> {
        let mut s = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let fits = s.0.iter().position(|b| {
            b.downcast_ref::<(Array<T>, Array<R>)>()
                .is_some_and(|(i, _)| i.len() >= n)
        });
        if let Some(k) = fits {
            let pair = s.0.swap_remove(k);
            return Ok(*pair.downcast().expect("checked above"));
        }
        drop(s);
        // Populated at creation: every page allocated and mapped in one call,
        // not faulted in one by one by the copy.
        let input = Array::<T>::builder().unlocked().populate(true).create(n)?;
        let output = Array::<R>::builder().unlocked().populate(true).create(n)?;
        Ok((input, output))
    }

    /// Gives a pair back to the scratch, replacing a smaller pair of the same
    /// types when full.
    fn give_back_scratch<T: Pod + Send, R: Pod + Send>(&self, pair: (Array<T>, Array<R>)) {
        let mut s = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if s.0.len() >= SCRATCH_PAIRS {
            let smaller = s.0.iter().position(|b| {
                b.downcast_ref::<(Array<T>, Array<R>)>()
                    .is_some_and(|(i, _)| i.len() < pair.0.len())
            });
            match smaller {
                Some(k) => drop(s.0.swap_remove(k)),
                None => return,
            }
        }
        s.0.push(Box::new(pair));
    }
}

impl CallOptions<'_> {
    /// [`Pool::map_pod`] with these options ([`chunksize`](Self::chunksize):
    /// items per range; default: four ranges per worker).
    ///
    /// # Errors
    ///
    /// As [`Pool::map_pod`].
    pub fn map_pod<T, R, F>(self, f: F, items: &[T]) -> Result<Vec<R>>
    where
        T: Pod + Send,
        R: Pod + Send,
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
    {
        let n = items.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let pool = self.pool;
        let (input, output) = pool.take_scratch::<T, R>(n)?;
        let size = self.range_size(n);
        // Each range is copied in just before its task goes out (so the
        // workers start while the rest is copied in), and its results are
        // copied out as soon as it is done, in order (so the copying out
        // overlaps the ranges still running).
        let ranges = (0..n).step_by(size).map(|s| {
            let e = (s + size).min(n);
            // SAFETY: scratch arrays are anonymous and this call's alone
            // (taken out of the pool's scratch); no task over `s..e` has
            // been submitted yet.
            unsafe { input.as_mut_slice_unchecked()[s..e].copy_from_slice(&items[s..e]) };
            (input.clone(), output.clone(), s as u64, e as u64)
        });
        let mut out = Vec::with_capacity(n);
        let done = CallOptions {
            chunksize: Some(1),
            lookahead: Some(usize::MAX),
            ..self
        }
        .iterate(RangeMap::new(f), ranges, true);
        for (k, range) in done.enumerate() {
            // The first failure by position; the arrays are not given back
            // (tasks after it may still run over them).
            range?;
            let (s, e) = (k * size, ((k + 1) * size).min(n));
            // SAFETY: range `k` is done: no worker writes `s..e` any more,
            // and the array is this call's alone.
            out.extend_from_slice(unsafe { &output.as_slice_unchecked()[s..e] });
        }
        pool.give_back_scratch((input, output));
        Ok(out)
    }

    /// [`Pool::map_into`] with these options ([`chunksize`](Self::chunksize):
    /// items per range; default: four ranges per worker).
    ///
    /// # Errors
    ///
    /// As [`Pool::map_into`].
    pub fn map_into<T, R, F>(self, f: F, input: &Array<T>, output: &Array<R>) -> Result<()>
    where
        T: Pod,
        R: Pod,
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
    {
        let n = input.len();
        if output.len() < n {
            return Err(Error::InvalidArgument {
                argument: "output",
                message: format!(
                    "the output array has {} elements for {n} inputs: give one at least as long",
                    output.len()
                ),
            });
        }
        let (a, b) = (input.segment(), output.segment());
        let same = std::ptr::eq(a.as_ptr(), b.as_ptr())
            || (a.name().is_some() && a.name() == b.name())
            || (a.path().is_some() && a.path() == b.path());
        if same {
            return Err(Error::InvalidArgument {
                argument: "output",
                message: "the output is the input array: give a separate array for the results"
                    .into(),
            });
        }
        self.map_range(f, input, output, n)
    }

    /// Items per range: the chunk size asked for, else four ranges per
    /// worker.
    fn range_size(&self, n: usize) -> usize {
        self.chunksize
            .unwrap_or_else(|| super::submit::auto_chunksize(n, self.pool.processes()))
    }

    /// The first `n` elements of `input` through `f` into `output`, in
    /// ranges.
    fn map_range<T, R, F>(self, f: F, input: &Array<T>, output: &Array<R>, n: usize) -> Result<()>
    where
        T: Pod,
        R: Pod,
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
    {
        if n == 0 {
            return Ok(());
        }
        let size = self.range_size(n);
        let ranges = (0..n).step_by(size).map(|s| {
            let e = (s + size).min(n);
            (input.clone(), output.clone(), s as u64, e as u64)
        });
        let one_range_per_task = CallOptions {
            chunksize: Some(1),
            ..self
        };
        one_range_per_task
            .submit_map(RangeMap::new(f), ranges, None)?
            .get()
            .map(drop)
    }
}

impl<T, R, F> RangeMap<T, R, F> {
    fn new(f: F) -> Self {
        const {
            assert!(
                size_of::<F>() == 0,
                "map_pod and map_into take a function item or a closure that captures \
                 nothing, not a function pointer or a capturing closure"
            )
        };
        RangeMap {
            f,
            _types: PhantomData,
        }
    }
}

//! Maps of `Pod` items over shared memory ([`Pool::map_pod`],
//! [`Pool::map_into`]): the input and the results are shared arrays, and a
//! task is an index range, so nothing is encoded per item. A worker maps
//! both arrays and writes `f(input[i])` to `output[i]` for its range, in
//! place; what travels per task is two array handles and two indices.
//!
//! - The function is a function pointer, as for every pool call (its code
//!   address travels and is checked in the worker). A zero-sized function
//!   type would let the loop inline it, but the worker would then have to
//!   make a value of that type from nothing, which is unsound for a closure
//!   that captures a zero-sized token whose existence proves something.
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

/// A range task: `f` over `input[start..end]` into `output[start..end]`.
/// A function pointer and nothing else, so that it travels as the
/// function's code address (checked in the worker as every pool function).
#[repr(transparent)]
pub(crate) struct RangeMap<T, R>(fn(T) -> R);

impl<T, R> Clone for RangeMap<T, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, R> Copy for RangeMap<T, R> {}

impl<T: Pod, R: Pod> super::Callable for RangeMap<T, R> {
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
        let (src_ptr, dst_ptr) = (
            input.as_ptr().wrapping_add(s),
            output.as_ptr().wrapping_add(s),
        );
        // Two handles of one region (reopened by descriptor) would make
        // input and output alias: refused by `map_into`, checked again here.
        let overlap = (src_ptr as usize)
            < (dst_ptr as usize).wrapping_add((e - s) * size_of::<R>())
            && (dst_ptr as usize) < (src_ptr as usize).wrapping_add((e - s) * size_of::<T>());
        assert!(e == s || !overlap, "the input and output ranges overlap");
        for i in 0..e - s {
            // SAFETY: `s + i` lies in both arrays (checked above), whose
            // ranges do not overlap; this task is the only one over `s..e`
            // (ranges are disjoint), and the caller does not write the
            // arrays while the map runs (`map_into`'s contract; a peer that
            // does gives unspecified values, as any shared memory a peer
            // writes: elements are `Pod`, any bytes are a value). Element
            // by element, no reference: none is alive while `f` (user code,
            // which could reach the same memory) runs.
            unsafe {
                let x = src_ptr.add(i).read();
                dst_ptr.add(i).write((self.0)(x));
            }
        }
        // A peer's truncation turns the cut pages into private zero pages:
        // the results written there are lost, so the range fails.
        if let Err(e) = input.check().and(output.check()) {
            panic!("{e}");
        }
        KEPT.with(|k| *k.borrow_mut() = Some(Box::new((input, output))));
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
    /// `f` is a plain function (or a closure that captures nothing), as
    /// for every pool call: it travels as its code address. The pool keeps
    /// the shared arrays of the largest call (by element types) for the
    /// next one, until it is dropped.
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
    /// # Errors
    ///
    /// As [`map_into`](Self::map_into); [`Error::Io`] if the shared arrays
    /// cannot be created.
    pub fn map_pod<T, R>(&self, f: fn(T) -> R, items: &[T]) -> Result<Vec<R>>
    where
        T: Pod + Send,
        R: Pod + Send,
    {
        self.options().map_pod(f, items)
    }

    /// Writes `f(input[i])` to `output[i]` for every index of `input`, in
    /// the workers, in place: `input` and `output` are shared arrays the
    /// caller already holds, and nothing but index ranges travels. The
    /// arrays' locks are not taken (the workers write disjoint ranges): the
    /// caller must not write either array while the map runs (nor let
    /// another process do so): the workers read and write them in place,
    /// as any process may read and write a shared region, and a write
    /// meanwhile leaves unspecified values. `f` as for
    /// [`map_pod`](Self::map_pod).
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
    pub fn map_into<T, R>(&self, f: fn(T) -> R, input: &Array<T>, output: &Array<R>) -> Result<()>
    where
        T: Pod,
        R: Pod,
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
    pub fn map_pod<T, R>(self, f: fn(T) -> R, items: &[T]) -> Result<Vec<R>>
    where
        T: Pod + Send,
        R: Pod + Send,
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
            // been submitted yet (earlier ranges may be read by workers
            // meanwhile: only `s..e` is written, through a raw pointer).
            unsafe {
                std::ptr::copy_nonoverlapping(items[s..e].as_ptr(), input.as_ptr().add(s), e - s);
            }
            (input.clone(), output.clone(), s as u64, e as u64)
        });
        let mut out = Vec::with_capacity(n);
        let done = CallOptions {
            chunksize: Some(1),
            lookahead: Some(usize::MAX),
            ..self
        }
        .iterate(RangeMap(f), ranges, true);
        for (k, range) in done.enumerate() {
            // The first failure by position; the arrays are not given back
            // (tasks after it may still run over them).
            range?;
            let (s, e) = (k * size, ((k + 1) * size).min(n));
            // SAFETY: range `k` is done: no worker writes `s..e` any more,
            // and the array is this call's alone; only `s..e` is borrowed
            // (workers may still write later ranges).
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(output.as_ptr().add(s).cast_const(), e - s)
            });
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
    pub fn map_into<T, R>(self, f: fn(T) -> R, input: &Array<T>, output: &Array<R>) -> Result<()>
    where
        T: Pod,
        R: Pod,
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
        if input.segment().same_region(output.segment()) {
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
    fn map_range<T, R>(
        self,
        f: fn(T) -> R,
        input: &Array<T>,
        output: &Array<R>,
        n: usize,
    ) -> Result<()>
    where
        T: Pod,
        R: Pod,
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
            .submit_map(RangeMap(f), ranges, None)?
            .get()
            .map(drop)
    }
}

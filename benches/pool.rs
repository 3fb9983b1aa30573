//! The process pool beside what a user would pick instead, in ONE group
//! (`pool`), so every ratio comes from the same run:
//!
//! - `1x-map-1M-*`: `map` of a trivial function over 1,000,000 `u64`s: a
//!   sequential loop, rayon's `par_iter` on threads, and shmkit's pool (one
//!   worker per CPU, Python's chunking). Throughput in items. Beside them,
//!   the floor of any process pool that hands back a `Vec`: the inputs
//!   copied into shared memory and the outputs copied out, once each, with
//!   no process involved.
//! - `1[4-6]-map-20k-heavy-*`: the same with about a microsecond of work
//!   per item, where the copying no longer dominates.
//! - `1[7-9]-*-map-pod`/`map-into`: the same maps over shared arrays
//!   (`Pool::map_pod`: the items copied into a shared array once, ranges
//!   as tasks, results copied out once; `Pool::map_into`: the input and
//!   output arrays already shared, nothing copied).
//! - `2x-round-trip-*`: one task submitted and its result awaited:
//!   crossbeam-channel to a thread and back (the thread limit), and shmkit's
//!   `apply_async(..).get()` to a worker process and back.

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, measurement::WallTime};
use rayon::prelude::*;
use shmkit::Pool;
use std::hint::black_box;
use std::time::Duration;

const ITEMS: u64 = 1_000_000;

fn trivial(x: u64) -> u64 {
    x.wrapping_mul(x) ^ 0x5bd1_e995
}

/// About a microsecond of arithmetic.
fn heavy(x: u64) -> u64 {
    let mut v = x | 1;
    for _ in 0..400 {
        v ^= v << 13;
        v ^= v >> 7;
        v ^= v << 17;
    }
    v
}

const HEAVY_ITEMS: u64 = 20_000;

/// Rows `first`, `first+1`, `first+2`: `f` over `0..n` sequentially, with
/// rayon on threads, and with shmkit's pool.
fn map_rows(
    g: &mut BenchmarkGroup<'_, WallTime>,
    pool: &Pool,
    rayon: &rayon::ThreadPool,
    first: u32,
    label: &str,
    f: fn(u64) -> u64,
    n: u64,
) {
    g.throughput(Throughput::Elements(n));
    g.bench_function(format!("{first}-map-{label}-sequential"), |b| {
        b.iter(|| black_box((0..n).map(f).collect::<Vec<u64>>()))
    });
    g.bench_function(format!("{}-map-{label}-rayon-threads", first + 1), |b| {
        b.iter(|| rayon.install(|| black_box((0..n).into_par_iter().map(f).collect::<Vec<u64>>())))
    });
    g.bench_function(format!("{}-map-{label}-shmkit-pool", first + 2), |b| {
        b.iter(|| black_box(pool.map(f, 0..n).unwrap()))
    });
}

fn pool(c: &mut Criterion) {
    let workers = shmkit::cpu_count();
    let pool = Pool::builder().processes(workers).build().unwrap();
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("pool");
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(30);
    map_rows(&mut g, &pool, &rayon, 10, "1M", trivial, ITEMS);
    let shm = shmkit::Array::<u64>::new(ITEMS as usize).unwrap();
    g.throughput(Throughput::Elements(ITEMS));
    g.bench_function("13-map-1M-floor-copy-in-and-out", |b| {
        b.iter(|| {
            // SAFETY: no other process has this array.
            let cells = unsafe { shm.as_mut_slice_unchecked() };
            for (cell, x) in cells.iter_mut().zip(0..ITEMS) {
                *cell = x;
            }
            black_box(shm.to_vec().unwrap())
        })
    });
    let input: Vec<u64> = (0..ITEMS).collect();
    g.bench_function("17-map-1M-shmkit-map-pod", |b| {
        b.iter(|| black_box(pool.map_pod(trivial, &input).unwrap()))
    });
    let shared_in = shmkit::Array::<u64>::builder()
        .unlocked()
        .create_from(&input)
        .unwrap();
    let shared_out = shmkit::Array::<u64>::builder()
        .unlocked()
        .create(ITEMS as usize)
        .unwrap();
    g.bench_function("18-map-1M-shmkit-map-into", |b| {
        b.iter(|| pool.map_into(trivial, &shared_in, &shared_out).unwrap())
    });
    g.throughput(Throughput::Elements(HEAVY_ITEMS));
    map_rows(&mut g, &pool, &rayon, 14, "20k-heavy", heavy, HEAVY_ITEMS);
    let heavy_input: Vec<u64> = (0..HEAVY_ITEMS).collect();
    g.bench_function("19-map-20k-heavy-shmkit-map-pod", |b| {
        b.iter(|| black_box(pool.map_pod(heavy, &heavy_input).unwrap()))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("20-round-trip-crossbeam-thread", |b| {
        let (tx, rx) = crossbeam_channel::bounded::<u64>(1);
        let (btx, brx) = crossbeam_channel::bounded::<u64>(1);
        let t = std::thread::spawn(move || {
            while let Ok(v) = rx.recv() {
                btx.send(trivial(v)).unwrap();
            }
        });
        b.iter(|| {
            tx.send(7).unwrap();
            black_box(brx.recv().unwrap())
        });
        drop(tx);
        t.join().unwrap();
    });
    g.bench_function("21-round-trip-shmkit-apply-async", |b| {
        b.iter(|| black_box(pool.apply_async(trivial, 7).unwrap().get().unwrap()))
    });
    g.finish();
}

criterion_group!(benches, pool);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}

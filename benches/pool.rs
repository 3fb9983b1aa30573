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
//! - `2x-round-trip-*`: one task submitted and its result awaited:
//!   crossbeam-channel to a thread and back (the thread limit), and shmkit's
//!   `apply_async(..).get()` to a worker process and back.

use criterion::{Criterion, Throughput, criterion_group};
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
    g.throughput(Throughput::Elements(ITEMS));
    g.bench_function("10-map-1M-sequential", |b| {
        b.iter(|| black_box((0..ITEMS).map(trivial).collect::<Vec<u64>>()))
    });
    g.bench_function("11-map-1M-rayon-threads", |b| {
        b.iter(|| {
            rayon.install(|| {
                black_box(
                    (0..ITEMS)
                        .into_par_iter()
                        .map(trivial)
                        .collect::<Vec<u64>>(),
                )
            })
        })
    });
    g.bench_function("12-map-1M-shmkit-pool", |b| {
        b.iter(|| black_box(pool.map(trivial, 0..ITEMS).unwrap()))
    });
    let shm = shmkit::Array::<u64>::new(ITEMS as usize).unwrap();
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
    g.throughput(Throughput::Elements(HEAVY_ITEMS));
    g.bench_function("14-map-20k-heavy-sequential", |b| {
        b.iter(|| black_box((0..HEAVY_ITEMS).map(heavy).collect::<Vec<u64>>()))
    });
    g.bench_function("15-map-20k-heavy-rayon-threads", |b| {
        b.iter(|| {
            rayon.install(|| {
                black_box(
                    (0..HEAVY_ITEMS)
                        .into_par_iter()
                        .map(heavy)
                        .collect::<Vec<u64>>(),
                )
            })
        })
    });
    g.bench_function("16-map-20k-heavy-shmkit-pool", |b| {
        b.iter(|| black_box(pool.map(heavy, 0..HEAVY_ITEMS).unwrap()))
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

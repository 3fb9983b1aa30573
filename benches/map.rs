//! SharedMap beside what a user would pick instead, in ONE group (`map`),
//! so every ratio comes from the same run. Keys and values are `u64`; each
//! iteration does `OPS` operations over `KEYS` keys; throughput in
//! operations.
//!
//! - `1x-insert-1-*`, `2x-get-1-*`: one process (or thread): shmkit's map,
//!   `std::sync::Mutex<HashMap>`, dashmap.
//! - `3x-insert-2-*`, `4x-get-2-*`: two at once: shmkit between two
//!   processes (forked, each on its half of the keys), the others between
//!   two threads.
//!
//! Python's `Manager().dict()` measured here: ~28 µs per set, ~17 µs per
//! get (about 35k sets/s, 59k gets/s).

#[path = "common/mod.rs"]
mod common;

use common::fork_pair;
use criterion::{Criterion, Throughput, criterion_group};
use dashmap::DashMap;
use shmkit::SharedMap;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const KEYS: u64 = 100_000;
const OPS: u64 = 200_000;

fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % KEYS
}

/// Runs `work(half)` for halves 0 and 1 on two threads; the wall time.
fn two_threads(work: impl Fn(u64) + Sync) -> Duration {
    let t0 = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| work(1));
        work(0);
    });
    t0.elapsed()
}

fn map(c: &mut Criterion) {
    let shm = SharedMap::<u64, u64>::new(2 * KEYS as usize).unwrap();
    let std_map = Mutex::new(HashMap::<u64, u64>::with_capacity(2 * KEYS as usize));
    let dash = DashMap::<u64, u64>::with_capacity(2 * KEYS as usize);
    for i in 0..KEYS {
        shm.insert(i, i).unwrap();
        std_map.lock().unwrap().insert(i, i);
        dash.insert(i, i);
    }
    let mut g = c.benchmark_group("map");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);
    g.throughput(Throughput::Elements(OPS));

    g.bench_function("10-insert-1-shmkit-process", |b| {
        b.iter(|| {
            for i in 0..OPS {
                shm.insert(key(i), i).unwrap();
            }
        })
    });
    g.bench_function("11-insert-1-std-mutex-hashmap", |b| {
        b.iter(|| {
            for i in 0..OPS {
                std_map.lock().unwrap().insert(key(i), i);
            }
        })
    });
    g.bench_function("12-insert-1-dashmap", |b| {
        b.iter(|| {
            for i in 0..OPS {
                dash.insert(key(i), i);
            }
        })
    });
    let mut plain = HashMap::<u64, u64>::with_capacity(2 * KEYS as usize);
    plain.extend((0..KEYS).map(|i| (i, i)));
    g.bench_function("13-insert-1-std-hashmap-no-lock (limit)", |b| {
        b.iter(|| {
            for i in 0..OPS {
                plain.insert(key(i), i);
            }
        })
    });
    g.bench_function("20-get-1-shmkit-process", |b| {
        b.iter(|| {
            for i in 0..OPS {
                black_box(shm.get(&key(i)));
            }
        })
    });
    g.bench_function("21-get-1-std-mutex-hashmap", |b| {
        b.iter(|| {
            for i in 0..OPS {
                black_box(std_map.lock().unwrap().get(&key(i)).copied());
            }
        })
    });
    g.bench_function("22-get-1-dashmap", |b| {
        b.iter(|| {
            for i in 0..OPS {
                black_box(dash.get(&key(i)).map(|v| *v));
            }
        })
    });
    g.bench_function("23-get-1-std-hashmap-no-lock (limit)", |b| {
        b.iter(|| {
            for i in 0..OPS {
                black_box(plain.get(&key(i)).copied());
            }
        })
    });

    let inserts = |half: u64, f: &dyn Fn(u64, u64)| {
        for i in (half..OPS).step_by(2) {
            f(key(i), i);
        }
    };
    let gets = |half: u64, f: &dyn Fn(u64)| {
        for i in (half..OPS).step_by(2) {
            f(key(i));
        }
    };
    g.bench_function("30-insert-2-shmkit-processes", |b| {
        b.iter_custom(|iters| {
            fork_pair(
                || {
                    for _ in 0..iters {
                        inserts(1, &|k, v| {
                            shm.insert(k, v).unwrap();
                        });
                    }
                },
                || {
                    for _ in 0..iters {
                        inserts(0, &|k, v| {
                            shm.insert(k, v).unwrap();
                        });
                    }
                },
            )
        })
    });
    g.bench_function("31-insert-2-std-mutex-hashmap-threads", |b| {
        b.iter_custom(|iters| {
            two_threads(|half| {
                for _ in 0..iters {
                    inserts(half, &|k, v| {
                        std_map.lock().unwrap().insert(k, v);
                    });
                }
            })
        })
    });
    g.bench_function("32-insert-2-dashmap-threads", |b| {
        b.iter_custom(|iters| {
            two_threads(|half| {
                for _ in 0..iters {
                    inserts(half, &|k, v| {
                        dash.insert(k, v);
                    });
                }
            })
        })
    });
    g.bench_function("40-get-2-shmkit-processes", |b| {
        b.iter_custom(|iters| {
            fork_pair(
                || {
                    for _ in 0..iters {
                        gets(1, &|k| {
                            black_box(shm.get(&k));
                        });
                    }
                },
                || {
                    for _ in 0..iters {
                        gets(0, &|k| {
                            black_box(shm.get(&k));
                        });
                    }
                },
            )
        })
    });
    g.bench_function("41-get-2-std-mutex-hashmap-threads", |b| {
        b.iter_custom(|iters| {
            two_threads(|half| {
                for _ in 0..iters {
                    gets(half, &|k| {
                        black_box(std_map.lock().unwrap().get(&k).copied());
                    });
                }
            })
        })
    });
    g.bench_function("42-get-2-dashmap-threads", |b| {
        b.iter_custom(|iters| {
            two_threads(|half| {
                for _ in 0..iters {
                    gets(half, &|k| {
                        black_box(dash.get(&k).map(|v| *v));
                    });
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, map);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}

//! Handing a large buffer (4 KiB to 1 GiB) from one process to another, in
//! ONE group (`handoff`), so every ratio comes from the same run.
//!
//! What is measured, per handoff: the producer has the bytes; the consumer
//! ends up able to read them and reads one byte of every 4 KiB page (enough
//! to pay every copy and page fault a transport causes, without measuring a
//! computation over the data).
//!
//! - `<size>-0-touch-pages (limit)`: one process reads one byte per page of a
//!   buffer it already has: what a zero-copy handoff pays at least.
//! - `<size>-6-bare-futex-notify-touch (limit)`: the same handoff with a bare
//!   shared counter as the notification (the consumer spins briefly, then
//!   sleeps on it as a futex; the producer wakes it only if it sleeps): the
//!   floor for any zero-copy handoff between processes.
//! - `<size>-1-memcpy-once`: one warm-to-warm copy: what any copying transport
//!   pays at least.
//! - `<size>-2-shmkit-array-zero-copy`: the buffer lives in a shared
//!   `Array<u8>` mapped by both; the producer sends its length through a
//!   shmkit `Queue<u64>` (the notification), the consumer reads in place.
//! - `<size>-3-unix-pipe`, `<size>-4-unix-socket`: the bytes written into and
//!   read out of the kernel (two copies).
//! - `<size>-5-ipc-channel-shared-memory`: ipc-channel's `IpcSharedMemory`
//!   (copies the bytes into a fresh memfd, sends the descriptor; the consumer
//!   maps it).

#[path = "common/mod.rs"]
mod common;

use common::{fork_pair, futex_wait, futex_wake, read_exact, shared, write_all};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use shmkit::Array;
use shmkit::queue::{self};
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[repr(C)]
struct Notify {
    count: AtomicU32,
    sleeping: AtomicU32,
}

/// `iters` notifications through a bare shared counter; the consumer
/// touches `bytes` after each.
fn bare_notify(n: &Notify, iters: u64, bytes: &[u8]) -> Duration {
    n.count.store(0, Ordering::SeqCst);
    n.sleeping.store(0, Ordering::SeqCst);
    fork_pair(
        || {
            for i in 0..iters as u32 {
                n.count.store(i + 1, Ordering::SeqCst);
                if n.sleeping.load(Ordering::SeqCst) != 0 {
                    futex_wake(&n.count);
                }
            }
        },
        || {
            for i in 0..iters as u32 {
                let mut spins = 0;
                loop {
                    let seen = n.count.load(Ordering::SeqCst);
                    if seen > i {
                        break;
                    }
                    if spins < 2000 {
                        spins += 1;
                        std::hint::spin_loop();
                        continue;
                    }
                    n.sleeping.store(1, Ordering::SeqCst);
                    if n.count.load(Ordering::SeqCst) == seen {
                        futex_wait(&n.count, seen);
                    }
                    n.sleeping.store(0, Ordering::SeqCst);
                }
                black_box(touch(bytes));
            }
        },
    )
}

const PAGE: usize = 4096;

fn touch(bytes: &[u8]) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i < bytes.len() {
        // SAFETY: i < len.
        s = s.wrapping_add(u64::from(unsafe {
            std::ptr::read_volatile(bytes.as_ptr().add(i))
        }));
        i += PAGE;
    }
    s
}

fn label(size: usize) -> String {
    match size {
        s if s >= 1 << 30 => format!("{}GiB", s >> 30),
        s if s >= 1 << 20 => format!("{}MiB", s >> 20),
        s => format!("{}KiB", s >> 10),
    }
}

/// Streams `iters` buffers of `size` bytes over a descriptor pair.
fn fd_handoff(iters: u64, size: usize, (r, w): (i32, i32)) -> Duration {
    let msg = vec![7u8; size];
    let mut buf = vec![0u8; size];
    let d = fork_pair(
        || (0..iters).for_each(|_| write_all(w, &msg)),
        || {
            (0..iters).for_each(|_| {
                read_exact(r, &mut buf);
                black_box(touch(&buf));
            })
        },
    );
    common::close(r);
    common::close(w);
    d
}

fn handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let sizes: Vec<usize> = match std::env::var("HANDOFF_MAX_MIB") {
        // A shorter run (e.g. while developing): sizes up to this many MiB.
        Ok(m) => {
            let max = m.parse::<usize>().unwrap_or(1024) << 20;
            [4 << 10, 1 << 20, 64 << 20, 1 << 30]
                .into_iter()
                .filter(|&s| s <= max)
                .collect()
        }
        Err(_) => vec![4 << 10, 1 << 20, 64 << 20, 1 << 30],
    };
    for (k, size) in sizes.into_iter().enumerate() {
        let id = |n: u32, what: &str| format!("{k}{n}-{}-{what}", label(size));
        g.throughput(Throughput::Bytes(size as u64));
        let src = vec![7u8; size];
        let (asrc, adst) = (common::page_aligned(size, 7), common::page_aligned(size, 0));
        g.bench_function(id(0, "touch-pages (limit)"), |b| {
            b.iter(|| black_box(touch(black_box(&src))))
        });
        g.bench_function(id(1, "memcpy-once"), |b| {
            b.iter(|| {
                adst.copy_from_slice(black_box(&*asrc));
                black_box(touch(adst))
            })
        });

        let data = Array::<u8>::builder().lock(false).create(size).unwrap();
        // SAFETY: nobody else uses the array yet.
        unsafe { data.as_mut_slice_unchecked() }.fill(7);
        let (tx, rx) = queue::bounded::<u64>(4).unwrap();
        g.bench_function(id(2, "shmkit-array-zero-copy"), |b| {
            b.iter_custom(|iters| {
                fork_pair(
                    || (0..iters).for_each(|_| tx.send(size as u64).unwrap()),
                    || {
                        for _ in 0..iters {
                            let n = rx.recv().unwrap() as usize;
                            // SAFETY: the producer does not write the array
                            // during the bench; any bytes are valid u8s.
                            let bytes = unsafe { data.as_slice_unchecked() };
                            black_box(touch(&bytes[..n]));
                        }
                    },
                )
            })
        });
        let notify: &Notify = shared();
        g.bench_function(id(6, "bare-futex-notify-touch (limit)"), |b| {
            // SAFETY: as above.
            let bytes = unsafe { data.as_slice_unchecked() };
            b.iter_custom(|iters| bare_notify(notify, iters, bytes))
        });
        drop((data, tx, rx));

        g.bench_function(id(3, "unix-pipe"), |b| {
            b.iter_custom(|iters| fd_handoff(iters, size, common::pipe()))
        });
        g.bench_function(id(4, "unix-socket"), |b| {
            b.iter_custom(|iters| fd_handoff(iters, size, common::socketpair()))
        });
        g.bench_function(id(5, "ipc-channel-shared-memory"), |b| {
            b.iter_custom(|iters| {
                let (itx, irx) =
                    ipc_channel::ipc::channel::<ipc_channel::ipc::IpcSharedMemory>().unwrap();
                fork_pair(
                    || {
                        for _ in 0..iters {
                            let shm = ipc_channel::ipc::IpcSharedMemory::from_bytes(&src);
                            itx.send(shm).unwrap();
                        }
                    },
                    || {
                        for _ in 0..iters {
                            let shm = irx.recv().unwrap();
                            black_box(touch(&shm));
                        }
                    },
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, handoff);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}

//! Handing a large buffer (4 KiB to 1 GiB) from one process to another, in
//! ONE group (`handoff`), so every ratio comes from the same run.
//!
//! What is measured, per handoff: the producer writes one byte of every 4 KiB
//! page of its buffer (fresh data, cache lines dirty on its CPU) and hands
//! the buffer over; the consumer reads one byte of every page (enough to pay
//! every copy, page fault and cache-line transfer a transport causes,
//! without timing a computation over the data). Producers may run a few
//! handoffs ahead. Every producer has its pages mapped before the clock
//! starts, as a long-lived process would (a freshly forked one would fault
//! on every page of the shared mapping: 262,144 faults per sample at 1 GiB).
//!
//! - `<size>-0-touch-pages`: one process reads one byte per page of the shared
//!   array it already has (no notification, nothing dirty elsewhere).
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
//!   (`from_bytes` copies the bytes into a fresh memfd, sends the descriptor;
//!   the consumer maps it). Its shared memory is immutable once made, so new
//!   data needs a new one: this is how ipc-channel hands over fresh buffers.
//! - `<size>-7-shared-mmap-unix-pipe-notify`: the do-it-yourself zero-copy
//!   alternative: the same shared mapping, an 8-byte write on a Unix pipe
//!   per handoff.

#[path = "common/mod.rs"]
mod common;

use common::{
    fork_pair, fork_pair_prepared, futex_wait, futex_wake, read_exact, shared, write_all,
};
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

/// Writes one byte of every page: fresh data.
fn dirty(bytes: &mut [u8], v: u8) {
    let mut i = 0;
    while i < bytes.len() {
        // SAFETY: i < len.
        unsafe { std::ptr::write_volatile(bytes.as_mut_ptr().add(i), v) };
        i += PAGE;
    }
}

/// The shared array's bytes for the producer (writes) and the consumer
/// (reads): plain bytes, any value valid; a producer running ahead may
/// rewrite a page the consumer is reading, as in a real pipeline without
/// acknowledgements.
#[allow(clippy::mut_from_ref)] // as Array::as_mut_slice_unchecked: bytes shared with another process
fn bytes_of(data: &Array<u8>) -> &mut [u8] {
    // SAFETY: u8 is Pod; concurrent writes only change values (volatile
    // accesses in dirty/touch).
    unsafe { data.as_mut_slice_unchecked() }
}

/// `iters` notifications through a bare shared counter; the producer
/// dirties the array before each, the consumer touches it after each.
fn bare_notify(n: &Notify, iters: u64, data: &Array<u8>) -> Duration {
    n.count.store(0, Ordering::SeqCst);
    n.sleeping.store(0, Ordering::SeqCst);
    fork_pair_prepared(
        || dirty(bytes_of(data), 0),
        || {
            for i in 0..iters as u32 {
                dirty(bytes_of(data), i as u8);
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
                black_box(touch(bytes_of(data)));
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

use common::size_label as label;

/// Streams `iters` buffers of `size` bytes over a descriptor pair.
fn fd_handoff(iters: u64, size: usize, (r, w): (i32, i32)) -> Duration {
    let mut msg = vec![7u8; size];
    let mut buf = vec![0u8; size];
    let d = fork_pair(
        || {
            (0..iters).for_each(|i| {
                dirty(&mut msg, i as u8);
                write_all(w, &msg)
            })
        },
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
        let data = Array::<u8>::builder().unlocked().create(size).unwrap();
        bytes_of(&data).fill(7);
        g.bench_function(id(0, "touch-pages"), |b| {
            b.iter(|| black_box(touch(bytes_of(&data))))
        });
        let (asrc, adst) = (common::page_aligned(size, 7), common::page_aligned(size, 0));
        g.bench_function(id(1, "memcpy-once"), |b| {
            b.iter(|| {
                adst.copy_from_slice(black_box(&*asrc));
                black_box(touch(adst))
            })
        });
        common::free_aligned(asrc);
        common::free_aligned(adst);

        let (tx, rx) = queue::bounded::<u64>(4).unwrap();
        g.bench_function(id(2, "shmkit-array-zero-copy"), |b| {
            b.iter_custom(|iters| {
                fork_pair_prepared(
                    || dirty(bytes_of(&data), 0),
                    || {
                        for i in 0..iters {
                            dirty(bytes_of(&data), i as u8);
                            tx.send(size as u64).unwrap();
                        }
                    },
                    || {
                        for _ in 0..iters {
                            let n = rx.recv().unwrap() as usize;
                            black_box(touch(&bytes_of(&data)[..n]));
                        }
                    },
                )
            })
        });
        drop((tx, rx));
        let notify: &Notify = shared();
        g.bench_function(id(6, "bare-futex-notify-touch (limit)"), |b| {
            b.iter_custom(|iters| bare_notify(notify, iters, &data))
        });
        common::unshare(notify);
        g.bench_function(id(7, "shared-mmap-unix-pipe-notify"), |b| {
            b.iter_custom(|iters| {
                let (r, w) = common::pipe();
                let d = fork_pair_prepared(
                    || dirty(bytes_of(&data), 0),
                    || {
                        for i in 0..iters {
                            dirty(bytes_of(&data), i as u8);
                            write_all(w, &(size as u64).to_ne_bytes());
                        }
                    },
                    || {
                        let mut n = [0u8; 8];
                        for _ in 0..iters {
                            read_exact(r, &mut n);
                            let n = u64::from_ne_bytes(n) as usize;
                            black_box(touch(&bytes_of(&data)[..n]));
                        }
                    },
                );
                common::close(r);
                common::close(w);
                d
            })
        });
        drop(data);

        g.bench_function(id(3, "unix-pipe"), |b| {
            b.iter_custom(|iters| fd_handoff(iters, size, common::pipe()))
        });
        g.bench_function(id(4, "unix-socket"), |b| {
            b.iter_custom(|iters| fd_handoff(iters, size, common::socketpair()))
        });
        let mut src = vec![7u8; size];
        g.bench_function(id(5, "ipc-channel-shared-memory"), |b| {
            b.iter_custom(|iters| {
                let (itx, irx) =
                    ipc_channel::ipc::channel::<ipc_channel::ipc::IpcSharedMemory>().unwrap();
                fork_pair(
                    || {
                        for i in 0..iters {
                            dirty(&mut src, i as u8);
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

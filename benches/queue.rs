//! The shared-memory Queue across processes beside what a user would pick
//! instead, in ONE group (`queue`), so every ratio comes from the same run.
//! Ids sort by use:
//!
//! - `1x-u64-spsc-*`: one producer, one consumer, 8-byte messages:
//!   crossbeam-channel (bounded 1024) between threads, shmkit between
//!   processes, a Unix pipe and a Unix stream socket with one 8-byte write per
//!   message between processes, and ipc-channel between processes.
//! - `15-u64-spsc-iceoryx2`, `3i`/`4i`/`6i`, `5i-ping-pong-iceoryx2-spin`:
//!   iceoryx2's publish-subscribe between processes (benches/common/ice.rs),
//!   the strongest shared-memory peer, beside each shmkit row.
//! - `6x-4MiB-*`: 4 MiB messages: shmkit's queue, iceoryx2 and one memcpy.
//! - `19-u64-spsc-bare-shared-ring (limit)`: a bare single-producer ring of
//!   u64 in shared memory between two spinning processes: the limit.
//! - `16`/`18-u64-spsc-*-runs-of-64`: the same u64 stream in runs of 64
//!   items: shmkit's `send_many`/`recv_many` against the bare ring moving
//!   each cursor once per run (the batched limit).
//! - `2x-u64-mpmc-2x2-*`: two producers, two consumers.
//! - `37`/`38-1KiB-*-recv-vec-*`: 1 KiB messages received as a copy,
//!   blocking against awaited on tokio (feature `async`); `3a`: tokio's
//!   mpsc between two tasks of one process, the in-process async reference.
//! - `3x-1KiB-*`, `4x-64KiB-*`: sized messages (crossbeam sends a `Vec`, which
//!   moves a pointer: the thread baseline does not copy), SPSC, then MPMC
//!   2x2 (`x5`, `x6`), and one `memcpy` of the message (`x9`, the limit of any
//!   transport that writes the message once).
//! - group `queue-short-ring`: 64 KiB messages through a queue of 2 slots
//!   beside a bare 2-slot ring (the limit): every message waits for the
//!   peer's copy.
//! - `5x-ping-pong-*`: one round trip (`57`: awaiting the reply with
//!   `recv_async` on tokio instead of blocking in `recv`; `58`: tokio's mpsc
//!   between two tasks of one process); the bare limits (a cache line bounced
//!   by spinning; a futex pair) beside shmkit spinning (`try_recv` loop) and
//!   blocking (`recv`), and a Unix pipe.

#[path = "common/mod.rs"]
mod common;
#[path = "common/ice.rs"]
mod ice;

use common::{fd_ping_pong, fd_stream, fork_pair, shared};
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, measurement::WallTime};
use shmkit::queue::{self, Bytes, Queue};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A bare Lamport ring of u64 in shared memory: one producer, one consumer,
/// both spinning. No claims, no lengths, no recovery: the limit.
#[repr(C)]
struct BareRing {
    head: Line,
    tail: Line,
    slots: [AtomicU64; 1024],
}

#[repr(C, align(128))]
struct Line(AtomicU64);

fn bare_spsc(ring: &BareRing, iters: u64) -> Duration {
    ring.head.0.store(0, Ordering::SeqCst);
    ring.tail.0.store(0, Ordering::SeqCst);
    let n = ring.slots.len() as u64;
    fork_pair(
        || {
            for i in 0..iters {
                while i - ring.tail.0.load(Ordering::Acquire) >= n {
                    std::hint::spin_loop();
                }
                ring.slots[(i % n) as usize].store(i, Ordering::Relaxed);
                ring.head.0.store(i + 1, Ordering::Release);
            }
        },
        || {
            for i in 0..iters {
                while ring.head.0.load(Ordering::Acquire) == i {
                    std::hint::spin_loop();
                }
                black_box(ring.slots[(i % n) as usize].load(Ordering::Relaxed));
                ring.tail.0.store(i + 1, Ordering::Release);
            }
        },
    )
}

/// Items per run in the batched rows (16, 18).
const RUN: u64 = 64;

/// [`bare_spsc`] in runs of [`RUN`]: the producer writes a run and then
/// moves its cursor once; the consumer takes everything published (up to a
/// run) and then moves its cursor once. The limit of any batched ring.
fn bare_spsc_runs(ring: &BareRing, iters: u64) -> Duration {
    ring.head.0.store(0, Ordering::SeqCst);
    ring.tail.0.store(0, Ordering::SeqCst);
    let n = ring.slots.len() as u64;
    fork_pair(
        || {
            let mut i = 0;
            while i < iters {
                let end = (i + RUN).min(iters);
                while end - ring.tail.0.load(Ordering::Acquire) > n {
                    std::hint::spin_loop();
                }
                for j in i..end {
                    ring.slots[(j % n) as usize].store(j, Ordering::Relaxed);
                }
                ring.head.0.store(end, Ordering::Release);
                i = end;
            }
        },
        || {
            let mut i = 0;
            while i < iters {
                let head = loop {
                    let h = ring.head.0.load(Ordering::Acquire);
                    if h != i {
                        break h.min(i + RUN);
                    }
                    std::hint::spin_loop();
                };
                for j in i..head {
                    black_box(ring.slots[(j % n) as usize].load(Ordering::Relaxed));
                }
                ring.tail.0.store(head, Ordering::Release);
                i = head;
            }
        },
    )
}

/// shmkit's queue in runs of [`RUN`]: `send_many` and `recv_many`.
fn shmkit_spsc_runs(tx: &queue::Sender<u64>, rx: &queue::Receiver<u64>, iters: u64) -> Duration {
    fork_pair(
        || {
            let items: Vec<u64> = (0..RUN).collect();
            let mut i = 0;
            while i < iters {
                let len = RUN.min(iters - i);
                tx.send_many(&items[..len as usize]).unwrap();
                i += len;
            }
        },
        || {
            let mut buf = [0u64; RUN as usize];
            let mut i = 0;
            while i < iters {
                let want = RUN.min(iters - i) as usize;
                i += rx.recv_many(&mut buf[..want]).unwrap() as u64;
                black_box(&buf);
            }
        },
    )
}

/// Two producer threads and two consumer threads over one crossbeam channel.
fn crossbeam_mpmc<T: Send>(iters: u64, make: impl Fn() -> T + Sync) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<T>(1024);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let tx = tx.clone();
            let make = &make;
            s.spawn(move || {
                for _ in 0..iters / 2 {
                    tx.send(make()).unwrap();
                }
            });
        }
        drop(tx);
        let rx2 = rx.clone();
        s.spawn(move || while rx2.recv().is_ok() {});
        while rx.recv().is_ok() {}
    });
    t0.elapsed()
}

/// Two producer processes and two consumer processes on one shmkit queue;
/// each producer ends with one empty message, each consumer stops at its
/// first.
fn shmkit_mpmc<T>(
    iters: u64,
    senders: &[T; 2],
    receivers: &mut [queue::Receiver<Bytes>; 2],
    send: impl Fn(&T, bool),
) -> Duration {
    let produce = |k: usize| {
        for _ in 0..iters / 2 {
            send(&senders[k], false);
        }
        send(&senders[k], true);
    };
    let consume = |rx: &mut queue::Receiver<Bytes>| while !rx.recv_bytes().unwrap().is_empty() {};
    let [r0, r1] = receivers;
    fork_pair(
        || {
            fork_pair(|| produce(0), || produce(1));
        },
        || {
            fork_pair(|| consume(r0), || consume(r1));
        },
    )
}

fn crossbeam_spsc<T: Send + 'static>(iters: u64, make: impl Fn() -> T + Sync) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<T>(1024);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..iters {
                tx.send(make()).unwrap();
            }
        });
        for _ in 0..iters {
            black_box(rx.recv().unwrap());
        }
    });
    t0.elapsed()
}

/// ipc-channel between a forked child (sending) and this process.
fn ipc_stream<T>(iters: u64, make: impl Fn() -> T) -> Duration
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de>,
{
    let (tx, rx) = ipc_channel::ipc::channel::<T>().unwrap();
    fork_pair(
        || {
            for _ in 0..iters {
                tx.send(make()).unwrap();
            }
        },
        || {
            for _ in 0..iters {
                black_box(rx.recv().unwrap());
            }
        },
    )
}

fn sized(g: &mut BenchmarkGroup<'_, WallTime>, prefix: &str, size: usize) {
    g.throughput(Throughput::Bytes(size as u64));
    g.bench_function(
        format!("{prefix}0-{}-crossbeam-threads", label(size)),
        |b| b.iter_custom(|iters| crossbeam_spsc(iters, || vec![7u8; size])),
    );
    let q = Queue::<Bytes>::builder()
        .capacity(64)
        .max_message(size)
        .create()
        .unwrap();
    let (tx, mut rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let msg = vec![7u8; size];
    g.bench_function(format!("{prefix}1-{}-shmkit-queue", label(size)), |b| {
        b.iter_custom(|iters| bytes_stream(&tx, &mut rx, &msg, iters))
    });
    g.bench_function(format!("{prefix}2-{}-unix-pipe", label(size)), |b| {
        b.iter_custom(|iters| fd_stream(iters, size, common::pipe()))
    });
    g.bench_function(format!("{prefix}3-{}-unix-socket", label(size)), |b| {
        b.iter_custom(|iters| fd_stream(iters, size, common::socketpair()))
    });
    g.bench_function(format!("{prefix}4-{}-ipc-channel", label(size)), |b| {
        b.iter_custom(|iters| ipc_stream(iters, || serde_bytes::ByteBuf::from(vec![7u8; size])))
    });
    g.bench_function(format!("{prefix}i-{}-iceoryx2", label(size)), |b| {
        b.iter_custom(|iters| ice::bytes_stream(iters, &msg, 64))
    });
    g.bench_function(
        format!("{prefix}5-{}-mpmc-2x2-crossbeam-threads", label(size)),
        |b| b.iter_custom(|iters| crossbeam_mpmc(iters, || vec![7u8; size])),
    );
    let q = Queue::<Bytes>::builder()
        .capacity(64)
        .max_message(size)
        .create()
        .unwrap();
    let senders = [q.sender().unwrap(), q.sender().unwrap()];
    let mut receivers = [q.receiver().unwrap(), q.receiver().unwrap()];
    g.bench_function(
        format!("{prefix}6-{}-mpmc-2x2-shmkit-queue", label(size)),
        |b| {
            b.iter_custom(|iters| {
                shmkit_mpmc(iters, &senders, &mut receivers, |tx, last| {
                    tx.send_bytes(if last { &[] } else { &msg }).unwrap()
                })
            })
        },
    );
    let (src, dst) = (common::page_aligned(size, 7), common::page_aligned(size, 0));
    g.bench_function(format!("{prefix}9-{}-memcpy (limit)", label(size)), |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&*src));
            black_box(&*dst);
        })
    });
}

use common::size_label as label;

/// `iters` byte messages from a forked child (one copy each into its slot)
/// to this process, which reads each in place, one byte per cache line.
fn bytes_stream(
    tx: &queue::Sender<Bytes>,
    rx: &mut queue::Receiver<Bytes>,
    msg: &[u8],
    iters: u64,
) -> Duration {
    fork_pair(
        || {
            for _ in 0..iters {
                tx.send_bytes(msg).unwrap();
            }
        },
        || {
            for _ in 0..iters {
                let m = rx.recv_bytes().unwrap();
                black_box(m.iter().step_by(64).fold(0u8, |a, b| a ^ b));
            }
        },
    )
}

/// 4 MiB messages, one producer process, this process reading each in
/// place (one byte per cache line): shmkit's queue (4 slots, and the
/// recipe for large messages: 2) beside iceoryx2 (a buffer of 4, and of 2)
/// and one memcpy of the message (the limit).
fn huge(g: &mut BenchmarkGroup<'_, WallTime>) {
    const SIZE: usize = 4 << 20;
    g.throughput(Throughput::Bytes(SIZE as u64));
    let msg: &[u8] = common::page_aligned(SIZE, 7);
    for (id, capacity) in [
        ("61-4MiB-shmkit-queue", 4),
        ("62-4MiB-shmkit-queue-2-slots", 2),
    ] {
        let q = Queue::<Bytes>::builder()
            .capacity(capacity)
            .max_message(SIZE)
            .create()
            .unwrap();
        let (tx, mut rx) = (q.sender().unwrap(), q.receiver().unwrap());
        g.bench_function(id, |b| {
            b.iter_custom(|iters| bytes_stream(&tx, &mut rx, msg, iters))
        });
    }
    g.bench_function("6i-4MiB-iceoryx2", |b| {
        b.iter_custom(|iters| ice::bytes_stream(iters, msg, 4))
    });
    g.bench_function("6j-4MiB-iceoryx2-buffer-2", |b| {
        b.iter_custom(|iters| ice::bytes_stream(iters, msg, 2))
    });
    let dst = common::page_aligned(SIZE, 0);
    g.bench_function("69-4MiB-memcpy (limit)", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(msg));
            black_box(&*dst);
        })
    });
}

/// 1 KiB messages, one producer process, this process receiving each as a
/// copy (`Vec<u8>`): blocking `recv_vec` (37) against `recv_vec_async`
/// awaited on tokio's current-thread runtime (38), in the same group.
fn async_vs_blocking_1kib(g: &mut BenchmarkGroup<'_, WallTime>) {
    const SIZE: usize = 1024;
    g.throughput(Throughput::Bytes(SIZE as u64));
    let q = Queue::<Bytes>::builder()
        .capacity(64)
        .max_message(SIZE)
        .create()
        .unwrap();
    let (tx, mut rx) = (q.sender().unwrap(), q.receiver().unwrap());
    let msg = vec![7u8; SIZE];
    let produce = |iters: u64| {
        for _ in 0..iters {
            tx.send_bytes(&msg).unwrap();
        }
    };
    g.bench_function("37-1KiB-shmkit-queue-recv-vec-blocking", |b| {
        b.iter_custom(|iters| {
            fork_pair(
                || produce(iters),
                || {
                    for _ in 0..iters {
                        black_box(rx.recv_vec().unwrap());
                    }
                },
            )
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    g.bench_function("38-1KiB-shmkit-queue-recv-vec-async", |b| {
        b.iter_custom(|iters| {
            fork_pair(
                || produce(iters),
                || {
                    rt.block_on(async {
                        for _ in 0..iters {
                            black_box(rx.recv_vec_async().await.unwrap());
                        }
                    })
                },
            )
        })
    });
    // The in-process async reference: tokio's mpsc between two tasks on a
    // 2-thread runtime, a fresh 1 KiB `Vec` per message (as users send).
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    g.bench_function("3a-1KiB-tokio-mpsc-tasks", |b| {
        b.iter_custom(|iters| {
            mt.block_on(async {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
                let start = Instant::now();
                let producer = tokio::spawn(async move {
                    for _ in 0..iters {
                        tx.send(vec![7u8; SIZE]).await.unwrap();
                    }
                });
                for _ in 0..iters {
                    black_box(rx.recv().await.unwrap());
                }
                producer.await.unwrap();
                start.elapsed()
            })
        })
    });
}

fn queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    // 1x: u64 SPSC.
    g.throughput(Throughput::Elements(1));
    g.bench_function("10-u64-spsc-crossbeam-threads", |b| {
        b.iter_custom(|iters| crossbeam_spsc(iters, || 1u64))
    });
    let (tx, rx) = queue::bounded::<u64>(1024).unwrap();
    g.bench_function("11-u64-spsc-shmkit-queue", |b| {
        b.iter_custom(|iters| {
            fork_pair(
                || {
                    for i in 0..iters {
                        tx.send(i).unwrap();
                    }
                },
                || {
                    for _ in 0..iters {
                        black_box(rx.recv().unwrap());
                    }
                },
            )
        })
    });
    g.bench_function("12-u64-spsc-unix-pipe-8B-writes", |b| {
        b.iter_custom(|iters| fd_stream(iters, 8, common::pipe()))
    });
    g.bench_function("13-u64-spsc-unix-socket-8B-writes", |b| {
        b.iter_custom(|iters| fd_stream(iters, 8, common::socketpair()))
    });
    g.bench_function("14-u64-spsc-ipc-channel", |b| {
        b.iter_custom(|iters| ipc_stream(iters, || 1u64))
    });

    g.bench_function("15-u64-spsc-iceoryx2", |b| {
        b.iter_custom(|iters| ice::u64_stream(iters, 1024))
    });

    let ring: &BareRing = shared();
    g.bench_function("19-u64-spsc-bare-shared-ring (limit)", |b| {
        b.iter_custom(|iters| bare_spsc(ring, iters))
    });
    // In runs of 64 items: shmkit's batch API against the bare ring moving
    // its cursors once per run.
    g.bench_function("16-u64-spsc-shmkit-queue-runs-of-64", |b| {
        b.iter_custom(|iters| shmkit_spsc_runs(&tx, &rx, iters))
    });
    g.bench_function("18-u64-spsc-bare-shared-ring-runs-of-64 (limit)", |b| {
        b.iter_custom(|iters| bare_spsc_runs(ring, iters))
    });

    // 2x: u64 MPMC, two producers and two consumers.
    g.bench_function("20-u64-mpmc-2x2-crossbeam-threads", |b| {
        b.iter_custom(|iters| crossbeam_mpmc(iters, || 1u64))
    });
    let q = Queue::<u64>::builder().capacity(1024).create().unwrap();
    let senders = [q.sender().unwrap(), q.sender().unwrap()];
    let receivers = [q.receiver().unwrap(), q.receiver().unwrap()];
    g.bench_function("21-u64-mpmc-2x2-shmkit-queue", |b| {
        b.iter_custom(|iters| {
            // Two producer processes and two consumer processes (this one
            // and a forked one), each with its own handle; each producer ends
            // with one sentinel, each consumer stops at its first.
            let produce = |k: usize| {
                for i in 0..iters / 2 {
                    senders[k].send(i).unwrap();
                }
                senders[k].send(u64::MAX).unwrap();
            };
            let consume = |k: usize| while receivers[k].recv().unwrap() != u64::MAX {};
            fork_pair(
                || {
                    fork_pair(|| produce(0), || produce(1));
                },
                || {
                    fork_pair(|| consume(0), || consume(1));
                },
            )
        })
    });

    // 3x, 4x: sized messages.
    sized(&mut g, "3", 1024);
    async_vs_blocking_1kib(&mut g);
    sized(&mut g, "4", 64 * 1024);

    // 6x: 4 MiB messages, shmkit's queue beside iceoryx2 and one memcpy.
    huge(&mut g);

    // 5x: ping-pong round trips.
    g.throughput(Throughput::Elements(1));
    g.bench_function("50-ping-pong-bare-cache-line-spin", |b| {
        let word: &AtomicU64 = shared();
        b.iter_custom(|iters| {
            word.store(0, Ordering::SeqCst);
            fork_pair(
                || {
                    for i in 0..iters {
                        while word.load(Ordering::Acquire) != 2 * i + 1 {
                            std::hint::spin_loop();
                        }
                        word.store(2 * i + 2, Ordering::Release);
                    }
                },
                || {
                    for i in 0..iters {
                        word.store(2 * i + 1, Ordering::Release);
                        while word.load(Ordering::Acquire) != 2 * i + 2 {
                            std::hint::spin_loop();
                        }
                    }
                },
            )
        })
    });
    let (atx, arx) = queue::bounded::<u64>(2).unwrap();
    let (btx, brx) = queue::bounded::<u64>(2).unwrap();
    g.bench_function("51-ping-pong-shmkit-queue-spin", |b| {
        b.iter_custom(|iters| {
            let spin_recv = |rx: &queue::Receiver<u64>| loop {
                if let Ok(v) = rx.try_recv() {
                    return v;
                }
                std::hint::spin_loop();
            };
            fork_pair(
                || {
                    for _ in 0..iters {
                        let v = spin_recv(&arx);
                        btx.try_send(v + 1).unwrap();
                    }
                },
                || {
                    for i in 0..iters {
                        atx.try_send(i).unwrap();
                        black_box(spin_recv(&brx));
                    }
                },
            )
        })
    });
    g.bench_function("5i-ping-pong-iceoryx2-spin", |b| {
        b.iter_custom(ice::ping_pong)
    });
    g.bench_function("56-ping-pong-crossbeam-threads-spin", |b| {
        b.iter_custom(|iters| {
            let (atx, arx) = crossbeam_channel::bounded::<u64>(1);
            let (btx, brx) = crossbeam_channel::bounded::<u64>(1);
            let spin = |rx: &crossbeam_channel::Receiver<u64>| loop {
                if let Ok(v) = rx.try_recv() {
                    return v;
                }
                std::hint::spin_loop();
            };
            let t0 = Instant::now();
            std::thread::scope(|s| {
                s.spawn(|| {
                    for _ in 0..iters {
                        let v = spin(&arx);
                        btx.try_send(v + 1).unwrap();
                    }
                });
                for i in 0..iters {
                    atx.try_send(i).unwrap();
                    black_box(spin(&brx));
                }
            });
            t0.elapsed()
        })
    });
    g.bench_function("52-ping-pong-bare-futex", |b| {
        b.iter_custom(common::futex_ping_pong)
    });
    g.bench_function("53-ping-pong-shmkit-queue-blocking", |b| {
        b.iter_custom(|iters| {
            fork_pair(
                || {
                    for _ in 0..iters {
                        let v = arx.recv().unwrap();
                        btx.send(v + 1).unwrap();
                    }
                },
                || {
                    for i in 0..iters {
                        atx.send(i).unwrap();
                        black_box(brx.recv().unwrap());
                    }
                },
            )
        })
    });
    // The same round trip with this side awaiting the reply on tokio's
    // current-thread runtime (feature `async`): the reply wakes a shmkit
    // waiter thread, which wakes the task. Compare with 53.
    let (ctx, crx) = queue::bounded::<u64>(2).unwrap();
    let (dtx, mut drx) = queue::bounded::<u64>(2).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    g.bench_function("57-ping-pong-shmkit-queue-async", |b| {
        b.iter_custom(|iters| {
            fork_pair(
                || {
                    for _ in 0..iters {
                        let v = crx.recv().unwrap();
                        dtx.send(v + 1).unwrap();
                    }
                },
                || {
                    rt.block_on(async {
                        for i in 0..iters {
                            ctx.send(i).unwrap();
                            black_box(drx.recv_async().await.unwrap());
                        }
                    })
                },
            )
        })
    });
    // The in-process async reference for 57: tokio's mpsc between two tasks
    // on a 2-thread runtime.
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    g.bench_function("58-ping-pong-tokio-mpsc-tasks", |b| {
        b.iter_custom(|iters| {
            mt.block_on(async {
                let (atx, mut arx) = tokio::sync::mpsc::channel::<u64>(2);
                let (btx, mut brx) = tokio::sync::mpsc::channel::<u64>(2);
                let echo = tokio::spawn(async move {
                    while let Some(v) = arx.recv().await {
                        btx.send(v + 1).await.unwrap();
                    }
                });
                let start = Instant::now();
                for i in 0..iters {
                    atx.send(i).await.unwrap();
                    black_box(brx.recv().await.unwrap());
                }
                let took = start.elapsed();
                drop(atx);
                echo.await.unwrap();
                took
            })
        })
    });
    g.bench_function("54-ping-pong-unix-pipe", |b| {
        b.iter_custom(|iters| fd_ping_pong(iters, common::pipe))
    });
    g.bench_function("55-ping-pong-ipc-channel", |b| {
        b.iter_custom(|iters| {
            let (atx, arx) = ipc_channel::ipc::channel::<u64>().unwrap();
            let (btx, brx) = ipc_channel::ipc::channel::<u64>().unwrap();
            fork_pair(
                || {
                    for _ in 0..iters {
                        let v = arx.recv().unwrap();
                        btx.send(v + 1).unwrap();
                    }
                },
                || {
                    for i in 0..iters {
                        atx.send(i).unwrap();
                        black_box(brx.recv().unwrap());
                    }
                },
            )
        })
    });
    g.finish();
}

/// The message size of the short-ring group.
const SHORT_MSG: usize = 64 * 1024;

/// A bare ring of two 64 KiB slots in shared memory: one producer copies
/// each message in, one consumer reads it in place, both spinning on their
/// cursors. The limit of a 2-slot queue of 64 KiB messages.
#[repr(C)]
struct ShortRing {
    head: Line,
    tail: Line,
    slots: [Page<std::cell::UnsafeCell<[u8; SHORT_MSG]>>; 2],
}

/// Page-aligned: glibc's `memcpy` between buffers whose low address bits
/// differ ran ~15x slower here (DESIGN.md, "Machine limits").
#[repr(C, align(4096))]
struct Page<T>(T);

fn bare_short_ring(ring: &ShortRing, msg: &[u8], iters: u64) -> Duration {
    ring.head.0.store(0, Ordering::SeqCst);
    ring.tail.0.store(0, Ordering::SeqCst);
    fork_pair(
        || {
            for i in 0..iters {
                while i - ring.tail.0.load(Ordering::Acquire) >= 2 {
                    std::hint::spin_loop();
                }
                // SAFETY: the consumer is done with this slot (tail), and
                // nobody else writes it.
                unsafe { (*ring.slots[(i % 2) as usize].0.get()).copy_from_slice(msg) };
                ring.head.0.store(i + 1, Ordering::Release);
            }
        },
        || {
            for i in 0..iters {
                while ring.head.0.load(Ordering::Acquire) == i {
                    std::hint::spin_loop();
                }
                // SAFETY: the producer published this slot (head) and does
                // not write it again before our tail store.
                let m = unsafe { &*ring.slots[(i % 2) as usize].0.get() };
                black_box(m.iter().step_by(64).fold(0u8, |a, b| a ^ b));
                ring.tail.0.store(i + 1, Ordering::Release);
            }
        },
    )
}

/// A queue of two 64 KiB slots: the producer usually finds it full and the
/// consumer empty, so every message waits for the peer for about one 64 KiB
/// copy. The case the adaptive spin is for (`sync::adaptive`): a fixed short
/// spin slept on almost every message here.
fn short_ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue-short-ring");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(SHORT_MSG as u64));
    let msg: &[u8] = common::page_aligned(SHORT_MSG, 7);
    let ring: &ShortRing = shared();
    g.bench_function("0-64KiB-2-slot-bare-ring (limit)", |b| {
        b.iter_custom(|iters| bare_short_ring(ring, msg, iters))
    });
    let q = Queue::<Bytes>::builder()
        .capacity(2)
        .max_message(SHORT_MSG)
        .create()
        .unwrap();
    let (tx, mut rx) = (q.sender().unwrap(), q.receiver().unwrap());
    g.bench_function("1-64KiB-2-slot-shmkit-queue", |b| {
        b.iter_custom(|iters| bytes_stream(&tx, &mut rx, msg, iters))
    });
    g.finish();
}

/// A `try_` that fails, in one process: what a spinning receiver or sender
/// pays per empty or full look. shmkit's failure reads the coarse clock (for
/// the dead-peer look); the rows beside it are crossbeam's failure and the
/// cost of the precise clock it no longer reads.
fn failed_tries(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue-try");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    let (ctx, crx) = crossbeam_channel::bounded::<u64>(1);
    g.bench_function("0-try-recv-empty-crossbeam", |b| {
        b.iter(|| black_box(crx.try_recv().is_err()))
    });
    let (tx, rx) = queue::bounded::<u64>(1).unwrap();
    g.bench_function("1-try-recv-empty-shmkit", |b| {
        b.iter(|| black_box(rx.try_recv().is_err()))
    });
    ctx.send(1).unwrap();
    g.bench_function("2-try-send-full-crossbeam", |b| {
        b.iter(|| black_box(ctx.try_send(2).is_err()))
    });
    tx.send(1).unwrap();
    g.bench_function("3-try-send-full-shmkit", |b| {
        b.iter(|| black_box(tx.try_send(2).is_err()))
    });
    g.bench_function("9-instant-now (the precise clock)", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    g.finish();
}

criterion_group!(benches, queue, short_ring, failed_tries);

fn main() {
    ice::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
    ice::remove_own_files();
    if ice::dropped() > 0 {
        eprintln!(
            "iceoryx2 dropped {} samples in its rows (see benches/common/ice.rs)",
            ice::dropped()
        );
    }
}

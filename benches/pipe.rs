//! The duplex shared-memory Pipe between two processes beside a Unix pipe and
//! a Unix stream socket (and the bare futex round trip), in ONE group
//! (`pipe`):
//!
//! - `1x-u64-*`: one-way throughput of 8-byte messages.
//! - `2x-64KiB-*`: one-way throughput of 64 KiB messages.
//! - `3x-ping-pong-*`: one round trip.

#[path = "common/mod.rs"]
mod common;

use common::{fd_ping_pong, fd_stream, fork_pair};
use criterion::{Criterion, Throughput, criterion_group};
use shmkit::pipe::Connection;
use shmkit::queue::Rkyv;
use std::cell::RefCell;
use std::hint::black_box;
use std::time::Duration;

fn pipe(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let (a, b) = Connection::<Rkyv<u64>>::builder()
        .capacity(256)
        .max_message(64 * 1024)
        .create()
        .unwrap();
    let (a, b) = (RefCell::new(a), RefCell::new(b));
    for (id, size) in [("1", 8usize), ("2", 64 * 1024)] {
        let label = if size == 8 { "u64" } else { "64KiB" };
        g.throughput(Throughput::Bytes(size as u64));
        let msg = vec![7u8; size];
        g.bench_function(format!("{id}0-{label}-shmkit-pipe"), |bn| {
            bn.iter_custom(|iters| {
                fork_pair(
                    || (0..iters).for_each(|_| a.borrow().send_bytes(&msg).unwrap()),
                    || {
                        let b = b.borrow_mut();
                        (0..iters).for_each(|_| {
                            b.recv_with_bytes(|m| black_box(m.len())).unwrap();
                        })
                    },
                )
            })
        });
        g.bench_function(format!("{id}1-{label}-unix-pipe"), |bn| {
            bn.iter_custom(|iters| fd_stream(iters, size, common::pipe()))
        });
        g.bench_function(format!("{id}2-{label}-unix-socket"), |bn| {
            bn.iter_custom(|iters| fd_stream(iters, size, common::socketpair()))
        });
    }

    g.throughput(Throughput::Elements(1));
    g.bench_function("30-ping-pong-bare-futex", |bn| {
        bn.iter_custom(common::futex_ping_pong)
    });
    g.bench_function("31-ping-pong-shmkit-pipe", |bn| {
        bn.iter_custom(|iters| {
            fork_pair(
                || {
                    let b = b.borrow_mut();
                    for _ in 0..iters {
                        let v: u64 = b.recv().unwrap();
                        b.send(&(v + 1)).unwrap();
                    }
                },
                || {
                    let a = a.borrow_mut();
                    for i in 0..iters {
                        a.send(&i).unwrap();
                        black_box(a.recv().unwrap());
                    }
                },
            )
        })
    });
    g.bench_function("32-ping-pong-unix-pipe", |bn| {
        bn.iter_custom(|iters| fd_ping_pong(iters, common::pipe))
    });
    g.bench_function("33-ping-pong-unix-socket", |bn| {
        bn.iter_custom(|iters| fd_ping_pong(iters, common::socketpair))
    });
    g.finish();
}

criterion_group!(benches, pipe);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}

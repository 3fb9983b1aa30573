//! iceoryx2 (0.10) publish-subscribe between a forked child and this
//! process, the strongest shared-memory peer of shmkit's queue: u64 and
//! byte-slice streams and a spinning ping-pong.
//!
//! - Each call makes its own services (unique names) and ports; the child
//!   builds its node and ports before the clock starts and drops them after
//!   its timed work (iceoryx2 removes its files when they drop; the child
//!   `_exit`s without touching the parent's).
//! - Publishers use `RetryUntilDelivered` and services no safe overflow,
//!   so a full subscriber buffer should hold the publisher back. iceoryx2
//!   0.10 still dropped some samples here (up to ~0.3% of a 2 M stream,
//!   not every run): the receiver counts by sequence number and ends at the
//!   last one or, once the sender says it is done, at an empty buffer, so a
//!   drop can only make its row faster. [`dropped`] says how many.
//! - Both sides poll (`receive` in a loop): iceoryx2's publish-subscribe
//!   has no blocking receive (waiting needs an event service beside it).

use iceoryx2::port::backpressure_strategy::BackpressureStrategy;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Samples the streams of this process found missing (sequence gaps).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Samples iceoryx2 dropped in this process's streams so far.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "shmkit-bench-{}-{what}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn new_node() -> Node<ipc::Service> {
    // Its warnings print whole port structures (a dropped sample, a
    // subscriber gone): errors only.
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .create::<ipc::Service>()
        .expect("iceoryx2 node")
}

/// Control words shared with the child: released, the sender finished.
#[repr(C)]
struct Control {
    go: AtomicU32,
    ready: AtomicU32,
    sent: AtomicU32,
}

/// Forks a child that runs `child` once released, timing this side's
/// `parent` from the release to its return (the child's setup before and
/// teardown after are not timed).
fn pair<C: FnOnce(&Control)>(
    child_setup: impl FnOnce() -> C,
    parent: impl FnOnce(&Control),
) -> Duration {
    let c: &Control = crate::common::shared();
    c.go.store(0, Ordering::SeqCst);
    c.ready.store(0, Ordering::SeqCst);
    c.sent.store(0, Ordering::SeqCst);
    // SAFETY: no other thread of the bench runs here; the child uses only
    // what it builds itself and the shared control words, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let work = child_setup();
        c.ready.store(1, Ordering::Release);
        while c.go.load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
        work(c);
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(0) }
    }
    while c.ready.load(Ordering::Acquire) == 0 {
        std::thread::yield_now();
    }
    let t0 = Instant::now();
    c.go.store(1, Ordering::Release);
    parent(c);
    let elapsed = t0.elapsed();
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    crate::common::unshare(c);
    elapsed
}

/// `iters` u64 samples from a child publisher to a subscriber here, the
/// subscriber's buffer `buffer` deep (shmkit's queue row uses 1024 slots).
pub fn u64_stream(iters: u64, buffer: usize) -> Duration {
    let name = unique("u64");
    let node = new_node();
    let service = node
        .service_builder(&name.as_str().try_into().unwrap())
        .publish_subscribe::<u64>()
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(buffer)
        .create()
        .unwrap();
    let sub = service
        .subscriber_builder()
        .buffer_size(buffer)
        .create()
        .unwrap();
    pair(
        || {
            let node = new_node();
            let service = node
                .service_builder(&name.as_str().try_into().unwrap())
                .publish_subscribe::<u64>()
                .open()
                .unwrap();
            let publisher = service
                .publisher_builder()
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .max_loaned_samples(1)
                .create()
                .unwrap();
            move |c: &Control| {
                for i in 0..iters {
                    publisher
                        .loan_uninit()
                        .unwrap()
                        .write_payload(i)
                        .send()
                        .unwrap();
                }
                c.sent.store(1, Ordering::Release);
                drop((publisher, service, node));
            }
        },
        |c| {
            receive_until(iters, c, || sub.receive().unwrap().map(|s| *s));
        },
    )
}

/// Receives sequence numbers until `iters - 1` or, once the sender is done,
/// an empty buffer; counts the gaps.
fn receive_until(iters: u64, c: &Control, mut next: impl FnMut() -> Option<u64>) {
    let mut expect = 0;
    while expect < iters {
        let done = c.sent.load(Ordering::Acquire) != 0;
        match next() {
            Some(seq) => {
                DROPPED.fetch_add(seq.saturating_sub(expect), Ordering::Relaxed);
                expect = seq + 1;
            }
            None if done => {
                DROPPED.fetch_add(iters - expect, Ordering::Relaxed);
                break;
            }
            None => std::hint::spin_loop(),
        }
    }
}

/// `iters` byte messages of `msg.len()` from a child publisher (one copy
/// into the loaned sample) to a subscriber here that reads each in place,
/// one byte per cache line (as shmkit's queue rows do).
pub fn bytes_stream(iters: u64, msg: &[u8], buffer: usize) -> Duration {
    let name = unique("bytes");
    let node = new_node();
    let service = node
        .service_builder(&name.as_str().try_into().unwrap())
        .publish_subscribe::<[u8]>()
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(buffer)
        .create()
        .unwrap();
    let sub = service
        .subscriber_builder()
        .buffer_size(buffer)
        .create()
        .unwrap();
    let size = msg.len();
    pair(
        || {
            let node = new_node();
            let service = node
                .service_builder(&name.as_str().try_into().unwrap())
                .publish_subscribe::<[u8]>()
                .open()
                .unwrap();
            let publisher = service
                .publisher_builder()
                .initial_max_slice_len(size)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .max_loaned_samples(1)
                .create()
                .unwrap();
            // The message with the sequence number in its first 8 bytes,
            // copied once into each loaned sample (as shmkit copies it
            // once into its slot).
            let mut buf = msg.to_vec();
            move |c: &Control| {
                for i in 0..iters {
                    buf[..8].copy_from_slice(&i.to_ne_bytes());
                    let s = publisher.loan_slice_uninit(size).unwrap();
                    s.write_from_slice(&buf).send().unwrap();
                }
                c.sent.store(1, Ordering::Release);
                drop((publisher, service, node));
            }
        },
        |c| {
            receive_until(iters, c, || {
                sub.receive().unwrap().map(|s| {
                    let p = s.payload();
                    black_box(p.iter().step_by(64).fold(0u8, |a, b| a ^ b));
                    u64::from_ne_bytes(p[..8].try_into().unwrap())
                })
            });
        },
    )
}

/// `iters` round trips of a u64, both sides polling: a ping service from
/// here to the child and a pong service back.
pub fn ping_pong(iters: u64) -> Duration {
    let (ping, pong) = (unique("ping"), unique("pong"));
    let node = new_node();
    let make = |node: &Node<ipc::Service>, name: &str| {
        node.service_builder(&name.try_into().unwrap())
            .publish_subscribe::<u64>()
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(2)
            .open_or_create()
            .unwrap()
    };
    let ping_service = make(&node, &ping);
    let pong_service = make(&node, &pong);
    let pong_sub = pong_service
        .subscriber_builder()
        .buffer_size(2)
        .create()
        .unwrap();
    let ping_pub = ping_service.publisher_builder().create().unwrap();
    // The child's subscriber must exist before the first ping is sent:
    // it is made in the child's setup, which ends before the release.
    pair(
        || {
            let node = new_node();
            let ping_service = make(&node, &ping);
            let pong_service = make(&node, &pong);
            let ping_sub = ping_service
                .subscriber_builder()
                .buffer_size(2)
                .create()
                .unwrap();
            let pong_pub = pong_service.publisher_builder().create().unwrap();
            move |c: &Control| {
                // Answers every ping (a lost pong is pinged again) until
                // the parent says it is done.
                while c.sent.load(Ordering::Acquire) == 0 {
                    if let Some(s) = ping_sub.receive().unwrap() {
                        pong_pub
                            .loan_uninit()
                            .unwrap()
                            .write_payload(*s)
                            .send()
                            .unwrap();
                    } else {
                        std::hint::spin_loop();
                    }
                }
                drop((ping_sub, pong_pub, ping_service, pong_service, node));
            }
        },
        |c| {
            // Connects to the child's subscriber (made in its setup).
            ping_pub.update_connections().unwrap();
            for i in 0..iters {
                ping_pub
                    .loan_uninit()
                    .unwrap()
                    .write_payload(i)
                    .send()
                    .unwrap();
                let mut sent_at = Instant::now();
                loop {
                    match pong_sub.receive().unwrap() {
                        Some(s) if *s == i => break,
                        Some(_) => {}
                        None if sent_at.elapsed() > Duration::from_millis(100) => {
                            DROPPED.fetch_add(1, Ordering::Relaxed);
                            ping_pub
                                .loan_uninit()
                                .unwrap()
                                .write_payload(i)
                                .send()
                                .unwrap();
                            sent_at = Instant::now();
                        }
                        None => std::hint::spin_loop(),
                    }
                }
            }
            c.sent.store(1, Ordering::Release);
        },
    )
}

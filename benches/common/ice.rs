//! iceoryx2 (0.10) publish-subscribe between a forked child and this
//! process, the strongest shared-memory peer of shmkit's queue: u64 and
//! byte-slice streams and a spinning ping-pong.
//!
//! - Each call makes its own services (unique names) and ports; the child
//!   builds its node and ports before the clock starts and drops them after
//!   its timed work (iceoryx2 removes its files when they drop; the child
//!   `_exit`s without touching the parent's).
//! - Publishers use `RetryUntilDelivered` and services no safe overflow,
//!   so a full subscriber buffer holds the publisher back, and every port
//!   is connected before the clock starts (iceoryx2 connects a port at its
//!   next call otherwise, and a publisher that finds no connected
//!   subscriber and a full buffer drops the sample: the first version of
//!   these rows lost up to 0.3% of a stream that way). The receiver still
//!   counts by sequence number and ends at an empty buffer once the sender
//!   is done, so a drop could only make its row faster, and the bench
//!   prints how many it saw ([`dropped`]); none since.
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

/// The prefix of every file this bench's iceoryx2 nodes create (its config's
/// `global.prefix`, iceoryx2's `iox2_` by default), fixed by [`init`] in the
/// bench's process before any child is forked, so children inherit it.
static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn prefix() -> &'static str {
    PREFIX.get_or_init(|| format!("iox2_shmkitbench{}_", std::process::id()))
}

/// Fixes this run's file prefix; call before any iceoryx2 row.
pub fn init() {
    prefix();
}

/// Removes the files this run's iceoryx2 nodes left: its ports remove theirs
/// when they drop, but a node's global management segment stays. Only
/// files with this run's prefix go, so another iceoryx2 user's are kept,
/// whenever they were made.
pub fn remove_own_files() {
    let Some(prefix) = PREFIX.get() else {
        return;
    };
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for entry in dir.flatten() {
        if entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(prefix.as_bytes())
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
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
    let mut config = Config::default();
    config.global.prefix = FileName::new(prefix().as_bytes()).expect("an iceoryx2 file prefix");
    NodeBuilder::new()
        .config(&config)
        .create::<ipc::Service>()
        .expect("iceoryx2 node")
}

/// Control words shared with the child: released, the sender finished.
#[repr(C)]
struct Control {
    go: AtomicU32,
    ready: AtomicU32,
    sent: AtomicU32,
    /// The child's pid, for the parent's loops to check it still runs.
    pid: AtomicU32,
}

impl Control {
    /// Panics if the child has ended (a panic or a failed call there):
    /// the parent's polling loops would otherwise spin forever.
    fn check_child(&self) {
        let mut status = 0;
        // SAFETY: polling our own child without reaping a running one.
        let r = unsafe {
            libc::waitpid(
                self.pid.load(Ordering::Relaxed) as i32,
                &mut status,
                libc::WNOHANG,
            )
        };
        assert!(
            r == 0,
            "the iceoryx2 bench child ended early (status {status:#x})"
        );
    }
}

/// Forks a child that runs `child` once released, timing this side's
/// `parent` from the release to its return (the child's setup before and
/// teardown after are not timed).
fn pair<C: FnOnce(&Control)>(
    child_setup: impl FnOnce() -> C,
    before_go: impl FnOnce(),
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
        // A panic must not unwind into criterion in the child (it would run
        // benches, and drop the parent's iceoryx2 ports, deleting files).
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let work = child_setup();
            c.ready.store(1, Ordering::Release);
            while c.go.load(Ordering::Acquire) == 0 {
                std::hint::spin_loop();
            }
            work(c);
        }))
        .is_ok();
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
    }
    c.pid.store(pid as u32, Ordering::Relaxed);
    while c.ready.load(Ordering::Acquire) == 0 {
        c.check_child();
        std::thread::yield_now();
    }
    // The parent's ports connect to the child's before the clock starts
    // (iceoryx2 connects at a port's next call otherwise: a publisher that
    // finds no connected subscriber and a full buffer drops the sample).
    before_go();
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
        || sub.update_connections().unwrap(),
        |c| {
            receive_until(iters, c, || sub.receive().unwrap().map(|s| *s));
        },
    )
}

/// Receives sequence numbers until `iters - 1` or, once the sender is done,
/// an empty buffer; counts the gaps.
fn receive_until(iters: u64, c: &Control, mut next: impl FnMut() -> Option<u64>) {
    let (mut expect, mut dropped, mut empty) = (0, 0, 0u32);
    while expect < iters {
        let done = c.sent.load(Ordering::Acquire) != 0;
        match next() {
            Some(seq) => {
                dropped += seq.saturating_sub(expect);
                expect = seq + 1;
            }
            None if done => {
                dropped += iters - expect;
                break;
            }
            None => {
                empty = empty.wrapping_add(1);
                if empty.is_multiple_of(1 << 20) {
                    c.check_child();
                }
                std::hint::spin_loop();
            }
        }
    }
    DROPPED.fetch_add(dropped, Ordering::Relaxed);
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
        || sub.update_connections().unwrap(),
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
                // Answers every ping until the parent says it is done.
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
        || {
            // Connects to the child's subscriber (made in its setup), and
            // this side's subscriber to the child's publisher.
            ping_pub.update_connections().unwrap();
            pong_sub.update_connections().unwrap();
        },
        |c| {
            let mut empty = 0u32;
            for i in 0..iters {
                ping_pub
                    .loan_uninit()
                    .unwrap()
                    .write_payload(i)
                    .send()
                    .unwrap();
                loop {
                    match pong_sub.receive().unwrap() {
                        Some(s) => {
                            assert_eq!(*s, i, "iceoryx2 lost a ping or a pong");
                            break;
                        }
                        None => {
                            empty = empty.wrapping_add(1);
                            if empty.is_multiple_of(1 << 20) {
                                c.check_child();
                            }
                            std::hint::spin_loop();
                        }
                    }
                }
            }
            c.sent.store(1, Ordering::Release);
        },
    )
}

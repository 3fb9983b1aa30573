//! Start + join of a trivial child, by shmkit's two start methods, beside the
//! raw baselines each is built on, in ONE group so the ratios come from the
//! same run:
//!
//! - `0-raw-fork-waitpid`: `fork`, the child `_exit(0)`s, `waitpid`.
//! - `1-raw-fork-pipe-result`: the hand-written way to get a result back:
//!   `pipe`, `fork`, the child writes a `u64` and `_exit(0)`s, the parent reads
//!   it and `waitpid`s.
//! - `2-shmkit-fork`: `Builder::fork(|| 1u64)` then `join` (thread check,
//!   channel memfd, result encoded and validated, panics caught).
//! - `3-raw-command-same-binary`: `std::process::Command` of this same bench
//!   binary, whose `main` returns at once when it sees `RAW_CHILD`, then `wait`.
//! - `4-shmkit-spawn`: `process::spawn(f, 1u64)` then `join`: re-exec of this
//!   binary, request validated, `f` run before `main`, result back.

use criterion::{Criterion, criterion_group};
use shmkit::process::{self, Builder};
use std::hint::black_box;
use std::process::Command;
use std::time::Duration;

const RAW_CHILD: &str = "SHMKIT_BENCH_RAW_CHILD";

fn trivial(x: u64) -> u64 {
    x + 1
}

fn start_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("process/start-join");
    g.sample_size(30).measurement_time(Duration::from_secs(6));

    g.bench_function("0-raw-fork-waitpid", |b| {
        b.iter(|| {
            // SAFETY: the child only calls _exit, touching no lock; and the
            // bench process has one thread (shmkit's fork beside checks it).
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: leave at once, running nothing of the parent's.
                unsafe { libc::_exit(0) };
            }
            assert!(pid > 0, "fork failed");
            let mut st = 0;
            // SAFETY: reaping our own child with a valid out-pointer.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            black_box(st)
        })
    });
    g.bench_function("1-raw-fork-pipe-result", |b| {
        b.iter(|| {
            let mut fds = [0; 2];
            // SAFETY: fds is a valid two-int array for pipe.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: as above; the child writes 8 bytes and _exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let v = black_box(1u64).to_ne_bytes();
                // SAFETY: writing 8 bytes from a live buffer, then leaving.
                unsafe {
                    libc::write(fds[1], v.as_ptr().cast(), 8);
                    libc::_exit(0)
                };
            }
            assert!(pid > 0, "fork failed");
            let mut v = [0u8; 8];
            let mut st = 0;
            // SAFETY: reading into a live 8-byte buffer; closing our own
            // descriptors; reaping our own child.
            unsafe {
                libc::close(fds[1]);
                libc::read(fds[0], v.as_mut_ptr().cast(), 8);
                libc::close(fds[0]);
                libc::waitpid(pid, &mut st, 0);
            }
            u64::from_ne_bytes(v)
        })
    });
    g.bench_function("2-shmkit-fork", |b| {
        b.iter(|| {
            let p = Builder::new().fork(|| black_box(1u64)).expect("fork");
            p.join().expect("join")
        })
    });
    g.bench_function("3-raw-command-same-binary", |b| {
        let exe = std::env::current_exe().expect("current_exe");
        b.iter(|| {
            let st = Command::new(&exe)
                .env(RAW_CHILD, "1")
                .status()
                .expect("spawn");
            assert!(st.success());
        })
    });
    g.bench_function("4-shmkit-spawn", |b| {
        b.iter(|| {
            process::spawn(trivial, 1)
                .expect("spawn")
                .join()
                .expect("join")
        })
    });
    g.finish();
}

criterion_group!(benches, start_join);

fn main() {
    if std::env::var_os(RAW_CHILD).is_some() {
        return;
    }
    // Criterion is built without rayon (Cargo.toml) so that this process
    // stays single-threaded and fork is allowed, as in a user's program.
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}

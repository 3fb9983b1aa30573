//! Cross-process increments per second: shmkit's atomic and locked `Value`
//! beside the hardware limit (a raw `AtomicU64` in a shared mapping) and raw
//! process-shared pthread mutexes (plain and robust), in ONE group so that the
//! ratios can be read off the same run.
//!
//! Each iteration is one increment in each of two processes (a forked child
//! and the bench process), started together; throughput counts both.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shmkit::Value;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A shared anonymous mapping holding `T`, zeroed.
fn shared<T>() -> &'static T {
    // SAFETY: a fresh MAP_SHARED|MAP_ANONYMOUS mapping, zero-filled; leaked
    // for the bench's lifetime; every T used here is valid when zeroed.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<T>().max(4096),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        &*p.cast::<T>()
    }
}

#[repr(C, align(64))]
struct Start {
    ready: AtomicU32,
    go: AtomicU32,
}

/// Runs `op` `iters` times in a forked child and in this process at once;
/// returns the wall time until both are done.
fn two_processes(iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let start: &Start = shared();
    start.ready.store(0, Ordering::SeqCst);
    start.go.store(0, Ordering::SeqCst);
    // SAFETY: the child only spins on atomics, runs `op` (atomics or a
    // process-shared lock on shared memory, no allocation) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        start.ready.store(1, Ordering::SeqCst);
        while start.go.load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
        for _ in 0..iters {
            op();
        }
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(0) }
    }
    while start.ready.load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }
    let t0 = Instant::now();
    start.go.store(1, Ordering::Release);
    for _ in 0..iters {
        op();
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let elapsed = t0.elapsed();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    elapsed
}

#[repr(C, align(64))]
struct RawLocked {
    mutex: std::cell::UnsafeCell<libc::pthread_mutex_t>,
    value: std::cell::UnsafeCell<u64>,
}
// SAFETY: the value is only touched under the process-shared mutex.
unsafe impl Sync for RawLocked {}

fn raw_locked(robust: bool) -> &'static RawLocked {
    let r: &RawLocked = shared();
    // SAFETY: attr initialised before use; mutex initialised once, before any
    // process uses it.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
        if robust {
            libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
        }
        assert_eq!(libc::pthread_mutex_init(r.mutex.get(), &attr), 0);
        libc::pthread_mutexattr_destroy(&mut attr);
    }
    r
}

fn raw_increment(r: &RawLocked) {
    // SAFETY: the mutex is initialised and process-shared; the value is only
    // accessed while it is held.
    unsafe {
        libc::pthread_mutex_lock(r.mutex.get());
        *r.value.get() += 1;
        libc::pthread_mutex_unlock(r.mutex.get());
    }
}

fn increments(c: &mut Criterion) {
    let mut g = c.benchmark_group("value/increment-2-processes");
    g.throughput(Throughput::Elements(2));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    // Sanity: each variant really counts 2 * iters before it is timed.
    let check = |op: &(dyn Fn() + Sync), read: &dyn Fn() -> u64| {
        let before = read();
        two_processes(10_000, op);
        assert_eq!(read() - before, 20_000);
    };

    let atomic: &AtomicU64 = shared();
    let raw_atomic = || {
        atomic.fetch_add(1, Ordering::SeqCst);
    };
    check(&raw_atomic, &|| atomic.load(Ordering::SeqCst));
    g.bench_function("0-raw-atomic-u64 (limit)", |b| {
        b.iter_custom(|n| two_processes(n, &raw_atomic))
    });

    let v = Value::<u64>::builder().unlocked().create(0).unwrap();
    let shmkit_atomic = || {
        black_box(v.fetch_add(1));
    };
    check(&shmkit_atomic, &|| v.load());
    g.bench_function("1-shmkit-atomic-value", |b| {
        b.iter_custom(|n| two_processes(n, &shmkit_atomic))
    });

    let plain = raw_locked(false);
    let raw_mutex = || raw_increment(plain);
    // SAFETY: read after the children are reaped: no concurrent writer.
    check(&raw_mutex, &|| unsafe { *plain.value.get() });
    g.bench_function("2-raw-pthread-mutex (pshared)", |b| {
        b.iter_custom(|n| two_processes(n, &raw_mutex))
    });

    let robust = raw_locked(true);
    let raw_robust = || raw_increment(robust);
    // SAFETY: as above.
    check(&raw_robust, &|| unsafe { *robust.value.get() });
    g.bench_function("3-raw-pthread-mutex (pshared, robust)", |b| {
        b.iter_custom(|n| two_processes(n, &raw_robust))
    });

    let locked = Value::new(0u64).unwrap();
    let shmkit_locked = || {
        *locked.lock().unwrap() += 1;
    };
    check(&shmkit_locked, &|| locked.get().unwrap());
    g.bench_function("4-shmkit-locked-value", |b| {
        b.iter_custom(|n| two_processes(n, &shmkit_locked))
    });

    // What a user would pick between threads instead.
    let counter = AtomicU64::new(0);
    g.bench_function("5-std-atomic-u64-2-threads", |b| {
        b.iter_custom(|n| {
            two_threads(n, &|| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
        })
    });
    let guarded = std::sync::Mutex::new(0u64);
    g.bench_function("6-std-mutex-u64-2-threads", |b| {
        b.iter_custom(|n| two_threads(n, &|| *guarded.lock().unwrap() += 1))
    });
    // (Not asserted: a filter that skips these rows leaves them at 0.)
    black_box((counter.load(Ordering::SeqCst), *guarded.lock().unwrap()));
    g.finish();
}

/// Runs `op` `iters` times in each of two threads started together.
fn two_threads(iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let go = AtomicU32::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while go.load(Ordering::Acquire) == 0 {
                std::hint::spin_loop();
            }
            (0..iters).for_each(|_| op());
        });
        let t0 = Instant::now();
        go.store(1, Ordering::Release);
        (0..iters).for_each(|_| op());
        // The scope joins the other thread before its time is read below.
        t0
    })
    .elapsed()
}

/// The same operations in one process, uncontended: the fixed cost of each
/// path (robust bookkeeping included) without cache-line transfers.
fn increments_uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("value/increment-1-process");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let atomic: &AtomicU64 = shared();
    g.bench_function("0-raw-atomic-u64 (limit)", |b| {
        b.iter(|| atomic.fetch_add(1, Ordering::SeqCst))
    });
    let v = Value::<u64>::builder().unlocked().create(0).unwrap();
    g.bench_function("1-shmkit-atomic-value", |b| b.iter(|| v.fetch_add(1)));
    let plain = raw_locked(false);
    g.bench_function("2-raw-pthread-mutex (pshared)", |b| {
        b.iter(|| raw_increment(plain))
    });
    let robust = raw_locked(true);
    g.bench_function("3-raw-pthread-mutex (pshared, robust)", |b| {
        b.iter(|| raw_increment(robust))
    });
    let locked = Value::new(0u64).unwrap();
    g.bench_function("4-shmkit-locked-value", |b| {
        b.iter(|| *locked.lock().unwrap() += 1)
    });
    g.finish();
}

criterion_group!(benches, increments, increments_uncontended);
criterion_main!(benches);

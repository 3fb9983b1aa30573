//! The pool with real worker processes: results, order, laziness, panics,
//! killed workers, retries, recycling, terminate, shared data.

mod common;

use common::is_dead;
use shmkit::error::{PoolError, ProcessError};

use common::watchdog;
use shmkit::pool::Progress;
use shmkit::process::StartMethod;
use shmkit::{Array, Error, Pool, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn start_process(_: ()) {
    println!("Start {}", shmkit::process::current_process().name);
}

fn do_work(data: u64) -> u64 {
    data * data
}

fn pid_of(_: u64) -> u32 {
    std::process::id()
}

fn pool(n: usize) -> Pool {
    Pool::builder().processes(n).build().unwrap()
}

#[test]
fn the_tutorial_pool_squares_with_an_initializer() {
    let _w = watchdog("tutorial pool");
    let pool = Pool::builder()
        .processes(shmkit::cpu_count() * 2)
        .initializer(start_process, ())
        .build()
        .unwrap();
    let outputs = pool.map(do_work, 0..10).unwrap();
    pool.close();
    pool.join();
    assert_eq!(outputs, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    assert!(matches!(
        pool.map(do_work, 0..1),
        Err(Error::Pool(PoolError::Closed))
    ));
}

#[test]
fn map_and_imap_keep_order_and_imap_unordered_gives_everything() {
    let _w = watchdog("order");
    let pool = pool(3);
    let want: Vec<u64> = (0..5000u64).map(|x| x * x).collect();
    assert_eq!(pool.map(do_work, 0..5000).unwrap(), want);
    for chunk in [1, 7, 5000] {
        let got = pool
            .options()
            .chunksize(chunk)
            .map(do_work, 0..5000)
            .unwrap();
        assert_eq!(got, want, "chunksize {chunk}");
    }
    let got: Vec<u64> = pool.imap(do_work, 0..500).map(Result::unwrap).collect();
    assert_eq!(got, want[..500]);
    let got: Vec<u64> = pool
        .options()
        .chunksize(16)
        .imap(do_work, 0..5000)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, want);
    let mut got: Vec<u64> = pool
        .imap_unordered(do_work, 0..500)
        .map(Result::unwrap)
        .collect();
    got.sort();
    assert_eq!(got, want[..500]);
    assert!(pool.map(do_work, std::iter::empty()).unwrap().is_empty());
    // Borrowed input, and input whose length is not known in advance.
    let local: Vec<u64> = (0..100).collect();
    assert_eq!(
        pool.map(do_work, local.iter().copied()).unwrap(),
        want[..100]
    );
    let unknown = (0..1000u64).filter(|x| x % 2 == 0);
    let evens: Vec<u64> = (0..1000u64).filter(|x| x % 2 == 0).map(|x| x * x).collect();
    assert_eq!(pool.map(do_work, unknown).unwrap(), evens);
    assert_eq!(pool.imap(do_work, std::iter::empty()).count(), 0);
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn greet(name: String) -> String {
    format!("hello {name}")
}

#[test]
fn starmap_apply_and_owned_types() {
    let _w = watchdog("starmap");
    let pool = pool(2);
    let pairs: Vec<(u64, u64)> = (0..100).map(|i| (i, 2 * i)).collect();
    let sums = pool.starmap(add, pairs).unwrap();
    assert_eq!(sums, (0..100).map(|i| 3 * i).collect::<Vec<_>>());
    assert_eq!(pool.apply(greet, "pool".into()).unwrap(), "hello pool");
    let names = pool.map(greet, ["a".to_owned(), "b".to_owned()]).unwrap();
    assert_eq!(names, ["hello a", "hello b"]);
}

static PULLED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn imap_reads_its_input_lazily() {
    let _w = watchdog("lazy imap");
    let pool = pool(2);
    let input = (0..1_000_000u64).inspect(|_| {
        PULLED.fetch_add(1, Ordering::SeqCst);
    });
    let mut it = pool
        .options()
        .chunksize(10)
        .lookahead(4)
        .imap(do_work, input);
    for i in 0..25u64 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    // 25 taken, at most 4 chunks of 10 ahead of the consumer.
    let pulled = PULLED.load(Ordering::SeqCst);
    assert!(pulled <= 30 + 40, "imap read {pulled} items ahead");
}

fn maybe_panic(x: u64) -> u64 {
    if x % 10 == 3 {
        panic!("item {x} refuses");
    }
    x
}

#[test]
fn a_panic_fails_its_item_and_the_worker_lives_on() {
    let _w = watchdog("panics");
    let pool = pool(2);
    let before = pool.worker_pids();
    let got: Vec<_> = pool
        .options()
        .chunksize(4)
        .imap(maybe_panic, 0..40)
        .collect();
    for (i, r) in got.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, i as u64),
            Err(Error::Pool(PoolError::TaskPanicked { message })) => {
                assert_eq!(i % 10, 3);
                assert_eq!(message, &format!("item {i} refuses"));
            }
            Err(e) => panic!("item {i}: {e}"),
        }
    }
    assert_eq!(got.iter().filter(|r| r.is_err()).count(), 4);
    // map reports the first failure by position.
    match pool.map(maybe_panic, 0..40) {
        Err(Error::Pool(PoolError::TaskPanicked { message })) => {
            assert_eq!(message, "item 3 refuses")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.worker_pids(), before, "no worker died");
    assert_eq!(pool.stats().workers_died, 0);
}

/// Dies by `how` on item 5; other items take a little time.
fn fragile((x, how): (u64, String)) -> u64 {
    if x == 5 {
        // SAFETY: raising a signal at ourselves, or writing through null
        // to crash on purpose: the test wants this worker dead.
        unsafe {
            match how.as_str() {
                "abort" => std::process::abort(),
                "segv" => std::ptr::null_mut::<u8>().write_volatile(1),
                "exit" => std::process::exit(7),
                _ => {
                    libc::raise(libc::SIGKILL);
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(2));
    x * 10
}

fn deaths(how: &str, n: u64) -> impl Iterator<Item = (u64, String)> + '_ {
    (0..n).map(move |i| (i, how.to_owned()))
}

fn check_one_death(pool: &Pool, how: &str, signal: Option<i32>, exitcode: i32) {
    let before = pool.worker_pids();
    let got: Vec<_> = pool
        .options()
        .chunksize(1)
        .imap(fragile, deaths(how, 40))
        .collect();
    for (i, r) in got.iter().enumerate() {
        if i == 5 {
            match r {
                Err(Error::Pool(PoolError::WorkerDied {
                    pid,
                    signal: s,
                    exitcode: c,
                })) => {
                    assert!(before.contains(pid), "pid {pid} not a worker of {before:?}");
                    assert_eq!((*s, *c), (signal, exitcode));
                }
                other => panic!("item 5: {other:?}"),
            }
        } else {
            assert_eq!(*r.as_ref().unwrap(), i as u64 * 10, "item {i}");
        }
    }
    // Replaced, and the pool goes on.
    assert_eq!(pool.worker_pids().len(), before.len());
    assert_ne!(pool.worker_pids(), before);
    assert_eq!(pool.map(do_work, 0..100).unwrap()[99], 99 * 99);
}

#[test]
fn a_worker_killed_mid_map_fails_only_its_task() {
    let _w = watchdog("worker death");
    let pool = pool(2);
    check_one_death(&pool, "kill", Some(libc::SIGKILL), -libc::SIGKILL);
    let s = pool.stats();
    assert_eq!(
        (s.workers_died, s.workers_replaced, s.chunks_lost),
        (1, 1, 1)
    );
    // map_async sees the same, as the first error.
    match pool.options().chunksize(1).map(fragile, deaths("kill", 10)) {
        Err(Error::Pool(PoolError::WorkerDied { signal, .. })) => {
            assert_eq!(signal, Some(libc::SIGKILL))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn abort_segfault_and_exit_are_worker_deaths_too() {
    let _w = watchdog("abort and segv");
    for (how, signal, code) in [
        ("abort", Some(libc::SIGABRT), -libc::SIGABRT),
        ("segv", Some(libc::SIGSEGV), -libc::SIGSEGV),
        ("exit", None, 7),
    ] {
        check_one_death(&pool(2), how, signal, code);
    }
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_worker_killed_from_outside_fails_its_task_and_nothing_hangs() {
    let _w = watchdog("outside kill");
    let pool = pool(2);
    let victim = pool.worker_pids()[0];
    let pending = pool
        .options()
        .chunksize(1)
        .map_async(sleepy, vec![300; 8])
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: kill(2) on a worker of ours.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    match pending.get() {
        Err(Error::Pool(PoolError::WorkerDied { pid, signal, .. })) => {
            assert_eq!((pid, signal), (victim, Some(libc::SIGKILL)));
        }
        other => panic!("{other:?}"),
    }
    // The others all finished: one chunk lost, the rest done.
    let s = pool.stats();
    assert_eq!(s.chunks_lost, 1);
    assert_eq!(s.chunks_done, 7);
}

/// Dies the first time it runs for a flag, succeeds the second time.
fn dies_once(flag: Value<u64>) -> u64 {
    if flag.fetch_add(1) == 0 {
        // SAFETY: killing ourselves on purpose.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    42
}

#[test]
fn retries_run_a_lost_task_again() {
    let _w = watchdog("retries");
    let pool = Pool::builder().processes(2).retries(1).build().unwrap();
    let flag = Value::<u64>::builder().random_name().create(0).unwrap();
    assert_eq!(pool.apply(dies_once, flag.clone()).unwrap(), 42);
    assert_eq!(flag.load(), 2);
    assert_eq!(pool.stats().chunks_retried, 1);
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    let _w = watchdog("recycling");
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(2)
        .build()
        .unwrap();
    let mut pids = pool.options().chunksize(1).map(pid_of, 0..20).unwrap();
    pids.sort();
    pids.dedup();
    assert!(
        pids.len() >= 10,
        "20 tasks, 2 per worker: {} workers",
        pids.len()
    );
    let s = pool.stats();
    assert!(s.workers_recycled >= 8, "{s:?}");
    assert_eq!(s.workers_died, 0, "{s:?}");
}

#[test]
fn terminate_ends_a_pool_mid_map() {
    let _w = watchdog("terminate");
    let pool = pool(2);
    let pids = pool.worker_pids();
    let mut pending = pool
        .options()
        .chunksize(1)
        .map_async(sleepy, vec![20_000; 6])
        .unwrap();
    assert!(matches!(
        pending.get_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    pool.terminate();
    assert!(matches!(
        pending.get(),
        Err(Error::Pool(PoolError::Terminated))
    ));
    for pid in pids {
        assert!(is_dead(pid), "worker {pid} survived terminate");
    }
    assert!(matches!(
        pool.apply(do_work, 1),
        Err(Error::Pool(PoolError::Closed))
    ));
}

#[test]
fn dropping_a_pool_leaves_no_worker() {
    let _w = watchdog("drop");
    let pool = pool(2);
    let pids = pool.worker_pids();
    let pending = pool.apply_async(sleepy, 20_000).unwrap();
    drop(pool);
    assert!(matches!(
        pending.get(),
        Err(Error::Pool(PoolError::Terminated))
    ));
    for pid in pids {
        assert!(is_dead(pid), "worker {pid} outlived its pool");
    }
}

#[test]
fn apply_async_callbacks_and_state() {
    let _w = watchdog("callbacks");
    let pool = pool(2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (ok, err) = (seen.clone(), seen.clone());
    let a = pool
        .apply_async_with(
            do_work,
            7,
            move |v| ok.lock().unwrap().push(format!("ok {v}")),
            move |e| err.lock().unwrap().push(format!("err {e}")),
        )
        .unwrap();
    a.wait();
    assert!(a.ready());
    assert_eq!(a.successful(), Some(true));
    assert_eq!(a.get().unwrap(), 49);
    let (ok, err) = (seen.clone(), seen.clone());
    let b = pool
        .apply_async_with(
            maybe_panic,
            3,
            move |v| ok.lock().unwrap().push(format!("ok {v}")),
            move |e| err.lock().unwrap().push(format!("err {e}")),
        )
        .unwrap();
    assert!(b.wait_timeout(common::WATCHDOG));
    assert_eq!(b.successful(), Some(false));
    assert!(matches!(
        b.get(),
        Err(Error::Pool(PoolError::TaskPanicked { .. }))
    ));
    let (ok, err) = (seen.clone(), seen.clone());
    let m = pool
        .map_async_with(
            do_work,
            0..4,
            move |v| ok.lock().unwrap().push(format!("map {v:?}")),
            move |e| err.lock().unwrap().push(format!("err {e}")),
        )
        .unwrap();
    assert_eq!(m.get().unwrap(), [0, 1, 4, 9]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "ok 49".to_owned(),
            "err the task panicked: item 3 refuses".to_owned(),
            "map [0, 1, 4, 9]".to_owned()
        ]
    );
}

#[test]
fn progress_reports_every_chunk() {
    let _w = watchdog("progress");
    let pool = pool(2);
    let seen = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let s = seen.clone();
    pool.options()
        .chunksize(10)
        .progress(move |p| s.lock().unwrap().push(p))
        .map(do_work, 0..100)
        .unwrap();
    // Reports come in order, reach the end before map returns, and may be
    // coalesced (one per chunk at most).
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty() && seen.len() <= 10, "{seen:?}");
    assert_eq!(seen.last().unwrap().done, 100);
    assert!(seen.iter().all(|p| p.total == Some(100)));
    assert!(seen.windows(2).all(|w| w[0].done < w[1].done));
}

#[test]
fn callbacks_run_on_the_pool_thread_and_a_panicking_one_harms_nothing() {
    let _w = watchdog("callback panics");
    let pool = pool(2);
    let threads = Arc::new(Mutex::new(Vec::new()));
    for i in 0..20u64 {
        let t = threads.clone();
        // The caller takes outcomes off the queue itself while it waits in
        // get(); the callback still runs on the pool's thread.
        let r = pool
            .apply_async_with(
                do_work,
                i,
                move |_| {
                    t.lock()
                        .unwrap()
                        .push(std::thread::current().name().map(str::to_owned))
                },
                |_| {},
            )
            .unwrap();
        assert_eq!(r.get().unwrap(), i * i);
    }
    let threads = threads.lock().unwrap();
    assert_eq!(threads.len(), 20, "get() returned before the callback ran");
    assert!(
        threads.iter().all(|n| n.as_deref() == Some("shmkit-pool")),
        "{threads:?}"
    );
    let bad = pool
        .apply_async_with(do_work, 3, |_| panic!("callback bug"), |_| {})
        .unwrap();
    assert_eq!(bad.get().unwrap(), 9);
    assert_eq!(pool.apply(do_work, 4).unwrap(), 16);
    let progress_bad = pool
        .options()
        .progress(|_| panic!("progress bug"))
        .map(do_work, 0..10)
        .unwrap();
    assert_eq!(progress_bad.len(), 10);
}

#[test]
fn join_waits_for_the_work_even_while_workers_recycle() {
    let _w = watchdog("join with recycling");
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let pending = pool
        .options()
        .chunksize(1)
        .map_async(do_work, 0..10)
        .unwrap();
    pool.close();
    pool.join();
    assert_eq!(
        pending.get().unwrap(),
        (0..10u64).map(|x| x * x).collect::<Vec<_>>()
    );
}

fn sum_range((data, start, end): (Array<f32>, u64, u64)) -> f64 {
    // SAFETY: nobody writes the array while the pool reads it.
    let all = unsafe { data.as_slice_unchecked() };
    all[start as usize..end as usize]
        .iter()
        .map(|&x| x as f64)
        .sum()
}

#[test]
fn tasks_share_an_array_instead_of_copying_it() {
    let _w = watchdog("shared array");
    share_an_array(
        Array::<f32>::builder()
            .random_name()
            .create(16 << 20)
            .unwrap(),
    );
    // An anonymous array (no name: a memfd) travels too, as a descriptor of
    // this process that the worker opens through /proc.
    share_an_array(Array::<f32>::new(16 << 20).unwrap());
}

fn bump(v: Value<u64>) -> u64 {
    v.fetch_add(1) + 1
}

#[test]
fn an_anonymous_value_is_shared_with_every_worker() {
    let _w = watchdog("anonymous value");
    let pool = pool(2);
    let v = Value::new(0u64).unwrap();
    let seen = pool.map(bump, vec![v.clone(); 100]).unwrap();
    assert_eq!(v.load(), 100);
    assert_eq!(seen.iter().max(), Some(&100));
    // Dropping the parent's handle while tasks wait does not strand them.
    let pending = pool
        .options()
        .chunksize(1)
        .map_async(bump, vec![v.clone(); 20])
        .unwrap();
    drop(v);
    assert_eq!(pending.get().unwrap().len(), 20);
}

fn share_an_array(data: Array<f32>) {
    let n = data.len();
    // SAFETY: no other process has the array yet.
    let slice = unsafe { data.as_mut_slice_unchecked() };
    for (i, x) in slice.iter_mut().enumerate() {
        *x = (i % 1000) as f32;
    }
    let want: f64 = slice.iter().map(|&x| x as f64).sum();
    let pool = pool(2);
    let step = (n / 16) as u64;
    let tasks: Vec<_> = (0..16u64)
        .map(|i| (data.clone(), i * step, (i + 1) * step))
        .collect();
    let parts = pool.map(sum_range, tasks).unwrap();
    assert_eq!(parts.iter().sum::<f64>(), want);
}

#[test]
fn bad_input_gets_typed_errors() {
    let _w = watchdog("bad input");
    let pool = Pool::builder()
        .processes(1)
        .max_message(64 << 10)
        .build()
        .unwrap();
    match pool.apply_async(greet, "x".repeat(100 << 10)) {
        Err(Error::Pool(PoolError::TaskTooLarge { size, max })) => {
            assert!(size > max && max == 64 << 10)
        }
        other => panic!("{other:?}"),
    }
    // A chunk too large is cut; its items still fit.
    let big: Vec<String> = (0..8).map(|i| format!("{i}").repeat(20 << 10)).collect();
    assert_eq!(
        pool.options().chunksize(8).map(greet, big).unwrap().len(),
        8
    );
    // Results larger than a slot travel in pieces.
    let long = pool.apply(greet, "y".repeat(60 << 10)).unwrap();
    assert_eq!(long.len(), 6 + (60 << 10));
}

fn refuse(_: ()) {
    panic!("no initialising today");
}

#[test]
fn a_failing_initializer_fails_the_build() {
    let _w = watchdog("initializer");
    match Pool::builder().processes(2).initializer(refuse, ()).build() {
        Err(Error::Pool(PoolError::Broken { reason })) => {
            assert!(reason.contains("no initialising today"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

fn fork_pool(_: ()) -> Vec<u64> {
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Fork)
        .initializer(start_process, ())
        .build()
        .unwrap();
    let out = pool.map(do_work, 0..10).unwrap();
    pool.join();
    out
}

#[test]
fn the_fork_start_method_works_in_a_single_threaded_process() {
    let _w = watchdog("fork pool");
    // This test binary runs threads: refused here ...
    let refused = Pool::builder()
        .processes(1)
        .start_method(StartMethod::Fork)
        .build();
    assert!(matches!(
        refused,
        Err(Error::Process(ProcessError::ForkRefused { .. }))
    ));
    // ... and fine in a spawned child, where `main` never ran.
    let got = shmkit::spawn(fork_pool, ()).unwrap().join().unwrap();
    assert_eq!(got, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
}

#[test]
fn zero_or_too_many_processes_is_an_invalid_argument() {
    for n in [0, shmkit::pool::MAX_WORKERS + 1] {
        let e = Pool::builder().processes(n).build().unwrap_err();
        assert!(
            matches!(
                e,
                shmkit::Error::InvalidArgument {
                    argument: "processes",
                    ..
                }
            ),
            "{n}: {e:?}"
        );
        assert!(e.to_string().contains("at least 1"), "{e}");
    }
    let one = Pool::builder().processes(1).build().unwrap();
    assert_eq!(one.processes(), 1);
    assert_eq!(one.map(|x: u64| x + 1, 0..3).unwrap(), vec![1, 2, 3]);
}

/// A result taken twice is a pool error (not a process's `AlreadyJoined`).
#[test]
fn a_result_taken_twice_is_already_taken() {
    let _w = watchdog("a_result_taken_twice_is_already_taken");
    let pool = Pool::builder().processes(1).build().unwrap();
    let mut r = pool.apply_async(do_work, 3).unwrap();
    assert_eq!(r.get_timeout(common::WATCHDOG).unwrap(), 9);
    let again = r.get_timeout(Duration::from_millis(1)).unwrap_err();
    assert!(
        matches!(again, Error::Pool(PoolError::AlreadyTaken)),
        "{again:?}"
    );
    assert!(again.to_string().contains("already taken"), "{again}");
}

fn widen(x: u32) -> f64 {
    f64::from(x) * 0.5
}

fn refuse_777(x: u64) -> u64 {
    assert_ne!(x, 777, "no 777");
    x + 1
}

/// `map_pod`/`map_into` (Pod items over shared arrays, ranges as tasks)
/// give what `map` gives, at the edges of their parameters: no item, one,
/// ranges of one item, one range for everything, one worker, types that
/// differ in size.
#[test]
fn map_pod_and_map_into_match_map_at_the_edges() {
    let _w = watchdog("map_pod edges");
    for workers in [1, 2] {
        let pool = pool(workers);
        let items: Vec<u64> = (0..20_000).collect();
        let want = pool.map(do_work, items.clone()).unwrap();
        assert_eq!(pool.map_pod(do_work, &items).unwrap(), want);
        assert!(pool.map_pod(do_work, &[]).unwrap().is_empty());
        assert_eq!(pool.map_pod(do_work, &[9]).unwrap(), [81]);
        for chunk in [1, 7, 19_999, 20_000, 1_000_000] {
            let got = pool
                .options()
                .chunksize(chunk)
                .map_pod(do_work, &items[..if chunk == 1 { 500 } else { 20_000 }])
                .unwrap();
            assert_eq!(got, want[..got.len()], "chunksize {chunk}");
        }
        let small: Vec<u32> = (0..1001).collect();
        let wide = pool.map_pod(widen, &small).unwrap();
        assert_eq!(wide, small.iter().map(|&x| widen(x)).collect::<Vec<_>>());
    }
}

/// `map_into` writes in place into the caller's array (a longer one keeps
/// its tail), refuses a short or identical output with a typed error, and
/// reports a panic as the first failure by position.
#[test]
fn map_into_writes_in_place_and_refuses_bad_arrays() {
    let _w = watchdog("map_into");
    let pool = pool(2);
    let input = Array::from_slice(&(0..1000u64).collect::<Vec<_>>()).unwrap();
    let output = Array::<u64>::from_slice(&[u64::MAX; 1001]).unwrap();
    pool.map_into(do_work, &input, &output).unwrap();
    let out = output.to_vec().unwrap();
    assert_eq!(out[..1000], (0..1000u64).map(do_work).collect::<Vec<_>>());
    assert_eq!(out[1000], u64::MAX, "past the input: untouched");

    let short = Array::<u64>::new(999).unwrap();
    match pool.map_into(do_work, &input, &short) {
        Err(Error::InvalidArgument { argument, message }) => {
            assert_eq!(argument, "output");
            assert!(message.contains("999"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        pool.map_into(do_work, &input, &input.clone()),
        Err(Error::InvalidArgument { .. })
    ));
    // The same region reopened by descriptor (another mapping, no name):
    // refused too, by file identity (it would alias in the workers).
    let reopened = Array::<u64>::builder()
        .from_fd(input.segment().inheritable_fd().unwrap())
        .unwrap();
    assert_ne!(reopened.as_ptr(), input.as_ptr());
    assert!(matches!(
        pool.map_into(do_work, &input, &reopened),
        Err(Error::InvalidArgument { .. })
    ));
    let empty = Array::<u64>::new(0).unwrap();
    pool.map_into(do_work, &empty, &short).unwrap();

    let big: Vec<u64> = (0..2000).collect();
    match pool.options().chunksize(100).map_pod(refuse_777, &big) {
        Err(Error::Pool(PoolError::TaskPanicked { message })) => {
            assert!(message.contains("no 777"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // The pool goes on.
    assert_eq!(pool.map_pod(refuse_777, &[1, 2]).unwrap(), [2, 3]);
}

/// Kills its worker on the range that holds 500.
fn kill_at_500(x: u64) -> u64 {
    if x == 500 {
        // SAFETY: raising SIGKILL at ourselves: the test wants this worker dead.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
    x
}

/// A worker killed mid-range fails that range (`WorkerDied`); with a retry
/// the range runs again (and kills again: the call still fails, nothing
/// hangs); the pool serves the next call.
#[test]
fn a_worker_killed_mid_range_fails_or_retries_it() {
    let _w = watchdog("map_pod worker death");
    let items: Vec<u64> = (0..1000).collect();
    let pool = pool(2);
    match pool.map_pod(kill_at_500, &items) {
        Err(Error::Pool(PoolError::WorkerDied { signal, .. })) => {
            assert_eq!(signal, Some(libc::SIGKILL))
        }
        other => panic!("{other:?}"),
    }
    let retrying = Pool::builder().processes(2).retries(1).build().unwrap();
    // Every worker dies at 500: a retry meets the same fate, so the call
    // fails again after one retry, and nothing hangs.
    assert!(retrying.map_pod(kill_at_500, &items).is_err());
    assert_eq!(
        retrying.map_pod(do_work, &items[..10]).unwrap(),
        [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
    );
}

/// The pool keeps `map_pod`'s arrays and each worker its last mapping:
/// calls of growing and shrinking lengths, concurrent calls from two
/// threads, and an input changed between two `map_into`s over the same
/// arrays all give exactly `f` of the current input.
#[test]
fn repeated_and_concurrent_maps_over_kept_arrays_stay_exact() {
    let _w = watchdog("kept arrays");
    let pool = Arc::new(pool(2));
    for n in [1000u64, 10, 5000, 1, 1000] {
        let items: Vec<u64> = (n..2 * n).collect();
        let want: Vec<u64> = items.iter().map(|&x| do_work(x)).collect();
        assert_eq!(pool.map_pod(do_work, &items).unwrap(), want, "n = {n}");
    }
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for k in 0..20u64 {
                    let items: Vec<u64> = (0..3000 + k * 7).map(|i| i * 3 + t).collect();
                    let want: Vec<u64> = items.iter().map(|&x| do_work(x)).collect();
                    assert_eq!(pool.map_pod(do_work, &items).unwrap(), want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let input = Array::from_slice(&[1u64, 2, 3]).unwrap();
    let output = Array::<u64>::new(3).unwrap();
    pool.map_into(do_work, &input, &output).unwrap();
    assert_eq!(output.to_vec().unwrap(), [1, 4, 9]);
    input.copy_from_slice(&[4, 5, 6]).unwrap();
    pool.map_into(do_work, &input, &output).unwrap();
    assert_eq!(
        output.to_vec().unwrap(),
        [16, 25, 36],
        "the kept mapping sees the new input"
    );
}

fn add_under_lock((m, n): (shmkit::sync::Mutex<u64>, u64)) -> u64 {
    for _ in 0..n {
        *m.lock().unwrap() += 1;
    }
    n
}

/// An anonymous `Mutex` in pool tasks (a task argument, opened in each
/// worker through /proc from the caller) is the caller's lock: no update of
/// the workers, nor of the caller meanwhile, is lost.
#[test]
fn an_anonymous_mutex_in_pool_tasks_is_the_callers_lock() {
    let _w = watchdog("mutex in pool tasks");
    let pool = pool(2);
    let m = shmkit::sync::Mutex::new(0u64).unwrap();
    let pending = pool
        .options()
        .chunksize(1)
        .map_async(add_under_lock, vec![(m.clone(), 500); 8])
        .unwrap();
    for _ in 0..500 {
        *m.lock().unwrap() += 1;
    }
    assert_eq!(pending.get().unwrap(), vec![500; 8]);
    assert_eq!(*m.lock().unwrap(), 9 * 500);
}

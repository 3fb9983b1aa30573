//! Harness shared by the cross-process benches: a parent and a forked child
//! started together, raw pipes, sockets and futexes for the baselines.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A zeroed `T` in a shared anonymous mapping, leaked for the bench's life.
pub fn shared<T>() -> &'static T {
    // SAFETY: a fresh MAP_SHARED|MAP_ANONYMOUS mapping, zero-filled; every T
    // used here (atomics) is valid when zeroed.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            size_of::<T>().max(4096),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        &*p.cast::<T>()
    }
}

/// Runs `child` in a forked process and `parent` here, released together;
/// returns the time from the release until both closures have finished.
/// The child's exit and reaping are not timed (a child of a process with
/// gigabytes of private memory takes milliseconds to tear down).
pub fn fork_pair(child: impl FnOnce(), parent: impl FnOnce()) -> Duration {
    fork_pair_prepared(|| {}, child, parent)
}

/// [`fork_pair`], with `prepare` run in the child before the clock starts
/// (e.g. faulting in a shared mapping, as a long-lived process would have
/// long before: `fork` does not copy the page-table entries of shared
/// mappings, so a fresh child faults on its first touch of every page).
pub fn fork_pair_prepared(
    prepare: impl FnOnce(),
    child: impl FnOnce(),
    parent: impl FnOnce(),
) -> Duration {
    #[repr(C)]
    struct Sync2 {
        go: AtomicU32,
        done: AtomicU32,
        ready: AtomicU32,
    }
    // A block per call (calls nest: the MPMC benches run a pair in each
    // process of a pair), unmapped at the end.
    let s: &Sync2 = shared();
    s.go.store(0, Ordering::SeqCst);
    s.done.store(0, Ordering::SeqCst);
    s.ready.store(0, Ordering::SeqCst);
    // SAFETY: the bench process runs no other thread that could hold a lock
    // at this point (crossbeam baselines join theirs); the child runs the
    // closure and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        prepare();
        s.ready.store(1, Ordering::Release);
        while s.go.load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
        child();
        s.done.store(1, Ordering::Release);
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(0) }
    }
    while s.ready.load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }
    let t0 = Instant::now();
    s.go.store(1, Ordering::Release);
    parent();
    let mut status = 0;
    while s.done.load(Ordering::Acquire) == 0 {
        // The child is still working (or died: waitpid tells).
        // SAFETY: polling our own child.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            panic!("bench child ended before finishing its work (status {status:#x})");
        }
        std::thread::yield_now();
    }
    let elapsed = t0.elapsed();
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    unshare(s);
    elapsed
}

/// Unmaps a block from [`shared`] once nothing uses it.
pub fn unshare<T>(t: &T) {
    // SAFETY: `t` came from `shared` (a mapping of max(size, 4096) bytes);
    // the caller uses it no more.
    unsafe { libc::munmap((t as *const T).cast_mut().cast(), size_of::<T>().max(4096)) };
}

/// A Unix pipe: (read end, write end).
pub fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

/// A connected pair of Unix stream sockets.
pub fn socketpair() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-int array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0);
    (fds[0], fds[1])
}

pub fn write_all(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: writing from a live buffer of the given length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        assert!(n > 0, "write failed");
        buf = &buf[n as usize..];
    }
}

pub fn read_exact(fd: i32, mut buf: &mut [u8]) {
    while !buf.is_empty() {
        // SAFETY: reading into a live buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n > 0, "read failed");
        buf = &mut buf[n as usize..];
    }
}

pub fn close(fd: i32) {
    // SAFETY: closing a descriptor this bench opened.
    unsafe { libc::close(fd) };
}

/// Waits while `word` holds `v` (shared futex).
pub fn futex_wait(word: &AtomicU32, v: u32) {
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 in shared memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            v,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

/// Wakes one waiter on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

/// Streams `iters` messages of `size` bytes from a forked child to this
/// process over the descriptor pair `(read, write)`, then closes it.
pub fn fd_stream(iters: u64, size: usize, (r, w): (i32, i32)) -> Duration {
    let msg = vec![7u8; size];
    let mut buf = vec![0u8; size];
    let d = fork_pair(
        || (0..iters).for_each(|_| write_all(w, &msg)),
        || (0..iters).for_each(|_| read_exact(r, &mut buf)),
    );
    close(r);
    close(w);
    d
}

/// `iters` 8-byte round trips with a forked child over two descriptor pairs
/// made by `make` (`pipe` or `socketpair`).
pub fn fd_ping_pong(iters: u64, make: fn() -> (i32, i32)) -> Duration {
    let (ar, aw) = make();
    let (br, bw) = make();
    let d = fork_pair(
        || {
            let mut buf = [0u8; 8];
            for _ in 0..iters {
                read_exact(ar, &mut buf);
                write_all(bw, &buf);
            }
        },
        || {
            let mut buf = [0u8; 8];
            for _ in 0..iters {
                write_all(aw, &buf);
                read_exact(br, &mut buf);
            }
        },
    );
    for fd in [ar, aw, br, bw] {
        close(fd);
    }
    d
}

/// `iters` round trips with a forked child on one shared futex word: the
/// bare blocking limit.
pub fn futex_ping_pong(iters: u64) -> Duration {
    let word: &AtomicU32 = shared();
    word.store(0, Ordering::SeqCst);
    let iters = iters as u32;
    let d = fork_pair(
        || {
            for i in 0..iters {
                while word.load(Ordering::Acquire) != 2 * i + 1 {
                    futex_wait(word, 2 * i);
                }
                word.store(2 * i + 2, Ordering::Release);
                futex_wake(word);
            }
        },
        || {
            for i in 0..iters {
                word.store(2 * i + 1, Ordering::Release);
                futex_wake(word);
                while word.load(Ordering::Acquire) != 2 * i + 2 {
                    futex_wait(word, 2 * i + 1);
                }
            }
        },
    );
    unshare(word);
    d
}

/// `size` bytes of `fill`, page-aligned (a memcpy between buffers whose
/// addresses differ in the low bits can be several times slower on some
/// CPUs; the limit rows copy between aligned buffers). Leaked unless given
/// back with [`free_aligned`].
pub fn page_aligned(size: usize, fill: u8) -> &'static mut [u8] {
    let layout = std::alloc::Layout::from_size_align(size.max(1), 4096).unwrap();
    // SAFETY: a non-zero-sized layout; the memory is initialised by the fill
    // before the slice is made.
    unsafe {
        let p = std::alloc::alloc(layout);
        assert!(!p.is_null());
        p.write_bytes(fill, size);
        std::slice::from_raw_parts_mut(p, size)
    }
}

/// Frees a buffer from [`page_aligned`].
pub fn free_aligned(b: &'static mut [u8]) {
    let layout = std::alloc::Layout::from_size_align(b.len().max(1), 4096).unwrap();
    // SAFETY: allocated by page_aligned with this layout; not used again.
    unsafe { std::alloc::dealloc(b.as_mut_ptr(), layout) };
}

/// A size as bench ids spell it: `64KiB`, `1MiB`, `1GiB`, `8B`.
pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 30 => format!("{}GiB", s >> 30),
        s if s >= 1 << 20 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

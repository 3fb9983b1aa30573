//! Processes: identity (pid, uid, and the start time that makes a pid unique),
//! children (wait, signal), thread and CPU counts.

use super::{cvt, cvt_retry};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// The start time of process `pid`, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`). Together with the pid it names a process uniquely even
/// after the pid is reused.
pub(crate) fn start_time(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/<pid>/stat"))
}

/// Parses field 22 (`starttime`) of a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may itself contain spaces and parentheses, so
/// fields are counted after the LAST `)`.
pub(crate) fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come fields 3.. ; starttime is field 22, i.e. the 20th here.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The calling process's id.
pub(crate) fn pid() -> u32 {
    std::process::id()
}

/// The calling thread's id (its `/proc/<tid>/stat` has the thread's own
/// start time).
pub(crate) fn tid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// The effective uid of the calling process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether the process that had `pid` and `start` (ticks since boot) still runs.
/// A pid that was reused by another process counts as dead.
pub(crate) fn is_alive(pid: u32, start: u64) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    match start_time(pid) {
        Ok(now) => now == start && !is_zombie(pid),
        Err(_) => false,
    }
}

pub(crate) fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_ascii_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(false)
}

/// The start time (ticks since boot) of thread or process `tid`, and whether
/// it is a zombie (dead, not yet reaped), from one read of
/// `/proc/<tid>/stat` (a thread's own entry exists even though `/proc` does
/// not list it).
pub(crate) fn thread_state(tid: u32) -> io::Result<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat"))?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/<tid>/stat");
    let start = parse_start_time(&stat).ok_or_else(bad)?;
    let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let zombie = rest.split_ascii_whitespace().next() == Some("Z");
    Ok((start, zombie))
}

/// Registers `child` to run in the child of every later `fork` (the one
/// thread there, before `fork` returns). `child` must be async-signal-safe.
pub(crate) fn at_fork_child(child: extern "C" fn()) -> io::Result<()> {
    // SAFETY: pthread_atfork only records the handlers; `child` is a plain
    // function that lives forever.
    let r = unsafe { libc::pthread_atfork(None, None, Some(child)) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// What backs each address of this process: `(device, inode, offset in the
/// file)` of the mapping that contains it, from `/proc/self/maps` (`None`
/// for an address in no mapping). The same shared memory mapped twice gives
/// the same key at both addresses.
pub(crate) fn backing_of(addrs: &[usize]) -> io::Result<Vec<Option<(u64, u64, u64)>>> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut keys = vec![None; addrs.len()];
    for line in maps.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(range), Some(_perms), Some(offset), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        let (Some(lo), Some(hi), Some(offset)) = (hex(lo), hex(hi), hex(offset)) else {
            continue;
        };
        let dev = dev
            .split_once(':')
            .and_then(|(a, b)| Some((hex(a)? << 32) | hex(b)?));
        let (Some(dev), Ok(inode)) = (dev, inode.parse::<u64>()) else {
            continue;
        };
        for (key, &a) in keys.iter_mut().zip(addrs) {
            let a = a as u64;
            if (lo..hi).contains(&a) {
                *key = Some((dev, inode, offset + (a - lo)));
            }
        }
    }
    Ok(keys)
}

/// The processes whose memory maps we read, and those we could not.
#[derive(Debug, Default)]
pub(crate) struct MapScan {
    /// `(device major, device minor, inode)` → pids that map it.
    pub(crate) mapped: std::collections::HashMap<(u32, u32, u64), Vec<u32>>,
    /// Processes whose maps could not be read: (pid, owner uid of /proc/pid).
    pub(crate) unreadable: Vec<(u32, u32)>,
}

/// Reads `/proc/<pid>/maps` of every process (as `lsof` does): which files
/// each maps. Processes that vanish meanwhile are skipped.
pub(crate) fn scan_maps() -> io::Result<MapScan> {
    use std::os::unix::fs::MetadataExt;
    let mut scan = MapScan::default();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let maps = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => {
                if let Ok(meta) = entry.metadata() {
                    scan.unreadable.push((pid, meta.uid()));
                }
                continue;
            }
        };
        for line in maps.lines() {
            let mut f = line.split_ascii_whitespace().skip(3);
            let (Some(dev), Some(inode)) = (f.next(), f.next()) else {
                continue;
            };
            let (Ok(inode), Some((major, minor))) = (inode.parse::<u64>(), dev.split_once(':'))
            else {
                continue;
            };
            let (Ok(major), Ok(minor)) = (
                u32::from_str_radix(major, 16),
                u32::from_str_radix(minor, 16),
            ) else {
                continue;
            };
            if inode == 0 {
                continue;
            }
            let pids = scan.mapped.entry((major, minor, inode)).or_default();
            if pids.last() != Some(&pid) {
                pids.push(pid);
            }
        }
    }
    Ok(scan)
}

/// `(major, minor)` of a device number.
pub(crate) fn dev_parts(dev: u64) -> (u32, u32) {
    (
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t),
    )
}

/// The command name of process `pid` (`/proc/<pid>/comm`), if readable.
pub(crate) fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// The process (thread group) of thread `tid`.
pub(crate) fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// The parent's pid.
pub(crate) fn ppid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() as u32 }
}

/// Threads of the calling process: the entries of /proc/self/task (cheaper
/// to read than /proc/self/status, which the kernel formats in full).
pub(crate) fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Our own start time, read once per process (a forked child reads its
/// own); 0 if it cannot be read (then read again at the next call).
pub(crate) fn own_start_time() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CACHE: AtomicU64 = AtomicU64::new(0);
    static CACHE_PID: AtomicU64 = AtomicU64::new(0);
    let me = pid() as u64;
    if CACHE_PID.load(Ordering::Acquire) == me {
        return CACHE.load(Ordering::Relaxed);
    }
    let t = start_time(me as u32).unwrap_or(0);
    // A failed read (descriptors exhausted, say) is not remembered: the
    // next call reads again, instead of every later caller getting 0.
    if t != 0 {
        CACHE.store(t, Ordering::Relaxed);
        CACHE_PID.store(me, Ordering::Release);
    }
    t
}

/// CPUs in the calling thread's affinity mask.
pub(crate) fn affinity_count() -> io::Result<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid cpu_set_t of the size we pass.
    cvt(unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) })?;
    // SAFETY: set was filled by the kernel.
    Ok(unsafe { libc::CPU_COUNT(&set) } as usize)
}

/// The CPU limit of the calling process's cgroup (v2 `cpu.max`, or v1
/// `cpu.cfs_quota_us`/`cpu.cfs_period_us`), rounded up, along the path from
/// its own cgroup to the root; `None` when there is no limit.
pub(crate) fn cgroup_cpu_limit() -> Option<usize> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<usize> = None;
    for line in cgroups.lines() {
        // "hierarchy-id:controllers:path"; v2 is "0::/path".
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let v2 = controllers.is_empty();
        if !v2 && !controllers.split(',').any(|c| c == "cpu") {
            continue;
        }
        let root = if v2 {
            "/sys/fs/cgroup".to_owned()
        } else {
            format!("/sys/fs/cgroup/{controllers}")
        };
        let mut dir = std::path::PathBuf::from(format!("{root}{path}"));
        loop {
            let limit = if v2 {
                std::fs::read_to_string(dir.join("cpu.max"))
                    .ok()
                    .and_then(|s| parse_cpu_max(&s))
            } else {
                let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok();
                let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok();
                quota
                    .zip(period)
                    .and_then(|(q, p)| parse_cpu_max(&format!("{} {}", q.trim(), p.trim())))
            };
            if let Some(l) = limit {
                best = Some(best.map_or(l, |b| b.min(l)));
            }
            if dir.as_os_str().len() <= root.len() || !dir.pop() {
                break;
            }
        }
    }
    best
}

/// Parses "quota period" (cgroup v2 `cpu.max`; quota `max` or `-1` is none)
/// into whole CPUs, rounded up, at least 1.
pub(crate) fn parse_cpu_max(s: &str) -> Option<usize> {
    let mut it = s.split_ascii_whitespace();
    let quota: i64 = it.next()?.parse().ok()?;
    let period: i64 = it.next()?.parse().ok()?;
    if quota <= 0 || period <= 0 {
        return None;
    }
    Some(((quota + period - 1) / period).max(1) as usize)
}

/// Asks the kernel to send `signal` to us when our parent (precisely: the
/// thread that created us) exits.
pub(crate) fn set_parent_death_signal(signal: libc::c_int) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no pointers.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) })?;
    Ok(())
}

/// Registers `f` to run when the process exits normally (`exit`, or `main`
/// returning), as C's `atexit`.
pub(crate) fn at_exit(f: extern "C" fn()) -> io::Result<()> {
    // SAFETY: atexit only records the function pointer, which lives forever.
    if unsafe { libc::atexit(f) } == 0 {
        Ok(())
    } else {
        Err(io::Error::other("atexit: no room for another handler"))
    }
}

/// Sends `signal` to `pid`.
pub(crate) fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory preconditions.
    cvt(unsafe { libc::kill(pid as libc::pid_t, signal) })?;
    Ok(())
}

/// How a child ended, in Python's convention: the exit code, or minus the
/// signal that killed it.
fn exitcode_of(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// Waits for child `pid` and reaps it; `block: false` returns `None` at once
/// if it still runs. `Ok(Some(exitcode))` once it is reaped.
pub(crate) fn reap(pid: u32, block: bool) -> io::Result<Option<i32>> {
    let mut status = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: status is a valid out-pointer; waitpid touches nothing else.
    let r = cvt_retry(|| unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) })?;
    Ok((r != 0).then(|| exitcode_of(status)))
}

/// Whether child `pid` has ended, without reaping it (so its handle can still
/// collect the status).
pub(crate) fn has_exited(pid: u32) -> io::Result<bool> {
    // SAFETY: siginfo_t is plain data; zeroed means "no child changed state".
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: info is a valid out-pointer.
    cvt_retry(|| unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    })?;
    // SAFETY: after waitid, si_pid is valid to read (0 when nothing changed).
    Ok(unsafe { info.si_pid() } != 0)
}

/// A descriptor that becomes readable when process `pid` ends (`pidfd_open`,
/// Linux 5.3).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Waits until `fd` is readable or `timeout` passes; `true` if readable.
pub(crate) fn poll_readable(fd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int
            + i32::from(!left.subsec_nanos().is_multiple_of(1_000_000));
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd.
        match cvt(unsafe { libc::poll(&mut pfd, 1, ms) }) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The identity of the running executable: (device, inode, size, mtime).
pub(crate) fn exe_identity() -> io::Result<[u64; 4]> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self/exe")?;
    Ok([m.dev(), m.ino(), m.size(), m.mtime() as u64])
}

/// Whether `addr` lies in an executable mapping of the running executable's
/// file (from /proc/self/maps), matched by device and inode rather than by
/// path (a path may contain spaces, or end in " (deleted)" once the file was
/// replaced on disk).
pub(crate) fn is_code_of_exe(addr: usize) -> io::Result<bool> {
    let [dev, ino, ..] = exe_identity()?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    Ok(code_ranges(&maps, dev, ino).any(|(lo, hi)| (lo..hi).contains(&addr)))
}

/// `(start, end)` of the executable mappings of the file with device `dev`
/// and inode `ino` in a /proc/<pid>/maps text.
pub(crate) fn code_ranges(
    maps: &str,
    dev: u64,
    ino: u64,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    maps.lines().filter_map(move |line| {
        let mut f = line.split_ascii_whitespace();
        let range = f.next()?;
        let perms = f.next()?;
        let _offset = f.next()?;
        let (major, minor) = f.next()?.split_once(':')?;
        let inode: u64 = f.next()?.parse().ok()?;
        let (major, minor) = (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        );
        if !perms.contains('x') || inode != ino || libc::makedev(major, minor) != dev {
            return None;
        }
        let (lo, hi) = range.split_once('-')?;
        Some((
            usize::from_str_radix(lo, 16).ok()?,
            usize::from_str_radix(hi, 16).ok()?,
        ))
    })
}

/// What [`fork`] returned in this process.
pub(crate) enum Forked {
    /// This is the new child.
    Child,
    /// This is the parent; the child's pid.
    Parent(u32),
}

/// fork(2).
///
/// # Safety
///
/// No other thread may hold a lock or be mid-allocation that the child
/// needs: the child gets only the calling thread. The caller checks that the
/// process has one thread and that the child only runs async-signal-safe
/// code or code that needs no other thread's locks.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller vouches for the state of the other threads.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as u32)),
    }
}

/// Ends this process at once with `code`: no atexit handlers, no
/// destructors, no flushing (a forked copy must not run its parent's).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// A write to a closed pipe is an error, not a silent death (what Rust's
/// runtime sets up before `main`; a spawned child's constructor runs first).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting SIGPIPE's disposition to ignore has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Asks glibc's allocator to keep freed memory (up to 256 MiB) instead of
/// returning it to the OS, and to serve blocks below 64 MiB from the heap.
/// Call before the process starts any thread. A no-op off glibc.
pub(crate) fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes glibc's allocator; the caller calls it
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Signal numbers the layers above name.
pub(crate) use libc::{SIGKILL, SIGTERM};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_cpu_limits() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("-1 100000"), None);
        assert_eq!(parse_cpu_max("200000 100000"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("garbage"), None);
    }

    #[test]
    fn reads_threads_and_code_ranges() {
        assert!(thread_count().unwrap() >= 1);
        assert!(affinity_count().unwrap() >= 1);
        let maps = "55d0-55f0 r-xp 00000000 08:01 12 /my dir/x (deleted)\n\
                    55f0-5600 rw-p 00000000 08:01 12 /my dir/x (deleted)\n\
                    7f00-7f10 r-xp 00000000 08:01 13 /lib/libc.so\n";
        assert_eq!(
            code_ranges(maps, libc::makedev(8, 1), 12).collect::<Vec<_>>(),
            vec![(0x55d0, 0x55f0)]
        );
        assert!(is_code_of_exe(reads_threads_and_code_ranges as *const () as usize).unwrap());
        assert!(!is_code_of_exe(0x10).unwrap());
    }

    #[test]
    fn parses_start_time_with_odd_command_names() {
        let line =
            "1234 (we (ird) name) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = pid();
        let t = start_time(me).unwrap();
        assert!(is_alive(me, t));
        assert!(!is_alive(me, t + 1));
        assert!(!is_alive(0, t));
    }
}

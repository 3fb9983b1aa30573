//! Processes: start a function in a child, join it for its return value.
//!
//! What Python's `multiprocessing.Process` does, for Rust programs that may run
//! threads (the test harness does):
//!
//! ```
//! fn greet(name: String) -> usize {
//!     println!("hello {name} from {}", shmkit::process::current_process().name);
//!     name.len()
//! }
//!
//! # fn main() -> shmkit::Result<()> {
//! let child = shmkit::process::spawn(greet, "bob".to_string())?;
//! assert_eq!(child.join()?, 3);
//! # Ok(()) }
//! ```
//!
//! # Start methods
//!
//! - **Spawn** (the default, [`spawn`], [`Builder::spawn`]): re-executes the
//!   running executable (`/proc/self/exe`). The child finds its function
//!   before `main` runs, in a constructor that shmkit places in
//!   `.init_array`, so `main` never runs in the child (procspawn's PR #55
//!   problem) and nothing needs to be added to binaries, examples or
//!   integration tests. [`init`] is the explicit fallback for a program whose
//!   constructors do not run; call it first in `main`.
//!
//!   The function is a plain `fn(A) -> R` of the same executable. It is sent as
//!   its offset from an anchor function of shmkit together with a
//!   monomorphised trampoline's offset and a hash of the signature; the child
//!   checks that it runs the same executable file (device, inode, size,
//!   mtime), that both addresses fall in that file's code mappings, and that
//!   the signature hash matches, before it calls anything. The request
//!   travels in a private memfd the child receives as its stdin (then stdin
//!   is `/dev/null`, as in Python's children), validated by magic, length
//!   and checksum; arguments and the return value are rkyv archives
//!   validated with bytecheck ([`Message`](crate::Message)).
//!
//! - **Fork** ([`Builder::fork`]): runs a closure in a `fork`ed copy, about
//!   ten times faster to start. Refused with [`ProcessError::ForkRefused`](crate::error::ProcessError::ForkRefused) when the
//!   process has more than one thread: another thread may hold a lock (the
//!   allocator's, stdout's) that the child would wait on forever.
//!   [`Builder::fork_unchecked`] is the `unsafe` opt-in.
//!
//! # Handles and exit codes
//!
//! [`Process`] follows Python: `exitcode()` is `None` while running, `0` after
//! a normal return, `1` after a panic, `2` when the child could not run the
//! function, and `-N` after signal `N`. A dropped handle reaps its child, or
//! hands it to a reaper thread that lives only while such children run: no
//! zombies. A [`Value`](crate::Value) or [`Array`](crate::Array) in the
//! arguments is opened again in the child (anonymous ones through an
//! inherited descriptor), never copied.
//!
//! # Daemons
//!
//! As in Python: when this process exits normally (`main` returns, or
//! `std::process::exit`), its daemon children are terminated (SIGTERM, then
//! SIGKILL after a second) and then its running non-daemon children are
//! waited for ([`join_children_at_exit`]`(false)` opts out: they then run on
//! and are reaped by init). A daemon is also killed (SIGKILL) when this
//! process dies any other way: a thread of the daemon waits on a pidfd of
//! its parent *process* — whichever thread started it (`PR_SET_PDEATHSIG`,
//! which follows the starting *thread*, is only the fallback for kernels
//! before 5.3).

mod builder;
mod channel;
pub(crate) mod child;
mod children;
#[cfg(feature = "async")]
mod exits;
mod handle;
mod info;

pub use builder::{Builder, StartMethod, spawn};
pub use child::init;
pub use children::{ChildInfo, active_children, join_children_at_exit};
pub use handle::Process;
pub use info::ProcessInfo;

use crate::sys::proc;
use std::sync::Mutex;

/// This process's name and its parent, once we are a child.
static IDENTITY: Mutex<Option<(String, Option<ProcessInfo>)>> = Mutex::new(None);

pub(crate) fn set_identity(name: String, parent: Option<ProcessInfo>) {
    *IDENTITY.lock().unwrap_or_else(|p| p.into_inner()) = Some((name, parent));
}

/// This process: its pid and name (`MainProcess` unless shmkit started it).
pub fn current_process() -> ProcessInfo {
    let pid = proc::pid();
    let name = IDENTITY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map_or_else(|| "MainProcess".to_owned(), |(n, _)| n.clone());
    ProcessInfo {
        pid,
        name,
        start_time: proc::own_start_time(),
    }
}

/// The process that started this one with shmkit, or `None` in a program
/// started otherwise. Ask [`ProcessInfo::is_alive`] whether it still runs.
pub fn parent_process() -> Option<ProcessInfo> {
    IDENTITY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|(_, p)| p.clone())
}

/// CPUs this process may use: the affinity mask, further limited by a
/// cgroup CPU quota (rounded up), at least 1. Python's `os.cpu_count()`
/// reports the machine's CPUs whatever the container allows.
#[must_use]
pub fn cpu_count() -> usize {
    let affinity = proc::affinity_count()
        .unwrap_or_else(|_| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let limit = proc::cgroup_cpu_limit().unwrap_or(usize::MAX);
    affinity.min(limit).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_of_a_program_not_started_by_us() {
        let me = current_process();
        assert_eq!(me.name, "MainProcess");
        assert_eq!(me.pid, std::process::id());
        assert!(me.is_alive());
        assert!(parent_process().is_none());
        let n = cpu_count();
        assert!(n >= 1 && n <= proc::affinity_count().unwrap());
    }
}

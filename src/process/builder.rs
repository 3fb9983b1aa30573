//! Starting children: [`Builder`], [`spawn`] and the fork path.

use super::channel::{self, State};
use super::child::{self, ENV, Request};
use super::handle::Process;
use super::{children, current_process};
use crate::codec::Message;
use crate::error::{Error, ProcessError, Result};
use crate::region::handle;
use crate::sys::proc;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};

/// How a child starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartMethod {
    /// Re-execute this executable; safe from any thread.
    #[default]
    Spawn,
    /// `fork`: fast, refused while the process runs more than one thread.
    Fork,
}

/// Starts `f(args)` in a new process by the spawn method, with default
/// settings. See [`Builder`] for a name, daemon children or fork.
///
/// # Errors
///
/// [`Error::Encoding`] if `args` cannot be encoded (or a handle in them cannot travel);
/// [`Error::Io`](crate::Error::Io) if the child cannot be started (`/proc/self/exe`, the channel, `spawn`).
pub fn spawn<A: Message, R: Message>(f: fn(A) -> R, args: A) -> Result<Process<R>> {
    Builder::new().spawn(f, args)
}

/// Clean-ups for endpoints encoded to travel to a child that does not exist
/// yet: run on drop (a failed start), unless handed to the child's handle.
struct Unclaimed(Vec<handle::Abandon>);

impl Unclaimed {
    fn handed_over(mut self) -> Vec<handle::Abandon> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        self.0.drain(..).for_each(|f| f());
    }
}

/// `Ok` if this process runs one thread, so `fork` is sound.
fn single_threaded() -> Result<()> {
    let threads =
        proc::thread_count().map_err(|e| Error::from_os("read", "/proc/self/status", e))?;
    if threads > 1 {
        return Err(Error::Process(ProcessError::ForkRefused { threads }));
    }
    Ok(())
}

/// Settings for a new child.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    method: StartMethod,
}

impl Builder {
    /// Default settings: spawn, not a daemon, named `Process-N`.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The child's name, as `current_process().name` reports it there.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether the child is killed when this process dies (default false).
    #[must_use]
    pub fn daemon(mut self, yes: bool) -> Self {
        self.daemon = yes;
        self
    }

    /// The start method [`start`](Self::start) uses.
    #[must_use]
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = method;
        self
    }

    /// Starts `f(args)` by the configured start method.
    ///
    /// # Errors
    ///
    /// As for [`spawn`](Self::spawn) or [`fork`](Self::fork): [`ProcessError::ForkRefused`](crate::error::ProcessError::ForkRefused) for the fork
    /// method in a multithreaded process, [`Error::Encoding`] if `args` cannot be encoded,
    /// [`Error::Io`](crate::Error::Io) if the child cannot be started.
    pub fn start<A: Message, R: Message>(self, f: fn(A) -> R, args: A) -> Result<Process<R>> {
        match self.method {
            StartMethod::Spawn => self.spawn(f, args),
            StartMethod::Fork => self.fork_with(f, args),
        }
    }

    /// Forks a child that runs `f(args)`, with `args` passed as a spawn
    /// passes them (encoded, then decoded in the child): queue endpoints
    /// move to the child instead of being shared by two processes, and
    /// anonymous regions are reopened from the inherited descriptors.
    fn fork_with<A: Message, R: Message>(self, f: fn(A) -> R, args: A) -> Result<Process<R>> {
        single_threaded()?;
        let (bytes, outgoing) = handle::collecting(|| args.encode());
        let abandons = Unclaimed(outgoing.abandons);
        let bytes = bytes?;
        drop(args);
        let fds = outgoing.fds;
        let run = move || {
            // The descriptors are this process's copies; each handle
            // decoded takes a duplicate of its own.
            handle::set_inherited_fds(fds);
            match A::decode(&bytes) {
                Ok(a) => f(a),
                Err(e) => panic!("decoding the arguments in the forked child: {e}"),
            }
        };
        // SAFETY: single-threaded (checked above).
        unsafe { self.fork_inner(run, abandons.handed_over()) }
    }

    fn child_name(&mut self) -> String {
        let n = children::next_number();
        self.name.take().unwrap_or_else(|| {
            let me = current_process().name;
            if me == "MainProcess" {
                format!("Process-{n}")
            } else {
                format!("{me}:{n}")
            }
        })
    }

    /// Starts `f(args)` in a re-executed copy of this executable. Safe from a
    /// multithreaded process. `f` must be a function (or a closure without
    /// captures) of this executable; `A` and `R` travel as rkyv archives.
    ///
    /// # Errors
    ///
    /// [`Error::Encoding`] if `args` cannot be encoded (or a handle in them cannot travel);
    /// [`Error::Io`](crate::Error::Io) if the child cannot be started (`/proc/self/exe`, the channel, `spawn`).
    pub fn spawn<A: Message, R: Message>(mut self, f: fn(A) -> R, args: A) -> Result<Process<R>> {
        let name = self.child_name();
        let (args, outgoing) = handle::collecting(|| args.encode());
        // Until the child exists, any failure frees the endpoint entries
        // that were to travel with it (nobody will adopt them).
        let abandons = Unclaimed(outgoing.abandons);
        let fds = outgoing.fds;
        let args = args?;
        let trampoline: child::Trampoline = child::trampoline::<A, R>;
        let request = Request {
            exe: proc::exe_identity().map_err(|e| Error::from_os("stat", "/proc/self/exe", e))?,
            trampoline: child::offset_of_code(trampoline as usize),
            function: child::offset_of_code(f as usize),
            signature: child::signature::<A, R>(),
            parent: current_process(),
            name: name.clone(),
            daemon: self.daemon,
            fds: fds.clone(),
            args: args.to_vec(),
        };
        let channel = channel::create()?;
        channel::write(&channel, State::Request, &request.encode()?)?;
        let stdin = channel
            .try_clone()
            .map_err(|e| Error::from_os("dup", "<process channel>", e))?;

        let mut cmd = Command::new("/proc/self/exe");
        if let Some(arg0) = std::env::args_os().next() {
            cmd.arg0(arg0);
        }
        cmd.env(ENV, proc::pid().to_string())
            .stdin(Stdio::from(stdin));
        if !fds.is_empty() {
            // SAFETY: the closure runs in the child between fork and exec and
            // only calls fcntl, which is async-signal-safe; it allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    for &fd in &fds {
                        crate::sys::fd::clear_cloexec_in_child(fd)?;
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::from_os("spawn", "/proc/self/exe", e))?;
        Ok(Process::new(
            child.id(),
            name,
            self.daemon,
            channel,
            abandons.handed_over(),
        ))
    }

    /// Runs `f` in a `fork`ed copy of this process. Refused with
    /// [`ProcessError::ForkRefused`](crate::error::ProcessError::ForkRefused) while the process runs more than one thread
    /// (a `cargo test` binary always does: use [`spawn`](Self::spawn) there).
    /// With feature `async`, the threads that serve pending futures count:
    /// they end 500 ms after their last future is done.
    ///
    /// # Errors
    ///
    /// [`ProcessError::ForkRefused`](crate::error::ProcessError::ForkRefused) if the process runs more than one thread; [`Error::Io`](crate::Error::Io) if the
    /// channel cannot be made or `fork` fails.
    pub fn fork<R: Message>(self, f: impl FnOnce() -> R) -> Result<Process<R>> {
        single_threaded()?;
        // SAFETY: single-threaded, so no lock can be held by a thread that
        // would be missing in the child.
        unsafe { self.fork_unchecked(f) }
    }

    /// Like [`fork`](Self::fork) without the thread check.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if the channel cannot be made or `fork` fails.
    ///
    /// # Safety
    ///
    /// No other thread may hold a lock, or be inside the allocator, when the
    /// fork happens: the child gets the lock held by nobody and may wait on it
    /// forever (or find the data it guards half-written). Only threads you
    /// know to be quiescent may exist. (shmkit's own reaper thread, which runs
    /// while dropped children are still running, is handled here.)
    pub unsafe fn fork_unchecked<R: Message>(self, f: impl FnOnce() -> R) -> Result<Process<R>> {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.fork_inner(f, Vec::new()) }
    }

    /// `fork_unchecked`, with clean-ups for endpoints sent to the child.
    ///
    /// # Safety
    ///
    /// As for [`fork_unchecked`](Self::fork_unchecked).
    unsafe fn fork_inner<R: Message>(
        mut self,
        f: impl FnOnce() -> R,
        abandons: Vec<handle::Abandon>,
    ) -> Result<Process<R>> {
        let name = self.child_name();
        let parent = current_process();
        let channel = channel::create()?;
        // Unflushed output would be printed twice, once by each process.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // shmkit's own reaper thread may hold the children lock: hold it
        // ourselves across the fork (each process drops its copy).
        let children_lock = children::lock_for_fork();
        // SAFETY: the caller guarantees no other thread holds a lock; the
        // child only runs `f`, writes its outcome and calls `_exit`.
        let forked = unsafe { proc::fork() };
        drop(children_lock);
        match forked {
            Ok(proc::Forked::Child) => {
                super::set_identity(name, Some(parent.clone()));
                if self.daemon && child::become_daemon(parent.pid).is_err() {
                    // Without running the parent's atexit handlers.
                    proc::exit_now(child::EXIT_FAILED);
                }
                let outcome = catch_unwind(AssertUnwindSafe(|| match f().encode() {
                    Ok(b) => child::Outcome::Returned(b),
                    Err(e) => child::Outcome::Failed(child::Failure {
                        function_not_found: false,
                        message: format!("the return value: {e}"),
                    }),
                }));
                let code = child::report(&channel, outcome);
                let _ = std::io::stdout().flush();
                let _ = std::io::stderr().flush();
                // The forked copy must not return into the parent's code.
                proc::exit_now(code)
            }
            Ok(proc::Forked::Parent(child)) => {
                Ok(Process::new(child, name, self.daemon, channel, abandons))
            }
            Err(e) => {
                abandons.into_iter().for_each(|f| f());
                Err(Error::from_os("fork", &name, e))
            }
        }
    }
}

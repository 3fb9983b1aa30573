//! [`Process`]: the parent's handle on one child.

use super::channel;
use super::child;
use super::children;
use crate::codec::Message;
use crate::error::{Error, ProcessError, Result};
use crate::sys::proc;
use std::fmt;
use std::fs::File;
use std::marker::PhantomData;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) use crate::region::handle::Abandon;

/// A child process started by [`spawn`](super::spawn) or a
/// [`Builder`](super::Builder); `R` is what its function returns.
///
/// The child is reaped by [`join`](Self::join), by a call that finds it ended
/// ([`is_alive`](Self::is_alive), [`exitcode`](Self::exitcode), ...), or
/// after the handle drops, by a reaper thread. Until it is reaped its pid
/// cannot be reused, so [`terminate`](Self::terminate) and
/// [`kill`](Self::kill) never hit another process.
pub struct Process<R> {
    pid: u32,
    name: String,
    daemon: bool,
    channel: File,
    /// The exit code once reaped.
    exit: Mutex<Option<i32>>,
    /// Clean-ups for queue endpoints sent to the child, run once it is
    /// reaped (they free entries the child never adopted).
    abandons: Mutex<Vec<Abandon>>,
    taken: bool,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field(
                "exitcode",
                &*self.exit.lock().unwrap_or_else(|p| p.into_inner()),
            )
            .finish()
    }
}

impl<R: Message> Process<R> {
    pub(crate) fn new(
        pid: u32,
        name: String,
        daemon: bool,
        channel: File,
        abandons: Vec<Abandon>,
    ) -> Self {
        children::register(pid, &name, daemon);
        Process {
            pid,
            name,
            daemon,
            channel,
            exit: Mutex::new(None),
            abandons: Mutex::new(abandons),
            taken: false,
            _result: PhantomData,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's name (`Process-N` unless the builder named it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the child dies with its parent.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    fn exit(&self) -> MutexGuard<'_, Option<i32>> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reaps the child if it has ended; its exit code if reaped.
    fn poll(&self, block: bool) -> Result<Option<i32>> {
        let mut exit = self.exit();
        if exit.is_none() {
            let code = proc::reap(self.pid, block)
                .map_err(|e| Error::from_os("waitpid", &self.name, e))?;
            if let Some(c) = code {
                *exit = Some(c);
                children::unregister(self.pid);
                let abandons =
                    std::mem::take(&mut *self.abandons.lock().unwrap_or_else(|p| p.into_inner()));
                abandons.into_iter().for_each(|f| f());
            }
        }
        Ok(*exit)
    }

    /// Whether the child still runs.
    pub fn is_alive(&self) -> bool {
        matches!(self.poll(false), Ok(None))
    }

    /// `None` while the child runs; then its exit code: `0` returned, `1`
    /// panicked, `2` could not run its function, another code if it called
    /// `exit`, or `-N` if signal `N` ended it.
    pub fn exitcode(&self) -> Option<i32> {
        self.poll(false).ok().flatten()
    }

    /// Asks the child to stop (SIGTERM). Does nothing once it has ended.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if `kill` fails for another reason than the child being
    /// gone (`EPERM`: it now runs as another user).
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Stops the child at once (SIGKILL). Does nothing once it has ended.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if `kill` fails for another reason than the child being
    /// gone (`EPERM`: it now runs as another user).
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    fn signal(&self, signal: libc::c_int) -> Result<()> {
        // Holding the lock: the child cannot be reaped (and its pid reused)
        // between the check and the signal.
        let exit = self.exit();
        if exit.is_some() {
            return Ok(());
        }
        match proc::kill(self.pid, signal) {
            // A zombie is not an error.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r.map_err(|e| Error::from_os("kill", &self.name, e)),
        }
    }

    /// Waits until the child ends; its exit code.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if `waitpid` or `poll` fails.
    pub fn wait(&self) -> Result<i32> {
        loop {
            if let Some(code) = self.wait_timeout(Duration::from_secs(3600))? {
                return Ok(code);
            }
        }
    }

    /// Waits up to `timeout` for the child to end; its exit code, or `None` if
    /// it still runs.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) if `waitpid` or `poll` fails.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<i32>> {
        if let Some(code) = self.poll(false)? {
            return Ok(Some(code));
        }
        // Opened under the lock: the child cannot be reaped (and its pid
        // reused) by another thread between the check and the open.
        let pidfd = {
            let exit = self.exit();
            if let Some(code) = *exit {
                return Ok(Some(code));
            }
            proc::pidfd_open(self.pid)
        };
        match pidfd {
            Ok(fd) => {
                let ended = proc::poll_readable(&fd, timeout)
                    .map_err(|e| Error::from_os("poll", &self.name, e))?;
                if ended { self.poll(true) } else { Ok(None) }
            }
            Err(_) => {
                // No pidfd (Linux before 5.3): poll with a short sleep.
                let deadline = Instant::now() + timeout;
                loop {
                    if let Some(code) = self.poll(false)? {
                        return Ok(Some(code));
                    }
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Waits for the child and returns what its function returned, or why it
    /// did not: [`ProcessError::Panicked`](crate::error::ProcessError::Panicked) with the panic message,
    /// [`ProcessError::Died`](crate::error::ProcessError::Died) with the exit code (negative: the signal),
    /// [`ProcessError::FunctionNotFound`](crate::error::ProcessError::FunctionNotFound) or [`Error::Encoding`].
    ///
    /// # Errors
    ///
    /// [`ProcessError::Panicked`](crate::error::ProcessError::Panicked), [`ProcessError::Died`](crate::error::ProcessError::Died), [`ProcessError::FunctionNotFound`](crate::error::ProcessError::FunctionNotFound) or
    /// [`Error::Encoding`] as above; [`Error::Io`](crate::Error::Io) if waiting or reading the result fails.
    pub fn join(mut self) -> Result<R> {
        // We own the only handle, so nothing else can reap or signal the
        // child meanwhile: a plain blocking waitpid will do.
        let code = match self.poll(true)? {
            Some(code) => code,
            None => self.wait()?,
        };
        self.take(code)
    }

    /// Like [`join`](Self::join), waiting at most `timeout`: `Ok(None)` if the
    /// child still runs (the handle stays usable). After a result was taken,
    /// [`ProcessError::AlreadyJoined`](crate::error::ProcessError::AlreadyJoined).
    ///
    /// # Errors
    ///
    /// [`ProcessError::AlreadyJoined`](crate::error::ProcessError::AlreadyJoined) once the result was taken; otherwise as for [`join`](Self::join).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<R>> {
        if self.taken {
            return Err(Error::Process(ProcessError::AlreadyJoined {
                pid: self.pid,
            }));
        }
        match self.wait_timeout(timeout)? {
            Some(code) => self.take(code).map(Some),
            None => Ok(None),
        }
    }

    /// Like [`join`](Self::join), as a future (feature `async`): it waits
    /// without a thread of its own. Every pending `join_async` of the
    /// process is served by one watcher thread that sleeps on their pidfds
    /// (a child whose pidfd cannot be opened is looked at every 10 ms).
    /// Dropping the future before it completes drops the handle, as
    /// dropping a `Process` does: the child runs on and is reaped when it
    /// ends.
    ///
    /// ```
    /// fn triple(x: u32) -> u32 { x * 3 }
    /// # fn main() -> shmkit::Result<()> {
    /// let child = shmkit::process::spawn(triple, 14)?;
    /// assert_eq!(futures::executor::block_on(child.join_async())?, 42);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`join`](Self::join); [`Error::Io`](crate::Error::Io) if the
    /// watcher thread cannot be started.
    #[cfg(feature = "async")]
    pub fn join_async(self) -> impl std::future::Future<Output = Result<R>> + Send + 'static
    where
        R: 'static,
    {
        use std::sync::Arc;
        use std::task::Poll;
        let mut this = self;
        // `Some(None)`: no pidfd could be opened.
        let mut pidfd: Option<Option<Arc<std::os::fd::OwnedFd>>> = None;
        let mut registered: Option<super::exits::Registration> = None;
        std::future::poll_fn(move |cx| {
            if let Some(code) = this.poll(false)? {
                registered = None;
                return Poll::Ready(this.take(code));
            }
            if registered.as_ref().is_some_and(|r| r.renew(cx.waker())) {
                return Poll::Pending;
            }
            // We own the only handle: nothing else reaps the child, so its
            // pid stays its own while the pidfd is opened.
            let fd = pidfd
                .get_or_insert_with(|| proc::pidfd_open(this.pid).ok().map(Arc::new))
                .clone();
            registered = Some(
                super::exits::register(fd, cx.waker())
                    .map_err(|e| Error::from_os("start a thread", "the exit watcher", e))?,
            );
            // Pidfds are level-triggered: a child that ended meanwhile makes
            // the watcher's next `poll` return at once.
            Poll::Pending
        })
    }

    fn take(&mut self, exitcode: i32) -> Result<R> {
        if self.taken {
            return Err(Error::Process(ProcessError::AlreadyJoined {
                pid: self.pid,
            }));
        }
        self.taken = true;
        let frame = match channel::read(&self.channel) {
            Ok(f) => f,
            // A child killed while writing can leave a damaged frame; a
            // child that exited normally cannot.
            Err(_) if exitcode != 0 => None,
            Err(e) => return Err(e),
        };
        child::outcome(frame, self.pid, &self.name, exitcode)
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        let exit = self.exit.get_mut().unwrap_or_else(|p| p.into_inner());
        if exit.is_some() {
            return;
        }
        let abandons = std::mem::take(self.abandons.get_mut().unwrap_or_else(|p| p.into_inner()));
        match proc::reap(self.pid, false) {
            Ok(None) => children::hand_to_reaper(self.pid, abandons),
            _ => {
                children::unregister(self.pid);
                abandons.into_iter().for_each(|f| f());
            }
        }
    }
}

//! Waiting on several queue receivers and pipe ends at once, across
//! processes: crossbeam's `Select` (its `ready` family), ipc-channel's
//! `IpcReceiverSet`, Python's `multiprocessing.connection.wait`.
//!
//! ```
//! # fn main() -> Result<(), shmkit::Error> {
//! use shmkit::queue;
//! use shmkit::select::Select;
//! use std::time::Duration;
//!
//! let (tx1, rx1) = queue::bounded::<u32>(4)?;
//! let (_tx2, rx2) = queue::bounded::<u64>(4)?;
//! tx1.send(7).unwrap();
//!
//! let mut sel = Select::new();
//! let first = sel.recv(&rx1);
//! let second = sel.recv(&rx2);
//! match sel.ready_timeout(Duration::from_secs(1)) {
//!     Ok(i) if i == first => assert_eq!(rx1.try_recv().unwrap(), 7),
//!     Ok(i) if i == second => unreachable!("nothing was sent there"),
//!     Ok(_) => unreachable!(),
//!     Err(_) => unreachable!("a message is ready"),
//! }
//! # Ok(()) }
//! ```
//!
//! **How it waits.** Every queue and pipe direction has a futex word that a
//! sender bumps on each commit (when somebody sleeps). A `Select` sleeps on
//! all its sources' words at once with `futex_waitv` (Linux 5.16 and later;
//! shared futexes, so senders in any process wake it), after counting itself
//! as a sleeper on each, as a blocked receiver does: no thread per source
//! and no polling. On an older kernel (ENOSYS), or with more than 128
//! sources, it sleeps in slices of 1 ms instead. While it waits it looks for
//! dead peers every 50 ms, as every blocking receive does, so a source
//! whose senders were all killed becomes ready (disconnected).
//!
//! **Ready** means that a receive would not block: a message is there, the
//! senders (or the pipe's peer) are gone, or the segment was cut. Another
//! receiver may take the message first: then `try_recv` says `Empty` and you
//! select again, as with crossbeam's `ready`. **Fairness**: each call starts
//! its scan after the source it returned last time, so a source that is
//! always ready cannot starve the others.
//!
//! A `Select` keeps the sources' shared state, not the handles: it borrows
//! nothing, so the handles stay free for `recv` (pipe ends need `&mut`), and
//! it can be kept across a whole receive loop (its fairness needs that).

use crate::pipe::Connection;
use crate::queue::blocking::wake_one;
use crate::queue::raw::RawQueue;
use crate::queue::{Item, Receiver};
use crate::sys::futex;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One source: a queue (receiving) or a pipe end (receiving). It holds the
/// shared state only (not the handle), so a `Select` borrows nothing.
#[derive(Clone)]
enum Source {
    Queue(Arc<RawQueue>),
    Pipe(Arc<crate::pipe::RawPipe>, usize),
}

impl Source {
    fn words(&self) -> (&AtomicU32, &AtomicU32) {
        match self {
            Source::Queue(q) => q.recv_words(),
            Source::Pipe(p, end) => p.recv_words(*end),
        }
    }

    fn ready(&self) -> bool {
        match self {
            Source::Queue(q) => q.recv_ready(),
            Source::Pipe(p, end) => p.recv_ready(*end),
        }
    }

    /// Whether the next message is claimed by a sender that commits
    /// without a fence (`Ring::claimed_not_held`, queues only): a sleeper
    /// it may miss naps instead.
    fn behind(&self) -> bool {
        match self {
            Source::Queue(q) => q.ring().claimed_not_held(),
            Source::Pipe(..) => false,
        }
    }

    /// The word a receive sleeps on, for an async wait.
    #[cfg(feature = "async")]
    fn watch(&self) -> crate::sync::watcher::Watch {
        let (keep, (word, waiters)): (Arc<dyn std::any::Any + Send + Sync>, _) = match self {
            Source::Queue(q) => (q.clone(), q.recv_words()),
            Source::Pipe(p, end) => (p.clone(), p.recv_words(*end)),
        };
        // SAFETY: both words lie in the queue's or pipe's mapping, which
        // `keep` owns.
        unsafe { crate::sync::watcher::Watch::new(keep, word, waiters) }
    }

    /// Runs a due dead-peer look; whether that made the source ready
    /// (impossible state: the receive reports it); the next look's time.
    fn look(&self, now: Instant) -> (bool, Instant) {
        match self {
            Source::Queue(q) => (false, q.look_if_due(now)),
            Source::Pipe(p, end) => p.look_if_due(*end, now),
        }
    }
}

/// A set of receivers and pipe ends to wait on; see the [module](self).
#[derive(Default)]
pub struct Select {
    sources: Vec<Source>,
    /// Where the next scan starts (after the last source returned).
    next: usize,
}

impl fmt::Debug for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Select")
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

/// [`Select::try_ready`] found no source ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryReadyError;

impl fmt::Display for TryReadyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no source is ready: nothing to receive and every peer is connected")
    }
}

impl std::error::Error for TryReadyError {}

/// [`Select::ready_timeout`] found no source ready before the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyTimeoutError;

impl fmt::Display for ReadyTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no source became ready before the timeout")
    }
}

impl std::error::Error for ReadyTimeoutError {}

impl Select {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Select::default()
    }

    /// Adds a queue receiver; returns its index (0, 1, ... in the order
    /// added), which [`ready`](Self::ready) returns when it is ready.
    pub fn recv<T: Item>(&mut self, receiver: &Receiver<T>) -> usize {
        self.sources
            .push(Source::Queue(receiver.raw_queue().clone()));
        self.sources.len() - 1
    }

    /// Adds a pipe end (ready when a message can be received from it, or its
    /// peer is gone); returns its index.
    pub fn conn<T: crate::queue::Item>(&mut self, connection: &Connection<T>) -> usize {
        let (pipe, end) = connection.raw_end();
        self.sources.push(Source::Pipe(pipe.clone(), end));
        self.sources.len() - 1
    }

    /// How many sources were added.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The index of a source that is ready now.
    ///
    /// # Errors
    /// [`TryReadyError`] when none is (or none was added).
    pub fn try_ready(&mut self) -> Result<usize, TryReadyError> {
        self.scan().ok_or(TryReadyError)
    }

    /// Waits until a source is ready; its index.
    ///
    /// # Panics
    /// If no source was added (it would wait forever).
    pub fn ready(&mut self) -> usize {
        assert!(
            !self.sources.is_empty(),
            "shmkit: Select::ready() with no sources would wait forever; add one with recv()"
        );
        self.wait(None).expect("a wait without deadline returned")
    }

    /// Waits at most `timeout` for a source to be ready; its index. A zero
    /// timeout only looks.
    ///
    /// # Errors
    /// [`ReadyTimeoutError`] when none became ready in time.
    pub fn ready_timeout(&mut self, timeout: Duration) -> Result<usize, ReadyTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        match deadline {
            Some(d) => self.wait(Some(d)).ok_or(ReadyTimeoutError),
            None => Ok(self.ready()),
        }
    }

    /// [`ready`](Self::ready) as a future (feature `async`): the index of a
    /// source that is ready, awaited without blocking a thread. It registers
    /// on every source's word with shmkit's waiter threads and looks for
    /// dead peers as `ready` does.
    ///
    /// ```
    /// # fn main() -> Result<(), shmkit::Error> {
    /// use shmkit::queue;
    /// use shmkit::select::Select;
    ///
    /// let (_tx1, rx1) = queue::bounded::<u32>(4)?;
    /// let (tx2, rx2) = queue::bounded::<u64>(4)?;
    /// let mut sel = Select::new();
    /// sel.recv(&rx1);
    /// let second = sel.recv(&rx2);
    /// std::thread::spawn(move || tx2.send(9).unwrap());
    /// let i = futures::executor::block_on(sel.ready_async());
    /// assert_eq!(i, second);
    /// assert_eq!(rx2.try_recv().unwrap(), 9);
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// If no source was added (it would wait forever), or if the process
    /// cannot start a waiter thread.
    #[cfg(feature = "async")]
    pub fn ready_async(&mut self) -> impl std::future::Future<Output = usize> + Send + '_ {
        assert!(
            !self.sources.is_empty(),
            "shmkit: Select::ready_async() with no sources would wait forever; add one with recv()"
        );
        let watches = self.sources.iter().map(Source::watch).collect();
        let sources = self.sources.clone();
        let behind = self.sources.clone();
        // Whether a scan failed before (the future may since have taken a
        // wake-up meant for any sleeper of a source's word).
        let mut waited = false;
        crate::sync::watcher::until_any(
            watches,
            move || {
                if let Some(i) = self.scan() {
                    if waited {
                        // As the blocking select: hand the wake-ups of the
                        // other ready sources on to their other sleepers.
                        self.pass_on(i);
                    }
                    return Some(i);
                }
                waited = true;
                let now = Instant::now();
                let broken = self.sources.iter().position(|s| s.look(now).0)?;
                self.next = (broken + 1) % self.sources.len();
                Some(broken)
            },
            move || sources.iter().any(Source::ready),
            move || behind.iter().any(Source::behind),
        )
    }

    /// The first ready source, scanning from `next`.
    fn scan(&mut self) -> Option<usize> {
        let n = self.sources.len();
        let found = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&i| self.sources[i].ready())?;
        self.next = (found + 1) % n;
        Some(found)
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Option<usize> {
        if self.sources.is_empty() {
            // Nothing can become ready: wait out the timeout, as crossbeam.
            if let Some(d) = deadline {
                std::thread::sleep(d.saturating_duration_since(Instant::now()));
            }
            return None;
        }
        let mut slept = false;
        loop {
            // Read every word before looking at the states: a change after
            // this read makes the kernel refuse to sleep.
            let seen: Vec<u32> = self
                .sources
                .iter()
                .map(|s| s.words().0.load(Ordering::SeqCst))
                .collect();
            if let Some(i) = self.scan() {
                if slept {
                    self.pass_on(i);
                }
                return Some(i);
            }
            let now = Instant::now();
            let mut until = deadline;
            for (i, s) in self.sources.iter().enumerate() {
                let (broken, next_look) = s.look(now);
                if broken {
                    // The receive reports what is impossible.
                    self.next = (i + 1) % self.sources.len();
                    return Some(i);
                }
                until = Some(until.map_or(next_look, |u| u.min(next_look)));
            }
            if deadline.is_some_and(|d| now >= d) {
                return None;
            }
            let until = until.unwrap_or(now + Duration::from_millis(50));
            // SYNC(waiters): counted as a sleeper on every source (SeqCst),
            // then the states re-checked: a sender's commit either is seen
            // here, or sees our count and bumps the word (`wake_one`).
            for s in &self.sources {
                s.words().1.fetch_add(1, Ordering::SeqCst);
            }
            if !self.sources.iter().any(|s| s.ready()) {
                let mut left = until.saturating_duration_since(Instant::now());
                // Behind a sender that commits without a fence, which may
                // not see our count: a nap, then look again.
                if self.sources.iter().any(Source::behind) {
                    left = left.min(crate::queue::waiting::STALLED_NAP);
                }
                if !left.is_zero() {
                    self.sleep(&seen, left);
                }
            }
            for s in &self.sources {
                s.words().1.fetch_sub(1, Ordering::SeqCst);
            }
            slept = true;
        }
    }

    fn sleep(&self, seen: &[u32], left: Duration) {
        if self.sources.len() <= futex::WAITV_MAX {
            let words: Vec<(&AtomicU32, u32)> = self
                .sources
                .iter()
                .zip(seen)
                .map(|(s, &v)| (s.words().0, v))
                .collect();
            if futex::wait_any(&words, left).is_some() {
                return;
            }
        }
        // No futex_waitv (or too many sources): short slices.
        std::thread::sleep(left.min(Duration::from_millis(1)));
    }

    /// A sender wakes one sleeper per commit; that may have been this
    /// select, which returns `chosen`: hand the wake-up on to sleepers of
    /// the other ready sources, which would otherwise wait for their next
    /// look.
    fn pass_on(&self, chosen: usize) {
        for (i, s) in self.sources.iter().enumerate() {
            if i != chosen && s.ready() {
                let (word, waiters) = s.words();
                wake_one(word, waiters);
            }
        }
    }
}

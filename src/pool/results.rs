//! The handles that wait for a submitted call: [`AsyncResult`] and
//! [`MapResult`]. A waiting caller may collect outcomes itself (the pool's
//! `helper` receiver) instead of waiting for the collector thread.

use super::collector::Shared;
use super::job::Job;
use crate::codec::Message;
use crate::error::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The pending result of [`Pool::apply_async`](super::Pool::apply_async).
pub struct AsyncResult<R> {
    pub(crate) job: Arc<Job<R>>,
    pub(crate) pool: Arc<Shared>,
}

/// The pending result of [`Pool::map_async`](super::Pool::map_async):
/// every output, in input order.
pub struct MapResult<R> {
    pub(crate) job: Arc<Job<R>>,
    pub(crate) pool: Arc<Shared>,
}

macro_rules! pending_common {
    ($ty:ident) => {
        impl<R: Message + Send + 'static> $ty<R> {
            /// Whether the call has finished.
            pub fn ready(&self) -> bool {
                self.job.is_ready()
            }

            /// Waits until the call has finished.
            pub fn wait(&self) {
                self.help();
                self.job.wait_until(None, |_| self.job.is_ready());
            }

            /// Waits at most `timeout`; whether the call has finished.
            pub fn wait_timeout(&self, timeout: Duration) -> bool {
                self.help();
                self.job
                    .wait_until(Some(Instant::now() + timeout), |_| self.job.is_ready())
                    .is_some()
            }

            /// Takes outcomes off the result queue for a moment, before a
            /// wait would sleep.
            fn help(&self) {
                if self.job.worth_helping() {
                    self.pool.help_until(|| self.job.is_ready());
                }
            }

            /// `Some(true)` if the call finished and every item returned,
            /// `Some(false)` if one failed, `None` while it runs.
            pub fn successful(&self) -> Option<bool> {
                self.job.successful()
            }
        }

        impl<R> std::fmt::Debug for $ty<R> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("ready", &self.job.ready.load(Ordering::Relaxed))
                    .finish()
            }
        }
    };
}

pending_common!(AsyncResult);
pending_common!(MapResult);

impl<R: Message + Send + 'static> AsyncResult<R> {
    /// Waits for the task's return value, or its error
    /// ([`PoolError::TaskPanicked`](crate::error::PoolError::TaskPanicked), [`PoolError::WorkerDied`](crate::error::PoolError::WorkerDied), ...).
    ///
    /// # Errors
    ///
    /// [`PoolError::TaskPanicked`](crate::error::PoolError::TaskPanicked) if the task panicked, [`PoolError::WorkerDied`](crate::error::PoolError::WorkerDied) if its worker died,
    /// [`PoolError::Terminated`](crate::error::PoolError::Terminated) if the pool was terminated first, [`PoolError::TaskTooLarge`](crate::error::PoolError::TaskTooLarge) or
    /// [`Error::Encoding`] if the arguments or the result could not travel,
    /// [`ProcessError::FunctionNotFound`](crate::error::ProcessError::FunctionNotFound) if the worker could not run `f`.
    pub fn get(self) -> Result<R> {
        self.help();
        one(self.job.take_outcome(None).expect("no deadline"))
    }

    /// Like [`get`](Self::get), waiting at most `timeout`: `Err(Timeout)`
    /// if the task has not finished (call again later);
    /// [`PoolError::AlreadyTaken`](crate::error::PoolError::AlreadyTaken) once the value was taken.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the task has not finished; [`PoolError::AlreadyTaken`](crate::error::PoolError::AlreadyTaken) once the value was
    /// taken; otherwise as for [`get`](Self::get).
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<R> {
        self.help();
        match self.job.take_outcome(Some(Instant::now() + timeout)) {
            Some(o) => one(o),
            None => Err(Error::Timeout),
        }
    }
}

pub(super) fn one<R>(outcome: Result<Vec<R>>) -> Result<R> {
    outcome?.pop().ok_or(Error::Encoding {
        what: "a pool task",
        reason: "no output".into(),
    })
}

impl<R: Message + Send + 'static> MapResult<R> {
    /// Waits for every output, in input order; the first error by position
    /// if an item failed (as Python's `map` raises the first exception).
    ///
    /// # Errors
    ///
    /// The first item's error by position: [`PoolError::TaskPanicked`](crate::error::PoolError::TaskPanicked) if the task panicked,
    /// [`PoolError::WorkerDied`](crate::error::PoolError::WorkerDied) if its worker died, [`PoolError::Terminated`](crate::error::PoolError::Terminated) if the pool was
    /// terminated first, [`PoolError::TaskTooLarge`](crate::error::PoolError::TaskTooLarge) or [`Error::Encoding`] if the arguments or the
    /// result could not travel, [`ProcessError::FunctionNotFound`](crate::error::ProcessError::FunctionNotFound) if the worker could not run `f`.
    pub fn get(self) -> Result<Vec<R>> {
        self.help();
        self.job.take_outcome(None).expect("no deadline")
    }

    /// Like [`get`](Self::get), waiting at most `timeout`: `Err(Timeout)`
    /// if the call has not finished.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the call has not finished; [`PoolError::AlreadyTaken`](crate::error::PoolError::AlreadyTaken) once the outputs
    /// were taken; otherwise as for [`get`](Self::get).
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<Vec<R>> {
        self.help();
        self.job
            .take_outcome(Some(Instant::now() + timeout))
            .unwrap_or(Err(Error::Timeout))
    }
}

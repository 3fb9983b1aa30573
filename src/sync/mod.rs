//! Process-shared synchronisation: the family Python's `multiprocessing`
//! offers, placed in shared memory.
//!
//! - [`Mutex`] (and [`Lock`]): robust — a holder's death gives the next locker
//!   [`OwnerDied`] with the guard, never a lock-out.
//! - [`RwLock`], [`Semaphore`] (bounded or not), [`Event`], [`Condition`],
//!   [`Barrier`]: on shared futexes, with blocking, `try_` and `_timeout` forms.
//!
//! Every wait is a bounded spin, then a futex sleep without
//! `FUTEX_PRIVATE_FLAG` (a private futex is never woken by another process).

#[macro_use]
mod object;
pub(crate) mod atomic;
mod barrier;
mod condition;
mod event;
pub(crate) mod identity;
pub(crate) mod lock_word;
pub(crate) mod mutex;
#[cfg(feature = "async")]
mod mutex_async;
pub(crate) mod owner_lock;
pub(crate) mod raw_mutex;
pub(crate) mod robust_state;
mod rwlock;
mod semaphore;
pub(crate) mod wait;
#[cfg(feature = "async")]
pub(crate) mod watcher;

pub use barrier::{Barrier, BarrierBuilder, BarrierTimeout, BarrierWaitResult};
pub use condition::{Condition, ConditionBuilder};
pub use event::{Event, EventBuilder};
pub use mutex::{
    Lock, LockResult, Mutex, MutexBuilder, MutexGuard, OwnerDied, TryLockError, TryLockResult,
};
#[cfg(feature = "async")]
pub use rwlock::{ProcessReadGuard, ProcessWriteGuard};
pub use rwlock::{RwLock, RwLockBuilder, RwLockReadGuard, RwLockWriteGuard};
#[cfg(feature = "async")]
pub use semaphore::ProcessPermit;
pub use semaphore::{Semaphore, SemaphoreBuilder, SemaphoreFull, SemaphorePermit};

//! The atomics the loom-checked algorithms use (the queue ring and the lock
//! words): loom's under `--cfg loom`, std's otherwise (std's have the same
//! layout as the integers, which shared memory relies on; loom's do not, so
//! only the algorithms' own tests run under loom).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

//! The atomics the ring algorithm uses: loom's under `--cfg loom`, std's
//! otherwise (they have the same layout as the integers, which shared memory
//! relies on; loom's do not, so nothing but the ring builds under loom).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

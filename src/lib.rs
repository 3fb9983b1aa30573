//! # shmkit
//!
//! Share state between operating-system processes through shared memory,
//! without copying — what Python's `multiprocessing` gives Python programs,
//! done the Rust way.
//!
//! - [`Value`] and [`Array`]: typed shared regions of `T: Pod`, with a robust
//!   lock, an external lock, or none, and lock-free atomics for integers.
//! - [`sync`]: [`Mutex`](sync::Mutex) (survives a holder's death),
//!   [`RwLock`](sync::RwLock), [`Semaphore`](sync::Semaphore),
//!   [`Event`](sync::Event), [`Condition`](sync::Condition),
//!   [`Barrier`](sync::Barrier), all on shared futexes.
//! - [`region`]: the [`Segment`](region::Segment) beneath them all — named POSIX
//!   shared memory, anonymous memfd or a file, with a self-describing header
//!   checked on every open.
//! - [`process`]: start a function in a child ([`spawn`], or `fork`), join it
//!   for its return value or its panic; [`cpu_count`] that respects affinity
//!   and cgroup limits. Values and arrays passed as arguments are shared,
//!   not copied.
//! - [`queue`], [`pipe`]: a bounded MPMC queue and a duplex pipe in shared
//!   memory; [`pool`]: a process pool that survives its workers' deaths;
//!   [`SharedMap`]: a hash map every process uses directly.
//!
//! Linux only (futexes, memfd, robust mutexes).
//!
//! ```
//! # fn main() -> Result<(), shmkit::Error> {
//! let counter = shmkit::Value::new(0u64)?;
//! counter.fetch_add(1);
//! assert_eq!(counter.load(), 1);
//! # Ok(()) }
//! ```

#[macro_use]
mod macros;

pub mod atomic;
mod codec;
mod error;
pub mod map;
pub mod pipe;
pub mod pool;
pub mod process;
pub mod queue;
pub mod region;
mod shared;
pub mod sync;
mod sys;

mod array;
mod value;

pub use array::{Array, ArrayBuilder};
pub use atomic::AtomicInt;
pub use codec::{Message, RegionHandle};
pub use error::{Error, Result};
pub use map::{FixedStr, SharedMap};
pub use pool::Pool;
pub use process::{Process, cpu_count, spawn};
pub use queue::{Queue, QueueBuilder};
pub use region::cleanup_stale;
pub use value::{Value, ValueBuilder};

//! # shmkit
//!
//! Share state between operating-system processes through shared memory,
//! without copying — what Python's `multiprocessing` gives Python programs,
//! done the Rust way.
//!
//! - [`Value`] and [`Array`]: typed shared regions of `T: Pod`, with a robust
//!   lock, an external lock, or none, and lock-free atomics for integers.
//! - [`sync`]: [`Mutex`](sync::Mutex), [`RwLock`](sync::RwLock),
//!   [`Semaphore`](sync::Semaphore) permits and [`Barrier`](sync::Barrier)
//!   survive their holders' deaths; [`Event`](sync::Event),
//!   [`Condition`](sync::Condition); all on shared futexes.
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
//! Linux only (futexes, memfd, `/proc`).
//!
//! ```
//! # fn main() -> Result<(), shmkit::Error> {
//! let counter = shmkit::Value::new(0u64)?;
//! counter.fetch_add(1);
//! assert_eq!(counter.load(), 1);
//! # Ok(()) }
//! ```
//!
//! ## Your own types
//!
//! Shared regions and `Pod` queues hold plain old data: derive
//! [`Pod`] with the re-exported [`bytemuck`] (no dependency of your own
//! needed; name the path with `#[bytemuck(crate = ...)]`). `bool` is not
//! `Pod` (only 0 and 1 are valid, and a peer can write any byte): use `u8`,
//! as Python's `c_bool` is one byte. Messages that own memory (`String`,
//! `Vec`) travel with the re-exported [`rkyv`].
//!
//! ```
//! use shmkit::bytemuck::{Pod, Zeroable};
//!
//! #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
//! #[bytemuck(crate = "shmkit::bytemuck")]
//! #[repr(C)]
//! struct Point {
//!     x: f64,
//!     y: f64,
//!     visible: u8, // a bool for Python's c_bool
//!     _pad: [u8; 7],
//! }
//!
//! # fn main() -> Result<(), shmkit::Error> {
//! let p = shmkit::Value::new(Point { x: 1.0, y: 2.0, visible: 1, _pad: [0; 7] })?;
//! p.lock()?.x += 1.0;
//! assert_eq!(p.get()?.x, 2.0);
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
/// The `Pod` derive's crate, for your own shared types (see the crate docs).
pub use bytemuck;
pub use bytemuck::Pod;
pub use codec::{Message, RegionHandle};
pub use error::{Error, Result};
pub use map::{FixedStr, SharedMap};
pub use pool::Pool;
pub use process::{Process, cpu_count, spawn};
pub use queue::{Queue, QueueBuilder};
pub use region::cleanup_stale;
/// The message format of queues and pipes, for your own message types.
pub use rkyv;
pub use value::{Value, ValueBuilder};

//! # shmkit
//!
//! Share state between operating-system processes through shared memory,
//! without copying — what Python's `multiprocessing` gives Python programs,
//! done the Rust way.
//!
//! - [`Value`] and [`Array`]: typed shared regions of `T: Pod`, with a robust
//!   lock, an external lock, or none, and atomics for integers (lock-free on
//!   unlocked values).
//! - [`sync`]: [`Mutex`](sync::Mutex), [`RwLock`](sync::RwLock),
//!   [`Semaphore`](sync::Semaphore) permits and [`Barrier`](sync::Barrier)
//!   survive their holders' deaths; [`Event`](sync::Event),
//!   [`Condition`](sync::Condition); all on shared futexes.
//! - [`region`]: the [`Segment`](region::Segment) beneath them all — named POSIX
//!   shared memory, anonymous memfd or a file, with a self-describing header
//!   checked on every open.
//! - [`process`]: start a function in a child ([`spawn`], or `fork`), join it
//!   for its return value or its panic; [`cpu_count`] that respects affinity
//!   and cgroup limits. Values, arrays, queues, maps and the [`sync`]
//!   objects passed as arguments are shared, not copied.
//! - [`queue`], [`pipe`]: a bounded MPMC queue and a duplex pipe in shared
//!   memory; [`pool`]: a process pool that survives its workers' deaths;
//!   [`SharedMap`]: a hash map every process uses directly.
//! - [`select`]: wait on several queue receivers and pipe ends at once
//!   (crossbeam's `Select`, Python's `multiprocessing.connection.wait`).
//! - Feature `async`: `Receiver::recv_async`, `Sender::send_async` (every
//!   message kind; `recv_vec_async`/`send_bytes_async` for bytes), a pipe
//!   end's `recv_async`/`send_async` (and their bytes forms),
//!   `Select::ready_async`, `Event::wait_async`, `Barrier::wait_async`,
//!   `Semaphore::acquire_async`/`permit_async`, `Mutex::lock_async` (a
//!   `!Send` guard: see its docs), `RwLock::read_async`/`write_async`
//!   (`Send` guards), `Process::join_async` and
//!   the pool's
//!   `AsyncResult`/`MapResult` are futures for any executor (std `Waker`, no
//!   runtime pulled in), and `Imap::into_stream` a `Stream`: a few waiter
//!   threads per process serve every pending future (one per 127 shared
//!   words, one for every awaited child), not one thread each.
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
//! ## From Python's `multiprocessing`
//!
//! | Python | shmkit |
//! |---|---|
//! | `Value('l', 0)`, `with v.get_lock(): v.value += 1` | `Value::new(0i64)?`, `*v.lock()? += 1` |
//! | `Value('l', 0, lock=False)` | `Value::<i64>::builder().unlocked().create(0)?` (lock-free atomics) |
//! | `Array('d', 10)`, `a[3] = 1.5` | `Array::<f64>::new(10)?`, `a.set(3, 1.5)?` |
//! | `q = Queue(8)`, `q.put(x)`, `q.get()` | `let (tx, rx) = queue::bounded(8)?`, `tx.send(x)`, `rx.recv()` (a `Pod` item) |
//! | `q.put(obj)` of any picklable object | `queue::bounded_messages::<Rkyv<T>>(8, max_bytes)?` (or `Serde<T>`), `tx.send(obj)`, `rx.recv()` |
//! | `c_bool` | `u8` (`bool` is not `Pod`) |
//! | `q.get_nowait()`, `q.get(timeout=1)` | `rx.try_recv()`, `rx.recv_timeout(Duration::from_secs(1))` |
//! | a loop of `q.put(x)` / `q.get()` | `tx.send_many(&xs)?`, `let n = rx.recv_many(&mut buf)?` (`Pod` items: one claim and one wake-up per run of up to 64) |
//! | `except queue.Empty`, `except queue.Full` | `Err(TryRecvError::Empty)`, `Err(TrySendError::Full(x))` (each operation has its own error type; `Full` gives `x` back) |
//! | `q.qsize()`, `q.full()` | `rx.queue().len()`, `rx.queue().is_full()` |
//! | `JoinableQueue`: `task_done()`, `join()` | `Queue::builder().joinable(true)`, `rx.task_done()?`, `q.join()` |
//! | `a, b = Pipe()`, `a.send(x)`, `b.poll(t)`, `b.recv()` | `let (a, b) = pipe::pipe::<Rkyv<T>>()?`, `a.send(x)`, `b.poll(t)`, `b.recv()` |
//! | `connection.wait([r1, r2], timeout)` | [`Select`](select::Select): `sel.recv(&r1)`, `sel.ready_timeout(t)` |
//! | `Lock()`, `with lock:` | `Lock::new(())?`, `let _held = lock.lock()?` |
//! | `Semaphore(2)`, `with sem:` | `Semaphore::new(2)?`, `let _permit = sem.permit()?` |
//! | `Barrier(3).wait()`, `Event().set()` | `Barrier::new(3)?.wait()`, `Event::new()?.set()` |
//! | `Manager().dict()` | `SharedMap::<K, V>::new(capacity)?` (no server) |
//! | `Process(target=f, args=(a,))`, `start()`, `join()` | `let p = shmkit::spawn(f, a)?`, `p.join()?` (started at once) |
//! | `Process(target=f, args=(lock, v))` (a lock and a value shared with the child) | `shmkit::spawn(f, (lock.clone(), v.clone()))?` (shmkit objects travel as their name or descriptor: shared, not copied; a `Value` guarded by `with_lock` travels only with a named lock) |
//! | `p.daemon = True` | `process::Builder::new().daemon(true).spawn(f, a)?` |
//! | `Pool(4).map(f, xs)` | `Pool::builder().processes(4).build()?.map(f, xs)?` (`map_pod(f, &xs)` for `Pod` items: shared arrays, no encoding) |
//! | `cpu_count()` | `shmkit::cpu_count()` (affinity and cgroup quota respected) |
//!
//! Each row's Rust side, run (the README has the same table):
//!
//! ```
//! # fn main() -> Result<(), shmkit::Error> {
//! use shmkit::queue::{self, Queue, RecvTimeoutError, Rkyv, TryRecvError, TrySendError};
//! use shmkit::select::Select;
//! use shmkit::sync::{Barrier, Event, Lock, Semaphore};
//! use shmkit::{Array, SharedMap, Value, pipe};
//! use std::time::Duration;
//!
//! let v = Value::new(0i64)?;
//! *v.lock()? += 1;
//! let raw = Value::<i64>::builder().unlocked().create(0)?;
//! raw.fetch_add(1);
//! let a = Array::<f64>::new(10)?;
//! a.set(3, 1.5)?;
//!
//! let (tx, rx) = queue::bounded::<u64>(8)?;
//! tx.send(7).unwrap();
//! assert_eq!(rx.recv().unwrap(), 7);
//! assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
//! assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Timeout));
//! let (full_tx, _full_rx) = queue::bounded::<u64>(1)?;
//! full_tx.send(1).unwrap();
//! assert_eq!(full_tx.try_send(2), Err(TrySendError::Full(2)));
//! assert_eq!((rx.queue().len(), rx.queue().is_full()), (0, false));
//! tx.send_many(&[1, 2, 3]).unwrap();
//! let mut buf = [0u64; 8];
//! let n = rx.recv_many(&mut buf).unwrap();
//! assert_eq!(buf[..n], [1, 2, 3]);
//!
//! let q = Queue::<u64>::builder().joinable(true).create()?;
//! let (jtx, jrx) = (q.sender()?, q.receiver()?);
//! jtx.send(1).unwrap();
//! jrx.recv().unwrap();
//! jrx.task_done()?;
//! q.join();
//!
//! let (otx, orx) = queue::bounded_messages::<Rkyv<String>>(8, 256)?;
//! otx.send("any rkyv type".to_string()).unwrap();
//! assert_eq!(orx.recv().unwrap(), "any rkyv type");
//! let flag = Value::new(1u8)?; // c_bool
//!
//! let (a_end, b_end) = pipe::pipe::<Rkyv<String>>()?;
//! a_end.send("hello".to_string()).unwrap();
//! assert!(b_end.poll(Duration::from_secs(1)));
//! assert_eq!(b_end.recv().unwrap(), "hello");
//!
//! let mut sel = Select::new();
//! let first = sel.recv(&rx);
//! tx.send(8).unwrap();
//! assert_eq!(sel.ready_timeout(Duration::from_secs(1)), Ok(first));
//!
//! let lock = Lock::new(())?;
//! drop(lock.lock()?);
//! let sem = Semaphore::new(2)?;
//! drop(sem.permit()?);
//! Barrier::new(1)?.wait();
//! Event::new()?.set();
//! let d = SharedMap::<u64, u64>::new(16)?;
//! d.insert(1, 2)?;
//! assert!(shmkit::cpu_count() >= 1);
//! # Ok(()) }
//! ```
//!
//! And the process rows, run (they start processes):
//!
//! ```
//! # fn main() -> Result<(), shmkit::Error> {
//! use shmkit::{Pool, process};
//! fn f(x: u64) -> u64 {
//!     x * 2
//! }
//! let p = shmkit::spawn(f, 21)?;
//! assert_eq!(p.join()?, 42);
//! fn add_under_lock((lock, v): (shmkit::sync::Lock, shmkit::Value<i64>)) {
//!     let _held = lock.lock().unwrap();
//!     v.fetch_add(1);
//! }
//! let lock = shmkit::sync::Lock::new(())?;
//! let v = shmkit::Value::<i64>::builder().unlocked().create(0)?;
//! shmkit::spawn(add_under_lock, (lock.clone(), v.clone()))?.join()?;
//! assert_eq!(v.load(), 1);
//! let d = process::Builder::new().daemon(true).spawn(f, 1)?;
//! d.join()?;
//! let pool = Pool::builder().processes(4).build()?;
//! let squares = pool.map(f, 0..10u64)?;
//! assert_eq!(squares.len(), 10);
//! assert_eq!(pool.map_pod(f, &[1, 2, 3])?, [2, 4, 6]);
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

pub mod admin;
pub mod atomic;
mod codec;
pub mod error;
pub mod map;
pub mod pipe;
pub mod pool;
pub mod process;
pub mod queue;
pub mod region;
pub mod select;
mod shared;
pub mod sync;
mod sys;

mod array;
mod value;

pub use admin::cleanup_stale;
pub use array::{Array, ArrayBuilder};
pub use atomic::AtomicInt;
/// The `Pod` derive's crate, for your own shared types (see the crate docs).
pub use bytemuck;
pub use bytemuck::Pod;
pub use codec::Message;
pub use error::{Error, Result};
pub use map::{FixedStr, SharedMap};
pub use pool::Pool;
pub use process::{Process, cpu_count, spawn};
pub use queue::{Queue, QueueBuilder};
// The portable form of a region inside the handles that travel; users never
// build one, but the `Archive` impls of `Value`, `Array` and the rest name it.
#[doc(hidden)]
pub use region::handle::RegionHandle;
/// The message format of queues and pipes, for your own message types.
pub use rkyv;
/// serde, for `Queue<Serde<M>>` (feature `serde`), with its derive macros:
/// `#[derive(shmkit::serde::Serialize, shmkit::serde::Deserialize)]` and
/// `#[serde(crate = "shmkit::serde")]`.
#[cfg(feature = "serde")]
pub use serde;
pub use value::{Value, ValueBuilder};

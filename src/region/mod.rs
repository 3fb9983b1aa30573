//! Shared regions: a [`Segment`] is one mapping of a POSIX shared-memory object,
//! an anonymous memfd, or a file, that starts with a self-describing
//! [`Header`]. Everything else in shmkit lives in a segment.
//!
//! Creation is exclusive (`O_CREAT|O_EXCL`), the creator builds the region in
//! place and stores the header's ready word last (Release); an opener waits for
//! it (Acquire) up to a timeout, then checks magic, version, kind, element type,
//! length and file size, each mismatch a typed [`Error`](crate::Error).

pub(crate) mod handle;
mod header;
pub(crate) mod kind;
mod options;
mod segment;

pub(crate) use header::READY;
#[cfg(test)]
pub(crate) use header::tests as header_tests;
pub use header::{HEADER_SIZE, Header, LAYOUT_VERSION};
pub(crate) use header::{MIN_ALIGN, Spec};
pub(crate) use kind::fnv1a;
pub use kind::{Kind, MAGIC, TypeInfo};
pub use options::RegionOptions;
pub use segment::Segment;

//! [`RegionError`]: creating, opening and checking a shared region.

use crate::region::kind::{Kind, MAGIC, TypeInfo};
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Creating, opening and checking a shared region, and the fixed tables
/// inside one (a map's entries, a queue's handles).
///
/// `name` is the segment's name (`/shmkit-...`), its file path, or
/// `<anonymous>` for a memfd region.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RegionError {
    /// `create` found the name taken (we never adopt a pre-planted segment).
    AlreadyExists {
        /// The segment name.
        name: String,
    },
    /// `open` found no segment under the name.
    NotFound {
        /// The segment name.
        name: String,
    },
    /// The OS refused access (mode bits, or another user's segment).
    PermissionDenied {
        /// The segment name.
        name: String,
        /// The OS error (shared, so that the error is `Clone`).
        source: Arc<io::Error>,
    },
    /// The name cannot be used as a POSIX shared-memory name.
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Not enough room in the filesystem that backs the segment (often a small
    /// /dev/shm in a container).
    NoSpace {
        /// The segment name.
        name: String,
        /// Bytes asked for.
        requested: u64,
        /// Bytes free when we looked.
        available: u64,
    },
    /// The segment does not start with shmkit's magic number.
    NotShmkit {
        /// The segment name.
        name: String,
        /// The first eight bytes found.
        found_magic: u64,
    },
    /// The segment was made by an incompatible shmkit layout version.
    VersionMismatch {
        /// The segment name.
        name: String,
        /// Our layout version.
        expected: u32,
        /// The segment's.
        found: u32,
    },
    /// The segment holds another kind of object (an Array opened as a Value, ...).
    KindMismatch {
        /// The segment name.
        name: String,
        /// What the caller opened it as.
        expected: Kind,
        /// What the header says (raw, as a hostile peer may write anything).
        found: u32,
    },
    /// The element type differs (size, alignment, or type name/tag).
    TypeMismatch {
        /// The segment name.
        name: String,
        /// The caller's type.
        expected: TypeInfo,
        /// The segment's.
        found: TypeInfo,
    },
    /// The element count differs from the one the caller asked for.
    LengthMismatch {
        /// The segment name.
        name: String,
        /// The caller's count.
        expected: u64,
        /// The segment's.
        found: u64,
    },
    /// The backing object is shorter than its header says.
    Truncated {
        /// The segment name.
        name: String,
        /// Bytes the header requires.
        expected: u64,
        /// Bytes the object has.
        found: u64,
    },
    /// The creator has not published the segment within the open timeout.
    NotInitialized {
        /// The segment name.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The segment belongs to another user.
    ForeignOwner {
        /// The segment name.
        name: String,
        /// The owner's uid.
        owner_uid: u32,
        /// Ours.
        our_uid: u32,
    },
    /// A header field is impossible (offsets out of range, ...): the segment was
    /// damaged or written by a hostile peer.
    Corrupted {
        /// The segment name.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// A queue (or pipe) already has as many live handles as its participant
    /// table holds.
    TooManyHandles {
        /// The segment.
        name: String,
        /// Live senders and receivers a queue can have at once.
        max: usize,
    },
    /// A new key found no free slot in its part of a
    /// [`SharedMap`](crate::SharedMap).
    MapFull {
        /// The map's segment.
        name: String,
        /// The capacity it was created with.
        capacity: usize,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::AlreadyExists { name } => write!(
                f,
                "segment {name} already exists: open it instead, pick another name, \
                 or remove it (`shmkit clean`) if it is stale"
            ),
            RegionError::NotFound { name } => write!(
                f,
                "no segment named {name}: check the name, or create it first"
            ),
            RegionError::PermissionDenied { name, source } => write!(
                f,
                "permission denied on segment {name} ({source}): it belongs to another \
                 user or its mode forbids us"
            ),
            RegionError::InvalidName { name, reason } => write!(
                f,
                "invalid segment name {name:?}: {reason} (use up to 200 characters from \
                 [A-Za-z0-9._-], optionally after one leading '/')"
            ),
            RegionError::NoSpace {
                name,
                requested,
                available,
            } => write!(
                f,
                "not enough shared memory for {name}: asked for {requested} bytes \
                 ({:.1} MiB) but {available} bytes ({:.1} MiB) are free; free space in \
                 /dev/shm (`shmkit clean`), enlarge it (docker --shm-size), or ask for less",
                *requested as f64 / 1048576.0,
                *available as f64 / 1048576.0
            ),
            RegionError::NotShmkit { name, found_magic } => write!(
                f,
                "segment {name} is not a shmkit segment (magic {found_magic:#018x}, \
                 expected {:#018x}): another program owns this name",
                MAGIC
            ),
            RegionError::VersionMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "segment {name} has layout version {found}, this shmkit reads version \
                 {expected}: use the same shmkit version in every process"
            ),
            RegionError::KindMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "segment {name} holds a {}, not a {expected:?}: open it with the type \
                 that created it",
                Kind::from_raw(*found)
                    .map_or_else(|| format!("kind #{found}"), |k| format!("{k:?}"))
            ),
            RegionError::TypeMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "segment {name} holds elements of type {found}, but was opened as \
                 {expected}: open it with the same element type (or the same tag)"
            ),
            RegionError::LengthMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "segment {name} holds {found} elements, but {expected} were expected"
            ),
            RegionError::Truncated {
                name,
                expected,
                found,
            } => write!(
                f,
                "segment {name} is truncated: its header needs {expected} bytes but the \
                 object has {found}; somebody shrank it, recreate it"
            ),
            RegionError::NotInitialized { name, waited } => write!(
                f,
                "segment {name} was not initialised within {waited:?}: its creator is \
                 still building it or died doing so; retry with a longer open timeout, or \
                 remove it (`shmkit clean`) if its creator is gone"
            ),
            RegionError::ForeignOwner {
                name,
                owner_uid,
                our_uid,
            } => write!(
                f,
                "segment {name} belongs to uid {owner_uid}, not to us (uid {our_uid}); \
                 refusing to trust it. Use allow_foreign_owner(true) if that is intended"
            ),
            RegionError::Corrupted { name, what } => {
                write!(f, "segment {name} is corrupted: {what}; recreate it")
            }
            RegionError::TooManyHandles { name, max } => write!(
                f,
                "queue {name} has too many handles: at most {max} live senders and receivers \
                 per queue (each handle, clone or thread uses one); drop unused ones"
            ),
            RegionError::MapFull { name, capacity } => write!(
                f,
                "shared map {name} is full (created for {capacity} entries; its stripe for \
                 this key has no free slot): remove entries, or create a larger map"
            ),
        }
    }
}

impl std::error::Error for RegionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegionError::PermissionDenied { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

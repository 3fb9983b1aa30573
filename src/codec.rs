//! Messages between processes: any type that rkyv 0.8 can archive, encoded
//! once and validated (bytecheck) before it is read on the other side.
//!
//! Shared objects travel as *handles*: a [`Value`] or [`Array`] encodes as its
//! segment's name (or, for an anonymous region handed to a child, the number of
//! a descriptor the child inherits), and decodes by opening the region again —
//! its bytes are never copied. The usual header checks (kind, element type,
//! length) run on that open.

use crate::error::{Error, Result};
use crate::region::Segment;
use crate::{Array, Value};
use bytemuck::Pod;
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::{self, Fallible, Source};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Place, Serialize};
use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A value that can cross a process boundary: it derives rkyv's `Archive`,
/// `Serialize` and `Deserialize` (with bytecheck validation, rkyv's default).
///
/// Implemented for every such type; users never implement it by hand.
/// Standard types (integers, `String`, `Vec`, `Option`, tuples, ...) and
/// shmkit's [`Value`] and [`Array`] handles qualify.
pub trait Message: Sized {
    /// Encodes `self`.
    fn encode(&self) -> Result<AlignedVec>;
    /// Validates `bytes` as an archive of `Self`, then deserializes it.
    fn decode(bytes: &[u8]) -> Result<Self>;
}

impl<T> Message for T
where
    T: Archive + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn encode(&self) -> Result<AlignedVec> {
        rkyv::to_bytes::<rancor::Error>(self).map_err(|e| Error::Encoding {
            what: std::any::type_name::<T>(),
            reason: e.to_string(),
        })
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        // rkyv reads in place and needs the archive aligned; one copy of a
        // small message buys that (large data travels as handles).
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|e| Error::Encoding {
            what: std::any::type_name::<T>(),
            reason: e.to_string(),
        })
    }
}

/// The portable form of a [`Segment`]: how another process finds it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RegionHandle {
    /// POSIX name, for a named segment.
    pub name: Option<String>,
    /// File path, for a file-backed segment.
    pub path: Option<String>,
    /// Descriptor number the receiver inherited, for an anonymous region; -1
    /// otherwise.
    pub fd: i32,
}

impl RegionHandle {
    fn of(segment: &Segment) -> RegionHandle {
        let name = segment.name().map(str::to_owned);
        let path = segment.path().map(|p| p.to_string_lossy().into_owned());
        let fd = if name.is_none() && path.is_none() {
            segment.as_fd().as_raw_fd()
        } else {
            -1
        };
        RegionHandle { name, path, fd }
    }
}

thread_local! {
    /// While a spawn encodes its arguments: the descriptors of anonymous
    /// regions among them, which the child must inherit.
    static OUTGOING_FDS: RefCell<Option<Vec<RawFd>>> = const { RefCell::new(None) };
    /// In a spawned child: descriptors the parent declared as inherited, each
    /// claimable once.
    static INHERITED_FDS: RefCell<Vec<RawFd>> = const { RefCell::new(Vec::new()) };
}

/// Runs `encode` while collecting the descriptors of anonymous regions it
/// encodes; returns them with the result.
pub(crate) fn collecting_fds<R>(encode: impl FnOnce() -> R) -> (R, Vec<RawFd>) {
    OUTGOING_FDS.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let r = encode();
    let fds = OUTGOING_FDS
        .with(|s| s.borrow_mut().take())
        .unwrap_or_default();
    (r, fds)
}

/// Declares the descriptors a spawned child inherited for handles.
pub(crate) fn set_inherited_fds(fds: Vec<RawFd>) {
    INHERITED_FDS.with(|s| *s.borrow_mut() = fds);
}

fn note_outgoing(handle: &RegionHandle) -> Result<()> {
    if handle.fd < 0 {
        return Ok(());
    }
    OUTGOING_FDS.with(|s| match s.borrow_mut().as_mut() {
        Some(fds) => {
            fds.push(handle.fd);
            Ok(())
        }
        None => Err(Error::Encoding {
            what: "anonymous region handle",
            reason: "an anonymous region can only be passed as an argument to a spawned \
                     process (it travels as an inherited descriptor); give it a name \
                     (builder().name(..) or random_name()) to send it elsewhere"
                .into(),
        }),
    })
}

fn claim_inherited(fd: i32) -> Result<OwnedFd> {
    let ok = INHERITED_FDS.with(|s| {
        let mut fds = s.borrow_mut();
        fds.iter()
            .position(|&f| f == fd)
            .map(|i| fds.swap_remove(i))
    });
    match ok {
        // SAFETY: the parent cleared close-on-exec on exactly this descriptor
        // for us, and it is claimed at most once (removed from the list above),
        // so nothing else owns it.
        Some(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        None => Err(Error::Encoding {
            what: "anonymous region handle",
            reason: format!(
                "descriptor {fd} was not inherited from the parent, or was claimed twice"
            ),
        }),
    }
}

impl ArchivedRegionHandle {
    fn to_handle(&self) -> RegionHandle {
        RegionHandle {
            name: self.name.as_ref().map(|s| s.as_str().to_owned()),
            path: self.path.as_ref().map(|s| s.as_str().to_owned()),
            fd: self.fd.to_native(),
        }
    }
}

/// Archive, Serialize and Deserialize for a handle type, delegating to
/// [`RegionHandle`] and reopening with `$open`.
macro_rules! region_handle_archive {
    ($ty:ident, $open:expr) => {
        impl<T: Pod> Archive for $ty<T> {
            type Archived = ArchivedRegionHandle;
            type Resolver = RegionHandleResolver;

            fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
                RegionHandle::of(self.segment()).resolve(resolver, out)
            }
        }

        impl<T: Pod, S: Fallible + ?Sized> Serialize<S> for $ty<T>
        where
            RegionHandle: Serialize<S>,
            S::Error: Source,
        {
            fn serialize(&self, s: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
                let handle = RegionHandle::of(self.segment());
                note_outgoing(&handle).map_err(S::Error::new)?;
                handle.serialize(s)
            }
        }

        impl<T: Pod, D: Fallible + ?Sized> Deserialize<$ty<T>, D> for ArchivedRegionHandle
        where
            D::Error: Source,
        {
            fn deserialize(&self, _: &mut D) -> std::result::Result<$ty<T>, D::Error> {
                let open: fn(RegionHandle) -> Result<$ty<T>> = $open;
                open(self.to_handle()).map_err(D::Error::new)
            }
        }
    };
}

region_handle_archive!(Value, |h| match (h.name, h.path) {
    (Some(n), _) => Value::builder().name(n).open(),
    (None, Some(p)) => Value::builder().file(p).open(),
    (None, None) => Value::builder().from_fd(claim_inherited(h.fd)?),
});

region_handle_archive!(Array, |h| match (h.name, h.path) {
    (Some(n), _) => Array::builder().name(n).open(),
    (None, Some(p)) => Array::builder().file(p).open(),
    (None, None) => Array::builder().from_fd(claim_inherited(h.fd)?),
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let v = (7u32, String::from("bob"), vec![1u64, 2, 3]);
        let bytes = v.encode().unwrap();
        assert_eq!(<(u32, String, Vec<u64>)>::decode(&bytes).unwrap(), v);
        // Misaligned input is fine: decode realigns.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(<(u32, String, Vec<u64>)>::decode(&shifted[1..]).unwrap(), v);
        // A length field pointing outside the buffer fails validation.
        let mut bad = bytes.to_vec();
        let n = bad.len();
        bad[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            <(u32, String, Vec<u64>)>::decode(&bad),
            Err(Error::Encoding { .. })
        ));
    }

    #[test]
    fn named_value_travels_as_its_name() {
        let v = Value::builder().random_name().create(41u64).unwrap();
        let bytes = v.encode().unwrap();
        let w = Value::<u64>::decode(&bytes).unwrap();
        w.fetch_add(1);
        assert_eq!(v.load(), 42);
        assert!(
            bytes.len() < 64,
            "a handle, not the data: {} bytes",
            bytes.len()
        );
        // Wrong element type on the receiving side: the open check refuses.
        assert!(matches!(
            Value::<u32>::decode(&bytes),
            Err(Error::Encoding { .. })
        ));
    }

    #[test]
    fn anonymous_handles_need_a_spawn() {
        let a = Array::<u8>::new(16).unwrap();
        assert!(matches!(a.encode(), Err(Error::Encoding { .. })));
        let (r, fds) = collecting_fds(|| a.encode());
        assert!(r.is_ok());
        assert_eq!(fds, vec![a.segment().as_fd().as_raw_fd()]);
        // A descriptor that was not declared inherited is refused.
        assert!(Array::<u8>::decode(&r.unwrap()).is_err());
    }
}

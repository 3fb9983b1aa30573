//! Messages between processes: any type that rkyv 0.8 can archive, encoded
//! once and validated (bytecheck) before it is read on the other side.
//! Shared objects inside a message travel as handles
//! ([`crate::region::handle`]); each object type implements its encoding
//! where it is defined.

use crate::error::Result;
use crate::region::handle::{clear_cause, codec_failed};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::writer::Buffer;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// A value that can cross a process boundary: it derives rkyv's `Archive`,
/// `Serialize` and `Deserialize` (with bytecheck validation, rkyv's default).
///
/// Implemented for every such type; users never implement it by hand.
/// Standard types (integers, `String`, `Vec`, `Option`, tuples, ...) and
/// shmkit's [`Value`](crate::Value) and [`Array`](crate::Array) handles qualify.
pub trait Message: Sized {
    /// Encodes `self`.
    ///
    /// # Errors
    ///
    /// [`Error::Encoding`](crate::Error::Encoding) if rkyv cannot serialise the value; a handle
    /// in it that cannot travel gives its own error (an anonymous region outside a spawn, ...).
    fn encode(&self) -> Result<AlignedVec>;
    /// Encodes `self` into `buf` (which must be 16-aligned for the archive to
    /// be read in place); the length used. Fails if `buf` is too small.
    ///
    /// # Errors
    ///
    /// [`Error::Encoding`](crate::Error::Encoding) if rkyv cannot serialise the value, or `buf`
    /// is too small for it; a handle that cannot travel gives its own error, as in `encode`.
    fn encode_into(&self, buf: &mut [u8]) -> Result<usize>;
    /// Validates `bytes` as an archive of `Self`, then deserializes it.
    ///
    /// # Errors
    ///
    /// [`Error::Encoding`](crate::Error::Encoding) if `bytes` is not a valid archive of `Self`; if a handle in it cannot be
    /// opened, the error of that open ([`RegionError::NotFound`](crate::error::RegionError::NotFound), ...).
    fn decode(bytes: &[u8]) -> Result<Self>;
    /// Encodes `items` as one archive of `Vec<Self>` into `buf` (cleared
    /// first; its capacity is reused), after `prefix` zero bytes (a multiple
    /// of 16). (Used by the pool for chunks; generic code cannot name
    /// `Vec<Self>: Message`.)
    #[doc(hidden)]
    #[allow(clippy::ptr_arg, reason = "rkyv serializes a Vec, not a slice")]
    fn encode_vec(items: &Vec<Self>, buf: AlignedVec, prefix: usize) -> Result<AlignedVec>;
    /// Validates `bytes` as an archive of `Vec<Self>` and deserializes it:
    /// in place if `bytes` is 16-aligned, else from an aligned copy. Unlike
    /// [`decode`](Self::decode), the caller vouches that nobody writes
    /// `bytes` meanwhile (the pool's private queues, whose only writers are
    /// the pool and its own workers).
    #[doc(hidden)]
    fn decode_vec(bytes: &[u8]) -> Result<Vec<Self>>;
}

impl<T> Message for T
where
    T: Archive
        + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, ArenaHandle<'a>, rancor::Error>>,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn encode(&self) -> Result<AlignedVec> {
        clear_cause();
        rkyv::to_bytes::<rancor::Error>(self)
            .map_err(|e| codec_failed(std::any::type_name::<T>(), e))
    }

    fn encode_into(&self, buf: &mut [u8]) -> Result<usize> {
        clear_cause();
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, Buffer::from(buf))
            .map(|b| b.len())
            .map_err(|e| codec_failed(std::any::type_name::<T>(), e))
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        // rkyv reads in place and needs the archive aligned; one copy of a
        // small message buys that (large data travels as handles), and makes
        // the validated bytes private: a peer cannot change them between
        // validation and use.
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        clear_cause();
        rkyv::from_bytes::<T, rancor::Error>(&aligned)
            .map_err(|e| codec_failed(std::any::type_name::<T>(), e))
    }

    fn encode_vec(items: &Vec<Self>, mut buf: AlignedVec, prefix: usize) -> Result<AlignedVec> {
        debug_assert_eq!(prefix % 16, 0);
        buf.clear();
        buf.resize(prefix, 0);
        clear_cause();
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(items, buf)
            .map_err(|e| codec_failed(std::any::type_name::<Vec<T>>(), e))
    }

    fn decode_vec(bytes: &[u8]) -> Result<Vec<Self>> {
        clear_cause();
        let failed = |e: rancor::Error| codec_failed(std::any::type_name::<Vec<T>>(), e);
        if (bytes.as_ptr() as usize).is_multiple_of(16) {
            return rkyv::from_bytes::<Vec<T>, rancor::Error>(bytes).map_err(failed);
        }
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<Vec<T>, rancor::Error>(&aligned).map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::region::handle::collecting;
    use crate::{Array, Value};
    use std::os::fd::{AsFd, AsRawFd};

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
        // Wrong element type on the receiving side: the open check refuses,
        // and that (not a bare decoding failure) is the error.
        assert!(matches!(
            Value::<u32>::decode(&bytes),
            Err(Error::Region(
                crate::error::RegionError::TypeMismatch { .. }
            ))
        ));
    }

    #[test]
    fn anonymous_handles_need_a_spawn() {
        let a = Array::<u8>::new(16).unwrap();
        assert!(matches!(a.encode(), Err(Error::Encoding { .. })));
        let (r, out) = collecting(|| (a.clone(), a.clone()).encode());
        assert!(r.is_ok());
        // Two handles to one region: the descriptor is declared once.
        assert_eq!(out.fds, vec![a.segment().as_fd().as_raw_fd()]);
        // A descriptor that was not declared inherited is refused.
        assert!(<(Array<u8>, Array<u8>)>::decode(&r.unwrap()).is_err());
    }
}

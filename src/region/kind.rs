//! What a region says it is: the magic that starts every segment, the kind of
//! object it holds, and its element type's fingerprint. The vocabulary of the
//! header and of [`Error`](crate::Error)'s mismatch variants; it depends on
//! nothing of shmkit.

use std::fmt;

/// The first eight bytes of every shmkit segment: `b"shmkit\0\x01"`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"shmkit\0\x01");

/// What kind of object a region holds (the header's `kind` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum Kind {
    /// [`Value<T>`](crate::Value).
    Value = 1,
    /// [`Array<T>`](crate::Array).
    Array = 2,
    /// [`Mutex<T>`](crate::sync::Mutex).
    Mutex = 3,
    /// [`RwLock<T>`](crate::sync::RwLock).
    RwLock = 4,
    /// [`Semaphore`](crate::sync::Semaphore).
    Semaphore = 5,
    /// [`Event`](crate::sync::Event).
    Event = 6,
    /// [`Condition<T>`](crate::sync::Condition).
    Condition = 7,
    /// [`Barrier`](crate::sync::Barrier).
    Barrier = 8,
    /// [`Queue<T>`](crate::queue::Queue).
    Queue = 9,
    /// [`Pipe`](crate::pipe).
    Pipe = 10,
    /// [`SharedMap<K, V>`](crate::SharedMap).
    Map = 11,
}

impl Kind {
    /// The kind with this number, if any.
    #[must_use]
    pub fn from_raw(raw: u32) -> Option<Kind> {
        Some(match raw {
            1 => Kind::Value,
            2 => Kind::Array,
            3 => Kind::Mutex,
            4 => Kind::RwLock,
            5 => Kind::Semaphore,
            6 => Kind::Event,
            7 => Kind::Condition,
            8 => Kind::Barrier,
            9 => Kind::Queue,
            10 => Kind::Pipe,
            11 => Kind::Map,
            _ => return None,
        })
    }
}

/// An element type's fingerprint: size, alignment, and a hash of its name (or
/// of a tag the user gives, for types shared between differently named crates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// `size_of`.
    pub size: u64,
    /// `align_of`.
    pub align: u64,
    /// FNV-1a of `name`.
    pub hash: u64,
    /// `std::any::type_name`, or the tag (stored truncated to 64 bytes).
    pub name: String,
}

impl TypeInfo {
    /// The fingerprint of `T`, named by `std::any::type_name`.
    #[must_use]
    pub fn of<T>() -> TypeInfo {
        TypeInfo::tagged::<T>(std::any::type_name::<T>())
    }

    /// The fingerprint of `T` under a user-chosen tag.
    #[must_use]
    pub fn tagged<T>(tag: &str) -> TypeInfo {
        TypeInfo {
            size: std::mem::size_of::<T>() as u64,
            align: std::mem::align_of::<T>() as u64,
            hash: fnv1a(tag.as_bytes()),
            name: tag.to_owned(),
        }
    }

    pub(crate) fn same_type(&self, other: &TypeInfo) -> bool {
        self.size == other.size && self.align == other.align && self.hash == other.hash
    }
}

impl fmt::Display for TypeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` (size {}, align {}, hash {:#x})",
            self.name, self.size, self.align, self.hash
        )
    }
}

/// 64-bit FNV-1a.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_differ_by_name_size_and_tag() {
        assert!(TypeInfo::of::<u64>().same_type(&TypeInfo::of::<u64>()));
        assert!(!TypeInfo::of::<u64>().same_type(&TypeInfo::of::<i64>()));
        assert!(!TypeInfo::of::<u64>().same_type(&TypeInfo::of::<u32>()));
        assert!(TypeInfo::tagged::<u64>("t").same_type(&TypeInfo::tagged::<u64>("t")));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn kinds_round_trip() {
        for k in 1..=8 {
            assert_eq!(Kind::from_raw(k).unwrap() as u32, k);
        }
        assert!(Kind::from_raw(0).is_none());
        assert!(Kind::from_raw(99).is_none());
    }
}

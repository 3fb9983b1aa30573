//! The self-describing header at offset 0 of every region, and the checks an
//! opener makes against it.
//!
//! Byte layout (little-endian, 256 bytes; DESIGN.md has the table):
//! magic, layout version, object kind, ready word, flags, element type
//! (size, align, name hash), element count, control/data offsets, total length,
//! creator pid/uid/start time, the element type's name (for messages and the
//! CLI), a random nonce, and reserved bytes.

use super::{Kind, TypeInfo};
use crate::error::{Error, RegionError, Result};
use std::sync::atomic::{AtomicU32, Ordering};

pub use super::kind::MAGIC;
/// The layout version this build reads and writes.
pub const LAYOUT_VERSION: u32 = 6;
/// The value of the ready word once the creator has published the region.
pub(crate) const READY: u32 = 0x5245_4459; // "REDY"
/// Header size; the control block starts at or after this offset.
pub const HEADER_SIZE: usize = 256;
/// Room for the element type's name.
pub(crate) const TYPE_NAME_LEN: usize = 64;

/// The region header. Written by the creator before it stores `ready`
/// (Release); read by openers only after they load `ready == READY` (Acquire).
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// [`Kind`] as a number.
    pub kind: u32,
    /// 0 while the creator builds the region, then `READY`.
    // SYNC(region-ready): Release store in publish(), Acquire load in wait_ready().
    pub ready: AtomicU32,
    /// Object-specific flags (for Value/Array: the lock mode).
    pub flags: u32,
    /// `size_of` the element type.
    pub type_size: u64,
    /// `align_of` the element type.
    pub type_align: u64,
    /// FNV-1a hash of the element type's name or the user's tag.
    pub type_hash: u64,
    /// Number of elements.
    pub elem_count: u64,
    /// Offset of the control block (locks, indices).
    pub control_offset: u64,
    /// Size of the control block.
    pub control_size: u64,
    /// Offset of the first element.
    pub data_offset: u64,
    /// Bytes the region needs in all.
    pub total_len: u64,
    /// The creating process.
    pub creator_pid: u32,
    /// The creating user.
    pub creator_uid: u32,
    /// The creator's start time (clock ticks since boot), so that a reused pid
    /// is not mistaken for a live creator.
    pub creator_start: u64,
    /// The element type's name, NUL-padded, truncated to 64 bytes.
    pub type_name: [u8; TYPE_NAME_LEN],
    /// Random, written at creation (0 from creators before it existed): with
    /// the file's device and inode, names this region among every region
    /// of the machine, so that a process can tell it has mapped it already.
    pub nonce: u64,
    /// Zero; room for later versions.
    pub reserved: [u8; 80],
}

/// Where things are in a region, computed from what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) control_offset: u64,
    pub(crate) control_size: u64,
    pub(crate) data_offset: u64,
    pub(crate) total_len: u64,
}

/// What a region holds: the creator writes it into the header, an opener checks
/// the header against it.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) kind: Kind,
    pub(crate) flags: u32,
    pub(crate) ty: TypeInfo,
    pub(crate) control_size: u64,
    pub(crate) control_align: u64,
    /// The least alignment of the first element: [`MIN_ALIGN`] (a cache
    /// line) for arrays; smaller for a single value that shares the cache
    /// line of the lock ending the control block.
    pub(crate) data_align: u64,
}

/// Control blocks and element arrays start on a cache-line boundary at least.
pub(crate) const MIN_ALIGN: u64 = 64;

fn align_up(x: u64, a: u64) -> Option<u64> {
    debug_assert!(a.is_power_of_two());
    Some(x.checked_add(a - 1)? & !(a - 1))
}

impl Spec {
    /// The layout for `count` elements, or `None` if it overflows.
    pub(crate) fn layout(&self, count: u64) -> Option<Layout> {
        let control_offset = align_up(HEADER_SIZE as u64, self.control_align.max(MIN_ALIGN))?;
        let data_offset = align_up(
            control_offset.checked_add(self.control_size)?,
            self.ty.align.max(self.data_align).max(1),
        )?;
        let total_len = data_offset.checked_add(self.ty.size.checked_mul(count)?)?;
        // A mapping must fit in the address space.
        if total_len > isize::MAX as u64 {
            return None;
        }
        Some(Layout {
            control_offset,
            control_size: self.control_size,
            data_offset,
            total_len,
        })
    }
}

/// A plain copy of a header, read field by field from shared memory. A peer may
/// be writing while we read, so nothing here is trusted until checked.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) magic: u64,
    pub(crate) version: u32,
    pub(crate) kind: u32,
    pub(crate) flags: u32,
    pub(crate) ty: TypeInfo,
    pub(crate) elem_count: u64,
    pub(crate) layout: Layout,
    pub(crate) creator_pid: u32,
    pub(crate) creator_uid: u32,
    pub(crate) creator_start: u64,
}

impl Header {
    /// Writes every field but `ready` (which stays 0).
    ///
    /// # Safety
    /// `h` must be valid for writes of a `Header` and not yet published.
    pub(crate) unsafe fn write(h: *mut Header, spec: &Spec, count: u64, layout: Layout) {
        let mut type_name = [0u8; TYPE_NAME_LEN];
        let n = spec.ty.name.len().min(TYPE_NAME_LEN);
        type_name[..n].copy_from_slice(&spec.ty.name.as_bytes()[..n]);
        let pid = crate::sys::proc::pid();
        let start = crate::sys::proc::start_time(pid).unwrap_or(0);
        // SAFETY: forwarded to the caller: `h` is valid, unpublished memory.
        unsafe {
            h.write(Header {
                magic: MAGIC,
                version: LAYOUT_VERSION,
                kind: spec.kind as u32,
                ready: AtomicU32::new(0),
                flags: spec.flags,
                type_size: spec.ty.size,
                type_align: spec.ty.align,
                type_hash: spec.ty.hash,
                elem_count: count,
                control_offset: layout.control_offset,
                control_size: layout.control_size,
                data_offset: layout.data_offset,
                total_len: layout.total_len,
                creator_pid: pid,
                creator_uid: crate::sys::proc::euid(),
                creator_start: start,
                type_name,
                // 0 if the kernel gives no random bytes: such a region is
                // never recognised as mapped already (mapped anew instead).
                nonce: crate::sys::shm::random_bytes::<8>().map_or(0, u64::from_ne_bytes),
                reserved: [0; 80],
            })
        }
    }

    /// Publishes the region: every write before this is visible to an opener
    /// that sees `ready == READY`.
    pub(crate) fn publish(&self) {
        // SYNC(region-ready): pairs with the Acquire load in `is_ready`.
        self.ready.store(READY, Ordering::Release);
    }

    /// Whether the creator has published the region.
    pub(crate) fn is_ready(&self) -> bool {
        // SYNC(region-ready): pairs with the Release store in `publish`.
        self.ready.load(Ordering::Acquire) == READY
    }

    /// Copies the header out of shared memory.
    ///
    /// # Safety
    /// `h` must be valid for reads of a `Header` (it may be concurrently written:
    /// every field is read with a volatile load and is plain data).
    pub(crate) unsafe fn snapshot(h: *const Header) -> Snapshot {
        macro_rules! rd {
            ($f:ident) => {
                // SAFETY: forwarded to the caller; the field is plain old data.
                unsafe { std::ptr::addr_of!((*h).$f).read_volatile() }
            };
        }
        let raw_name: [u8; TYPE_NAME_LEN] = rd!(type_name);
        let end = raw_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TYPE_NAME_LEN);
        Snapshot {
            magic: rd!(magic),
            version: rd!(version),
            kind: rd!(kind),
            flags: rd!(flags),
            ty: TypeInfo {
                size: rd!(type_size),
                align: rd!(type_align),
                hash: rd!(type_hash),
                name: String::from_utf8_lossy(&raw_name[..end]).into_owned(),
            },
            elem_count: rd!(elem_count),
            layout: Layout {
                control_offset: rd!(control_offset),
                control_size: rd!(control_size),
                data_offset: rd!(data_offset),
                total_len: rd!(total_len),
            },
            creator_pid: rd!(creator_pid),
            creator_uid: rd!(creator_uid),
            creator_start: rd!(creator_start),
        }
    }
}

impl Snapshot {
    /// Checks a published header against what the opener expects. `file_len` is
    /// the object's size from `fstat`; `count` the element count the opener
    /// requires, if any. Returns the element count.
    pub(crate) fn check(
        &self,
        name: &str,
        spec: &Spec,
        count: Option<u64>,
        file_len: u64,
    ) -> Result<u64> {
        let name = name.to_owned();
        if self.magic != MAGIC {
            return Err(Error::Region(RegionError::NotShmkit {
                name,
                found_magic: self.magic,
            }));
        }
        if self.version != LAYOUT_VERSION {
            return Err(Error::Region(RegionError::VersionMismatch {
                name,
                expected: LAYOUT_VERSION,
                found: self.version,
            }));
        }
        if self.kind != spec.kind as u32 {
            return Err(Error::Region(RegionError::KindMismatch {
                name,
                expected: spec.kind,
                found: self.kind,
            }));
        }
        if !self.ty.same_type(&spec.ty) {
            return Err(Error::Region(RegionError::TypeMismatch {
                name,
                expected: spec.ty.clone(),
                found: self.ty.clone(),
            }));
        }
        if let Some(c) = count
            && c != self.elem_count
        {
            return Err(Error::Region(RegionError::LengthMismatch {
                name,
                expected: c,
                found: self.elem_count,
            }));
        }
        let Some(want) = spec.layout(self.elem_count) else {
            return Err(Error::Region(RegionError::Corrupted {
                name,
                what: format!(
                    "element count {} overflows the address space",
                    self.elem_count
                ),
            }));
        };
        if want != self.layout {
            return Err(Error::Region(RegionError::Corrupted {
                name,
                what: format!(
                    "layout {:?} does not match {:?} computed for {} elements",
                    self.layout, want, self.elem_count
                ),
            }));
        }
        if file_len < want.total_len {
            return Err(Error::Region(RegionError::Truncated {
                name,
                expected: want.total_len,
                found: file_len,
            }));
        }
        Ok(self.elem_count)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn header_layout_is_fixed() {
        assert_eq!(size_of::<Header>(), HEADER_SIZE);
        assert_eq!(align_of::<Header>(), 8);
        assert_eq!(offset_of!(Header, magic), 0);
        assert_eq!(offset_of!(Header, version), 8);
        assert_eq!(offset_of!(Header, kind), 12);
        assert_eq!(offset_of!(Header, ready), 16);
        assert_eq!(offset_of!(Header, flags), 20);
        assert_eq!(offset_of!(Header, type_size), 24);
        assert_eq!(offset_of!(Header, type_align), 32);
        assert_eq!(offset_of!(Header, type_hash), 40);
        assert_eq!(offset_of!(Header, elem_count), 48);
        assert_eq!(offset_of!(Header, control_offset), 56);
        assert_eq!(offset_of!(Header, control_size), 64);
        assert_eq!(offset_of!(Header, data_offset), 72);
        assert_eq!(offset_of!(Header, total_len), 80);
        assert_eq!(offset_of!(Header, creator_pid), 88);
        assert_eq!(offset_of!(Header, creator_uid), 92);
        assert_eq!(offset_of!(Header, creator_start), 96);
        assert_eq!(offset_of!(Header, type_name), 104);
        assert_eq!(offset_of!(Header, nonce), 168);
        assert_eq!(offset_of!(Header, reserved), 176);
    }

    fn spec() -> Spec {
        Spec {
            kind: Kind::Array,
            flags: 0,
            ty: TypeInfo::of::<u64>(),
            control_size: 64,
            control_align: 64,
            data_align: MIN_ALIGN,
        }
    }

    #[test]
    fn layout_aligns_and_rejects_overflow() {
        let l = spec().layout(10).unwrap();
        assert_eq!(l.control_offset, 256);
        assert_eq!(l.data_offset, 320);
        assert_eq!(l.total_len, 320 + 80);
        assert!(spec().layout(u64::MAX / 4).is_none());
    }

    fn snap(count: u64) -> Snapshot {
        let s = spec();
        Snapshot {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            kind: Kind::Array as u32,
            flags: 0,
            ty: s.ty.clone(),
            elem_count: count,
            layout: s.layout(count).unwrap(),
            creator_pid: 1,
            creator_uid: 0,
            creator_start: 0,
        }
    }

    #[test]
    fn check_reports_each_mismatch() {
        let s = spec();
        let ok = snap(10);
        assert_eq!(ok.check("n", &s, Some(10), 400).unwrap(), 10);
        let mut b = ok.clone();
        b.magic = 1;
        assert!(matches!(
            b.check("n", &s, None, 400),
            Err(Error::Region(RegionError::NotShmkit { .. }))
        ));
        let mut b = ok.clone();
        b.version = 99;
        assert!(matches!(
            b.check("n", &s, None, 400),
            Err(Error::Region(RegionError::VersionMismatch { .. }))
        ));
        let mut b = ok.clone();
        b.kind = Kind::Value as u32;
        assert!(matches!(
            b.check("n", &s, None, 400),
            Err(Error::Region(RegionError::KindMismatch { .. }))
        ));
        let mut b = ok.clone();
        b.ty = TypeInfo::of::<i64>();
        assert!(matches!(
            b.check("n", &s, None, 400),
            Err(Error::Region(RegionError::TypeMismatch { .. }))
        ));
        assert!(matches!(
            ok.check("n", &s, Some(11), 400),
            Err(Error::Region(RegionError::LengthMismatch { .. }))
        ));
        assert!(matches!(
            ok.check("n", &s, None, 399),
            Err(Error::Region(RegionError::Truncated { .. }))
        ));
        let mut b = ok.clone();
        b.layout.data_offset = 1 << 40;
        assert!(matches!(
            b.check("n", &s, None, 400),
            Err(Error::Region(RegionError::Corrupted { .. }))
        ));
        let mut b = ok.clone();
        b.elem_count = u64::MAX;
        assert!(matches!(
            b.check("n", &s, None, 400),
            Err(Error::Region(RegionError::Corrupted { .. }))
        ));
    }

    /// The rows of the markdown table that follows `heading` in DESIGN.md:
    /// (first column, second column, third column).
    pub(crate) fn design_rows(heading: &str) -> Vec<(String, String, String)> {
        let design = include_str!("../../DESIGN.md");
        let start = design.find(heading).expect("the heading is in DESIGN.md");
        design[start..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter(|l| !l.contains("---"))
            .skip(1)
            .map(|l| {
                let c: Vec<&str> = l.split('|').map(str::trim).collect();
                (c[1].to_owned(), c[2].to_owned(), c[3].to_owned())
            })
            .collect()
    }

    #[test]
    fn design_md_header_table_matches_the_code() {
        use std::mem::offset_of;
        let fields: &[(&str, usize)] = &[
            ("magic", offset_of!(Header, magic)),
            ("version", offset_of!(Header, version)),
            ("kind", offset_of!(Header, kind)),
            ("ready", offset_of!(Header, ready)),
            ("flags", offset_of!(Header, flags)),
            ("type_size", offset_of!(Header, type_size)),
            ("type_align", offset_of!(Header, type_align)),
            ("type_hash", offset_of!(Header, type_hash)),
            ("elem_count", offset_of!(Header, elem_count)),
            ("control_offset", offset_of!(Header, control_offset)),
            ("control_size", offset_of!(Header, control_size)),
            ("data_offset", offset_of!(Header, data_offset)),
            ("total_len", offset_of!(Header, total_len)),
            ("creator_pid", offset_of!(Header, creator_pid)),
            ("creator_uid", offset_of!(Header, creator_uid)),
            ("creator_start", offset_of!(Header, creator_start)),
            ("type_name", offset_of!(Header, type_name)),
            ("nonce", offset_of!(Header, nonce)),
            ("reserved", offset_of!(Header, reserved)),
        ];
        let rows = design_rows("## Region layout");
        assert_eq!(rows.len(), fields.len(), "one row per Header field");
        for ((offset, field, meaning), (name, at)) in rows.iter().zip(fields) {
            let row_name = field.split_whitespace().next().unwrap();
            assert_eq!(row_name, *name, "DESIGN.md's header table is out of order");
            assert_eq!(offset.parse::<usize>().unwrap(), *at, "offset of {name}");
            if *name == "version" {
                assert!(
                    meaning.contains(&format!("({LAYOUT_VERSION})")),
                    "DESIGN.md says {meaning}, the code writes {LAYOUT_VERSION}"
                );
            }
            if *name == "kind" {
                let kinds: Vec<(String, u32)> = meaning
                    .split_whitespace()
                    .map(|p| {
                        let (k, n) = p.split_once('=').expect("Name=number");
                        (k.to_owned(), n.parse().unwrap())
                    })
                    .collect();
                for (k, n) in &kinds {
                    let kind = Kind::from_raw(*n).expect("a kind the code knows");
                    assert_eq!(format!("{kind:?}"), *k, "kind number {n}");
                }
                let known = (1..100).filter(|n| Kind::from_raw(*n).is_some()).count();
                assert_eq!(kinds.len(), known, "every kind is in the table");
            }
        }
        assert_eq!(size_of::<Header>(), HEADER_SIZE);
    }
}

//! [`SharedMap`]: a fixed-capacity hash map in shared memory, used directly
//! by every process — Python's `Manager().dict()` without the server process
//! and the socket round trip per operation.
//!
//! ```
//! # fn main() -> shmkit::Result<()> {
//! use shmkit::{FixedStr, SharedMap};
//! let d = SharedMap::<u64, u64>::new(1000)?;             // anonymous; or builder().name(..)
//! let children: Vec<_> = (0..8u64)
//!     .map(|i| shmkit::spawn(|(d, i): (SharedMap<u64, u64>, u64)| {
//!         d.insert(i, i * i).unwrap();
//!     }, (d.clone(), i)))
//!     .collect::<Result<_, _>>()?;
//! for c in children { c.join()?; }
//! assert_eq!(d.get(&7), Some(49));
//! let names = SharedMap::<FixedStr<16>, u32>::new(100)?;   // string keys
//! names.insert(FixedStr::new("alice")?, 1)?;
//! # Ok(()) }
//! ```
//!
//! - **Keys and values** are `Pod` (integers, floats, fixed arrays, your
//!   `#[repr(C)]` structs), compared by their bytes; [`FixedStr<N>`] makes
//!   string keys and values of up to `N` bytes. The map has twice as many
//!   slots as the capacity given at creation (at least 16), cut into
//!   stripes; an insert whose stripe has no free slot is [`RegionError::MapFull`].
//!   So `capacity` entries fit whenever the keys' hashes spread (a stripe
//!   fills early only for unlucky or adversarial keys: the hash is the same
//!   in every process, hence unseeded), and somewhat more may fit.
//! - **Stripes.** The table is cut into up to 64 stripes, each an
//!   open-addressing table with its own robust lock and its own sequence
//!   number. Writers lock their key's stripe; readers ([`get`](SharedMap::get),
//!   [`contains_key`](SharedMap::contains_key), [`snapshot`](SharedMap::snapshot))
//!   take no lock: they copy what they need and retry if the stripe's sequence
//!   number moved meanwhile (a seqlock), so they never wait behind a writer
//!   that is not in the middle of a write. (Copying bytes that another
//!   process may be writing is, strictly, a data race in Rust's model; like
//!   every seqlock, the copy is volatile and thrown away unless the sequence
//!   number proves it whole.)
//! - **Crashes.** Before a writer changes a slot it saves the old slot in
//!   its stripe's undo record; the change counts once the record is cleared.
//!   If the writer dies in between, the next process to take the stripe's
//!   lock (the robust mutex reports the death) puts the old slot back: an
//!   entry is always the old or the new one, never torn. A `clear` cut short
//!   is finished instead.
//! - **Open checks**, as for every region: the key and value types (size,
//!   alignment, name) and, if given, the capacity must match; the geometry
//!   is validated against the mapping once and copied privately, so a peer
//!   cannot send a probe out of bounds.

use crate::error::{Error, RegionError, Result};
use crate::region::{RegionOptions, Segment};
use crate::sync::mutex::RawMutex;
use bytemuck::Pod;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;

mod fixed_str;
mod stripes;

pub use fixed_str::FixedStr;
pub(crate) use stripes::figures_from;
use stripes::{FULL, Geometry, MapControl, Slot, Stripe, UNDO_CLEAR, spec};

/// A hash map in shared memory. See the [module docs](self).
///
/// Cheap to clone (one mapping); travels to spawned children and pool tasks
/// as a handle.
pub struct SharedMap<K, V> {
    inner: Arc<Inner>,
    _t: PhantomData<fn() -> (K, V)>,
}

struct Inner {
    seg: Segment,
    geo: Geometry,
}

impl<K, V> Clone for SharedMap<K, V> {
    fn clone(&self) -> Self {
        SharedMap {
            inner: self.inner.clone(),
            _t: PhantomData,
        }
    }
}

/// Shows the entries, as Python's `print(d)` and std's maps do (a
/// [`snapshot`](SharedMap::snapshot); `{:#?}` adds the segment and the
/// capacity).
impl<K: Pod + std::fmt::Debug, V: Pod + std::fmt::Debug> std::fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.snapshot();
        if f.alternate() {
            write!(
                f,
                "SharedMap({}, capacity {}) ",
                self.inner.seg.id(),
                self.inner.geo.capacity
            )?;
        }
        f.debug_map()
            .entries(entries.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

/// Builder for [`SharedMap`].
#[derive(Debug)]
pub struct SharedMapBuilder<K, V> {
    opts: RegionOptions,
    capacity: Option<u64>,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K: Pod, V: Pod> SharedMapBuilder<K, V> {
    region_setters!();

    /// The number of entries (required to create; checked on open if given).
    #[must_use]
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = Some(n as u64);
        self
    }

    /// Creates the map.
    ///
    /// # Errors
    ///
    /// [`RegionError::InvalidName`] if no [`capacity`](Self::capacity) was given; [`RegionError::NoSpace`] if
    /// the capacity does not fit the address space; as for any region: [`RegionError::AlreadyExists`] if
    /// the name is taken, [`RegionError::InvalidName`] for a bad name, [`RegionError::NoSpace`] if /dev/shm (or
    /// the file's filesystem) is too small, [`RegionError::PermissionDenied`] or [`Error::Io`] if the OS
    /// refuses.
    pub fn create(self) -> Result<SharedMap<K, V>> {
        let capacity = self.capacity.ok_or_else(|| {
            Error::Region(RegionError::InvalidName {
                name: String::new(),
                reason: "a SharedMap needs a capacity: builder().capacity(n)",
            })
        })?;
        let geo = Geometry::for_capacity::<K, V>(capacity).ok_or(Error::Region(
            RegionError::NoSpace {
                name: "<new map>".into(),
                requested: u64::MAX,
                available: 0,
            },
        ))?;
        let seg = Segment::create(
            &self.opts,
            &spec::<K, V>(&self.opts),
            geo.bytes,
            |control, data| {
                let c = control.cast::<MapControl>();
                // SAFETY: the segment is unpublished and zero-filled, sized for
                // the control block and `geo.bytes` of data; zero is a valid
                // Stripe except its mutex, initialised here, and a valid EMPTY
                // slot.
                unsafe {
                    (*c).capacity = capacity;
                    (*c).stripes = geo.stripes;
                    (*c).per_stripe = geo.per_stripe;
                    (*c).stride = size_of::<Slot<K, V>>() as u64;
                    (*c).key_size = size_of::<K>() as u32;
                    (*c).key_align = align_of::<K>() as u32;
                    (*c).value_size = size_of::<V>() as u32;
                    (*c).value_align = align_of::<V>() as u32;
                    for s in 0..geo.stripes as usize {
                        let st = data.cast::<Stripe>().add(s);
                        RawMutex::init(std::ptr::addr_of_mut!((*st).lock)).map_err(|e| {
                            Error::Io {
                                op: "pthread_mutex_init",
                                name: String::new(),
                                source: std::sync::Arc::new(e),
                            }
                        })?;
                    }
                }
                Ok(())
            },
        )?;
        SharedMap::checked(seg, None)
    }

    /// Opens an existing map by name (or file).
    ///
    /// # Errors
    ///
    /// [`RegionError::NotFound`] if no segment has the name; [`RegionError::InvalidName`] for a bad name or
    /// none (open needs a name or a path); [`RegionError::KindMismatch`] if it is not a map,
    /// [`RegionError::TypeMismatch`] if it holds other key and value types (or another tag),
    /// [`RegionError::Corrupted`] if its key or value sizes or its geometry differ,
    /// [`RegionError::LengthMismatch`] if its capacity differs from [`capacity`](Self::capacity); and the
    /// other open errors of any region ([`RegionError::NotInitialized`], [`RegionError::ForeignOwner`],
    /// [`RegionError::Truncated`], ...).
    pub fn open(self) -> Result<SharedMap<K, V>> {
        let seg = Segment::open(&self.opts, &spec::<K, V>(&self.opts), None)?;
        SharedMap::checked(seg, self.capacity)
    }

    /// Opens a map from a descriptor (an anonymous map passed to a child).
    ///
    /// # Errors
    ///
    /// The checks of an open: [`RegionError::KindMismatch`] if it is not a map, [`RegionError::TypeMismatch`]
    /// if it holds other key and value types, [`RegionError::Corrupted`] if its key or value sizes or its
    /// geometry differ, [`RegionError::LengthMismatch`] if its capacity differs from
    /// [`capacity`](Self::capacity); [`RegionError::NotInitialized`] if it was never published;
    /// [`Error::Io`] if `fstat` or `mmap` fails.
    pub fn from_fd(self, fd: std::os::fd::OwnedFd) -> Result<SharedMap<K, V>> {
        let seg = Segment::from_fd(fd, &self.opts, &spec::<K, V>(&self.opts), None)?;
        SharedMap::checked(seg, self.capacity)
    }
}

impl<K: Pod, V: Pod> SharedMap<K, V> {
    /// An anonymous map for `capacity` entries (shared with children it is
    /// passed to).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the OS refuses the memory (`memfd_create`, `ftruncate`, `mmap`).
    /// [`RegionError::NoSpace`] if `capacity` entries do not fit the address space.
    pub fn new(capacity: usize) -> Result<Self> {
        Self::builder().capacity(capacity).create()
    }

    /// A builder: a name, a capacity, open or create.
    #[must_use]
    pub fn builder() -> SharedMapBuilder<K, V> {
        SharedMapBuilder {
            opts: RegionOptions::default(),
            capacity: None,
            _t: PhantomData,
        }
    }

    /// Opens the named map (any capacity).
    ///
    /// # Errors
    ///
    /// [`RegionError::NotFound`] if no segment has the name; [`RegionError::InvalidName`] for a bad name;
    /// [`RegionError::KindMismatch`] if it is not a map, [`RegionError::TypeMismatch`] if it holds other key
    /// and value types, [`RegionError::Corrupted`] if its key or value sizes or its geometry differ; and
    /// the other open errors of any region ([`RegionError::NotInitialized`], [`RegionError::ForeignOwner`],
    /// [`RegionError::Truncated`], ...).
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    fn checked(seg: Segment, expect: Option<u64>) -> Result<Self> {
        // SAFETY: the header check guarantees a published control block of
        // MapControl's size and alignment; its fields are plain u64s that a
        // peer may write, so they are copied once with volatile reads.
        let c = unsafe { std::ptr::read_volatile(seg.control_ptr().cast::<MapControl>()) };
        let corrupt = |what: String| {
            Error::Region(RegionError::Corrupted {
                name: seg.id(),
                what,
            })
        };
        let ours = [
            size_of::<K>(),
            align_of::<K>(),
            size_of::<V>(),
            align_of::<V>(),
        ];
        let theirs = [c.key_size, c.key_align, c.value_size, c.value_align].map(|x| x as usize);
        if ours != theirs {
            return Err(corrupt(format!(
                "the map holds keys of {} bytes (align {}) and values of {} bytes (align {}); \
                 this handle expects {}-byte keys (align {}) and {}-byte values (align {})",
                theirs[0], theirs[1], theirs[2], theirs[3], ours[0], ours[1], ours[2], ours[3]
            )));
        }
        // The geometry must be exactly the one `create` derives from the
        // capacity (which also bounds stripes, slots and the count checks).
        let geo = match Geometry::for_capacity::<K, V>(c.capacity) {
            Some(g)
                if g.stripes == c.stripes
                    && g.per_stripe == c.per_stripe
                    && c.stride == size_of::<Slot<K, V>>() as u64
                    && g.bytes == seg.element_count() =>
            {
                g
            }
            _ => {
                return Err(corrupt(format!(
                    "map geometry (capacity {}, {} stripes of {} slots of {} bytes) does not \
                     match its {}-byte data area",
                    c.capacity,
                    c.stripes,
                    c.per_stripe,
                    c.stride,
                    seg.element_count()
                )));
            }
        };
        if let Some(n) = expect
            && n != geo.capacity
        {
            return Err(Error::Region(RegionError::LengthMismatch {
                name: seg.id(),
                expected: n,
                found: geo.capacity,
            }));
        }
        Ok(SharedMap {
            inner: Arc::new(Inner { seg, geo }),
            _t: PhantomData,
        })
    }

    /// The region beneath.
    #[must_use]
    pub fn segment(&self) -> &Segment {
        &self.inner.seg
    }

    /// The number of entries asked for at creation.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.inner.geo.capacity as usize
    }

    /// A copy of the value for `key`, without taking a lock.
    pub fn get(&self, key: &K) -> Option<V> {
        let (s, home, tag) = self.place(key);
        self.read_stable(s, || {
            self.find(s, home, tag, key)
                .ok()
                .map(|i| self.read_slot(s, i).value)
        })
    }

    /// Whether `key` is present, without taking a lock.
    pub fn contains_key(&self, key: &K) -> bool {
        let (s, home, tag) = self.place(key);
        self.read_stable(s, || self.find(s, home, tag, key).is_ok())
    }

    /// Calls `f` with the value for `key`, read in place under its stripe's
    /// lock (no copy of a large value); `None` if absent. As with
    /// [`update`](Self::update), do not use the map from `f`.
    pub fn get_with<T>(&self, key: &K, f: impl FnOnce(&V) -> T) -> Option<T> {
        let (s, home, tag) = self.place(key);
        let _g = self.lock_stripe(s);
        let i = self.find(s, home, tag, key).ok()?;
        let slot = self.slot_ptr(s, i);
        // SAFETY: in bounds and aligned; we hold the stripe's lock, so no
        // writer changes the slot while `f` reads it; V is Pod.
        Some(f(unsafe { &*std::ptr::addr_of!((*slot).value) }))
    }

    /// Sets `key` to `value`; the previous value if there was one.
    ///
    /// # Errors
    ///
    /// [`RegionError::MapFull`] if the key is new and its stripe has no free slot;
    /// [`RegionError::Truncated`] if a peer has shrunk the segment.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>> {
        let mut old = None;
        self.update(&key, |v| {
            old = v;
            Some(value)
        })?;
        Ok(old)
    }

    /// Replaces the value for `key` with `f(current)`, atomically (no other
    /// writer of its stripe runs in between): `f` gets `None` if the key is
    /// absent, and returns the new value, or `None` to remove the key. The
    /// new value, if any.
    ///
    /// `f` runs under the stripe's lock: keep it short, and do not use the
    /// map from it (locking the same stripe again would deadlock; the lock
    /// detects that and panics). If `f` panics, nothing changes. On
    /// `MapFull`, `f` has run but its value was not stored.
    ///
    /// # Errors
    ///
    /// [`RegionError::MapFull`] if the key is new and its stripe has no free slot.
    ///
    /// [`RegionError::Truncated`] if a peer has shrunk the segment (checked before
    /// and after the update; after a truncation the update may have gone to
    /// private zero pages and is lost).
    pub fn update(&self, key: &K, f: impl FnOnce(Option<V>) -> Option<V>) -> Result<Option<V>> {
        self.inner.seg.check()?;
        let r = self.update_locked(key, f);
        self.inner.seg.check()?;
        r
    }

    /// Removes `key`; its value if it was present.
    pub fn remove(&self, key: &K) -> Option<V> {
        let mut old = None;
        let _ = self.update(key, |v| {
            old = v;
            None
        });
        old
    }

    /// The number of entries (the sum of the stripes' counts, each exact
    /// at some moment during the call).
    #[must_use]
    pub fn len(&self) -> usize {
        // A peer may have written any count: each is capped at its stripe.
        let per = self.inner.geo.per_stripe;
        (0..self.inner.geo.stripes as usize)
            .map(|s| self.stripe(s).len.load(Ordering::Acquire).min(per) as usize)
            .sum()
    }

    /// Whether the map has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, copied: each stripe as it was at one moment (stripes
    /// are read one after another, without locks).
    #[must_use]
    pub fn snapshot(&self) -> Vec<(K, V)> {
        let mut out = Vec::with_capacity(self.len()); // at most the slot count
        for s in 0..self.inner.geo.stripes as usize {
            let part = self.read_stable(s, || {
                (0..self.inner.geo.per_stripe as usize)
                    .map(|i| self.read_slot(s, i))
                    .filter(|slot| slot.state == FULL)
                    .map(|slot| (slot.key, slot.value))
                    .collect::<Vec<_>>()
            });
            out.extend(part);
        }
        out
    }

    /// The entries of [`snapshot`](Self::snapshot), as an iterator.
    #[must_use]
    pub fn iter(&self) -> std::vec::IntoIter<(K, V)> {
        self.snapshot().into_iter()
    }

    /// Removes every entry (stripe by stripe; a clear cut short by a death
    /// is finished by the next locker of that stripe).
    pub fn clear(&self) {
        for s in 0..self.inner.geo.stripes as usize {
            let _g = self.lock_stripe(s);
            let st = self.stripe(s);
            let odd = self.begin_write(st);
            self.arm(st, UNDO_CLEAR);
            self.clear_stripe(s);
            self.end_write(st, odd);
        }
    }
}

impl<K: Pod, V: Pod> crate::region::handle::Travels for SharedMap<K, V> {}

crate::region::handle::region_handle_archive!(SharedMap<K: Pod, V: Pod>, |h| {
    crate::region::handle::reopen_with!(h, SharedMap::builder())
});

#[cfg(test)]
mod tests;

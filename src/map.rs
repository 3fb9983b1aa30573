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
//!   stripes; an insert whose stripe has no free slot is [`Error::MapFull`].
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

use crate::error::{Error, Result};
use crate::region::{Kind, RegionOptions, Segment, Spec, TypeInfo};
use crate::sync::mutex::{Acquired, LINE_REST, RawMutex};
use bytemuck::{Pod, Zeroable};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// A string of at most `N` bytes stored inline, zero-padded: a `Pod` key
/// or value for a [`SharedMap`] (or any shared region).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FixedStr<const N: usize>([u8; N]);

// SAFETY: a transparent wrapper of `[u8; N]`, which is Zeroable and Pod (no
// padding, every bit pattern valid).
unsafe impl<const N: usize> Zeroable for FixedStr<N> {}
// SAFETY: as above.
unsafe impl<const N: usize> Pod for FixedStr<N> {}

impl<const N: usize> FixedStr<N> {
    /// `s`, if it fits in `N` bytes and has no NUL byte (NUL pads).
    ///
    /// # Errors
    ///
    /// [`Error::Encoding`] if `s` is longer than `N` bytes or holds a NUL byte.
    pub fn new(s: &str) -> Result<Self> {
        if s.len() > N || s.as_bytes().contains(&0) {
            return Err(Error::Encoding {
                what: "FixedStr",
                reason: format!(
                    "{:?} does not fit: at most {N} bytes, no NUL byte (it is {} bytes)",
                    s,
                    s.len()
                ),
            });
        }
        let mut b = [0u8; N];
        b[..s.len()].copy_from_slice(s.as_bytes());
        Ok(FixedStr(b))
    }

    /// The string (up to the first NUL; a peer may have written invalid
    /// UTF-8, which is replaced lossily).
    #[must_use]
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        String::from_utf8_lossy(&self.0[..end])
    }
}

impl<const N: usize> std::fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.as_str(), f)
    }
}

impl<const N: usize> std::fmt::Display for FixedStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// Slot states.
const EMPTY: u32 = 0;
const FULL: u32 = 1;
// Deletion shifts entries back, so no tombstones are written; any other
// state (a peer's garbage) is skipped by probes and reused by inserts.

/// Undo record states.
const UNDO_NONE: u64 = 0;
const UNDO_SLOT: u64 = 1;
const UNDO_CLEAR: u64 = 2;
const UNDO_SHIFT: u64 = 3;

/// Optimistic read attempts before a reader takes the stripe's lock (a
/// writer that died mid-write leaves the sequence odd until then).
const READ_ATTEMPTS: u32 = 64;

/// One entry. `hash` is the high half of the key's hash (a fast reject).
#[repr(C)]
#[derive(Clone, Copy)]
struct Slot<K, V> {
    state: u32,
    hash: u32,
    key: K,
    value: V,
}

/// A stripe's lock, sequence number, count and undo record.
#[repr(C, align(64))]
struct Stripe {
    lock: RawMutex,
    /// The lock keeps its cache line (sleepers wait on the words below).
    _lock_line: [u8; LINE_REST],
    /// Odd while a writer changes the stripe.
    seq: AtomicU64,
    /// Live entries.
    len: AtomicU64,
    /// `UNDO_SLOT`: the slot `undo_slot` is being changed, its old contents
    /// are in the undo area and `undo_len` is the old count (repair rolls
    /// back); `UNDO_SHIFT`: a deletion is shifting entries back into the
    /// hole at `undo_slot`, to leave `undo_len` entries (repair rolls
    /// forward); `UNDO_CLEAR`: a clear is under way (rolled forward).
    undo: AtomicU64,
    undo_slot: AtomicU64,
    undo_len: AtomicU64,
    _pad: [u64; 3],
}

/// The control block: the geometry, written once at creation.
#[repr(C, align(64))]
struct MapControl {
    /// Entries asked for at creation.
    capacity: u64,
    stripes: u64,
    /// Slots per stripe (a power of two).
    per_stripe: u64,
    /// `size_of::<Slot<K, V>>()`.
    stride: u64,
    /// Size and alignment of `K` and of `V`, checked on open besides the
    /// type name (which a caller may replace with a tag).
    key_size: u32,
    key_align: u32,
    value_size: u32,
    value_align: u32,
    _pad: [u64; 2],
}

/// Where things are in the data area.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    capacity: u64,
    stripes: u64,
    per_stripe: u64,
    slots_at: u64,
    undo_at: u64,
    bytes: u64,
}

impl Geometry {
    fn for_capacity<K, V>(capacity: u64) -> Option<Geometry> {
        let slots = capacity
            .checked_mul(2)?
            .max(16)
            .checked_next_power_of_two()?;
        let stripes = (slots / 16).clamp(1, 64);
        Self::layout::<K, V>(capacity, stripes, slots / stripes)
    }

    fn layout<K, V>(capacity: u64, stripes: u64, per_stripe: u64) -> Option<Geometry> {
        let stride = size_of::<Slot<K, V>>() as u64;
        let slots_at = stripes
            .checked_mul(size_of::<Stripe>() as u64)?
            .checked_next_multiple_of(64)?;
        let undo_at = slots_at
            .checked_add(stripes.checked_mul(per_stripe)?.checked_mul(stride)?)?
            .checked_next_multiple_of(64)?;
        let bytes = undo_at.checked_add(stripes.checked_mul(stride)?)?;
        Some(Geometry {
            capacity,
            stripes,
            per_stripe,
            slots_at,
            undo_at,
            bytes,
        })
    }
}

fn spec<K, V>(opts: &RegionOptions) -> Spec {
    let tag = std::any::type_name::<SharedMap<K, V>>();
    Spec {
        kind: Kind::Map,
        flags: 0,
        ty: TypeInfo::tagged::<u8>(opts.tag.as_deref().unwrap_or(tag)),
        control_size: size_of::<MapControl>() as u64,
        control_align: align_of::<MapControl>() as u64,
        data_align: crate::region::MIN_ALIGN,
    }
}

/// The key's hash: murmur3's finaliser over 8-byte words of its bytes. The
/// same in every process (no random seed).
fn hash_of<K: Pod>(key: &K) -> u64 {
    let bytes = bytemuck::bytes_of(key);
    let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(31);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h ^= u64::from_le_bytes(tail);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

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
    /// [`Error::InvalidName`] if no [`capacity`](Self::capacity) was given; [`Error::NoSpace`] if
    /// the capacity does not fit the address space; as for any region: [`Error::AlreadyExists`] if
    /// the name is taken, [`Error::InvalidName`] for a bad name, [`Error::NoSpace`] if /dev/shm (or
    /// the file's filesystem) is too small, [`Error::PermissionDenied`] or [`Error::Io`] if the OS
    /// refuses.
    pub fn create(self) -> Result<SharedMap<K, V>> {
        let capacity = self.capacity.ok_or_else(|| Error::InvalidName {
            name: String::new(),
            reason: "a SharedMap needs a capacity: builder().capacity(n)",
        })?;
        let geo = Geometry::for_capacity::<K, V>(capacity).ok_or(Error::NoSpace {
            name: "<new map>".into(),
            requested: u64::MAX,
            available: 0,
        })?;
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
                                source: e,
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
    /// [`Error::NotFound`] if no segment has the name; [`Error::InvalidName`] for a bad name or
    /// none (open needs a name or a path); [`Error::KindMismatch`] if it is not a map,
    /// [`Error::TypeMismatch`] if it holds other key and value types (or another tag),
    /// [`Error::Corrupted`] if its key or value sizes or its geometry differ,
    /// [`Error::LengthMismatch`] if its capacity differs from [`capacity`](Self::capacity); and the
    /// other open errors of any region ([`Error::NotInitialized`], [`Error::ForeignOwner`],
    /// [`Error::Truncated`], ...).
    pub fn open(self) -> Result<SharedMap<K, V>> {
        let seg = Segment::open(&self.opts, &spec::<K, V>(&self.opts), None)?;
        SharedMap::checked(seg, self.capacity)
    }

    /// Opens a map from a descriptor (an anonymous map passed to a child).
    ///
    /// # Errors
    ///
    /// The checks of an open: [`Error::KindMismatch`] if it is not a map, [`Error::TypeMismatch`]
    /// if it holds other key and value types, [`Error::Corrupted`] if its key or value sizes or its
    /// geometry differ, [`Error::LengthMismatch`] if its capacity differs from
    /// [`capacity`](Self::capacity); [`Error::NotInitialized`] if it was never published;
    /// [`Error::Io`] if `fstat` or `mmap` fails.
    pub fn from_fd(self, fd: std::os::fd::OwnedFd) -> Result<SharedMap<K, V>> {
        let seg = Segment::from_fd(fd, &self.opts, &spec::<K, V>(&self.opts), None)?;
        SharedMap::checked(seg, self.capacity)
    }
}

/// Holds a stripe's lock; repairs a dead holder's half-done write first.
struct StripeGuard<'a> {
    stripe: &'a Stripe,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard's thread took the lock in `lock_stripe`.
        unsafe { self.stripe.lock.unlock() };
    }
}

impl<K: Pod, V: Pod> SharedMap<K, V> {
    /// An anonymous map for `capacity` entries (shared with children it is
    /// passed to).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the OS refuses the memory (`memfd_create`, `ftruncate`, `mmap`).
    /// [`Error::NoSpace`] if `capacity` entries do not fit the address space.
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
    /// [`Error::NotFound`] if no segment has the name; [`Error::InvalidName`] for a bad name;
    /// [`Error::KindMismatch`] if it is not a map, [`Error::TypeMismatch`] if it holds other key
    /// and value types, [`Error::Corrupted`] if its key or value sizes or its geometry differ; and
    /// the other open errors of any region ([`Error::NotInitialized`], [`Error::ForeignOwner`],
    /// [`Error::Truncated`], ...).
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    fn checked(seg: Segment, expect: Option<u64>) -> Result<Self> {
        // SAFETY: the header check guarantees a published control block of
        // MapControl's size and alignment; its fields are plain u64s that a
        // peer may write, so they are copied once with volatile reads.
        let c = unsafe { std::ptr::read_volatile(seg.control_ptr().cast::<MapControl>()) };
        let corrupt = |what: String| Error::Corrupted {
            name: seg.id(),
            what,
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
            return Err(Error::LengthMismatch {
                name: seg.id(),
                expected: n,
                found: geo.capacity,
            });
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

    fn stripe(&self, s: usize) -> &Stripe {
        debug_assert!((s as u64) < self.inner.geo.stripes);
        // SAFETY: `s < stripes` and the data area holds `stripes` Stripes
        // at offset 0 (geometry checked against the mapping on open).
        unsafe { &*self.inner.seg.data_ptr().cast::<Stripe>().add(s) }
    }

    fn slot_ptr(&self, s: usize, i: usize) -> *mut Slot<K, V> {
        let g = &self.inner.geo;
        debug_assert!((i as u64) < g.per_stripe);
        // SAFETY: s < stripes and i < per_stripe: inside the slot area
        // (checked against the mapping on open).
        unsafe {
            self.inner
                .seg
                .data_ptr()
                .add(g.slots_at as usize)
                .cast::<Slot<K, V>>()
                .add(s * g.per_stripe as usize + i)
        }
    }

    fn undo_ptr(&self, s: usize) -> *mut Slot<K, V> {
        // SAFETY: s < stripes: inside the undo area (checked on open).
        unsafe {
            self.inner
                .seg
                .data_ptr()
                .add(self.inner.geo.undo_at as usize)
                .cast::<Slot<K, V>>()
                .add(s)
        }
    }

    fn read_slot(&self, s: usize, i: usize) -> Slot<K, V> {
        // SAFETY: in bounds (slot_ptr); any bits are a valid Slot (Pod
        // fields, u32 state); a racing writer may tear the copy, which the
        // caller detects through the stripe's sequence number or prevents
        // by holding the lock.
        unsafe { std::ptr::read_volatile(self.slot_ptr(s, i)) }
    }

    /// Where `key` lives: its stripe and home slot.
    fn place(&self, key: &K) -> (usize, usize, u32) {
        let h = hash_of(key);
        let g = &self.inner.geo;
        let s = (h & (g.stripes - 1)) as usize;
        let home = ((h >> 32) & (g.per_stripe - 1)) as usize;
        // The tag comes from other bits than the home slot's, so that
        // neighbours in a probe run differ in it.
        (s, home, (h >> 8) as u32)
    }

    /// Probes stripe `s` for `key`: `Ok(slot)` if present, else
    /// `Err(Some(free slot))` / `Err(None)` if the stripe is full.
    fn find(
        &self,
        s: usize,
        home: usize,
        tag: u32,
        key: &K,
    ) -> std::result::Result<usize, Option<usize>> {
        let n = self.inner.geo.per_stripe as usize;
        let mut free = None;
        for j in 0..n {
            let i = (home + j) & (n - 1);
            let slot = self.read_slot(s, i);
            match slot.state {
                EMPTY => return Err(free.or(Some(i))),
                FULL if slot.hash == tag
                    && bytemuck::bytes_of(&slot.key) == bytemuck::bytes_of(key) =>
                {
                    return Ok(i);
                }
                FULL => {}
                _ => {
                    free.get_or_insert(i);
                }
            }
        }
        Err(free)
    }

    /// Runs `read` until it saw the stripe unchanged (no lock); after
    /// [`READ_ATTEMPTS`], under the lock (which repairs a dead writer).
    fn read_stable<T>(&self, s: usize, read: impl Fn() -> T) -> T {
        let st = self.stripe(s);
        for _ in 0..READ_ATTEMPTS {
            let before = st.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let r = read();
                // SYNC(seq): the slot copies above happen before the
                // re-read; pairs with the writer's odd/even increments.
                fence(Ordering::Acquire);
                if st.seq.load(Ordering::Relaxed) == before {
                    return r;
                }
            }
            std::hint::spin_loop();
        }
        let _g = self.lock_stripe(s);
        read()
    }

    fn lock_stripe(&self, s: usize) -> StripeGuard<'_> {
        let st = self.stripe(s);
        if let Acquired::Poisoned = st.lock.lock() {
            self.repair(s);
            // SAFETY: we hold the lock.
            unsafe { st.lock.clear_poison() };
        }
        StripeGuard { stripe: st }
    }

    /// Under the lock, after its holder died: puts back the slot it was
    /// changing, or finishes its clear; ends its odd sequence.
    fn repair(&self, s: usize) {
        let st = self.stripe(s);
        self.begin_write(st);
        match st.undo.load(Ordering::Acquire) {
            UNDO_SLOT => {
                let i = st.undo_slot.load(Ordering::SeqCst);
                if i < self.inner.geo.per_stripe {
                    // SAFETY: both in bounds; Pod copies; we hold the lock.
                    unsafe {
                        let old = std::ptr::read_volatile(self.undo_ptr(s));
                        std::ptr::write_volatile(self.slot_ptr(s, i as usize), old);
                    }
                    st.len
                        .store(st.undo_len.load(Ordering::SeqCst), Ordering::SeqCst);
                }
            }
            UNDO_CLEAR => self.clear_stripe(s),
            UNDO_SHIFT => {
                let hole = st.undo_slot.load(Ordering::Acquire);
                if hole < self.inner.geo.per_stripe {
                    self.shift_from(s, hole as usize);
                }
                st.len
                    .store(st.undo_len.load(Ordering::Acquire), Ordering::Relaxed);
            }
            _ => {}
        }
        let odd = st.seq.load(Ordering::Relaxed) | 1;
        self.end_write(st, odd);
    }

    /// Under the lock: starts a change of the stripe (readers retry until
    /// [`end_write`](Self::end_write)). The returned odd sequence number
    /// goes to `end_write`.
    fn begin_write(&self, st: &Stripe) -> u64 {
        // We hold the lock: the only writer of `seq` and the undo record.
        // `| 1` keeps the protocol right even if a peer left `seq` odd.
        let odd = st.seq.load(Ordering::Relaxed) | 1;
        st.seq.store(odd, Ordering::Relaxed);
        // SYNC(seq): the odd number is visible before any write below;
        // pairs with the reader's fence before its second load.
        fence(Ordering::Release);
        odd
    }

    /// Arms the undo record (`UNDO_SLOT` after its contents are written, or
    /// `UNDO_CLEAR`): from here a death is repaired by the next locker.
    fn arm(&self, st: &Stripe, kind: u64) {
        // The release store keeps the record's contents before the flag; the
        // fence keeps the flag before the changes that follow (a compiler
        // may otherwise move either across: the dead writer's program order
        // is what the repairer sees).
        st.undo.store(kind, Ordering::Release);
        fence(Ordering::Release);
    }

    /// Ends a change: the undo record is disarmed (the change counts),
    /// then readers may read again.
    fn end_write(&self, st: &Stripe, odd: u64) {
        st.undo.store(UNDO_NONE, Ordering::Release);
        st.seq.store(odd.wrapping_add(1), Ordering::Release);
    }

    /// Under the lock: replaces slot `i` of stripe `s` with `new`, and the
    /// count with `len`, so that a death at any point leaves the old slot or
    /// the new one.
    fn write_slot(&self, s: usize, i: usize, new: Slot<K, V>, len: u64) {
        let st = self.stripe(s);
        let odd = self.begin_write(st);
        // SAFETY: in bounds; we hold the stripe's lock, so no other writer
        // touches the slot or the undo area; Pod copies.
        unsafe {
            std::ptr::write_volatile(self.undo_ptr(s), self.read_slot(s, i));
        }
        st.undo_slot.store(i as u64, Ordering::Relaxed);
        st.undo_len
            .store(st.len.load(Ordering::Relaxed), Ordering::Relaxed);
        self.arm(st, UNDO_SLOT);
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(self.slot_ptr(s, i), new) };
        st.len.store(len, Ordering::Relaxed);
        self.end_write(st, odd);
    }

    fn clear_stripe(&self, s: usize) {
        let empty: Slot<K, V> = Slot {
            state: EMPTY,
            hash: 0,
            key: K::zeroed(),
            value: V::zeroed(),
        };
        for i in 0..self.inner.geo.per_stripe as usize {
            // SAFETY: in bounds; the caller holds the lock.
            unsafe { std::ptr::write_volatile(self.slot_ptr(s, i), empty) };
        }
        self.stripe(s).len.store(0, Ordering::SeqCst);
    }

    /// Under the lock: removes the entry in slot `i` by backward-shift
    /// deletion (no tombstones: later entries of the probe run move back
    /// into the hole), leaving `len` entries. Rolled forward by
    /// [`repair`](Self::repair) if the writer dies midway.
    fn delete_at(&self, s: usize, i: usize, len: u64) {
        let st = self.stripe(s);
        let odd = self.begin_write(st);
        st.undo_slot.store(i as u64, Ordering::Relaxed);
        st.undo_len.store(len, Ordering::Relaxed);
        self.arm(st, UNDO_SHIFT);
        self.shift_from(s, i);
        st.len.store(len, Ordering::Relaxed);
        self.end_write(st, odd);
    }

    /// Fills the hole at `hole` with the next entry of its probe run that
    /// may move there, then fills the hole that leaves, until an empty slot
    /// ends the run. Idempotent from any point: the current hole is kept in
    /// `undo_slot` (stored after the slot that fills it), so a rerun after a
    /// death makes the same moves.
    fn shift_from(&self, s: usize, mut hole: usize) {
        let st = self.stripe(s);
        let n = self.inner.geo.per_stripe as usize;
        let mut j = hole;
        for _ in 1..n {
            j = (j + 1) & (n - 1);
            let slot = self.read_slot(s, j);
            if slot.state == EMPTY {
                break;
            }
            let home = self.place(&slot.key).1;
            // May the entry at j move back to `hole`? Only if its home is
            // not cyclically within (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if slot.state != FULL || stays {
                continue;
            }
            // SAFETY: in bounds; we hold the stripe's lock; Pod copy.
            unsafe { std::ptr::write_volatile(self.slot_ptr(s, hole), slot) };
            st.undo_slot.store(j as u64, Ordering::Release);
            fence(Ordering::Release);
            hole = j;
        }
        let mut empty = self.read_slot(s, hole);
        empty.state = EMPTY;
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(self.slot_ptr(s, hole), empty) };
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
    /// [`Error::MapFull`] if the key is new and its stripe has no free slot;
    /// [`Error::Truncated`] if a peer has shrunk the segment.
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
    /// [`Error::MapFull`] if the key is new and its stripe has no free slot.
    ///
    /// [`Error::Truncated`] if a peer has shrunk the segment (checked before
    /// and after the update; after a truncation the update may have gone to
    /// private zero pages and is lost).
    pub fn update(&self, key: &K, f: impl FnOnce(Option<V>) -> Option<V>) -> Result<Option<V>> {
        self.inner.seg.check()?;
        let r = self.update_locked(key, f);
        self.inner.seg.check()?;
        r
    }

    fn update_locked(&self, key: &K, f: impl FnOnce(Option<V>) -> Option<V>) -> Result<Option<V>> {
        let (s, home, tag) = self.place(key);
        let _g = self.lock_stripe(s);
        let st = self.stripe(s);
        let len = st.len.load(Ordering::SeqCst);
        match self.find(s, home, tag, key) {
            Ok(i) => {
                let mut slot = self.read_slot(s, i);
                match f(Some(slot.value)) {
                    Some(v) => {
                        slot.value = v;
                        self.write_slot(s, i, slot, len);
                        Ok(Some(v))
                    }
                    None => {
                        self.delete_at(s, i, len.saturating_sub(1));
                        Ok(None)
                    }
                }
            }
            Err(free) => {
                let Some(v) = f(None) else { return Ok(None) };
                let Some(i) = free else {
                    return Err(Error::MapFull {
                        name: self.inner.seg.id(),
                        capacity: self.capacity(),
                    });
                };
                let slot = Slot {
                    state: FULL,
                    hash: tag,
                    key: *key,
                    value: v,
                };
                self.write_slot(s, i, slot, len.saturating_add(1));
                Ok(Some(v))
            }
        }
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

/// A map's figures read from outside (the CLI), with `read(offset, buf)`
/// reading its file: (capacity, entries, stripes). Counts are snapshots,
/// capped as `len` caps them; `None` if unreadable or impossible.
pub(crate) fn figures_from(
    read: impl Fn(u64, &mut [u8]) -> bool,
    control: u64,
    data: u64,
) -> Option<(u64, u64, u64)> {
    let word = |at: u64| {
        let mut b = [0u8; 8];
        read(at, &mut b).then(|| u64::from_ne_bytes(b))
    };
    let capacity = word(control + std::mem::offset_of!(MapControl, capacity) as u64)?;
    let stripes = word(control + std::mem::offset_of!(MapControl, stripes) as u64)?;
    if stripes == 0 || stripes > 64 {
        return None;
    }
    let mut len = 0u64;
    for s in 0..stripes {
        let at = data + s * std::mem::size_of::<Stripe>() as u64;
        len = len.saturating_add(word(at + std::mem::offset_of!(Stripe, len) as u64)?);
    }
    Some((capacity, len.min(capacity.saturating_mul(2)), stripes))
}

impl<K: Pod, V: Pod> crate::region::handle::Travels for SharedMap<K, V> {}

crate::region::handle::region_handle_archive!(SharedMap<K: Pod, V: Pod>, |h| {
    crate::region::handle::reopen_with!(h, SharedMap::builder())
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_entries() {
        let m = SharedMap::<u64, u32>::new(8).unwrap();
        assert_eq!(format!("{m:?}"), "{}");
        m.insert(1, 10).unwrap();
        assert_eq!(format!("{m:?}"), "{1: 10}");
        assert!(format!("{m:#?}").starts_with("SharedMap("));
    }
    use std::mem::offset_of;

    #[test]
    fn shared_structs_have_the_documented_layout() {
        assert_eq!(size_of::<Stripe>(), 128);
        assert_eq!(offset_of!(Stripe, seq), 64);
        assert_eq!(offset_of!(Stripe, undo), 80);
        assert_eq!(size_of::<MapControl>(), 64);
        assert_eq!(offset_of!(MapControl, key_size), 32);
        assert_eq!(size_of::<Slot<u64, u64>>(), 24);
        assert_eq!(offset_of!(Slot<u64, u64>, key), 8);
        assert_eq!(size_of::<Slot<u8, u8>>(), 12);
        assert_eq!(size_of::<FixedStr<16>>(), 16);
    }

    #[test]
    fn geometry_gives_every_stripe_room() {
        let g = Geometry::for_capacity::<u64, u64>(8).unwrap();
        assert_eq!((g.stripes, g.per_stripe), (1, 16));
        let g = Geometry::for_capacity::<u64, u64>(100_000).unwrap();
        assert_eq!((g.stripes, g.per_stripe), (64, 4096));
        assert!(Geometry::for_capacity::<u64, u64>(u64::MAX).is_none());
    }

    #[test]
    fn fixed_strings() {
        let s = FixedStr::<8>::new("alice").unwrap();
        assert_eq!(s.as_str(), "alice");
        assert_eq!(format!("{s}"), "alice");
        assert!(FixedStr::<4>::new("alice").is_err());
        assert!(FixedStr::<8>::new("a\0b").is_err());
        assert_eq!(FixedStr::<8>::new("").unwrap().as_str(), "");
    }

    #[test]
    fn churn_does_not_fill_stripes_with_tombstones() {
        let m = SharedMap::<u64, u64>::new(64).unwrap();
        for k in 0..32 {
            m.insert(k, k).unwrap();
        }
        for k in 32..20_000u64 {
            m.remove(&(k - 32)).unwrap();
            m.insert(k, k).unwrap();
        }
        assert_eq!(m.len(), 32);
        let g = m.inner.geo;
        let mut total = 0;
        for s in 0..g.stripes as usize {
            let states: Vec<u32> = (0..g.per_stripe as usize)
                .map(|i| m.read_slot(s, i).state)
                .collect();
            let full = states.iter().filter(|&&x| x == FULL).count();
            let empty = states.iter().filter(|&&x| x == EMPTY).count();
            assert_eq!(full + empty, states.len(), "stripe {s}: {states:?}");
            total += full;
        }
        assert_eq!(total, 32);
        for k in 19_968..20_000 {
            assert_eq!(m.get(&k), Some(k));
        }
        assert_eq!(m.get(&5), None);
    }

    #[test]
    fn a_deletion_cut_short_is_finished() {
        // One stripe of 16 slots; keys that collide at home slots so that a
        // deletion must shift entries back.
        let m = SharedMap::<u64, u64>::new(8).unwrap();
        for k in 0..12 {
            m.insert(k, k).unwrap();
        }
        let (s, home, tag) = m.place(&3);
        let i = m.find(s, home, tag, &3).unwrap();
        // A writer that died right after arming the shift: the hole still
        // holds key 3.
        let st = m.stripe(s);
        m.begin_write(st);
        st.undo_slot.store(i as u64, Ordering::SeqCst);
        st.undo_len.store(11, Ordering::SeqCst);
        m.arm(st, UNDO_SHIFT);
        m.repair(s);
        assert_eq!(m.get(&3), None);
        assert_eq!(m.len(), 11);
        for k in (0..12).filter(|&k| k != 3) {
            assert_eq!(m.get(&k), Some(k), "key {k} lost");
        }
    }

    #[test]
    fn a_clear_cut_short_is_finished() {
        let m = SharedMap::<u64, u64>::new(8).unwrap();
        for k in 0..8 {
            m.insert(k, k).unwrap();
        }
        let st = m.stripe(0);
        m.begin_write(st);
        m.arm(st, UNDO_CLEAR);
        let empty: Slot<u64, u64> = Slot {
            state: EMPTY,
            hash: 0,
            key: 0,
            value: 0,
        };
        for i in 0..4 {
            // SAFETY: in bounds; this test is the only user of the map.
            unsafe { std::ptr::write_volatile(m.slot_ptr(0, i), empty) };
        }
        m.repair(0);
        assert!(m.is_empty());
        assert!(m.snapshot().is_empty());
        m.insert(3, 3).unwrap();
        assert_eq!(m.get(&3), Some(3));
    }

    #[test]
    fn a_dead_writers_half_change_is_undone() {
        let m = SharedMap::<u64, u64>::new(8).unwrap();
        m.insert(1, 10).unwrap();
        let (s, home, tag) = m.place(&1);
        let i = m.find(s, home, tag, &1).unwrap();
        // Play a writer that dies after saving the undo record and writing
        // half of the slot: sequence odd, undo armed, slot garbage.
        let st = m.stripe(s);
        st.seq.fetch_add(1, Ordering::SeqCst);
        // SAFETY: in bounds; this test is the only user of the map.
        unsafe { std::ptr::write_volatile(m.undo_ptr(s), m.read_slot(s, i)) };
        st.undo_slot.store(i as u64, Ordering::SeqCst);
        st.undo_len.store(1, Ordering::SeqCst);
        st.undo.store(UNDO_SLOT, Ordering::SeqCst);
        let mut torn = m.read_slot(s, i);
        torn.value = 0xdead;
        torn.key = 0xbeef;
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(m.slot_ptr(s, i), torn) };
        // The repair a locker runs after the owner's death:
        m.repair(s);
        assert_eq!(m.get(&1), Some(10));
        assert_eq!(m.len(), 1);
        assert_eq!(st.seq.load(Ordering::SeqCst) % 2, 0);
    }
}

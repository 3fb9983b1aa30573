//! The core that [`Value`](crate::Value) and [`Array`](crate::Array) share: a
//! region of `n` elements of `T: Pod` plus the lock choice Python users know —
//! the region's own robust lock (the default), a [`Lock`] the user passes, or
//! none (raw).

use crate::error::{Error, RegionError, Result};
use crate::region::{Kind, RegionOptions, Segment, Spec};
use crate::sync::mutex::{RawMutex, init_mutex, packed_spec_of, spec_of};
use crate::sync::{Lock, Mutex};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Which lock guards a [`Value`](crate::Value) or [`Array`](crate::Array).
#[derive(Debug, Clone, Default)]
pub enum LockChoice {
    /// The region's own robust mutex (Python's default `lock=True`).
    #[default]
    Own,
    /// No lock: unsynchronised access (Python's `lock=False`).
    None,
    /// A [`Lock`] shared with other objects (Python's `lock=my_lock`). For a
    /// named region the lock must be named too, so that openers find it.
    External(Lock),
}

const MODE_RAW: u32 = 0;
const MODE_OWN: u32 = 1;
const MODE_EXTERNAL: u32 = 2;
const LOCK_NAME_LEN: usize = 256;

/// The control block of a Value/Array region. The lock comes last, so that
/// a single value follows it in the same cache line (see [`spec`]).
#[repr(C)]
#[derive(Debug)]
pub struct DataControl {
    /// The external lock's POSIX name, NUL-padded (`MODE_EXTERNAL`).
    lock_name: [u8; LOCK_NAME_LEN],
    /// The own lock (initialised in every mode, used in `MODE_OWN`).
    mutex: RawMutex,
}

/// Where the own lock is in the control block.
pub(crate) const LOCK_OFFSET: usize = std::mem::offset_of!(DataControl, mutex);

/// A Value's data shares the lock's cache line; an Array's elements start on
/// a line of their own (users may rely on that for SIMD loads).
fn spec<T>(kind: Kind, mode: u32, opts: &RegionOptions) -> Spec {
    if kind == Kind::Value {
        packed_spec_of::<T>(kind, mode, opts, std::mem::size_of::<DataControl>())
    } else {
        spec_of::<DataControl, T>(kind, mode, opts)
    }
}

#[derive(Debug, Clone)]
enum LockRef {
    None,
    Own,
    External(Lock),
}

/// What makes two opens by descriptor the same: the file (device, inode,
/// size, and the header's random nonce: shmem inode numbers may come from a
/// 32-bit counter that wraps, so two live memfds may share one), the
/// element type and kind, and the checks asked for. (Options that only matter when a region is mapped,
/// `populate` and the open timeout, are not compared: a reused mapping is
/// already mapped and published.)
#[derive(PartialEq, Eq)]
struct MappedKey {
    dev: u64,
    ino: u64,
    size: u64,
    /// The header's nonce (never 0 here).
    nonce: u64,
    ty: std::any::TypeId,
    kind: u32,
    foreign: bool,
    tag: Option<String>,
}

/// The regions this process opened by descriptor and still maps (weakly:
/// an entry does not keep its mapping alive).
struct Mapped(Vec<(MappedKey, std::sync::Weak<Segment>, LockRef)>);

static MAPPED: std::sync::Mutex<Mapped> = std::sync::Mutex::new(Mapped(Vec::new()));

fn mapped() -> std::sync::MutexGuard<'static, Mapped> {
    MAPPED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key of the region behind `fd`, opened as `T` with `opts`; `None` if
/// the descriptor cannot be read (then it is not looked up nor cached).
fn mapped_key<T: 'static>(fd: &OwnedFd, opts: &RegionOptions, kind: Kind) -> Option<MappedKey> {
    let st = crate::sys::shm::stat(fd).ok()?;
    let mut nonce = [0u8; 8];
    let at = std::mem::offset_of!(crate::region::Header, nonce) as u64;
    if crate::sys::shm::read_at(fd, at, &mut nonce).ok()? != nonce.len() {
        return None;
    }
    let nonce = u64::from_ne_bytes(nonce);
    if nonce == 0 {
        // Made before regions had a nonce, or without random bytes.
        return None;
    }
    Some(MappedKey {
        dev: st.dev,
        ino: st.ino,
        size: st.size,
        nonce,
        ty: std::any::TypeId::of::<T>(),
        kind: kind as u32,
        foreign: opts.allow_foreign_owner,
        tag: opts.tag.clone(),
    })
}

impl Mapped {
    /// A live, uncut mapping of the region, if this process has one.
    fn lookup(&self, key: &MappedKey) -> Option<(Arc<Segment>, LockRef)> {
        self.0
            .iter()
            .find(|(k, _, _)| k == key)
            .and_then(|(_, w, lock)| Some((w.upgrade()?, lock.clone())))
            .filter(|(seg, _)| !seg.is_truncated())
    }

    fn insert(&mut self, key: MappedKey, seg: &Arc<Segment>, lock: LockRef) {
        self.0.retain(|(k, w, _)| w.strong_count() > 0 && *k != key);
        self.0.push((key, Arc::downgrade(seg), lock));
    }
}

/// A region of `T`s with its lock.
#[derive(Debug)]
pub(crate) struct Shared<T> {
    seg: Arc<Segment>,
    lock: LockRef,
    _t: PhantomData<T>,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            seg: self.seg.clone(),
            lock: self.lock.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Pod> Shared<T> {
    pub(crate) fn create(
        opts: &RegionOptions,
        kind: Kind,
        lock: LockChoice,
        count: u64,
        init: impl FnOnce(*mut T),
    ) -> Result<Self> {
        Self::build(opts, kind, lock, count, init, false).map(|(s, _)| s)
    }

    /// Opens the region, or creates it (with `lock` and `init`) if it does not
    /// exist. Returns whether this call created it. An opener gets the lock
    /// mode the creator chose.
    pub(crate) fn open_or_create(
        opts: &RegionOptions,
        kind: Kind,
        lock: LockChoice,
        count: u64,
        init: impl FnOnce(*mut T),
    ) -> Result<(Self, bool)> {
        Self::build(opts, kind, lock, count, init, true)
    }

    fn build(
        opts: &RegionOptions,
        kind: Kind,
        lock: LockChoice,
        count: u64,
        init: impl FnOnce(*mut T),
        or_open: bool,
    ) -> Result<(Self, bool)> {
        let (mode, lock_name) = match &lock {
            LockChoice::Own => (MODE_OWN, None),
            LockChoice::None => (MODE_RAW, None),
            LockChoice::External(l) => (MODE_EXTERNAL, l.segment().name().map(str::to_owned)),
        };
        if mode == MODE_EXTERNAL && lock_name.is_none() && !opts.is_anonymous() {
            return Err(Error::Region(RegionError::InvalidName {
                name: "<anonymous lock>".to_owned(),
                reason: "a named region's external lock must be named too, so that \
                         processes opening the region can open its lock",
            }));
        }
        let spec = spec::<T>(kind, mode, opts);
        let init_region = |c: *mut u8, d: *mut u8| {
            // SAFETY: the control block holds a DataControl (the spec).
            init_mutex(unsafe { c.add(LOCK_OFFSET) })?;
            let ctl = c.cast::<DataControl>();
            let mut name = [0u8; LOCK_NAME_LEN];
            if let Some(n) = &lock_name {
                name[..n.len()].copy_from_slice(n.as_bytes());
            }
            // SAFETY: unpublished control block sized for DataControl.
            unsafe { std::ptr::addr_of_mut!((*ctl).lock_name).write(name) };
            init(d.cast());
            Ok(())
        };
        let (seg, created) = if or_open {
            Segment::open_or_create(opts, &spec, count, init_region)?
        } else {
            (Segment::create(opts, &spec, count, init_region)?, true)
        };
        if !created {
            return Ok((Self::attach(seg, opts)?, false));
        }
        let lock = match lock {
            LockChoice::Own => LockRef::Own,
            LockChoice::None => LockRef::None,
            LockChoice::External(l) => LockRef::External(l),
        };
        Ok((
            Shared {
                seg: Arc::new(seg),
                lock,
                _t: PhantomData,
            },
            true,
        ))
    }

    pub(crate) fn open(opts: &RegionOptions, kind: Kind, count: Option<u64>) -> Result<Self> {
        let spec = spec::<T>(kind, 0, opts);
        Self::attach(Segment::open(opts, &spec, count)?, opts)
    }

    /// Opens the region behind `fd`. A region this process has mapped
    /// already by descriptor, as the same type and with the same checks,
    /// and that is still mapped (another handle lives) and not cut by a
    /// peer, is not mapped again (regions with an external lock excepted):
    /// the handle shares that mapping, as a clone would (measured: a pool worker
    /// mapping a task's arrays anew spent most of a range task in the
    /// kernel, setting up and tearing down page tables).
    pub(crate) fn from_fd(
        fd: OwnedFd,
        opts: &RegionOptions,
        kind: Kind,
        count: Option<u64>,
    ) -> Result<Self>
    where
        T: 'static,
    {
        let key = mapped_key::<T>(&fd, opts, kind);
        if let Some(key) = &key
            && let Some((seg, lock)) = mapped().lookup(key)
            && count.is_none_or(|c| c == seg.element_count())
        {
            return Ok(Shared {
                seg,
                lock,
                _t: PhantomData,
            });
        }
        let spec = spec::<T>(kind, 0, opts);
        let shared = Self::attach(Segment::from_fd(fd, opts, &spec, count)?, opts)?;
        // Not with an external lock: the entry would keep that lock's
        // region mapped after the data's last handle is gone.
        if let Some(key) = key
            && !matches!(shared.lock, LockRef::External(_))
        {
            mapped().insert(key, &shared.seg, shared.lock.clone());
        }
        Ok(shared)
    }

    fn attach(seg: Segment, opts: &RegionOptions) -> Result<Self> {
        let lock = match seg.flags() {
            MODE_RAW => LockRef::None,
            MODE_OWN => LockRef::Own,
            MODE_EXTERNAL => {
                let ctl = seg.control_ptr().cast::<DataControl>();
                // SAFETY: the control block is a DataControl (header checked);
                // the name is plain bytes, copied with a volatile read.
                let raw = unsafe { std::ptr::addr_of!((*ctl).lock_name).read_volatile() };
                let end = raw.iter().position(|&b| b == 0).unwrap_or(LOCK_NAME_LEN);
                let name = std::str::from_utf8(&raw[..end]).map_err(|_| {
                    Error::Region(RegionError::Corrupted {
                        name: seg.id(),
                        what: "the external lock's name is not UTF-8".to_owned(),
                    })
                })?;
                if name.is_empty() {
                    return Err(Error::Region(RegionError::InvalidName {
                        name: seg.id(),
                        reason: "this region's external lock is anonymous: it can only be \
                                 shared by fork, not opened",
                    }));
                }
                let lock_opts = opts
                    .clone()
                    .name(name)
                    .type_tag(std::any::type_name::<()>());
                LockRef::External(Mutex::<()>::builder().options(lock_opts).open()?)
            }
            other => {
                return Err(Error::Region(RegionError::Corrupted {
                    name: seg.id(),
                    what: format!("unknown lock mode {other}"),
                }));
            }
        };
        Ok(Shared {
            seg: Arc::new(seg),
            lock,
            _t: PhantomData,
        })
    }

    /// Refuses to send a handle whose external lock is anonymous: the
    /// receiving process could open the region but not its lock.
    pub(crate) fn check_travel(&self) -> Result<()> {
        match &self.lock {
            LockRef::External(l) if l.segment().name().is_none() => Err(Error::Encoding {
                what: "Value or Array with an anonymous external lock",
                reason: "its lock (with_lock) is anonymous, so the receiving process could not \
                         open it: give the lock a name (Lock::builder().name(..) or \
                         .random_name()), or let the child inherit both by fork"
                    .into(),
            }),
            _ => Ok(()),
        }
    }

    /// The lock guarding the data, if any.
    pub(crate) fn raw_lock(&self) -> Option<&RawMutex> {
        match &self.lock {
            LockRef::None => None,
            LockRef::Own => {
                // SAFETY: the control block is an initialised DataControl
                // with its RawMutex at LOCK_OFFSET.
                Some(unsafe { &*self.seg.control_ptr().add(LOCK_OFFSET).cast::<RawMutex>() })
            }
            LockRef::External(l) => Some(l.raw()),
        }
    }

    /// The lock, or a panic naming the misuse.
    pub(crate) fn expect_lock(&self) -> &RawMutex {
        self.raw_lock().expect(
            "this Value/Array was created without a lock (unlocked()): use its atomic or \
             unchecked accessors, or create it with a lock",
        )
    }

    pub(crate) fn data(&self) -> *mut T {
        self.seg.data_ptr().cast()
    }

    pub(crate) fn len(&self) -> usize {
        self.seg.element_count() as usize
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn data_control_layout() {
        assert_eq!(offset_of!(DataControl, lock_name), 0);
        assert_eq!(LOCK_OFFSET, 256);
        assert_eq!(size_of::<DataControl>(), 272);
    }

    /// A locked Value's data shares the cache line of its lock; an Array's
    /// elements start on a line of their own.
    #[test]
    fn value_data_shares_the_lock_line_array_data_does_not() {
        let opts = RegionOptions::default();
        let v = Shared::<u64>::create(&opts, Kind::Value, LockChoice::Own, 1, |d| {
            // SAFETY: the unpublished data area holds one u64.
            unsafe { d.write(7) }
        })
        .unwrap();
        let lock = v.raw_lock().unwrap() as *const RawMutex as usize;
        let data = v.seg.data_ptr() as usize;
        assert_eq!(lock % 64, 0, "the lock starts a cache line");
        assert_eq!(data, lock + size_of::<RawMutex>());
        let a = Shared::<u64>::create(&opts, Kind::Array, LockChoice::Own, 4, |_| {}).unwrap();
        assert_eq!(a.seg.data_ptr() as usize % 64, 0);
        let lock = a.raw_lock().unwrap() as *const RawMutex as usize;
        assert!(a.seg.data_ptr() as usize >= lock + 64);
    }
}

//! [`Segment`]: one mapping of a shared-memory object, its name and its owner.

use super::header::{Header, Layout, Snapshot, Spec};
use super::options::{Backing, RegionOptions, normalise_name, random_name};
use crate::error::{Error, RegionError, Result};
use crate::sys::sigbus::Registration;
use crate::sys::{proc, shm};
use memmap2::{MmapOptions, MmapRaw};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where a segment lives, for unlinking and messages.
#[derive(Debug, Clone)]
enum Id {
    Named(String),
    File(PathBuf),
    Anonymous,
    Fd(i32),
}

impl Id {
    fn display(&self) -> String {
        match self {
            Id::Named(n) => n.clone(),
            Id::File(p) => p.display().to_string(),
            Id::Anonymous => "<anonymous>".to_owned(),
            Id::Fd(fd) => format!("<fd {fd}>"),
        }
    }
}

/// One mapping of a shared region: the header, a control block and the
/// elements. Hands out raw pointers only; the typed objects built on it
/// ([`Value`](crate::Value), [`Array`](crate::Array), the locks...) add
/// references under a lock or as atomics.
///
/// Ownership: the process that created a named or file segment unlinks it when
/// the segment is dropped (unless [`persist`](Self::persist)ed). A forked child
/// carries a copy of the handle but is not the creator (its pid differs), and a
/// process that opened the segment never is: neither ever unlinks it.
#[derive(Debug)]
pub struct Segment {
    /// First field: dropped (unregistered from the SIGBUS handler) before the
    /// mapping is unmapped and the descriptor closed.
    guard: Registration,
    /// Unmapped in `Drop` (only in part after a truncation).
    map: ManuallyDrop<MmapRaw>,
    fd: OwnedFd,
    id: Id,
    layout: Layout,
    count: u64,
    flags: u32,
    creator: Option<u32>,
    creator_pid: u32,
    creator_uid: u32,
    creator_start: u64,
    unlink_on_drop: AtomicBool,
}

/// Removes a freshly created name if creation fails half way.
struct UnlinkGuard<'a>(Option<&'a Id>);

impl Drop for UnlinkGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            unlink_id(id);
        }
    }
}

fn unlink_id(id: &Id) {
    match id {
        Id::Named(n) => drop(shm::shm_unlink(n)),
        Id::File(p) => drop(std::fs::remove_file(p)),
        Id::Anonymous | Id::Fd(_) => {}
    }
}

fn map(fd: &OwnedFd, len: u64, populate: bool, name: &str) -> Result<MmapRaw> {
    let len = usize::try_from(len).map_err(|_| {
        Error::Region(RegionError::Corrupted {
            name: name.to_owned(),
            what: format!("length {len} does not fit the address space"),
        })
    })?;
    let mut o = MmapOptions::new();
    o.len(len);
    if populate {
        o.populate();
    }
    o.map_raw(fd.as_raw_fd())
        .map_err(|e| Error::from_io("mmap", name, e))
}

fn shm_dir_of(backing: &Backing) -> Option<PathBuf> {
    match backing {
        Backing::Named(_) | Backing::RandomName => Some(PathBuf::from("/dev/shm")),
        Backing::File(p) => Some(
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        ),
        Backing::Anonymous => None,
    }
}

impl Segment {
    /// Creates a region exclusively, lets `init` build the control block and the
    /// elements in place, then publishes it.
    ///
    /// `init` receives pointers to the control block (`spec.control_size` bytes,
    /// zeroed) and to `count` elements (zeroed); it must leave both valid.
    pub(crate) fn create(
        opts: &RegionOptions,
        spec: &Spec,
        count: u64,
        init: impl FnOnce(*mut u8, *mut u8) -> Result<()>,
    ) -> Result<Segment> {
        let id = match &opts.backing {
            Backing::Named(n) => Id::Named(normalise_name(n)?),
            Backing::RandomName => Id::Named(random_name()?),
            Backing::File(p) => Id::File(p.clone()),
            Backing::Anonymous => Id::Anonymous,
        };
        let name = id.display();
        let layout = spec.layout(count).ok_or_else(|| {
            Error::Region(RegionError::NoSpace {
                name: name.clone(),
                requested: u64::MAX,
                available: 0,
            })
        })?;
        // A region larger than the free space would be created sparse and
        // SIGBUS its users later: refuse now, naming both sizes.
        if let Some(dir) = shm_dir_of(&opts.backing)
            && let Ok(available) = shm::free_space(&dir)
            && layout.total_len > available
        {
            return Err(Error::Region(RegionError::NoSpace {
                name,
                requested: layout.total_len,
                available,
            }));
        }
        let fd = match &id {
            Id::Named(n) => shm::shm_create_excl(n, opts.mode),
            Id::File(p) => shm::file_create_excl(p, opts.mode),
            Id::Anonymous | Id::Fd(_) => shm::memfd("shmkit"),
        }
        .map_err(|e| Error::from_io("create", &name, e))?;
        let mut cleanup = UnlinkGuard(Some(&id));

        shm::set_len(&fd, layout.total_len).map_err(|e| Error::from_io("ftruncate", &name, e))?;
        // Reserve the pages now (populate implies it), so a short /dev/shm is
        // NoSpace here rather than SIGBUS at some later first touch.
        let reserve = opts.reserve && !matches!(id, Id::Anonymous);
        if opts.populate || reserve {
            let r = match shm::allocate(&fd, layout.total_len) {
                // A filesystem without fallocate: only an explicit populate
                // insists (it would fault every page in anyway).
                Err(e) if !opts.populate && e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
                r => r,
            };
            r.map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    Error::Region(RegionError::NoSpace {
                        name: name.clone(),
                        requested: layout.total_len,
                        available: shm_dir_of(&opts.backing)
                            .and_then(|d| shm::free_space(&d).ok())
                            .unwrap_or(0),
                    })
                } else {
                    Error::from_io("fallocate", &name, e)
                }
            })?;
        }
        if matches!(id, Id::Anonymous) {
            shm::seal_size(&fd).map_err(|e| Error::from_io("seal", &name, e))?;
        }
        let map = map(&fd, layout.total_len, opts.populate, &name)?;
        let guard = Registration::new(map.as_mut_ptr(), map.len(), fd.as_raw_fd());
        let base = map.as_mut_ptr();
        // SAFETY: the mapping is `total_len` bytes, page-aligned, and nobody else
        // can see it yet (ready == 0, and for a new name nobody passes the
        // ready check). The header fits (layout puts control after it).
        unsafe {
            Header::write(base.cast::<Header>(), spec, count, layout);
        }
        // SAFETY: both offsets are within the mapping (checked arithmetic in
        // Spec::layout); the memory is zeroed by ftruncate.
        let (control, data) = unsafe {
            (
                base.add(layout.control_offset as usize),
                base.add(layout.data_offset as usize),
            )
        };
        init(control, data)?;
        // SAFETY: the header was written above and stays mapped.
        unsafe { &*base.cast::<Header>() }.publish();
        cleanup.0 = None;
        drop(cleanup);
        let creator = (!matches!(id, Id::Anonymous)).then(proc::pid);
        Ok(Segment {
            guard,
            map: ManuallyDrop::new(map),
            fd,
            id,
            layout,
            count,
            flags: spec.flags,
            creator,
            creator_pid: proc::pid(),
            creator_uid: proc::euid(),
            creator_start: proc::start_time(proc::pid()).unwrap_or(0),
            unlink_on_drop: AtomicBool::new(opts.unlink_on_drop),
        })
    }

    /// Opens an existing named or file region and checks it against `spec` (and
    /// `count`, if given), waiting up to the open timeout for it to be published.
    pub(crate) fn open(opts: &RegionOptions, spec: &Spec, count: Option<u64>) -> Result<Segment> {
        let id = match &opts.backing {
            Backing::Named(n) => Id::Named(normalise_name(n)?),
            Backing::File(p) => Id::File(p.clone()),
            Backing::RandomName | Backing::Anonymous => {
                return Err(Error::Region(RegionError::InvalidName {
                    name: String::new(),
                    reason: "open needs a name or a path (anonymous regions are inherited, \
                             or opened from their descriptor)",
                }));
            }
        };
        let name = id.display();
        let fd = match &id {
            Id::Named(n) => shm::shm_open_existing(n),
            Id::File(p) => shm::file_open_existing(p),
            _ => unreachable!(),
        }
        .map_err(|e| Error::from_io("open", &name, e))?;
        Self::attach(fd, id, opts, spec, count)
    }

    /// Opens a region from a descriptor inherited from its creator (an anonymous
    /// region passed across `exec`).
    pub(crate) fn from_fd(
        fd: OwnedFd,
        opts: &RegionOptions,
        spec: &Spec,
        count: Option<u64>,
    ) -> Result<Segment> {
        let id = Id::Fd(fd.as_raw_fd());
        Self::attach(fd, id, opts, spec, count)
    }

    fn attach(
        fd: OwnedFd,
        id: Id,
        opts: &RegionOptions,
        spec: &Spec,
        count: Option<u64>,
    ) -> Result<Segment> {
        let name = id.display();
        let stat = |fd: &OwnedFd| shm::stat(fd).map_err(|e| Error::from_io("fstat", &name, e));
        let st = stat(&fd)?;
        let me = proc::euid();
        if st.uid != me && !opts.allow_foreign_owner {
            return Err(Error::Region(RegionError::ForeignOwner {
                name,
                owner_uid: st.uid,
                our_uid: me,
            }));
        }
        let start = Instant::now();
        let deadline = start + opts.open_timeout;
        let mut pause = Duration::from_micros(100);
        let mut nap = |deadline: Instant| -> Result<()> {
            if Instant::now() >= deadline {
                return Err(Error::Region(RegionError::NotInitialized {
                    name: name.clone(),
                    waited: start.elapsed(),
                }));
            }
            std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(Duration::from_millis(10));
            Ok(())
        };
        // The creator sets the size right after creating the name: wait for it.
        let mut size = st.size;
        while size < super::HEADER_SIZE as u64 {
            nap(deadline)?;
            size = stat(&fd)?.size;
        }
        let map = map(&fd, size, false, &name)?;
        let guard = Registration::new(map.as_mut_ptr(), map.len(), fd.as_raw_fd());
        let hdr = map.as_ptr().cast::<Header>();
        // SAFETY: the mapping holds at least HEADER_SIZE bytes; `ready` is an
        // atomic at a fixed offset, read atomically.
        while !unsafe { &*hdr }.is_ready() {
            // A creator writes the magic before it publishes; anything else
            // there means the name belongs to another program: fail now.
            // SAFETY: in bounds; plain u64 read with a volatile load.
            let magic = unsafe { std::ptr::addr_of!((*hdr).magic).read_volatile() };
            if magic != 0 && magic != super::MAGIC {
                return Err(Error::Region(RegionError::NotShmkit {
                    name: name.clone(),
                    found_magic: magic,
                }));
            }
            nap(deadline)?;
        }
        // SAFETY: as above; fields are copied with volatile loads.
        let snap: Snapshot = unsafe { Header::snapshot(hdr) };
        // Re-stat: somebody may have shrunk the object since we mapped it.
        let file_len = stat(&fd)?.size.min(size);
        let count = snap.check(&name, spec, count, file_len)?;
        Ok(Segment {
            guard,
            map: ManuallyDrop::new(map),
            fd,
            id,
            layout: snap.layout,
            count,
            flags: snap.flags,
            creator: None,
            creator_pid: snap.creator_pid,
            creator_uid: snap.creator_uid,
            creator_start: snap.creator_start,
            unlink_on_drop: AtomicBool::new(false),
        })
    }

    /// Creates the region, or opens it if it exists. Returns whether this call
    /// created it.
    pub(crate) fn open_or_create(
        opts: &RegionOptions,
        spec: &Spec,
        count: u64,
        init: impl FnOnce(*mut u8, *mut u8) -> Result<()>,
    ) -> Result<(Segment, bool)> {
        let mut init = Some(init);
        // Retry: the creator we lost the race to may unlink before we open.
        for _ in 0..8 {
            match Segment::create(opts, spec, count, |c, d| (init.take().unwrap())(c, d)) {
                Ok(s) => return Ok((s, true)),
                Err(Error::Region(RegionError::AlreadyExists { .. })) => {}
                Err(e) => return Err(e),
            }
            match Segment::open(opts, spec, Some(count)) {
                Ok(s) => return Ok((s, false)),
                Err(Error::Region(RegionError::NotFound { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Region(RegionError::NotInitialized {
            name: format!("{:?}", opts.backing),
            waited: Duration::ZERO,
        }))
    }

    /// The POSIX name (`/shmkit-...`), if the segment has one.
    pub fn name(&self) -> Option<&str> {
        match &self.id {
            Id::Named(n) => Some(n),
            _ => None,
        }
    }

    /// The backing file's path, for a file-backed segment.
    pub fn path(&self) -> Option<&Path> {
        match &self.id {
            Id::File(p) => Some(p),
            _ => None,
        }
    }

    /// A printable identity: the name, the path, `<anonymous>` or `<fd N>`.
    pub fn id(&self) -> String {
        self.id.display()
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never: the header is always there).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Whether another process has shrunk the object below the region's size.
    ///
    /// True once this process has touched a page past the new end (the SIGBUS
    /// handler then replaced the cut range of *this* mapping with private zero
    /// pages), or if `fstat` says the object is shorter now. After that, every
    /// checked operation of the object built on this segment returns
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated): recreate the object.
    ///
    /// A memfd (anonymous) region is sealed against shrinking and never
    /// becomes truncated.
    pub fn is_truncated(&self) -> bool {
        self.guard.is_truncated()
            || shm::stat(&self.fd).is_ok_and(|st| st.size < self.layout.total_len)
    }

    /// `Err(`[`RegionError::Truncated`](crate::error::RegionError::Truncated)`)` if this process has touched a page that a
    /// peer's truncation cut from the mapping (see
    /// [`is_truncated`](Self::is_truncated)), else `Ok`. One atomic load: the
    /// objects call it at the entry and exit of their operations.
    ///
    /// # Errors
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated) naming the size the region needs and the size the
    /// object has now.
    #[inline]
    pub fn check(&self) -> Result<()> {
        if self.guard.is_truncated() {
            Err(self.truncated_error())
        } else {
            Ok(())
        }
    }

    #[cold]
    fn truncated_error(&self) -> Error {
        Error::Region(RegionError::Truncated {
            name: self.id.display(),
            expected: self.layout.total_len,
            found: shm::stat(&self.fd).map_or(0, |st| st.size),
        })
    }

    /// Whether the process-wide SIGBUS handler guards this mapping against a
    /// peer's truncation. False only if the handler could not be installed or
    /// its table of mappings (4096 entries per process) was full when the
    /// segment was mapped: such a segment works as usual, but a truncation of
    /// it kills this process with SIGBUS on the next access to a cut page.
    pub fn truncation_guarded(&self) -> bool {
        self.guard.is_guarded()
    }

    /// The number of elements the region holds.
    pub fn element_count(&self) -> u64 {
        self.count
    }

    /// The object-specific flags from the header.
    pub(crate) fn flags(&self) -> u32 {
        self.flags
    }

    /// The start of the mapping (the header). Raw: other processes may write
    /// anything here at any time.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Whether `other` maps the same region (the same file: device and
    /// inode), however each was opened (by name, path or descriptor).
    pub(crate) fn same_region(&self, other: &Segment) -> bool {
        if self.as_ptr() == other.as_ptr() {
            return true;
        }
        match (shm::stat(&self.fd), shm::stat(&other.fd)) {
            (Ok(a), Ok(b)) => a.dev == b.dev && a.ino == b.ino,
            // Cannot tell: treat as the same (the caller refuses rather
            // than risk aliasing).
            _ => true,
        }
    }

    /// The control block.
    #[inline]
    pub(crate) fn control_ptr(&self) -> *mut u8 {
        // SAFETY: control_offset was checked to lie within the mapping.
        unsafe { self.as_ptr().add(self.layout.control_offset as usize) }
    }

    /// The first element.
    #[inline]
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        // SAFETY: data_offset was checked to lie within the mapping.
        unsafe { self.as_ptr().add(self.layout.data_offset as usize) }
    }

    /// The pid of the process that created the segment (from its header).
    pub fn creator_pid(&self) -> u32 {
        self.creator_pid
    }

    /// The uid of the creating process (from its header).
    pub fn creator_uid(&self) -> u32 {
        self.creator_uid
    }

    /// Whether the creating process still runs. Its start time is compared
    /// too, so a reused pid does not count as the creator.
    pub fn creator_alive(&self) -> bool {
        proc::is_alive(self.creator_pid, self.creator_start)
    }

    /// Whether this process created the segment (and so may unlink it).
    pub fn is_creator(&self) -> bool {
        self.creator == Some(proc::pid())
    }

    /// Keep the name after this handle drops (`unlink_on_drop(false)`), for
    /// long-lived segments; remove it later with [`unlink`](Self::unlink) or
    /// `shmkit clean`.
    pub fn persist(&self) {
        self.unlink_on_drop.store(false, Ordering::Relaxed);
    }

    /// Removes the name now. Existing mappings (ours and other processes')
    /// stay valid; new `open`s fail with [`RegionError::NotFound`](crate::error::RegionError::NotFound).
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if the name is already gone, [`RegionError::PermissionDenied`](crate::error::RegionError::PermissionDenied) or
    /// [`Error::Io`](crate::Error::Io) if the OS refuses. Never for an anonymous segment.
    pub fn unlink(&self) -> Result<()> {
        self.unlink_on_drop.store(false, Ordering::Relaxed);
        let name = self.id.display();
        match &self.id {
            Id::Named(n) => shm::shm_unlink(n).map_err(|e| Error::from_io("unlink", &name, e)),
            Id::File(p) => std::fs::remove_file(p).map_err(|e| Error::from_io("unlink", &name, e)),
            Id::Anonymous | Id::Fd(_) => Ok(()),
        }
    }

    /// A duplicate of the descriptor without close-on-exec, for a child that
    /// `exec`s to open an anonymous region with `from_fd`. Close it in the
    /// parent once the child has started.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if `dup` or `fcntl` fails (out of descriptors, ...).
    pub fn inheritable_fd(&self) -> Result<OwnedFd> {
        let name = self.id.display();
        let dup = self
            .fd
            .try_clone()
            .map_err(|e| Error::from_io("dup", &name, e))?;
        crate::sys::fd::set_cloexec(dup.as_raw_fd(), false)
            .map_err(|e| Error::from_io("fcntl", &name, e))?;
        Ok(dup)
    }
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.unlink_on_drop.load(Ordering::Relaxed) && self.is_creator() {
            unlink_id(&self.id);
        }
        // Unregistered from the SIGBUS handler first, then the whole mapping
        // goes, zero pages over a cut included: shmkit's locks keep no
        // address anywhere (glibc's robust list, which could name a mutex
        // held across a cut, is no longer used).
        let _ = self.guard.release();
        // SAFETY: the segment is being dropped: nothing uses the mapping.
        unsafe { ManuallyDrop::drop(&mut self.map) }
    }
}

//! shmkit's named segments seen from outside: list them, inspect one, and
//! remove the stale ones. The `shmkit` command-line tool is built on this,
//! and it is written for an operator who may be root on a machine where
//! other users can write `/dev/shm`:
//!
//! - Every segment is opened `O_RDONLY | O_NONBLOCK | O_NOFOLLOW |
//!   O_CLOEXEC` (a FIFO cannot block us, a symbolic link is not followed)
//!   and must be a regular file by `fstat` of the open descriptor (a name
//!   swapped between a check and the open is seen). Headers are read with
//!   plain `pread`s (no mapping), so a broken or foreign file cannot hurt
//!   the reader.
//! - **Stale means nobody uses it**: its creator is dead *and* no live
//!   process maps it (every `/proc/<pid>/maps` is read, and mappings are
//!   matched by device and inode, as `lsof` does). A process whose maps we
//!   cannot read and that could open the file (its owner's uid, or anyone
//!   the mode bits admit; root's processes are assumed not to use other
//!   users' segments — run as root to see them) makes the segment
//!   "unknown", never stale.
//! - A name is removed only if it still names the inode that was checked
//!   (device and inode compared right before `shm_unlink`).

use crate::error::{Error, RegionError, Result};
use crate::region::{HEADER_SIZE, Header, Kind, MAGIC};
use crate::sys::{proc, shm};
use std::fs::{File, Metadata};
use std::mem::offset_of;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Where POSIX shared memory lives on Linux.
const SHM_DIR: &str = "/dev/shm";

/// What a segment's header says, who uses it, and its live figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The POSIX name, without the leading `/`.
    pub name: String,
    /// The kind of object (`Value`, `Queue`, ...), or `unknown(N)`.
    pub kind: String,
    /// The element type's name (or the creator's tag), whole.
    pub type_name: String,
    /// The file's size in bytes.
    pub bytes: u64,
    /// What the header's element count says: elements of a `Value` or an
    /// `Array`; for a queue or a map the bytes of its data area (their own
    /// figures are in [`queue`](Self::queue) and [`map`](Self::map)).
    pub elements: u64,
    /// Bytes per element (`size_of` of the element type).
    pub element_size: u64,
    /// The creating process.
    pub creator_pid: u32,
    /// The creating user.
    pub creator_uid: u32,
    /// The file's owner.
    pub owner_uid: u32,
    /// Whether the creating process (same pid and start time) still runs.
    pub creator_alive: bool,
    /// Whether the creator finished initialising the segment.
    pub ready: bool,
    /// The processes that map it.
    pub users: Users,
    /// Live figures of a queue.
    pub queue: Option<QueueFigures>,
    /// Live figures of a shared map.
    pub map: Option<MapFigures>,
    /// The state of its lock (a `Mutex`, a `Condition`, a `Value` or `Array`
    /// with its own lock).
    pub lock: Option<LockFigures>,
}

/// The processes that map a segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    /// (pid, command name) of every process that maps it.
    pub pids: Vec<(u32, String)>,
    /// Processes whose maps could not be read and that could have opened
    /// it: while this is not 0 nobody can say the segment is unused.
    pub unknown: u32,
}

/// A queue's live figures, read from its control block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFigures {
    /// Messages waiting.
    pub depth: u64,
    /// Slots.
    pub capacity: u64,
    /// Registered senders.
    pub senders: u32,
    /// Registered receivers.
    pub receivers: u32,
}

/// A shared map's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapFigures {
    /// Entries it was created for.
    pub capacity: u64,
    /// Entries now (a snapshot).
    pub len: u64,
    /// Lock stripes.
    pub stripes: u64,
}

/// A lock's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockFigures {
    /// The holding thread, if held.
    pub holder_tid: Option<u32>,
    /// Its process, if it is alive.
    pub holder_pid: Option<u32>,
    /// Whether the holder lives (a dead or garbage holder is taken over by
    /// the next locker).
    pub holder_alive: bool,
    /// Whether a holder died and nobody marked the data consistent since.
    pub poisoned: bool,
}

/// A name under `/dev/shm` that was not listed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The name.
    pub name: String,
    /// Why it was not read.
    pub reason: String,
}

/// What [`list`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The shmkit segments, sorted by name.
    pub segments: Vec<SegmentInfo>,
    /// Entries that could not be read, or are not shmkit segments.
    pub skipped: Vec<Skipped>,
}

impl SegmentInfo {
    /// Stale: its creator is dead and no process maps it (nor may one that
    /// we could not inspect). Removing a stale segment splits nobody.
    #[must_use]
    pub fn is_stale(&self) -> bool {
        !self.creator_alive && self.users.pids.is_empty() && self.users.unknown == 0
    }

    /// Its creator is dead but processes still use it (or may).
    #[must_use]
    pub fn is_orphaned_in_use(&self) -> bool {
        !self.creator_alive && !self.is_stale()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Opens `path` for reading without blocking (a FIFO) or following a link,
/// and requires a regular file by `fstat` of what was opened.
fn open_regular(path: &Path) -> std::result::Result<(File, Metadata), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => "a symbolic link (not followed)".to_owned(),
            Some(libc::EACCES) | Some(libc::EPERM) => format!("not readable by us ({e})"),
            Some(libc::ENOENT) => "removed while we looked".to_owned(),
            _ => format!("cannot open: {e}"),
        })?;
    let meta = file.metadata().map_err(|e| format!("fstat failed: {e}"))?;
    let t = meta.file_type();
    if !t.is_file() {
        let what = if t.is_fifo() {
            "a FIFO"
        } else if t.is_dir() {
            "a directory"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(format!("{what}, not a segment"));
    }
    Ok((file, meta))
}

/// Who maps the file `meta` describes, from one scan of every process.
fn users_of(meta: &Metadata, scan: &proc::MapScan) -> Users {
    let (major, minor) = proc::dev_parts(meta.dev());
    let pids = scan
        .mapped
        .get(&(major, minor, meta.ino()))
        .map(|pids| {
            pids.iter()
                .map(|&p| (p, proc::comm(p).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let mode = meta.mode();
    let could_open = |uid: u32| uid != 0 && (uid == meta.uid() || mode & 0o066 != 0);
    let unknown = scan
        .unreadable
        .iter()
        .filter(|&&(_, uid)| could_open(uid))
        .count() as u32;
    Users { pids, unknown }
}

/// The lock at offset `at` of the file.
fn lock_at(file: &File, at: u64) -> Option<LockFigures> {
    let mut b = [0u8; 16];
    file.read_exact_at(&mut b, at).ok()?;
    let (owner, poisoned) = crate::sync::mutex::state_from_bytes(&b);
    let tid = (owner >> 32) as u32;
    let alive = owner != 0 && crate::sync::identity::alive(owner);
    Some(LockFigures {
        holder_tid: (owner != 0).then_some(tid),
        holder_pid: if alive { proc::tgid_of(tid) } else { None },
        holder_alive: alive,
        poisoned,
    })
}

/// Reads one segment; `Err(reason)` if it is not a shmkit segment we can
/// read.
fn read(
    file: &File,
    meta: &Metadata,
    name: &str,
    scan: &proc::MapScan,
) -> std::result::Result<SegmentInfo, String> {
    let mut head = [0u8; HEADER_SIZE];
    if meta.len() < HEADER_SIZE as u64 {
        return Err(format!(
            "{} bytes: too short for a shmkit header ({HEADER_SIZE} bytes)",
            meta.len()
        ));
    }
    file.read_exact_at(&mut head, 0)
        .map_err(|e| format!("cannot read its header: {e}"))?;
    let magic = u64_at(&head, offset_of!(Header, magic));
    if magic != MAGIC {
        return Err(format!("not a shmkit segment (magic {magic:#018x})"));
    }
    let kind_raw = u32_at(&head, offset_of!(Header, kind));
    let kind = Kind::from_raw(kind_raw);
    let raw_name = &head[offset_of!(Header, type_name)..offset_of!(Header, type_name) + 64];
    let end = raw_name.iter().position(|&b| b == 0).unwrap_or(64);
    let creator_pid = u32_at(&head, offset_of!(Header, creator_pid));
    let creator_start = u64_at(&head, offset_of!(Header, creator_start));
    let control = u64_at(&head, offset_of!(Header, control_offset));
    let data = u64_at(&head, offset_of!(Header, data_offset));
    let flags = u32_at(&head, offset_of!(Header, flags));
    let queue = match kind {
        Some(Kind::Queue) => queue_figures(file, control),
        _ => None,
    };
    let map = match kind {
        Some(Kind::Map) => {
            crate::map::figures_from(|at, buf| file.read_exact_at(buf, at).is_ok(), control, data)
                .map(|(capacity, len, stripes)| MapFigures {
                    capacity,
                    len,
                    stripes,
                })
        }
        _ => None,
    };
    let lock = match kind {
        Some(Kind::Mutex | Kind::Condition) => lock_at(file, control),
        // Lock mode 1: the value's own lock leads its control block.
        Some(Kind::Value | Kind::Array) if flags == 1 => {
            lock_at(file, control + crate::shared::LOCK_OFFSET as u64)
        }
        _ => None,
    };
    Ok(SegmentInfo {
        name: name.to_owned(),
        kind: kind.map_or_else(|| format!("unknown({kind_raw})"), |k| format!("{k:?}")),
        type_name: String::from_utf8_lossy(&raw_name[..end]).into_owned(),
        bytes: meta.len(),
        elements: u64_at(&head, offset_of!(Header, elem_count)),
        element_size: u64_at(&head, offset_of!(Header, type_size)),
        creator_pid,
        creator_uid: u32_at(&head, offset_of!(Header, creator_uid)),
        owner_uid: meta.uid(),
        creator_alive: proc::is_alive(creator_pid, creator_start),
        ready: u32_at(&head, offset_of!(Header, ready)) == crate::region::READY,
        users: users_of(meta, scan),
        queue,
        map,
        lock,
    })
}

/// A queue's figures from its control block (a snapshot: they move).
fn queue_figures(file: &File, control: u64) -> Option<QueueFigures> {
    use crate::queue::control::{QueueControl, State};
    let mut c = vec![0u8; size_of::<QueueControl>()];
    file.read_exact_at(&mut c, control).ok()?;
    // `head` is where senders claim, `tail` where receivers take.
    let head = u64_at(&c, offset_of!(QueueControl, head));
    let tail = u64_at(&c, offset_of!(QueueControl, tail));
    let st = offset_of!(QueueControl, state);
    let capacity = u64_at(&c, st + offset_of!(State, limit));
    Some(QueueFigures {
        depth: head.wrapping_sub(tail).min(capacity),
        capacity,
        senders: u32_at(&c, st + offset_of!(State, senders)),
        receivers: u32_at(&c, st + offset_of!(State, receivers)),
    })
}

fn scan() -> proc::MapScan {
    // Without /proc nobody can be seen: every segment is then "unknown".
    proc::scan_maps().unwrap_or_else(|_| proc::MapScan {
        unreadable: vec![(0, u32::MAX)],
        ..Default::default()
    })
}

/// Every shmkit segment in /dev/shm whose name starts with `prefix`, and
/// what was skipped and why.
///
/// # Errors
/// [`RegionError::NotFound`], [`RegionError::PermissionDenied`] or [`Error::Io`] if /dev/shm cannot be read.
/// Entries that cannot be read are listed in `skipped`, not errors.
pub fn list(prefix: &str) -> Result<Listing> {
    let prefix = prefix.trim_start_matches('/');
    let dir = std::fs::read_dir(SHM_DIR).map_err(|e| Error::from_io("read_dir", SHM_DIR, e))?;
    let scan = scan();
    let mut out = Listing::default();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let r = open_regular(&entry.path()).and_then(|(f, m)| read(&f, &m, &name, &scan));
        match r {
            Ok(info) => out.segments.push(info),
            Err(reason) => out.skipped.push(Skipped { name, reason }),
        }
    }
    out.segments.sort_by(|a, b| a.name.cmp(&b.name));
    out.skipped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Every shmkit segment in /dev/shm that we can read, sorted by name (see
/// [`list`] for what was skipped).
///
/// # Errors
/// As for [`list`].
pub fn list_segments() -> Result<Vec<SegmentInfo>> {
    Ok(list("")?.segments)
}

fn checked_name(name: &str) -> Result<&str> {
    let name = name.trim_start_matches('/');
    if name.is_empty() || name.contains('/') {
        return Err(Error::Region(RegionError::InvalidName {
            name: name.to_owned(),
            reason: "a segment name has no '/' after the leading one",
        }));
    }
    Ok(name)
}

/// One segment, by name (with or without the leading `/`).
///
/// # Errors
/// `NotFound`, `PermissionDenied`, `NotShmkit` (with the magic found),
/// `Truncated` (too short for a header), or `Corrupted` naming what the
/// name is instead (a FIFO, a link, a directory).
pub fn inspect_segment(name: &str) -> Result<SegmentInfo> {
    let name = checked_name(name)?;
    let path = Path::new(SHM_DIR).join(name);
    if let Err(e) = std::fs::symlink_metadata(&path) {
        return Err(Error::from_io("stat", name, e));
    }
    let (file, meta) = open_regular(&path).map_err(|what| {
        Error::Region(RegionError::Corrupted {
            name: name.to_owned(),
            what,
        })
    })?;
    let mut magic = [0u8; 8];
    if meta.len() < HEADER_SIZE as u64 {
        return Err(Error::Region(RegionError::Truncated {
            name: name.to_owned(),
            expected: HEADER_SIZE as u64,
            found: meta.len(),
        }));
    }
    if file.read_exact_at(&mut magic, 0).is_ok() && u64::from_ne_bytes(magic) != MAGIC {
        return Err(Error::Region(RegionError::NotShmkit {
            name: name.to_owned(),
            found_magic: u64::from_ne_bytes(magic),
        }));
    }
    read(&file, &meta, name, &scan()).map_err(|what| {
        Error::Region(RegionError::Corrupted {
            name: name.to_owned(),
            what,
        })
    })
}

/// What [`clean`] should do.
#[derive(Debug, Clone, Default)]
pub struct CleanOptions {
    /// Only names starting with this.
    pub prefix: String,
    /// Only say what would be removed.
    pub dry_run: bool,
    /// Also remove segments whose creator is dead but that processes still
    /// map (they keep their memory; a later `open_or_create` of the name
    /// makes a new segment that they do not share).
    pub force: bool,
}

/// What [`clean`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Removed (or, dry run, would be).
    pub removed: Vec<String>,
    /// Creator dead, but in use (or possibly): kept (removed only with
    /// `force`, and then listed in `removed` too), with the pids using it.
    pub in_use: Vec<(String, Vec<u32>)>,
    /// Stale, but another user's: kept (shmkit removes only its caller's).
    pub foreign: Vec<(String, u32)>,
    /// Entries that could not be read.
    pub skipped: Vec<Skipped>,
}

/// Removes the stale shmkit segments of ours: creator dead and nobody
/// mapping them (with `force`, also those still in use).
///
/// # Errors
/// As for [`list`]; [`RegionError::PermissionDenied`] or [`Error::Io`] if a stale segment cannot be
/// unlinked (one that vanished meanwhile is skipped).
pub fn clean(opts: &CleanOptions) -> Result<CleanReport> {
    let me = proc::euid();
    let listing = list(&opts.prefix)?;
    let mut report = CleanReport {
        skipped: listing.skipped,
        ..Default::default()
    };
    for info in listing.segments {
        if info.creator_alive {
            continue;
        }
        if info.owner_uid != me || info.creator_uid != me {
            if info.is_stale() {
                report.foreign.push((info.name, info.owner_uid));
            }
            continue;
        }
        if !info.is_stale() {
            let pids = info.users.pids.iter().map(|&(p, _)| p).collect();
            report.in_use.push((info.name.clone(), pids));
            if !opts.force {
                continue;
            }
        }
        if !opts.dry_run && !unlink_if_same(&info.name)? {
            continue;
        }
        report.removed.push(info.name);
    }
    Ok(report)
}

/// Unlinks `name` if it still names a regular file of ours that is a
/// shmkit segment whose creator is dead (checked again on the same inode,
/// right before the unlink). `Ok(false)` if it changed or vanished.
fn unlink_if_same(name: &str) -> Result<bool> {
    let path = Path::new(SHM_DIR).join(name);
    let Ok((file, meta)) = open_regular(&path) else {
        return Ok(false);
    };
    let mut head = [0u8; HEADER_SIZE];
    if file.read_exact_at(&mut head, 0).is_err() || u64_at(&head, 0) != MAGIC {
        return Ok(false);
    }
    let creator = (
        u32_at(&head, offset_of!(Header, creator_pid)),
        u64_at(&head, offset_of!(Header, creator_start)),
    );
    if proc::is_alive(creator.0, creator.1) {
        return Ok(false);
    }
    // The name must still be this inode.
    match std::fs::symlink_metadata(&path) {
        Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => {}
        _ => return Ok(false),
    }
    match shm::shm_unlink(&format!("/{name}")) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(Error::from_io("shm_unlink", name, e)),
    }
}

/// Removes every stale shmkit segment of ours (created by our uid, whose
/// creator is dead and that nobody maps) whose name passes `keep`; with
/// `dry_run`, only lists them. Returns the names.
///
/// # Errors
/// As for [`clean`].
pub fn cleanup_stale_matching(keep: impl Fn(&str) -> bool, dry_run: bool) -> Result<Vec<String>> {
    let report = clean(&CleanOptions {
        dry_run: true,
        ..Default::default()
    })?;
    let mut removed = Vec::new();
    for name in report.removed.into_iter().filter(|n| keep(n)) {
        if dry_run || unlink_if_same(&name)? {
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Removes every stale shmkit segment of ours: creator dead and no process
/// mapping it.
///
/// # Errors
/// As for [`clean`].
pub fn cleanup_stale() -> Result<Vec<String>> {
    cleanup_stale_matching(|_| true, false)
}

//! shmkit's named segments seen from outside: list them, inspect one, and
//! remove the stale ones (whose creator is dead). Read with plain `pread`s
//! of the header (no mapping), so a broken or foreign file cannot hurt the
//! reader. The `shmkit` command-line tool is built on this.

use super::Kind;
use super::header::{HEADER_SIZE, Header, MAGIC};
use crate::error::{Error, Result};
use crate::sys::{proc, shm};
use std::mem::offset_of;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// Where POSIX shared memory lives on Linux.
const SHM_DIR: &str = "/dev/shm";

/// What a segment's header says, and whether its creator still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The POSIX name, without the leading `/`.
    pub name: String,
    /// The kind of object (`Value`, `Queue`, ...), or `unknown(N)`.
    pub kind: String,
    /// The element type's name (or the creator's tag).
    pub type_name: String,
    /// The file's size in bytes.
    pub bytes: u64,
    /// Elements (for a queue or map: bytes of its data area).
    pub elements: u64,
    /// The creating process and user.
    pub creator_pid: u32,
    /// The creating user.
    pub creator_uid: u32,
    /// Whether the creating process (same pid and start time) still runs.
    pub creator_alive: bool,
    /// Whether the creator finished initialising the segment.
    pub ready: bool,
    /// Live figures of a queue.
    pub queue: Option<QueueFigures>,
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

impl SegmentInfo {
    /// Stale: its creator is dead. (Other processes may still have it
    /// mapped; removing it only removes the name.)
    pub fn is_stale(&self) -> bool {
        !self.creator_alive
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the segment at `path`; `None` if it is not a shmkit segment.
fn read(path: &Path, name: &str) -> Result<Option<SegmentInfo>> {
    let file = std::fs::File::open(path).map_err(|e| Error::from_io("open", name, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::from_io("fstat", name, e))?;
    let mut head = [0u8; HEADER_SIZE];
    if meta.len() < HEADER_SIZE as u64 || file.read_exact_at(&mut head, 0).is_err() {
        return Ok(None);
    }
    if u64_at(&head, offset_of!(Header, magic)) != MAGIC {
        return Ok(None);
    }
    let kind_raw = u32_at(&head, offset_of!(Header, kind));
    let kind = Kind::from_raw(kind_raw);
    let raw_name = &head[offset_of!(Header, type_name)..offset_of!(Header, type_name) + 64];
    let end = raw_name.iter().position(|&b| b == 0).unwrap_or(64);
    let creator_pid = u32_at(&head, offset_of!(Header, creator_pid));
    let creator_start = u64_at(&head, offset_of!(Header, creator_start));
    let queue = if kind == Some(Kind::Queue) {
        queue_figures(&file, u64_at(&head, offset_of!(Header, control_offset)))
    } else {
        None
    };
    Ok(Some(SegmentInfo {
        name: name.to_owned(),
        kind: kind.map_or_else(|| format!("unknown({kind_raw})"), |k| format!("{k:?}")),
        type_name: String::from_utf8_lossy(&raw_name[..end]).into_owned(),
        bytes: meta.len(),
        elements: u64_at(&head, offset_of!(Header, elem_count)),
        creator_pid,
        creator_uid: u32_at(&head, offset_of!(Header, creator_uid)),
        creator_alive: proc::is_alive(creator_pid, creator_start),
        ready: u32_at(&head, offset_of!(Header, ready)) == super::header::READY,
        queue,
    }))
}

/// A queue's figures from its control block (a snapshot: they move).
fn queue_figures(file: &std::fs::File, control: u64) -> Option<QueueFigures> {
    use crate::queue::control::{QueueControl, State};
    let mut c = vec![0u8; size_of::<QueueControl>()];
    file.read_exact_at(&mut c, control).ok()?;
    // `head` is where senders claim, `tail` where receivers take.
    let head = u64_at(&c, offset_of!(QueueControl, head));
    let tail = u64_at(&c, offset_of!(QueueControl, tail));
    let st = offset_of!(QueueControl, state);
    let capacity = u64_at(&c, st + offset_of!(State, capacity));
    Some(QueueFigures {
        depth: head.wrapping_sub(tail).min(capacity),
        capacity,
        senders: u32_at(&c, st + offset_of!(State, senders)),
        receivers: u32_at(&c, st + offset_of!(State, receivers)),
    })
}

/// Every shmkit segment in /dev/shm that we can read, sorted by name.
pub fn list_segments() -> Result<Vec<SegmentInfo>> {
    let dir = std::fs::read_dir(SHM_DIR).map_err(|e| Error::from_io("read_dir", SHM_DIR, e))?;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        // Unreadable (another user's) or vanished meanwhile: not listed.
        if let Ok(Some(info)) = read(&entry.path(), &name) {
            out.push(info);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One segment, by name (with or without the leading `/`).
pub fn inspect_segment(name: &str) -> Result<SegmentInfo> {
    let name = name.trim_start_matches('/');
    if name.is_empty() || name.contains('/') {
        return Err(Error::InvalidName {
            name: name.to_owned(),
            reason: "a segment name has no '/' after the leading one",
        });
    }
    read(&Path::new(SHM_DIR).join(name), name)?.ok_or_else(|| Error::NotShmkit {
        name: name.to_owned(),
        found_magic: 0,
    })
}

/// Removes every stale shmkit segment of ours (created by our uid, whose
/// creator is dead) whose name passes `keep`; with `dry_run`, only lists
/// them. Returns the names.
pub fn cleanup_stale_matching(keep: impl Fn(&str) -> bool, dry_run: bool) -> Result<Vec<String>> {
    let me = proc::euid();
    let mut removed = Vec::new();
    for info in list_segments()? {
        if !info.is_stale() || info.creator_uid != me || !keep(&info.name) {
            continue;
        }
        // Owned by us on disk too (a foreign file could copy our header).
        let owner = std::fs::metadata(Path::new(SHM_DIR).join(&info.name)).map(|m| m.uid());
        if owner.ok() != Some(me) {
            continue;
        }
        if !dry_run {
            match shm::shm_unlink(&format!("/{}", info.name)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(Error::from_io("shm_unlink", &info.name, e)),
            }
        }
        removed.push(info.name);
    }
    Ok(removed)
}

/// Removes every stale shmkit segment of ours: those whose creator is dead.
/// Processes that still have one mapped keep using it; only the name goes.
pub fn cleanup_stale() -> Result<Vec<String>> {
    cleanup_stale_matching(|_| true, false)
}

//! How shared objects travel between processes: as *handles*. A region
//! encodes as its segment's name (or, for an anonymous region handed to a
//! child, the number of a descriptor the child inherits; in a pool task, a
//! descriptor of the pool's process that the worker opens through
//! `/proc/<pid>/fd`, kept open until the task is done), and decodes by
//! opening the region again — its bytes are never copied. The usual header
//! checks (kind, element type, length) run on that open.
//!
//! Here: [`RegionHandle`] and its one reopening dispatch ([`RegionHandle::reopen`]),
//! the descriptor passing of a spawn and of a pool task, transit tokens for
//! endpoints whose registration moves with them, the kept cause of a failed
//! decode, and [`region_handle_archive!`](crate::region_handle_archive) that
//! each object type invokes where it is defined.

use crate::error::{Error, Result};
use crate::region::{RegionOptions, Segment};
use rkyv::rancor::{self, Source};
use rkyv::{Archive, Deserialize, Serialize};
use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

thread_local! {
    /// Why the last handle in a message could not travel (encode) or be
    /// opened (decode) on this thread: rancor's error keeps no message in
    /// release builds ("failed without error information"), so the real
    /// cause (`NotFound` with the segment's name, an anonymous lock that
    /// cannot travel, ...) is kept here and returned by `encode` and
    /// `decode` instead.
    static CAUSE: std::cell::RefCell<Option<Error>> = const { std::cell::RefCell::new(None) };
}

/// Keeps `e` as the cause of the encode or decode under way and gives rkyv
/// an error that says the same.
pub(crate) fn cause<E: Source>(e: Error) -> E {
    #[derive(Debug)]
    struct Cause(String);
    impl std::fmt::Display for Cause {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Cause {}
    let text = e.to_string();
    CAUSE.with(|c| *c.borrow_mut() = Some(e));
    E::new(Cause(text))
}

pub(crate) fn clear_cause() {
    CAUSE.with(|c| c.borrow_mut().take());
}

/// The error of a failed encode or decode: the kept cause if a handle could
/// not travel or open, else rkyv's own error (an invalid archive, a message
/// too large for its slot).
pub(crate) fn codec_failed(what: &'static str, e: rancor::Error) -> Error {
    CAUSE
        .with(|c| c.borrow_mut().take())
        .unwrap_or_else(|| Error::Encoding {
            what,
            reason: e.to_string(),
        })
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
    /// For an anonymous region sent to a running process (a pool task): the
    /// sender's pid, whose descriptor `fd` the receiver opens through
    /// `/proc/<pid>/fd/<fd>`; 0 when `fd` is inherited.
    pub via_pid: u32,
}

impl RegionHandle {
    pub(crate) fn of(segment: &Segment) -> RegionHandle {
        let name = segment.name().map(str::to_owned);
        let path = segment.path().map(|p| p.to_string_lossy().into_owned());
        let (mut fd, mut via_pid) = (-1, 0);
        if name.is_none() && path.is_none() {
            fd = segment.as_fd().as_raw_fd();
            if let Some(kept) = keep_for_proc(segment) {
                (fd, via_pid) = (kept, std::process::id());
            }
        }
        RegionHandle {
            name,
            path,
            fd,
            via_pid,
        }
    }
}

/// What encoding for a spawn collected besides the bytes: descriptors the
/// child must inherit, and clean-ups for queue endpoints whose entries travel
/// to the child (run if the child ends without adopting them).
#[derive(Default)]
pub(crate) struct Outgoing {
    pub fds: Vec<RawFd>,
    pub abandons: Vec<Abandon>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("fds", &self.fds)
            .field("abandons", &self.abandons.len())
            .finish()
    }
}

thread_local! {
    /// While a pool encodes a task: duplicates of the anonymous regions'
    /// descriptors, by original descriptor, kept open until the task is done.
    static VIA_PROC: RefCell<Option<Vec<(RawFd, OwnedFd)>>> = const { RefCell::new(None) };
    /// While a spawn encodes its arguments: what it collects.
    static OUTGOING: RefCell<Option<Outgoing>> = const { RefCell::new(None) };
    /// In a spawned child: descriptors the parent declared as inherited.
    static INHERITED_FDS: RefCell<Vec<RawFd>> = const { RefCell::new(Vec::new()) };
}

/// Runs `encode` while collecting descriptors and endpoint clean-ups.
pub(crate) fn collecting<R>(encode: impl FnOnce() -> R) -> (R, Outgoing) {
    OUTGOING.with(|s| *s.borrow_mut() = Some(Outgoing::default()));
    let r = encode();
    let out = OUTGOING.with(|s| s.borrow_mut().take()).unwrap_or_default();
    (r, out)
}

/// Runs `encode` so that anonymous regions travel as `/proc/<pid>/fd/<fd>`
/// of this process (for a process already running, as a pool worker); the
/// descriptors they name, to keep open until the receiver has opened them.
pub(crate) fn collecting_via_proc<R>(encode: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    VIA_PROC.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let r = encode();
    let kept = VIA_PROC.with(|s| s.borrow_mut().take()).unwrap_or_default();
    (r, kept.into_iter().map(|(_, fd)| fd).collect())
}

/// In [`collecting_via_proc`]: the kept duplicate's number for `segment`
/// (the same on every call, as rkyv asks for the handle twice).
fn keep_for_proc(segment: &Segment) -> Option<RawFd> {
    VIA_PROC.with(|s| {
        let mut s = s.borrow_mut();
        let kept = s.as_mut()?;
        let fd = segment.as_fd().as_raw_fd();
        if let Some((_, dup)) = kept.iter().find(|(orig, _)| *orig == fd) {
            return Some(dup.as_raw_fd());
        }
        let dup = segment.as_fd().try_clone_to_owned().ok()?;
        let n = dup.as_raw_fd();
        kept.push((fd, dup));
        Some(n)
    })
}

/// Opens descriptor `fd` of process `pid` (which keeps it open for us).
pub(crate) fn open_via_proc(pid: u32, fd: i32) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/fd/{fd}");
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map(OwnedFd::from)
        .map_err(|e| Error::from_io("open", &path, e))
}

/// A clean-up that frees a travelling endpoint nobody adopted.
pub(crate) type Abandon = Box<dyn FnOnce() + Send>;

/// A token for a travelling endpoint: random, non-zero, top bit clear (the
/// queue uses the top bit to mark an entry being retired).
pub(crate) fn transit_token() -> u64 {
    let r = crate::sys::shm::random_bytes::<8>()
        .map(u64::from_ne_bytes)
        .unwrap_or_else(|_| u64::from(std::process::id()) << 20 ^ 0x5eed);
    (r & !(1 << 63)) | 1
}

/// Whether a spawn is collecting (so endpoints may travel), and if so, adds
/// a clean-up for an endpoint entry.
pub(crate) fn note_transit(abandon: Abandon) -> bool {
    OUTGOING.with(|s| match s.borrow_mut().as_mut() {
        Some(out) => {
            out.abandons.push(abandon);
            true
        }
        None => false,
    })
}

/// Declares the descriptors a spawned child inherited for handles, and makes
/// them close-on-exec again so the child's own children do not inherit them.
pub(crate) fn set_inherited_fds(fds: Vec<RawFd>) {
    for &fd in &fds {
        let _ = crate::sys::fd::set_cloexec(fd, true); // at worst EBADF
    }
    INHERITED_FDS.with(|s| *s.borrow_mut() = fds);
}

/// Closes the inherited originals once the arguments are decoded (each
/// handle owns a duplicate).
pub(crate) fn close_inherited_fds() {
    for fd in INHERITED_FDS.with(|s| std::mem::take(&mut *s.borrow_mut())) {
        // SAFETY: the parent declared these descriptors as inherited for
        // handles; nothing in this process took ownership of the originals
        // (claims duplicate them), so closing them here is the only close.
        unsafe { crate::sys::fd::close_unowned(fd) };
    }
}

pub(crate) fn note_outgoing(handle: &RegionHandle) -> Result<()> {
    if handle.fd < 0 || handle.via_pid != 0 {
        return Ok(());
    }
    OUTGOING.with(|s| match s.borrow_mut().as_mut() {
        Some(out) => {
            if !out.fds.contains(&handle.fd) {
                out.fds.push(handle.fd);
            }
            Ok(())
        }
        None => Err(Error::Encoding {
            what: "anonymous region handle",
            reason: "an anonymous region can only be passed as an argument to a spawned \
                     process (it travels as an inherited descriptor) or in a pool task; give \
                     it a name (builder().name(..) or random_name()) to send it elsewhere"
                .into(),
        }),
    })
}

/// A descriptor of our own for an inherited region: a close-on-exec
/// duplicate, so several handles to one region each own theirs.
pub(crate) fn claim_inherited(fd: i32) -> Result<OwnedFd> {
    let declared = INHERITED_FDS.with(|s| s.borrow().contains(&fd));
    if !declared {
        return Err(Error::Encoding {
            what: "anonymous region handle",
            reason: format!("descriptor {fd} was not inherited from the parent"),
        });
    }
    crate::sys::fd::dup_cloexec(fd).map_err(|e| Error::from_io("dup", "<inherited region>", e))
}

impl ArchivedRegionHandle {
    pub(crate) fn to_handle(&self) -> RegionHandle {
        RegionHandle {
            name: self.name.as_ref().map(|s| s.as_str().to_owned()),
            path: self.path.as_ref().map(|s| s.as_str().to_owned()),
            fd: self.fd.to_native(),
            via_pid: self.via_pid.to_native(),
        }
    }
}

/// Archive, Serialize and Deserialize for a region object that travels as
/// its [`RegionHandle`]: `region_handle_archive!(Value<T: Pod>, open)`, where
/// `open: fn(RegionHandle) -> Result<Value<T>>` (or `(Barrier, open)` for a
/// type without parameters). The type implements [`Travels`].
macro_rules! region_handle_archive {
    ($ty:ident $(<$($p:ident: $bound:path),+>)?, $open:expr) => {
        impl<$($($p: $bound),+)?> ::rkyv::Archive for $ty$(<$($p),+>)? {
            type Archived = $crate::region::handle::ArchivedRegionHandle;
            type Resolver = $crate::region::handle::RegionHandleResolver;

            fn resolve(&self, resolver: Self::Resolver, out: ::rkyv::Place<Self::Archived>) {
                $crate::region::handle::RegionHandle::of(self.segment()).resolve(resolver, out)
            }
        }

        impl<$($($p: $bound,)+)? S: ::rkyv::rancor::Fallible + ?Sized> ::rkyv::Serialize<S>
            for $ty$(<$($p),+>)?
        where
            $crate::region::handle::RegionHandle: ::rkyv::Serialize<S>,
            S::Error: ::rkyv::rancor::Source,
        {
            fn serialize(&self, s: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
                $crate::region::handle::Travels::check_travel(self).map_err($crate::region::handle::cause)?;
                let handle = $crate::region::handle::RegionHandle::of(self.segment());
                $crate::region::handle::note_outgoing(&handle).map_err($crate::region::handle::cause)?;
                handle.serialize(s)
            }
        }

        impl<$($($p: $bound,)+)? D: ::rkyv::rancor::Fallible + ?Sized>
            ::rkyv::Deserialize<$ty$(<$($p),+>)?, D> for $crate::region::handle::ArchivedRegionHandle
        where
            D::Error: ::rkyv::rancor::Source,
        {
            fn deserialize(&self, _: &mut D) -> std::result::Result<$ty$(<$($p),+>)?, D::Error> {
                let open: fn($crate::region::handle::RegionHandle) -> $crate::Result<$ty$(<$($p),+>)?> =
                    $open;
                open(self.to_handle()).map_err($crate::region::handle::cause)
            }
        }
    };
}

pub(crate) use region_handle_archive;

impl RegionHandle {
    /// The descriptor of an anonymous region: inherited, or opened through
    /// /proc from the sender.
    pub(crate) fn anonymous_fd(&self) -> Result<OwnedFd> {
        match self.via_pid {
            0 => claim_inherited(self.fd),
            pid => open_via_proc(pid, self.fd),
        }
    }

    /// How to open the region again: the one dispatch of every handle type
    /// (by name, by path, or by an anonymous region's descriptor).
    pub(crate) fn reopen(&self) -> Result<Reopen> {
        let opts = RegionOptions::default();
        Ok(match (&self.name, &self.path) {
            (Some(n), _) => Reopen::At(opts.name(n)),
            (None, Some(p)) => Reopen::At(opts.file(p)),
            (None, None) => Reopen::Fd(self.anonymous_fd()?),
        })
    }
}

/// Where a handle's region is opened from ([`RegionHandle::reopen`]).
pub(crate) enum Reopen {
    /// A name or a path: a builder's `options(..).open()`.
    At(RegionOptions),
    /// An anonymous region's descriptor: a builder's `from_fd`.
    Fd(OwnedFd),
}

/// Opens the region of handle `$h` with builder `$builder`: the one
/// reopening dispatch, for the types whose builders have `options`, `open`
/// and `from_fd`.
macro_rules! reopen_with {
    ($h:expr, $builder:expr) => {
        match $h.reopen()? {
            $crate::region::handle::Reopen::At(o) => $builder.options(o).open(),
            $crate::region::handle::Reopen::Fd(fd) => $builder.from_fd(fd),
        }
    };
}
pub(crate) use reopen_with;

/// Whether a handle can be opened by the process it is sent to (checked
/// when it is encoded, so that `spawn` refuses it at once with a plain
/// message instead of the child failing to decode it).
pub(crate) trait Travels {
    fn check_travel(&self) -> Result<()> {
        Ok(())
    }
}

//! Messages between processes: any type that rkyv 0.8 can archive, encoded
//! once and validated (bytecheck) before it is read on the other side.
//!
//! Shared objects travel as *handles*: a [`Value`] or [`Array`] encodes as its
//! segment's name (or, for an anonymous region handed to a child, the number of
//! a descriptor the child inherits; in a pool task, a descriptor of the pool's
//! process that the worker opens through `/proc/<pid>/fd`, kept open until the
//! task is done), and decodes by opening the region again —
//! its bytes are never copied. The usual header checks (kind, element type,
//! length) run on that open.

use crate::error::{Error, Result};
use crate::pipe::{ArchivedPipeHandle, Connection, PipeHandle, PipeHandleResolver};
use crate::queue::{Item, Queue, Receiver, Sender};
use crate::region::Segment;
use crate::{Array, SharedMap, Value};
use bytemuck::Pod;
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::{self, Fallible, Source};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::writer::Buffer;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Place, Serialize};
use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

/// A value that can cross a process boundary: it derives rkyv's `Archive`,
/// `Serialize` and `Deserialize` (with bytecheck validation, rkyv's default).
///
/// Implemented for every such type; users never implement it by hand.
/// Standard types (integers, `String`, `Vec`, `Option`, tuples, ...) and
/// shmkit's [`Value`] and [`Array`] handles qualify.
pub trait Message: Sized {
    /// Encodes `self`.
    ///
    /// # Errors
    ///
    /// [`Error::Encoding`] if rkyv cannot serialise the value (a handle that cannot travel, ...).
    fn encode(&self) -> Result<AlignedVec>;
    /// Encodes `self` into `buf` (which must be 16-aligned for the archive to
    /// be read in place); the length used. Fails if `buf` is too small.
    ///
    /// # Errors
    ///
    /// [`Error::Encoding`] if rkyv cannot serialise the value, or `buf` is too small for it.
    fn encode_into(&self, buf: &mut [u8]) -> Result<usize>;
    /// Validates `bytes` as an archive of `Self`, then deserializes it.
    ///
    /// # Errors
    ///
    /// [`Error::Encoding`] if `bytes` is not a valid archive of `Self`; if a handle in it cannot be
    /// opened, the error of that open ([`Error::NotFound`], ...).
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
        rkyv::to_bytes::<rancor::Error>(self).map_err(|e| Error::Encoding {
            what: std::any::type_name::<T>(),
            reason: e.to_string(),
        })
    }

    fn encode_into(&self, buf: &mut [u8]) -> Result<usize> {
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, Buffer::from(buf))
            .map(|b| b.len())
            .map_err(|e| Error::Encoding {
                what: std::any::type_name::<T>(),
                reason: e.to_string(),
            })
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
            .map_err(|e| decode_failed(std::any::type_name::<T>(), e))
    }

    fn encode_vec(items: &Vec<Self>, mut buf: AlignedVec, prefix: usize) -> Result<AlignedVec> {
        debug_assert_eq!(prefix % 16, 0);
        buf.clear();
        buf.resize(prefix, 0);
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(items, buf).map_err(|e| Error::Encoding {
            what: std::any::type_name::<Vec<T>>(),
            reason: e.to_string(),
        })
    }

    fn decode_vec(bytes: &[u8]) -> Result<Vec<Self>> {
        clear_cause();
        let failed = |e: rancor::Error| decode_failed(std::any::type_name::<Vec<T>>(), e);
        if (bytes.as_ptr() as usize) % 16 == 0 {
            return rkyv::from_bytes::<Vec<T>, rancor::Error>(bytes).map_err(failed);
        }
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<Vec<T>, rancor::Error>(&aligned).map_err(failed)
    }
}

thread_local! {
    /// Why the last handle in a message could not be opened on this thread:
    /// rancor's error keeps no message in release builds ("failed without
    /// error information"), so the real cause (`NotFound` with the segment's
    /// name, ...) is kept here and returned by `decode` instead.
    static DECODE_CAUSE: std::cell::RefCell<Option<Error>> = const { std::cell::RefCell::new(None) };
}

/// Keeps `e` as the cause of the decode under way and gives rkyv an error
/// that says the same.
fn cause<E: Source>(e: Error) -> E {
    #[derive(Debug)]
    struct Cause(String);
    impl std::fmt::Display for Cause {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Cause {}
    let text = e.to_string();
    DECODE_CAUSE.with(|c| *c.borrow_mut() = Some(e));
    E::new(Cause(text))
}

fn clear_cause() {
    DECODE_CAUSE.with(|c| c.borrow_mut().take());
}

/// The error of a failed decode: the kept cause if a handle failed to open,
/// else the archive was invalid.
fn decode_failed(what: &'static str, e: rancor::Error) -> Error {
    DECODE_CAUSE
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

/// Archive, Serialize and Deserialize for a handle type, delegating to
/// [`RegionHandle`] and reopening with `$open`.
macro_rules! region_handle_archive {
    ($ty:ident<$($p:ident: $bound:path),+>, $open:expr) => {
        impl<$($p: $bound),+> Archive for $ty<$($p),+> {
            type Archived = ArchivedRegionHandle;
            type Resolver = RegionHandleResolver;

            fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
                RegionHandle::of(self.segment()).resolve(resolver, out)
            }
        }

        impl<$($p: $bound,)+ S: Fallible + ?Sized> Serialize<S> for $ty<$($p),+>
        where
            RegionHandle: Serialize<S>,
            S::Error: Source,
        {
            fn serialize(&self, s: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
                Travels::check_travel(self).map_err(S::Error::new)?;
                let handle = RegionHandle::of(self.segment());
                note_outgoing(&handle).map_err(S::Error::new)?;
                handle.serialize(s)
            }
        }

        impl<$($p: $bound,)+ D: Fallible + ?Sized> Deserialize<$ty<$($p),+>, D>
            for ArchivedRegionHandle
        where
            D::Error: Source,
        {
            fn deserialize(&self, _: &mut D) -> std::result::Result<$ty<$($p),+>, D::Error> {
                let open: fn(RegionHandle) -> Result<$ty<$($p),+>> = $open;
                open(self.to_handle()).map_err(cause)
            }
        }
    };
}

impl RegionHandle {
    /// The descriptor of an anonymous region: inherited, or opened through
    /// /proc from the sender.
    pub(crate) fn anonymous_fd(&self) -> Result<OwnedFd> {
        match self.via_pid {
            0 => claim_inherited(self.fd),
            pid => open_via_proc(pid, self.fd),
        }
    }
}

/// Whether a handle can be opened by the process it is sent to (checked
/// when it is encoded, so that `spawn` refuses it at once with a plain
/// message instead of the child failing to decode it).
trait Travels {
    fn check_travel(&self) -> Result<()> {
        Ok(())
    }
}

impl<T: Pod> Travels for Value<T> {
    fn check_travel(&self) -> Result<()> {
        self.shared().check_travel()
    }
}

impl<T: Pod> Travels for Array<T> {
    fn check_travel(&self) -> Result<()> {
        self.shared().check_travel()
    }
}

impl<T: Item> Travels for Queue<T> {}
impl<K: Pod, V: Pod> Travels for SharedMap<K, V> {}

region_handle_archive!(Value<T: Pod>, |h| match (&h.name, &h.path) {
    (Some(n), _) => Value::builder().name(n).open(),
    (None, Some(p)) => Value::builder().file(p).open(),
    (None, None) => Value::builder().from_fd(h.anonymous_fd()?),
});

region_handle_archive!(Array<T: Pod>, |h| match (&h.name, &h.path) {
    (Some(n), _) => Array::builder().name(n).open(),
    (None, Some(p)) => Array::builder().file(p).open(),
    (None, None) => Array::builder().from_fd(h.anonymous_fd()?),
});

region_handle_archive!(Queue<T: Item>, Queue::from_handle);

region_handle_archive!(SharedMap<K: Pod, V: Pod>, SharedMap::from_handle);

/// The portable form of a queue [`Sender`] or [`Receiver`]: the region, and
/// the participant entry that travels with it.
///
/// Sending an endpoint *moves* its registration: the receiving process
/// adopts the entry (by its token), so the queue never sees zero senders in
/// between. An entry that is never adopted is freed when the child it was
/// spawned with ends, or when the sending process ends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EndpointHandle {
    /// The queue region.
    pub region: RegionHandle,
    /// The participant entry.
    pub entry: u32,
    /// The adoption token.
    pub token: u64,
}

/// Archive, Serialize and Deserialize for a queue endpoint.
macro_rules! endpoint_archive {
    ($ty:ident, $role:expr) => {
        impl<T: Item> Archive for $ty<T> {
            type Archived = ArchivedEndpointHandle;
            type Resolver = EndpointHandleResolver;

            fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
                self.portable().resolve(resolver, out)
            }
        }

        impl<T: Item, S: Fallible + ?Sized> Serialize<S> for $ty<T>
        where
            EndpointHandle: Serialize<S>,
            S::Error: Source,
        {
            fn serialize(&self, s: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
                let region = RegionHandle::of(self.segment());
                note_outgoing(&region).map_err(S::Error::new)?;
                if let Some(abandon) = self.start_transit() {
                    note_transit(abandon);
                }
                self.portable().serialize(s)
            }
        }

        impl<T: Item, D: Fallible + ?Sized> Deserialize<$ty<T>, D> for ArchivedEndpointHandle
        where
            D::Error: Source,
        {
            fn deserialize(&self, _: &mut D) -> std::result::Result<$ty<T>, D::Error> {
                let open = || -> Result<$ty<T>> {
                    let queue = Queue::<T>::from_handle(self.region.to_handle())?;
                    let entry =
                        queue
                            .raw
                            .adopt(self.entry.to_native(), self.token.to_native(), $role)?;
                    Ok($ty::new(queue, entry))
                };
                open().map_err(cause)
            }
        }
    };
}

endpoint_archive!(Sender, crate::queue::ROLE_SENDER);

impl<T: Item> Archive for Connection<T> {
    type Archived = ArchivedPipeHandle;
    type Resolver = PipeHandleResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        self.portable().resolve(resolver, out)
    }
}

impl<T: Item, S: Fallible + ?Sized> Serialize<S> for Connection<T>
where
    PipeHandle: Serialize<S>,
    S::Error: Source,
{
    fn serialize(&self, s: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
        note_outgoing(&RegionHandle::of(self.segment())).map_err(S::Error::new)?;
        if let Some(abandon) = self.start_transit() {
            note_transit(abandon);
        }
        self.portable().serialize(s)
    }
}

impl<T: Item, D: Fallible + ?Sized> Deserialize<Connection<T>, D> for ArchivedPipeHandle
where
    D::Error: Source,
{
    fn deserialize(&self, _: &mut D) -> std::result::Result<Connection<T>, D::Error> {
        Connection::adopt(self).map_err(cause)
    }
}
endpoint_archive!(Receiver, crate::queue::ROLE_RECEIVER);

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(Error::TypeMismatch { .. })
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

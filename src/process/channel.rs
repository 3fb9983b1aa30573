//! The private channel between a parent and one child: a memfd the child
//! inherits (as its stdin for spawn, by `fork` otherwise). The parent writes
//! the start request; the child overwrites it with the outcome; the parent
//! reads that after reaping the child. Nothing waits on it, so a child never
//! blocks on a parent that does not join.
//!
//! Every frame is checked before use: magic, a known state, a length that fits
//! the file and a maximum, and a checksum over the payload.

use crate::error::{Error, ProcessError, Result};
use crate::region::fnv1a;
use crate::sys::shm;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Largest payload accepted (a request's arguments or a return value); bulk
/// data belongs in an `Array`, which travels as a handle.
pub(crate) const MAX_PAYLOAD: u64 = 1 << 30;

/// The frame header at offset 0 of the channel.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct FrameHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// One of the `State` values.
    pub state: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Payload bytes after the header.
    pub len: u64,
    /// FNV-1a of the payload.
    pub checksum: u64,
}

const MAGIC: [u8; 8] = *b"shmkitP\x01";
const HEADER_LEN: u64 = size_of::<FrameHeader>() as u64;

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum State {
    /// A frame is being written (the writer may have died doing so).
    Writing = 0,
    /// The parent's start request (a `Request`).
    Request = 1,
    /// The function returned; the payload is the encoded return value.
    Returned = 2,
    /// The function panicked; the payload is the UTF-8 message.
    Panicked = 3,
    /// The child could not run the function; the payload is a `Failure`.
    Failed = 4,
}

impl State {
    fn from_raw(v: u32) -> Option<State> {
        Some(match v {
            0 => State::Writing,
            1 => State::Request,
            2 => State::Returned,
            3 => State::Panicked,
            4 => State::Failed,
            _ => return None,
        })
    }
}

/// A new channel (an anonymous memfd, close-on-exec).
pub(crate) fn create() -> Result<File> {
    shm::memfd("shmkit-process")
        .map(File::from)
        .map_err(|e| Error::from_os("memfd_create", "<process channel>", e))
}

/// Writes one frame: first a header that says `Writing`, then the payload,
/// then the real header, so a writer that dies midway leaves no frame.
pub(crate) fn write(file: &File, state: State, payload: &[u8]) -> Result<()> {
    let mut header = FrameHeader {
        magic: MAGIC,
        state: State::Writing as u32,
        reserved: 0,
        len: 0,
        checksum: 0,
    };
    let io = |e| Error::from_os("write", "<process channel>", e);
    file.write_all_at(bytemuck::bytes_of(&header), 0)
        .map_err(io)?;
    header.state = state as u32;
    header.len = payload.len() as u64;
    header.checksum = fnv1a(payload);
    file.set_len(HEADER_LEN + payload.len() as u64)
        .map_err(io)?;
    file.write_all_at(payload, HEADER_LEN).map_err(io)?;
    file.write_all_at(bytemuck::bytes_of(&header), 0)
        .map_err(io)
}

/// Reads and checks the frame; `Ok(None)` if nothing was written yet (an
/// empty channel or a request never overwritten).
pub(crate) fn read(file: &File) -> Result<Option<(State, Vec<u8>)>> {
    let corrupt = |what: String| Error::Process(ProcessError::ChannelCorrupted { what });
    let io = |e| Error::from_os("read", "<process channel>", e);
    let size = file.metadata().map_err(io)?.len();
    if size < HEADER_LEN {
        return Ok(None);
    }
    let mut header = FrameHeader::zeroed_header();
    file.read_exact_at(bytemuck::bytes_of_mut(&mut header), 0)
        .map_err(io)?;
    if header.magic != MAGIC {
        return Err(corrupt(format!("bad magic {:?}", header.magic)));
    }
    let state = State::from_raw(header.state)
        .ok_or_else(|| corrupt(format!("unknown state {}", header.state)))?;
    if state == State::Writing {
        return Ok(None);
    }
    if header.len > MAX_PAYLOAD || header.len > size - HEADER_LEN {
        return Err(corrupt(format!(
            "payload length {} does not fit the {size}-byte channel",
            header.len
        )));
    }
    let mut payload = vec![0u8; header.len as usize];
    file.read_exact_at(&mut payload, HEADER_LEN).map_err(io)?;
    if fnv1a(&payload) != header.checksum {
        return Err(corrupt("payload checksum mismatch".into()));
    }
    Ok(Some((state, payload)))
}

impl FrameHeader {
    fn zeroed_header() -> FrameHeader {
        bytemuck::Zeroable::zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn frame_header_layout() {
        assert_eq!(size_of::<FrameHeader>(), 32);
        assert_eq!(offset_of!(FrameHeader, state), 8);
        assert_eq!(offset_of!(FrameHeader, len), 16);
        assert_eq!(offset_of!(FrameHeader, checksum), 24);
    }

    #[test]
    fn frames_round_trip_and_damage_is_detected() {
        let f = create().unwrap();
        assert!(read(&f).unwrap().is_none());
        write(&f, State::Returned, b"hello").unwrap();
        assert_eq!(
            read(&f).unwrap(),
            Some((State::Returned, b"hello".to_vec()))
        );
        // Overwrite with a shorter frame: no stale tail is read.
        write(&f, State::Panicked, b"x").unwrap();
        assert_eq!(read(&f).unwrap(), Some((State::Panicked, b"x".to_vec())));
        // Flip a payload byte, then a length, then the state.
        f.write_all_at(b"y", HEADER_LEN).unwrap();
        assert!(matches!(
            read(&f),
            Err(Error::Process(ProcessError::ChannelCorrupted { .. }))
        ));
        write(&f, State::Returned, b"abc").unwrap();
        f.write_all_at(&u64::MAX.to_ne_bytes(), 16).unwrap();
        assert!(matches!(
            read(&f),
            Err(Error::Process(ProcessError::ChannelCorrupted { .. }))
        ));
        write(&f, State::Returned, b"abc").unwrap();
        f.write_all_at(&99u32.to_ne_bytes(), 8).unwrap();
        assert!(matches!(
            read(&f),
            Err(Error::Process(ProcessError::ChannelCorrupted { .. }))
        ));
        // A writer that died after the first header write leaves no frame.
        f.write_all_at(&0u32.to_ne_bytes(), 8).unwrap();
        assert_eq!(read(&f).unwrap(), None);
    }
}

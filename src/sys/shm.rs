//! Shared-memory objects: POSIX `shm_open`, `memfd_create` with seals, plain
//! files, and the `fstat`/`statvfs`/`fallocate` calls that guard them.

use super::{cvt, cvt_retry};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// What `fstat` says about a shared-memory object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) size: u64,
    pub(crate) uid: u32,
    /// The file's identity (device and inode).
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// `shm_open(name, O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, mode)`: fails with
/// `EEXIST` rather than adopt an object somebody else planted under the name.
pub(crate) fn shm_create_excl(name: &str, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let fd = cvt_retry(|| unsafe {
        libc::shm_open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            mode as libc::mode_t,
        )
    })?;
    // The process umask may have cleared bits the caller asked for; set them
    // exactly (fchmod is not subject to the umask).
    // SAFETY: fd was just returned by shm_open and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fd is a valid open descriptor.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(fd)
}

/// Opens an existing POSIX shared-memory object read-write.
pub(crate) fn shm_open_existing(name: &str) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let fd =
        cvt_retry(|| unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) })?;
    // SAFETY: fd was just returned by shm_open and is owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes a POSIX shared-memory name. Mappings that exist stay valid.
pub(crate) fn shm_unlink(name: &str) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    cvt(unsafe { libc::shm_unlink(c.as_ptr()) }).map(drop)
}

/// Creates an anonymous memory file that can be sealed.
pub(crate) fn memfd(debug_name: &str) -> io::Result<OwnedFd> {
    let c = cstr(debug_name)?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let fd = cvt(unsafe {
        libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: fd was just returned by memfd_create and is owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Seals a memfd's size: no peer can shrink it (which would SIGBUS everybody
/// mapping it), grow it, or remove the seals.
pub(crate) fn seal_size(fd: &OwnedFd) -> io::Result<()> {
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fd is a valid memfd created with MFD_ALLOW_SEALING.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
}

/// Creates a regular file exclusively (for file-backed regions).
pub(crate) fn file_create_excl(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // SAFETY: f is a valid open file.
    cvt(unsafe { libc::fchmod(f.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(f.into())
}

/// Opens an existing regular file read-write.
pub(crate) fn file_open_existing(path: &Path) -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    Ok(f.into())
}

/// Sets the object's size.
pub(crate) fn set_len(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: fd is a valid descriptor.
    cvt_retry(|| unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(drop)
}

/// Reserves the object's pages now (tmpfs allocates them), so that a short
/// /dev/shm fails here with `ENOSPC` instead of with SIGBUS on first touch.
pub(crate) fn allocate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: fd is a valid descriptor; mode 0 allocates and extends.
    cvt_retry(|| unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len) }).map(drop)
}

/// `fstat` of a descriptor.
pub(crate) fn stat(fd: &OwnedFd) -> io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is a valid out-pointer; fd a valid descriptor.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so st is initialised.
    let st = unsafe { st.assume_init() };
    Ok(Stat {
        size: st.st_size as u64,
        uid: st.st_uid,
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// Reads up to `buf.len()` bytes of `fd` at `offset` (`pread`); how many.
pub(crate) fn read_at(fd: &OwnedFd, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length; `fd` is a valid
    // descriptor; pread does not move the file offset.
    let n = unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
pub(crate) fn free_space(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut vfs = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid C string and out-pointer.
    cvt(unsafe { libc::statvfs(c.as_ptr(), vfs.as_mut_ptr()) })?;
    // SAFETY: statvfs succeeded.
    let vfs = unsafe { vfs.assume_init() };
    #[allow(clippy::unnecessary_cast)] // c_ulong is u32 on 32-bit targets
    Ok((vfs.f_bavail as u64).saturating_mul(vfs.f_frsize as u64))
}

/// `n` bytes from the kernel's secure random source (`getrandom(2)`).
pub(crate) fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let r = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += r as usize;
    }
    Ok(buf)
}

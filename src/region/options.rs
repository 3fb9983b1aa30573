//! How a region is backed and how it is created or opened.

use crate::error::{Error, RegionError, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Where a region's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backing {
    /// An anonymous memfd: no name, nothing to leak; shared with children
    /// by `fork` or by passing the descriptor.
    Anonymous,
    /// A POSIX shared-memory name, normalised to start with '/'.
    Named(String),
    /// A random POSIX name `/shmkit-<16 hex>` chosen at create.
    RandomName,
    /// A file (e.g. on hugetlbfs, or on disk for persistence).
    File(PathBuf),
}

/// Options shared by every shared object: backing, permissions, open timeout,
/// ownership. Each object's builder exposes them as chained setters.
///
/// Defaults: anonymous memfd, mode `0o600`, space reserved at create (named
/// and file regions), no populate, 1 s open timeout, foreign owners refused,
/// the creator unlinks on drop.
#[derive(Debug, Clone)]
pub struct RegionOptions {
    pub(crate) backing: Backing,
    pub(crate) mode: u32,
    pub(crate) populate: bool,
    pub(crate) reserve: bool,
    pub(crate) open_timeout: Duration,
    pub(crate) allow_foreign_owner: bool,
    pub(crate) unlink_on_drop: bool,
    pub(crate) tag: Option<String>,
}

impl Default for RegionOptions {
    fn default() -> Self {
        RegionOptions {
            backing: Backing::Anonymous,
            mode: 0o600,
            populate: false,
            reserve: true,
            open_timeout: Duration::from_secs(1),
            allow_foreign_owner: false,
            unlink_on_drop: true,
            tag: None,
        }
    }
}

impl RegionOptions {
    /// Defaults (see the type's docs).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Back the region by the POSIX shared-memory name `name` (`/dev/shm/name`).
    /// A leading '/' is optional.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.backing = Backing::Named(name.into());
        self
    }

    /// Back the region by a fresh random name with the prefix `shmkit-`, drawn
    /// from the kernel's secure random source.
    #[must_use]
    pub fn random_name(mut self) -> Self {
        self.backing = Backing::RandomName;
        self
    }

    /// Back the region by an anonymous memfd (the default).
    #[must_use]
    pub fn anonymous(mut self) -> Self {
        self.backing = Backing::Anonymous;
        self
    }

    /// Back the region by a file at `path` (hugetlbfs for huge pages, or a disk
    /// for persistence).
    #[must_use]
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.backing = Backing::File(path.into());
        self
    }

    /// Permission bits for a named or file region (default `0o600`).
    #[must_use]
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Reserve and touch every page at creation, so a short /dev/shm fails at
    /// `create` (with [`RegionError::NoSpace`](crate::error::RegionError::NoSpace)) instead of with SIGBUS on first use,
    /// and no first access pays a page fault (`MAP_POPULATE`). Implies
    /// [`reserve`](Self::reserve).
    #[must_use]
    pub fn populate(mut self, yes: bool) -> Self {
        self.populate = yes;
        self
    }

    /// Reserve the region's pages in /dev/shm (or the file's filesystem) at
    /// `create`, without touching them (`fallocate(2)`; the default for named
    /// and file regions). Two regions that each fit but not together then
    /// fail at the second `create` with [`RegionError::NoSpace`](crate::error::RegionError::NoSpace), instead of being
    /// created sparse and killing their users with SIGBUS at the first touch
    /// of a page tmpfs cannot supply.
    ///
    /// Reserved pages count as used in /dev/shm (`df`) from the start; creating
    /// a large region takes the time to allocate them (not to map or zero them
    /// in this process). `reserve(false)` opts out: the region is created
    /// sparse (only checked against the free space at that moment) and a page
    /// that cannot be allocated later is a SIGBUS in whoever touches it (the
    /// SIGBUS handler does not turn that into an error: the file still covers
    /// the page, so it is not a truncation). On a filesystem without
    /// `fallocate` (`EOPNOTSUPP`) the reservation is skipped silently, as if
    /// `reserve(false)`. Anonymous (memfd) regions are never reserved: they
    /// are not counted against /dev/shm's size.
    #[must_use]
    pub fn reserve(mut self, yes: bool) -> Self {
        self.reserve = yes;
        self
    }

    /// How long `open` waits for the creator to publish the region (default 1 s).
    #[must_use]
    pub fn open_timeout(mut self, t: Duration) -> Self {
        self.open_timeout = t;
        self
    }

    /// Accept a segment owned by another uid (refused by default: such a peer
    /// could rewrite it under us).
    #[must_use]
    pub fn allow_foreign_owner(mut self, yes: bool) -> Self {
        self.allow_foreign_owner = yes;
        self
    }

    /// Whether the creating process unlinks the name when its last handle drops
    /// (default `true`). Handles in other processes never unlink.
    #[must_use]
    pub fn unlink_on_drop(mut self, yes: bool) -> Self {
        self.unlink_on_drop = yes;
        self
    }

    pub(crate) fn is_anonymous(&self) -> bool {
        self.backing == Backing::Anonymous
    }

    /// Identify the element type by `tag` instead of its Rust type name, for
    /// types shared between binaries whose crates are named differently.
    #[must_use]
    pub fn type_tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }
}

/// Checks and normalises a POSIX shared-memory name to `/name`.
pub(crate) fn normalise_name(name: &str) -> Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let bad = |reason| {
        Err(Error::Region(RegionError::InvalidName {
            name: name.to_owned(),
            reason,
        }))
    };
    if bare.is_empty() {
        return bad("empty");
    }
    if bare.len() > 200 {
        return bad("longer than 200 bytes");
    }
    if bare == "." || bare == ".." {
        return bad("'.' and '..' are not names");
    }
    if !bare
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("contains a character outside [A-Za-z0-9._-]");
    }
    Ok(format!("/{bare}"))
}

/// A fresh random name: `/shmkit-` and 16 hex digits from `getrandom(2)`.
pub(crate) fn random_name() -> Result<String> {
    let bytes = crate::sys::shm::random_bytes::<8>()
        .map_err(|e| Error::from_io("getrandom", "<random name>", e))?;
    Ok(format!("/shmkit-{:016x}", u64::from_le_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_checked() {
        assert_eq!(normalise_name("abc").unwrap(), "/abc");
        assert_eq!(normalise_name("/a.b_c-1").unwrap(), "/a.b_c-1");
        for bad in ["", "/", "a/b", "..", "x y", &"z".repeat(201)] {
            assert!(
                matches!(
                    normalise_name(bad),
                    Err(Error::Region(RegionError::InvalidName { .. }))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn random_names_carry_the_prefix_and_differ() {
        let a = random_name().unwrap();
        let b = random_name().unwrap();
        assert!(a.starts_with("/shmkit-") && a.len() == "/shmkit-".len() + 16);
        assert_ne!(a, b);
    }
}

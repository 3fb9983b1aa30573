//! [`FixedStr`]: a string of at most `N` bytes stored inline, a `Pod` key
//! or value.

use crate::error::{Error, Result};
use bytemuck::{Pod, Zeroable};

/// A string of at most `N` bytes stored inline, zero-padded: a `Pod` key
/// or value for a [`SharedMap`](crate::SharedMap) (or any shared region).
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

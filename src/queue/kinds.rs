//! What a queue carries, named in its type: `Queue<T>` for a `Pod` `T`,
//! `Queue<Bytes>` for raw byte messages, `Queue<Rkyv<M>>` for rkyv messages
//! of type `M`, `Queue<Serde<M>>` (feature `serde`) for serde messages. The
//! region records the kind and the message type's name; opening it as
//! another is [`RegionError::TypeMismatch`](crate::error::RegionError::TypeMismatch).

use super::error::AnySendError;
use std::borrow::Cow;
use std::convert::Infallible;
use std::marker::PhantomData;

/// What a queue carries: any `T: Pod` (fixed-size slots, one copy), or one of
/// the variable-size kinds [`Bytes`], [`Rkyv`] and `Serde` (feature `serde`).
/// Sealed: these are all the kinds there are.
pub trait Item: 'static + sealed::Sealed {
    /// Bytes per message for a fixed-size item, `None` for a variable kind.
    const FIXED: Option<usize>;
    /// What a borrowed slot reads as: the item itself (`Pod`) or its bytes.
    type View: ?Sized;
    /// The name recorded in the region for type checks on open.
    fn tag() -> Cow<'static, str>;
}

impl<T: bytemuck::Pod> sealed::Sealed for T {}
impl<T: bytemuck::Pod> Item for T {
    const FIXED: Option<usize> = Some(size_of::<T>());
    type View = T;
    fn tag() -> Cow<'static, str> {
        Cow::Borrowed(std::any::type_name::<T>())
    }
}

/// A variable-size kind: messages up to the queue's `max_message` bytes.
/// The `_bytes` operations (raw bytes in and out) work on every such queue.
/// Sealed: [`Bytes`], [`Rkyv`], `Serde`.
pub trait Variable: Item<View = [u8]> {}

mod sealed {
    pub trait Sealed {}
}

/// Raw byte messages: `Queue<Bytes>` ([`Sender::send_bytes`](super::Sender::send_bytes),
/// [`Receiver::recv_bytes`](super::Receiver::recv_bytes)). It has no values.
#[derive(Debug, Clone, Copy)]
pub enum Bytes {}

impl Item for Bytes {
    const FIXED: Option<usize> = None;
    type View = [u8];
    fn tag() -> Cow<'static, str> {
        Cow::Borrowed("shmkit::queue::Bytes")
    }
}
impl sealed::Sealed for Bytes {}
impl Variable for Bytes {}

/// rkyv messages of type `M`: `Queue<Rkyv<M>>`. `send(M)` serialises
/// straight into the slot; `recv()` validates and decodes a copy;
/// `recv_ref()` lends the slot, whose archive
/// ([`RecvGuard::archived`](super::RecvGuard::archived)) is read in place.
/// It has no values.
pub struct Rkyv<M>(Infallible, PhantomData<fn() -> M>);

impl<M: crate::Message + 'static> Item for Rkyv<M> {
    const FIXED: Option<usize> = None;
    type View = [u8];
    fn tag() -> Cow<'static, str> {
        Cow::Owned(format!("rkyv:{}", std::any::type_name::<M>()))
    }
}
impl<M> sealed::Sealed for Rkyv<M> {}
impl<M: crate::Message + 'static> Variable for Rkyv<M> {}

impl<M> std::fmt::Debug for Rkyv<M> {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {}
    }
}

/// serde messages of type `M` in the postcard format: `Queue<Serde<M>>`
/// (feature `serde`). `send(M)` serialises straight into the slot; `recv()`
/// decodes a copy. It has no values.
#[cfg(feature = "serde")]
pub struct Serde<M>(Infallible, PhantomData<fn() -> M>);

#[cfg(feature = "serde")]
impl<M: serde::Serialize + serde::de::DeserializeOwned + 'static> Item for Serde<M> {
    const FIXED: Option<usize> = None;
    type View = [u8];
    fn tag() -> Cow<'static, str> {
        Cow::Owned(format!("serde-postcard:{}", std::any::type_name::<M>()))
    }
}
#[cfg(feature = "serde")]
impl<M> sealed::Sealed for Serde<M> {}
#[cfg(feature = "serde")]
impl<M: serde::Serialize + serde::de::DeserializeOwned + 'static> Variable for Serde<M> {}

#[cfg(feature = "serde")]
impl<M> std::fmt::Debug for Serde<M> {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {}
    }
}

/// How a typed kind puts its message into a slot and takes it out.
pub(crate) trait Encoded: Variable {
    /// The message type.
    type Msg;
    /// Writes `msg` into `buf`; the length used. `TooLarge`
    /// (with the encoded length) if it does not fit, `Encoding`
    /// if it cannot be encoded at all.
    fn write(msg: &Self::Msg, buf: &mut [u8]) -> Result<usize, AnySendError<()>>;
    /// Copies `bytes` (a slot a peer could write into), then validates and
    /// decodes the copy.
    fn read(bytes: &[u8]) -> Result<Self::Msg, crate::Error>;
}

impl<M: crate::Message + 'static> Encoded for Rkyv<M> {
    type Msg = M;
    fn write(msg: &M, buf: &mut [u8]) -> Result<usize, AnySendError<()>> {
        // rkyv says only that it failed: encoding once more, unbounded,
        // tells a message too large from one that cannot be encoded.
        msg.encode_into(buf).map_err(|e| match msg.encode() {
            Ok(v) if v.len() > buf.len() => AnySendError::TooLarge {
                len: v.len(),
                max: buf.len(),
            },
            // The unbounded encode's error: in a release build the bounded
            // one may carry no message (rkyv stopped at the full buffer),
            // while this one names the real cause (a handle that cannot
            // travel, kept by `codec_failed`).
            Err(e2) => AnySendError::Encoding(e2),
            Ok(_) => AnySendError::Encoding(e),
        })
    }
    fn read(bytes: &[u8]) -> Result<M, crate::Error> {
        M::decode(bytes) // copies into an aligned buffer first
    }
}

#[cfg(feature = "serde")]
impl<M: serde::Serialize + serde::de::DeserializeOwned + 'static> Encoded for Serde<M> {
    type Msg = M;
    fn write(msg: &M, buf: &mut [u8]) -> Result<usize, AnySendError<()>> {
        let max = buf.len();
        postcard::to_slice(msg, buf)
            .map(|used| used.len())
            .map_err(|e| match e {
                postcard::Error::SerializeBufferFull => match postcard::to_allocvec(msg) {
                    Ok(v) => AnySendError::TooLarge { len: v.len(), max },
                    Err(e) => AnySendError::Encoding(serde_error::<M>(&e)),
                },
                e => AnySendError::Encoding(serde_error::<M>(&e)),
            })
    }
    fn read(bytes: &[u8]) -> Result<M, crate::Error> {
        let private = bytes.to_vec();
        postcard::from_bytes(&private).map_err(|e| serde_error::<M>(&e))
    }
}

#[cfg(feature = "serde")]
fn serde_error<M>(e: &postcard::Error) -> crate::Error {
    crate::Error::Encoding {
        what: std::any::type_name::<M>(),
        reason: format!("postcard: {e}"),
    }
}

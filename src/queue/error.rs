//! What a send or a receive can end with, crossbeam-style: the message comes
//! back to the sender when it could not be sent.

use crate::error::Error;
use std::fmt;

/// Why a message was not sent. The message comes back in the variants that
/// can carry it.
///
/// `try_send` gives `Full` or `Disconnected`; `send_timeout` gives `Timeout`
/// or `Disconnected`; `send` gives `Disconnected`. Byte and typed messages can
/// also give `TooLarge` and `Encoding`.
#[non_exhaustive]
pub enum SendError<T> {
    /// The queue is full (non-blocking send).
    Full(T),
    /// The queue stayed full until the timeout.
    Timeout(T),
    /// Every receiver is gone (dropped or dead), or the queue was closed.
    Disconnected(T),
    /// The message is longer than the queue's maximum message size.
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The queue's maximum.
        max: usize,
    },
    /// The message could not be encoded.
    Encoding(Error),
    /// A peer shrank the queue's segment (`ftruncate`): this handle now sees
    /// private zero pages where the cut slots were, and the message may not
    /// have reached anyone. [`Segment::check`](crate::region::Segment::check)
    /// on [`Sender::segment`](crate::queue::Sender::segment) gives the full
    /// error; recreate the queue.
    Truncated(T),
    /// The shared state is impossible (a peer wrote garbage into it) and
    /// cannot be repaired without risking a wrong message: the error says
    /// where; recreate the queue or pipe.
    Corrupted(Box<Error>),
}

impl<T> SendError<T> {
    /// The unsent message, if this error carries it.
    pub fn into_inner(self) -> Option<T> {
        match self {
            SendError::Full(t)
            | SendError::Timeout(t)
            | SendError::Disconnected(t)
            | SendError::Truncated(t) => Some(t),
            _ => None,
        }
    }
}

impl SendError<()> {
    /// The same error carrying the unsent message (an error of the byte
    /// layer, raised on behalf of a typed send).
    pub(crate) fn with_message<M>(self, msg: M) -> SendError<M> {
        match self {
            SendError::Full(()) => SendError::Full(msg),
            SendError::Timeout(()) => SendError::Timeout(msg),
            SendError::Disconnected(()) => SendError::Disconnected(msg),
            SendError::Truncated(()) => SendError::Truncated(msg),
            SendError::TooLarge { len, max } => SendError::TooLarge { len, max },
            SendError::Encoding(e) => SendError::Encoding(e),
            SendError::Corrupted(e) => SendError::Corrupted(e),
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Timeout(_) => f.write_str("Timeout(..)"),
            SendError::Disconnected(_) => f.write_str("Disconnected(..)"),
            SendError::TooLarge { len, max } => write!(f, "TooLarge {{ len: {len}, max: {max} }}"),
            SendError::Encoding(e) => write!(f, "Encoding({e:?})"),
            SendError::Truncated(_) => f.write_str("Truncated(..)"),
            SendError::Corrupted(e) => write!(f, "Corrupted({e:?})"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("the queue is full"),
            SendError::Timeout(_) => f.write_str("the queue stayed full until the timeout"),
            SendError::Disconnected(_) => {
                f.write_str("no receiver is left (all dropped or dead), or the queue was closed")
            }
            SendError::TooLarge { len, max } => write!(
                f,
                "a {len}-byte message does not fit this queue's {max}-byte slots: create it \
                 with a larger max_message, or send an Array handle instead of the bytes"
            ),
            SendError::Encoding(e) => write!(f, "{e}"),
            SendError::Truncated(_) => f.write_str(TRUNCATED),
            SendError::Corrupted(e) => write!(f, "{e}"),
        }
    }
}

impl<T> std::error::Error for SendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Encoding(e) => Some(e),
            SendError::Corrupted(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Equal when the variants and the messages they carry are; the errors an
/// `Encoding` or `Corrupted` carries compare by their text (crossbeam's
/// errors compare, and tests written for them use `assert_eq!`).
impl<T: PartialEq> PartialEq for SendError<T> {
    fn eq(&self, other: &Self) -> bool {
        use SendError::*;
        match (self, other) {
            (Full(a), Full(b))
            | (Timeout(a), Timeout(b))
            | (Disconnected(a), Disconnected(b))
            | (Truncated(a), Truncated(b)) => a == b,
            (TooLarge { len: a, max: m }, TooLarge { len: b, max: n }) => a == b && m == n,
            (Encoding(a), Encoding(b)) => a.to_string() == b.to_string(),
            (Corrupted(a), Corrupted(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

impl<T: Eq> Eq for SendError<T> {}

/// Why nothing was received.
///
/// `try_recv` gives `Empty` or `Disconnected`; `recv_timeout` gives `Timeout`
/// or `Disconnected`; `recv` gives `Disconnected`; typed receives can also
/// give `Invalid`.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecvError {
    /// Nothing to receive now (non-blocking receive).
    Empty,
    /// Nothing arrived before the timeout.
    Timeout,
    /// Every sender is gone (dropped or dead), or the queue was closed, and
    /// everything committed has been received.
    Disconnected,
    /// The message failed validation (a corrupted or hostile archive); it was
    /// consumed and dropped.
    Invalid(Error),
    /// A peer shrank the queue's segment (`ftruncate`): this handle now sees
    /// private zero pages where the cut slots were; what was received may be
    /// zeroes. Recreate the queue.
    Truncated,
    /// The shared state is impossible (a peer wrote garbage into it) and
    /// cannot be repaired without risking a wrong message: the error says
    /// where; recreate the queue or pipe.
    Corrupted(Box<Error>),
}

const TRUNCATED: &str = "another process shrank the queue's segment (ftruncate): this process \
                         now sees zero pages where it was cut and nothing more can be sent or \
                         received through it; recreate the queue";

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Empty => f.write_str("the queue is empty"),
            RecvError::Timeout => f.write_str("nothing arrived before the timeout"),
            RecvError::Disconnected => f.write_str(
                "no sender is left (all dropped or dead), or the queue was closed, and it is drained",
            ),
            RecvError::Invalid(e) => write!(f, "a message failed validation and was dropped: {e}"),
            RecvError::Truncated => f.write_str(TRUNCATED),
            RecvError::Corrupted(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RecvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecvError::Invalid(e) => Some(e),
            RecvError::Corrupted(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Equal when the variants are; the errors `Invalid` and `Corrupted` carry
/// compare by their text.
impl PartialEq for RecvError {
    fn eq(&self, other: &Self) -> bool {
        use RecvError::*;
        match (self, other) {
            (Empty, Empty) | (Timeout, Timeout) | (Disconnected, Disconnected) => true,
            (Truncated, Truncated) => true,
            (Invalid(a), Invalid(b)) => a.to_string() == b.to_string(),
            (Corrupted(a), Corrupted(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

impl Eq for RecvError {}

impl From<RecvError> for Error {
    fn from(e: RecvError) -> Error {
        Error::Channel {
            op: "recv",
            reason: e.to_string(),
        }
    }
}

impl<T> From<SendError<T>> for Error {
    fn from(e: SendError<T>) -> Error {
        Error::Channel {
            op: "send",
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn inner() -> Error {
        Error::InvalidArgument {
            argument: "x",
            message: "y".into(),
        }
    }

    #[test]
    fn errors_compare_and_keep_their_source() {
        assert_eq!(SendError::Full(1), SendError::Full(1));
        assert_ne!(SendError::Full(1), SendError::Full(2));
        assert_ne!(SendError::Full(1), SendError::Disconnected(1));
        assert_eq!(RecvError::Empty, RecvError::Empty);
        assert_ne!(RecvError::Empty, RecvError::Timeout);
        let c = RecvError::Corrupted(Box::new(inner()));
        assert_eq!(c, RecvError::Corrupted(Box::new(inner())));
        assert_eq!(c.source().unwrap().to_string(), inner().to_string());
        assert!(RecvError::Empty.source().is_none());
        let s: SendError<u8> = SendError::Encoding(inner());
        assert_eq!(s.source().unwrap().to_string(), "invalid x: y");
        assert!(SendError::Full(0u8).source().is_none());
    }
}

//! What a send or a receive can end with, crossbeam-style: one error type
//! per operation, so a `match` names only what that operation can return, and
//! the message comes back to the sender when it could not be sent.
//!
//! | operation | error | its own variant |
//! |---|---|---|
//! | `send` | [`SendError`] | — |
//! | `try_send` | [`TrySendError`] | `Full` |
//! | `send_timeout` | [`SendTimeoutError`] | `Timeout` |
//! | `recv` | [`RecvError`] | — |
//! | `try_recv` | [`TryRecvError`] | `Empty` |
//! | `recv_timeout` | [`RecvTimeoutError`] | `Timeout` |
//!
//! Every send error also has `Disconnected`, `TooLarge`, `Encoding`,
//! `Truncated` and `Corrupted`; every receive error `Disconnected`, `Invalid`,
//! `Truncated` and `Corrupted`. Unlike crossbeam's, `SendError` and
//! `RecvError` are enums, not a struct: a message across processes can also
//! fail to fit, to encode or to validate. `From` turns a `SendError` into
//! either other send error and a `RecvError` into either other receive error,
//! as in crossbeam; `?` turns any of them into [`enum@Error`].

use crate::error::Error;
use std::fmt;

/// What the byte layer of a send ends with, for any way of waiting; each
/// public operation turns it into its own type.
pub(crate) enum AnySendError<T> {
    Full(T),
    Timeout(T),
    Disconnected(T),
    TooLarge { len: usize, max: usize },
    Encoding(Error),
    Truncated(T),
    Corrupted(Box<Error>),
}

impl<T> AnySendError<T> {
    /// The same error carrying `msg` instead (an error of the byte layer,
    /// raised on behalf of a typed send; a batch's count sent).
    pub(crate) fn with_message<M>(self, msg: M) -> AnySendError<M> {
        use AnySendError::*;
        match self {
            Full(_) => Full(msg),
            Timeout(_) => Timeout(msg),
            Disconnected(_) => Disconnected(msg),
            Truncated(_) => Truncated(msg),
            TooLarge { len, max } => TooLarge { len, max },
            Encoding(e) => Encoding(e),
            Corrupted(e) => Corrupted(e),
        }
    }
}

/// What the byte layer of a receive ends with, for any way of waiting.
pub(crate) enum AnyRecvError {
    Empty,
    Timeout,
    Disconnected,
    Invalid(Error),
    Truncated,
    Corrupted(Box<Error>),
}

const TRUNCATED: &str = "another process shrank the queue's segment (ftruncate): this process \
                         now sees zero pages where it was cut and nothing more can be sent or \
                         received through it; recreate the queue";
const FULL: &str = "the queue is full (no room now): retry later, send (which waits) instead, \
                    or create it with a larger capacity";
const SEND_TIMEOUT: &str = "the queue stayed full until the timeout: receivers are slower than \
                            senders; wait longer, add receivers, or raise the capacity";
const SEND_DISCONNECTED: &str = "no receiver is left (all dropped or dead), or the queue was closed: nobody will read this \
     message";
const EMPTY: &str = "the queue is empty (nothing ready now)";
const RECV_TIMEOUT: &str = "nothing arrived before the timeout";
const RECV_DISCONNECTED: &str =
    "no sender is left (all dropped or dead), or the queue was closed, and it is drained";

fn too_large(f: &mut fmt::Formatter<'_>, len: usize, max: usize) -> fmt::Result {
    write!(
        f,
        "a {len}-byte message does not fit this queue's {max}-byte slots: create it with a \
         larger max_message, or send an Array handle instead of the bytes"
    )
}

/// One send error type: the variants every send shares, plus `$own` (the
/// way this operation stops waiting), with crossbeam's methods and traits.
macro_rules! send_error {
    ($(#[$doc:meta])* $name:ident, $op:literal $(, $own:ident, $own_doc:literal, $own_text:ident, $is_own:ident)?) => {
        $(#[$doc])*
        #[non_exhaustive]
        pub enum $name<T> {
            $(
                #[doc = $own_doc]
                $own(T),
            )?
            /// Every receiver is gone (dropped or dead), or the queue was
            /// closed.
            Disconnected(T),
            /// The message (its encoding, for a typed queue) is longer than
            /// the queue's maximum message size; a typed message's slot was
            /// skipped.
            TooLarge {
                /// Its length in bytes.
                len: usize,
                /// The queue's maximum.
                max: usize,
            },
            /// The message could not be encoded (its slot was skipped).
            Encoding(Error),
            /// A peer shrank the queue's segment (`ftruncate`): this handle
            /// now sees private zero pages where the cut slots were, and the
            /// message may not have reached anyone.
            /// [`Segment::check`](crate::region::Segment::check) on the
            /// sender's segment gives the full error; recreate the queue.
            Truncated(T),
            /// The shared state is impossible (a peer wrote garbage into it)
            /// and cannot be repaired without risking a wrong message: the
            /// error says where; recreate the queue or pipe.
            Corrupted(Box<Error>),
        }

        impl<T> $name<T> {
            /// The unsent message, if this error carries it.
            #[must_use]
            pub fn into_inner(self) -> Option<T> {
                match self {
                    $($name::$own(t) |)? $name::Disconnected(t) | $name::Truncated(t) => Some(t),
                    _ => None,
                }
            }

            /// Whether no receiver is left (or the queue was closed).
            #[must_use]
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $name::Disconnected(_))
            }

            $(
                #[doc = concat!("Whether this is `", stringify!($own), "`.")]
                #[must_use]
                pub fn $is_own(&self) -> bool {
                    matches!(self, $name::$own(_))
                }
            )?
        }

        impl<T> From<AnySendError<T>> for $name<T> {
            fn from(e: AnySendError<T>) -> Self {
                match e {
                    $(AnySendError::Full(t) | AnySendError::Timeout(t) => $name::$own(t),)?
                    AnySendError::Disconnected(t) => $name::Disconnected(t),
                    AnySendError::TooLarge { len, max } => $name::TooLarge { len, max },
                    AnySendError::Encoding(e) => $name::Encoding(e),
                    AnySendError::Truncated(t) => $name::Truncated(t),
                    AnySendError::Corrupted(e) => $name::Corrupted(e),
                    #[allow(unreachable_patterns)]
                    AnySendError::Full(_) | AnySendError::Timeout(_) => unreachable!(
                        "a send that waits without a deadline neither finds the queue full nor \
                         times out"
                    ),
                }
            }
        }

        impl<T: Clone> Clone for $name<T> {
            fn clone(&self) -> Self {
                match self {
                    $($name::$own(t) => $name::$own(t.clone()),)?
                    $name::Disconnected(t) => $name::Disconnected(t.clone()),
                    $name::TooLarge { len, max } => $name::TooLarge { len: *len, max: *max },
                    $name::Encoding(e) => $name::Encoding(e.clone()),
                    $name::Truncated(t) => $name::Truncated(t.clone()),
                    $name::Corrupted(e) => $name::Corrupted(e.clone()),
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$own(_) => f.write_str(concat!(stringify!($own), "(..)")),)?
                    $name::Disconnected(_) => f.write_str("Disconnected(..)"),
                    $name::TooLarge { len, max } => {
                        write!(f, "TooLarge {{ len: {len}, max: {max} }}")
                    }
                    $name::Encoding(e) => write!(f, "Encoding({e:?})"),
                    $name::Truncated(_) => f.write_str("Truncated(..)"),
                    $name::Corrupted(e) => write!(f, "Corrupted({e:?})"),
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$own(_) => f.write_str($own_text),)?
                    $name::Disconnected(_) => f.write_str(SEND_DISCONNECTED),
                    $name::TooLarge { len, max } => too_large(f, *len, *max),
                    $name::Encoding(e) => write!(f, "{e}"),
                    $name::Truncated(_) => f.write_str(TRUNCATED),
                    $name::Corrupted(e) => write!(f, "{e}"),
                }
            }
        }

        impl<T> std::error::Error for $name<T> {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::Encoding(e) => Some(e),
                    $name::Corrupted(e) => Some(&**e),
                    _ => None,
                }
            }
        }

        /// Equal when the variants and the messages they carry are; the
        /// errors an `Encoding` or `Corrupted` carries compare by their text
        /// (crossbeam's errors compare, and tests written for them use
        /// `assert_eq!`).
        impl<T: PartialEq> PartialEq for $name<T> {
            fn eq(&self, other: &Self) -> bool {
                use $name::*;
                match (self, other) {
                    $(($own(a), $own(b)) |)?
                    (Disconnected(a), Disconnected(b)) | (Truncated(a), Truncated(b)) => a == b,
                    (TooLarge { len: a, max: m }, TooLarge { len: b, max: n }) => {
                        a == b && m == n
                    }
                    (Encoding(a), Encoding(b)) => a.to_string() == b.to_string(),
                    (Corrupted(a), Corrupted(b)) => a.to_string() == b.to_string(),
                    _ => false,
                }
            }
        }

        impl<T: Eq> Eq for $name<T> {}

        impl<T> From<$name<T>> for Error {
            fn from(e: $name<T>) -> Error {
                Error::Channel {
                    op: $op,
                    reason: e.to_string(),
                }
            }
        }
    };
}

/// One receive error type, as `send_error!` for sends.
macro_rules! recv_error {
    ($(#[$doc:meta])* $name:ident, $op:literal $(, $own:ident, $own_doc:literal, $own_text:ident, $is_own:ident)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        pub enum $name {
            $(
                #[doc = $own_doc]
                $own,
            )?
            /// Every sender is gone (dropped or dead), or the queue was
            /// closed, and everything committed has been received.
            Disconnected,
            /// The message failed validation (a corrupted or hostile
            /// archive); it was consumed and dropped.
            Invalid(Error),
            /// A peer shrank the queue's segment (`ftruncate`): this handle
            /// now sees private zero pages where the cut slots were; what was
            /// received may be zeroes. Recreate the queue.
            Truncated,
            /// The shared state is impossible (a peer wrote garbage into it)
            /// and cannot be repaired without risking a wrong message: the
            /// error says where; recreate the queue or pipe.
            Corrupted(Box<Error>),
        }

        impl $name {
            /// Whether every sender is gone (or the queue was closed) and
            /// the queue is drained.
            #[must_use]
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $name::Disconnected)
            }

            $(
                #[doc = concat!("Whether this is `", stringify!($own), "`.")]
                #[must_use]
                pub fn $is_own(&self) -> bool {
                    matches!(self, $name::$own)
                }
            )?
        }

        impl From<AnyRecvError> for $name {
            fn from(e: AnyRecvError) -> Self {
                match e {
                    $(AnyRecvError::Empty | AnyRecvError::Timeout => $name::$own,)?
                    AnyRecvError::Disconnected => $name::Disconnected,
                    AnyRecvError::Invalid(e) => $name::Invalid(e),
                    AnyRecvError::Truncated => $name::Truncated,
                    AnyRecvError::Corrupted(e) => $name::Corrupted(e),
                    #[allow(unreachable_patterns)]
                    AnyRecvError::Empty | AnyRecvError::Timeout => unreachable!(
                        "a receive that waits without a deadline neither finds the queue empty \
                         nor times out"
                    ),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$own => f.write_str($own_text),)?
                    $name::Disconnected => f.write_str(RECV_DISCONNECTED),
                    $name::Invalid(e) => {
                        write!(f, "a message failed validation and was dropped: {e}")
                    }
                    $name::Truncated => f.write_str(TRUNCATED),
                    $name::Corrupted(e) => write!(f, "{e}"),
                }
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::Invalid(e) => Some(e),
                    $name::Corrupted(e) => Some(&**e),
                    _ => None,
                }
            }
        }

        /// Equal when the variants are; the errors `Invalid` and `Corrupted`
        /// carry compare by their text.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                use $name::*;
                match (self, other) {
                    $(($own, $own) |)?
                    (Disconnected, Disconnected) | (Truncated, Truncated) => true,
                    (Invalid(a), Invalid(b)) => a.to_string() == b.to_string(),
                    (Corrupted(a), Corrupted(b)) => a.to_string() == b.to_string(),
                    _ => false,
                }
            }
        }

        impl Eq for $name {}

        impl From<$name> for Error {
            fn from(e: $name) -> Error {
                Error::Channel {
                    op: $op,
                    reason: e.to_string(),
                }
            }
        }
    };
}

send_error!(
    /// Why [`send`](crate::queue::Sender::send) (or another send that waits
    /// without a deadline) did not send; the message comes back in the
    /// variants that can carry it.
    SendError, "send"
);
send_error!(
    /// Why [`try_send`](crate::queue::Sender::try_send) did not send; the
    /// message comes back in the variants that can carry it.
    TrySendError, "try_send", Full, "The queue is full now.", FULL, is_full
);
send_error!(
    /// Why [`send_timeout`](crate::queue::Sender::send_timeout) did not send;
    /// the message comes back in the variants that can carry it.
    SendTimeoutError, "send_timeout", Timeout, "The queue stayed full until the timeout.",
    SEND_TIMEOUT, is_timeout
);
recv_error!(
    /// Why [`recv`](crate::queue::Receiver::recv) (or another receive that
    /// waits without a deadline) received nothing.
    RecvError, "recv"
);
recv_error!(
    /// Why [`try_recv`](crate::queue::Receiver::try_recv) received nothing.
    TryRecvError, "try_recv", Empty, "Nothing to receive now.", EMPTY, is_empty
);
recv_error!(
    /// Why [`recv_timeout`](crate::queue::Receiver::recv_timeout) received
    /// nothing.
    RecvTimeoutError, "recv_timeout", Timeout, "Nothing arrived before the timeout.",
    RECV_TIMEOUT, is_timeout
);

/// A blocking send's error as a `try_send`'s or `send_timeout`'s, as in
/// crossbeam.
macro_rules! widen_send {
    ($($to:ident),+) => {$(
        impl<T> From<SendError<T>> for $to<T> {
            fn from(e: SendError<T>) -> Self {
                match e {
                    SendError::Disconnected(t) => $to::Disconnected(t),
                    SendError::TooLarge { len, max } => $to::TooLarge { len, max },
                    SendError::Encoding(e) => $to::Encoding(e),
                    SendError::Truncated(t) => $to::Truncated(t),
                    SendError::Corrupted(e) => $to::Corrupted(e),
                }
            }
        }
    )+};
}
widen_send!(TrySendError, SendTimeoutError);

/// A blocking receive's error as a `try_recv`'s or `recv_timeout`'s.
macro_rules! widen_recv {
    ($($to:ident),+) => {$(
        impl From<RecvError> for $to {
            fn from(e: RecvError) -> Self {
                match e {
                    RecvError::Disconnected => $to::Disconnected,
                    RecvError::Invalid(e) => $to::Invalid(e),
                    RecvError::Truncated => $to::Truncated,
                    RecvError::Corrupted(e) => $to::Corrupted(e),
                }
            }
        }
    )+};
}
widen_recv!(TryRecvError, RecvTimeoutError);

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
        assert_eq!(TrySendError::Full(1), TrySendError::Full(1));
        assert_ne!(TrySendError::Full(1), TrySendError::Full(2));
        assert_ne!(TrySendError::Full(1), TrySendError::Disconnected(1));
        assert_eq!(TryRecvError::Empty, TryRecvError::Empty);
        assert_ne!(RecvTimeoutError::Timeout, RecvTimeoutError::Disconnected);
        let c = RecvError::Corrupted(Box::new(inner()));
        assert_eq!(c, RecvError::Corrupted(Box::new(inner())));
        assert_eq!(c.source().unwrap().to_string(), inner().to_string());
        assert!(TryRecvError::Empty.source().is_none());
        let s: SendTimeoutError<u8> = SendTimeoutError::Encoding(inner());
        assert_eq!(s.source().unwrap().to_string(), "invalid x: y");
        assert!(TrySendError::Full(0u8).source().is_none());
    }

    #[test]
    fn each_operation_maps_the_ways_of_waiting_to_its_own_variant() {
        // A try that found no room and one whose zero deadline passed are both
        // "full"; a timed send that found no room timed out.
        assert_eq!(
            TrySendError::from(AnySendError::Full(1)),
            TrySendError::Full(1)
        );
        assert_eq!(
            TrySendError::from(AnySendError::Timeout(1)),
            TrySendError::Full(1)
        );
        assert_eq!(
            SendTimeoutError::from(AnySendError::Full(1)),
            SendTimeoutError::Timeout(1)
        );
        assert_eq!(
            TryRecvError::from(AnyRecvError::Timeout),
            TryRecvError::Empty
        );
        assert_eq!(
            RecvTimeoutError::from(AnyRecvError::Empty),
            RecvTimeoutError::Timeout
        );
        assert_eq!(
            SendError::from(AnySendError::Truncated(3)),
            SendError::Truncated(3)
        );
        assert_eq!(
            RecvError::from(AnyRecvError::Disconnected),
            RecvError::Disconnected
        );
        assert_eq!(
            SendError::<()>::from(AnySendError::TooLarge { len: 9, max: 8 }),
            SendError::TooLarge { len: 9, max: 8 }
        );
    }

    #[test]
    #[should_panic(expected = "waits without a deadline")]
    fn a_blocking_send_never_reports_full() {
        let _ = SendError::from(AnySendError::Full(()));
    }

    #[test]
    fn blocking_errors_widen_as_in_crossbeam() {
        assert_eq!(
            TrySendError::from(SendError::Disconnected(5)),
            TrySendError::Disconnected(5)
        );
        assert_eq!(
            SendTimeoutError::from(SendError::Truncated(5)),
            SendTimeoutError::Truncated(5)
        );
        assert_eq!(
            TryRecvError::from(RecvError::Disconnected),
            TryRecvError::Disconnected
        );
        assert_eq!(
            RecvTimeoutError::from(RecvError::Truncated),
            RecvTimeoutError::Truncated
        );
        assert!(TrySendError::Full(0).is_full() && !TrySendError::Full(0).is_disconnected());
        assert!(SendTimeoutError::Timeout(0).is_timeout());
        assert!(TryRecvError::Empty.is_empty() && RecvError::Disconnected.is_disconnected());
        assert_eq!(SendTimeoutError::Timeout(4).into_inner(), Some(4));
        assert_eq!(
            TrySendError::<u8>::TooLarge { len: 2, max: 1 }.into_inner(),
            None
        );
    }

    #[test]
    fn errors_clone_as_crossbeams_do() {
        let s = TrySendError::Full(vec![1u8, 2]);
        assert_eq!(s.clone(), s);
        let r = RecvTimeoutError::Corrupted(Box::new(inner()));
        assert_eq!(r.clone(), r);
        let io = Error::from_io("open", "/x", std::io::Error::from_raw_os_error(libc::EIO));
        let copy = io.clone();
        assert_eq!(copy.to_string(), io.to_string());
        assert_eq!(
            copy.source().map(ToString::to_string),
            io.source().map(ToString::to_string)
        );
    }

    #[test]
    fn question_mark_names_the_operation() {
        let e: Error = TryRecvError::Empty.into();
        assert!(e.to_string().starts_with("try_recv failed"), "{e}");
    }
}

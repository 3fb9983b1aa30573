//! The ring's atomics: the loom-switchable ones of [`crate::sync`].

pub(crate) use crate::sync::atomic::{AtomicU64, Ordering};

//! [`Watch`]: the shared word a pending future waits on, and what keeps it
//! mapped.

use crate::sys::futex;
use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A shared futex word a future waits on, its sleeper count, and what keeps
/// both mapped.
pub(crate) struct Watch {
    pub(super) keep: Arc<dyn Any + Send + Sync>,
    word: Word,
    /// The word's sleeper count (none for a lock's owner word, whose
    /// sleepers announce themselves with its contended bit instead).
    waiters: Option<NonNull<AtomicU32>>,
}

/// The futex word of a [`Watch`].
#[derive(Clone, Copy)]
enum Word {
    U32(NonNull<AtomicU32>),
    /// The low half of a 64-bit word (a lock's owner word): read as the
    /// 64-bit atomic it is, given to the kernel as its low 32 bits.
    Low(NonNull<AtomicU64>),
}

// SAFETY: the pointers are into memory that `keep` (Send + Sync) keeps
// mapped; they are only used to reach atomics, which any thread may use.
unsafe impl Send for Watch {}
// SAFETY: as for Send.
unsafe impl Sync for Watch {}

impl Clone for Watch {
    fn clone(&self) -> Self {
        Watch {
            keep: self.keep.clone(),
            word: self.word,
            waiters: self.waiters,
        }
    }
}

impl Watch {
    /// # Safety
    /// `word` and `waiters` must stay valid as long as `keep` lives (they
    /// lie in a mapping it owns).
    pub(crate) unsafe fn new(
        keep: Arc<dyn Any + Send + Sync>,
        word: &AtomicU32,
        waiters: &AtomicU32,
    ) -> Self {
        Watch {
            keep,
            word: Word::U32(NonNull::from(word)),
            waiters: Some(NonNull::from(waiters)),
        }
    }

    /// A watch on the low half of a lock's owner word, which has no sleeper
    /// count: the waiting future sets the word's contended bit itself, so
    /// the holder's unlock wakes the word.
    ///
    /// # Safety
    /// `owner` must stay valid as long as `keep` lives.
    pub(crate) unsafe fn low_half(keep: Arc<dyn Any + Send + Sync>, owner: &AtomicU64) -> Self {
        Watch {
            keep,
            word: Word::Low(NonNull::from(owner)),
            waiters: None,
        }
    }

    /// The word's value (the low 32 bits of a 64-bit word), as the kernel
    /// compares it.
    pub(super) fn value(&self) -> u32 {
        match self.word {
            // SAFETY: valid while `keep` lives (`new`'s contract), and
            // `self` holds `keep`.
            Word::U32(w) => unsafe { w.as_ref() }.load(Ordering::SeqCst),
            // SAFETY: as above (`low_half`'s contract).
            Word::Low(w) => unsafe { w.as_ref() }.load(Ordering::SeqCst) as u32,
        }
    }

    /// The address the kernel sleeps on.
    pub(super) fn addr(&self) -> *const u32 {
        match self.word {
            Word::U32(w) => w.as_ptr().cast_const().cast(),
            // SAFETY: as in `value`.
            Word::Low(w) => futex::low_half(unsafe { w.as_ref() }).cast_const(),
        }
    }

    /// Wakes one sleeper of the word.
    pub(super) fn wake_one(&self) {
        match self.word {
            // SAFETY: as in `value`.
            Word::U32(w) => futex::wake(unsafe { w.as_ref() }, 1),
            // SAFETY: as in `value`.
            Word::Low(w) => futex::wake_low_half(unsafe { w.as_ref() }, 1),
        };
    }

    /// Counts a sleeper in (`true`) or out, where the word has a count.
    pub(super) fn count(&self, sleeping: bool) {
        if let Some(w) = self.waiters {
            // SAFETY: as in `value`.
            let waiters = unsafe { w.as_ref() };
            if sleeping {
                waiters.fetch_add(1, Ordering::SeqCst);
            } else {
                waiters.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

//! [`AtomicInt`]: the integer element types that [`Value`](crate::Value) and
//! [`Array`](crate::Array) can also operate on lock-free.

use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering,
};

mod sealed {
    pub trait Sealed {}
}

/// A fixed-width integer with a same-sized, same-aligned std atomic.
/// (`usize`/`isize` are left out on purpose: their width is not a cross-binary
/// contract.)
pub trait AtomicInt: bytemuck::Pod + sealed::Sealed {
    /// The std atomic of the same width (`AtomicU64` for `u64`, ...).
    type Atomic: Sync + Send + std::fmt::Debug;

    /// Views `*p` as an atomic.
    ///
    /// # Safety
    /// `p` must be non-null, aligned for `Self::Atomic` and valid for `'a`, and
    /// every other access to it during `'a` must be atomic.
    unsafe fn atomic_from_ptr<'a>(p: *mut Self) -> &'a Self::Atomic;
    /// `load`.
    fn load(a: &Self::Atomic, o: Ordering) -> Self;
    /// `store`.
    fn store(a: &Self::Atomic, v: Self, o: Ordering);
    /// `swap`.
    fn swap(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    /// `fetch_add` (wrapping).
    fn fetch_add(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    /// `fetch_sub` (wrapping).
    fn fetch_sub(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    /// `fetch_and`.
    fn fetch_and(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    /// `fetch_or`.
    fn fetch_or(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    /// `fetch_xor`.
    fn fetch_xor(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    /// `fetch_max`.
    fn fetch_max(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    /// `fetch_min`.
    fn fetch_min(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    /// `compare_exchange`.
    ///
    /// # Errors
    /// `Err` with the value found if it was not `current` (nothing stored).
    fn compare_exchange(
        a: &Self::Atomic,
        current: Self,
        new: Self,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Self, Self>;
}

macro_rules! atomic_int {
    ($($t:ty => $a:ty),*) => {$(
        impl sealed::Sealed for $t {}
        const _: () = assert!(
            std::mem::align_of::<$t>() == std::mem::align_of::<$a>()
                && std::mem::size_of::<$t>() == std::mem::size_of::<$a>()
        );
        impl AtomicInt for $t {
            type Atomic = $a;
            unsafe fn atomic_from_ptr<'a>(p: *mut Self) -> &'a $a {
                // SAFETY: forwarded to the caller; size and alignment are equal
                // (checked at compile time above).
                unsafe { <$a>::from_ptr(p) }
            }
            fn load(a: &$a, o: Ordering) -> Self { a.load(o) }
            fn store(a: &$a, v: Self, o: Ordering) { a.store(v, o) }
            fn swap(a: &$a, v: Self, o: Ordering) -> Self { a.swap(v, o) }
            fn fetch_add(a: &$a, v: Self, o: Ordering) -> Self { a.fetch_add(v, o) }
            fn fetch_sub(a: &$a, v: Self, o: Ordering) -> Self { a.fetch_sub(v, o) }
            fn fetch_and(a: &$a, v: Self, o: Ordering) -> Self { a.fetch_and(v, o) }
            fn fetch_or(a: &$a, v: Self, o: Ordering) -> Self { a.fetch_or(v, o) }
            fn fetch_xor(a: &$a, v: Self, o: Ordering) -> Self { a.fetch_xor(v, o) }
            fn fetch_max(a: &$a, v: Self, o: Ordering) -> Self { a.fetch_max(v, o) }
            fn fetch_min(a: &$a, v: Self, o: Ordering) -> Self { a.fetch_min(v, o) }
            fn compare_exchange(a: &$a, c: Self, n: Self, s: Ordering, f: Ordering)
                -> Result<Self, Self> { a.compare_exchange(c, n, s, f) }
        }
    )*};
}

atomic_int!(u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64,
            i8 => AtomicI8, i16 => AtomicI16, i32 => AtomicI32, i64 => AtomicI64);

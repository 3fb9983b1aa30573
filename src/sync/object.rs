//! The plumbing shared by the futex primitives: a region whose control block is
//! the primitive's `#[repr(C)]` state and which holds no elements.

use crate::error::Result;
use crate::region::{Kind, RegionOptions, Segment};
use crate::sync::mutex::spec_of;
use std::sync::Arc;

/// A handle on a control-only region holding a `C`.
#[derive(Debug)]
pub(crate) struct Object<C> {
    seg: Arc<Segment>,
    _c: std::marker::PhantomData<C>,
}

impl<C> Clone for Object<C> {
    fn clone(&self) -> Self {
        Object {
            seg: self.seg.clone(),
            _c: std::marker::PhantomData,
        }
    }
}

impl<C: Sync> Object<C> {
    /// Creates the region; `init` writes a valid `C` into the zeroed block.
    pub(crate) fn create(
        opts: &RegionOptions,
        kind: Kind,
        init: impl FnOnce(*mut C) -> Result<()>,
    ) -> Result<Self> {
        let spec = spec_of::<C, ()>(kind, 0, opts);
        let seg = Segment::create(opts, &spec, 0, |c, _| init(c.cast()))?;
        Ok(Object {
            seg: Arc::new(seg),
            _c: std::marker::PhantomData,
        })
    }

    /// Opens the region and checks that it holds a `C` of this kind.
    pub(crate) fn open(opts: &RegionOptions, kind: Kind) -> Result<Self> {
        let spec = spec_of::<C, ()>(kind, 0, opts);
        let seg = Segment::open(opts, &spec, Some(0))?;
        Ok(Object {
            seg: Arc::new(seg),
            _c: std::marker::PhantomData,
        })
    }

    /// Opens the region from an inherited descriptor and checks that it
    /// holds a `C` of this kind.
    pub(crate) fn from_fd(
        fd: std::os::fd::OwnedFd,
        opts: &RegionOptions,
        kind: Kind,
    ) -> Result<Self> {
        let spec = spec_of::<C, ()>(kind, 0, opts);
        let seg = Segment::from_fd(fd, opts, &spec, Some(0))?;
        Ok(Object {
            seg: Arc::new(seg),
            _c: std::marker::PhantomData,
        })
    }

    /// The shared state.
    pub(crate) fn get(&self) -> &C {
        // SAFETY: the header check guarantees the control block has C's size
        // and alignment and was initialised before publication; C is made of
        // atomics (and, for Condition, a RawMutex), valid for any concurrent use.
        unsafe { &*self.seg.control_ptr().cast::<C>() }
    }

    /// What keeps the mapping alive, for a future's registration.
    #[cfg(feature = "async")]
    pub(crate) fn keep(&self) -> Arc<dyn std::any::Any + Send + Sync> {
        self.seg.clone()
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }
}

/// Declares a builder holding region options.
macro_rules! object_builder {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            opts: crate::region::RegionOptions,
        }
        impl $name {
            region_setters!();
        }
    };
}

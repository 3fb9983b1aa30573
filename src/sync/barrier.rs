//! [`Barrier`]: `parties` processes wait until all have arrived (Python's
//! `multiprocessing.Barrier`).
//!
//! State is one 64-bit word (generation << 32 | arrived), changed by CAS, so a
//! waiter that times out can withdraw its arrival atomically; a separate 32-bit
//! futex word mirrors the generation for sleeping.

use crate::error::Result;
use crate::region::{Kind, Segment};
use crate::sync::object::Object;
use crate::sync::wait::{self, Attempt, block_on};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The barrier's shared state.
#[repr(C)]
#[derive(Debug)]
pub struct RawBarrier {
    /// generation << 32 | arrived.
    state: AtomicU64,
    /// The low 32 bits of the generation (the futex word).
    generation: AtomicU32,
    waiters: AtomicU32,
    parties: u32,
    _pad: u32,
}

/// Returned by [`Barrier::wait`]: exactly one waiter per generation is the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierWaitResult {
    leader: bool,
}

impl BarrierWaitResult {
    /// Whether this waiter was the last to arrive (std's `is_leader`; Python
    /// returns index 0 to one waiter for the same purpose).
    pub fn is_leader(&self) -> bool {
        self.leader
    }
}

/// [`Barrier::wait_timeout`] gave up; its arrival was withdrawn, so the
/// barrier is still usable (Python instead breaks the barrier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierTimeout;

impl std::fmt::Display for BarrierTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad("timed out waiting at the barrier (arrival withdrawn)")
    }
}

impl std::error::Error for BarrierTimeout {}

object_builder!(
    /// Builder for [`Barrier`].
    BarrierBuilder
);

impl BarrierBuilder {
    /// Creates a barrier for `parties` waiters.
    ///
    /// # Panics
    /// If `parties` is 0.
    pub fn create(self, parties: u32) -> Result<Barrier> {
        assert!(parties > 0, "a barrier needs at least one party");
        let obj = Object::create(&self.opts, Kind::Barrier, |p: *mut RawBarrier| {
            // SAFETY: `p` is the unpublished, suitably sized control block.
            unsafe {
                p.write(RawBarrier {
                    state: AtomicU64::new(0),
                    generation: AtomicU32::new(0),
                    waiters: AtomicU32::new(0),
                    parties,
                    _pad: 0,
                })
            };
            Ok(())
        })?;
        Ok(Barrier { obj })
    }

    /// Opens an existing named barrier.
    pub fn open(self) -> Result<Barrier> {
        Ok(Barrier {
            obj: Object::open(&self.opts, Kind::Barrier)?,
        })
    }
}

/// A reusable barrier shared between processes.
#[derive(Debug, Clone)]
pub struct Barrier {
    obj: Object<RawBarrier>,
}

const COUNT_MASK: u64 = 0xffff_ffff;

impl Barrier {
    /// A new anonymous barrier for `parties` waiters.
    pub fn new(parties: u32) -> Result<Self> {
        Self::builder().create(parties)
    }

    /// A builder for named or otherwise configured barriers.
    pub fn builder() -> BarrierBuilder {
        BarrierBuilder::default()
    }

    /// Opens the named barrier `name`.
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    /// How many must arrive.
    pub fn parties(&self) -> u32 {
        self.obj.get().parties
    }

    /// How many are waiting now.
    pub fn n_waiting(&self) -> u32 {
        (self.obj.get().state.load(Ordering::Relaxed) & COUNT_MASK) as u32
    }

    /// Blocks until `parties` waiters have arrived.
    pub fn wait(&self) -> BarrierWaitResult {
        self.wait_inner(None).expect("no deadline, no timeout")
    }

    /// As [`wait`](Self::wait), giving up after `timeout`.
    ///
    /// # Errors
    /// [`BarrierTimeout`] if the others did not arrive in time.
    pub fn wait_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<BarrierWaitResult, BarrierTimeout> {
        self.wait_inner(wait::deadline_after(timeout))
    }

    fn wait_inner(
        &self,
        deadline: Option<std::time::Instant>,
    ) -> std::result::Result<BarrierWaitResult, BarrierTimeout> {
        let b = self.obj.get();
        let parties = b.parties.max(1) as u64;
        let mut s = b.state.load(Ordering::Acquire);
        let generation = loop {
            let (g, n) = (s >> 32, s & COUNT_MASK);
            if n + 1 >= parties {
                // Last to arrive: open the next generation.
                let next = ((g + 1) & COUNT_MASK) << 32;
                // SYNC(barrier): AcqRel: sees every arrival's writes, and
                // publishes them to the waiters that observe the new generation.
                match b
                    .state
                    .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        b.generation.store((g + 1) as u32, Ordering::SeqCst);
                        wait::wake(&b.generation, &b.waiters, u32::MAX);
                        return Ok(BarrierWaitResult { leader: true });
                    }
                    Err(now) => s = now,
                }
            } else {
                match b
                    .state
                    .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => break g as u32,
                    Err(now) => s = now,
                }
            }
        };
        let released = block_on(&b.generation, &b.waiters, deadline, || {
            // SYNC(barrier): pairs with the leader's SeqCst store.
            if b.generation.load(Ordering::Acquire) != generation {
                Attempt::Done
            } else {
                Attempt::WaitWhile(generation)
            }
        });
        if released {
            return Ok(BarrierWaitResult { leader: false });
        }
        // Timed out: withdraw our arrival, unless the generation turned meanwhile.
        let mut s = b.state.load(Ordering::Acquire);
        loop {
            if (s >> 32) as u32 != generation || s & COUNT_MASK == 0 {
                return Ok(BarrierWaitResult { leader: false });
            }
            match b
                .state
                .compare_exchange_weak(s, s - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Err(BarrierTimeout),
                Err(now) => s = now,
            }
        }
    }

    /// The segment behind the barrier.
    pub fn segment(&self) -> &Segment {
        self.obj.segment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(std::mem::size_of::<RawBarrier>(), 24);
        assert_eq!(std::mem::offset_of!(RawBarrier, generation), 8);
        assert_eq!(std::mem::offset_of!(RawBarrier, parties), 16);
    }

    #[test]
    fn threads_meet_repeatedly_with_one_leader_each_round() {
        let b = Barrier::new(3).unwrap();
        let leaders = std::sync::Arc::new(AtomicU32::new(0));
        let ts: Vec<_> = (0..3)
            .map(|_| {
                let (b, l) = (b.clone(), leaders.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        if b.wait().is_leader() {
                            l.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(leaders.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn timeout_withdraws_the_arrival() {
        let b = Barrier::new(2).unwrap();
        assert_eq!(
            b.wait_timeout(Duration::from_millis(10)),
            Err(BarrierTimeout)
        );
        assert_eq!(b.n_waiting(), 0);
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.wait());
        b.wait();
        t.join().unwrap();
    }
}

//! [`Barrier`]: `parties` processes wait until all have arrived (Python's
//! `multiprocessing.Barrier`).
//!
//! The state is a [`RobustState`]: its cells hold the generation, the
//! arrivals in it and the party count; its holders are the threads that
//! arrived in the current generation (an entry tagged with an older
//! generation is free). A waiter that times out withdraws its arrival; a
//! party that dies after arriving is withdrawn by the waiters after a slice
//! (10 ms) without news, and the last arrival checks that every recorded
//! arrival is alive before it opens the gate, so no survivor passes one
//! party short: they wait for a live party to take its place. Arrivals
//! past the 64 records (more than 64 parties waiting at once) are only
//! counted (`UNRECORDED`): one of them that dies is not withdrawn.

use crate::error::Result;
use crate::region::{Kind, Segment};
use crate::sync::identity;
use crate::sync::object::Object;
use crate::sync::robust_state::{RobustState, SLOTS, Tx};
use crate::sync::wait;
use std::time::{Duration, Instant};

/// The barrier's shared state.
#[repr(C)]
#[derive(Debug)]
pub struct RawBarrier {
    state: RobustState,
}

const GENERATION: usize = 0;
const ARRIVED: usize = 1;
const PARTIES: usize = 2;
/// Arrivals in the current generation that found no free slot (more than
/// 64 at once), counted so that the count repair keeps them.
const UNRECORDED: usize = 3;

/// An arrival tagged `tag` is current in generation `g` when `tag == g + 1`.
fn current(tx: &Tx<'_>, tag: u64) -> bool {
    tag == tx.get(GENERATION).wrapping_add(1)
}

/// Withdraws the arrivals of dead parties in the current generation.
fn reap(tx: &mut Tx<'_>) {
    tx.reap_dead(|tx, _, tag| {
        if current(tx, tag) {
            tx.set(ARRIVED, tx.get(ARRIVED).saturating_sub(1));
        }
    });
    // Every arrival is recorded, or counted as unrecorded when the table was
    // full: the count is their sum (a count a peer scribbled on is
    // repaired; an unrecorded count beyond the parties is clamped).
    let recorded = (0..SLOTS)
        .filter(|&slot| {
            let (who, tag) = tx.holder(slot);
            who != 0 && current(tx, tag)
        })
        .count() as u64;
    let unrecorded = tx.get(UNRECORDED).min(tx.get(PARTIES));
    if tx.get(ARRIVED) != recorded + unrecorded {
        tx.set(ARRIVED, recorded + unrecorded);
        tx.commit();
    }
}

/// Arrives as `me`: `None` if this arrival opens the gate (the leader), else
/// the generation it waits in and the slot that records it.
fn arrive(tx: &mut Tx<'_>, me: u64) -> Option<(u64, Option<usize>)> {
    let g = tx.get(GENERATION);
    let parties = tx.get(PARTIES).max(1);
    let mut arrived = tx.get(ARRIVED);
    if arrived.saturating_add(1) >= parties {
        // About to open the gate: not on the arrival of a party that has
        // died since (one /proc read per recorded arrival).
        reap(tx);
        arrived = tx.get(ARRIVED);
    }
    if arrived.saturating_add(1) >= parties {
        tx.set(GENERATION, g.wrapping_add(1));
        tx.set(ARRIVED, 0);
        tx.set(UNRECORDED, 0);
        return None;
    }
    tx.set(ARRIVED, arrived + 1);
    // A free slot, never one already naming `me`: a thread has no other
    // arrival pending, but the tasks of one process (feature `async`) and
    // its main thread all arrive as the process's word, one slot each.
    let slot = (0..SLOTS).find(|&slot| {
        let (who, tag) = tx.holder(slot);
        who == 0 || !current(tx, tag)
    });
    match slot {
        Some(slot) => tx.set_holder(slot, me, g.wrapping_add(1)),
        // With 64 arrivals recorded already, this one is counted as
        // unrecorded (not withdrawn if it dies).
        None => tx.set(UNRECORDED, tx.get(UNRECORDED).saturating_add(1)),
    }
    Some((g, slot))
}

/// Withdraws an arrival in generation `g` (a timeout, a dropped future):
/// `false` if the generation turned first (the wait succeeded).
fn withdraw(tx: &mut Tx<'_>, g: u64, slot: Option<usize>, me: u64) -> bool {
    if tx.get(GENERATION) != g {
        return false;
    }
    match slot {
        Some(slot) if tx.holder(slot) == (me, g.wrapping_add(1)) => tx.set_holder(slot, 0, 0),
        // Our record is gone (a peer's scribble, repaired since): the count
        // was repaired with it.
        Some(_) => return true,
        None => tx.set(UNRECORDED, tx.get(UNRECORDED).saturating_sub(1)),
    }
    tx.set(ARRIVED, tx.get(ARRIVED).saturating_sub(1));
    true
}

/// Returned by [`Barrier::wait`]: exactly one waiter per generation is the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierWaitResult {
    leader: bool,
}

impl BarrierWaitResult {
    /// Whether this waiter was the last to arrive (std's `is_leader`; Python
    /// returns index 0 to one waiter for the same purpose).
    #[must_use]
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
    /// # Errors
    /// As for any region: [`RegionError::AlreadyExists`](crate::error::RegionError::AlreadyExists) if the name is
    /// taken, [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name,
    /// [`RegionError::NoSpace`](crate::error::RegionError::NoSpace) if /dev/shm (or the file's filesystem) is too
    /// small, [`RegionError::PermissionDenied`](crate::error::RegionError::PermissionDenied) or
    /// [`Error::Io`](crate::Error::Io) if the OS refuses.
    ///
    /// # Panics
    /// If `parties` is 0.
    pub fn create(self, parties: u32) -> Result<Barrier> {
        assert!(parties > 0, "a barrier needs at least one party");
        let obj = Object::create(&self.opts, Kind::Barrier, |p: *mut RawBarrier| {
            // SAFETY: `p` is the unpublished, suitably sized control block;
            // a RawBarrier is one RobustState.
            unsafe { RobustState::init(p.cast(), &[(PARTIES, u64::from(parties))]) };
            Ok(())
        })?;
        Ok(Barrier { obj })
    }

    /// Opens an existing named barrier.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name or none (open needs a name
    /// or a path); [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a barrier; and
    /// the other open errors of any region
    /// ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(self) -> Result<Barrier> {
        Ok(Barrier {
            obj: Object::open(&self.opts, Kind::Barrier)?,
        })
    }

    /// Opens a barrier from a descriptor inherited across `exec`: what a child
    /// started with [`spawn`](crate::process::spawn) does with an anonymous
    /// one passed as an argument (see [`Segment::inheritable_fd`](crate::region::Segment::inheritable_fd)).
    ///
    /// # Errors
    /// The checks of an open: [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a barrier;
    /// [`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized) if it was never published;
    /// [`Error::Io`](crate::Error::Io) if `fstat` or `mmap` fails.
    pub fn from_fd(self, fd: std::os::fd::OwnedFd) -> Result<Barrier> {
        Ok(Barrier {
            obj: Object::from_fd(fd, &self.opts, Kind::Barrier)?,
        })
    }
}

/// A reusable barrier shared between processes.
#[derive(Debug, Clone)]
pub struct Barrier {
    obj: Object<RawBarrier>,
}

impl Barrier {
    /// A new anonymous barrier for `parties` waiters.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the OS refuses the memory (`memfd_create`, `ftruncate`,
    /// `mmap`).
    pub fn new(parties: u32) -> Result<Self> {
        Self::builder().create(parties)
    }

    /// A builder for named or otherwise configured barriers.
    #[must_use]
    pub fn builder() -> BarrierBuilder {
        BarrierBuilder::default()
    }

    /// Opens the named barrier `name`.
    ///
    /// # Errors
    /// [`RegionError::NotFound`](crate::error::RegionError::NotFound) if no segment has the name;
    /// [`RegionError::InvalidName`](crate::error::RegionError::InvalidName) for a bad name;
    /// [`RegionError::KindMismatch`](crate::error::RegionError::KindMismatch) if it is not a barrier; and the other
    /// open errors of any region ([`RegionError::NotInitialized`](crate::error::RegionError::NotInitialized),
    /// [`RegionError::ForeignOwner`](crate::error::RegionError::ForeignOwner),
    /// [`RegionError::Truncated`](crate::error::RegionError::Truncated), ...).
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().name(name).open()
    }

    fn state(&self) -> &RobustState {
        &self.obj.get().state
    }

    /// How many must arrive.
    #[must_use]
    pub fn parties(&self) -> u32 {
        self.state().peek(PARTIES).clamp(1, u64::from(u32::MAX)) as u32
    }

    /// How many are waiting now.
    #[must_use]
    pub fn n_waiting(&self) -> u32 {
        self.state().peek(ARRIVED).min(u64::from(u32::MAX)) as u32
    }

    /// Blocks until `parties` waiters have arrived. A party that dies after
    /// arriving is withdrawn (the others keep waiting for a live one).
    #[allow(clippy::must_use_candidate)] // as std's: the leader flag is optional
    pub fn wait(&self) -> BarrierWaitResult {
        self.wait_inner(None).expect("no deadline, no timeout")
    }

    /// As [`wait`](Self::wait), giving up after `timeout` (the arrival is
    /// withdrawn).
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
        deadline: Option<Instant>,
    ) -> std::result::Result<BarrierWaitResult, BarrierTimeout> {
        let me = identity::me();
        let st = self.state();
        // Arrive: the last one opens the next generation; the others record
        // their arrival (tagged with the generation) and wait for it to turn.
        let arrival = st.transact(|tx| arrive(tx, me));
        let Some((g, slot)) = arrival else {
            return Ok(BarrierWaitResult { leader: true });
        };
        let turned = |tx: &mut Tx<'_>| (tx.get(GENERATION) != g).then_some(());
        if st.wait_for(deadline, turned, reap).is_some() {
            return Ok(BarrierWaitResult { leader: false });
        }
        // Timed out: withdraw our arrival, unless the generation turned.
        if st.transact(|tx| withdraw(tx, g, slot, me)) {
            Err(BarrierTimeout)
        } else {
            Ok(BarrierWaitResult { leader: false })
        }
    }

    /// The segment behind the barrier.
    #[must_use]
    pub fn segment(&self) -> &Segment {
        self.obj.segment()
    }
}

/// The future (feature `async`).
#[cfg(feature = "async")]
impl Barrier {
    /// [`wait`](Self::wait) as a future: it waits without a thread of its
    /// own (the process's waiter threads sleep on the barrier's word). The
    /// arrival is made at the first poll and recorded for the **process**
    /// (a task moves between threads), one slot per arrival: it is
    /// withdrawn if the process dies, and if the future is dropped before
    /// the gate opens (as a timeout withdraws it), so a cancelled task
    /// never lets the others pass one party short.
    ///
    /// ```
    /// # fn main() -> Result<(), shmkit::Error> {
    /// let b = shmkit::sync::Barrier::new(2)?;
    /// let b2 = b.clone();
    /// let t = std::thread::spawn(move || b2.wait());
    /// let leaders = [futures::executor::block_on(b.wait_async()), t.join().unwrap()];
    /// assert_eq!(leaders.iter().filter(|r| r.is_leader()).count(), 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// If the process cannot start the waiter thread that serves every
    /// pending shmkit future (the OS refused a thread).
    pub fn wait_async(&self) -> impl std::future::Future<Output = BarrierWaitResult> + Send + '_ {
        /// Withdraws the arrival unless disarmed (the gate opened).
        struct Pending<'a> {
            st: &'a RobustState,
            g: u64,
            slot: Option<usize>,
            me: u64,
            pid: u32,
            armed: bool,
        }
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                // Not a forked child's copy: the arrival is the parent's.
                if self.armed && self.pid == crate::sys::proc::pid() {
                    let (g, slot, me) = (self.g, self.slot, self.me);
                    self.st.transact(|tx| withdraw(tx, g, slot, me));
                }
            }
        }
        async move {
            let me = identity::process();
            let st = self.state();
            let Some((g, slot)) = st.transact(|tx| arrive(tx, me)) else {
                return BarrierWaitResult { leader: true };
            };
            let mut pending = Pending {
                st,
                g,
                slot,
                me,
                pid: crate::sys::proc::pid(),
                armed: true,
            };
            let turned = move |tx: &mut Tx<'_>| (tx.get(GENERATION) != g).then_some(());
            st.until(self.obj.keep(), turned, reap, move || {
                st.peek(GENERATION) != g
            })
            .await;
            pending.armed = false;
            BarrierWaitResult { leader: false }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn layout() {
        assert_eq!(
            std::mem::size_of::<RawBarrier>(),
            std::mem::size_of::<RobustState>()
        );
        assert_eq!(std::mem::offset_of!(RawBarrier, state), 0);
    }

    #[test]
    fn a_party_that_dies_after_arriving_is_withdrawn() {
        let b = Barrier::new(2).unwrap();
        // An arrival recorded under an identity no live thread has (as a
        // killed party leaves it; tests/faults.rs kills real processes).
        b.state().transact(|tx| {
            tx.set(ARRIVED, 1);
            tx.set_holder(0, (u64::from(u32::MAX >> 1) << 32) | 6, 1);
        });
        assert_eq!(b.n_waiting(), 1);
        // The next party must not pass on the dead one's arrival.
        assert_eq!(
            b.wait_timeout(Duration::from_millis(50)),
            Err(BarrierTimeout)
        );
        assert_eq!(b.n_waiting(), 0);
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

impl crate::region::handle::Travels for Barrier {}

crate::region::handle::region_handle_archive!(Barrier, |h| {
    crate::region::handle::reopen_with!(h, Barrier::builder())
});

//! The pipe region: two directions of SPSC rings with their wait words,
//! the two ends' holders, and the waits that look for a dead peer.

use crate::error::{Error, RegionError, Result};
use crate::queue::Item;
use crate::queue::atomic::AtomicU64 as RingU64;
use crate::queue::blocking::sleep_until;
use crate::queue::control::Padded;
use crate::queue::looks::{Looks, NoSleep, Wait};
use crate::queue::ring::{Ring, SlotHeader};
use crate::region::{Kind, Segment, Spec, TypeInfo};
use crate::sys::proc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// One direction: cursors, wait words.
#[repr(C)]
#[derive(Debug)]
pub(super) struct Direction {
    pub(super) head: Padded<RingU64>,
    pub(super) tail: Padded<RingU64>,
    pub(super) waits: Padded<[AtomicU32; 4]>, // items, recv_waiters, space, send_waiters
}

/// One end: who holds it.
#[repr(C, align(64))]
#[derive(Debug)]
pub(super) struct End {
    pub(super) pid: AtomicU32,
    pub(super) closed: AtomicU32,
    pub(super) start: AtomicU64,
    /// Non-zero while the end travels to another process.
    pub(super) token: AtomicU64,
}

/// The control block: two directions (0: end 0 → end 1, 1: end 1 → end 0),
/// two ends, the geometry.
#[repr(C, align(128))]
#[derive(Debug)]
pub(super) struct PipeControl {
    pub(super) dirs: [Direction; 2],
    pub(super) ends: [End; 2],
    pub(super) capacity: u64,
    pub(super) stride: u64,
    pub(super) max_len: u64,
}

pub(super) const TAG: &str = "shmkit::pipe";

/// The pipe's spec; its type tag names the message kind, so that an end
/// opened as another message type is refused.
pub(super) fn spec<T: Item>() -> Spec {
    Spec {
        kind: Kind::Pipe,
        flags: 0,
        ty: TypeInfo::tagged::<u8>(&format!("{TAG}<{}>", T::tag())),
        control_size: size_of::<PipeControl>() as u64,
        control_align: align_of::<PipeControl>() as u64,
        data_align: crate::region::MIN_ALIGN,
    }
}

/// Why a wait of a pipe end ended without news.
pub(super) enum Waited {
    WouldBlock,
    Timeout,
    Corrupted(Error),
}

#[derive(Debug)]
pub(crate) struct RawPipe {
    pub(super) seg: Segment,
    /// (capacity, stride, max_len) as validated at open; the shared copy is
    /// never read again (a peer may rewrite it).
    pub(super) geometry: (u64, u64, u64),
    /// When this process last looked whether the peer is alive (private:
    /// see `queue::looks`).
    pub(super) looks: Looks,
}

impl RawPipe {
    pub(super) fn control(&self) -> &PipeControl {
        // SAFETY: the header check guarantees a published PipeControl of this
        // size and alignment; its fields are atomics and integers only read.
        unsafe { &*self.seg.control_ptr().cast::<PipeControl>() }
    }

    pub(super) fn ring(&self, dir: usize) -> Ring<'_> {
        let d = &self.control().dirs[dir];
        let (capacity, stride, _) = self.geometry;
        // SAFETY: `check` verified 2 * capacity * stride == the data area, the
        // capacity a power of two >= 2, the stride a multiple of 64 covering
        // a SlotHeader and max_len (our private copies); direction `dir` owns
        // the `dir`th half.
        unsafe {
            Ring::new(
                &d.head.0,
                &d.tail.0,
                self.seg.data_ptr().add(dir * (capacity * stride) as usize),
                capacity,
                stride as usize,
                true,
                true,
            )
        }
    }

    pub(super) fn check(seg: Segment) -> Result<Arc<RawPipe>> {
        let mut p = RawPipe {
            seg,
            geometry: (0, 0, 0),
            looks: Looks::new(),
        };
        let c = p.control();
        // SAFETY: plain u64 fields of the published control block, copied
        // once with volatile reads (a peer may write them concurrently).
        let (cap, stride, len) = unsafe {
            (
                std::ptr::read_volatile(&c.capacity),
                std::ptr::read_volatile(&c.stride),
                std::ptr::read_volatile(&c.max_len),
            )
        };
        if !cap.is_power_of_two()
            || cap < 2
            || stride % 64 != 0
            || stride < size_of::<SlotHeader>() as u64 + len
            || cap.checked_mul(stride).and_then(|b| b.checked_mul(2)) != Some(p.seg.element_count())
        {
            return Err(Error::Region(RegionError::Corrupted {
                name: p.seg.id(),
                what: format!(
                    "pipe geometry (capacity {cap}, stride {stride}, max message {len}) does \
                     not match its slot area"
                ),
            }));
        }
        p.geometry = (cap, stride, len);
        Ok(Arc::new(p))
    }

    /// Impossible states of either direction as seen from `end` (which
    /// sends on `end` and receives on `1 - end`), repaired where the right
    /// stamp is certain, otherwise described, for `Corrupted`. Run at look
    /// time (every `LOOK_EVERY` of waiting), so a garbage stamp never wedges
    /// a pipe silently.
    ///
    /// Each direction has one sender and one receiver, each one thread at a
    /// time, which claim and finish one position at a time: every position
    /// before `head - 1` is committed, and every position before `tail - 1`
    /// is released. So the stamp of the receiver's next position `tail` must
    /// be `tail` (not written yet) or `tail + 1` (committed) and is certain
    /// unless `tail == head - 1` (the sender may be writing it); the stamp of
    /// the sender's next position `head` must be `head` (released) or
    /// `head - cap + 1` (the last lap's message, not released yet) and is
    /// certain unless `tail == head - cap + 1` (the receiver may be reading
    /// that message).
    pub(super) fn impossible(&self, end: usize) -> Option<String> {
        let cap = self.geometry.0;
        for dir in [end, 1 - end] {
            let ring = self.ring(dir);
            let (head, tail) = ring.cursors();
            let used = head.wrapping_sub(tail);
            if used > cap {
                return Some(format!(
                    "pipe direction {dir}: {used} messages between its cursors (head {head}, \
                     tail {tail}), more than its {cap} slots"
                ));
            }
            // Checked from both ends: each end repairs what it can see.
            let checks = [
                // The receiver's next position.
                (
                    tail,
                    [tail, tail.wrapping_add(1)],
                    match used {
                        0 => Some(tail),
                        1 => None,
                        _ => Some(tail.wrapping_add(1)),
                    },
                ),
                // The sender's next position.
                (
                    head,
                    [head, head.wrapping_sub(cap).wrapping_add(1)],
                    match cap - used {
                        0 => Some(head.wrapping_sub(cap).wrapping_add(1)),
                        1 => None,
                        _ => Some(head),
                    },
                ),
            ];
            for (pos, valid, certain) in checks {
                let seq = &ring.slot(pos).seq;
                let now = seq.load(Ordering::Acquire);
                if valid.contains(&now) {
                    continue;
                }
                match certain {
                    Some(right) => {
                        let _ =
                            seq.compare_exchange(now, right, Ordering::AcqRel, Ordering::Relaxed);
                    }
                    None => {
                        return Some(format!(
                            "pipe direction {dir}: the slot of position {pos} has the impossible \
                             stamp {now}; the message there may be lost"
                        ));
                    }
                }
            }
        }
        None
    }

    pub(super) fn peer_gone(&self, end: usize) -> bool {
        let e = &self.control().ends[1 - end];
        e.closed.load(Ordering::SeqCst) != 0
    }

    /// Marks the peer closed if its process died; whether this call did.
    /// An end in transit or being taken over (token set) is not judged.
    pub(super) fn check_peer(&self, end: usize) -> bool {
        let e = &self.control().ends[1 - end];
        if e.token.load(Ordering::SeqCst) != 0 || e.closed.load(Ordering::SeqCst) != 0 {
            return false;
        }
        let (pid, start) = (e.pid.load(Ordering::SeqCst), e.start.load(Ordering::SeqCst));
        if pid == 0 || proc::is_alive(pid, start) {
            return false;
        }
        // A take-over sets the token before it changes pid and start: judge
        // only an end that stayed the same while /proc was read.
        if e.token.load(Ordering::SeqCst) != 0
            || e.pid.load(Ordering::SeqCst) != pid
            || e.start.load(Ordering::SeqCst) != start
        {
            return false;
        }
        e.closed.store(1, Ordering::SeqCst);
        self.wake_all();
        true
    }

    /// The failure path of every wait (the only place that reads the
    /// clock): looks whether the peer died if the last look is
    /// `LOOK_EVERY` old (then returns at once, for the caller to try
    /// again; a look also repairs or reports impossible ring states), else
    /// fails as `wait` says (would block, timed out) or sleeps on `word`
    /// until woken, `ready()`, the deadline or the next look's time.
    pub(super) fn wait_or_look(
        &self,
        end: usize,
        word: &AtomicU32,
        waiters: &AtomicU32,
        seen: u32,
        wait: Wait,
        ready: impl Fn() -> bool,
    ) -> std::result::Result<(), Waited> {
        let (due, now) = self.looks.take_due_for(wait);
        if due {
            self.check_peer(end);
            if let Some(what) = self.impossible(end) {
                return Err(Waited::Corrupted(Error::Region(RegionError::Corrupted {
                    name: self.seg.id(),
                    what,
                })));
            }
            return Ok(());
        }
        let until = self.looks.wait_end(wait, now).map_err(|no| match no {
            NoSleep::Timeout => Waited::Timeout,
            NoSleep::WouldBlock => Waited::WouldBlock,
        })?;
        sleep_until(word, waiters, seen, until, ready);
        Ok(())
    }

    // ---- select (src/select.rs) ----

    /// The word a receiver at `end` sleeps on and its sleeper count.
    pub(crate) fn recv_words(&self, end: usize) -> (&AtomicU32, &AtomicU32) {
        let w = &self.control().dirs[1 - end].waits.0;
        (&w[0], &w[1])
    }

    /// The word a sender at `end` sleeps on (room) and its sleeper count.
    #[cfg(feature = "async")]
    pub(crate) fn send_words(&self, end: usize) -> (&AtomicU32, &AtomicU32) {
        let w = &self.control().dirs[end].waits.0;
        (&w[2], &w[3])
    }

    /// Whether a send at `end` would not wait.
    #[cfg(feature = "async")]
    pub(crate) fn send_ready(&self, end: usize) -> bool {
        self.seg.check().is_err() || self.ring(end).can_send() || self.peer_gone(end)
    }

    /// Whether a receive at `end` would not wait (what `poll` reports).
    pub(crate) fn recv_ready(&self, end: usize) -> bool {
        self.seg.check().is_err() || self.ring(1 - end).can_recv() || self.peer_gone(end)
    }

    /// Looks whether the peer died if a look is due (as every failing wait
    /// does); whether the state is impossible (then `recv` reports it, so
    /// the end counts as ready); when the next look is due.
    pub(crate) fn look_if_due(&self, end: usize, now: Instant) -> (bool, Instant) {
        let mut impossible = false;
        if self.looks.take_due(now) {
            self.check_peer(end);
            impossible = self.impossible(end).is_some();
        }
        (impossible, self.looks.next_due())
    }

    pub(super) fn wake_all(&self) {
        for d in &self.control().dirs {
            for w in [&d.waits.0[0], &d.waits.0[2]] {
                w.fetch_add(1, Ordering::SeqCst);
                crate::sys::futex::wake(w, i32::MAX as u32);
            }
        }
    }

    pub(super) fn close(&self, end: usize) {
        self.control().ends[end].closed.store(1, Ordering::SeqCst);
        self.wake_all();
    }
}

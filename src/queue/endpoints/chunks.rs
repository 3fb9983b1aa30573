//! Blocking claims cut into chunks, so that a peer's truncation of the
//! segment is noticed by a blocked endpoint.

use crate::queue::looks::Wait;
use crate::queue::raw::Stop;
use std::time::{Duration, Instant};

/// Why a claim ended without a slot: the ring's reason, or the segment was
/// found truncated.
pub(in crate::queue) enum Halt {
    Ring(Stop),
    Truncated,
}

/// A blocking claim waits in chunks of this long at first, doubling up to
/// [`MAX_CHUNK`], and checks for truncation between chunks. The ring's wait
/// loop does not know about truncation: once a peer has cut the segment,
/// this process's view of the control block is private zero pages that no
/// peer writes, so without the chunks a blocked `recv`/`send` would wait
/// forever. A blocked endpoint therefore reports `Truncated` at most one
/// chunk plus one sleep slice after the cut (the slice's end is the first
/// touch that finds it).
const CHUNK: Duration = Duration::from_secs(1);
const MAX_CHUNK: Duration = Duration::from_secs(8);

/// Runs `claim` with deadlines no further than the current chunk, checking
/// the segment before and after each: `Halt::Truncated` once it is found cut
/// (the claim may have run on zero pages).
pub(super) fn chunked<R>(
    seg: &crate::region::Segment,
    wait: Wait,
    mut claim: impl FnMut(Wait) -> std::result::Result<R, Stop>,
) -> std::result::Result<R, Halt> {
    // First one try without waiting, which reads no clock (the common case
    // of a queue that is neither full nor empty); checked after the claim:
    // a cut found then is reported, the claim undone by the caller.
    let first = claim(Wait::No);
    if seg.check().is_err() {
        return Err(Halt::Truncated);
    }
    let deadline = match (first, wait) {
        (Err(Stop::WouldBlock), Wait::Until(d)) => Some(d),
        (Err(Stop::WouldBlock), Wait::Forever) => None,
        (r, _) => return r.map_err(Halt::Ring),
    };
    let mut chunk = CHUNK;
    loop {
        if seg.check().is_err() {
            return Err(Halt::Truncated);
        }
        let end = Instant::now() + chunk;
        let (until, last) = match deadline {
            Some(d) if d <= end => (d, true),
            _ => (end, false),
        };
        let r = claim(Wait::Until(until));
        if seg.check().is_err() {
            return Err(Halt::Truncated);
        }
        match r {
            Err(Stop::Timeout | Stop::WouldBlock) if !last => chunk = (chunk * 2).min(MAX_CHUNK),
            r => return r.map_err(Halt::Ring),
        }
    }
}

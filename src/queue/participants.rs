//! The participant table: every sender and receiver handle is one entry
//! (pid, start time, role, intent, transit token), registered, retired, and
//! moved to another process with the handle.

use super::atomic::AtomicU64 as RingU64;
use super::control::{MAX_PARTICIPANTS, Participant, ROLE_SENDER};
use super::raw::RawQueue;
use crate::error::{Error, RegionError, Result};
use crate::sys::proc;
use std::sync::atomic::{AtomicU32, Ordering};

impl RawQueue {
    /// Registers a sender or receiver of this process; its entry index.
    pub(crate) fn register(&self, role: u32) -> Result<usize> {
        let me = proc::pid();
        let start = proc::own_start_time();
        for attempt in 0..2 {
            for (i, p) in self.control().participants.iter().enumerate() {
                if p.pid
                    .compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    p.start.store(start, Ordering::SeqCst);
                    p.intent.store(0, Ordering::SeqCst);
                    p.run_end.store(0, Ordering::SeqCst);
                    p.token.store(0, Ordering::SeqCst);
                    // Counted before the role is visible: a recoverer only
                    // uncounts entries with a role (a death between the two
                    // stores leaves one count too many; two instructions).
                    self.count(role).fetch_add(1, Ordering::SeqCst);
                    self.control()
                        .state
                        .0
                        .ever
                        .fetch_or(1 << role, Ordering::SeqCst);
                    p.role.store(role, Ordering::SeqCst);
                    return Ok(i);
                }
            }
            if attempt == 0 {
                self.recover();
            }
        }
        Err(Error::Region(RegionError::TooManyHandles {
            name: self.seg.id(),
            max: MAX_PARTICIPANTS,
        }))
    }

    pub(super) fn count(&self, role: u32) -> &AtomicU32 {
        let st = &self.control().state.0;
        if role == ROLE_SENDER {
            &st.senders
        } else {
            &st.receivers
        }
    }

    pub(crate) fn unregister(&self, entry: usize) {
        let p = &self.control().participants[entry];
        let role = p.role.load(Ordering::SeqCst);
        // Uncount first, while the entry still shows its role: a recount
        // that runs in between counts the entry and never goes below us.
        if role != 0 {
            self.count(role).fetch_sub(1, Ordering::SeqCst);
        }
        p.role.store(0, Ordering::SeqCst);
        p.intent.store(0, Ordering::SeqCst);
        p.token.store(0, Ordering::SeqCst);
        p.pid.store(0, Ordering::SeqCst);
        self.wake_all();
    }

    /// Marks the entry as travelling to another process; the token that
    /// process presents to [`adopt`](Self::adopt) it.
    pub(crate) fn begin_transit(&self, entry: usize) -> u64 {
        let token = crate::region::handle::transit_token();
        self.control().participants[entry]
            .token
            .store(token, Ordering::SeqCst);
        token
    }

    /// Takes over a registration that travelled here: registers a new
    /// entry for this process first, then retires the travelling one, so
    /// the count of senders (receivers) never drops to zero in between.
    /// The retiring entry is marked with our pid, so that if we die midway
    /// a recoverer finishes the job.
    pub(crate) fn adopt(&self, entry: u32, token: u64, role: u32) -> Result<usize> {
        let mine = self.register(role)?;
        if let Some(p) = self.control().participants.get(entry as usize)
            && token != 0
            && token & RELEASING == 0
            && p.role.load(Ordering::SeqCst) == role
            && p.token
                .compare_exchange(
                    token,
                    RELEASING | proc::pid() as u64,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
        {
            self.unregister(entry as usize);
        }
        Ok(mine)
    }

    /// Frees an entry whose journey ended without adoption (the receiving
    /// process died first).
    pub(crate) fn abandon(&self, entry: usize, token: u64) {
        let p = &self.control().participants[entry];
        if token != 0
            && p.token
                .compare_exchange(token, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.unregister(entry);
        }
    }

    pub(crate) fn intent(&self, entry: usize) -> &RingU64 {
        &self.control().participants[entry].intent
    }

    /// The end of the entry's claimed run (see `ring::covers`).
    pub(crate) fn run_end(&self, entry: usize) -> &RingU64 {
        &self.control().participants[entry].run_end
    }

    pub(crate) fn senders(&self) -> u32 {
        self.control().state.0.senders.load(Ordering::SeqCst)
    }

    pub(crate) fn receivers(&self) -> u32 {
        self.control().state.0.receivers.load(Ordering::SeqCst)
    }

    pub(crate) fn participants(&self) -> Vec<super::ParticipantInfo> {
        self.control()
            .participants
            .iter()
            .filter(|p| p.pid.load(Ordering::SeqCst) != 0)
            .map(|p| super::ParticipantInfo {
                pid: p.pid.load(Ordering::SeqCst),
                sender: p.role.load(Ordering::SeqCst) == ROLE_SENDER,
                in_transit: p.token.load(Ordering::SeqCst) != 0,
                alive: !is_dead(p),
            })
            .collect()
    }
}

/// Marks a token as "being retired by the adopter whose pid is in the low
/// 32 bits" (transit tokens never have this bit).
const RELEASING: u64 = 1 << 63;

fn pid_gone(pid: u32) -> bool {
    matches!(proc::kill(pid, 0), Err(e) if e.raw_os_error() == Some(libc::ESRCH))
}

/// Whether the participant's process is gone (or, for an entry being
/// retired by an adopter, whether that adopter is gone). An entry still being
/// registered (role not yet stored) has no start time yet: only a pid that
/// no longer exists counts as dead then.
pub(super) fn is_dead(p: &Participant) -> bool {
    let pid = p.pid.load(Ordering::SeqCst);
    if pid == 0 {
        return false;
    }
    let token = p.token.load(Ordering::SeqCst);
    if token & RELEASING != 0 {
        // Being retired by its adopter: only the adopter's death matters
        // (the adopter finishes the retirement itself otherwise).
        return pid_gone(token as u32);
    }
    if p.role.load(Ordering::SeqCst) == 0 {
        return pid_gone(pid);
    }
    !proc::is_alive(pid, p.start.load(Ordering::SeqCst))
}

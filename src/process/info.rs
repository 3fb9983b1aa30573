//! [`ProcessInfo`], in a module of its own so that the resolver rkyv
//! generates beside it stays out of the public API (the module is private;
//! only the type is re-exported).

use crate::sys::proc;

/// Who a process is: pid, name and (to tell a reused pid apart) start time.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(attr(doc(hidden)))]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: u32,
    /// `MainProcess` for a program started otherwise, `Process-N` (or
    /// `Parent:N` in a child's children) or the builder's name for ours.
    pub name: String,
    /// Start time in clock ticks since boot.
    pub(super) start_time: u64,
}

impl ProcessInfo {
    /// Whether that process still runs (a reused pid does not count).
    #[must_use]
    pub fn is_alive(&self) -> bool {
        proc::is_alive(self.pid, self.start_time)
    }
}

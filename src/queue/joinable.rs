//! A joinable queue's count of unfinished messages (Python's
//! `JoinableQueue`): `task_done` and `join`.

use super::looks::Wait;
use super::raw::RawQueue;
use crate::error::{Error, Result};
use crate::sys::futex;
use std::sync::atomic::Ordering;

impl RawQueue {
    pub(crate) fn task_done(&self) -> Result<()> {
        let st = &self.control().state.0;
        let prev = st
            .unfinished
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match prev {
            Ok(1) => {
                let w = &self.control().waits.0;
                w.done.fetch_add(1, Ordering::SeqCst);
                futex::wake(&w.done, i32::MAX as u32);
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(_) => Err(Error::InvalidArgument {
                argument: "task_done",
                message: format!(
                    "called more times than messages were sent on queue {}: call it once per \
                     received message",
                    self.seg.id()
                ),
            }),
        }
    }

    pub(crate) fn join(&self, wait: Wait) -> bool {
        let st = &self.control().state.0;
        let w = &self.control().waits.0;
        loop {
            let seen = w.done.load(Ordering::SeqCst);
            if st.unfinished.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if self
                .wait_or_look(&w.done, &w.join_waiters, seen, wait, None, || {
                    st.unfinished.load(Ordering::SeqCst) == 0
                })
                .is_err()
            {
                return false;
            }
        }
    }
}

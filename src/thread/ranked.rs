//! Priorities on the thread pool's queue, FIFO within a level.
//!
//! The common case (every call at priority 0) keeps the lock-free channel:
//! a level-0 call travels in it as [`Queued::Now`]. A call at another level,
//! and any call submitted while such calls wait, goes into the ranked map
//! (highest level first, then submission order) and sends a [`Queued::Ranked`]
//! token instead. Each message stands for one waiting call, so a worker that
//! receives one runs exactly one call: the best of the message's own call
//! and the map's first entry (the other goes into the map). Level-0 calls
//! in the channel behind the message were submitted after it, so nothing
//! better can hide there.

use super::Job;
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A message on the pool's channel.
pub(super) enum Queued {
    /// A level-0 call, with its submission number.
    Now(u64, Job),
    /// One call waits in the ranked map.
    Ranked,
}

type Key = (Reverse<i32>, u64);

#[derive(Default)]
pub(super) struct Ranked {
    map: Mutex<BTreeMap<Key, Job>>,
    /// Read by every worker for every call.
    len: AtomicUsize,
}

impl Ranked {
    /// What to send for a call at `priority`, the `seq`-th call queued
    /// (numbers increase in queue order): the call itself, or a token
    /// after it went into the map.
    #[inline]
    pub(super) fn queue(&self, priority: i32, job: Job, seq: u64) -> Queued {
        if priority == 0 && self.len.load(Ordering::Acquire) == 0 {
            return Queued::Now(seq, job);
        }
        self.queue_ranked(priority, job, seq)
    }

    /// [`Ranked::queue`] of a call that goes into the map: out of line, so
    /// the common case inlines into the push (`perf annotate` had put most
    /// of this function's samples on moving the job through its stack).
    /// Not `#[cold]`: for a pool that uses priorities it is the common path.
    #[inline(never)]
    fn queue_ranked(&self, priority: i32, job: Job, seq: u64) -> Queued {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert((Reverse(priority), seq), job);
        self.len.store(map.len(), Ordering::Release);
        Queued::Ranked
    }

    /// The call to run for one received message.
    pub(super) fn take(&self, message: Queued) -> Option<Job> {
        match message {
            Queued::Now(_, job) if self.len.load(Ordering::Acquire) == 0 => Some(job),
            Queued::Now(seq, job) => {
                let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
                let mine = (Reverse(0), seq);
                let better = map.first_key_value().is_some_and(|(k, _)| *k < mine);
                if !better {
                    return Some(job);
                }
                let best = map.pop_first().map(|(_, j)| j);
                map.insert(mine, job);
                best
            }
            Queued::Ranked => {
                let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
                let best = map.pop_first().map(|(_, j)| j);
                self.len.store(map.len(), Ordering::Release);
                best
            }
        }
    }
}

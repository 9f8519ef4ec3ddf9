//! Batching on a cluster worker: finishes sent together, and short tasks
//! claimed several at a time.
//!
//! Every script call costs Redis a fixed amount (setting up the call, its
//! keys and arguments) and every command inside it a bridge from Lua; on a
//! busy cluster Redis's CPU is what bounds throughput. So while tasks are
//! short, a worker claims (and starts) several queued entries in one call
//! and sends their finishes together with the next claim:
//!
//! * **How many.** [`Pace`] keeps an average of how long this worker's
//!   tasks run, and a claim asks for as many as fit in [`BATCH_BUDGET`] of
//!   running (at least 1, at most [`MAX_BATCH`]). A worker whose tasks take
//!   a millisecond or more claims one at a time, as before.
//! * **Started means started.** The jobs claimed ahead are started in Redis
//!   (their clients see them running, and `cancel` no longer stops them), as
//!   `concurrent.futures.ProcessPoolExecutor` marks the calls it queues to
//!   its workers running. They wait in the worker's `ahead` queue, which any
//!   of its slots runs first (a slot freed by a task waiting on a future
//!   runs them too), draining or not.
//! * **Results wait little.** A finished task's result waits in
//!   `unflushed` until the batch is done or [`FLUSH_AFTER`] has passed since
//!   it finished, or they add up to [`FLUSH_BYTES`], whichever is first;
//!   while a slot runs a long task, the heartbeat thread sends the finishes
//!   that have waited longer than [`FLUSH_LATE`], and a worker stopped for
//!   a task over its run-time limit sends them before it exits.
//! * **Leases.** Claimed jobs are held (the heartbeat keeps their leases)
//!   from the claim until their finish is sent. A worker that dies with jobs
//!   claimed ahead loses them as it loses a running one: when the lease
//!   lapses another worker takes them over, and the delivery counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a batch of claimed tasks should run, at most (by the average).
pub(super) const BATCH_BUDGET: Duration = Duration::from_millis(1);
/// The most entries one claim takes.
pub(super) const MAX_BATCH: usize = 16;
/// A slot sends waiting finishes before its next task once the oldest has
/// waited this long.
pub(super) const FLUSH_AFTER: Duration = Duration::from_micros(500);
/// A slot sends waiting finishes before its next task once their results
/// add up to this many bytes (one script call carries them all).
pub(super) const FLUSH_BYTES: usize = 1 << 20;
/// The heartbeat sends finishes that have waited this long (their slot is
/// running a long task).
pub(super) const FLUSH_LATE: Duration = Duration::from_millis(5);

/// A task run and not yet reported: the arguments of its `finish`.
pub(super) struct Finished {
    pub(super) stream: String,
    pub(super) entry: String,
    pub(super) task: String,
    pub(super) task_key: String,
    pub(super) result_key: String,
    pub(super) events: String,
    pub(super) finished: String,
    pub(super) envelope: Vec<u8>,
    pub(super) bit: i64,
    pub(super) lazy: bool,
    /// When it finished.
    pub(super) done: Instant,
    /// A quick task that ended before its mark was due (see `starter`):
    /// its record was never touched after `submit` wrote it.
    pub(super) unmarked: bool,
}

impl Finished {
    /// The finish of `task` (entry `entry` of `stream`; its client and
    /// sequence number parsed from its id) with its sealed `envelope`.
    pub(super) fn new(
        keys: &super::protocol::Keys,
        stream: &str,
        entry: &str,
        task: &str,
        (client, seq): (&str, u64),
        envelope: Vec<u8>,
        lazy: bool,
    ) -> Finished {
        Finished {
            stream: stream.to_string(),
            entry: entry.to_string(),
            task: task.to_string(),
            task_key: keys.task(task),
            result_key: keys.result(task),
            events: keys.events(client),
            finished: keys.finished(client),
            envelope,
            bit: super::protocol::bit_of(seq),
            lazy,
            done: Instant::now(),
            unmarked: false,
        }
    }

    /// The 8 arguments of `finish` (see `finish_fn.lua`).
    pub(super) fn args(&self, cmd: &mut redis::Cmd) {
        cmd.arg(&self.entry)
            .arg(super::protocol::GROUP)
            .arg(&self.envelope)
            .arg(super::protocol::RESULT_TTL.as_secs())
            .arg(&self.task)
            .arg(self.bit)
            .arg(self.envelope.len())
            .arg(if self.lazy { "1" } else { "0" });
    }
}

/// The average run time of a worker's tasks, in nanoseconds (0: none yet).
#[derive(Default)]
pub(super) struct Pace(AtomicU64);

impl Pace {
    /// Counts one task's run time (an exponential average, weight 1/8).
    pub(super) fn ran(&self, took: Duration) {
        let took = took.as_nanos().min(u128::from(u64::MAX / 2)) as u64;
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == 0 {
            took.max(1)
        } else {
            (old - old / 8 + took / 8).max(1)
        };
        self.0.store(new, Ordering::Relaxed);
    }

    /// True when tasks have been running shorter than `than` on average
    /// (false while nothing is measured).
    pub(super) fn short(&self, than: Duration) -> bool {
        let avg = self.0.load(Ordering::Relaxed);
        avg > 0 && u128::from(avg) < than.as_nanos()
    }

    /// How many entries the next claim should take.
    pub(super) fn want(&self) -> usize {
        want_for(self.0.load(Ordering::Relaxed))
    }
}

/// Entries per claim for an average run time of `avg_ns` (0: unknown).
fn want_for(avg_ns: u64) -> usize {
    if avg_ns == 0 {
        return 1;
    }
    let fit = BATCH_BUDGET.as_nanos() as u64 / avg_ns;
    (fit as usize).clamp(1, MAX_BATCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tasks_are_claimed_in_batches_and_long_ones_alone() {
        assert_eq!(want_for(0), 1, "nothing measured yet: one at a time");
        assert_eq!(want_for(2_000), MAX_BATCH);
        assert_eq!(want_for(250_000), 4);
        assert_eq!(want_for(1_000_000), 1);
        assert_eq!(want_for(60_000_000_000), 1);
        let pace = Pace::default();
        assert_eq!(pace.want(), 1);
        assert!(!pace.short(Duration::from_secs(1)), "nothing measured yet");
        pace.ran(Duration::from_micros(5));
        assert!(pace.short(Duration::from_micros(50)));
        assert!(!pace.short(Duration::from_micros(5)));
        assert_eq!(pace.want(), MAX_BATCH);
        // One long task pulls the average up at once.
        pace.ran(Duration::from_millis(20));
        assert_eq!(pace.want(), 1);
        for _ in 0..64 {
            pace.ran(Duration::from_micros(5));
        }
        assert_eq!(pace.want(), MAX_BATCH);
    }
}

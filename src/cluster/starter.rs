//! Late starts of quick tasks (see `lua/submit.lua`): a worker runs a
//! quick task from its entry at once, and marks it started in Redis (the
//! `mark` script: record running, "started" event to its client) only if
//! it is still running [`MARK_AFTER`] later. A short task's finish then
//! arrives without a start before it: one script call, one event and one
//! wake-up of its client fewer per task.
//!
//! Nothing depends on the mark for safety: `cancel` never cancels a quick
//! task once the group delivered it, whether or not it is marked; `finish`
//! takes a record still pending; a redelivery of a quick task still
//! pending counts the unmarked run as an attempt (`lua/start_fn.lua`). A
//! mark that arrives after its task's finish finds no record and does
//! nothing. What the delay does change is what a client sees: a task that
//! runs shorter than [`MARK_AFTER`] is never seen running, and one that
//! runs longer is seen running that much later.

use super::protocol::Conn;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a quick task runs before it is marked started.
pub(super) const MARK_AFTER: Duration = Duration::from_micros(200);

/// A quick task the `mark` script is for: its stream entry, task id and client.
pub(super) struct Quick {
    pub(super) entry: String,
    pub(super) task: String,
    pub(super) client: String,
}

/// One quick task not yet marked.
struct Due {
    at: Instant,
    task: Quick,
}

#[derive(Default)]
struct State {
    /// In the order of `at` (every task waits the same [`MARK_AFTER`]).
    due: VecDeque<Due>,
    stop: bool,
}

/// The marks waiting to be sent, and the thread that sends them.
#[derive(Default)]
pub(super) struct Starter {
    state: Mutex<State>,
    wake: Condvar,
}

impl Starter {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `task` started in [`MARK_AFTER`], unless [`Starter::finished`]
    /// says it ended before. Nothing is built for the mark until then.
    ///
    /// `expect_short`: the worker's tasks have been ending well within
    /// [`MARK_AFTER`], so the sending thread is not woken for this one (a
    /// wake-up per task, and another when its timer fires, is what a round
    /// trip on a 2-core machine feels); should it run long after all,
    /// [`Starter::kick`] from the heartbeat sends its mark, up to a beat late.
    pub(super) fn defer(&self, task: Quick, expect_short: bool) {
        let mut st = self.lock();
        let was_empty = st.due.is_empty();
        st.due.push_back(Due {
            at: Instant::now() + MARK_AFTER,
            task,
        });
        drop(st);
        // A thread waiting for an earlier mark wakes in time for this one.
        if was_empty && !expect_short {
            self.wake.notify_one();
        }
    }

    /// Wakes the sending thread if a mark is due (see [`Starter::defer`]).
    pub(super) fn kick(&self) {
        let due = self
            .lock()
            .due
            .front()
            .is_some_and(|d| d.at <= Instant::now());
        if due {
            self.wake.notify_one();
        }
    }

    /// The task of `entry` ran to its end: it needs no mark. True when its
    /// mark was still waiting (it was deferred, and never sent).
    pub(super) fn finished(&self, entry: &str) -> bool {
        let mut st = self.lock();
        match st.due.iter().position(|d| d.task.entry == entry) {
            Some(i) => st.due.remove(i).is_some(),
            None => false,
        }
    }

    /// Stops [`Starter::run`] (marks still due are dropped: their tasks
    /// have ended, since a worker stops only after its tasks).
    pub(super) fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }

    /// The sending thread's loop, until [`Starter::stop`]: the tasks due
    /// go in one script call, made by `mark`. A mark that fails is logged:
    /// its tasks run on, unmarked.
    pub(super) fn run(&self, mut conn: Conn, name: &str, mark: impl Fn(&[Quick]) -> redis::Cmd) {
        let mut st = self.lock();
        loop {
            if st.stop {
                return;
            }
            let now = Instant::now();
            let Some(first) = st.due.front().map(|d| d.at) else {
                st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            if first > now {
                st = self
                    .wake
                    .wait_timeout(st, first - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            let mut due = Vec::new();
            while st.due.front().is_some_and(|d| d.at <= now) {
                if let Some(d) = st.due.pop_front() {
                    due.push(d.task);
                }
            }
            drop(st);
            if let Err(e) = conn.query(&mark(&due)) {
                log::warn!("{name}: could not mark tasks started: {e}");
            }
            st = self.lock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_task_leaves_the_queue_and_others_keep_their_order() {
        let s = Starter::default();
        for e in ["1-0", "2-0", "3-0"] {
            s.defer(
                Quick {
                    entry: e.to_string(),
                    task: String::new(),
                    client: String::new(),
                },
                false,
            );
        }
        assert!(s.finished("2-0"), "its mark was waiting");
        assert!(!s.finished("9-0"), "never deferred");
        assert!(!s.finished("2-0"), "once");
        let st = s.lock();
        let left: Vec<&str> = st.due.iter().map(|d| d.task.entry.as_str()).collect();
        assert_eq!(left, ["1-0", "3-0"]);
        assert!(st.due[0].at <= st.due[1].at);
    }
}

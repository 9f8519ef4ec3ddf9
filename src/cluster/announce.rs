//! Telling a client that its task started, only for tasks that run a while.
//!
//! A first delivery used to add a "started" event to the client's stream in
//! the `start` script, for every task, though most finish within a
//! millisecond and their "finished" event says all the client needs: the
//! event cost Redis an `XADD`, a share of the event stream's reads and
//! trims, and the client a parse. Now a slot notes the start here, and the
//! worker's heartbeat thread (which wakes every 20 ms) adds the event only
//! for tasks still running after [`AFTER`]; `Future::state` reports
//! `Running` from then on (before, it did from the start event's arrival,
//! a round trip after the start).

use super::protocol::Conn;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a task runs before its client is told that it started.
pub(crate) const AFTER: Duration = Duration::from_millis(5);

/// A first delivery not announced yet.
struct Pending {
    events: String,
    task: String,
    since: Instant,
}

/// The starts a worker's slots noted, by stream entry.
#[derive(Default)]
pub(crate) struct Announcer {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Announcer {
    /// Notes that `task` (its client's event stream `events`) started as
    /// `entry`.
    pub(crate) fn started(&self, entry: &str, events: String, task: String) {
        let since = Instant::now();
        lock(&self.pending).insert(
            entry.to_string(),
            Pending {
                events,
                task,
                since,
            },
        );
    }

    /// The task of `entry` is no longer running: nothing to announce.
    pub(crate) fn ended(&self, entry: &str) {
        lock(&self.pending).remove(entry);
    }

    /// Adds the "started" event of every noted task that has run for
    /// [`AFTER`] (one pipeline); each is announced once. A failure is
    /// logged: the event only feeds `Future::state`.
    pub(crate) fn announce_due(&self, conn: &mut Conn, name: &str) {
        let due: Vec<Pending> = {
            let mut pending = lock(&self.pending);
            if pending.is_empty() {
                return;
            }
            let entries: Vec<String> = pending
                .iter()
                .filter(|(_, p)| p.since.elapsed() >= AFTER)
                .map(|(e, _)| e.clone())
                .collect();
            entries.iter().filter_map(|e| pending.remove(e)).collect()
        };
        if due.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for p in &due {
            pipe.cmd("XADD")
                .arg(&p.events)
                .arg("NOMKSTREAM")
                .arg("*")
                .arg("k")
                .arg("s")
                .arg("t")
                .arg(&p.task)
                .ignore();
        }
        if let Err(e) = conn.query_pipe(&pipe) {
            log::debug!(
                "{name}: could not announce {} started task(s): {e}",
                due.len()
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_that_ended_is_not_announced() {
        let a = Announcer::default();
        a.started("1-0", "ev".into(), "t".into());
        a.ended("1-0");
        assert!(lock(&a.pending).is_empty());
    }
}

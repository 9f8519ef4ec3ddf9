//! What the event loop has delivered and not yet acknowledged: result keys
//! to delete and read events to trim, sent as one `ack` script call with a
//! later `XREAD`.

use std::time::{Duration, Instant};

/// How many events read since the last ack make a trim due on its own
/// (with no result key to delete). The trim is approximate (`MINID ~`): it
/// frees only whole stream nodes (at most 100 entries or 4 KiB each), so a
/// trim after every read mostly frees nothing, while it costs a script call
/// and a reply that wakes the event loop between its reads.
pub(super) const TRIM_EVERY: usize = 64;

/// How long after the first event not yet trimmed a trim is due anyway
/// (checked after each read), so a slow trickle of results is trimmed too.
pub(super) const TRIM_AFTER: Duration = Duration::from_millis(500);

/// What an `ack` deletes and trims.
pub(super) struct Ack {
    /// Result keys of delivered results.
    pub(super) results: Vec<String>,
    /// The last event read: the events up to it are trimmed.
    pub(super) last: Option<String>,
}

/// Delivered results and read events not yet acknowledged.
#[derive(Default)]
pub(super) struct Acks {
    results: Vec<String>,
    last: Option<String>,
    events: usize,
    since: Option<Instant>,
}

impl Acks {
    /// Records a delivered batch of `events` events, the last of them
    /// `last`, whose results left `results` to delete.
    pub(super) fn add(&mut self, results: Vec<String>, last: Option<&str>, events: usize) {
        self.results.extend(results);
        if let Some(last) = last {
            self.last = Some(last.to_string());
        }
        self.events += events;
        self.since.get_or_insert_with(Instant::now);
    }

    /// The ack to send with the next read, if one is due: at once when a
    /// result key waits to be deleted, else when enough events wait to be
    /// trimmed or the oldest of them waited long enough.
    pub(super) fn due(&mut self) -> Option<Ack> {
        let due = !self.results.is_empty()
            || self.events >= TRIM_EVERY
            || self.since.is_some_and(|t| t.elapsed() >= TRIM_AFTER);
        if due {
            self.take()
        } else {
            None
        }
    }

    /// Whatever waits, due or not (at shutdown).
    pub(super) fn take(&mut self) -> Option<Ack> {
        if self.results.is_empty() && self.last.is_none() {
            return None;
        }
        self.events = 0;
        self.since = None;
        Some(Ack {
            results: std::mem::take(&mut self.results),
            last: self.last.take(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_due_at_once_and_trims_in_batches() {
        let mut a = Acks::default();
        assert!(a.due().is_none());
        a.add(vec!["r1".into()], Some("1-0"), 1);
        let ack = a.due().expect("a result key is due at once");
        assert_eq!(ack.results, vec!["r1".to_string()]);
        assert_eq!(ack.last.as_deref(), Some("1-0"));
        assert!(a.due().is_none());
        for i in 0..TRIM_EVERY - 1 {
            a.add(Vec::new(), Some(format!("{}-0", i + 2).as_str()), 1);
            assert!(a.due().is_none(), "trim due after {} events", i + 1);
        }
        a.add(Vec::new(), Some("99-0"), 1);
        let ack = a.due().expect("a trim is due after TRIM_EVERY events");
        assert!(ack.results.is_empty());
        assert_eq!(ack.last.as_deref(), Some("99-0"));
        assert!(a.take().is_none());
    }

    #[test]
    fn a_trim_waits_at_most_trim_after() {
        let mut a = Acks::default();
        a.add(Vec::new(), Some("5-0"), 1);
        assert!(a.due().is_none());
        a.since = Some(Instant::now() - TRIM_AFTER);
        assert_eq!(a.due().and_then(|a| a.last).as_deref(), Some("5-0"));
    }

    #[test]
    fn take_returns_what_is_not_due() {
        let mut a = Acks::default();
        a.add(Vec::new(), Some("7-0"), 2);
        assert!(a.due().is_none());
        assert_eq!(a.take().and_then(|a| a.last).as_deref(), Some("7-0"));
        assert!(a.take().is_none());
    }
}

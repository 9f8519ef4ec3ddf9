//! One timer thread per process, shared by everything that must act later:
//! retry backoff and thread-pool run-time limits. Entries are closures that
//! run on the timer thread at their deadline and must be quick.

use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

type Action = Box<dyn FnOnce() + Send + 'static>;

struct Entry {
    at: Instant,
    seq: u64,
    action: Action,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so the max-heap yields the earliest deadline first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Queue {
    entries: BinaryHeap<Entry>,
    seq: u64,
    /// The process that started the timer thread (a forked child has none).
    pid: u32,
}

struct Timer {
    queue: Mutex<Queue>,
    changed: Condvar,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<Timer> = OnceLock::new();
    TIMER.get_or_init(|| Timer {
        queue: Mutex::new(Queue::default()),
        changed: Condvar::new(),
    })
}

/// Runs `action` on the timer thread once `delay` has passed.
pub(crate) fn after(delay: Duration, action: impl FnOnce() + Send + 'static) {
    let t = timer();
    let mut q = t.queue.lock().unwrap_or_else(|p| p.into_inner());
    let me = std::process::id();
    if q.pid != me {
        // First use in this process (or a forked child, which inherits the
        // queue but not the thread).
        q.entries.clear();
        let started = std::thread::Builder::new()
            .name("fanout-timer".into())
            .spawn(run);
        if started.is_err() {
            drop(q);
            log::error!("could not start the timer thread; running a timed action at once");
            action();
            return;
        }
        q.pid = me;
    }
    q.seq += 1;
    let seq = q.seq;
    let at = Instant::now() + delay;
    let earliest = q.entries.peek().is_none_or(|e| at < e.at);
    q.entries.push(Entry {
        at,
        seq,
        action: Box::new(action),
    });
    drop(q);
    if earliest {
        t.changed.notify_one();
    }
}

fn run() {
    let t = timer();
    let mut q = t.queue.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = Instant::now();
        match q.entries.peek() {
            None => q = t.changed.wait(q).unwrap_or_else(|p| p.into_inner()),
            Some(e) if e.at > now => {
                let wait = e.at - now;
                q = t
                    .changed
                    .wait_timeout(q, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            Some(_) => {
                let Some(entry) = q.entries.pop() else {
                    continue;
                };
                drop(q);
                if let Err(crate::Error::Panicked { message, .. }) =
                    crate::panic::catch(entry.action)
                {
                    log::error!("a timed action panicked: {message}");
                }
                q = t.queue.lock().unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn fires_in_deadline_order() {
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        for (i, ms) in [(2, 60u64), (0, 10), (1, 30)] {
            let tx = tx.clone();
            after(Duration::from_millis(ms), move || tx.send(i).unwrap());
        }
        let got: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, [0, 1, 2]);
        assert!(start.elapsed() >= Duration::from_millis(60));
    }
}

//! Completing futures off the event loop.
//!
//! Completing a future runs its done-callbacks on the completing thread, and
//! a callback may block: on another future of the same cluster, on a lock,
//! on I/O. If the event loop completed futures itself, one blocking callback
//! would stall every future of the cluster (the result it waits for could
//! never be read). So the event loop and the dispatcher hand completions to
//! the courier: a few threads that run them, one at a time each, inside
//! `panic::catch` (which also contains a panic payload whose `Drop`
//! panics). A monitor thread watches: when
//! every courier thread has been busy with one completion for longer than
//! [`STALL`] while more wait, it starts another (up to [`MAX_THREADS`]);
//! idle extra threads end after [`IDLE_END`]. This is Dask's callback thread, grown on demand like a
//! thread pool that adds a thread while a task waits.

use super::client::lock;
use crate::panic::catch;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// One completion (resolving a few futures, running their callbacks).
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Busy this long with one completion counts as blocked.
pub(crate) const STALL: Duration = Duration::from_millis(20);

/// At most this many courier threads.
pub(crate) const MAX_THREADS: usize = 64;

/// An idle thread beyond the first ends after this long.
const IDLE_END: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    idle: usize,
    threads: usize,
    /// When each busy thread started its current completion.
    busy: Vec<(ThreadId, Instant)>,
    ids: Vec<ThreadId>,
    closed: bool,
    /// The monitor thread is running.
    monitor: bool,
}

/// The courier: see the module documentation.
#[derive(Clone, Default)]
pub(crate) struct Courier {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// Wakes idle threads.
    work: Condvar,
    /// A thread ended.
    ended: Condvar,
    /// Wakes the monitor: completions are queued and no thread is idle.
    queued: Condvar,
}

impl Courier {
    /// Queues completions, starting a thread when none can take them.
    pub(crate) fn send_all(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut st = lock(&self.inner.state);
        let before = st.queue.len();
        st.queue.extend(jobs);
        if st.queue.len() == before {
            return;
        }
        if st.closed && st.threads == 0 {
            // After shutdown: nobody else will run them.
            let jobs: Vec<Job> = st.queue.drain(..).collect();
            drop(st);
            for job in jobs {
                let _ = catch(job);
            }
            return;
        }
        self.wake(st);
    }

    /// Queues one completion.
    #[cfg(test)]
    pub(crate) fn send(&self, job: Job) {
        self.send_all(std::iter::once(job));
    }

    fn wake(&self, mut st: std::sync::MutexGuard<'_, State>) {
        if st.idle > 0 {
            drop(st);
            self.inner.work.notify_one();
            return;
        }
        if st.threads == 0 {
            st.threads += 1;
            let start_monitor = !st.monitor;
            st.monitor = true;
            drop(st);
            self.start(start_monitor);
        } else {
            // The monitor starts a thread if the busy ones stay busy.
            drop(st);
            self.inner.queued.notify_one();
        }
    }

    /// Starts a courier thread (its count is already taken), and the monitor.
    fn start(&self, with_monitor: bool) {
        if with_monitor {
            let inner = self.inner.clone();
            let started = std::thread::Builder::new()
                .name("fanout-cluster-courier-monitor".into())
                .spawn(move || monitor(inner));
            if let Err(e) = started {
                log::error!("could not start the cluster courier monitor: {e}");
                lock(&self.inner.state).monitor = false;
            }
        }
        let inner = self.inner.clone();
        let started = std::thread::Builder::new()
            .name("fanout-cluster-courier".into())
            .spawn(move || run(inner));
        if let Err(e) = started {
            log::error!("could not start a cluster courier thread: {e}");
            let mut st = lock(&self.inner.state);
            st.threads -= 1;
            if st.threads == 0 {
                // Nobody can run them: run them here rather than lose them.
                let jobs: Vec<Job> = st.queue.drain(..).collect();
                drop(st);
                for job in jobs {
                    let _ = catch(job);
                }
            }
        }
    }

    /// True on one of the courier's threads (inside a done-callback).
    pub(crate) fn is_own_thread(&self) -> bool {
        let me = std::thread::current().id();
        lock(&self.inner.state).ids.contains(&me)
    }

    /// Runs what is queued, then lets the threads end; waits up to `limit`
    /// for them (a callback that never returns must not hold shutdown forever).
    pub(crate) fn close(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut st = lock(&self.inner.state);
        st.closed = true;
        self.inner.work.notify_all();
        self.inner.queued.notify_all();
        if st.ids.contains(&std::thread::current().id()) {
            return;
        }
        while st.threads > 0 {
            let now = Instant::now();
            if now >= deadline {
                log::warn!(
                    "{} cluster done-callback(s) still running at shutdown; not waiting for them",
                    st.busy.len()
                );
                return;
            }
            st = self
                .inner
                .ended
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(100)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Watches for completions queued behind threads that are all blocked in
/// a callback, and starts another thread for them.
fn monitor(inner: Arc<Inner>) {
    let courier = Courier {
        inner: inner.clone(),
    };
    let mut st = lock(&inner.state);
    loop {
        if st.closed && st.threads == 0 {
            break;
        }
        let starting = st.threads - st.busy.len() - st.idle;
        let stalled = !st.queue.is_empty()
            && st.idle == 0
            && starting == 0
            && st.busy.iter().all(|(_, since)| since.elapsed() >= STALL);
        if stalled && st.threads < MAX_THREADS {
            st.threads += 1;
            drop(st);
            courier.start(false);
            st = lock(&inner.state);
            continue;
        }
        let wait = if st.queue.is_empty() {
            Duration::from_secs(1)
        } else {
            STALL / 2
        };
        st = inner
            .queued
            .wait_timeout(st, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    st.monitor = false;
}

fn run(inner: Arc<Inner>) {
    let me = std::thread::current().id();
    let mut st = lock(&inner.state);
    st.ids.push(me);
    loop {
        if let Some(job) = st.queue.pop_front() {
            st.busy.push((me, Instant::now()));
            drop(st);
            if let Err(e) = catch(job) {
                log::error!("a cluster completion panicked: {e}");
            }
            st = lock(&inner.state);
            st.busy.retain(|(id, _)| *id != me);
            continue;
        }
        if st.closed {
            break;
        }
        st.idle += 1;
        let (guard, timeout) = inner
            .work
            .wait_timeout(st, IDLE_END)
            .unwrap_or_else(|p| p.into_inner());
        st = guard;
        st.idle -= 1;
        if timeout.timed_out() && st.queue.is_empty() && st.threads > 1 {
            break;
        }
    }
    st.threads -= 1;
    st.ids.retain(|id| *id != me);
    drop(st);
    inner.ended.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_blocked_completion_does_not_hold_back_the_next() {
        let courier = Courier::default();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<u32>();
        courier.send(Box::new(move || {
            let _ = release_rx.recv_timeout(Duration::from_secs(20));
        }));
        std::thread::sleep(STALL * 3);
        for i in 0..3 {
            let tx = done_tx.clone();
            courier.send(Box::new(move || tx.send(i).unwrap()));
        }
        let got: Vec<u32> = (0..3)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(got, [0, 1, 2]);
        release_tx.send(()).unwrap();
        courier.close(Duration::from_secs(10));
        assert_eq!(lock(&courier.inner.state).threads, 0);
    }

    #[test]
    fn a_panicking_completion_is_contained() {
        let courier = Courier::default();
        let (tx, rx) = mpsc::channel::<u32>();
        courier.send(Box::new(|| panic!("in a completion")));
        courier.send(Box::new(move || tx.send(1).unwrap()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(1));
        courier.close(Duration::from_secs(10));
    }
}

//! The callback runner: threads that run done-callbacks for backends whose
//! completing thread must never block.
//!
//! A process pool completes futures on the I/O thread of a worker slot, a
//! cluster client on its event loop. A done-callback that blocks there —
//! `result()` on another future of the same executor, say — would stop the
//! very thread that must deliver that result: a deadlock (CPython has it).
//! So such futures (see `future::remote_pair`) hand their callbacks to this
//! runner instead, as Dask runs callbacks on a callback thread of its own.
//!
//! The runner keeps enough threads that queued callbacks always make
//! progress while its threads are blocked in fanout's own waits: a runner
//! thread about to block in one (`Future::result`, `wait`, `as_completed`,
//! ...) says so through `controls::blocking`, where the runner listens as
//! a thread pool does; if callbacks are then queued and no runner thread is
//! free to take them, another thread starts. (A callback that
//! blocks on something else, say a channel fed by a later callback, is not
//! seen.) Idle threads exit after a while. One future's callbacks run on
//! one thread, in registration order.
//!
//! The runner is per process: a forked child (a forked worker that starts a
//! pool of its own) gets a fresh one instead of the parent's copy, whose
//! threads the child does not have.

use crate::controls::blocking::{self, Blocker};
use crate::panic;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Work for the runner: one future's callbacks.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long a runner thread waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);

struct Runner {
    /// The process this runner belongs to.
    pid: u32,
    state: Mutex<RunnerState>,
    work: Condvar,
}

#[derive(Default)]
struct RunnerState {
    queue: VecDeque<Job>,
    /// Threads waiting for work.
    idle: usize,
    /// Threads started and not yet in their loop (they take work at once).
    starting: usize,
    /// Threads running a job and not blocked in a fanout wait.
    busy: usize,
}

fn lock(m: &Mutex<RunnerState>) -> MutexGuard<'_, RunnerState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's runner (a forked child replaces its copy of the parent's).
fn runner() -> &'static Runner {
    static RUNNER: AtomicPtr<Runner> = AtomicPtr::new(std::ptr::null_mut());
    let pid = std::process::id();
    loop {
        let current = RUNNER.load(Ordering::Acquire);
        // SAFETY: a non-null pointer here came from `Box::leak` below and is
        // never freed, so it is valid for the life of the process.
        if let Some(r) = unsafe { current.as_ref() } {
            if r.pid == pid {
                return r;
            }
        }
        let fresh: &'static mut Runner = Box::leak(Box::new(Runner {
            pid,
            state: Mutex::new(RunnerState::default()),
            work: Condvar::new(),
        }));
        let fresh_ptr = fresh as *mut Runner;
        if RUNNER
            .compare_exchange(current, fresh_ptr, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // The replaced runner (a forked parent's copy) is leaked: its
            // state may be locked by a thread this process does not have.
            return fresh;
        }
        // SAFETY: `fresh_ptr` came from `Box::leak` just above and was not
        // published (the exchange failed), so this is its only owner.
        drop(unsafe { Box::from_raw(fresh_ptr) });
    }
}

/// Queues `job` to run on a runner thread.
pub(crate) fn run_later(job: Job) {
    let r = runner();
    let mut st = lock(&r.state);
    st.queue.push_back(job);
    if st.idle + st.starting > 0 {
        r.work.notify_one();
    } else if st.busy == 0 {
        start_thread(r, &mut st);
    }
    // Otherwise a busy runner thread takes it when its current job is done
    // (or a new thread starts if that one blocks; see `RunnerBlocker`).
}

fn start_thread(r: &'static Runner, st: &mut RunnerState) {
    st.starting += 1;
    let started = std::thread::Builder::new()
        .name("fanout-callbacks".into())
        .spawn(move || runner_loop(r));
    if let Err(e) = started {
        st.starting -= 1;
        log::error!("could not start a callback thread: {e}");
        if st.idle + st.starting + st.busy == 0 {
            // Nobody would ever run the queue: run it here, inline.
            let jobs: Vec<Job> = st.queue.drain(..).collect();
            for job in jobs {
                run_job(job);
            }
        }
    }
}

fn run_job(job: Job) {
    if let Err(e) = panic::catch(job) {
        log::error!("a done-callback job panicked: {e}");
    }
}

fn runner_loop(r: &'static Runner) {
    blocking::install(Some(Arc::new(RunnerBlocker(r))));
    let mut st = lock(&r.state);
    st.starting -= 1;
    loop {
        let job = loop {
            if let Some(job) = st.queue.pop_front() {
                break Some(job);
            }
            st.idle += 1;
            let (guard, timeout) = r
                .work
                .wait_timeout(st, IDLE_EXIT)
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            st.idle -= 1;
            if timeout.timed_out() && st.queue.is_empty() {
                break None;
            }
        };
        let Some(job) = job else { return };
        st.busy += 1;
        drop(st);
        run_job(job);
        st = lock(&r.state);
        st.busy -= 1;
    }
}

/// Hears a runner thread block in a fanout wait (installed on every runner
/// thread): the thread no longer counts as busy, and another one starts
/// when callbacks are queued and no runner thread is free to take them.
struct RunnerBlocker(&'static Runner);

impl Blocker for RunnerBlocker {
    fn enter(&self) {
        let mut st = lock(&self.0.state);
        st.busy -= 1;
        if !st.queue.is_empty() && st.idle + st.starting + st.busy == 0 {
            start_thread(self.0, &mut st);
        }
    }

    fn exit(&self) {
        lock(&self.0.state).busy += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_even_when_every_runner_thread_blocks() {
        // Job A blocks until job B has run: B needs a second thread.
        let (tx, rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<&str>();
        let d = done_tx.clone();
        run_later(Box::new(move || {
            let _b = blocking::enter();
            rx.recv_timeout(Duration::from_secs(20)).unwrap();
            d.send("a").unwrap();
        }));
        std::thread::sleep(Duration::from_millis(50));
        run_later(Box::new(move || {
            tx.send(()).unwrap();
            done_tx.send("b").unwrap();
        }));
        let mut got = vec![
            done_rx.recv_timeout(Duration::from_secs(20)).unwrap(),
            done_rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        ];
        got.sort();
        assert_eq!(got, ["a", "b"]);
    }
}

//! A ceiling, not a peer: the least a pool can do for "submit a call, get
//! something to wait on, collect the result". One allocation per call (the
//! call, its state and its result: 48 bytes for `add(i, 1)`), one unbounded
//! crossbeam channel, workers that block in `recv` (which spins briefly
//! first), and a waiter that sleeps only when the result is not there yet.
//! No cancel, no callbacks, no priorities, no panic handling, no shutdown
//! but dropping the pool: what a library's future cannot do without. Its rate bounds what any
//! design of fanout's `ThreadPool` could reach on the same machine in the
//! same run (BENCHMARKS.md, "Thread pool: the ceiling").

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use crate::one_call::{Call, Outcome, DONE, PENDING};

/// Pending, and the collector sleeps on the pool's condvar.
const AWAITED: u32 = 2;

trait Run: Send + Sync {
    fn run(&self, wake: &Wake);
}

impl<F: FnOnce() -> R + Send, R: Send> Run for Call<F, R> {
    fn run(&self, wake: &Wake) {
        // SAFETY: the one worker that received the call runs it, once.
        unsafe { self.run_and_store() };
        if self.state.swap(DONE, Ordering::Release) == AWAITED {
            drop(wake.lock.lock().unwrap());
            wake.cond.notify_all();
        }
    }
}

/// Where collectors sleep (rarely: only when a result is not there yet).
struct Wake {
    lock: Mutex<()>,
    cond: Condvar,
}

/// What `submit` returns.
pub struct Handle<R> {
    call: Arc<dyn Outcome<R>>,
}

impl<R> Handle<R> {
    /// Waits for the result and takes it (`pool`: the pool that runs it).
    pub fn result(self, pool: &MinimalPool) -> R {
        let wake = &pool.wake;
        let state = self.call.state();
        if state.load(Ordering::Acquire) != DONE {
            let mut guard = wake.lock.lock().unwrap();
            // Under the lock: a worker that sees AWAITED takes the lock before
            // it notifies, so it cannot notify between this and the wait.
            // (Only this one handle sets AWAITED: a failed exchange means DONE.)
            if state
                .compare_exchange(PENDING, AWAITED, Ordering::Acquire, Ordering::Acquire)
                .is_ok()
            {
                while state.load(Ordering::Acquire) != DONE {
                    guard = wake.cond.wait(guard).unwrap();
                }
            }
        }
        self.call.take()
    }
}

/// The pool: `workers` threads, until the pool is dropped.
pub struct MinimalPool {
    tx: Option<crossbeam_channel::Sender<Arc<dyn Run>>>,
    wake: Arc<Wake>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl MinimalPool {
    pub fn new(workers: usize) -> MinimalPool {
        let (tx, rx) = crossbeam_channel::unbounded::<Arc<dyn Run>>();
        let wake = Arc::new(Wake {
            lock: Mutex::new(()),
            cond: Condvar::new(),
        });
        let threads = (0..workers)
            .map(|_| {
                let rx = rx.clone();
                let wake = wake.clone();
                std::thread::spawn(move || {
                    while let Ok(call) = rx.recv() {
                        call.run(&wake);
                    }
                })
            })
            .collect();
        MinimalPool {
            tx: Some(tx),
            wake,
            threads,
        }
    }

    pub fn submit<F, R>(&self, f: F) -> Handle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let call = Arc::new(Call::new(f));
        let run: Arc<dyn Run> = call.clone();
        self.tx
            .as_ref()
            .expect("open")
            .send(run)
            .expect("workers alive");
        Handle { call }
    }
}

impl Drop for MinimalPool {
    fn drop(&mut self) {
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

//! Helpers shared by the thread-pool test files.
#![allow(dead_code)]

use fanout::{Future, ThreadPool};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

/// The bound on every wait in these tests: a regression fails instead of hanging.
pub const GUARD: Duration = Duration::from_secs(20);

/// A task that runs on `pool` until `release` is sent (or dropped), then
/// returns `value`. Returns once the task is running, so calls submitted
/// after it stay pending while it holds a worker.
pub fn gated<T: Send + 'static>(pool: &ThreadPool, value: T) -> (Future<T>, Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let f = pool
        .spawn(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(GUARD);
            value
        })
        .unwrap();
    started_rx.recv_timeout(GUARD).unwrap();
    (f, release)
}

/// Holds one of the pool's workers until `release` is sent or dropped.
pub fn hold(pool: &ThreadPool) -> (Future<()>, Sender<()>) {
    gated(pool, ())
}

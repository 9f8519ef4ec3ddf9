//! ProcessPool cancellation and shutdown: pending calls can be cancelled and
//! then never run; `shutdown(wait, cancel_futures)` and `Drop` behave as the
//! contract says; submitting after shutdown is `Err(Shutdown)`.
//!
//! A call handed to a worker ahead of time (at most a few frames per worker)
//! is already `Running` and cannot be cancelled, as in Python, whose
//! `ProcessPoolExecutor` moves calls to its call queue the same way. The tests
//! therefore decide what is cancellable from each future's state.

mod process_util;

use fanout::{Error, Executor, Future, MapOptions, State};
use process_util::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn marker(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("ran-{i}"))
}

fn submit_touch(pool: &fanout::ProcessPool, dir: &Path, i: usize, ms: u64) -> Future<u32> {
    let p = marker(dir, i).to_str().unwrap().to_string();
    pool.submit(touch_after, (p, ms)).unwrap()
}

#[test]
fn cancelled_pending_calls_never_run() {
    let _watchdog = watchdog(
        "cancelled_pending_calls_never_run",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let dir = tempfile::tempdir().unwrap();
        let long = pool.submit(sleep_ms, (800,)).unwrap();
        let fs: Vec<_> = (0..12)
            .map(|i| submit_touch(&pool, dir.path(), i, 0))
            .collect();
        assert!(long.running());
        // Calls handed ahead to the busy worker are Running; the rest wait.
        let ahead = fs.iter().take_while(|f| f.running()).count();
        assert!(ahead < 4, "{method:?}: {ahead} calls handed ahead");
        assert!(fs[ahead..].iter().all(|f| f.state() == State::Pending));
        let mut cancelled = Vec::new();
        for (i, f) in fs.iter().enumerate() {
            if i % 2 == 1 {
                let was_pending = f.state() == State::Pending;
                assert_eq!(f.cancel(), was_pending, "{method:?} call {i}");
                if was_pending {
                    assert!(f.cancelled() && f.done());
                    assert_eq!(f.state(), State::Cancelled);
                    cancelled.push(i);
                }
            }
        }
        assert!(cancelled.len() >= 4, "{method:?}: {cancelled:?}");
        assert!(!long.cancel(), "a running call cannot be cancelled");
        assert_eq!(long.result_timeout(T), Ok(800));
        for (i, f) in fs.into_iter().enumerate() {
            let r = f.result_timeout(T);
            if cancelled.contains(&i) {
                assert_eq!(r, Err(Error::Cancelled), "{method:?} call {i}");
            } else {
                assert!(r.is_ok(), "{method:?} call {i}: {r:?}");
            }
        }
        pool.shutdown(true, false);
        for i in 0..12 {
            assert_eq!(
                marker(dir.path(), i).exists(),
                !cancelled.contains(&i),
                "{method:?}: call {i} ran iff it was not cancelled"
            );
        }
    }
}

#[test]
fn shutdown_cancel_futures_cancels_queued_calls_at_once() {
    let _watchdog = watchdog(
        "shutdown_cancel_futures_cancels_queued_calls_at_once",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 2);
        let dir = tempfile::tempdir().unwrap();
        let fs: Vec<_> = (0..20)
            .map(|i| submit_touch(&pool, dir.path(), i, 300))
            .collect();
        let t0 = Instant::now();
        pool.shutdown(false, true);
        assert!(
            t0.elapsed() < Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
        let running: Vec<bool> = fs.iter().map(|f| f.running()).collect();
        let n_running = running.iter().filter(|&&r| r).count();
        assert!(
            (2..=8).contains(&n_running),
            "{method:?}: {n_running} running"
        );
        for (i, f) in fs.iter().enumerate() {
            if !running[i] {
                assert!(
                    f.cancelled(),
                    "{method:?}: queued call {i} is cancelled at once"
                );
            }
        }
        assert!(matches!(pool.submit(add, (1, 2)), Err(Error::Shutdown)));
        assert!(matches!(pool.map(square, 0..2u64), Err(Error::Shutdown)));
        // The running calls finish; waiting returns once the workers are gone.
        pool.shutdown(true, false);
        assert!(pool.worker_pids().is_empty(), "{:?}", pool.worker_pids());
        for (i, f) in fs.into_iter().enumerate() {
            assert!(f.done(), "{method:?}: call {i} done after shutdown(wait)");
            let r = f.result_timeout(Duration::from_secs(1));
            assert_eq!(r.is_ok(), running[i], "{method:?} call {i}: {r:?}");
            assert_eq!(marker(dir.path(), i).exists(), running[i]);
        }
    }
}

#[test]
fn shutdown_wait_runs_everything_queued() {
    let _watchdog = watchdog(
        "shutdown_wait_runs_everything_queued",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 2);
        let dir = tempfile::tempdir().unwrap();
        let fs: Vec<_> = (0..10)
            .map(|i| submit_touch(&pool, dir.path(), i, 100))
            .collect();
        let pids = pool.worker_pids();
        let t0 = Instant::now();
        pool.shutdown(true, false);
        // 10 calls of 100 ms on 2 workers.
        assert!(
            t0.elapsed() >= Duration::from_millis(450),
            "{:?}",
            t0.elapsed()
        );
        for (i, f) in fs.iter().enumerate() {
            assert_eq!(f.state(), State::Finished, "{method:?} call {i}");
            assert!(marker(dir.path(), i).exists());
        }
        for f in fs {
            assert!(pids.contains(&f.result_timeout(T).unwrap()));
        }
        assert!(pool.worker_pids().is_empty());
        assert!(pids.iter().all(|&p| process_gone(p)), "{pids:?}");
        // Idempotent.
        pool.shutdown(true, true);
        pool.shutdown(false, false);
        assert!(matches!(pool.submit(add, (1, 2)), Err(Error::Shutdown)));
    }
}

#[test]
fn drop_is_shutdown_wait_without_cancelling() {
    let _watchdog = watchdog(
        "drop_is_shutdown_wait_without_cancelling",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(method, 2);
        let pids = pool.worker_pids();
        let fs: Vec<_> = (0..8)
            .map(|i| submit_touch(&pool, dir.path(), i, 50))
            .collect();
        drop(pool);
        for (i, f) in fs.into_iter().enumerate() {
            assert!(f.done(), "{method:?}: call {i} done when drop returns");
            assert!(f.result_timeout(T).is_ok());
            assert!(marker(dir.path(), i).exists());
        }
        assert!(pids.iter().all(|&p| process_gone(p)), "{pids:?}");
    }
}

fn touch_slowly(path: String) -> u32 {
    touch_after(path, 100)
}

#[test]
fn dropping_a_map_cancels_what_has_not_started() {
    let _watchdog = watchdog(
        "dropping_a_map_cancels_what_has_not_started",
        Duration::from_secs(120),
    );
    // map_with: Executor::map/starmap currently send the whole input as one
    // frame (see tests/process_dispatch.rs), which nothing can cancel.
    for method in METHODS {
        let pool = pool(method, 1);
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<String> = (0..20)
            .map(|i| marker(dir.path(), i).to_str().unwrap().to_string())
            .collect();
        let mut m = pool
            .map_with(touch_slowly, paths, MapOptions::default())
            .unwrap();
        assert!(m.next().unwrap().is_ok());
        drop(m);
        pool.shutdown(true, false);
        let ran = (0..20).filter(|&i| marker(dir.path(), i).exists()).count();
        assert!(
            ran <= 5,
            "{method:?}: {ran} of 20 ran after the map was dropped"
        );
    }
}

#[test]
fn map_timeout_cancels_the_rest() {
    let _watchdog = watchdog("map_timeout_cancels_the_rest", Duration::from_secs(120));
    for method in METHODS {
        let pool = pool(method, 1);
        let opts = MapOptions::default().timeout(Duration::from_millis(300));
        let t0 = Instant::now();
        let out: Vec<_> = pool
            .map_with(sleep_ms, [100u64; 30], opts)
            .unwrap()
            .collect();
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(
            matches!(out.last(), Some(Err(Error::Timeout { .. }))),
            "{out:?}"
        );
        assert!(out.len() < 10, "{method:?}: {}", out.len());
        // The pool is still usable and not held up long by the cancelled rest.
        let t0 = Instant::now();
        assert_eq!(pool.submit(add, (1, 2)).unwrap().result_timeout(T), Ok(3));
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }
}

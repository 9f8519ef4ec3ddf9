//! The look-ahead a worker earns while calls wait in the queue (up to
//! `AHEAD_CALLS` calls instead of 3 frames): with a backlog of short calls
//! a worker holds many calls at once, and everything the pool promises per
//! call still holds — a crash fails exactly the call that was running, a
//! timeout kills only its own call, `max_tasks_per_child` counts every
//! call, and once the backlog is gone a long call holds back only a few
//! others (which stay pending and cancellable).

mod process_util;

use fanout::{Error, Executor, State};
use process_util::*;
use std::collections::HashMap;
use std::time::Duration;

/// Short calls submitted at once: more than the workers hold, so they back up.
const BACKLOG: u64 = 2_000;

#[test]
fn a_crash_in_a_backlog_fails_only_the_call_that_crashed() {
    let _watchdog = watchdog(
        "a_crash_in_a_backlog_fails_only_the_call_that_crashed",
        Duration::from_secs(180),
    );
    for method in METHODS {
        let pool = pool(method, 2);
        let before: Vec<_> = (0..BACKLOG)
            .map(|i| pool.submit(add, (i, 1)).unwrap())
            .collect();
        let crash = pool.submit(abort_now, ()).unwrap();
        let after: Vec<_> = (0..BACKLOG)
            .map(|i| pool.submit(add, (i, 2)).unwrap())
            .collect();
        expect_worker_lost(crash.result_timeout(T), "SIGABRT");
        for (i, f) in before.into_iter().enumerate() {
            assert_eq!(f.result_timeout(T), Ok(i as u64 + 1), "{method:?} call {i}");
        }
        for (i, f) in after.into_iter().enumerate() {
            assert_eq!(f.result_timeout(T), Ok(i as u64 + 2), "{method:?} call {i}");
        }
    }
}

#[test]
fn a_timeout_in_a_backlog_kills_only_its_own_call() {
    let _watchdog = watchdog(
        "a_timeout_in_a_backlog_kills_only_its_own_call",
        Duration::from_secs(180),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let before: Vec<_> = (0..BACKLOG)
            .map(|i| pool.submit(add, (i, 1)).unwrap())
            .collect();
        let slow = pool
            .call(sleep_ms)
            .timeout(Duration::from_millis(200))
            .submit((20_000,))
            .unwrap();
        let after: Vec<_> = (0..BACKLOG)
            .map(|i| pool.submit(add, (i, 2)).unwrap())
            .collect();
        match slow.result_timeout(T) {
            Err(Error::Timeout { .. }) => {}
            other => panic!("{method:?}: expected Timeout, got {other:?}"),
        }
        for (i, f) in before.into_iter().enumerate() {
            assert_eq!(f.result_timeout(T), Ok(i as u64 + 1), "{method:?} call {i}");
        }
        for (i, f) in after.into_iter().enumerate() {
            assert_eq!(f.result_timeout(T), Ok(i as u64 + 2), "{method:?} call {i}");
        }
    }
}

#[test]
fn max_tasks_per_child_counts_every_call_of_a_backlog() {
    let _watchdog = watchdog(
        "max_tasks_per_child_counts_every_call_of_a_backlog",
        Duration::from_secs(180),
    );
    for method in METHODS {
        let pool = fanout::ProcessPool::builder()
            .workers(2)
            .start_method(method)
            .max_tasks_per_child(50)
            .build()
            .unwrap();
        let fs: Vec<_> = (0..1_000).map(|_| pool.submit(pid, ()).unwrap()).collect();
        let mut calls: HashMap<u32, usize> = HashMap::new();
        for f in fs {
            *calls.entry(f.result_timeout(T).unwrap()).or_default() += 1;
        }
        assert!(calls.len() >= 20, "{method:?}: {} workers", calls.len());
        assert!(calls.values().all(|&n| n <= 50), "{method:?}: {calls:?}");
    }
}

#[test]
fn after_a_backlog_a_long_call_holds_back_only_a_few() {
    let _watchdog = watchdog(
        "after_a_backlog_a_long_call_holds_back_only_a_few",
        Duration::from_secs(180),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let backlog: Vec<_> = (0..BACKLOG)
            .map(|i| pool.submit(add, (i, 1)).unwrap())
            .collect();
        for (i, f) in backlog.into_iter().enumerate() {
            assert_eq!(f.result_timeout(T), Ok(i as u64 + 1));
        }
        // The queue was found empty: the worker is back to a few frames.
        let long = pool.submit(sleep_ms, (500,)).unwrap();
        let fs: Vec<_> = (0..12).map(|i| pool.submit(add, (i, 0)).unwrap()).collect();
        let ahead = fs.iter().take_while(|f| f.running()).count();
        assert!(ahead < 4, "{method:?}: {ahead} calls handed ahead");
        assert!(fs[ahead..].iter().all(|f| f.state() == State::Pending));
        assert!(
            fs.last().unwrap().cancel(),
            "{method:?}: the last call is cancellable"
        );
        assert_eq!(long.result_timeout(T), Ok(500));
        for (i, f) in fs.into_iter().enumerate().take(11) {
            assert_eq!(f.result_timeout(T), Ok(i as u64));
        }
    }
}

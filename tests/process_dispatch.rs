//! ProcessPool dispatch: calls go to idle workers, and `map` spreads its
//! items over the workers.
//!
//! Alone in its binary, and its tests take turns (`serial`): they measure
//! time, so they must not share two cores with other process-pool tests.

mod process_util;

use fanout::{Executor, MapOptions, StartMethod};
use process_util::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Makes the tests of this file run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn short_nap(i: u64) -> (u64, u32) {
    std::thread::sleep(Duration::from_millis(10));
    (i, std::process::id())
}

fn slow_item(i: u64) -> (u64, u32) {
    std::thread::sleep(Duration::from_millis(100));
    (i, std::process::id())
}

/// Submits a 2 s call, then `shorts` short ones all at once, on 2 workers;
/// every short one must finish long before the long one.
fn burst(method: StartMethod, shorts: u64) {
    let pool = pool(method, 2);
    let _: Vec<_> = pool.map(square, 0..10u64).unwrap().collect();
    let t0 = Instant::now();
    let long = pool.submit(sleep_ms, (2000,)).unwrap();
    let fs: Vec<_> = (0..shorts)
        .map(|i| pool.submit(short_nap, (i,)).unwrap())
        .collect();
    for (i, f) in fs.into_iter().enumerate() {
        assert_eq!(f.result_timeout(T).map(|r| r.0), Ok(i as u64));
        let at = t0.elapsed();
        assert!(
            at < Duration::from_millis(1500),
            "{method:?}: short call {i} of {shorts} finished after {at:?}, \
             behind the 2 s call although the other worker was free"
        );
    }
    assert!(!long.done());
    assert_eq!(long.result_timeout(T), Ok(2000));
}

#[test]
fn a_lone_short_call_does_not_wait_behind_a_long_one() {
    let _watchdog = watchdog(
        "a_lone_short_call_does_not_wait_behind_a_long_one",
        Duration::from_secs(120),
    );
    let _turn = serial();
    for method in METHODS {
        burst(method, 1);
    }
}

#[test]
fn calls_submitted_while_a_worker_is_idle_go_to_it() {
    let _watchdog = watchdog(
        "calls_submitted_while_a_worker_is_idle_go_to_it",
        Duration::from_secs(120),
    );
    let _turn = serial();
    for method in METHODS {
        let pool = pool(method, 2);
        let t0 = Instant::now();
        let long = pool.submit(sleep_ms, (1500,)).unwrap();
        let mut pids = HashSet::new();
        for i in 0..20 {
            let (j, p) = pool
                .submit(short_nap, (i,))
                .unwrap()
                .result_timeout(T)
                .unwrap();
            assert_eq!(j, i);
            pids.insert(p);
        }
        assert!(
            t0.elapsed() < Duration::from_millis(1200),
            "{method:?}: {:?}",
            t0.elapsed()
        );
        assert_eq!(pids.len(), 1, "{method:?}: all on the idle worker");
        assert!(!long.done());
        assert_eq!(long.result_timeout(T), Ok(1500));
    }
}

#[test]
fn short_calls_do_not_wait_behind_a_long_one() {
    let _watchdog = watchdog(
        "short_calls_do_not_wait_behind_a_long_one",
        Duration::from_secs(120),
    );
    let _turn = serial();
    for method in METHODS {
        for shorts in [2, 5, 20] {
            burst(method, shorts);
        }
    }
}

#[test]
fn map_with_spreads_items_over_the_workers() {
    let _watchdog = watchdog(
        "map_with_spreads_items_over_the_workers",
        Duration::from_secs(120),
    );
    let _turn = serial();
    for method in METHODS {
        let pool = pool(method, 2);
        let t0 = Instant::now();
        let opts = MapOptions::default().timeout(T);
        let out: Vec<_> = pool
            .map_with(slow_item, 0..8u64, opts)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let elapsed = t0.elapsed();
        assert_eq!(
            out.iter().map(|r| r.0).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        let pids: HashSet<u32> = out.iter().map(|r| r.1).collect();
        assert_eq!(pids.len(), 2, "{method:?}: {out:?}");
        assert!(
            elapsed < Duration::from_millis(700),
            "{method:?}: {elapsed:?}"
        );
    }
}

#[test]
fn map_and_starmap_spread_items_over_the_workers() {
    let _watchdog = watchdog(
        "map_and_starmap_spread_items_over_the_workers",
        Duration::from_secs(120),
    );
    let _turn = serial();
    for method in METHODS {
        let pool = pool(method, 2);
        let t0 = Instant::now();
        let out: Vec<_> = pool
            .map(slow_item, 0..8u64)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let elapsed = t0.elapsed();
        let pids: HashSet<u32> = out.iter().map(|r| r.1).collect();
        assert_eq!(pids.len(), 2, "{method:?} map: {out:?}");
        assert!(
            elapsed < Duration::from_millis(700),
            "{method:?} map: {elapsed:?}"
        );
        let out: Vec<_> = pool
            .starmap(slow_item, (0..8u64).map(|i| (i,)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let pids: HashSet<u32> = out.iter().map(|r| r.1).collect();
        assert_eq!(pids.len(), 2, "{method:?} starmap: {out:?}");
    }
}

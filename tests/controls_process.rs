//! Per-call controls on the process pool: a run-time limit kills (and
//! replaces) the worker, and priorities order the central queue.

mod process_util;

use fanout::{Executor, ProcessPool, State};
use process_util::{
    assert_overran, check_overtaking, eventually, log_tag, logged_order, pid, pool, sleep_ms,
    METHODS, T,
};
use std::time::{Duration, Instant};

fn never_returns() -> u32 {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[test]
fn a_call_past_its_timeout_kills_its_worker_and_resolves_timeout() {
    let _watchdog = process_util::watchdog(
        "a_call_past_its_timeout_kills_its_worker_and_resolves_timeout",
        Duration::from_secs(180),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let before = pool.worker_pids();
        let start = Instant::now();
        let f = pool
            .call(never_returns)
            .timeout(Duration::from_millis(300))
            .submit(())
            .unwrap();
        assert_overran(f.result_timeout(T), "300ms", &format!("{method:?}"));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "{method:?}: {took:?}");
        assert!(took < Duration::from_secs(10), "{method:?}: {took:?}");
        // A replacement serves the next call, in a new process.
        let next = pool.submit(pid, ()).unwrap().result_timeout(T).unwrap();
        assert!(!before.contains(&next), "{method:?}: a new worker pid");
        assert!(eventually(T, || pool.worker_pids().len() == 1));
    }
}

#[test]
fn a_call_within_its_timeout_and_the_calls_queued_behind_are_unaffected() {
    let _watchdog = process_util::watchdog(
        "a_call_within_its_timeout_and_the_calls_queued_behind_are_unaffected",
        Duration::from_secs(180),
    );
    let pool = pool(METHODS[0], 1);
    let before = pool.worker_pids();
    let fs: Vec<_> = (0..4)
        .map(|_| {
            pool.call(sleep_ms)
                .timeout(Duration::from_millis(2000))
                .submit((50u64,))
                .unwrap()
        })
        .collect();
    for f in fs {
        assert_eq!(f.result_timeout(T), Ok(50));
    }
    // Past the limits of the finished calls: nobody is killed late.
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(pool.worker_pids(), before);
}

#[test]
fn a_timed_out_call_is_retried_on_a_fresh_worker() {
    let _watchdog = process_util::watchdog(
        "a_timed_out_call_is_retried_on_a_fresh_worker",
        Duration::from_secs(180),
    );
    let dir = std::env::temp_dir().join(format!("fanout-ctl-proc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("first").display().to_string();
    let _ = std::fs::remove_file(&path);
    /// Hangs on the first attempt (creates `path`), returns at once after.
    fn hang_once(path: String) -> u32 {
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .is_ok()
        {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        7
    }
    let pool = pool(METHODS[0], 1);
    let f = pool
        .call(hang_once)
        .timeout(Duration::from_millis(300))
        .retries(1)
        .submit((path,))
        .unwrap();
    assert_eq!(f.result_timeout(T), Ok(7));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_high_priority_call_overtakes_most_queued_ones_on_one_worker() {
    let _watchdog = process_util::watchdog(
        "a_high_priority_call_overtakes_most_queued_ones_on_one_worker",
        Duration::from_secs(180),
    );
    let dir = std::env::temp_dir().join(format!("fanout-ctl-prio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for method in METHODS {
        let path = dir.join(format!("{method:?}")).display().to_string();
        let _ = std::fs::remove_file(&path);
        let pool = pool(method, 1);
        let busy = pool.submit(sleep_ms, (300,)).unwrap();
        assert!(eventually(T, || busy.state() == State::Running));
        check_overtaking(&pool, busy, &path, 3, &format!("{method:?}"), None);
        // The same with a high call whose tag is a future's result.
        let _ = std::fs::remove_file(&path);
        let tag = pool.submit(echo_u32, (99,)).unwrap();
        assert!(tag.wait(Some(T)));
        let busy = pool.submit(sleep_ms, (300,)).unwrap();
        assert!(eventually(T, || busy.state() == State::Running));
        let what = format!("{method:?}, Arg input");
        check_overtaking(&pool, busy, &path, 3, &what, Some(&tag));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn echo_u32(x: u32) -> u32 {
    x
}

/// Never returns (its input only delays its start).
fn never_returns_after(_input: u64) -> u32 {
    never_returns()
}

#[test]
fn a_call_with_future_inputs_honours_its_timeout() {
    let _watchdog = process_util::watchdog(
        "a_call_with_future_inputs_honours_its_timeout",
        Duration::from_secs(180),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let input = pool.submit(sleep_ms, (50,)).unwrap();
        let f = pool
            .call(never_returns_after)
            .timeout(Duration::from_millis(300))
            .submit((input.arg(),))
            .unwrap();
        assert_overran(f.result_timeout(T), "300ms", &format!("{method:?}"));
        // The worker was replaced and serves the next call.
        assert_eq!(
            pool.submit(sleep_ms, (1,)).unwrap().result_timeout(T),
            Ok(1)
        );
    }
}

#[test]
fn priorities_order_the_queue_fifo_within_a_level() {
    let _watchdog = process_util::watchdog(
        "priorities_order_the_queue_fifo_within_a_level",
        Duration::from_secs(180),
    );
    let dir = std::env::temp_dir().join(format!("fanout-ctl-levels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("levels").display().to_string();
    let pool: ProcessPool = pool(METHODS[0], 1);
    let busy = pool.submit(sleep_ms, (300,)).unwrap();
    assert!(eventually(T, || busy.state() == State::Running));
    // Fill the frames the worker takes ahead of time, so what follows waits
    // in the pool's queue.
    let ahead: Vec<_> = (0..FRAMES_AHEAD)
        .map(|i| {
            pool.submit(log_tag, (path.clone(), 1000 + i as u32))
                .unwrap()
        })
        .collect();
    let levels = [(0, 1), (-1, 2), (5, 3), (0, 4), (5, 5), (0, 6), (5, 7)];
    let fs: Vec<_> = levels
        .iter()
        .map(|&(p, tag)| {
            pool.call(log_tag)
                .priority(p)
                .submit((path.clone(), tag))
                .unwrap()
        })
        .collect();
    for f in ahead.into_iter().chain(fs) {
        f.result_timeout(T).unwrap();
    }
    busy.result_timeout(T).unwrap();
    let order: Vec<u32> = logged_order(&path)
        .into_iter()
        .filter(|&t| t < 1000)
        .collect();
    assert_eq!(order, [3, 5, 7, 1, 4, 6, 2]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Frames a busy worker holds besides the running one (the pool hands a
/// worker at most three frames at once).
const FRAMES_AHEAD: usize = 2;

//! Retries and backoff, on every backend: attempts are counted through a
//! file the task appends to, so an attempt that ran in another process or
//! host counts too.

mod process_util;

mod cluster_support;

use cluster_support::{Redis, TempDir};
use fanout::{Cluster, Error, Executor, ProcessPool, State, ThreadPool};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(60);

/// Records one attempt (a line holding the wall-clock time in µs) and
/// panics while fewer than `fail_first + 1` attempts were made; returns the
/// attempt number.
fn flaky(path: String, fail_first: u32) -> u32 {
    use std::io::Write;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .unwrap();
    writeln!(f, "{now}").unwrap();
    drop(f);
    let attempt = std::fs::read_to_string(&path).unwrap().lines().count() as u32;
    if attempt <= fail_first {
        panic!("attempt {attempt} fails on purpose");
    }
    attempt
}

fn attempts(path: &str) -> Vec<u128> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn never_retry(_: &Error) -> bool {
    false
}

/// The three retry rules, on one executor.
fn check_retries(ex: &impl Executor, dir: &TempDir, tag: &str) {
    let path = |name: &str| {
        dir.path()
            .join(format!("{tag}-{name}"))
            .display()
            .to_string()
    };

    let p = path("ok-on-third");
    let f = ex.call(flaky).retries(2).submit((p.clone(), 2u32)).unwrap();
    assert_eq!(
        f.result_timeout(T),
        Ok(3),
        "{tag}: retries(2) succeeds on attempt 3"
    );
    assert_eq!(attempts(&p).len(), 3);

    let p = path("panicked-after-two");
    let f = ex.call(flaky).retries(1).submit((p.clone(), 5u32)).unwrap();
    match f.result_timeout(T) {
        Err(Error::Panicked { message, .. }) => {
            assert!(
                message.contains("attempt 2 fails"),
                "{tag}: last attempt's error: {message}"
            )
        }
        other => panic!("{tag}: expected Panicked, got {other:?}"),
    }
    assert_eq!(attempts(&p).len(), 2, "{tag}: retries(1) makes 2 attempts");

    let p = path("retry-if-false");
    let f = ex
        .call(flaky)
        .retries(3)
        .retry_if(never_retry)
        .submit((p.clone(), 5u32))
        .unwrap();
    assert!(matches!(f.result_timeout(T), Err(Error::Panicked { .. })));
    assert_eq!(
        attempts(&p).len(),
        1,
        "{tag}: retry_if false makes 1 attempt"
    );
}

/// Backoff: gaps between attempts are at least half of first, 2·first, ...
fn check_backoff(ex: &impl Executor, dir: &TempDir, tag: &str) {
    let p = dir
        .path()
        .join(format!("{tag}-backoff"))
        .display()
        .to_string();
    let first = Duration::from_millis(200);
    let f = ex
        .call(flaky)
        .retries(3)
        .backoff(first, Duration::from_secs(2))
        .submit((p.clone(), 3u32))
        .unwrap();
    assert_eq!(f.result_timeout(T), Ok(4));
    let at = attempts(&p);
    assert_eq!(at.len(), 4);
    for (i, w) in at.windows(2).enumerate() {
        let gap = Duration::from_micros((w[1] - w[0]) as u64);
        let step = first * (1 << i);
        assert!(gap >= step / 2, "{tag}: gap {i} = {gap:?}, step {step:?}");
        assert!(
            gap < step + Duration::from_secs(3),
            "{tag}: gap {i} = {gap:?} too long"
        );
    }
}

#[test]
fn thread_pool_retries() {
    let _watchdog = process_util::watchdog("thread_pool_retries", Duration::from_secs(180));
    let dir = TempDir::new("retry-thread");
    let pool = ThreadPool::new(2).unwrap();
    check_retries(&pool, &dir, "thread");
    check_backoff(&pool, &dir, "thread");
}

#[test]
fn process_pool_retries() {
    let _watchdog = process_util::watchdog("process_pool_retries", Duration::from_secs(180));
    let dir = TempDir::new("retry-process");
    let pool = ProcessPool::new(2).unwrap();
    check_retries(&pool, &dir, "process");
    check_backoff(&pool, &dir, "process");
}

#[test]
fn cluster_retries() {
    let _watchdog = process_util::watchdog("cluster_retries", Duration::from_secs(180));
    let dir = TempDir::new("retry-cluster");
    let redis = Redis::start();
    let c = Cluster::builder(&redis.url())
        .namespace("retry")
        .local_workers(2)
        .secret("test-secret")
        .build()
        .unwrap();
    check_retries(&c, &dir, "cluster");
    check_backoff(&c, &dir, "cluster");
}

#[test]
fn cancelling_a_call_waiting_for_its_backoff_stops_it() {
    let _watchdog = process_util::watchdog(
        "cancelling_a_call_waiting_for_its_backoff_stops_it",
        Duration::from_secs(180),
    );
    let dir = TempDir::new("retry-cancel");
    let p = dir.path().join("cancel").display().to_string();
    let pool = ThreadPool::new(1).unwrap();
    let f = pool
        .call(flaky)
        .retries(5)
        .backoff(Duration::from_secs(1), Duration::from_secs(1))
        .submit((p.clone(), 10u32))
        .unwrap();
    // The first attempt fails at once; then the call waits a second.
    let start = Instant::now();
    while attempts(&p).is_empty() && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(f.state(), State::Pending, "pending between attempts");
    assert!(f.cancel());
    assert_eq!(f.result_timeout(T), Err(Error::Cancelled));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(attempts(&p).len(), 1, "no attempt after the cancel");
}

#[test]
fn a_retried_call_is_running_while_an_attempt_runs() {
    let _watchdog = process_util::watchdog(
        "a_retried_call_is_running_while_an_attempt_runs",
        Duration::from_secs(180),
    );
    fn nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    let pool = ThreadPool::new(1).unwrap();
    let f = pool.call(nap).retries(2).submit((300u64,)).unwrap();
    let start = Instant::now();
    while f.state() != State::Running && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(f.state(), State::Running);
    assert!(!f.cancel(), "a running call cannot be cancelled");
    assert_eq!(f.result_timeout(T), Ok(300));
}

#[test]
fn a_retried_call_after_shutdown_is_refused() {
    let _watchdog = process_util::watchdog(
        "a_retried_call_after_shutdown_is_refused",
        Duration::from_secs(180),
    );
    let pool = ThreadPool::new(1).unwrap();
    pool.shutdown(true, false);
    assert!(matches!(
        pool.call(flaky)
            .retries(2)
            .submit((String::from("/nonexistent/x"), 0u32)),
        Err(Error::Shutdown)
    ));
}

/// Kills its worker the first time it runs for `marker`; returns 5 after.
fn die_once(marker: String) -> u32 {
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok()
    {
        std::process::abort();
    }
    5
}

#[test]
fn cluster_attempts_are_counted_apart_from_max_deliveries() {
    let _watchdog = process_util::watchdog(
        "cluster_attempts_are_counted_apart_from_max_deliveries",
        Duration::from_secs(180),
    );
    let dir = TempDir::new("retry-deliveries");
    let redis = Redis::start();
    let c = Cluster::builder(&redis.url())
        .namespace("retry-deliveries")
        .local_workers(1)
        .lease(Duration::from_millis(500))
        .max_deliveries(1)
        .secret("test-secret")
        .build()
        .unwrap();
    let marker = dir.path().join("died").display().to_string();
    // Without retries, one delivery to a dying worker is the end.
    let once = c.submit(die_once, (marker.clone(),)).unwrap();
    assert!(matches!(
        once.result_timeout(T),
        Err(Error::WorkerLost { .. })
    ));
    std::fs::remove_file(&marker).unwrap();
    // With retries(1) the client submits a second attempt, a new task with
    // its own deliveries, which succeeds on the replacement worker.
    let f = c.call(die_once).retries(1).submit((marker,)).unwrap();
    assert_eq!(f.result_timeout(T), Ok(5));
}

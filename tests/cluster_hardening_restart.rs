//! Redis restarting empty (no persistence) while work is in flight: the
//! client still holds every call it submitted, sends again those whose
//! records vanished, and every future resolves Ok (at-least-once execution,
//! exactly one result).

mod cluster_hardening_support;
mod cluster_support;

use cluster_support::{eventually, Redis, TempDir};
use fanout::{Cluster, Executor};
use std::time::Duration;

/// Appends `i` to the log, sleeps, returns `2 * i`.
fn logged(log: String, i: u64, ms: u64) -> u64 {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)
    {
        // One write per line: concurrent appends from two workers never interleave.
        let _ = f.write_all(format!("{i}\n").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(ms));
    2 * i
}

fn executions(log: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn redis_restarting_empty_loses_no_call_while_the_client_lives() {
    let _watchdog = cluster_hardening_support::watchdog(
        "redis_restarting_empty_loses_no_call_while_the_client_lives",
        std::time::Duration::from_secs(180),
    );
    let mut redis = Redis::start_with(false);
    let dir = TempDir::new("restart-empty");
    let log = dir.path().join("executions");
    let logs = log.to_string_lossy().into_owned();
    let c = Cluster::builder(&redis.url())
        .namespace("restart-empty")
        .local_workers(2)
        .lease(Duration::from_secs(2))
        .build()
        .unwrap();
    let n = 400u64;
    let fs: Vec<_> = (0..n)
        .map(|i| c.submit(logged, (logs.clone(), i, 5)).unwrap())
        .collect();
    assert!(eventually(Duration::from_secs(30), || executions(&log)
        .len()
        >= 40));
    let old_pid = redis.pid();
    redis.restart();
    assert_ne!(redis.pid(), old_pid);
    // Nothing survived the restart.
    assert!(redis.keys("restart-empty").len() <= 1);
    for (i, f) in fs.into_iter().enumerate() {
        assert_eq!(
            f.result_timeout(Duration::from_secs(90)),
            Ok(2 * i as u64),
            "task {i}"
        );
    }
    let mut ran = executions(&log);
    ran.sort();
    ran.dedup();
    assert_eq!(ran, (0..n).collect::<Vec<_>>());
    // Still serving after the recovery.
    assert_eq!(
        c.submit(logged, (logs.clone(), 1000, 0))
            .unwrap()
            .result_timeout(Duration::from_secs(30)),
        Ok(2000)
    );
}

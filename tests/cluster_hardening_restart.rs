//! Redis restarting empty (no persistence) while work is in flight: the
//! client still holds every call it submitted, sends again those whose
//! records vanished, and every future resolves Ok (at-least-once execution,
//! exactly one result).

mod cluster_hardening_support;
mod cluster_support;

use cluster_support::{executions, logged, restart_mid_run, Redis};
use fanout::Executor;
use std::time::Duration;

#[test]
fn redis_restarting_empty_loses_no_call_while_the_client_lives() {
    let _watchdog = cluster_hardening_support::watchdog(
        "redis_restarting_empty_loses_no_call_while_the_client_lives",
        std::time::Duration::from_secs(180),
    );
    let mut redis = Redis::start_with(false);
    let n = 400u64;
    let (c, fs, _dir, log) = restart_mid_run(&mut redis, "restart-empty", n, 5, 40);
    let logs = log.to_string_lossy().into_owned();
    // Nothing survived the restart: the server loaded no keys (what is
    // there now the client has written again since).
    let mut con = redis.conn();
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    let loaded = info
        .lines()
        .find_map(|l| l.strip_prefix("rdb_last_load_keys_loaded:"))
        .map(|n| n.trim().to_string());
    assert_eq!(loaded.as_deref(), Some("0"), "{info}");
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

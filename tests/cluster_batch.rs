//! Cluster workers claim short tasks several at a time and send their
//! finishes together (src/cluster/batch.rs): results must still arrive
//! promptly, exactly once, and in full.

mod cluster_support;

use cluster_support::{one_worker, Redis};
use fanout::{Cluster, Executor, State};
use std::time::{Duration, Instant};

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn results_of_short_tasks_do_not_wait_behind_a_long_one() {
    let redis = Redis::start();
    let c = one_worker(&redis, "batch-long");
    // Teach the worker that tasks are short, so it claims in batches.
    let warm: Vec<_> = (0..300u64)
        .map(|i| c.submit(add, (i, 1)).unwrap())
        .collect();
    for (i, f) in warm.into_iter().enumerate() {
        assert_eq!(f.result_timeout(Duration::from_secs(30)), Ok(i as u64 + 1));
    }
    for round in 0..3u64 {
        // Short tasks, then a long one right behind them: a claim may take
        // them all, and the short ones' results must not wait for the long one.
        let shorts: Vec<_> = (0..8u64)
            .map(|i| c.submit(add, (round * 100 + i, 1)).unwrap())
            .collect();
        let long = c.submit(sleepy, (4_000,)).unwrap();
        let t = Instant::now();
        for (i, f) in shorts.into_iter().enumerate() {
            assert_eq!(
                f.result_timeout(Duration::from_secs(3)),
                Ok(round * 100 + i as u64 + 1),
                "round {round}: a short task's result waited behind the long task"
            );
        }
        assert!(
            t.elapsed() < Duration::from_millis(3_500),
            "round {round}: short results took {:?}",
            t.elapsed()
        );
        assert_ne!(
            long.state(),
            State::Finished,
            "the long task is still running"
        );
        assert_eq!(long.result_timeout(Duration::from_secs(30)), Ok(4_000));
    }
    c.shutdown(true, false);
}

#[test]
fn a_backlog_of_short_tasks_completes_exactly_once_on_two_workers() {
    let redis = Redis::start();
    let c = two_workers(&redis, "batch-backlog");
    let n = 5_000u64;
    let fs: Vec<_> = (0..n).map(|i| c.submit(add, (i, 1)).unwrap()).collect();
    let mut sum = 0;
    for f in fs {
        sum += f.result_timeout(Duration::from_secs(60)).unwrap();
    }
    assert_eq!(sum, n * (n + 1) / 2);
    c.shutdown(true, false);
    assert_only_an_empty_queue(&redis, "batch-backlog");
}

#[test]
fn one_call_at_a_time_leaves_an_empty_queue_stream() {
    let redis = Redis::start();
    let c = two_workers(&redis, "batch-trickle");
    // Each call finds an idle cluster: its worker sends the finish and
    // blocks for the next entry in one pipeline, leaving the tidy to it.
    for i in 0..300u64 {
        let f = c.submit(add, (i, 1)).unwrap();
        assert_eq!(f.result_timeout(Duration::from_secs(20)), Ok(i + 1));
    }
    c.shutdown(true, false);
    assert_only_an_empty_queue(&redis, "batch-trickle");
}

fn two_workers(redis: &Redis, ns: &str) -> Cluster {
    Cluster::builder(&redis.url())
        .namespace(ns)
        .local_workers(2)
        .secret("test-secret")
        .build()
        .expect("cluster")
}

/// After a shutdown: nothing left behind in `ns` but the (empty) queue
/// stream and its group, and no consumers (one per worker, one per slot's
/// blocking read) in the group.
fn assert_only_an_empty_queue(redis: &Redis, ns: &str) {
    let queue = format!("{{{ns}}}:q");
    assert_eq!(redis.keys(ns), std::slice::from_ref(&queue));
    let len: u64 = redis::cmd("XLEN")
        .arg(&queue)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(len, 0, "done entries left in the queue stream");
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&queue)
        .arg("fanout")
        .query(&mut redis.conn())
        .unwrap();
    assert!(consumers.is_empty(), "consumers left: {consumers:?}");
}

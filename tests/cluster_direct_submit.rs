//! Submissions a caller sends from its own thread (an idle client) and the
//! ones it queues for the dispatcher (a busy one) against a real
//! redis-server: all complete, each thread's calls run in submission order,
//! and a caller's send that fails (Redis down) is retried by the dispatcher.

mod cluster_support;

use cluster_support::{executions, logged, one_worker, Redis, TempDir};
use fanout::{Cluster, Executor, MapOptions};
use std::time::Duration;

fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Many threads submit one call at a time (some alone, sent from their own
/// thread; some while another caller or the dispatcher holds the submit
/// connection, queued) while others keep the dispatcher busy with maps.
/// One worker of concurrency 1 runs the default lane in stream order, so
/// each thread's calls must run in the order it submitted them.
#[test]
fn concurrent_submits_complete_in_order_per_thread() {
    let redis = Redis::start();
    let c = one_worker(&redis, "direct");
    let dir = TempDir::new("direct");
    let log = dir.path().join("executions");
    let logs = log.to_string_lossy().into_owned();
    const THREADS: u64 = 6;
    const PER: u64 = 40;
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..THREADS {
            let c = &c;
            let logs = logs.clone();
            handles.push(s.spawn(move || {
                let mut fs = Vec::new();
                for i in 0..PER {
                    let item = t * 1000 + i;
                    let f = c.submit(logged, (logs.clone(), item, 0)).unwrap();
                    if i % 8 == 7 {
                        // Let the client go idle now and then (direct sends).
                        assert_eq!(f.result_timeout(Duration::from_secs(60)), Ok(2 * item));
                    } else {
                        fs.push((item, f));
                    }
                }
                for (item, f) in fs {
                    assert_eq!(f.result_timeout(Duration::from_secs(60)), Ok(2 * item));
                }
            }));
        }
        for _ in 0..2 {
            let c = &c;
            handles.push(s.spawn(move || {
                for round in 0..5u64 {
                    let got: Vec<u64> = c
                        .map_with(|x: u64| x + 1, 0..50u64, MapOptions::default().chunksize(1))
                        .unwrap()
                        .map(|r| r.unwrap())
                        .collect();
                    assert_eq!(got, (1..51).collect::<Vec<_>>(), "round {round}");
                    let one = c.submit(add, (round, 1)).unwrap();
                    assert_eq!(one.result_timeout(Duration::from_secs(60)), Ok(round + 1));
                }
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
    });
    // Two threads submitting one call and waiting for it, over and over: the
    // client is often idle (a caller sends its own) while the other thread
    // submits (queued behind that send, then the dispatcher's).
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2u64)
            .map(|t| {
                let c = &c;
                s.spawn(move || {
                    for i in 0..100u64 {
                        let f = c.submit(add, (t * 1000, i)).unwrap();
                        assert_eq!(f.result_timeout(Duration::from_secs(60)), Ok(t * 1000 + i));
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    let ran = executions(&log);
    for t in 0..THREADS {
        let mine: Vec<u64> = ran.iter().copied().filter(|x| x / 1000 == t).collect();
        let want: Vec<u64> = (0..PER).map(|i| t * 1000 + i).collect();
        // A redelivery (a lease lost on a loaded machine) may run one twice.
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<u64> = mine.into_iter().filter(|x| seen.insert(*x)).collect();
        assert_eq!(firsts, want, "thread {t}'s calls ran out of order");
    }
    c.shutdown(true, false);
}

/// A caller's own send that fails (the server is down) hands its tasks to
/// the dispatcher, which retries until the server is back: the submit
/// returns at once and the call completes.
#[test]
fn a_failed_direct_send_is_retried_by_the_dispatcher() {
    let mut redis = Redis::start();
    let c = Cluster::builder(&redis.url())
        .namespace("direct_down")
        .local_workers(1)
        .lease(Duration::from_secs(2))
        .reconnect_timeout(Duration::from_secs(60))
        .secret("test-secret")
        .build()
        .expect("cluster");
    assert_eq!(
        c.submit(add, (1, 1))
            .unwrap()
            .result_timeout(Duration::from_secs(30)),
        Ok(2)
    );
    redis.stop();
    let f = c.submit(add, (2, 1)).unwrap();
    let g = c.submit(add, (3, 1)).unwrap();
    redis.restart();
    assert_eq!(f.result_timeout(Duration::from_secs(60)), Ok(3));
    assert_eq!(g.result_timeout(Duration::from_secs(60)), Ok(4));
    // And the client sends its own again once the dispatcher got through.
    for i in 0..20u64 {
        assert_eq!(
            c.submit(add, (i, 1))
                .unwrap()
                .result_timeout(Duration::from_secs(30)),
            Ok(i + 1)
        );
    }
    c.shutdown(true, false);
}

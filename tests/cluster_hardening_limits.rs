//! Limits on the Cluster: an argument or result larger than Redis accepts in
//! one value (`proto-max-bulk-len`, lowered here to 1 MiB to keep memory
//! small) fails only its own call, promptly, naming the size; and a result
//! fetch that keeps failing resolves its futures to `Backend` after the
//! reconnect timeout instead of spinning.

mod cluster_hardening_support;
mod cluster_support;

use cluster_support::Redis;
use fanout::{Cluster, Error, Executor, MapOptions};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const LIMIT: usize = 1 << 20;

fn len_of(v: Vec<u8>) -> usize {
    v.len()
}

fn make(n: usize) -> Vec<u8> {
    vec![7u8; n]
}

fn pid() -> u32 {
    std::process::id()
}

fn limited_redis() -> Redis {
    let redis = Redis::start();
    let mut con = redis.conn();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("proto-max-bulk-len")
        .arg(LIMIT)
        .query::<()>(&mut con)
        .unwrap();
    redis
}

fn too_big(e: &Error) -> bool {
    matches!(e, Error::Codec { message, .. }
        if message.contains("bytes") && message.contains("proto-max-bulk-len"))
}

#[test]
fn an_oversized_argument_fails_only_its_own_call() {
    let _watchdog = cluster_hardening_support::watchdog(
        "an_oversized_argument_fails_only_its_own_call",
        std::time::Duration::from_secs(180),
    );
    let redis = limited_redis();
    let c = Cluster::builder(&redis.url())
        .namespace("big-args")
        .local_workers(1)
        .build()
        .unwrap();
    let t = Instant::now();
    let items = vec![vec![1u8; 10], vec![2u8; 2 * LIMIT], vec![3u8; 20]];
    let out: Vec<_> = c.map(len_of, items).unwrap().collect();
    assert_eq!(out[0], Ok(10));
    assert!(too_big(out[1].as_ref().unwrap_err()), "{:?}", out[1]);
    assert_eq!(out[2], Ok(20));
    // Many small calls sent together with a big one all get through.
    let mut fs = Vec::new();
    for i in 0..50usize {
        let n = if i == 25 { 3 * LIMIT } else { i };
        fs.push((n, c.submit(len_of, (vec![0u8; n],)).unwrap()));
    }
    for (n, f) in fs {
        match f.result_timeout(WAIT) {
            Ok(got) => assert_eq!(got, n),
            Err(e) => assert!(n > LIMIT && too_big(&e), "{n}: {e:?}"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
}

#[test]
fn an_oversized_result_fails_only_its_own_item_and_the_slot_survives() {
    let _watchdog = cluster_hardening_support::watchdog(
        "an_oversized_result_fails_only_its_own_item_and_the_slot_survives",
        std::time::Duration::from_secs(180),
    );
    let redis = limited_redis();
    let c = Cluster::builder(&redis.url())
        .namespace("big-results")
        .local_workers(1)
        .build()
        .unwrap();
    let worker = c.submit(pid, ()).unwrap().result_timeout(WAIT).unwrap();
    let t = Instant::now();
    match c.submit(make, (2 * LIMIT,)).unwrap().result_timeout(WAIT) {
        Err(e) => assert!(too_big(&e), "{e:?}"),
        Ok(v) => panic!("a {} byte result came back", v.len()),
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The same worker's only slot keeps serving.
    assert_eq!(c.submit(pid, ()).unwrap().result_timeout(WAIT), Ok(worker));
    assert_eq!(
        c.submit(make, (5,)).unwrap().result_timeout(WAIT),
        Ok(vec![7u8; 5])
    );
    // In one chunk of a map, only the oversized item fails.
    let out: Vec<_> = c
        .map_with(make, [3, 2 * LIMIT, 4], MapOptions::default().chunksize(3))
        .unwrap()
        .collect();
    assert_eq!(out[0], Ok(vec![7u8; 3]));
    assert!(too_big(out[1].as_ref().unwrap_err()), "{:?}", out[1]);
    assert_eq!(out[2], Ok(vec![7u8; 4]));
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn acl(redis: &Redis, rule: &str) {
    let mut con = redis.conn();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg(rule)
        .query::<()>(&mut con)
        .unwrap();
}

#[test]
fn a_fetch_that_keeps_failing_resolves_to_backend_after_the_reconnect_timeout() {
    let _watchdog = cluster_hardening_support::watchdog(
        "a_fetch_that_keeps_failing_resolves_to_backend_after_the_reconnect_timeout",
        std::time::Duration::from_secs(180),
    );
    let redis = Redis::start();
    let c = Cluster::builder(&redis.url())
        .namespace("fetch-fails")
        .local_workers(1)
        .reconnect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert_eq!(c.submit(add, (1, 1)).unwrap().result_timeout(WAIT), Ok(2));
    // The client may no longer read results.
    acl(&redis, "-mget");
    let t = Instant::now();
    // Results of 8 KiB: too large to ride in their events (up to 4 KiB),
    // small enough to come back with the batch's MGET (not left in Redis).
    let fs: Vec<_> = (0..5)
        .map(|i| c.submit(make, (8 << 10 | i as usize,)).unwrap())
        .collect();
    for f in fs {
        match f.result_timeout(WAIT) {
            Err(Error::Backend { .. }) => {}
            other => panic!("expected Backend, got {other:?}"),
        }
    }
    let took = t.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    // Allowed again: the client is not stuck on the old events.
    acl(&redis, "+mget");
    assert_eq!(
        c.submit(add, (20, 22)).unwrap().result_timeout(WAIT),
        Ok(42)
    );
}

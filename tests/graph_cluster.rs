//! Task graphs on the cluster, against a real redis-server (the checks live
//! in `graph_support`).

mod cluster_support;
mod graph_support;

use cluster_support::Redis;
use fanout::Cluster;
use std::time::Duration;

fn setup() -> (Redis, Cluster) {
    let redis = Redis::start();
    let cluster = Cluster::builder(&redis.url())
        .namespace("graph")
        .local_workers(2)
        .lease(Duration::from_secs(5))
        .secret("graph-secret")
        .build()
        .expect("cluster");
    (redis, cluster)
}

graph_tests!(setup);

const MIB: usize = 1 << 20;

fn produce(i: u64) -> Vec<u8> {
    vec![i as u8; 4 * MIB]
}

fn consume(v: Vec<u8>) -> u64 {
    v.len() as u64 + u64::from(v[0])
}

fn net_output(redis: &Redis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut redis.conn())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_net_output_bytes in INFO stats")
}

fn result_keys(redis: &Redis) -> Vec<String> {
    redis
        .keys("graph")
        .into_iter()
        .filter(|k| k.starts_with("{graph}:r:"))
        .collect()
}

/// Intermediates skip the client: 5 producers of 4 MiB feed 5 consumers;
/// Redis sends out about the 20 MiB the consumers' workers read, not twice
/// that, and no result key is left once the graph's futures are gone.
#[test]
fn intermediates_skip_the_client() {
    use fanout::Executor;
    let (redis, c) = setup();
    // Workers up and serving before measuring.
    assert_eq!(
        c.submit(graph_support::inc, (1,))
            .unwrap()
            .result_timeout(graph_support::T),
        Ok(2)
    );
    let before = net_output(&redis);
    let producers: Vec<_> = (0..5).map(|i| c.submit(produce, (i,)).unwrap()).collect();
    let consumers: Vec<_> = producers
        .iter()
        .map(|p| c.call(consume).submit((p.arg(),)).unwrap())
        .collect();
    let total: u64 = fanout::gather(consumers).unwrap().into_iter().sum();
    assert_eq!(total, 5 * 4 * MIB as u64 + 10);
    for p in &producers {
        assert!(p.done() && p.exception(Some(graph_support::T)).is_none());
    }
    let sent = net_output(&redis) - before;
    eprintln!("Redis sent {sent} bytes for the graph");
    assert!(
        sent >= 20 * MIB as u64,
        "the workers read the 20 MiB of inputs: {sent}"
    );
    assert!(
        sent < 26 * MIB as u64,
        "the producers' values must not also go to the client: {sent} bytes sent"
    );
    drop(producers);
    assert!(
        cluster_support::eventually(Duration::from_secs(10), || result_keys(&redis).is_empty()),
        "result keys left: {:?}",
        result_keys(&redis)
    );
}

/// A value left in Redis is fetched when asked: result, a done-callback, `.await`.
#[test]
fn values_are_fetched_when_asked() {
    use fanout::Executor;
    let (redis, c) = setup();
    let a = c.submit(produce, (7,)).unwrap();
    let b = c.submit(produce, (8,)).unwrap();
    let d = c.submit(produce, (9,)).unwrap();
    assert!(a.wait(Some(graph_support::T)) && b.wait(Some(graph_support::T)));
    assert!(d.wait(Some(graph_support::T)));
    assert_eq!(
        result_keys(&redis).len(),
        3,
        "the values stay in Redis until asked"
    );
    assert_eq!(a.exception(None), None);
    let (tx, rx) = std::sync::mpsc::channel();
    b.add_done_callback(move |r| tx.send(r.as_ref().map(|v| (v.len(), v[0])).ok()).unwrap());
    assert_eq!(
        rx.recv_timeout(graph_support::T).unwrap(),
        Some((4 * MIB, 8))
    );
    let v = a.result().unwrap();
    assert_eq!((v.len(), v[0]), (4 * MIB, 7));
    let v = futures::executor::block_on(d).unwrap();
    assert_eq!((v.len(), v[0]), (4 * MIB, 9));
    drop(b);
    assert!(cluster_support::eventually(Duration::from_secs(10), || {
        result_keys(&redis).is_empty()
    }));
    // `put` writes its value to Redis once; calls read it there.
    let data = c.put(vec![5u8; MIB]).unwrap();
    assert_eq!(result_keys(&redis).len(), 1);
    let fs: Vec<_> = (0..4)
        .map(|_| c.call(consume).submit((data.arg(),)).unwrap())
        .collect();
    assert_eq!(fanout::gather(fs), Ok(vec![MIB as u64 + 5; 4]));
    drop(data);
    assert!(cluster_support::eventually(Duration::from_secs(10), || {
        result_keys(&redis).is_empty()
    }));
}

fn grow(v: Vec<u8>, add: u8) -> Vec<u8> {
    let mut v = v;
    v.push(add);
    v
}

fn both(a: Vec<u8>, tag: u64, b: Vec<u8>) -> (usize, u64, u8) {
    (
        a.len() + b.len(),
        tag,
        a[a.len() - 1].wrapping_add(b[b.len() - 1]),
    )
}

/// Large values along a chain and a diamond: each link's worker reads its
/// input from Redis, literal arguments mix with them, and nothing is left.
#[test]
fn large_values_along_a_chain_and_a_diamond() {
    use fanout::Executor;
    let (redis, c) = setup();
    let root = c.submit(produce, (3,)).unwrap();
    let mut link = c.call(grow).submit((root.arg(), 1u8)).unwrap();
    for i in 2..6u8 {
        link = c.call(grow).submit((link.arg(), i)).unwrap();
    }
    let left = c.call(grow).submit((root.arg(), 10u8)).unwrap();
    let bottom = c
        .call(both)
        .submit((left.arg(), 77u64, link.arg()))
        .unwrap();
    assert_eq!(
        bottom.result_timeout(graph_support::T),
        Ok((2 * 4 * MIB + 1 + 5, 77, 15))
    );
    let v = link.result_timeout(graph_support::T).unwrap();
    assert_eq!(
        (v.len(), &v[4 * MIB..]),
        (4 * MIB + 5, &[1u8, 2, 3, 4, 5][..])
    );
    drop((root, left));
    assert!(
        cluster_support::eventually(Duration::from_secs(10), || result_keys(&redis).is_empty()),
        "result keys left: {:?}",
        result_keys(&redis)
    );
}

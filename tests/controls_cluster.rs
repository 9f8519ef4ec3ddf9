//! Per-call controls and tasks that submit tasks, on the cluster (a real
//! redis-server per test).

mod cluster_support;

use cluster_support::{eventually, Redis};
use fanout::{gather, Cluster, Error, Executor, State};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn cluster(redis: &Redis, ns: &str, workers: usize) -> Cluster {
    Cluster::builder(&redis.url())
        .namespace(ns)
        .local_workers(workers)
        .lease(Duration::from_secs(2))
        .secret("test-secret")
        .build()
        .expect("cluster")
}

fn child(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    x * 2
}

fn parent(x: u64) -> u64 {
    let c = Cluster::current().expect("a cluster task sees its cluster");
    let kids: Vec<_> = (0..2)
        .map(|i| c.submit(child, (x * 10 + i,)).unwrap())
        .collect();
    gather(kids).unwrap().into_iter().sum()
}

#[test]
fn four_parents_waiting_on_two_children_each_finish_on_two_workers() {
    let redis = Redis::start();
    let c = cluster(&redis, "nested", 2);
    let fs: Vec<_> = (0..4u64).map(|x| c.submit(parent, (x,)).unwrap()).collect();
    let got: Vec<u64> = fs
        .into_iter()
        .map(|f| f.result_timeout(T).unwrap())
        .collect();
    let want: Vec<u64> = (0..4u64).map(|x| (x * 10) * 2 + (x * 10 + 1) * 2).collect();
    assert_eq!(got, want);
}

#[test]
fn current_is_none_outside_a_worker_and_handles_are_clones() {
    assert!(Cluster::current().is_none());
    let redis = Redis::start();
    let c = cluster(&redis, "handles", 1);
    let other = c.clone();
    drop(c);
    assert_eq!(other.submit(child, (4,)).unwrap().result_timeout(T), Ok(8));
    let third = other.clone();
    third.shutdown(true, false);
    assert!(matches!(other.submit(child, (1,)), Err(Error::Shutdown)));
}

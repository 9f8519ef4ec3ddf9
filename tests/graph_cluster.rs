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

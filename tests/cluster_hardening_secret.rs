//! The cluster secret: never empty, and (by default) from the OS random source.

mod cluster_support;

use cluster_support::Redis;
use fanout::{Cluster, Error};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A worker started with an empty `FANOUT_CLUSTER_SECRET` refuses to start
/// and says why (an HMAC under an empty key is public).
#[test]
fn a_worker_with_an_empty_secret_refuses_to_start() {
    let redis = Redis::start();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("FANOUT_CLUSTER_URL", redis.url())
        .env("FANOUT_CLUSTER_NAMESPACE", "empty-secret")
        .env("FANOUT_CLUSTER_SECRET", "")
        .env("FANOUT_CLUSTER_CONCURRENCY", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a worker with an empty secret kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{status:?}; stderr: {stderr}");
    assert!(
        stderr.contains("FANOUT_CLUSTER_SECRET is empty"),
        "stderr: {stderr}"
    );
}

#[test]
fn a_builder_given_an_empty_secret_is_refused() {
    let redis = Redis::start();
    match Cluster::builder(&redis.url()).secret("").build() {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

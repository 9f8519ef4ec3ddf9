//! Per-call controls and tasks that submit tasks, on the cluster (a real
//! redis-server per test).

mod process_util;

mod cluster_support;

use cluster_support::{eventually, Redis};
use fanout::{gather, Cluster, Error, Executor, State};
use std::time::{Duration, Instant};

fn never_returns() -> u32 {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn pid() -> u32 {
    std::process::id()
}

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
    let _watchdog = process_util::watchdog(
        "four_parents_waiting_on_two_children_each_finish_on_two_workers",
        Duration::from_secs(180),
    );
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
    let _watchdog = process_util::watchdog(
        "current_is_none_outside_a_worker_and_handles_are_clones",
        Duration::from_secs(180),
    );
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

#[test]
fn a_call_past_its_timeout_stops_its_worker_which_is_replaced() {
    let _watchdog = process_util::watchdog(
        "a_call_past_its_timeout_stops_its_worker_which_is_replaced",
        Duration::from_secs(180),
    );
    let redis = Redis::start();
    let c = cluster(&redis, "timeout", 1);
    let before = c.worker_pids();
    assert_eq!(before.len(), 1);
    let start = Instant::now();
    let f = c
        .call(never_returns)
        .timeout(Duration::from_millis(300))
        .submit(())
        .unwrap();
    match f.result_timeout(T) {
        Err(Error::Timeout { what }) => assert!(what.contains("300ms"), "names the limit: {what}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // A replacement, with a new pid, serves the next call.
    let next = c.submit(pid, ()).unwrap().result_timeout(T).unwrap();
    assert!(
        !before.contains(&next),
        "a new worker pid ({next} vs {before:?})"
    );
    assert!(eventually(T, || c.worker_pids().len() == 1
        && c.worker_pids() != before));
    // A call within its limit is unaffected.
    let ok = c
        .call(sleepy)
        .timeout(Duration::from_secs(10))
        .submit((20u64,))
        .unwrap();
    assert_eq!(ok.result_timeout(T), Ok(20));
}

#[test]
fn a_high_priority_call_overtakes_most_queued_ones_on_one_worker() {
    let _watchdog = process_util::watchdog(
        "a_high_priority_call_overtakes_most_queued_ones_on_one_worker",
        Duration::from_secs(180),
    );
    let redis = Redis::start();
    let dir = cluster_support::TempDir::new("cluster-prio");
    let path = dir.path().join("order").display().to_string();
    let c = cluster(&redis, "prio", 1);
    let busy = c.submit(sleepy, (500,)).unwrap();
    assert!(eventually(T, || busy.state() == State::Running));
    process_util::check_overtaking(&c, busy, &path, 2, "cluster", None);
}

fn gpu_task() -> u32 {
    std::process::id()
}

#[test]
fn a_call_needing_a_gpu_waits_is_cancellable_and_runs_where_one_is() {
    let _watchdog = process_util::watchdog(
        "a_call_needing_a_gpu_waits_is_cancellable_and_runs_where_one_is",
        Duration::from_secs(180),
    );
    let redis = Redis::start();
    let plain = cluster(&redis, "gpu", 1);
    // Nobody offers a gpu: the call stays pending, and can be cancelled.
    let waiting = plain
        .call(gpu_task)
        .resources(&[("gpu", 1)])
        .submit(())
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(waiting.state(), State::Pending);
    assert!(waiting.cancel());
    assert_eq!(waiting.result_timeout(T), Err(Error::Cancelled));
    // The plain worker still serves plain calls.
    assert!(plain.submit(pid, ()).unwrap().result_timeout(T).is_ok());
    // A second call waits until a worker with a gpu joins, then runs there.
    let f = plain
        .call(gpu_task)
        .resources(&[("gpu", 1)])
        .submit(())
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(f.state(), State::Pending);
    let gpu = Cluster::builder(&redis.url())
        .namespace("gpu")
        .local_workers(1)
        .local_worker_resources(&[("gpu", 1)])
        .lease(Duration::from_secs(2))
        .secret("test-secret")
        .build()
        .unwrap();
    let ran_on = f.result_timeout(T).unwrap();
    assert_eq!(
        gpu.worker_pids(),
        vec![ran_on],
        "ran on the worker with the gpu"
    );
    assert!(!plain.worker_pids().contains(&ran_on));
    // More than the worker has never runs there... a call needing 2 waits.
    let too_big = plain
        .call(gpu_task)
        .resources(&[("gpu", 2)])
        .submit(())
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(too_big.state(), State::Pending);
    assert!(too_big.cancel());
}

#[test]
fn bad_resource_names_are_refused() {
    let _watchdog =
        process_util::watchdog("bad_resource_names_are_refused", Duration::from_secs(180));
    let redis = Redis::start();
    let c = cluster(&redis, "badres", 0);
    assert!(matches!(
        c.call(gpu_task).resources(&[("g{pu}", 1)]).submit(()),
        Err(Error::InvalidArgument { .. })
    ));
}

/// Records when it started and ended (µs since the epoch) in `path`.
fn hold_for(path: String, ms: u64) -> (u128, u128) {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    };
    let start = now();
    std::thread::sleep(Duration::from_millis(ms));
    let end = now();
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    writeln!(f, "{start} {end}").unwrap();
    (start, end)
}

/// A worker started by hand, the way a remote host starts one; SIGTERM and
/// reaped (by pid) on drop.
struct RemoteWorker(std::process::Child);

impl RemoteWorker {
    fn start(redis: &Redis, ns: &str, concurrency: usize, resources: &str) -> RemoteWorker {
        let child = std::process::Command::new("/proc/self/exe")
            .env("FANOUT_CLUSTER_URL", redis.url())
            .env("FANOUT_CLUSTER_NAMESPACE", ns)
            .env("FANOUT_CLUSTER_SECRET", "test-secret")
            .env("FANOUT_CLUSTER_CONCURRENCY", concurrency.to_string())
            .env("FANOUT_CLUSTER_LEASE_MS", "2000")
            .env("FANOUT_CLUSTER_RESOURCES", resources)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start a worker");
        RemoteWorker(child)
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        // SAFETY: signalling the worker process this test started.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_worker_runs_no_more_gpu_calls_at_once_than_it_has_gpus() {
    let _watchdog = process_util::watchdog(
        "a_worker_runs_no_more_gpu_calls_at_once_than_it_has_gpus",
        Duration::from_secs(180),
    );
    let redis = Redis::start();
    let dir = cluster_support::TempDir::new("cluster-gpu-acct");
    let gpu_log = dir.path().join("gpu").display().to_string();
    let plain_log = dir.path().join("plain").display().to_string();
    let c = cluster(&redis, "acct", 0);
    // Two slots, one gpu.
    let _worker = RemoteWorker::start(&redis, "acct", 2, "gpu=1");
    let gpu: Vec<_> = (0..2)
        .map(|_| {
            c.call(hold_for)
                .resources(&[("gpu", 1)])
                .submit((gpu_log.clone(), 400u64))
                .unwrap()
        })
        .collect();
    let plain = c.submit(hold_for, (plain_log.clone(), 400u64)).unwrap();
    let spans: Vec<(u128, u128)> = gpu
        .into_iter()
        .map(|f| f.result_timeout(T).unwrap())
        .collect();
    let (a, b) = (spans[0], spans[1]);
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "the gpu calls overlapped: {a:?} {b:?}"
    );
    // The other slot was free for plain calls meanwhile.
    let p = plain.result_timeout(T).unwrap();
    let overlaps = |s: (u128, u128)| p.0 < s.1 && s.0 < p.1;
    assert!(
        overlaps(a) || overlaps(b),
        "the plain call ran beside a gpu call"
    );
}

//! Cluster backend when things break: a worker SIGKILLed mid-task, a task
//! that keeps killing its workers, Redis restarted mid-run, and a run across
//! two network namespaces (client on one side, Redis and workers on the other).

mod cluster_support;

use cluster_support::{eventually, executions, logged, restart_mid_run, Redis, TempDir};
use fanout::{Cluster, Error, Executor};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: signalling a worker process this test's cluster started.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

#[test]
fn sigkilled_worker_every_task_still_resolves_exactly_once() {
    let redis = Redis::start();
    let dir = TempDir::new("sigkill");
    let log = dir.path().join("executions");
    let c = Cluster::builder(&redis.url())
        .namespace("kill")
        .local_workers(2)
        .lease(Duration::from_secs(1))
        .max_deliveries(5)
        .build()
        .unwrap();
    let logs = log.to_string_lossy().into_owned();
    let n = 30u64;
    let fs: Vec<_> = (0..n)
        .map(|i| c.submit(logged, (logs.clone(), i, 150)).unwrap())
        .collect();
    assert!(eventually(Duration::from_secs(20), || executions(&log)
        .len()
        >= 4));
    let before = c.worker_pids();
    let victim = before[0];
    kill(victim, libc::SIGKILL);
    let results: Vec<u64> = fs
        .into_iter()
        .map(|f| f.result_timeout(Duration::from_secs(60)).unwrap())
        .collect();
    assert_eq!(results, (0..n).map(|i| 2 * i).collect::<Vec<_>>());
    let ran = executions(&log);
    let mut distinct = ran.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len() as u64, n, "every task ran");
    // The task the victim held ran again elsewhere: more executions than
    // results, yet one result per future.
    assert!(
        ran.len() as u64 > n,
        "{} executions for {n} tasks",
        ran.len()
    );
    // The supervisor replaced the dead worker.
    assert!(eventually(Duration::from_secs(10), || {
        let now = c.worker_pids();
        now.len() == 2 && !now.contains(&victim)
    }));
}

fn die() -> u32 {
    kill(std::process::id(), libc::SIGKILL);
    0
}

#[test]
fn a_task_that_keeps_killing_workers_resolves_to_worker_lost() {
    let redis = Redis::start();
    let c = Cluster::builder(&redis.url())
        .namespace("lost")
        .local_workers(1)
        .lease(Duration::from_millis(500))
        .max_deliveries(2)
        .build()
        .unwrap();
    let t = Instant::now();
    match c
        .submit(die, ())
        .unwrap()
        .result_timeout(Duration::from_secs(30))
    {
        Err(Error::WorkerLost { worker, status }) => {
            assert!(worker.starts_with("cluster worker "), "{worker}");
            assert!(status.contains("SIGKILL"), "{status}");
            assert!(status.contains("2 times"), "{status}");
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // The cluster keeps serving.
    assert_eq!(
        c.submit(logged, (String::from("/dev/null"), 21, 0))
            .unwrap()
            .result(),
        Ok(42)
    );
}

#[test]
fn redis_restart_mid_run_loses_no_task() {
    let mut redis = Redis::start_with(true);
    let n = 200u64;
    let (c, fs, _dir, log) = restart_mid_run(&mut redis, "restart", n, 15, 20);
    let logs = log.to_string_lossy().into_owned();
    // More work submitted while everyone reconnects.
    let late: Vec<_> = (n..n + 20)
        .map(|i| c.submit(logged, (logs.clone(), i, 1)).unwrap())
        .collect();
    for (i, f) in fs.into_iter().chain(late).enumerate() {
        assert_eq!(
            f.result_timeout(Duration::from_secs(60)),
            Ok(2 * i as u64),
            "task {i}"
        );
    }
    let mut ran = executions(&log);
    ran.sort();
    ran.dedup();
    assert_eq!(ran.len() as u64, n + 20);
    c.shutdown(true, false);
    assert_eq!(redis.keys("restart"), ["{restart}:q"]);
}

/// Like `logged`, but returns the pid of the worker that ran it.
fn logged_pid(log: String, i: u64, ms: u64) -> u32 {
    logged(log, i, ms);
    std::process::id()
}

#[test]
fn sigterm_drains_a_worker() {
    let redis = Redis::start();
    let dir = TempDir::new("drain");
    let log = dir.path().join("executions");
    let logs = log.to_string_lossy().into_owned();
    // A long lease: had the running task been dropped, it could not come back in time.
    let c = Cluster::builder(&redis.url())
        .namespace("drain")
        .local_workers(1)
        .lease(Duration::from_secs(30))
        .build()
        .unwrap();
    let running = c.submit(logged_pid, (logs.clone(), 0, 700)).unwrap();
    assert!(eventually(Duration::from_secs(20), || running.running()));
    let victim = c.worker_pids()[0];
    let queued: Vec<_> = (1..4)
        .map(|i| c.submit(logged_pid, (logs.clone(), i, 1)).unwrap())
        .collect();
    let t = Instant::now();
    kill(victim, libc::SIGTERM);
    // The running task finishes on the draining worker...
    assert_eq!(running.result_timeout(Duration::from_secs(10)), Ok(victim));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // ...which reads nothing new: the queued ones run on its replacement.
    for q in queued {
        let pid = q.result_timeout(Duration::from_secs(20)).unwrap();
        assert_ne!(pid, victim, "a draining worker took a new task");
    }
    assert_eq!(executions(&log).iter().filter(|&&i| i == 0).count(), 1);
}

#[test]
fn redis_gone_for_good_fails_futures_with_backend() {
    let mut redis = Redis::start();
    let c = Cluster::builder(&redis.url())
        .namespace("gone")
        .local_workers(1)
        .lease(Duration::from_secs(1))
        .reconnect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let running = c
        .submit(logged, (String::from("/dev/null"), 1, 400))
        .unwrap();
    assert!(eventually(Duration::from_secs(20), || running.running()));
    redis.stop();
    let t = Instant::now();
    let later = c.submit(logged, (String::from("/dev/null"), 2, 0)).unwrap();
    for f in [running, later] {
        match f.result_timeout(Duration::from_secs(15)) {
            Err(Error::Backend { message }) => assert!(message.contains("Redis"), "{message}"),
            other => panic!("expected Backend, got {other:?}"),
        }
    }
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let t = Instant::now();
    drop(c);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        t.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Two network namespaces.

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace joined to ours by a veth pair; removed on drop.
struct NetNs {
    name: String,
    veth: String,
    host_addr: String,
    ns_addr: String,
}

impl NetNs {
    fn create() -> Result<NetNs, String> {
        let id = std::process::id();
        let name = format!("fanout{id}");
        let veth = format!("fo{id}a");
        let peer = format!("fo{id}b");
        let subnet = 16 + id % 200;
        let ns = NetNs {
            host_addr: format!("10.213.{subnet}.1"),
            ns_addr: format!("10.213.{subnet}.2"),
            name,
            veth,
        };
        ip(&["netns", "add", &ns.name])?;
        // From here on, Drop cleans up whatever was made.
        ip(&[
            "link", "add", &ns.veth, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_addr),
            "dev",
            &ns.veth,
        ])?;
        ip(&["link", "set", &ns.veth, "up"])?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}/30", ns.ns_addr),
            "dev",
            &peer,
        ])?;
        ip(&["-n", &ns.name, "link", "set", &peer, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn exec(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.veth]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// The network namespace the calling process lives in.
fn netns_id() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            kill(c.id(), libc::SIGTERM);
        }
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn client_and_workers_in_different_network_namespaces() {
    cluster_support::redis_server_binary();
    let ns = match NetNs::create() {
        Ok(ns) => ns,
        Err(reason) => {
            // Only where network namespaces cannot be made (not root, no CAP_NET_ADMIN).
            println!("SKIPPED client_and_workers_in_different_network_namespaces: {reason}");
            return;
        }
    };
    let redis = Redis::start_full(&ns.ns_addr, false, ns.exec());
    let url = redis.url();
    assert!(url.contains(&ns.ns_addr));
    // Workers: this test binary, re-run inside the namespace as a "remote host".
    let exe = std::env::current_exe().unwrap();
    let workers = Workers(
        (0..2)
            .map(|_| {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns.name])
                    .arg(&exe)
                    .env("FANOUT_CLUSTER_URL", &url)
                    .env("FANOUT_CLUSTER_NAMESPACE", "netns")
                    .env("FANOUT_CLUSTER_SECRET", "between-machines")
                    .env("FANOUT_CLUSTER_CONCURRENCY", "2")
                    .env("FANOUT_CLUSTER_LEASE_MS", "2000")
                    .stdin(Stdio::null())
                    .stdout(Stdio::inherit())
                    .stderr(Stdio::inherit());
                cmd.spawn().unwrap()
            })
            .collect(),
    );
    let client = Cluster::builder(&url)
        .namespace("netns")
        .secret("between-machines")
        .build()
        .unwrap();
    let here = netns_id();
    let fs: Vec<_> = (0..20)
        .map(|_| client.submit(netns_id, ()).unwrap())
        .collect();
    for f in fs {
        let there = f.result_timeout(Duration::from_secs(30)).unwrap();
        assert_ne!(
            there, here,
            "the task ran in the client's network namespace"
        );
        assert!(there.starts_with("net:["), "{there}");
    }
    let sum: u64 = client
        .map(|x: u64| x + 1, 0..100u64)
        .unwrap()
        .map(Result::unwrap)
        .sum();
    assert_eq!(sum, 5050);
    client.shutdown(true, false);
    drop(workers);
    drop(redis);
    drop(ns);
}

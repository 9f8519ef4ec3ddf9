//! A client that crashes leaves nothing behind in Redis for long: its event
//! stream, liveness and finished-task bitmap expire after its TTL, and a
//! worker that reaches its queued tasks drops them (records included)
//! instead of running them for nobody.
//!
//! The client runs in a child process (this test binary again, selected by
//! an environment variable) so that it can be killed with SIGKILL.

mod cluster_hardening_support;
mod cluster_support;

use cluster_support::{eventually, Redis, TempDir};
use fanout::{Cluster, Executor};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_URL: &str = "FANOUT_TEST_CHILD_CLIENT_URL";
const CHILD_LOG: &str = "FANOUT_TEST_CHILD_CLIENT_LOG";
const NS: &str = "crashed-client";
const SECRET: &str = "lifetime test secret";

/// Appends a line to `log` and sleeps: a slow task whose runs can be counted.
fn slow(log: String, ms: u64) -> u64 {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)
    {
        let _ = f.write_all(b"ran\n");
    }
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn runs(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The child: submits slow work, says so, and waits to be killed.
fn child_client(url: &str, log: &str) {
    let c = Cluster::builder(url)
        .namespace(NS)
        .secret(SECRET)
        .client_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let fs: Vec<_> = (0..40)
        .map(|_| c.submit(slow, (log.to_string(), 100)).unwrap())
        .collect();
    println!("SUBMITTED");
    std::thread::sleep(Duration::from_secs(60));
    drop(fs);
}

fn stop(child: &mut Child, signal: libc::c_int) {
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.wait();
}

#[test]
fn a_killed_clients_keys_and_queued_work_are_gone_after_its_ttl() {
    let _watchdog = cluster_hardening_support::watchdog(
        "a_killed_clients_keys_and_queued_work_are_gone_after_its_ttl",
        std::time::Duration::from_secs(180),
    );
    if let (Ok(url), Ok(log)) = (std::env::var(CHILD_URL), std::env::var(CHILD_LOG)) {
        child_client(&url, &log);
        return;
    }
    let redis = Redis::start();
    let dir = TempDir::new("lifetime");
    let log = dir.path().join("runs");
    let exe = std::env::current_exe().unwrap();
    // A worker that outlives the client (started like a remote worker).
    let mut worker = Command::new(&exe)
        .env("FANOUT_CLUSTER_URL", redis.url())
        .env("FANOUT_CLUSTER_NAMESPACE", NS)
        .env("FANOUT_CLUSTER_SECRET", SECRET)
        .env("FANOUT_CLUSTER_CONCURRENCY", "1")
        .env("FANOUT_CLUSTER_LEASE_MS", "1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut client = Command::new(&exe)
        .args([
            "--exact",
            "a_killed_clients_keys_and_queued_work_are_gone_after_its_ttl",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL, redis.url())
        .env(CHILD_LOG, &log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = client.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("SUBMITTED") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        stop(&mut client, libc::SIGKILL);
        stop(&mut worker, libc::SIGTERM);
        panic!("the child client never submitted");
    }
    assert!(eventually(Duration::from_secs(20), || runs(&log) >= 1));
    stop(&mut client, libc::SIGKILL);
    let ran_when_killed = runs(&log);
    // Its keys expire, and the worker drops the rest of its queue.
    let clean = eventually(Duration::from_secs(30), || {
        redis.keys(NS) == [format!("{{{NS}}}:q")]
    });
    let keys = redis.keys(NS);
    let mut con = redis.conn();
    let queued: i64 = redis::cmd("XLEN")
        .arg(format!("{{{NS}}}:q"))
        .query(&mut con)
        .unwrap();
    stop(&mut worker, libc::SIGTERM);
    assert!(clean, "left behind: {keys:?}");
    assert_eq!(queued, 0, "the dead client's entries are still queued");
    // At most the task running at the kill (and one started in the instant
    // before the worker could tell) ran after it; the rest were dropped.
    let ran = runs(&log);
    assert!(ran < 40, "the dead client's whole queue ran ({ran})");
    assert!(ran <= ran_when_killed + 12, "{ran} vs {ran_when_killed}");
}

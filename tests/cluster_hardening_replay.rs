//! A signed task record that already ran is never run again when written
//! back into Redis: after it finished (its client still alive), copied into
//! another namespace that shares the secret, or after its client is gone.
//! Marker files count the executions.

mod cluster_support;

use cluster_support::{Redis, TempDir};
use fanout::{Cluster, Executor};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Appends a line to `path`, so the test can count executions.
fn touch(path: String) -> bool {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(b"ran\n"))
        .is_ok()
}

fn runs(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

type Fields = Vec<(String, Vec<u8>)>;

/// Submits `touch(marker)` from a client without workers and copies the
/// pending record; returns the client, the task id and the record.
fn pending_record(
    redis: &Redis,
    ns: &str,
    marker: &str,
) -> (Cluster, fanout::Future<bool>, String, Fields) {
    let client = Cluster::builder(&redis.url())
        .namespace(ns)
        .secret("shared secret")
        .build()
        .unwrap();
    let f = client.submit(touch, (marker.to_string(),)).unwrap();
    let mut con = redis.conn();
    let key = {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{{{ns}}}:t:*"))
                .query(&mut con)
                .unwrap();
            if let Some(k) = keys.into_iter().next() {
                break k;
            }
            assert!(std::time::Instant::now() < deadline, "no record appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let task = key.rsplit(":t:").next().unwrap().to_string();
    let fields: Fields = redis::cmd("HGETALL").arg(&key).query(&mut con).unwrap();
    (client, f, task, fields)
}

/// Writes the record back into `ns` as a new pending task, the way someone
/// with write access to Redis (but not the secret) could.
fn replay(redis: &Redis, ns: &str, task: &str, fields: &Fields) {
    let mut con = redis.conn();
    let entry: String = redis::cmd("XADD")
        .arg(format!("{{{ns}}}:q"))
        .arg("*")
        .arg("t")
        .arg(task)
        .query(&mut con)
        .unwrap();
    let mut hset = redis::cmd("HSET");
    hset.arg(format!("{{{ns}}}:t:{task}"));
    for (k, v) in fields {
        let v: &[u8] = match k.as_str() {
            "st" => b"p",
            "at" => b"0",
            "e" => entry.as_bytes(),
            _ => v,
        };
        hset.arg(k).arg(v);
    }
    hset.query::<()>(&mut con).unwrap();
}

/// Waits until the namespace's single worker has processed everything
/// queued before (the worker has one slot and reads the stream in order).
fn barrier(c: &Cluster, dir: &TempDir) {
    let marker = dir.path().join("barrier").to_string_lossy().into_owned();
    assert_eq!(
        c.submit(touch, (marker,)).unwrap().result_timeout(WAIT),
        Ok(true)
    );
}

fn workers(redis: &Redis, ns: &str) -> Cluster {
    Cluster::builder(&redis.url())
        .namespace(ns)
        .secret("shared secret")
        .local_workers(1)
        .build()
        .unwrap()
}

#[test]
fn a_finished_record_written_back_does_not_run_again() {
    let redis = Redis::start();
    let dir = TempDir::new("replay-finished");
    let marker = dir.path().join("m");
    let (client, f, task, fields) = pending_record(&redis, "replay1", &marker.to_string_lossy());
    let w = workers(&redis, "replay1");
    assert_eq!(f.result_timeout(WAIT), Ok(true));
    assert_eq!(runs(&marker), 1);
    for _ in 0..3 {
        replay(&redis, "replay1", &task, &fields);
        barrier(&w, &dir);
    }
    assert_eq!(runs(&marker), 1, "a finished task ran again");
    // The replayed record was dropped, not left behind.
    let mut con = redis.conn();
    let left: i64 = redis::cmd("EXISTS")
        .arg(format!("{{replay1}}:t:{task}"))
        .query(&mut con)
        .unwrap();
    assert_eq!(left, 0);
    // The client keeps working.
    let again = dir.path().join("again").to_string_lossy().into_owned();
    assert_eq!(
        client.submit(touch, (again,)).unwrap().result_timeout(WAIT),
        Ok(true)
    );
}

#[test]
fn a_record_copied_to_another_namespace_with_the_same_secret_does_not_run() {
    let redis = Redis::start();
    let dir = TempDir::new("replay-ns");
    let marker = dir.path().join("m");
    let (_client, f, task, fields) = pending_record(&redis, "replay2a", &marker.to_string_lossy());
    let w = workers(&redis, "replay2a");
    assert_eq!(f.result_timeout(WAIT), Ok(true));
    let other = workers(&redis, "replay2b");
    replay(&redis, "replay2b", &task, &fields);
    barrier(&other, &dir);
    // Before it finished, too: copy the pending record.
    let marker2 = dir.path().join("m2");
    let (_client2, f2, task2, fields2) =
        pending_record(&redis, "replay2c", &marker2.to_string_lossy());
    replay(&redis, "replay2b", &task2, &fields2);
    barrier(&other, &dir);
    assert_eq!(runs(&marker), 1, "the copy in another namespace ran");
    assert_eq!(runs(&marker2), 0, "the copy in another namespace ran");
    // The original still runs where it belongs.
    let _w2 = workers(&redis, "replay2c");
    assert_eq!(f2.result_timeout(WAIT), Ok(true));
    assert_eq!(runs(&marker2), 1);
    drop(w);
}

#[test]
fn a_record_of_a_client_that_is_gone_does_not_run() {
    let redis = Redis::start();
    let dir = TempDir::new("replay-gone");
    let marker = dir.path().join("m");
    let (client, f, task, fields) = pending_record(&redis, "replay3", &marker.to_string_lossy());
    let w = workers(&redis, "replay3");
    assert_eq!(f.result_timeout(WAIT), Ok(true));
    client.shutdown(true, false);
    drop(client);
    // Even its finished-task memory is gone with it: only its liveness,
    // which nobody can forge, tells the worker not to run the record.
    let mut con = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{replay3}}:*{}*", &task[..16]))
        .query(&mut con)
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    replay(&redis, "replay3", &task, &fields);
    barrier(&w, &dir);
    assert_eq!(runs(&marker), 1, "a task of a departed client ran again");
    let left: i64 = redis::cmd("EXISTS")
        .arg(format!("{{replay3}}:t:{task}"))
        .query(&mut con)
        .unwrap();
    assert_eq!(left, 0, "the departed client's record was not cleaned up");
}

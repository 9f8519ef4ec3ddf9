//! Quick tasks: a first submission to the default lane with small
//! arguments carries its call in its stream entry, and an idle worker runs
//! it straight from its blocking read, marking it started only if it runs
//! for a while. These tests hold what keeps that safe: `cancel` deletes
//! the entry of a quick task no worker has been given, never cancels one
//! the group delivered, and gives a partly cancelled one a plain entry; a
//! redelivered quick task that was never marked counts as an attempt; a
//! long quick task is still seen running and cannot be cancelled. Also the
//! exact tidy an idle worker runs after its finish, which leaves the
//! queue with only what the group has not delivered.
//! The scripts run as the crate composes them (read from its sources).

mod cluster_hardening_support;
mod cluster_support;

use cluster_support::{Redis, TempDir};
use fanout::{Cluster, Executor};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const GROUP: &str = "fanout";
const CANCEL: &str = include_str!("../src/cluster/lua/cancel.lua");
const START: &str = concat!(
    include_str!("../src/cluster/lua/tidy_fn.lua"),
    "\n",
    include_str!("../src/cluster/lua/start_fn.lua"),
    "\nreturn start(KEYS, ARGV)\n"
);

fn touch(path: String) -> bool {
    std::fs::write(path, b"ran").is_ok()
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// A client without workers in `ns`; each test ends it with
/// `shutdown(false, true)`, as waiting for its tasks would never end.
fn client(redis: &Redis, ns: &str) -> Cluster {
    Cluster::builder(&redis.url())
        .namespace(ns)
        .secret("quick secret")
        .build()
        .unwrap()
}

/// The one task record of `ns` once it is there: (key, task id).
fn record(redis: &Redis, ns: &str) -> (String, String) {
    let mut con = redis.conn();
    let mut key = None;
    assert!(
        eventually(WAIT, || {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{{{ns}}}:t:*"))
                .query(&mut con)
                .unwrap();
            key = keys.into_iter().next();
            key.is_some()
        }),
        "no record appeared"
    );
    let key = key.unwrap();
    let task = key.rsplit(":t:").next().unwrap().to_string();
    (key, task)
}

fn field(con: &mut redis::Connection, key: &str, name: &str) -> Option<String> {
    redis::cmd("HGET").arg(key).arg(name).query(con).unwrap()
}

/// A stream entry: its id and fields.
type Entry = (String, Vec<(String, Vec<u8>)>);

fn entries(con: &mut redis::Connection, ns: &str) -> Vec<Entry> {
    redis::cmd("XRANGE")
        .arg(format!("{{{ns}}}:q"))
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap()
}

/// Runs `cancel.lua` for one record: item `idx` (-1: the whole task),
/// with the entry id the client knows (`""`: none).
fn cancel(
    con: &mut redis::Connection,
    ns: &str,
    (key, task): (&str, &str),
    idx: i64,
    entry: &str,
) -> i64 {
    let out: Vec<i64> = redis::cmd("EVAL")
        .arg(CANCEL)
        .arg(2)
        .arg(format!("{{{ns}}}:q"))
        .arg(key)
        .arg(60)
        .arg(GROUP)
        .arg(idx)
        .arg(task)
        .arg(entry)
        .query(con)
        .unwrap();
    out[0]
}

/// Delivers the queue's next entry to consumer `who`, as a worker's read does.
fn deliver(con: &mut redis::Connection, ns: &str, who: &str) -> String {
    let reply: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(who)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(format!("{{{ns}}}:q"))
        .arg(">")
        .query(con)
        .unwrap();
    // [[stream, [[id, fields]]]]
    let redis::Value::Array(streams) = reply else {
        panic!("nothing delivered: {reply:?}")
    };
    let redis::Value::Array(stream) = &streams[0] else {
        panic!()
    };
    let redis::Value::Array(es) = &stream[1] else {
        panic!()
    };
    let redis::Value::Array(e) = &es[0] else {
        panic!()
    };
    redis::from_redis_value(e[0].clone()).unwrap()
}

#[test]
fn a_first_submission_is_quick_and_a_retried_one_would_not_be() {
    let _w = cluster_hardening_support::watchdog("quick_entry", Duration::from_secs(120));
    let redis = Redis::start();
    let c = client(&redis, "qe");
    let dir = TempDir::new("qe");
    let _f = c
        .submit(
            touch,
            (dir.path().join("x").to_string_lossy().into_owned(),),
        )
        .unwrap();
    let (key, task) = record(&redis, "qe");
    let mut con = redis.conn();
    assert_eq!(field(&mut con, &key, "q").as_deref(), Some("1"));
    let es = entries(&mut con, "qe");
    assert_eq!(es.len(), 1);
    let names: Vec<&str> = es[0].1.iter().map(|(k, _)| k.as_str()).collect();
    for n in ["t", "q", "f", "b", "a", "s", "n", "nc", "tl"] {
        assert!(names.contains(&n), "{n} missing from the entry: {names:?}");
    }
    let t = es[0].1.iter().find(|(k, _)| k == "t").unwrap();
    assert_eq!(t.1, task.as_bytes());
    // Sent as a transaction: the record cannot name the entry (the client
    // knows it, and gives it to `cancel`), and holds what the entry does.
    assert_eq!(field(&mut con, &key, "e"), None);
    for n in ["f", "b", "a", "s", "n", "nc", "tl"] {
        let v = es[0].1.iter().find(|(k, _)| k == n).unwrap();
        let r: Option<Vec<u8>> = redis::cmd("HGET").arg(&key).arg(n).query(&mut con).unwrap();
        assert_eq!(r.as_deref(), Some(v.1.as_slice()), "{n} differs");
    }
    assert_eq!(field(&mut con, &key, "st").as_deref(), Some("p"));
    assert_eq!(field(&mut con, &key, "at").as_deref(), Some("0"));
    assert!(field(&mut con, &key, "m").is_some());
    c.shutdown(false, true);
}

#[test]
fn cancel_deletes_an_undelivered_quick_entry_and_refuses_a_delivered_one() {
    let _w = cluster_hardening_support::watchdog("quick_cancel", Duration::from_secs(120));
    let redis = Redis::start();
    let mut con = redis.conn();
    let c = client(&redis, "qc");
    let dir = TempDir::new("qc");
    let _f = c
        .submit(
            touch,
            (dir.path().join("x").to_string_lossy().into_owned(),),
        )
        .unwrap();
    let (key, task) = record(&redis, "qc");
    // Its entry unknown to the caller (a lost reply): it may have been
    // delivered, so it counts as started, and nothing changes.
    assert_eq!(cancel(&mut con, "qc", (&key, &task), -1, ""), 0);
    assert_eq!(field(&mut con, &key, "st").as_deref(), Some("p"));
    assert_eq!(entries(&mut con, "qc").len(), 1);
    // Delivered (pending in the group): started, whatever the record says.
    let id = deliver(&mut con, "qc", "someone");
    assert_eq!(cancel(&mut con, "qc", (&key, &task), -1, &id), 0);
    assert_eq!(field(&mut con, &key, "st").as_deref(), Some("p"));
    assert_eq!(entries(&mut con, "qc").len(), 1);
    // Once no longer pending (acknowledged and still 'p': a test's doing,
    // not a worker's), it is not delivered any more, and is cancelled.
    let _: i64 = redis::cmd("XACK")
        .arg("{qc}:q")
        .arg(GROUP)
        .arg(&id)
        .query(&mut con)
        .unwrap();
    assert_eq!(cancel(&mut con, "qc", (&key, &task), -1, &id), 2);
    assert_eq!(field(&mut con, &key, "st").as_deref(), Some("c"));

    // Never delivered: cancelled, and its entry is gone, so no worker runs it.
    let c2 = client(&redis, "qd");
    let marker = dir.path().join("cancelled");
    let _g = c2
        .submit(touch, (marker.to_string_lossy().into_owned(),))
        .unwrap();
    let (key, task) = record(&redis, "qd");
    let id = entries(&mut con, "qd")[0].0.clone();
    assert_eq!(cancel(&mut con, "qd", (&key, &task), -1, &id), 2);
    assert!(entries(&mut con, "qd").is_empty());
    assert_eq!(
        cancel(&mut con, "qd", (&key, &task), -1, &id),
        2,
        "idempotent"
    );
    // Workers that come later never see it.
    let w = Cluster::builder(&redis.url())
        .namespace("qd")
        .secret("quick secret")
        .local_workers(1)
        .build()
        .unwrap();
    let later = dir.path().join("later");
    assert_eq!(
        w.submit(touch, (later.to_string_lossy().into_owned(),))
            .unwrap()
            .result_timeout(WAIT),
        Ok(true)
    );
    assert!(!marker.exists(), "a cancelled quick task ran");
    w.shutdown(true, false);
    c.shutdown(false, true);
    c2.shutdown(false, true);
}

#[test]
fn a_partly_cancelled_quick_chunk_gets_a_plain_entry_that_skips_its_items() {
    let _w = cluster_hardening_support::watchdog("quick_partial", Duration::from_secs(120));
    let redis = Redis::start();
    let mut con = redis.conn();
    let c = client(&redis, "qp");
    let f = c
        .map_with(
            sleepy,
            vec![1u64, 2, 3],
            fanout::MapOptions::default().chunksize(3),
        )
        .unwrap();
    let (key, task) = record(&redis, "qp");
    assert_eq!(field(&mut con, &key, "q").as_deref(), Some("1"));
    let before = entries(&mut con, "qp");
    assert_eq!(cancel(&mut con, "qp", (&key, &task), 1, &before[0].0), 1);
    let after = entries(&mut con, "qp");
    assert_eq!(after.len(), 1);
    assert_ne!(after[0].0, before[0].0, "the entry was replaced");
    let names: Vec<&str> = after[0].1.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["t"], "a plain entry");
    assert_eq!(
        field(&mut con, &key, "e").as_deref(),
        Some(after[0].0.as_str())
    );
    assert_eq!(field(&mut con, &key, "q").as_deref(), Some("0"));
    // A worker starts it as a plain task and skips the cancelled item.
    let w = Cluster::builder(&redis.url())
        .namespace("qp")
        .secret("quick secret")
        .local_workers(1)
        .build()
        .unwrap();
    let out: Vec<_> = f.collect();
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0], Ok(1));
    assert_eq!(out[1], Err(fanout::Error::Cancelled));
    assert_eq!(out[2], Ok(3));
    w.shutdown(true, false);
    c.shutdown(false, true);
}

#[test]
fn a_redelivered_quick_task_never_marked_counts_as_an_attempt() {
    let _w = cluster_hardening_support::watchdog("quick_redeliver", Duration::from_secs(120));
    let redis = Redis::start();
    let mut con = redis.conn();
    let c = client(&redis, "qr");
    let dir = TempDir::new("qr");
    let _f = c
        .submit(
            touch,
            (dir.path().join("x").to_string_lossy().into_owned(),),
        )
        .unwrap();
    let (key, task) = record(&redis, "qr");
    let id = deliver(&mut con, "qr", "died");
    let client_id = task.split('.').next().unwrap();
    let seq = i64::from_str_radix(task.split('.').nth(1).unwrap(), 16).unwrap();
    let start = |con: &mut redis::Connection, redelivered: &str, token: &str| -> redis::Value {
        redis::cmd("EVAL")
            .arg(START)
            .arg(5)
            .arg("{qr}:q")
            .arg(&key)
            .arg(format!("{{qr}}:ev:{client_id}"))
            .arg(format!("{{qr}}:live:{client_id}"))
            .arg(format!("{{qr}}:fin:{client_id}"))
            .arg(&id)
            .arg(GROUP)
            .arg("taker")
            .arg(token)
            .arg(&task)
            .arg(seq)
            .arg("")
            .arg(redelivered)
            .query(con)
            .unwrap()
    };
    let events = |con: &mut redis::Connection| -> usize {
        let es: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(format!("{{qr}}:ev:{client_id}"))
            .arg("-")
            .arg("+")
            .query(con)
            .unwrap();
        es.iter()
            .filter(|(_, f)| f.iter().any(|(k, v)| k == "k" && v == "s"))
            .count()
    };
    let before = events(&mut con);
    let reply = start(&mut con, "1", "taker#1");
    let redis::Value::Array(parts) = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!(parts[0], redis::Value::BulkString(b"run".to_vec()));
    // The unmarked run and this one.
    assert_eq!(field(&mut con, &key, "at").as_deref(), Some("2"));
    assert_eq!(field(&mut con, &key, "st").as_deref(), Some("r"));
    assert_eq!(
        events(&mut con),
        before + 1,
        "its client is told it started"
    );
    // The same delivery token again counts nothing more.
    start(&mut con, "1", "taker#1");
    assert_eq!(field(&mut con, &key, "at").as_deref(), Some("2"));
    // Marked already ('r'): a redelivery counts one, as for any task.
    start(&mut con, "1", "taker#2");
    assert_eq!(field(&mut con, &key, "at").as_deref(), Some("3"));
    // Its client now sees the task running, and no worker will finish it
    // (this test stood in for them): shut down without waiting, and leave
    // the client's threads to the end of the process rather than wait for
    // the task in its drop.
    c.shutdown(false, true);
    std::mem::forget(c);
}

#[test]
fn a_long_quick_task_is_seen_running_and_cannot_be_cancelled() {
    let _w = cluster_hardening_support::watchdog("quick_long", Duration::from_secs(120));
    let redis = Redis::start();
    let c = Cluster::builder(&redis.url())
        .namespace("ql")
        .secret("quick secret")
        .local_workers(1)
        .build()
        .unwrap();
    // Warm: the worker's blocking read is waiting, so the next task is quick.
    assert_eq!(c.submit(sleepy, (1,)).unwrap().result_timeout(WAIT), Ok(1));
    let slow = c.submit(sleepy, (500,)).unwrap();
    assert!(eventually(WAIT, || slow.running()), "never seen running");
    assert!(!slow.cancel(), "a running quick task was cancelled");
    assert_eq!(slow.result_timeout(WAIT), Ok(500));
    // Short ones finish, marked or not.
    let fs: Vec<_> = (0..50).map(|_| c.submit(sleepy, (0,)).unwrap()).collect();
    for f in fs {
        assert_eq!(f.result_timeout(WAIT), Ok(0));
    }
    c.shutdown(true, false);
}

/// The exact tidy of an idle queue (nothing pending) takes the newest done
/// entry and all before it, and nothing after, whether its sequence number
/// is short (one trim below the next id) or too long to add one to in Lua.
#[test]
fn an_idle_tidy_takes_the_newest_done_entry_and_all_before_it() {
    let redis = Redis::start();
    let mut con = redis.conn();
    let tidy = concat!(
        include_str!("../src/cluster/lua/tidy_fn.lua"),
        "\ntidy(KEYS[1], ARGV[1], true, nil, ARGV[2])\nreturn redis.call('XLEN', KEYS[1])\n"
    );
    for (done, after) in [("5-7", "5-8"), ("5-99999999999999", "6-0")] {
        let q = format!("tidy:{done}");
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&q)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut con)
            .unwrap();
        for id in ["1-0", done, after] {
            let _: String = redis::cmd("XADD")
                .arg(&q)
                .arg(id)
                .arg("t")
                .arg("x")
                .query(&mut con)
                .unwrap();
        }
        // Deliver and acknowledge the first two: done, nothing pending.
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg("w")
            .arg("COUNT")
            .arg(2)
            .arg("STREAMS")
            .arg(&q)
            .arg(">")
            .query(&mut con)
            .unwrap();
        let _: i64 = redis::cmd("XACK")
            .arg(&q)
            .arg(GROUP)
            .arg("1-0")
            .arg(done)
            .query(&mut con)
            .unwrap();
        let left: i64 = redis::cmd("EVAL")
            .arg(tidy)
            .arg(1)
            .arg(&q)
            .arg(GROUP)
            .arg(done)
            .query(&mut con)
            .unwrap();
        assert_eq!(left, 1, "{done}: only the undelivered entry stays");
        let ids: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&q)
            .arg("-")
            .arg("+")
            .query(&mut con)
            .unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].0, after, "{done}");
    }
}

//! Cluster backend against a real redis-server: the futures API, map,
//! cancellation, signing, namespaces, key hygiene, an unreachable server.

mod cluster_support;

use cluster_support::{eventually, Redis, TempDir};
use fanout::{as_completed, wait, Cluster, Error, Executor, MapOptions, ReturnWhen, State};
use std::time::{Duration, Instant};

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn pid() -> u32 {
    std::process::id()
}

fn boom(msg: String) -> u32 {
    panic!("{msg}")
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn inv(x: i32) -> i32 {
    if x == 0 {
        panic!("division by zero")
    }
    100 / x
}

/// Appends a line to `path` (so a test can count executions).
fn touch(path: String) -> bool {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(b"ran\n"))
        .is_ok()
}

fn cluster(redis: &Redis, ns: &str, workers: usize) -> Cluster {
    Cluster::builder(&redis.url())
        .namespace(ns)
        .local_workers(workers)
        .lease(Duration::from_secs(2))
        .secret("test-secret")
        .build()
        .expect("cluster")
}

#[test]
fn submit_result_map_and_errors() {
    let redis = Redis::start();
    let c = cluster(&redis, "basic", 2);
    let f = c.submit(add, (1, 2)).unwrap();
    assert_eq!(f.result_timeout(Duration::from_secs(20)), Ok(3));

    let p = c.submit(pid, ()).unwrap().result().unwrap();
    assert_ne!(p, std::process::id());
    assert!(eventually(Duration::from_secs(5), || c.worker_pids().len() == 2));
    assert!(
        c.worker_pids().contains(&p),
        "{p} not in {:?}",
        c.worker_pids()
    );

    let e = c.submit(boom, ("kaput".to_string(),)).unwrap().result();
    match &e {
        Err(Error::Panicked {
            message, worker, ..
        }) => {
            assert_eq!(message, "kaput");
            assert!(
                worker
                    .as_deref()
                    .unwrap_or("")
                    .starts_with("cluster worker "),
                "{worker:?}"
            );
        }
        other => panic!("expected Panicked, got {other:?}"),
    }

    // map, in order; a failing item yields its Err and iteration goes on.
    let out: Vec<_> = c.map(inv, [1, 0, 4]).unwrap().collect();
    assert_eq!(out[0], Ok(100));
    assert!(matches!(out[1], Err(Error::Panicked { .. })));
    assert_eq!(out[2], Ok(25));

    // chunksize: chunks travel as one record each; results per item.
    let squares: Vec<u64> = c
        .map_with(
            |x: u64| x * x,
            0..1000u64,
            MapOptions::default().chunksize(64),
        )
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(squares, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    let out: Vec<_> = c
        .map_with(inv, [5, 0, 10], MapOptions::default().chunksize(3))
        .unwrap()
        .collect();
    assert_eq!(out[0], Ok(20));
    assert!(matches!(out[1], Err(Error::Panicked { .. })));
    assert_eq!(out[2], Ok(10));

    // lazy buffered map over an infinite input
    let first: Vec<u64> = c
        .map_with(|x: u64| 2 * x, 0.., MapOptions::default().buffersize(4))
        .unwrap()
        .take(5)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, [0, 2, 4, 6, 8]);

    // starmap
    let sums: Vec<u64> = c
        .starmap(add, [(1, 2), (3, 4)])
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sums, [3, 7]);

    // wait / as_completed / await / callbacks
    let fs: Vec<_> = (0..20).map(|i| c.submit(add, (i, 1)).unwrap()).collect();
    let done = wait(fs, Some(Duration::from_secs(20)), ReturnWhen::AllCompleted);
    assert_eq!(done.not_done.len(), 0);
    let fs: Vec<_> = (0..20).map(|i| c.submit(add, (i, i)).unwrap()).collect();
    let total: u64 = as_completed(fs, Some(Duration::from_secs(20)))
        .map(|f| f.unwrap().result().unwrap())
        .sum();
    assert_eq!(total, 380);
    let f = c.submit(add, (20, 22)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    f.add_done_callback(move |r| tx.send(r.clone()).unwrap());
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), Ok(42));
    assert_eq!(
        futures::executor::block_on(c.submit(add, (2, 2)).unwrap()),
        Ok(4)
    );

    // a slow task: running, then finished; result_timeout times out first
    let slow = c.submit(sleepy, (600,)).unwrap();
    assert!(eventually(Duration::from_secs(10), || slow.running()));
    assert!(!slow.cancel(), "a running task cannot be cancelled");
    assert!(slow.wait(Some(Duration::from_secs(10))));
    assert_eq!(slow.state(), State::Finished);
    let slow = c.submit(sleepy, (400,)).unwrap();
    assert!(matches!(
        slow.result_timeout(Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));

    c.shutdown(true, false);
    assert!(matches!(c.submit(add, (1, 1)), Err(Error::Shutdown)));
    c.shutdown(true, false); // idempotent
    assert!(c.worker_pids().is_empty());
}

#[test]
fn cancel_propagates_to_redis() {
    let redis = Redis::start();
    // One worker, busy with a blocker: the next tasks wait in Redis.
    let c = cluster(&redis, "cancel", 1);
    let blocker = c.submit(sleepy, (800,)).unwrap();
    assert!(eventually(Duration::from_secs(10), || blocker.running()));
    let dir = TempDir::new("cancel");
    let marker = dir.path().join("ran");
    let queued = c
        .submit(touch, (marker.to_string_lossy().into_owned(),))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(queued.cancel());
    assert!(queued.cancelled() && queued.done());
    assert_eq!(queued.result(), Err(Error::Cancelled));
    assert_eq!(blocker.result(), Ok(800));
    // A later task runs after the cancelled one would have.
    assert_eq!(c.submit(add, (1, 1)).unwrap().result(), Ok(2));
    assert!(!marker.exists(), "a cancelled task ran");

    // Map timeout cancels what has not started.
    let out: Vec<_> = c
        .map_with(
            sleepy,
            vec![400u64; 6],
            MapOptions::default().timeout(Duration::from_millis(1000)),
        )
        .unwrap()
        .collect();
    // Six 400 ms tasks on one worker cannot finish in 1 s: some results,
    // then one Timeout, then the end.
    assert!(out.len() < 6, "{out:?}");
    assert!(
        matches!(out.last(), Some(Err(Error::Timeout { .. }))),
        "{out:?}"
    );
    assert!(
        out[..out.len() - 1].iter().all(|r| r == &Ok(400)),
        "{out:?}"
    );

    // shutdown(cancel_futures): queued tasks are cancelled at once.
    let running = c.submit(sleepy, (500,)).unwrap();
    assert!(eventually(Duration::from_secs(10), || running.running()));
    let queued: Vec<_> = (0..5).map(|_| c.submit(sleepy, (500,)).unwrap()).collect();
    let t = Instant::now();
    c.shutdown(true, true);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(running.result(), Ok(500));
    for q in queued {
        assert_eq!(q.result(), Err(Error::Cancelled));
    }
}

#[test]
fn unreachable_redis_is_a_backend_error_not_a_hang() {
    let port = cluster_support::free_port();
    let t = Instant::now();
    let err = Cluster::builder(&format!("redis://127.0.0.1:{port}/0"))
        .local_workers(1)
        .build()
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    match &err {
        Error::Backend { message } => assert!(message.contains(&port.to_string()), "{message}"),
        other => panic!("expected Backend, got {other:?}"),
    }
    // Bad password → Backend too.
    let redis = Redis::start();
    let mut con = redis.conn();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("right")
        .query::<()>(&mut con)
        .unwrap();
    let err = Cluster::builder(&format!("redis://:wrong@127.0.0.1:{}/0", redis.port))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(!err.to_string().contains("wrong"), "password leaked: {err}");
    let ok = Cluster::builder(&format!("redis://:right@127.0.0.1:{}/0", redis.port))
        .local_workers(1)
        .build()
        .unwrap();
    assert_eq!(ok.submit(add, (1, 2)).unwrap().result(), Ok(3));
}

/// Finds the one pending task record of a namespace.
fn only_record(redis: &Redis, ns: &str) -> (String, Vec<(String, Vec<u8>)>) {
    let records = || -> Vec<String> {
        redis
            .keys(ns)
            .into_iter()
            .filter(|k| k.starts_with(&format!("{{{ns}}}:t:")))
            .collect()
    };
    // `submit` hands the record to the client's dispatcher thread, so it
    // reaches Redis a moment later (longer on a loaded machine).
    eventually(Duration::from_secs(10), || !records().is_empty());
    let keys = records();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mut con = redis.conn();
    let fields: Vec<(String, Vec<u8>)> =
        redis::cmd("HGETALL").arg(&keys[0]).query(&mut con).unwrap();
    let task = keys[0].rsplit(':').next().unwrap().to_string();
    (task, fields)
}

fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &fields.iter().find(|(k, _)| k == name).unwrap().1
}

/// The args blob of a one-item task: the (empty) captures, then the item,
/// each as a length prefix + postcard encoding.
fn args_blob<T: serde::Serialize>(args: &T) -> Vec<u8> {
    let item = postcard::to_allocvec(args).unwrap();
    let mut blob = vec![0, 0, 0, 0];
    blob.extend_from_slice(&(item.len() as u32).to_le_bytes());
    blob.extend_from_slice(&item);
    blob
}

/// Writes a forged copy of a record under a new task id and queues it.
fn forge(
    redis: &Redis,
    ns: &str,
    fields: &[(String, Vec<u8>)],
    task: &str,
    args: &[u8],
    signature: Option<&[u8]>,
) {
    let mut con = redis.conn();
    let key = format!("{{{ns}}}:t:{task}");
    let mut hset = redis::cmd("HSET");
    hset.arg(&key);
    for (k, v) in fields {
        match k.as_str() {
            "a" => hset.arg(k).arg(args),
            "s" => match signature {
                Some(s) => hset.arg(k).arg(s),
                None => continue,
            },
            // The entry id `submit` recorded: a forged record names its own entry.
            "e" => continue,
            _ => hset.arg(k).arg(v),
        };
    }
    hset.query::<()>(&mut con).unwrap();
    redis::cmd("XADD")
        .arg(format!("{{{ns}}}:q"))
        .arg("*")
        .arg("t")
        .arg(task)
        .query::<String>(&mut con)
        .unwrap();
}

#[test]
fn forged_and_unsigned_tasks_never_run() {
    let redis = Redis::start();
    let dir = TempDir::new("forge");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    // No workers yet: the genuine task waits in Redis, where we copy it.
    let client = Cluster::builder(&redis.url())
        .namespace("sec")
        .secret("the-real-secret")
        .build()
        .unwrap();
    let genuine = client.submit(touch, (path("genuine"),)).unwrap();
    let (task, fields) = only_record(&redis, "sec");
    let (client_id, _) = task.split_once('.').unwrap();
    // 1. The genuine signature over different arguments (a tampered record).
    let tampered = format!("{client_id}.fff1");
    forge(
        &redis,
        "sec",
        &fields,
        &tampered,
        &args_blob(&(path("tampered"),)),
        Some(field(&fields, "s")),
    );
    // 2. A made-up signature.
    let garbage = format!("{client_id}.fff2");
    forge(
        &redis,
        "sec",
        &fields,
        &garbage,
        &args_blob(&(path("garbage"),)),
        Some(&[7u8; 32]),
    );
    // 3. No signature at all.
    let unsigned = format!("{client_id}.fff3");
    forge(
        &redis,
        "sec",
        &fields,
        &unsigned,
        &args_blob(&(path("unsigned"),)),
        None,
    );

    // 4. A replayed entry naming the genuine task: dropped, not run twice.
    let mut con = redis.conn();
    redis::cmd("XADD")
        .arg("{sec}:q")
        .arg("*")
        .arg("t")
        .arg(&task)
        .query::<String>(&mut con)
        .unwrap();

    // Now a worker (same namespace and secret) serves the queue.
    let workers = Cluster::builder(&redis.url())
        .namespace("sec")
        .secret("the-real-secret")
        .local_workers(1)
        .build()
        .unwrap();
    assert_eq!(genuine.result_timeout(Duration::from_secs(20)), Ok(true));
    std::thread::sleep(Duration::from_millis(300));
    let runs = std::fs::read_to_string(dir.path().join("genuine")).unwrap();
    assert_eq!(runs.lines().count(), 1, "the genuine task ran {runs:?}");
    for forged in [&tampered, &garbage, &unsigned] {
        let key = format!("{{sec}}:t:{forged}");
        assert!(
            eventually(Duration::from_secs(10), || {
                redis::cmd("HGET")
                    .arg(&key)
                    .arg("st")
                    .query::<Option<String>>(&mut con)
                    .unwrap()
                    == Some("x".into())
            }),
            "{forged} was not marked rejected"
        );
        let why: String = redis::cmd("HGET")
            .arg(&key)
            .arg("why")
            .query(&mut con)
            .unwrap();
        assert!(why.contains("signature"), "{why}");
    }
    for name in ["tampered", "garbage", "unsigned"] {
        assert!(!dir.path().join(name).exists(), "the {name} task ran");
    }
    // The rejected entries left the queue.
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg("{sec}:q")
        .arg("fanout")
        .query(&mut con)
        .unwrap();
    assert_eq!(pending[0], redis::Value::Int(0), "{pending:?}");
    let len: u64 = redis::cmd("XLEN").arg("{sec}:q").query(&mut con).unwrap();
    assert_eq!(len, 0);
    drop(workers);
    drop(client);
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The record signature (same layout as the crate's `protocol::sign_task`).
#[allow(clippy::too_many_arguments)]
fn sign(
    secret: &[u8],
    namespace: &str,
    task: &str,
    nonce: &[u8],
    trampoline: u64,
    build: &str,
    items: u64,
    args: &[u8],
) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut m = HmacSha256::new_from_slice(secret).unwrap();
    fn field(m: &mut HmacSha256, b: &[u8]) {
        m.update(&(b.len() as u64).to_le_bytes());
        m.update(b);
    }
    m.update(b"fanout-cluster-task-v2\0");
    field(&mut m, namespace.as_bytes());
    field(&mut m, task.as_bytes());
    field(&mut m, nonce);
    m.update(&trampoline.to_le_bytes());
    field(&mut m, build.as_bytes());
    m.update(&items.to_le_bytes());
    field(&mut m, args);
    m.finalize().into_bytes().to_vec()
}

#[test]
fn a_different_build_is_refused_naming_both_ids() {
    let redis = Redis::start();
    let client = Cluster::builder(&redis.url())
        .namespace("build")
        .secret("s")
        .build()
        .unwrap();
    let f = client.submit(add, (1, 2)).unwrap();
    let (task, fields) = only_record(&redis, "build");
    let ours = String::from_utf8(field(&fields, "b").to_vec()).unwrap();
    let theirs = "0123456789abcdef0123456789abcdef";
    let trampoline: u64 = std::str::from_utf8(field(&fields, "f"))
        .unwrap()
        .parse()
        .unwrap();
    // Correctly signed (so it passes the HMAC), but from "another build".
    let sig = sign(
        b"s",
        "build",
        &task,
        field(&fields, "nc"),
        trampoline,
        theirs,
        1,
        field(&fields, "a"),
    );
    let mut con = redis.conn();
    redis::cmd("HSET")
        .arg(format!("{{build}}:t:{task}"))
        .arg("b")
        .arg(theirs)
        .arg("s")
        .arg(sig)
        .query::<()>(&mut con)
        .unwrap();
    let _workers = Cluster::builder(&redis.url())
        .namespace("build")
        .secret("s")
        .local_workers(1)
        .build()
        .unwrap();
    match f.result_timeout(Duration::from_secs(20)) {
        Err(Error::Backend { message }) => {
            assert!(
                message.contains(theirs) && message.contains(&ours),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn worker_pid() -> String {
    std::process::id().to_string()
}

#[test]
fn namespaces_never_see_each_others_tasks() {
    let redis = Redis::start();
    let a = cluster(&redis, "tenant-a", 1);
    let b = cluster(&redis, "tenant-b", 1);
    let fa: Vec<_> = (0..40).map(|_| a.submit(worker_pid, ()).unwrap()).collect();
    let fb: Vec<_> = (0..40).map(|_| b.submit(worker_pid, ()).unwrap()).collect();
    let pa: Vec<String> = fa.into_iter().map(|f| f.result().unwrap()).collect();
    let pb: Vec<String> = fb.into_iter().map(|f| f.result().unwrap()).collect();
    let wa: Vec<String> = a.worker_pids().iter().map(u32::to_string).collect();
    let wb: Vec<String> = b.worker_pids().iter().map(u32::to_string).collect();
    assert!(pa.iter().all(|p| wa.contains(p)), "{pa:?} vs {wa:?}");
    assert!(pb.iter().all(|p| wb.contains(p)), "{pb:?} vs {wb:?}");
    assert!(redis
        .keys("tenant-a")
        .iter()
        .all(|k| k.starts_with("{tenant-a}:")));
}

#[test]
fn no_keys_left_after_10k_tasks_and_shutdown() {
    let redis = Redis::start();
    let c = cluster(&redis, "hygiene", 2);
    let fs: Vec<_> = (0..8_000u64)
        .map(|i| c.submit(add, (i, 1)).unwrap())
        .collect();
    let chunked: u64 = c
        .map_with(|x: u64| x, 0..2_000u64, MapOptions::default().chunksize(50))
        .unwrap()
        .map(Result::unwrap)
        .sum();
    assert_eq!(chunked, 1_999_000);
    // Half the futures are dropped unread: their results must go too.
    let mut total = 0;
    for (i, f) in fs.into_iter().enumerate() {
        if i % 2 == 0 {
            total += f.result().unwrap();
        }
    }
    assert_eq!(total, (0..8_000u64).step_by(2).map(|i| i + 1).sum::<u64>());
    c.shutdown(true, false);
    assert_eq!(redis.keys("hygiene"), ["{hygiene}:q"]);
    let mut con = redis.conn();
    let len: u64 = redis::cmd("XLEN")
        .arg("{hygiene}:q")
        .query(&mut con)
        .unwrap();
    assert_eq!(len, 0);
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("{hygiene}:q")
        .arg("fanout")
        .query(&mut con)
        .unwrap();
    assert!(consumers.is_empty(), "{consumers:?}");
}

/// Blocks until `path` exists (at most 60 s); true if it appeared.
fn gate(path: String) -> bool {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if std::path::Path::new(&path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Finished entries leave the queue by trimming (not an `XDEL` each), and
/// a trim never passes the oldest pending entry: a running task's entry
/// stays in the stream (for redelivery) while hundreds of short tasks
/// finish after it, and the queue is empty once everything is done.
#[test]
fn trimming_keeps_pending_entries_and_empties_an_idle_queue() {
    let redis = Redis::start();
    let dir = TempDir::new("trim");
    let open = dir.path().join("open").to_string_lossy().into_owned();
    let c = cluster(&redis, "trim", 2);
    let held = c.submit(gate, (open.clone(),)).unwrap();
    assert!(eventually(Duration::from_secs(20), || held.running()));
    let fs: Vec<_> = (0..500u64)
        .map(|i| c.submit(add, (i, 1)).unwrap())
        .collect();
    for (i, f) in fs.into_iter().enumerate() {
        assert_eq!(f.result_timeout(Duration::from_secs(60)), Ok(i as u64 + 1));
    }
    let mut con = redis.conn();
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg("{trim}:q")
        .arg("fanout")
        .query(&mut con)
        .unwrap();
    assert_eq!(pending[0], redis::Value::Int(1), "{pending:?}");
    let oldest: String = redis::FromRedisValue::from_redis_value(pending[1].clone()).unwrap();
    let entry: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg("{trim}:q")
        .arg(&oldest)
        .arg(&oldest)
        .query(&mut con)
        .unwrap();
    assert_eq!(entry.len(), 1, "the running task's entry was trimmed");
    std::fs::write(&open, b"").unwrap();
    assert_eq!(held.result_timeout(Duration::from_secs(60)), Ok(true));
    let empty = eventually(Duration::from_secs(20), || {
        redis::cmd("XLEN")
            .arg("{trim}:q")
            .query::<u64>(&mut con)
            .unwrap()
            == 0
    });
    assert!(empty, "done entries were left in the idle queue");
    c.shutdown(true, false);
}

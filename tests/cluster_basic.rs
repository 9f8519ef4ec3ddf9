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

fn touch(path: String) -> bool {
    std::fs::write(path, b"ran").is_ok()
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
    let mut m = c
        .map_with(
            sleepy,
            vec![300u64; 6],
            MapOptions::default().timeout(Duration::from_millis(450)),
        )
        .unwrap();
    assert_eq!(m.next(), Some(Ok(300)));
    assert!(matches!(m.next(), Some(Err(Error::Timeout { .. }))));
    assert_eq!(m.next(), None);
    drop(m);

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

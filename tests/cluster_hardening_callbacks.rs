//! Done-callbacks on the Cluster run where blocking cannot starve delivery:
//! a callback that blocks (on another future of the same cluster, or on
//! anything else) does not stop other futures from resolving.

mod cluster_hardening_support;
mod cluster_support;

use cluster_support::Redis;
use fanout::{Cluster, Error, Executor};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

fn add(a: u64, b: u64) -> u64 {
    a + b
}

const WAIT: Duration = Duration::from_secs(30);

fn cluster(redis: &Redis, namespace: &str, workers: usize) -> Arc<Cluster> {
    Arc::new(
        Cluster::builder(&redis.url())
            .namespace(namespace)
            .local_workers(workers)
            .build()
            .unwrap(),
    )
}

#[test]
fn a_callback_that_blocks_on_another_future_of_the_same_cluster() {
    let _watchdog = cluster_hardening_support::watchdog(
        "a_callback_that_blocks_on_another_future_of_the_same_cluster",
        std::time::Duration::from_secs(180),
    );
    let redis = Redis::start();
    let c = cluster(&redis, "cb-nested", 2);
    let (tx, rx) = mpsc::channel();
    let f = c.submit(add, (1, 2)).unwrap();
    let inner = c.clone();
    f.add_done_callback(move |r| {
        let first = *r.as_ref().unwrap();
        // Blocks this callback until another call of the same cluster is done.
        let second = inner
            .submit(add, (first, 10))
            .and_then(|g| g.result_timeout(WAIT));
        tx.send(second).unwrap();
    });
    assert_eq!(rx.recv_timeout(WAIT), Ok(Ok(13)));
    assert_eq!(f.result_timeout(WAIT), Ok(3));
    // Many callbacks, each waiting for a call of its own.
    let (tx, rx) = mpsc::channel();
    let fs: Vec<_> = (0..20u64)
        .map(|i| {
            let f = c.submit(add, (i, 0)).unwrap();
            let inner = c.clone();
            let tx = tx.clone();
            f.add_done_callback(move |r| {
                let v = *r.as_ref().unwrap();
                let got = inner
                    .submit(add, (v, v))
                    .and_then(|g| g.result_timeout(WAIT));
                tx.send((v, got)).unwrap();
            });
            f
        })
        .collect();
    let mut got: Vec<(u64, fanout::Result<u64>)> = (0..20)
        .map(|_| rx.recv_timeout(WAIT).expect("every callback finished"))
        .collect();
    got.sort_by_key(|g| g.0);
    for (i, (v, r)) in got.into_iter().enumerate() {
        assert_eq!((v, r), (i as u64, Ok(2 * i as u64)));
    }
    drop(fs);
}

#[test]
fn a_blocked_callback_does_not_stall_other_futures() {
    let _watchdog = cluster_hardening_support::watchdog(
        "a_blocked_callback_does_not_stall_other_futures",
        std::time::Duration::from_secs(180),
    );
    let redis = Redis::start();
    let c = cluster(&redis, "cb-blocked", 2);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (ran_tx, ran_rx) = mpsc::channel::<()>();
    let f = c.submit(add, (1, 1)).unwrap();
    f.add_done_callback(move |_| {
        ran_tx.send(()).unwrap();
        // Blocks until the test is done checking.
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
    });
    ran_rx.recv_timeout(WAIT).expect("the callback ran");
    let t = Instant::now();
    let fs: Vec<_> = (0..50u64).map(|i| c.submit(add, (i, 1)).unwrap()).collect();
    for (i, f) in fs.into_iter().enumerate() {
        assert_eq!(f.result_timeout(WAIT), Ok(i as u64 + 1));
    }
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    release_tx.send(()).unwrap();
    assert_eq!(f.result_timeout(WAIT), Ok(2));
}

#[test]
fn callbacks_can_submit_and_a_panicking_one_is_contained() {
    let _watchdog = cluster_hardening_support::watchdog(
        "callbacks_can_submit_and_a_panicking_one_is_contained",
        std::time::Duration::from_secs(180),
    );
    let redis = Redis::start();
    let c = cluster(&redis, "cb-misc", 1);
    let f = c.submit(add, (2, 2)).unwrap();
    f.add_done_callback(|_| panic!("a callback panicked on purpose"));
    let (tx, rx) = mpsc::channel();
    let inner = c.clone();
    f.add_done_callback(move |r| {
        // Submit from a callback without waiting: the future goes out.
        let g = inner.submit(add, (*r.as_ref().unwrap(), 1)).unwrap();
        tx.send(g).unwrap();
    });
    assert_eq!(f.result_timeout(WAIT), Ok(4));
    let g = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(g.result_timeout(WAIT), Ok(5));
    // The cluster still serves.
    assert_eq!(
        c.submit(add, (20, 22)).unwrap().result_timeout(WAIT),
        Ok(42)
    );
    // A callback that shuts the cluster down does not wait for itself.
    let f = c.submit(add, (0, 0)).unwrap();
    let inner = c.clone();
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |_| {
        inner.shutdown(true, false);
        tx.send(inner.submit(add, (0, 0)).err()).unwrap();
    });
    assert!(matches!(rx.recv_timeout(WAIT), Ok(Some(Error::Shutdown))));
}

fn slow_add(a: u64, b: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    a + b
}

fn slow_panic() -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    panic!("slow failure")
}

type Slot<T> = Arc<std::sync::Mutex<Option<fanout::Future<T>>>>;

/// Registers a callback on `f` that calls `result_timeout` on `f` itself
/// (the callback holds the future through `slot`), and reports what it got.
fn result_in_own_callback<T: Send + 'static>(
    f: fanout::Future<T>,
) -> mpsc::Receiver<Option<fanout::Result<T>>> {
    let slot: Slot<T> = Arc::new(std::sync::Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let s = slot.clone();
    f.add_done_callback(move |_outcome| {
        let me = s.lock().unwrap().take();
        let _ = tx.send(me.map(|f| f.result_timeout(WAIT)));
    });
    *slot.lock().unwrap() = Some(f);
    rx
}

/// `result()` on a future inside its own done-callback returns the outcome
/// (a copy of the value), and the cluster keeps delivering.
#[test]
fn result_inside_its_own_callback_returns_the_outcome() {
    let _watchdog = cluster_hardening_support::watchdog(
        "result_inside_its_own_callback_returns_the_outcome",
        std::time::Duration::from_secs(180),
    );
    let redis = Redis::start();
    let c = cluster(&redis, "cb-own", 2);
    let ok = result_in_own_callback(c.submit(slow_add, (20, 22)).unwrap());
    let failed = result_in_own_callback(c.submit(slow_panic, ()).unwrap());
    assert_eq!(ok.recv_timeout(WAIT), Ok(Some(Ok(42))));
    match failed.recv_timeout(WAIT) {
        Ok(Some(Err(Error::Panicked { message, .. }))) => {
            assert!(message.contains("slow failure"), "{message}")
        }
        other => panic!("expected Some(Err(Panicked)), got {other:?}"),
    }
    // Delivery is not stuck behind those callbacks.
    let start = Instant::now();
    assert_eq!(c.submit(add, (1, 1)).unwrap().result_timeout(WAIT), Ok(2));
    assert!(start.elapsed() < WAIT);
}

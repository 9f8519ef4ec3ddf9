//! `as_completed`, ported from CPython's `test_as_completed.py`
//! (`test_no_timeout`, `test_future_times_out`,
//! `test_correct_timeout_exception_msg`, `test_free_reference_yielded_future`)
//! plus yield order, cancellation while iterating, and mixed pools.
//!
//! CPython's `test_duplicate_futures` has no counterpart: futures are not
//! `Clone`, so the same future cannot be passed twice.

use fanout::{as_completed, Error, Executor, Future, State, ThreadPool};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::GUARD;

fn mul(a: u32, b: u32) -> u32 {
    a * b
}

fn divide(a: u32, b: u32) -> u32 {
    a / b
}

/// Gated tasks that have not necessarily started (any number on any pool).
fn gated_queued(pool: &ThreadPool) -> (Future<u32>, Sender<()>) {
    let (release, release_rx) = mpsc::channel::<()>();
    let f = pool
        .spawn(move || {
            let _ = release_rx.recv_timeout(GUARD);
            98
        })
        .unwrap();
    (f, release)
}

/// Already-completed futures: (finished ok, finished with an error, cancelled).
fn completed(pool: &ThreadPool) -> (Future<u32>, Future<u32>, Future<u32>) {
    let ok = pool.submit(mul, (6, 7)).unwrap();
    let err = pool.submit(divide, (1, 0)).unwrap();
    // The cancelled one is held pending behind the only worker of a side pool
    // (on `pool`, another idle worker could start it before the cancel).
    let side = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::gated(&side, 99);
    let cancelled = side.submit(mul, (1, 1)).unwrap();
    assert!(cancelled.cancel());
    release.send(()).unwrap();
    assert!(ok.wait(Some(GUARD)) && err.wait(Some(GUARD)) && blocker.wait(Some(GUARD)));
    (ok, err, cancelled)
}

/// `next()` on another thread, so that a hang fails the test.
fn next_guarded<I>(it: I) -> (I, Option<I::Item>)
where
    I: Iterator + Send + 'static,
    I::Item: Send,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut it = it;
        let item = it.next();
        tx.send((it, item)).ok();
    });
    rx.recv_timeout(GUARD).expect("as_completed's next() hung")
}

fn timeout_message(item: Option<fanout::Result<Future<u32>>>) -> String {
    match item {
        Some(Err(e @ Error::Timeout { .. })) => e.to_string(),
        Some(Ok(f)) => panic!("expected a timeout, got future {f:?}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

// CPython: test_no_timeout
#[test]
fn no_timeout_yields_every_future() {
    let pool = ThreadPool::new(2).unwrap();
    let (ok, err, cancelled) = completed(&pool);
    let f1 = pool.submit(mul, (2, 21)).unwrap();
    let f2 = pool.submit(mul, (7, 6)).unwrap();
    let fs = vec![cancelled, err, ok, f1, f2];
    let want: HashSet<u64> = fs.iter().map(Future::id).collect();
    let mut got = HashSet::new();
    let mut it = as_completed(fs, None);
    loop {
        let (rest, item) = next_guarded(it);
        it = rest;
        match item {
            Some(Ok(f)) => {
                assert!(f.done(), "yielded before done");
                assert!(got.insert(f.id()), "yielded twice");
            }
            Some(Err(e)) => panic!("no timeout was set, got {e}"),
            None => break,
        }
    }
    assert_eq!(got, want);
    assert!(it.next().is_none(), "stays ended");
}

/// Already-done futures come first (in the order given), then each as it
/// completes: releasing one gated task at a time fixes the completion order.
#[test]
fn done_first_then_completion_order() {
    let pool = ThreadPool::new(3).unwrap();
    let (ok, err, cancelled) = completed(&pool);
    let (a, ra) = common::gated(&pool, 99);
    let (b, rb) = common::gated(&pool, 99);
    let (c, rc) = common::gated(&pool, 99);
    let (ia, ib, ic) = (a.id(), b.id(), c.id());
    let done_ids = [ok.id(), cancelled.id(), err.id()];
    let mut it = as_completed(vec![a, ok, b, cancelled, c, err], None);
    for want in done_ids {
        let (rest, item) = next_guarded(it);
        it = rest;
        assert_eq!(item.unwrap().unwrap().id(), want);
    }
    for (release, want) in [(rb, ib), (rc, ic), (ra, ia)] {
        release.send(()).unwrap();
        let (rest, item) = next_guarded(it);
        it = rest;
        let f = item.unwrap().unwrap();
        assert_eq!(f.id(), want);
        assert_eq!(f.result(), Ok(99));
    }
    assert!(it.next().is_none());
}

// CPython: test_future_times_out — for a zero and a short timeout, the done
// futures are yielded, then one Timeout, then the iterator ends.
#[test]
fn timeout_yields_done_then_one_error_then_ends() {
    let pool = ThreadPool::new(2).unwrap();
    let mut releases = Vec::new();
    for timeout in [Duration::ZERO, Duration::from_millis(50)] {
        let (ok, err, cancelled) = completed(&pool);
        let (slow, release) = gated_queued(&pool);
        releases.push(release);
        let done: HashSet<u64> = [ok.id(), err.id(), cancelled.id()].into();
        let start = Instant::now();
        let mut it = as_completed(vec![ok, slow, err, cancelled], Some(timeout));
        let mut got = HashSet::new();
        for _ in 0..3 {
            let (rest, item) = next_guarded(it);
            it = rest;
            got.insert(item.unwrap().unwrap().id());
        }
        assert_eq!(got, done);
        let (rest, item) = next_guarded(it);
        it = rest;
        let msg = timeout_message(item);
        assert!(msg.contains("1 (of 4) futures unfinished"), "{msg}");
        assert!(start.elapsed() >= timeout);
        assert!(it.next().is_none(), "ends after the timeout");
        assert!(it.next().is_none(), "and stays ended");
    }
    drop(releases);
}

// CPython: test_correct_timeout_exception_msg — cancelled, pending, running
// and finished futures with a zero timeout: "2 (of 4) futures unfinished".
#[test]
fn timeout_message_counts_unfinished() {
    let pool = ThreadPool::new(1).unwrap();
    let ok = pool.submit(mul, (1, 1)).unwrap();
    assert!(ok.wait(Some(GUARD)));
    let (running, release) = common::gated(&pool, 99);
    let pending = pool.submit(mul, (2, 2)).unwrap();
    let cancelled = pool.submit(mul, (3, 3)).unwrap();
    assert!(cancelled.cancel());
    assert_eq!(running.state(), State::Running);
    assert_eq!(pending.state(), State::Pending);

    let items: Vec<_> =
        as_completed(vec![cancelled, pending, running, ok], Some(Duration::ZERO)).collect();
    assert_eq!(items.len(), 3, "two done futures and one timeout");
    assert!(items[0].is_ok() && items[1].is_ok());
    let msg = items[2].as_ref().unwrap_err().to_string();
    assert!(msg.contains("2 (of 4) futures unfinished"), "{msg}");

    // Larger numbers are counted right too.
    let fs: Vec<_> = (0..7).map(|i| pool.submit(mul, (i, i)).unwrap()).collect();
    let mut it = as_completed(fs, Some(Duration::from_millis(10)));
    let msg = timeout_message(it.next());
    assert!(msg.contains("7 (of 7) futures unfinished"), "{msg}");
    assert!(it.next().is_none());
    release.send(()).unwrap();
}

#[test]
fn zero_timeout_with_everything_done_has_no_error() {
    let pool = ThreadPool::new(2).unwrap();
    let (ok, err, cancelled) = completed(&pool);
    let items: Vec<_> = as_completed(vec![ok, err, cancelled], Some(Duration::ZERO)).collect();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(Result::is_ok));
}

#[test]
fn empty_input_ends_at_once() {
    for timeout in [None, Some(Duration::ZERO), Some(Duration::from_secs(30))] {
        let (rest, item) = next_guarded(as_completed(Vec::<Future<u32>>::new(), timeout));
        assert!(item.is_none(), "{timeout:?}");
        let mut rest = rest;
        assert!(rest.next().is_none());
    }
}

/// A future cancelled before or while iterating is yielded, as cancelled.
#[test]
fn cancelled_futures_are_yielded() {
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let (running, release) = common::gated(&pool, 99);
    let before = pool.submit(mul, (1, 1)).unwrap();
    assert!(before.cancel());
    let during = pool.submit(mul, (2, 2)).unwrap();
    let (ib, id) = (before.id(), during.id());

    let mut it = as_completed(vec![during, before], None);
    let (rest, item) = next_guarded(it);
    it = rest;
    let f = item.unwrap().unwrap();
    assert_eq!(f.id(), ib);
    assert!(f.cancelled());

    // `during` is still pending; cancel it through the pool while next() blocks.
    let p = pool.clone();
    let canceller = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        p.shutdown(false, true);
    });
    let (rest, item) = next_guarded(it);
    it = rest;
    let f = item.unwrap().unwrap();
    assert_eq!(f.id(), id);
    assert_eq!(f.state(), State::Cancelled);
    assert_eq!(f.result(), Err(Error::Cancelled));
    canceller.join().unwrap();
    assert!(it.next().is_none());
    release.send(()).unwrap();
    assert_eq!(running.result_timeout(GUARD), Ok(99));
}

#[test]
fn futures_from_two_pools_mix() {
    let a = ThreadPool::new(1).unwrap();
    let b = ThreadPool::new(2).unwrap();
    let (fa, ra) = common::gated(&a, 99);
    let fb = b.submit(mul, (3, 3)).unwrap();
    let (ia, ib) = (fa.id(), fb.id());
    let mut it = as_completed(vec![fa, fb], None);
    let (rest, item) = next_guarded(it);
    it = rest;
    assert_eq!(item.unwrap().unwrap().id(), ib);
    ra.send(()).unwrap();
    let (rest, item) = next_guarded(it);
    it = rest;
    assert_eq!(item.unwrap().unwrap().id(), ia);
    assert!(it.next().is_none());
}

// CPython: test_free_reference_yielded_future — in Rust a yielded future is
// moved out to the caller; what can be checked is that the iterator does not
// hold the rest back: dropping it early leaves their calls running.
#[test]
fn dropping_the_iterator_early_leaves_calls_running() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    fn count(i: u32) -> u32 {
        RAN.fetch_add(1, Ordering::SeqCst);
        i
    }
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::gated(&pool, 99);
    let fs: Vec<_> = (0..10).map(|i| pool.submit(count, (i,)).unwrap()).collect();
    let mut it = as_completed(fs, Some(Duration::from_millis(5)));
    assert!(matches!(it.next(), Some(Err(Error::Timeout { .. }))));
    drop(it);
    release.send(()).unwrap();
    blocker.result_timeout(GUARD).unwrap();
    pool.shutdown(true, false);
    assert_eq!(RAN.load(Ordering::SeqCst), 10);
}

#[test]
fn many_futures_each_yielded_once() {
    let pool = ThreadPool::new(4).unwrap();
    let fs: Vec<_> = (0..2000)
        .map(|i| pool.submit(mul, (i, 3)).unwrap())
        .collect();
    let want: HashSet<u64> = fs.iter().map(Future::id).collect();
    let mut got = HashSet::new();
    let mut sum = 0u64;
    for item in as_completed(fs, Some(GUARD)) {
        let f = item.expect("no timeout expected");
        assert!(got.insert(f.id()));
        sum += u64::from(f.result().unwrap());
    }
    assert_eq!(got, want);
    assert_eq!(sum, 3 * (0..2000u64).sum::<u64>());
}

/// A future that completed before the deadline is yielded, not counted as
/// unfinished, even if `next()` is only called after the deadline.
#[test]
fn completed_before_a_late_next_is_not_unfinished() {
    let pool = ThreadPool::new(2).unwrap();
    let (f, release) = common::gated(&pool, 99);
    let (g, _hold_g) = common::gated(&pool, 99);
    let fid = f.id();
    // The callback runs after the future's waiters were notified.
    let (done_tx, done_rx) = mpsc::channel();
    f.add_done_callback(move |_| done_tx.send(()).unwrap());
    let mut it = as_completed(vec![g, f], Some(Duration::from_millis(30)));
    release.send(()).unwrap();
    done_rx.recv_timeout(GUARD).unwrap();
    thread::sleep(Duration::from_millis(40)); // the deadline passes
    let first = it.next().expect("an item");
    assert_eq!(
        first.map(|f| f.id()).map_err(|e| e.to_string()),
        Ok(fid),
        "the finished future must be yielded before the timeout"
    );
    let msg = timeout_message(it.next());
    assert!(msg.contains("1 (of 2) futures unfinished"), "{msg}");
    assert!(it.next().is_none());
}

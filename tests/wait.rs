//! `wait`, ported from CPython's `test_wait.py` (`test_first_completed`,
//! `test_first_completed_some_already_completed`, `test_first_exception`,
//! `test_first_exception_some_already_complete`,
//! `test_first_exception_one_already_failed`, `test_all_completed`,
//! `test_timeout`, `test_pending_calls_race`) plus empty input and futures
//! from two pools.
//!
//! Differences from CPython: fanout has no "cancelled but not notified"
//! state, so a cancelled future is always in `done`; futures are not `Clone`,
//! so CPython's duplicate-future test (issue 20369) has no counterpart.

use fanout::{wait, Done, Error, Executor, Future, ReturnWhen, ThreadPool};
use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
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

/// Already-completed futures of each kind: (finished ok, finished with an
/// error, cancelled). The error is a division by zero, as in CPython.
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

fn ids(fs: &[Future<u32>]) -> HashSet<u64> {
    fs.iter().map(Future::id).collect()
}

fn set(ids: &[u64]) -> HashSet<u64> {
    ids.iter().copied().collect()
}

/// Runs `wait` on another thread so that a hang fails the test.
fn wait_guarded(fs: Vec<Future<u32>>, timeout: Option<Duration>, when: ReturnWhen) -> Done<u32> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(wait(fs, timeout, when)).unwrap());
    rx.recv_timeout(GUARD).expect("wait() hung")
}

// CPython: test_first_completed
#[test]
fn first_completed() {
    let pool = ThreadPool::new(2).unwrap();
    let (slow, release) = common::gated(&pool, 99);
    let quick = pool.submit(mul, (21, 2)).unwrap();
    let (q, s) = (quick.id(), slow.id());
    let r = wait_guarded(vec![slow, quick], None, ReturnWhen::FirstCompleted);
    assert_eq!(ids(&r.done), set(&[q]));
    assert_eq!(ids(&r.not_done), set(&[s]));
    release.send(()).unwrap();
}

// The future completes while `wait` is blocked: the waiter must be woken.
#[test]
fn first_completed_wakes_on_later_completion() {
    let pool = ThreadPool::new(2).unwrap();
    let (a, release_a) = common::gated(&pool, 99);
    let (b, _release_b) = common::gated(&pool, 99);
    let (ia, ib) = (a.id(), b.id());
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        release_a.send(()).unwrap();
    });
    let start = Instant::now();
    let r = wait_guarded(vec![a, b], None, ReturnWhen::FirstCompleted);
    assert!(start.elapsed() >= Duration::from_millis(25));
    assert_eq!(ids(&r.done), set(&[ia]));
    assert_eq!(ids(&r.not_done), set(&[ib]));
    releaser.join().unwrap();
}

// CPython: test_first_completed_some_already_completed
#[test]
fn first_completed_some_already_completed() {
    let pool = ThreadPool::new(2).unwrap();
    let (ok, _err, cancelled) = completed(&pool);
    let (slow, release) = common::gated(&pool, 99);
    let want_done = set(&[ok.id(), cancelled.id()]);
    let want_pending = set(&[slow.id()]);
    let r = wait_guarded(vec![cancelled, ok, slow], None, ReturnWhen::FirstCompleted);
    assert_eq!(ids(&r.done), want_done);
    assert_eq!(ids(&r.not_done), want_pending);
    release.send(()).unwrap();
}

// CPython: test_first_exception
#[test]
fn first_exception() {
    let pool = ThreadPool::new(3).unwrap();
    let f1 = pool.submit(mul, (2, 21)).unwrap();
    let (go2, go2_rx) = mpsc::channel::<()>();
    let f2 = pool
        .spawn(move || -> u32 {
            let _ = go2_rx.recv_timeout(GUARD);
            panic!("this is an exception")
        })
        .unwrap();
    let (f3, release3) = common::gated(&pool, 99);
    // f1 completes before f2 fails.
    assert!(f1.wait(Some(GUARD)));
    let (i1, i2, i3) = (f1.id(), f2.id(), f3.id());
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        go2.send(()).unwrap();
    });
    let r = wait_guarded(vec![f1, f2, f3], None, ReturnWhen::FirstException);
    assert_eq!(ids(&r.done), set(&[i1, i2]));
    assert_eq!(ids(&r.not_done), set(&[i3]));
    let failed = r.done.into_iter().find(|f| f.id() == i2).unwrap();
    assert!(matches!(
        failed.result(),
        Err(Error::Panicked { message, .. }) if message == "this is an exception"
    ));
    releaser.join().unwrap();
    release3.send(()).unwrap();
}

// CPython: test_first_exception_some_already_complete. A cancelled future is
// done but not an error, so it does not end the wait by itself.
#[test]
fn first_exception_some_already_complete() {
    let pool = ThreadPool::new(2).unwrap();
    let (ok, _, cancelled) = completed(&pool);
    let (slow, release) = common::gated(&pool, 99);
    let failing = pool.submit(divide, (21, 0)).unwrap();
    let want_done = set(&[ok.id(), cancelled.id(), failing.id()]);
    let want_pending = set(&[slow.id()]);
    let r = wait_guarded(
        vec![ok, cancelled, failing, slow],
        None,
        ReturnWhen::FirstException,
    );
    assert_eq!(ids(&r.done), want_done);
    assert_eq!(ids(&r.not_done), want_pending);
    release.send(()).unwrap();
}

// CPython: test_first_exception_one_already_failed
#[test]
fn first_exception_one_already_failed() {
    let pool = ThreadPool::new(2).unwrap();
    let (_, err, _) = completed(&pool);
    let (slow, release) = common::gated(&pool, 99);
    let (ie, is) = (err.id(), slow.id());
    let start = Instant::now();
    let r = wait_guarded(vec![err, slow], None, ReturnWhen::FirstException);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(ids(&r.done), set(&[ie]));
    assert_eq!(ids(&r.not_done), set(&[is]));
    release.send(()).unwrap();
}

/// With no errors, FirstException behaves like AllCompleted; cancellation
/// does not count as an error.
#[test]
fn first_exception_without_errors_waits_for_all() {
    let pool = ThreadPool::new(2).unwrap();
    let (ok, _, cancelled) = completed(&pool);
    let (slow, release) = common::gated(&pool, 99);
    let all = set(&[ok.id(), cancelled.id(), slow.id()]);
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        release.send(()).unwrap();
    });
    let start = Instant::now();
    let r = wait_guarded(vec![cancelled, ok, slow], None, ReturnWhen::FirstException);
    assert!(
        start.elapsed() >= Duration::from_millis(40),
        "returned before the last future finished"
    );
    assert_eq!(ids(&r.done), all);
    assert!(r.not_done.is_empty());
    releaser.join().unwrap();
}

/// A future cancelled while `wait(FirstException)` is blocked does not end it.
#[test]
fn first_exception_ignores_cancellation_during_wait() {
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let (slow, release) = common::gated(&pool, 99);
    let queued = pool.submit(mul, (1, 2)).unwrap();
    let (iq, is) = (queued.id(), slow.id());
    // Cancel through the pool, so the future itself can move into wait().
    let p = pool.clone();
    let canceller = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        p.shutdown(false, true);
    });
    let start = Instant::now();
    let r = wait_guarded(
        vec![slow, queued],
        Some(Duration::from_millis(150)),
        ReturnWhen::FirstException,
    );
    canceller.join().unwrap();
    // The cancellation happened, but the still-running future kept the wait
    // going until the timeout.
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!(ids(&r.done), set(&[iq]));
    assert_eq!(ids(&r.not_done), set(&[is]));
    assert!(r.done[0].cancelled());
    release.send(()).unwrap();
}

// CPython: test_all_completed
#[test]
fn all_completed() {
    let pool = ThreadPool::new(2).unwrap();
    let (ok, err, cancelled) = completed(&pool);
    let f1 = pool.submit(divide, (2, 0)).unwrap();
    let f2 = pool.submit(mul, (2, 21)).unwrap();
    let fs = vec![ok, cancelled, err, f1, f2];
    let all: HashSet<u64> = ids(&fs);
    let r = wait_guarded(fs, None, ReturnWhen::AllCompleted);
    assert_eq!(ids(&r.done), all);
    assert!(r.not_done.is_empty());
    assert!(r.done.iter().all(Future::done));
}

// CPython: test_timeout
#[test]
fn timeout_returns_partial_sets() {
    let pool = ThreadPool::new(2).unwrap();
    let (ok, err, cancelled) = completed(&pool);
    let (slow, release) = common::gated(&pool, 99);
    let want_done = set(&[ok.id(), err.id(), cancelled.id()]);
    let want_pending = set(&[slow.id()]);
    let start = Instant::now();
    let r = wait_guarded(
        vec![cancelled, err, ok, slow],
        Some(Duration::from_millis(50)),
        ReturnWhen::AllCompleted,
    );
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert_eq!(ids(&r.done), want_done);
    assert_eq!(ids(&r.not_done), want_pending);
    // The futures still work after a timed-out wait.
    release.send(()).unwrap();
    let slow = r.not_done.into_iter().next().unwrap();
    assert_eq!(slow.result_timeout(GUARD), Ok(99));
}

#[test]
fn timeout_applies_to_every_return_when() {
    let pool = ThreadPool::new(2).unwrap();
    for when in [
        ReturnWhen::FirstCompleted,
        ReturnWhen::FirstException,
        ReturnWhen::AllCompleted,
    ] {
        let (ok, _, cancelled) = completed(&pool);
        let (slow, release) = common::gated(&pool, 99);
        let is = slow.id();
        // FirstCompleted is satisfied by the done ones; the others time out.
        let fs = if when == ReturnWhen::FirstCompleted {
            vec![slow]
        } else {
            vec![ok, cancelled, slow]
        };
        let start = Instant::now();
        let r = wait_guarded(fs, Some(Duration::from_millis(40)), when);
        assert!(start.elapsed() >= Duration::from_millis(40), "{when:?}");
        assert_eq!(ids(&r.not_done), set(&[is]), "{when:?}");
        assert!(r.done.iter().all(Future::done));
        release.send(()).unwrap();
    }
}

#[test]
fn zero_timeout_returns_at_once() {
    let pool = ThreadPool::new(1).unwrap();
    let (slow, release) = common::gated(&pool, 99);
    for when in [
        ReturnWhen::FirstCompleted,
        ReturnWhen::FirstException,
        ReturnWhen::AllCompleted,
    ] {
        let queued = pool.submit(mul, (1, 1)).unwrap();
        let r = wait_guarded(vec![queued], Some(Duration::ZERO), when);
        assert!(r.done.is_empty());
        assert_eq!(r.not_done.len(), 1);
    }
    release.send(()).unwrap();
    slow.result_timeout(GUARD).unwrap();
}

#[test]
fn empty_input_returns_at_once() {
    for when in [
        ReturnWhen::FirstCompleted,
        ReturnWhen::FirstException,
        ReturnWhen::AllCompleted,
    ] {
        for timeout in [None, Some(Duration::ZERO), Some(Duration::from_secs(30))] {
            let start = Instant::now();
            let r = wait_guarded(Vec::new(), timeout, when);
            assert!(r.done.is_empty() && r.not_done.is_empty());
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{when:?} {timeout:?} waited on nothing"
            );
        }
    }
}

#[test]
fn already_done_futures_return_at_once() {
    let pool = ThreadPool::new(2).unwrap();
    for when in [
        ReturnWhen::FirstCompleted,
        ReturnWhen::FirstException,
        ReturnWhen::AllCompleted,
    ] {
        let (ok, err, cancelled) = completed(&pool);
        let all = set(&[ok.id(), err.id(), cancelled.id()]);
        let r = wait_guarded(vec![ok, err, cancelled], None, when);
        assert_eq!(ids(&r.done), all, "{when:?}");
        assert!(r.not_done.is_empty());
    }
}

/// Both sets keep the order in which the futures were given.
#[test]
fn sets_keep_input_order() {
    let pool = ThreadPool::new(2).unwrap();
    let fs: Vec<_> = (0..20).map(|i| pool.submit(mul, (i, 2)).unwrap()).collect();
    let order: Vec<u64> = fs.iter().map(Future::id).collect();
    let r = wait_guarded(fs, None, ReturnWhen::AllCompleted);
    assert_eq!(r.done.iter().map(Future::id).collect::<Vec<_>>(), order);
    for (i, f) in r.done.into_iter().enumerate() {
        assert_eq!(f.result(), Ok(i as u32 * 2));
    }
}

#[test]
fn futures_from_two_pools_mix() {
    let a = ThreadPool::new(1).unwrap();
    let b = ThreadPool::new(1).unwrap();
    let (fa, release_a) = common::gated(&a, 99);
    let (fb, release_b) = common::gated(&b, 99);
    let qa = a.submit(mul, (2, 2)).unwrap();
    let qb = b.submit(mul, (3, 3)).unwrap();
    let (ia, ib, iqa, iqb) = (fa.id(), fb.id(), qa.id(), qb.id());

    // Only pool b makes progress: FirstCompleted returns b's first future.
    release_b.send(()).unwrap();
    let r = wait_guarded(vec![fa, qa, fb], None, ReturnWhen::FirstCompleted);
    assert_eq!(ids(&r.done), set(&[ib]));
    assert_eq!(ids(&r.not_done), set(&[ia, iqa]));

    release_a.send(()).unwrap();
    let mut fs = r.not_done;
    fs.extend(r.done);
    fs.push(qb);
    let r = wait_guarded(fs, None, ReturnWhen::AllCompleted);
    assert_eq!(ids(&r.done), set(&[ia, iqa, ib, iqb]));
}

/// A one-shot event, like Python's `threading.Event`.
#[derive(Default)]
struct Event {
    set: Mutex<bool>,
    cond: Condvar,
}

impl Event {
    fn set(&self) {
        *self.set.lock().unwrap() = true;
        self.cond.notify_all();
    }
    fn wait(&self) {
        let guard = self.set.lock().unwrap();
        let (guard, _) = self
            .cond
            .wait_timeout_while(guard, GUARD, |set| !*set)
            .unwrap();
        assert!(*guard, "event never set");
    }
}

// CPython: ThreadPoolWaitTests.test_pending_calls_race — many calls released
// at once while the caller waits on all of them.
#[test]
fn pending_calls_race() {
    let pool = ThreadPool::new(4).unwrap();
    for round in 0..20 {
        let event = Arc::new(Event::default());
        let fs: Vec<_> = (0..100)
            .map(|i| {
                let event = event.clone();
                pool.spawn(move || {
                    event.wait();
                    i
                })
                .unwrap()
            })
            .collect();
        event.set();
        let r = wait_guarded(fs, None, ReturnWhen::AllCompleted);
        assert_eq!(r.done.len(), 100, "round {round}");
        assert!(r.not_done.is_empty());
        let total: u32 = r.done.into_iter().map(|f| f.result().unwrap()).sum();
        assert_eq!(total, 4950);
    }
}

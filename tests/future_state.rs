//! The future's state machine, ported from CPython's `test_future.py`
//! (`test_cancel`, `test_cancelled`, `test_done`, `test_running`,
//! `test_result_with_timeout`, `test_result_with_success`,
//! `test_result_with_cancel`, `test_exception_with_timeout`,
//! `test_exception_with_success`) plus the Rust-specific guarantees of the
//! contract (ids, `Send + Sync`, dropping a future does not cancel it).
//!
//! A future is held *Pending* by queueing it behind a task that occupies the
//! only worker of a 1-thread pool, and *Running* by a task that blocks on a
//! channel the test releases; no test relies on sleeping for correctness.

use fanout::{Error, Executor, Future, State, ThreadPool};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const GUARD: Duration = Duration::from_secs(20);

/// A task that is running on a pool worker until `release` is sent (or dropped).
struct Held {
    fut: Future<u32>,
    release: Sender<()>,
}

/// Submits a task that blocks its worker, and returns once it is running.
fn hold(pool: &ThreadPool) -> Held {
    let (started_tx, started_rx) = mpsc::channel();
    let (release, release_rx): (Sender<()>, Receiver<()>) = mpsc::channel();
    let fut = pool
        .spawn(move || {
            started_tx.send(()).unwrap();
            // Dropping `release` (e.g. a failing test) also lets it go.
            let _ = release_rx.recv_timeout(GUARD);
            7
        })
        .unwrap();
    started_rx
        .recv_timeout(GUARD)
        .expect("the blocking task never started");
    Held { fut, release }
}

fn add(a: u32, b: u32) -> u32 {
    a + b
}

fn explode(code: u32) -> u32 {
    panic!("exploded with code {code}")
}

fn assert_flags(f: &Future<u32>, state: State) {
    assert_eq!(f.state(), state);
    assert_eq!(
        f.done(),
        matches!(state, State::Cancelled | State::Finished),
        "done() in {state:?}"
    );
    assert_eq!(
        f.running(),
        state == State::Running,
        "running() in {state:?}"
    );
    assert_eq!(
        f.cancelled(),
        state == State::Cancelled,
        "cancelled() in {state:?}"
    );
}

// CPython: test_done / test_running / test_cancelled on PENDING_FUTURE,
// test_result_with_timeout and test_exception_with_timeout for PENDING.
#[test]
fn pending_future_flags_and_timeouts() {
    let pool = ThreadPool::new(1).unwrap();
    let held = hold(&pool);
    let queued = pool.submit(add, (1, 2)).unwrap();
    assert_flags(&queued, State::Pending);

    assert!(!queued.wait(Some(Duration::from_millis(20))));
    assert!(!queued.wait(Some(Duration::ZERO)));
    match queued.exception(Some(Duration::ZERO)) {
        Some(Error::Timeout { .. }) => {}
        other => panic!("exception(0) on a pending future gave {other:?}"),
    }
    // Still pending after those polls.
    assert_flags(&queued, State::Pending);

    let other = pool.submit(add, (3, 4)).unwrap();
    let start = Instant::now();
    match other.result_timeout(Duration::from_millis(30)) {
        Err(Error::Timeout { .. }) => {}
        r => panic!("result_timeout on a pending future gave {r:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(30));

    held.release.send(()).unwrap();
    assert_eq!(queued.result_timeout(GUARD), Ok(3));
    assert_eq!(held.fut.result_timeout(GUARD), Ok(7));
}

// CPython: RUNNING_FUTURE in test_done/test_running/test_cancelled,
// test_cancel (running → false, state unchanged), the timeout tests.
#[test]
fn running_future_flags_cancel_and_timeouts() {
    let pool = ThreadPool::new(1).unwrap();
    let held = hold(&pool);
    assert_flags(&held.fut, State::Running);

    assert!(!held.fut.cancel(), "a running future cannot be cancelled");
    assert_flags(&held.fut, State::Running);
    assert!(!held.fut.cancel());

    assert!(!held.fut.wait(Some(Duration::from_millis(10))));
    match held.fut.exception(Some(Duration::from_millis(10))) {
        Some(Error::Timeout { .. }) => {}
        other => panic!("exception(timeout) on a running future gave {other:?}"),
    }
    assert_flags(&held.fut, State::Running);

    held.release.send(()).unwrap();
    assert!(held.fut.wait(Some(GUARD)));
    assert_flags(&held.fut, State::Finished);
    assert_eq!(held.fut.exception(Some(Duration::ZERO)), None);
    assert_eq!(held.fut.result(), Ok(7));
}

// CPython: test_cancel (pending → true, cancelled again → true), CANCELLED_FUTURE
// in the flag tests, test_result_with_timeout / test_exception_with_timeout.
#[test]
fn cancelled_future_flags_and_outcomes() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    fn count() -> u32 {
        RAN.fetch_add(1, Ordering::SeqCst);
        1
    }

    let pool = ThreadPool::new(1).unwrap();
    let held = hold(&pool);
    let a = pool.submit(count, ()).unwrap();
    let b = pool.submit(count, ()).unwrap();
    let c = pool.submit(count, ()).unwrap();
    let d = pool.submit(count, ()).unwrap();

    assert!(a.cancel(), "pending → cancelled");
    assert_flags(&a, State::Cancelled);
    assert!(a.cancel(), "cancelling twice is still true");
    assert_flags(&a, State::Cancelled);
    // Cancelled is done: a zero timeout answers at once.
    assert!(a.wait(Some(Duration::ZERO)));
    assert_eq!(a.exception(Some(Duration::ZERO)), Some(Error::Cancelled));
    assert_eq!(a.exception(None), Some(Error::Cancelled));
    assert_eq!(a.result_timeout(Duration::ZERO), Err(Error::Cancelled));

    assert!(b.cancel());
    assert_eq!(b.result(), Err(Error::Cancelled));
    assert!(c.cancel());
    assert_eq!(c.result_timeout(GUARD), Err(Error::Cancelled));

    held.release.send(()).unwrap();
    assert_eq!(d.result_timeout(GUARD), Ok(1));
    assert!(!finished_refuses_cancel(&pool));
    pool.shutdown(true, false);
    assert_eq!(
        RAN.load(Ordering::SeqCst),
        1,
        "cancelled calls must never run"
    );
    assert_eq!(held.fut.result(), Ok(7));
}

/// A finished future refuses cancellation.
fn finished_refuses_cancel(pool: &ThreadPool) -> bool {
    let f = pool.submit(add, (0, 0)).unwrap();
    assert!(f.wait(Some(GUARD)));
    f.cancel()
}

// CPython: SUCCESSFUL_FUTURE in the flag tests, test_cancel (finished → false),
// test_result_with_timeout / test_exception_with_timeout.
#[test]
fn finished_ok_future_flags_and_outcomes() {
    let pool = ThreadPool::new(1).unwrap();
    let f = pool.submit(add, (40, 2)).unwrap();
    assert!(f.wait(Some(GUARD)));
    assert_flags(&f, State::Finished);
    assert!(!f.cancel(), "a finished future cannot be cancelled");
    assert_flags(&f, State::Finished);
    assert_eq!(f.exception(Some(Duration::ZERO)), None);
    assert_eq!(f.exception(None), None);
    assert_eq!(f.result_timeout(Duration::ZERO), Ok(42));
}

// CPython: EXCEPTION_FUTURE in the flag tests, test_cancel (finished with an
// exception → false), test_result_with_timeout / test_exception_with_timeout.
#[test]
fn finished_err_future_flags_and_outcomes() {
    let pool = ThreadPool::new(1).unwrap();
    let f = pool.submit(explode, (9,)).unwrap();
    assert!(f.wait(Some(GUARD)));
    assert_flags(&f, State::Finished);
    assert!(!f.cancel());
    assert_flags(&f, State::Finished);

    let check = |e: Option<Error>| match e {
        Some(Error::Panicked { message, .. }) => assert_eq!(message, "exploded with code 9"),
        other => panic!("expected the task's panic, got {other:?}"),
    };
    check(f.exception(Some(Duration::ZERO)));
    // `exception` does not consume the error: asking again gives it again.
    check(f.exception(None));
    check(f.result_timeout(Duration::ZERO).err());
}

// CPython: test_result_with_success — a caller blocked in result() is woken
// when another thread lets the call finish.
#[test]
fn blocked_result_is_woken_by_completion() {
    let pool = ThreadPool::new(1).unwrap();
    let held = hold(&pool);
    let release = held.release;
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        release.send(()).unwrap();
    });
    assert_eq!(held.fut.result_timeout(GUARD), Ok(7));
    releaser.join().unwrap();
}

// CPython: test_result_with_cancel — a caller blocked on a pending future is
// woken by a cancel from another thread. `result` consumes the future, so the
// blocked call here is `exception`/`wait` on a shared future.
#[test]
fn blocked_waiters_are_woken_by_cancel() {
    let pool = ThreadPool::new(1).unwrap();
    let held = hold(&pool);
    let queued = Arc::new(pool.submit(add, (1, 1)).unwrap());

    let (tx, rx) = mpsc::channel();
    let mut blocked = Vec::new();
    for i in 0..4 {
        let f = queued.clone();
        let tx = tx.clone();
        blocked.push(thread::spawn(move || {
            if i % 2 == 0 {
                tx.send(format!("{:?}", f.exception(Some(GUARD)))).unwrap();
            } else {
                tx.send(format!("wait={}", f.wait(Some(GUARD)))).unwrap();
            }
        }));
    }
    // Give the threads a moment to block (the test is correct either way).
    thread::sleep(Duration::from_millis(20));
    assert!(queued.cancel());
    let mut got: Vec<String> = (0..4)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(5))
                .expect("a waiter was not woken")
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "Some(Cancelled)",
            "Some(Cancelled)",
            "wait=true",
            "wait=true"
        ]
    );
    for t in blocked {
        t.join().unwrap();
    }
    held.release.send(()).unwrap();
}

// CPython: test_exception_with_success — a caller blocked in exception() sees
// the error set later by the worker.
#[test]
fn blocked_exception_sees_later_error() {
    let pool = ThreadPool::new(1).unwrap();
    let (release, release_rx) = mpsc::channel::<()>();
    let f = Arc::new(
        pool.spawn(move || -> u32 {
            let _ = release_rx.recv_timeout(GUARD);
            panic!("late failure")
        })
        .unwrap(),
    );
    let f2 = f.clone();
    let waiter = thread::spawn(move || f2.exception(Some(GUARD)));
    thread::sleep(Duration::from_millis(10));
    release.send(()).unwrap();
    match waiter.join().unwrap() {
        Some(Error::Panicked { message, .. }) => assert_eq!(message, "late failure"),
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[test]
fn ids_are_unique_across_pools_and_threads() {
    let a = Arc::new(ThreadPool::new(2).unwrap());
    let b = Arc::new(ThreadPool::new(2).unwrap());
    let mut handles = Vec::new();
    for t in 0..4 {
        let pool = if t % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(thread::spawn(move || {
            (0..500)
                .map(|i| pool.submit(add, (i, 1)).unwrap().id())
                .collect::<Vec<u64>>()
        }));
    }
    let mut ids = HashSet::new();
    for h in handles {
        for id in h.join().unwrap() {
            assert!(ids.insert(id), "duplicate future id {id}");
        }
    }
    assert_eq!(ids.len(), 2000);
}

#[test]
fn dropping_a_future_does_not_cancel_the_call() {
    let pool = ThreadPool::new(1).unwrap();
    let held = hold(&pool);
    let (tx, rx) = mpsc::channel();
    let f = pool.spawn(move || tx.send("ran").unwrap()).unwrap();
    assert_eq!(f.state(), State::Pending);
    drop(f);
    held.release.send(()).unwrap();
    assert_eq!(rx.recv_timeout(GUARD), Ok("ran"));
}

#[test]
fn future_is_send_sync_and_debug_shows_state() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Future<u32>>();
    assert_send_sync::<Future<String>>();
    // Only `Send` is needed of the output for the future to be `Sync`.
    assert_send_sync::<Future<std::cell::Cell<u8>>>();

    let pool = ThreadPool::new(1).unwrap();
    let f = pool.submit(add, (1, 2)).unwrap();
    assert!(f.wait(Some(GUARD)));
    let dbg = format!("{f:?}");
    assert!(dbg.contains(&f.id().to_string()), "{dbg}");
    assert!(dbg.contains("Finished"), "{dbg}");
}

#[test]
fn futures_move_between_threads_before_completion() {
    let pool = ThreadPool::new(1).unwrap();
    let held = hold(&pool);
    let f = pool.submit(add, (2, 3)).unwrap();
    let waiter = thread::spawn(move || f.result_timeout(GUARD));
    held.release.send(()).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(5));
}

//! Done-callbacks, ported from CPython's `test_future.py`
//! (`test_done_callback_with_result`, `..._with_exception`, `..._with_cancel`,
//! `..._raises`, `..._already_successful`, `..._already_failed`,
//! `..._already_cancelled`, `..._raises_already_succeeded`) plus the
//! contract's guarantees: registration order, exactly once, which thread runs
//! them, and that the state is final when they run.

use fanout::{Error, Executor, State, ThreadPool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

mod common;
use common::GUARD;

/// Captures log records so the tests can see that a panicking callback is logged.
struct Capture;

static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        if record.level() <= log::Level::Warn {
            LOGGED
                .lock()
                .unwrap()
                .push(format!("{} {}", record.level(), record.args()));
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
    });
}

fn logged_containing(needle: &str) -> Vec<String> {
    LOGGED
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

fn five() -> u32 {
    5
}

fn fail() -> u32 {
    panic!("test")
}

// CPython: test_done_callback_with_result
#[test]
fn callback_registered_before_completion_gets_the_result() {
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::hold(&pool);
    let f = pool.submit(five, ()).unwrap();
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |r| tx.send(r.clone()).unwrap());
    assert!(rx.try_recv().is_err(), "ran before the future was done");
    release.send(()).unwrap();
    assert_eq!(rx.recv_timeout(GUARD).unwrap(), Ok(5));
    assert_eq!(
        f.result(),
        Ok(5),
        "the callback does not consume the result"
    );
    blocker.result().unwrap();
}

// CPython: test_done_callback_with_exception
#[test]
fn callback_registered_before_failure_gets_the_error() {
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::hold(&pool);
    let f = pool.submit(fail, ()).unwrap();
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |r| tx.send(r.clone()).unwrap());
    release.send(()).unwrap();
    match rx.recv_timeout(GUARD).unwrap() {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "test"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    blocker.result().unwrap();
}

// CPython: test_done_callback_with_cancel — the callback runs on the
// cancelling thread, before cancel() returns.
#[test]
fn callback_runs_on_cancel_with_cancelled() {
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::hold(&pool);
    let f = pool.submit(five, ()).unwrap();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    f.add_done_callback(move |r| {
        *s.lock().unwrap() = Some((r.clone(), thread::current().id()));
    });
    assert!(f.cancel());
    let (outcome, tid) = seen
        .lock()
        .unwrap()
        .clone()
        .expect("callback did not run during cancel()");
    assert_eq!(outcome, Err(Error::Cancelled));
    assert_eq!(tid, thread::current().id());
    release.send(()).unwrap();
    blocker.result().unwrap();
}

// Cancelled by `shutdown(cancel_futures = true)`: callbacks see Cancelled too.
#[test]
fn callback_runs_when_shutdown_cancels() {
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::hold(&pool);
    let (tx, rx) = mpsc::channel();
    let fs: Vec<_> = (0..5).map(|_| pool.submit(five, ()).unwrap()).collect();
    for (i, f) in fs.iter().enumerate() {
        let tx = tx.clone();
        f.add_done_callback(move |r| tx.send((i, r.clone())).unwrap());
    }
    pool.shutdown(false, true);
    let mut got: Vec<_> = (0..5).map(|_| rx.recv_timeout(GUARD).unwrap()).collect();
    got.sort_by_key(|(i, _)| *i);
    for (i, (j, r)) in got.into_iter().enumerate() {
        assert_eq!((i, r), (j, Err(Error::Cancelled)));
    }
    release.send(()).unwrap();
    blocker.result().unwrap();
}

// CPython: test_done_callback_already_successful / _already_failed /
// _already_cancelled — runs at once, on the caller's thread.
#[test]
fn callback_added_after_done_runs_at_once_on_caller_thread() {
    let pool = ThreadPool::new(1).unwrap();
    let ok = pool.submit(five, ()).unwrap();
    let bad = pool.submit(fail, ()).unwrap();
    let (blocker, release) = common::hold(&pool);
    let cancelled = pool.submit(five, ()).unwrap();
    assert!(cancelled.cancel());
    assert!(ok.wait(Some(GUARD)) && bad.wait(Some(GUARD)));

    let me = thread::current().id();
    for (f, expect) in [
        (&ok, "Ok(5)"),
        (&bad, "Panicked"),
        (&cancelled, "Err(Cancelled)"),
    ] {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        f.add_done_callback(move |r| {
            *s.lock().unwrap() = Some((format!("{r:?}"), thread::current().id()));
        });
        let (text, tid) = seen.lock().unwrap().take().expect("did not run at once");
        assert!(text.contains(expect), "{text} lacks {expect}");
        assert_eq!(
            tid, me,
            "an already-done future runs the callback on the caller"
        );
    }
    release.send(()).unwrap();
    blocker.result().unwrap();
}

#[test]
fn callbacks_run_on_the_completing_worker_thread() {
    let pool = ThreadPool::builder()
        .workers(1)
        .thread_name("cb-worker")
        .build()
        .unwrap();
    let (blocker, release) = common::hold(&pool);
    let f = pool.submit(five, ()).unwrap();
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |_| {
        tx.send(thread::current().name().map(str::to_owned))
            .unwrap()
    });
    release.send(()).unwrap();
    assert_eq!(
        rx.recv_timeout(GUARD).unwrap().as_deref(),
        Some("cb-worker-0")
    );
    blocker.result().unwrap();
}

#[test]
fn callbacks_run_in_registration_order_exactly_once() {
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::hold(&pool);
    let f = pool.submit(five, ()).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 0..20 {
        let order = order.clone();
        f.add_done_callback(move |_| order.lock().unwrap().push(i));
    }
    release.send(()).unwrap();
    assert!(f.wait(Some(GUARD)));
    // Those registered after completion run at once on this thread, still
    // after the first 20 (which the worker may still be running).
    for i in 20..25 {
        let order = order.clone();
        f.add_done_callback(move |_| order.lock().unwrap().push(i));
    }
    assert_eq!(f.result_timeout(GUARD), Ok(5));
    let got = order.lock().unwrap().clone();
    assert_eq!(got, (0..25).collect::<Vec<_>>());
    blocker.result().unwrap();
}

/// Callbacks added concurrently from many threads while the future completes
/// each run exactly once: none lost in the race, none run twice.
#[test]
fn callbacks_racing_completion_run_exactly_once() {
    let pool = ThreadPool::new(2).unwrap();
    for _round in 0..50 {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let f = Arc::new(
            pool.spawn(move || {
                let _ = go_rx.recv_timeout(GUARD);
                1u32
            })
            .unwrap(),
        );
        let counts: Arc<Vec<AtomicUsize>> =
            Arc::new((0..400).map(|_| AtomicUsize::new(0)).collect());
        let barrier = Arc::new(std::sync::Barrier::new(5));
        let mut regs = Vec::new();
        for t in 0..4 {
            let (f, counts, barrier) = (f.clone(), counts.clone(), barrier.clone());
            regs.push(thread::spawn(move || {
                barrier.wait();
                for k in 0..100 {
                    let counts = counts.clone();
                    f.add_done_callback(move |r| {
                        assert_eq!(r, &Ok(1));
                        counts[t * 100 + k].fetch_add(1, Ordering::SeqCst);
                    });
                }
            }));
        }
        barrier.wait();
        go_tx.send(()).unwrap();
        for r in regs {
            r.join().unwrap();
        }
        // All registrations returned; those that ran on the worker may still
        // be running: result() waits for the callbacks to release the outcome.
        let f = Arc::try_unwrap(f).expect("registrar threads are done");
        assert_eq!(f.result_timeout(GUARD), Ok(1));
        for (i, c) in counts.iter().enumerate() {
            assert_eq!(c.load(Ordering::SeqCst), 1, "callback {i}");
        }
    }
}

/// Inside a callback the future's state is already final: checked through a
/// shared handle to the same future.
#[test]
fn state_is_final_inside_callbacks() {
    let pool = ThreadPool::new(1).unwrap();
    for outcome in ["ok", "panic", "cancel"] {
        let (blocker, release) = common::hold(&pool);
        let f = Arc::new(match outcome {
            "panic" => pool.submit(fail, ()).unwrap(),
            _ => pool.submit(five, ()).unwrap(),
        });
        let (tx, rx) = mpsc::channel();
        let inner = f.clone();
        f.add_done_callback(move |r| {
            let view = (
                inner.state(),
                inner.done(),
                inner.running(),
                inner.cancel(),
                inner.wait(Some(Duration::ZERO)),
                inner.exception(Some(Duration::ZERO)),
            );
            // A callback added from inside a callback runs at once, too.
            let (ntx, nrx) = mpsc::channel();
            inner.add_done_callback(move |r2| ntx.send(r2.is_ok()).unwrap());
            let nested = nrx.try_recv().ok();
            tx.send((format!("{r:?}"), view, nested)).unwrap();
        });
        if outcome == "cancel" {
            assert!(f.cancel());
        }
        release.send(()).unwrap();
        let (r, (state, done, running, cancel, waited, exc), nested) =
            rx.recv_timeout(GUARD).unwrap();
        assert!(
            done && waited && !running,
            "{outcome}: not final inside the callback"
        );
        match outcome {
            "ok" => {
                assert_eq!(state, State::Finished);
                assert!(!cancel);
                assert_eq!(exc, None);
                assert_eq!(r, "Ok(5)");
                assert_eq!(nested, Some(true));
            }
            "panic" => {
                assert_eq!(state, State::Finished);
                assert!(!cancel);
                assert!(matches!(exc, Some(Error::Panicked { .. })));
                assert_eq!(nested, Some(false));
            }
            _ => {
                assert_eq!(state, State::Cancelled);
                assert!(cancel, "cancel() on a cancelled future is true");
                assert_eq!(exc, Some(Error::Cancelled));
                assert_eq!(nested, Some(false));
            }
        }
        blocker.result().unwrap();
    }
}

// CPython: test_done_callback_raises — a panicking callback is caught and
// logged; the callbacks after it still run; the worker survives.
#[test]
fn panicking_callback_is_contained_and_logged() {
    capture_logs();
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::hold(&pool);
    let f = pool.submit(five, ()).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r1 = ran.clone();
    f.add_done_callback(move |_| {
        r1.fetch_add(1, Ordering::SeqCst);
        panic!("doh! from a callback registered early");
    });
    let r2 = ran.clone();
    f.add_done_callback(move |_| {
        r2.fetch_add(10, Ordering::SeqCst);
    });
    release.send(()).unwrap();
    assert_eq!(f.result_timeout(GUARD), Ok(5));
    assert_eq!(ran.load(Ordering::SeqCst), 11);
    // The worker that ran the panicking callback still serves.
    assert_eq!(pool.submit(five, ()).unwrap().result_timeout(GUARD), Ok(5));
    let logs = logged_containing("doh! from a callback registered early");
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs[0].starts_with("ERROR"), "{logs:?}");
    blocker.result().unwrap();
}

// CPython: test_done_callback_raises_already_succeeded — the panic of a
// callback run at once does not reach the caller.
#[test]
fn panicking_callback_on_done_future_does_not_reach_caller() {
    capture_logs();
    let pool = ThreadPool::new(1).unwrap();
    let f = pool.submit(five, ()).unwrap();
    assert!(f.wait(Some(GUARD)));
    f.add_done_callback(|_| panic!("doh! from a late callback"));
    let after = Arc::new(AtomicUsize::new(0));
    let a = after.clone();
    f.add_done_callback(move |_| {
        a.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(after.load(Ordering::SeqCst), 1);
    assert_eq!(f.result(), Ok(5));
    assert_eq!(logged_containing("doh! from a late callback").len(), 1);
}

#[test]
fn callbacks_see_non_clone_outputs_by_reference() {
    struct NotClone(String);
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::hold(&pool);
    let f = pool.spawn(|| NotClone("payload".into())).unwrap();
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |r| tx.send(r.as_ref().unwrap().0.len()).unwrap());
    release.send(()).unwrap();
    assert_eq!(rx.recv_timeout(GUARD).unwrap(), 7);
    assert_eq!(f.result().unwrap().0, "payload");
    blocker.result().unwrap();
}

/// A slow callback on the worker does not let `result()` take the value out
/// from under it: the owner gets the value after the callback is done.
#[test]
fn result_waits_for_a_running_callback() {
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::hold(&pool);
    let f = pool.spawn(|| vec![1u8; 1024]).unwrap();
    let (in_cb_tx, in_cb_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let finished = Arc::new(AtomicUsize::new(0));
    let fin = finished.clone();
    f.add_done_callback(move |r| {
        in_cb_tx.send(()).unwrap();
        let _ = go_rx.recv_timeout(GUARD);
        // Still readable: the owner has not taken it.
        assert_eq!(r.as_ref().unwrap().len(), 1024);
        fin.fetch_add(1, Ordering::SeqCst);
    });
    release.send(()).unwrap();
    in_cb_rx.recv_timeout(GUARD).unwrap();
    assert!(f.done(), "state is final while callbacks run");
    let taker = thread::spawn(move || f.result_timeout(GUARD).map(|v| v.len()));
    thread::sleep(Duration::from_millis(20));
    go_tx.send(()).unwrap();
    assert_eq!(taker.join().unwrap(), Ok(1024));
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    blocker.result().unwrap();
}

/// `exception(timeout)` on a failed future honours its timeout and answers
/// even while a slow done-callback is still running on the worker.
#[test]
fn exception_is_not_held_up_by_a_running_callback() {
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::hold(&pool);
    let f = Arc::new(pool.submit(fail, ()).unwrap());
    let (in_cb_tx, in_cb_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    f.add_done_callback(move |_| {
        in_cb_tx.send(()).unwrap();
        let _ = go_rx.recv_timeout(GUARD);
    });
    release.send(()).unwrap();
    in_cb_rx.recv_timeout(GUARD).unwrap();
    assert!(f.done());
    let (tx, rx) = mpsc::channel();
    let f2 = f.clone();
    thread::spawn(move || {
        let start = std::time::Instant::now();
        let e = f2.exception(Some(Duration::from_millis(50)));
        tx.send((e, start.elapsed())).unwrap();
    });
    let got = rx.recv_timeout(Duration::from_secs(2));
    go_tx.send(()).unwrap();
    let (e, took) = got.expect("exception(50 ms) blocked until the callback finished");
    assert!(
        matches!(e, Some(Error::Panicked { .. })),
        "a done future's error, got {e:?}"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    blocker.result().unwrap();
}

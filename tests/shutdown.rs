//! Executor shutdown, ported from CPython's `test_shutdown.py`
//! (`test_run_after_shutdown`, `test_hang_issue12364`, `test_cancel_futures`,
//! `test_hang_gh94440`, `test_threads_terminate`, `test_context_manager_shutdown`,
//! `test_del_shutdown`, `test_shutdown_no_wait`, `test_cancel_futures_wait_false`)
//! and the fix for CPython gh-87893 (futures cancelled by
//! `shutdown(cancel_futures=True)` must wake whoever waits on them).
//!
//! Every blocking call runs under a timeout guard, so a hang fails the test.

use fanout::{as_completed, wait, Error, Executor, Future, ReturnWhen, State, ThreadPool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::GUARD;

fn pow(base: u64, exp: u32) -> u64 {
    base.pow(exp)
}

/// Runs `f` on another thread; panics if it does not return within `limit`.
fn within<R: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

// CPython: test_run_after_shutdown
#[test]
fn submit_after_shutdown_fails() {
    let pool = ThreadPool::new(2).unwrap();
    pool.shutdown(true, false);
    match pool.submit(pow, (2, 5)) {
        Err(e @ Error::Shutdown) => {
            assert_eq!(e.to_string(), "cannot schedule new futures after shutdown")
        }
        other => panic!("expected Shutdown, got {other:?}"),
    }
    assert!(matches!(pool.spawn(|| 1), Err(Error::Shutdown)));
}

#[test]
fn shutdown_is_idempotent() {
    let pool = Arc::new(ThreadPool::new(2).unwrap());
    let f = pool.submit(pow, (3, 2)).unwrap();
    for (w, c) in [
        (true, false),
        (false, false),
        (true, true),
        (false, true),
        (true, false),
    ] {
        let p = pool.clone();
        within(GUARD, "a repeated shutdown", move || p.shutdown(w, c));
    }
    assert_eq!(f.result(), Ok(9));
    assert!(matches!(pool.submit(pow, (1, 1)), Err(Error::Shutdown)));
}

// CPython: test_hang_issue12364
#[test]
fn shutdown_wait_lets_queued_work_finish() {
    let pool = ThreadPool::new(2).unwrap();
    let fs: Vec<_> = (0..50)
        .map(|i| {
            pool.spawn(move || {
                thread::sleep(Duration::from_millis(1));
                i
            })
            .unwrap()
        })
        .collect();
    pool.shutdown(true, false);
    for (i, f) in fs.into_iter().enumerate() {
        assert!(f.done(), "shutdown(wait) returned before queued work ran");
        assert_eq!(f.result(), Ok(i));
    }
}

/// `shutdown(wait = true)` blocks until the running call has finished.
#[test]
fn shutdown_wait_blocks_for_running_work() {
    let pool = ThreadPool::new(1).unwrap();
    let (f, release) = common::gated(&pool, 1);
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        release.send(()).unwrap();
    });
    let start = Instant::now();
    pool.shutdown(true, false);
    assert!(start.elapsed() >= Duration::from_millis(40));
    assert!(
        f.done(),
        "shutdown(wait) returned while the call was running"
    );
    assert_eq!(f.result(), Ok(1));
    releaser.join().unwrap();
}

// CPython: test_shutdown_no_wait, test_hang_gh83386 — shutdown(wait=false)
// returns at once, and work queued before it still completes.
#[test]
fn shutdown_no_wait_returns_at_once_and_work_completes() {
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let (f, release) = common::gated(&pool, 1);
    let queued: Vec<_> = (0..5).map(|i| pool.submit(pow, (2, i)).unwrap()).collect();
    let p = pool.clone();
    within(Duration::from_secs(5), "shutdown(wait=false)", move || {
        p.shutdown(false, false)
    });
    assert_eq!(f.state(), State::Running);
    assert!(queued.iter().all(|q| q.state() == State::Pending));
    assert!(matches!(pool.submit(pow, (1, 1)), Err(Error::Shutdown)));
    release.send(()).unwrap();
    for (i, q) in queued.into_iter().enumerate() {
        assert_eq!(q.result_timeout(GUARD), Ok(1 << i));
    }
    assert_eq!(f.result(), Ok(1));
}

// CPython: test_cancel_futures, test_cancel_futures_wait_false — queued calls
// are cancelled and done as soon as shutdown returns; running ones finish.
#[test]
fn cancel_futures_cancels_queued_calls_at_once() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    fn record(x: u64) -> u64 {
        RAN.fetch_add(1, Ordering::SeqCst);
        x
    }
    let pool = ThreadPool::new(2).unwrap();
    let (a, ra) = common::gated(&pool, 1);
    let (b, rb) = common::gated(&pool, 1);
    let fs: Vec<_> = (0..48)
        .map(|i| pool.submit(record, (i,)).unwrap())
        .collect();
    pool.shutdown(false, true);
    for f in &fs {
        assert_eq!(f.state(), State::Cancelled, "not cancelled at once");
        assert!(f.done());
    }
    assert!(a.running() && b.running());
    ra.send(()).unwrap();
    rb.send(()).unwrap();
    assert_eq!(a.result_timeout(GUARD), Ok(1));
    assert_eq!(b.result_timeout(GUARD), Ok(1));
    for f in fs {
        assert_eq!(f.result(), Err(Error::Cancelled));
    }
    pool.shutdown(true, false);
    assert_eq!(RAN.load(Ordering::SeqCst), 0);
}

#[test]
fn cancel_futures_with_wait() {
    let pool = ThreadPool::new(2).unwrap();
    let (a, ra) = common::gated(&pool, 1);
    let (b, rb) = common::gated(&pool, 1);
    let fs: Vec<_> = (0..20).map(|i| pool.submit(pow, (i, 1)).unwrap()).collect();
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        ra.send(()).unwrap();
        rb.send(()).unwrap();
    });
    pool.shutdown(true, true);
    assert_eq!((a.state(), b.state()), (State::Finished, State::Finished));
    assert!(fs.iter().all(Future::cancelled));
    releaser.join().unwrap();
}

// CPython gh-87893: a thread blocked in wait(ALL_COMPLETED) on queued futures
// must be woken when shutdown(cancel_futures=True) cancels them.
#[test]
fn cancel_futures_wakes_a_blocked_wait() {
    let pool = ThreadPool::new(1).unwrap();
    let (running, release) = common::gated(&pool, 1);
    let queued: Vec<_> = (0..10).map(|i| pool.submit(pow, (i, 2)).unwrap()).collect();
    let ids: Vec<u64> = queued.iter().map(Future::id).collect();
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        tx.send(wait(queued, None, ReturnWhen::AllCompleted))
            .unwrap();
    });
    // Let the waiter block first (the test holds either way).
    thread::sleep(Duration::from_millis(30));
    pool.shutdown(false, true);
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("gh-87893: wait() was not woken by shutdown(cancel_futures)");
    assert!(r.not_done.is_empty());
    assert_eq!(r.done.iter().map(Future::id).collect::<Vec<_>>(), ids);
    assert!(r.done.iter().all(Future::cancelled));
    waiter.join().unwrap();
    release.send(()).unwrap();
    assert_eq!(running.result_timeout(GUARD), Ok(1));
}

/// The same for as_completed() and result() blocked on queued futures.
#[test]
fn cancel_futures_wakes_as_completed_and_result() {
    let pool = ThreadPool::new(1).unwrap();
    let (running, release) = common::gated(&pool, 1);
    let for_iter: Vec<_> = (0..5).map(|i| pool.submit(pow, (i, 2)).unwrap()).collect();
    let for_result = pool.submit(pow, (7, 2)).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    thread::spawn(move || {
        let states: Vec<String> = as_completed(for_iter, None)
            .map(|f| format!("{:?}", f.unwrap().state()))
            .collect();
        tx.send(states.join(",")).unwrap();
    });
    thread::spawn(move || {
        tx2.send(format!("{:?}", for_result.result())).unwrap();
    });
    thread::sleep(Duration::from_millis(30));
    pool.shutdown(false, true);
    let mut got: Vec<String> = (0..2)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a blocked caller was not woken by shutdown(cancel_futures)")
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "Cancelled,Cancelled,Cancelled,Cancelled,Cancelled",
            "Err(Cancelled)"
        ]
    );
    release.send(()).unwrap();
    assert_eq!(running.result_timeout(GUARD), Ok(1));
}

// CPython: test_del_shutdown, test_context_manager_shutdown — dropping the
// pool is shutdown(wait=true): work queued before the drop completes.
#[test]
fn drop_waits_for_queued_work() {
    let pool = ThreadPool::new(1).unwrap();
    let (running, release) = common::gated(&pool, 1);
    let queued: Vec<_> = (0..10).map(|i| pool.submit(pow, (i, 2)).unwrap()).collect();
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        release.send(()).unwrap();
    });
    within(GUARD, "dropping the pool", move || drop(pool));
    assert_eq!(running.state(), State::Finished);
    for (i, f) in queued.into_iter().enumerate() {
        assert!(f.done(), "drop returned before queued work ran");
        assert_eq!(f.result(), Ok((i * i) as u64));
    }
    releaser.join().unwrap();

    // The scoped form.
    let results: Vec<u64> = {
        let pool = ThreadPool::new(5).unwrap();
        pool.map(|x: i64| x.unsigned_abs(), -5..5)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(results, [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]);
}

// CPython: test_threads_terminate — after shutdown(wait=true) every worker
// thread is gone (their thread-locals were destroyed).
#[test]
fn shutdown_wait_ends_the_worker_threads() {
    static EXITED: AtomicUsize = AtomicUsize::new(0);
    struct OnExit;
    impl Drop for OnExit {
        fn drop(&mut self) {
            EXITED.fetch_add(1, Ordering::SeqCst);
        }
    }
    thread_local! { static GUARD_ON_EXIT: std::cell::RefCell<Option<OnExit>> = const { std::cell::RefCell::new(None) }; }
    let pool = ThreadPool::builder()
        .workers(3)
        .initializer(|| GUARD_ON_EXIT.with(|g| *g.borrow_mut() = Some(OnExit)))
        .build()
        .unwrap();
    let fs: Vec<_> = (0..30).map(|i| pool.submit(pow, (i, 1)).unwrap()).collect();
    pool.shutdown(true, false);
    assert!(fs.iter().all(Future::done));
    assert_eq!(
        EXITED.load(Ordering::SeqCst),
        3,
        "workers still alive after shutdown(wait)"
    );
}

// CPython: test_hang_gh94440 — a future submitted and cancelled right before
// shutdown(wait=true) does not make it hang.
#[test]
fn cancelled_right_before_shutdown_does_not_hang() {
    for _ in 0..50 {
        let pool = ThreadPool::new(1).unwrap();
        pool.submit(pow, (1, 1)).unwrap().result().unwrap();
        let f = pool.submit(pow, (2, 2)).unwrap();
        f.cancel();
        within(
            Duration::from_secs(10),
            "shutdown after a cancel",
            move || pool.shutdown(true, false),
        );
        assert!(f.done());
    }
}

/// A task may shut down its own pool, with or without waiting, and a pool
/// whose last handle is dropped inside one of its own tasks is fine too.
#[test]
fn shutdown_from_inside_a_task_does_not_deadlock() {
    for cancel in [false, true] {
        let pool = Arc::new(ThreadPool::new(2).unwrap());
        let p = pool.clone();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let f = pool
            .spawn(move || {
                let _ = gate_rx.recv_timeout(GUARD);
                p.shutdown(true, cancel);
                "shut down"
            })
            .unwrap();
        // Keep the other worker busy until the inner shutdown has started.
        let queued: Vec<_> = (0..10).map(|i| pool.submit(pow, (i, 1)).unwrap()).collect();
        gate_tx.send(()).unwrap();
        assert_eq!(f.result_timeout(Duration::from_secs(10)), Ok("shut down"));
        assert!(matches!(pool.submit(pow, (1, 1)), Err(Error::Shutdown)));
        for q in queued {
            let r = q.result_timeout(Duration::from_secs(10));
            assert!(r.is_ok() || (cancel && r == Err(Error::Cancelled)), "{r:?}");
        }
        within(GUARD, "dropping the pool", move || drop(pool));
    }

    // The last handle dropped on a worker: Drop runs shutdown(wait) there.
    let pool = Arc::new(ThreadPool::new(2).unwrap());
    let p = pool.clone();
    let (tx, rx) = mpsc::channel::<()>();
    let f = pool
        .spawn(move || {
            let _ = rx.recv_timeout(GUARD);
            drop(p);
            7
        })
        .unwrap();
    drop(pool);
    tx.send(()).unwrap_or(());
    assert_eq!(f.result_timeout(Duration::from_secs(10)), Ok(7));
}

/// Two threads calling shutdown(wait = true) at once: both block until the
/// running work has finished, not only the first.
#[test]
fn concurrent_shutdown_wait_both_wait() {
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let (f, release) = common::gated(&pool, 1);
    let f = Arc::new(f);
    let mut callers = Vec::new();
    for _ in 0..2 {
        let (pool, f) = (pool.clone(), f.clone());
        callers.push(thread::spawn(move || {
            pool.shutdown(true, false);
            f.done()
        }));
    }
    thread::sleep(Duration::from_millis(50));
    release.send(()).unwrap();
    for c in callers {
        assert!(
            c.join().unwrap(),
            "a shutdown(wait=true) returned while the call was still running"
        );
    }
}

/// Dropping the pool after a task called shutdown(wait) on it still waits
/// for that task.
#[test]
fn drop_after_inner_shutdown_waits_for_the_task() {
    let pool = Arc::new(ThreadPool::new(2).unwrap());
    let p = pool.clone();
    let (started_tx, started_rx) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let f = pool
        .spawn(move || {
            p.shutdown(true, false);
            drop(p);
            started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(GUARD);
            5
        })
        .unwrap();
    started_rx.recv_timeout(GUARD).unwrap();
    let pool = Arc::try_unwrap(pool).expect("the task dropped its handle");
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        release.send(()).unwrap();
    });
    within(GUARD, "dropping the pool", move || drop(pool));
    assert!(f.done(), "drop returned while the task was still running");
    assert_eq!(f.result(), Ok(5));
    releaser.join().unwrap();
}

/// Two tasks on two workers shutting down their own pool at the same time
/// do not wait for each other.
#[test]
fn two_tasks_shutting_down_their_pool_at_once() {
    for _ in 0..20 {
        let pool = Arc::new(ThreadPool::new(2).unwrap());
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let fs: Vec<_> = (0..2)
            .map(|i| {
                let (p, b) = (pool.clone(), barrier.clone());
                pool.spawn(move || {
                    b.wait();
                    p.shutdown(true, false);
                    i
                })
                .unwrap()
            })
            .collect();
        for (i, f) in fs.into_iter().enumerate() {
            assert_eq!(f.result_timeout(Duration::from_secs(10)), Ok(i));
        }
        within(GUARD, "dropping the pool", move || drop(pool));
    }
}

/// Submits racing `shutdown(wait = false)` from other threads: each is
/// either refused with `Shutdown` or queued whole, and every queued call
/// then finishes (none is left in the queue when the workers leave).
#[test]
fn submits_racing_shutdown_are_queued_whole_or_refused() {
    for round in 0..20u64 {
        let pool = ThreadPool::new(2).unwrap();
        let submitters: Vec<_> = (0..3)
            .map(|_| {
                let pool = pool.clone();
                thread::spawn(move || {
                    let mut queued = Vec::new();
                    for i in 0..2_000u64 {
                        match pool.submit(pow, (i % 7, 2)) {
                            Ok(f) => queued.push((i % 7, f)),
                            Err(Error::Shutdown) => break,
                            Err(e) => panic!("unexpected error {e:?}"),
                        }
                    }
                    queued
                })
            })
            .collect();
        thread::sleep(Duration::from_micros(200 + 100 * round));
        pool.shutdown(false, false);
        let queued: Vec<(u64, Future<u64>)> = within(GUARD, "the submitters", move || {
            submitters
                .into_iter()
                .flat_map(|s| s.join().unwrap())
                .collect()
        });
        within(GUARD, "the queued calls", move || {
            for (base, f) in queued {
                assert_eq!(f.result(), Ok(base * base));
            }
        });
        assert!(matches!(pool.submit(pow, (2, 2)), Err(Error::Shutdown)));
    }
}

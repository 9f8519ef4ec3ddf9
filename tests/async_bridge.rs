//! Awaiting fanout futures from async code: under tokio's multi-thread
//! runtime, under `futures::executor::block_on`, through `wrap_future`, many
//! at once with `join_all`; cancellation and panics as values; and the
//! wake-up of a parked task when the future completes later.

use fanout::{wrap_future, Error, Executor, Future, ThreadPool};
use futures::task::{waker, ArcWake};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

mod common;
use common::GUARD;

fn square(x: u64) -> u64 {
    x * x
}

/// Runs `block_on(fut)` on another thread, so that a lost wake-up fails the
/// test instead of hanging it.
fn block_on_guarded<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(fut));
    });
    rx.recv_timeout(GUARD)
        .expect("block_on never finished: lost wake-up?")
}

#[test]
fn future_is_an_unpin_send_std_future() {
    fn check<F: std::future::Future<Output = fanout::Result<u64>> + Unpin + Send + Sync>() {}
    check::<Future<u64>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_under_tokio_multi_thread() {
    let pool = ThreadPool::new(2).unwrap();
    let f = pool.submit(square, (12,)).unwrap();
    assert_eq!(f.await, Ok(144));
    // Spawned tokio tasks awaiting fanout futures, from several runtime threads.
    let mut handles = Vec::new();
    for i in 0..20u64 {
        let f = pool.submit(square, (i,)).unwrap();
        // A fanout future is itself a `Send + 'static` std future: spawn it as is.
        handles.push(tokio::spawn(f));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(h.await.unwrap(), Ok(i * i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_timeout_then_await_again() {
    let pool = ThreadPool::new(1).unwrap();
    let (mut f, release) = common::gated(&pool, 11);
    // Polled once and abandoned by the timeout (a waker is registered) ...
    assert!(tokio::time::timeout(Duration::from_millis(20), &mut f)
        .await
        .is_err());
    // ... then awaited again with another waker, and completed later.
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        release.send(()).unwrap();
    });
    let got = tokio::time::timeout(GUARD, f).await.expect("never woken");
    assert_eq!(got, Ok(11));
    releaser.await.unwrap();
}

#[test]
fn await_under_futures_block_on_and_wrap_future() {
    let pool = ThreadPool::new(2).unwrap();
    let f = pool.submit(square, (7,)).unwrap();
    assert_eq!(futures::executor::block_on(f), Ok(49));
    let f = pool.submit(square, (8,)).unwrap();
    assert_eq!(futures::executor::block_on(wrap_future(f)), Ok(64));
    let f = pool.spawn(|| "text".to_string()).unwrap();
    assert_eq!(
        futures::executor::block_on(async move { wrap_future(f).await.map(|s| s.len()) }),
        Ok(4)
    );
}

#[test]
fn join_all_many_futures() {
    let pool = ThreadPool::new(4).unwrap();
    let fs: Vec<_> = (0..500u64)
        .map(|i| pool.submit(square, (i,)).unwrap())
        .collect();
    let got = block_on_guarded(futures::future::join_all(fs));
    assert_eq!(got.len(), 500);
    for (i, r) in got.into_iter().enumerate() {
        assert_eq!(r, Ok((i * i) as u64));
    }
    // Through wrap_future, in a multi-thread tokio runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let fs: Vec<_> = (0..200u64)
        .map(|i| wrap_future(pool.submit(square, (i,)).unwrap()))
        .collect();
    let got =
        rt.block_on(async { tokio::time::timeout(GUARD, futures::future::join_all(fs)).await });
    let got = got.expect("join_all under tokio hung");
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, r)| *r == Ok((i * i) as u64)));
}

#[test]
fn awaiting_a_cancelled_future_gives_cancelled() {
    let pool = ThreadPool::new(1).unwrap();
    let (running, release) = common::gated(&pool, 11);
    let queued = pool.submit(square, (3,)).unwrap();
    assert!(queued.cancel());
    assert_eq!(block_on_guarded(queued), Err(Error::Cancelled));
    release.send(()).unwrap();
    assert_eq!(block_on_guarded(running), Ok(11));
}

/// A task parked on a queued future is woken when shutdown(cancel_futures)
/// cancels it.
#[test]
fn parked_await_is_woken_by_shutdown_cancel() {
    let pool = ThreadPool::new(1).unwrap();
    let (running, release) = common::gated(&pool, 11);
    let queued = pool.submit(square, (3,)).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(queued));
    });
    thread::sleep(Duration::from_millis(20));
    pool.shutdown(false, true);
    assert_eq!(
        rx.recv_timeout(GUARD)
            .expect("the parked task was not woken"),
        Err(Error::Cancelled)
    );
    release.send(()).unwrap();
    assert_eq!(running.result_timeout(GUARD), Ok(11));
}

#[test]
fn awaiting_a_panicking_task_gives_panicked() {
    let pool = ThreadPool::new(1).unwrap();
    let f = pool.spawn(|| -> u64 { panic!("async boom") }).unwrap();
    match block_on_guarded(f) {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "async boom"),
        other => panic!("expected Panicked, got {other:?}"),
    }
}

/// The future completes while the awaiting thread is parked in `block_on`.
#[test]
fn completion_wakes_a_parked_task() {
    let pool = ThreadPool::new(1).unwrap();
    for _ in 0..20 {
        let (f, release) = common::gated(&pool, 11);
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(5));
            release.send(()).unwrap();
        });
        assert_eq!(block_on_guarded(f), Ok(11));
        releaser.join().unwrap();
    }
}

struct CountingWaker(AtomicUsize);

impl ArcWake for CountingWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll_with(f: &mut Future<u64>, w: &Arc<CountingWaker>) -> Poll<fanout::Result<u64>> {
    let waker = waker(w.clone());
    let mut cx = Context::from_waker(&waker);
    std::future::Future::poll(Pin::new(f), &mut cx)
}

/// Polled with one waker and then another: completion wakes the latest.
#[test]
fn completion_wakes_the_most_recent_waker() {
    let pool = ThreadPool::new(1).unwrap();
    let (mut f, release) = common::gated(&pool, 11);
    let first = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let second = Arc::new(CountingWaker(AtomicUsize::new(0)));
    assert!(poll_with(&mut f, &first).is_pending());
    assert!(poll_with(&mut f, &second).is_pending());
    release.send(()).unwrap();
    // Wait (without polling) until the completion has woken someone.
    let shadow = {
        let deadline = std::time::Instant::now() + GUARD;
        while second.0.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the latest waker was never woken"
            );
            thread::sleep(Duration::from_millis(1));
        }
        second.0.load(Ordering::SeqCst)
    };
    assert!(shadow >= 1);
    assert_eq!(poll_with(&mut f, &second), Poll::Ready(Ok(11)));
}

/// A callback still reading the outcome when the owner polls: the poll is
/// pending, and the end of the callback wakes the task.
#[test]
fn await_during_a_running_callback_is_woken_after_it() {
    let pool = ThreadPool::new(1).unwrap();
    let (f, release) = common::gated(&pool, 11);
    let (in_cb_tx, in_cb_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    f.add_done_callback(move |r| {
        assert_eq!(r, &Ok(11));
        in_cb_tx.send(()).unwrap();
        let _ = go_rx.recv_timeout(GUARD);
    });
    release.send(()).unwrap();
    in_cb_rx.recv_timeout(GUARD).unwrap();
    assert!(f.done());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(f));
    });
    thread::sleep(Duration::from_millis(20));
    assert!(
        rx.try_recv().is_err(),
        "took the outcome while a callback read it"
    );
    go_tx.send(()).unwrap();
    assert_eq!(
        rx.recv_timeout(GUARD)
            .expect("not woken after the callback"),
        Ok(11)
    );
}

//! Model checks of the completion cell (`RUSTFLAGS="--cfg loom" cargo test --lib loom`).
use super::*;
use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::thread;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

#[test]
fn loom_cancel_races_start() {
    loom::model(|| {
        let (fut, promise) = pair::<u32>();
        let worker = thread::spawn(move || {
            if promise.set_running() {
                promise.set_result(1);
                true
            } else {
                false
            }
        });
        let cancelled = fut.cancel();
        let ran = worker.join().unwrap();
        assert_ne!(cancelled, ran, "exactly one of cancel and start wins");
        let outcome = fut.result();
        if cancelled {
            assert_eq!(outcome, Err(Error::Cancelled));
        } else {
            assert_eq!(outcome, Ok(1));
        }
    });
}

#[test]
fn loom_completion_races_callback_registration() {
    loom::model(|| {
        let (fut, promise) = pair::<u32>();
        let calls = Arc::new(AtomicUsize::new(0));
        let worker = thread::spawn(move || {
            assert!(promise.set_running());
            promise.set_result(7);
        });
        let c = calls.clone();
        fut.add_done_callback(move |r| {
            assert_eq!(r, &Ok(7));
            c.fetch_add(1, Ordering::SeqCst);
        });
        worker.join().unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "callback runs exactly once"
        );
        assert_eq!(fut.result(), Ok(7));
    });
}

#[test]
fn loom_waiter_registration_races_completion() {
    loom::model(|| {
        let (fut, promise) = pair::<u32>();
        let waiter = Waiter::new();
        let worker = thread::spawn(move || {
            promise.set_result(3);
        });
        if fut.add_waiter(&waiter, 0) {
            // Registered before completion: the fire must arrive (no lost wake-up).
            assert_eq!(waiter.take_fired(None), vec![0]);
        } else {
            assert!(fut.done());
        }
        worker.join().unwrap();
        assert_eq!(fut.result(), Ok(3));
    });
}

#[test]
fn loom_blocking_result_races_completion_with_callback() {
    loom::model(|| {
        let (fut, promise) = pair::<u32>();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        fut.add_done_callback(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let worker = thread::spawn(move || promise.set_result(9));
        assert_eq!(fut.result(), Ok(9));
        worker.join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

/// A waker that raises a (loom-tracked) flag.
struct FlagWaker(Arc<AtomicBool>);

impl std::task::Wake for FlagWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn loom_poll_registering_waker_races_completion() {
    loom::model(|| {
        let (mut fut, promise) = pair::<u32>();
        let worker = thread::spawn(move || promise.set_result(5));
        let woken = Arc::new(AtomicBool::new(false));
        let waker = Waker::from(std::sync::Arc::new(FlagWaker(woken.clone())));
        let mut cx = Context::from_waker(&waker);
        let first = Pin::new(&mut fut).poll(&mut cx);
        worker.join().unwrap();
        match first {
            Poll::Ready(outcome) => assert_eq!(outcome, Ok(5)),
            Poll::Pending => {
                // The waker was registered before completion, so the
                // completion must have woken it (no lost wake-up) ...
                assert!(woken.load(Ordering::SeqCst), "lost wake-up");
                // ... and the next poll has the outcome.
                assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(Ok(5)));
            }
        }
    });
}

#[test]
fn loom_cancel_races_waiter_registration() {
    loom::model(|| {
        let (fut, _promise) = pair::<u32>();
        let fut = Arc::new(fut);
        let canceller = {
            let fut = fut.clone();
            thread::spawn(move || fut.cancel())
        };
        let waiter = Waiter::new();
        if fut.add_waiter(&waiter, 0) {
            // Registered while pending: the cancel must fire it.
            assert_eq!(waiter.take_fired(None), vec![0]);
        }
        assert!(fut.done() && fut.cancelled());
        assert!(canceller.join().unwrap(), "a pending future cancels");
    });
}

#[test]
fn loom_shutdown_cancel_races_wait_all_completed() {
    // What `shutdown(cancel_futures = true)` does to a queued call, racing
    // a caller entering `wait(AllCompleted)` (CPython gh-87893).
    loom::model(|| {
        let (fut, promise) = pair::<u32>();
        let canceller = thread::spawn(move || promise.set_error(Error::Cancelled));
        let r = crate::wait::wait(vec![fut], None, crate::ReturnWhen::AllCompleted);
        assert!(r.not_done.is_empty());
        assert_eq!(r.done.len(), 1);
        assert!(r.done[0].cancelled());
        canceller.join().unwrap();
    });
}

#[test]
fn loom_then_races_completion_with_a_callback() {
    // The retry owner's `then` takes the outcome by value while the
    // completing thread may still be running a done-callback.
    loom::model(|| {
        let (fut, promise) = pair::<u32>();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        fut.add_done_callback(move |r| {
            assert_eq!(r, &Ok(9));
            c.fetch_add(1, Ordering::SeqCst);
        });
        let worker = thread::spawn(move || promise.set_result(9));
        let taken = Arc::new(AtomicUsize::new(0));
        let t = taken.clone();
        fut.then(move |outcome| {
            assert_eq!(outcome, Ok(9));
            t.fetch_add(1, Ordering::SeqCst);
        });
        worker.join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the callback ran once");
        assert_eq!(
            taken.load(Ordering::SeqCst),
            1,
            "the taker got the outcome once"
        );
    });
}

#[test]
fn loom_remote_value_races_callback_and_result() {
    loom::model(|| {
        let (fut, promise) = pair::<u32>();
        let fetches = Arc::new(AtomicUsize::new(0));
        let f = fetches.clone();
        let worker = thread::spawn(move || {
            promise.set_remote(Box::new(move || {
                f.fetch_add(1, Ordering::SeqCst);
                Ok(11)
            }))
        });
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        fut.add_done_callback(move |r| {
            assert_eq!(r, &Ok(11));
            s.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(fut.exception(None), None);
        assert_eq!(fut.result(), Ok(11));
        worker.join().unwrap();
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "the callback ran once, with the value"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "fetched exactly once");
    });
}

#[test]
fn loom_exception_races_a_running_callback() {
    loom::model(|| {
        let (fut, promise) = pair::<u32>();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        fut.add_done_callback(move |r| {
            assert!(matches!(r, Err(Error::Broken { .. })));
            c.fetch_add(1, Ordering::SeqCst);
        });
        let worker = thread::spawn(move || {
            promise.set_error(Error::Broken {
                reason: "model".into(),
            })
        });
        // Reads the error while the worker's callback may be reading too.
        assert!(matches!(fut.exception(None), Some(Error::Broken { .. })));
        worker.join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(fut.result(), Err(Error::Broken { .. })));
    });
}

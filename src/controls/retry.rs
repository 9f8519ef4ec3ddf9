//! Retries, owned by the submitting side: one future for the caller, and
//! behind it a chain of attempts, each a fresh submission to the backend.
//!
//! * An attempt that fails with an error `retry_if` accepts (default:
//!   `Panicked`, `Timeout`, `WorkerLost`) is submitted again, after the
//!   backoff delay, up to `retries` more times; the caller's future gets the
//!   last attempt's outcome. A cancelled attempt is never retried.
//! * Attempts are counted here, apart from a cluster's `max_deliveries`
//!   (which counts deliveries of one attempt to workers that died).
//! * The caller's future is `Running` while an attempt runs and `Pending`
//!   between attempts; cancelling it while pending cancels the pending
//!   attempt or the retry waiting for its backoff.

use crate::call::CallOptions;
use crate::future::{pair, CancelHandle, Promise};
use crate::{Error, Executor, Future, Payload, Result, Task};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Submits attempt number `n` (0 for the first) and returns its future.
pub(crate) type Attempt<R> = Box<dyn FnMut(u32) -> Result<Future<R>> + Send + 'static>;

struct Retry<R> {
    retries: u32,
    retry_if: fn(&Error) -> bool,
    backoff: Option<(std::time::Duration, std::time::Duration)>,
    attempt: Mutex<Attempt<R>>,
    state: Mutex<RetryState<R>>,
}

struct RetryState<R> {
    /// The caller's future's promise; `None` once it is resolved.
    promise: Option<Promise<R>>,
    /// The attempt in flight, to cancel it with the caller's future.
    current: Option<CancelHandle<R>>,
    cancelled: bool,
}

/// Runs a call with retries: `attempt(n)` submits attempt `n`. The first
/// attempt is submitted before this returns and its submit error (such as
/// `Shutdown`) is returned as is. Without retries this is `attempt(0)`.
pub(crate) fn launch<R: Send + 'static>(
    options: &CallOptions,
    mut attempt: Attempt<R>,
) -> Result<Future<R>> {
    if options.retries == 0 {
        return attempt(0);
    }
    let first = attempt(0)?;
    let (outer, promise) = pair::<R>();
    let retry = Arc::new(Retry {
        retries: options.retries,
        retry_if: options.retry_if.unwrap_or(CallOptions::default_retry_if),
        backoff: options.backoff,
        attempt: Mutex::new(attempt),
        state: Mutex::new(RetryState {
            promise: Some(promise),
            current: None,
            cancelled: false,
        }),
    });
    let on_cancel = Arc::downgrade(&retry);
    outer.add_done_callback(move |outcome| {
        if matches!(outcome, Err(Error::Cancelled)) {
            if let Some(retry) = on_cancel.upgrade() {
                retry.cancel();
            }
        }
    });
    watch(&retry, 0, first);
    Ok(outer)
}

impl<R: Send + 'static> Retry<R> {
    /// The caller's future was cancelled: stop the chain.
    fn cancel(&self) {
        let current = {
            let mut st = lock(&self.state);
            st.cancelled = true;
            st.promise = None;
            st.current.take()
        };
        if let Some(attempt) = current {
            attempt.cancel();
        }
    }

    /// Takes the caller's promise unless the chain was cancelled.
    fn take_promise(&self) -> Option<Promise<R>> {
        let mut st = lock(&self.state);
        st.current = None;
        st.promise.take()
    }
}

/// Follows attempt `n`: mirrors its start on the caller's future and decides
/// what its outcome means.
fn watch<R: Send + 'static>(retry: &Arc<Retry<R>>, n: u32, attempt: Future<R>) {
    {
        let mut st = lock(&retry.state);
        if st.cancelled {
            drop(st);
            attempt.cancel();
            return;
        }
        st.current = Some(attempt.cancel_handle());
    }
    let started = retry.clone();
    attempt.on_running(move || {
        if let Some(p) = lock(&started.state).promise.as_ref() {
            p.set_running();
        }
    });
    let retry = retry.clone();
    attempt.then(move |outcome| settle(retry, n, outcome));
}

fn settle<R: Send + 'static>(retry: Arc<Retry<R>>, n: u32, outcome: Result<R>) {
    let again = match &outcome {
        Ok(_) | Err(Error::Cancelled) => false,
        Err(e) => n < retry.retries && (retry.retry_if)(e),
    };
    if !again {
        // Resolve outside the state lock: the caller's done-callbacks
        // (including ours, on cancellation) may run right here.
        if let Some(promise) = retry.take_promise() {
            promise.set_outcome(outcome);
        }
        return;
    }
    {
        let mut st = lock(&retry.state);
        st.current = None;
        match st.promise.as_ref() {
            Some(p) => {
                p.set_pending();
            }
            None => return,
        }
    }
    // Resubmit from the timer thread, never from the thread that completed
    // the attempt (a backend may complete futures while holding its locks).
    let delay = super::backoff::delay(retry.backoff, n + 1);
    log::debug!(
        "attempt {} failed ({:?}); retrying in {delay:?}",
        n + 1,
        outcome.err()
    );
    super::timer::after(delay, move || resubmit(retry, n + 1));
}

fn resubmit<R: Send + 'static>(retry: Arc<Retry<R>>, n: u32) {
    if lock(&retry.state).cancelled {
        return;
    }
    let submitted = (lock(&retry.attempt))(n);
    match submitted {
        Ok(attempt) => watch(&retry, n, attempt),
        Err(e) => {
            if let Some(promise) = retry.take_promise() {
                promise.set_error(e);
            }
        }
    }
}

/// Submits a call whose inputs are all plain values, with its options. With
/// retries, the arguments are encoded once and decoded afresh for each
/// attempt (values are not `Clone`), and the attempts go through an owned
/// submission hook so they can be made after the caller's borrow ends.
pub(crate) fn submit_values<E, F, Args>(
    executor: &E,
    f: F,
    args: Args,
    options: &CallOptions,
) -> Result<Future<F::Output>>
where
    E: Executor + ?Sized,
    F: Task<Args>,
    Args: Payload,
    F::Output: Payload,
{
    if options.retries == 0 {
        return executor.submit_with(f, args, options);
    }
    let mut encoded = Vec::new();
    crate::ship::encode(&args, &mut encoded)?;
    let mut first = Some(args);
    let mut submitter = executor.submitter_with(f, options);
    let attempt: Attempt<F::Output> = Box::new(move |_n| {
        let args = match first.take() {
            Some(args) => args,
            None => crate::ship::decode::<Args>(&encoded)?,
        };
        submitter(vec![args])?.pop().ok_or_else(|| Error::Backend {
            message: "the executor returned no future for a submitted call".into(),
        })
    });
    launch(options, attempt)
}

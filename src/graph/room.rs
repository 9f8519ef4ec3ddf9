//! The waiting room: a call whose inputs include futures waits here,
//! `Pending` and cancellable, until every input is done; then it is handed
//! to its backend ([`hand_over`], the one place that happens).
//!
//! Per waiting call: a count of inputs not yet done (plus one while it is
//! being registered, so an input finishing during registration cannot launch
//! it early), its inputs, and the promise of the future the caller holds.
//! An input that fails resolves the call to `Dependency` with the root
//! cause; one that is cancelled cancels it; either way its own dependents
//! hear the same through their subscriptions, so both travel transitively.

use super::inputs::{foreign, Inputs};
use super::source::Outcome;
use super::{Launcher, Ready};
use crate::call::CallOptions;
use crate::future::{pair_in, Promise};
use crate::{Error, Future, Payload, Result};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Waiting<Args, R, In> {
    /// Inputs not yet done, plus one until registration is over.
    remaining: AtomicUsize,
    /// Taken when the call launches or resolves without running.
    inputs: Mutex<Option<In>>,
    promise: Mutex<Option<Promise<R>>>,
    launcher: Arc<Launcher<Args, R>>,
    options: CallOptions,
    _args: PhantomData<fn(Args)>,
}

/// Parks a call with `Arg` inputs until they are done; returns its future.
pub(crate) fn park<Args, R, In>(
    owner: u64,
    launcher: Launcher<Args, R>,
    inputs: In,
    options: CallOptions,
) -> Result<Future<R>>
where
    Args: Payload,
    R: Payload,
    In: Inputs<Args>,
{
    let ids: Vec<u64> = {
        let sources = inputs.sources();
        if let Some(s) = sources.iter().find(|s| s.owner() != owner) {
            return Err(foreign(s.id()));
        }
        sources.iter().map(|s| s.id()).collect()
    };
    let (future, promise) = pair_in::<R>(owner);
    let room = Arc::new(Waiting {
        remaining: AtomicUsize::new(ids.len() + 1),
        inputs: Mutex::new(None),
        promise: Mutex::new(Some(promise)),
        launcher: Arc::new(launcher),
        options,
        _args: PhantomData,
    });
    // A cancelled (or otherwise resolved) dependent lets go of its inputs.
    let weak = Arc::downgrade(&room);
    future.cell().on_final(Box::new(move || {
        if let Some(room) = weak.upgrade() {
            drop(lock(&room.inputs).take());
        }
    }));
    for (source, id) in inputs.sources().into_iter().zip(ids) {
        let room = room.clone();
        source.subscribe(Box::new(move |outcome| {
            flat(Box::new(move || room.input_done(id, outcome)))
        }));
    }
    *lock(&room.inputs) = Some(inputs);
    if future.done() {
        // An input failed or was cancelled during registration.
        drop(lock(&room.inputs).take());
    }
    room.input_done(0, Outcome::Ready);
    Ok(future)
}

impl<Args, R, In> Waiting<Args, R, In>
where
    Args: Payload,
    R: Payload,
    In: Inputs<Args>,
{
    fn input_done(&self, input: u64, outcome: Outcome) {
        match outcome {
            Outcome::Ready => {
                if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.launch();
                }
            }
            Outcome::Cancelled => self.resolve(Error::Cancelled),
            Outcome::Failed(error) => self.resolve(Error::Dependency {
                input,
                error: Box::new(error),
            }),
        }
    }

    /// Resolves the call without running it.
    fn resolve(&self, error: Error) {
        let promise = lock(&self.promise).take();
        drop(lock(&self.inputs).take());
        if let Some(p) = promise {
            p.set_error(error);
        }
    }

    fn launch(&self) {
        let Some(promise) = lock(&self.promise).take() else {
            return;
        };
        let Some(inputs) = lock(&self.inputs).take() else {
            // Resolved (cancelled) while waiting; the promise is final.
            return;
        };
        if promise.cell().final_outcome().is_some() {
            return;
        }
        match inputs.ready() {
            Ok(ready) => hand_over(&self.launcher, ready, promise, &self.options),
            Err(e) => promise.set_error(e),
        }
    }
}

/// Work queued while a thread is already propagating an outcome.
type Queue = Option<std::collections::VecDeque<Box<dyn FnOnce()>>>;

thread_local! {
    static QUEUED: std::cell::RefCell<Queue> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`, or queues it when this thread is already inside `flat`: a
/// failure or cancellation travelling down a long chain of dependents is a
/// loop on one thread, not a recursion as deep as the chain.
fn flat(f: Box<dyn FnOnce()>) {
    let nested = QUEUED.with(|q| {
        let mut q = q.borrow_mut();
        match q.as_mut() {
            Some(queue) => {
                queue.push_back(f);
                None
            }
            None => {
                *q = Some(std::collections::VecDeque::new());
                Some(f)
            }
        }
    });
    let Some(first) = nested else { return };
    /// Ends the drain even when a step unwinds (its queued work is dropped,
    /// so the promises involved resolve to `Broken` rather than hang).
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = QUEUED.try_with(|q| q.borrow_mut().take());
        }
    }
    let _reset = Reset;
    first();
    while let Some(next) = QUEUED.with(|q| q.borrow_mut().as_mut().and_then(|q| q.pop_front())) {
        next();
    }
}

/// The one place a ready call goes to its backend. The backend completes
/// `promise` (with the call's outcome, or with the error that kept it from
/// running). With `retries`, each attempt gets the same inputs by reference
/// (`Ready` is cheap to clone) through the retry owner written once in
/// `controls`; the dependent's future gets the last attempt's outcome, and
/// resolving it (a cancel) cancels the attempt that is still pending.
pub(crate) fn hand_over<Args, R>(
    launcher: &Arc<Launcher<Args, R>>,
    ready: Ready,
    promise: Promise<R>,
    options: &CallOptions,
) where
    Args: 'static,
    R: Payload,
{
    if options.retries == 0 {
        return (launcher.0)(ready, promise, options);
    }
    let (launcher, attempt_options) = (launcher.clone(), options.clone());
    let attempt: crate::controls::Attempt<R> = Box::new(move |_n| {
        let (future, attempt_promise) = crate::future::pair::<R>();
        (launcher.0)(ready.clone(), attempt_promise, &attempt_options);
        Ok(future)
    });
    match crate::controls::launch(options, attempt) {
        Ok(outer) => {
            let cancel = outer.cancel_handle();
            promise.cell().on_final(Box::new(move || {
                cancel.cancel();
            }));
            outer.then(move |outcome| promise.set_outcome(outcome));
        }
        Err(e) => promise.set_error(e),
    }
}

//! How a call's outcome reaches its future: the `Delivery` of one item,
//! and the courier jobs that complete or fail a task's items.

use super::*;

/// The client's side of one call: how its outcome gets decoded and delivered.
pub(super) trait Delivery: Send {
    fn set_running(&self) -> bool;
    /// Completes on this thread (the event loop) when nobody listens to
    /// the future; otherwise returns the courier job that completes it, so
    /// its done-callbacks run on the courier, never on the event loop.
    fn deliver_here(self: Box<Self>, outcome: Result<&[u8]>) -> Option<Job>;
    fn fail(self: Box<Self>, error: Error);
    /// Completes with a value that stays in Redis until asked for.
    fn deliver_remote(self: Box<Self>, remote: Arc<Remote>);
}

impl<R: Payload> Delivery for Promise<R> {
    fn set_running(&self) -> bool {
        Promise::set_running(self)
    }
    fn deliver_here(self: Box<Self>, outcome: Result<&[u8]>) -> Option<Job> {
        let decoded = decode(&self, outcome);
        // One internal hook is the client's own (it requests the remote
        // cancel of a cancelled call; see `Shared::record`).
        match self.cell().complete_if_unobserved(decoded, 1) {
            Ok(()) => None,
            Err(decoded) => Some(Box::new(move || self.set_outcome(decoded))),
        }
    }
    fn fail(self: Box<Self>, error: Error) {
        self.set_error(error);
    }
    fn deliver_remote(self: Box<Self>, remote: Arc<Remote>) {
        crate::cluster::remote::complete_remote(*self, remote);
    }
}

/// Decodes a result for `promise`, keeping the bytes when dependents want them.
fn decode<R: Payload>(promise: &Promise<R>, outcome: Result<&[u8]>) -> Result<R> {
    if let Ok(bytes) = outcome {
        // A future with `Arg`s keeps its result bytes for its dependents.
        if promise.cell().wants_encoded() {
            promise.cell().keep_encoded(Ok(bytes.into()));
        }
    }
    // The result type's `Deserialize` is user code: a panic there is this
    // call's error, never the event loop's (or the courier's) death.
    outcome.and_then(|bytes| crate::panic::catch(|| ship::decode::<R>(bytes))?)
}

/// The courier jobs that fail every item of `tasks` with `error`, one job
/// per item (a callback of one item may wait for another).
pub(super) fn failing(tasks: Vec<Inflight>, error: Error) -> Vec<Job> {
    tasks
        .into_iter()
        .flat_map(|t| t.items.into_iter().flatten())
        .map(|d| {
            let error = error.clone();
            Box::new(move || d.fail(error)) as Job
        })
        .collect()
}

/// Completes a task's items with its outcome: a value whose future nobody
/// listens to on this thread (the event loop), everything else by the
/// courier jobs returned.
pub(super) fn completions(inflight: Inflight, outcome: Result<Outcome>) -> Vec<Job> {
    let n = inflight.items.len();
    let error = match outcome {
        Ok(Outcome::Ran { worker, items }) if items.len() == n => {
            let worker: Arc<str> = worker.into();
            return inflight
                .items
                .into_iter()
                .zip(items)
                .filter_map(|(d, item)| {
                    let d = d?;
                    let worker = worker.clone();
                    match item {
                        ItemOutcome::Value(v) => d.deliver_here(Ok(&v)),
                        ItemOutcome::Failed(e) => {
                            Some(Box::new(move || d.fail(e.into_error(&worker))) as Job)
                        }
                        ItemOutcome::Skipped => Some(Box::new(move || d.fail(Error::Cancelled))),
                    }
                })
                .collect();
        }
        Ok(Outcome::Ran { worker, items }) => Error::Backend {
            message: format!(
                "{worker} reported {} outcomes for a task of {n} items",
                items.len()
            ),
        },
        Ok(Outcome::Refused { worker, message }) => Error::Backend {
            message: format!("{worker} refused the task: {message}"),
        },
        Ok(Outcome::Lost { worker, status }) => Error::WorkerLost { worker, status },
        Ok(Outcome::Rejected { worker, reason }) => Error::Backend {
            message: format!("{worker} rejected the task: {reason}"),
        },
        Err(e) => e,
    };
    failing(vec![inflight], error)
}

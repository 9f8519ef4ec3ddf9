//! How a call's outcome reaches its future: the `Delivery` of one item,
//! and the courier jobs that complete or fail a task's items.

use super::*;

/// The client's side of one call: how its outcome gets decoded and delivered.
pub(super) trait Delivery: Send {
    fn set_running(&self) -> bool;
    fn deliver(self: Box<Self>, outcome: Result<&[u8]>);
    fn fail(self: Box<Self>, error: Error);
    /// Completes with a value that stays in Redis until asked for.
    fn deliver_remote(self: Box<Self>, remote: Arc<Remote>);
}

impl<R: Payload> Delivery for Promise<R> {
    fn set_running(&self) -> bool {
        Promise::set_running(self)
    }
    fn deliver(self: Box<Self>, outcome: Result<&[u8]>) {
        if let Ok(bytes) = outcome {
            // A future with `Arg`s keeps its result bytes for its dependents.
            if self.cell().wants_encoded() {
                self.cell().keep_encoded(Ok(bytes.into()));
            }
        }
        // The result type's `Deserialize` is user code: a panic there is
        // this call's error, never the courier's death.
        let decoded = outcome.and_then(|bytes| crate::panic::catch(|| ship::decode::<R>(bytes))?);
        self.set_outcome(decoded);
    }
    fn fail(self: Box<Self>, error: Error) {
        self.set_error(error);
    }
    fn deliver_remote(self: Box<Self>, remote: Arc<Remote>) {
        crate::cluster::remote::complete_remote(*self, remote);
    }
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

/// The courier jobs that complete a task's items with its outcome.
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
                    Some(Box::new(move || match item {
                        ItemOutcome::Value(v) => d.deliver(Ok(&v)),
                        ItemOutcome::Failed(e) => d.fail(e.into_error(&worker)),
                        ItemOutcome::Skipped => d.fail(Error::Cancelled),
                    }) as Job)
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

//! A thread-pool call with a run-time limit. A thread cannot be stopped from
//! outside, so when the limit passes the future resolves to `Err(Timeout)`
//! (from the shared timer thread) and the call's thread runs on to the end;
//! its late outcome is dropped.

use super::{drop_contained, Runnable, TaskCell};
use crate::future::{Cell, CellHolder};
use crate::{panic, Error};
use std::sync::Weak;
use std::time::Duration;

pub(super) struct Timed<F, R> {
    pub(super) task: TaskCell<F, R>,
    pub(super) limit: Duration,
    /// This task, for the timer (which must not keep a finished one alive).
    pub(super) me: Weak<Timed<F, R>>,
}

impl<F: Send, R: Send> CellHolder<R> for Timed<F, R> {
    fn cell(&self) -> &Cell<R> {
        &self.task.cell
    }
}

/// The error of a call that overran `limit`.
pub(crate) fn overran(limit: Duration) -> Error {
    Error::timeout(format!("the call ran longer than its limit of {limit:?}"))
}

impl<F, R> Runnable for Timed<F, R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    fn run(&self) {
        // SAFETY: see `Runnable`: this is the task's one `run`, and no `fail`.
        let call = unsafe { self.task.take_call() };
        if !self.task.cell.set_running() {
            drop_contained(call);
            return;
        }
        let (me, limit) = (self.me.clone(), self.limit);
        crate::controls::timer::after(limit, move || {
            if let Some(task) = me.upgrade() {
                task.task.cell.finish(Err(overran(limit)));
            }
        });
        let outcome = panic::catch(call);
        if self.task.cell.is_done() {
            // Timed out meanwhile: the late outcome goes (user code, contained).
            drop_contained(outcome);
        } else {
            self.task.cell.finish(outcome);
        }
    }

    fn fail(&self, error: Error) {
        self.task.fail(error);
    }
}

//! Crate-internal hooks on a future, for code that builds one future out of
//! others (retries): take the outcome by value when it is final, hear when
//! the call starts, and cancel it through a second handle.

use super::{is_final, Cell, CellRef, Future, PENDING};
use crate::sync::lock;
use crate::{Error, Result};

pub(super) type Taker<T> = Box<dyn FnOnce(Result<T>) + Send + 'static>;
pub(super) type OnRunning = Box<dyn FnOnce() + Send + 'static>;

impl<T> Cell<T> {
    /// Takes the stored outcome and gives it to `taker`. Called once the
    /// state is final and nobody holds the read token; the one `Future` was
    /// consumed by [`Future::then`], so nobody else can take or read it.
    pub(super) fn hand_to_taker(&self, taker: Taker<T>) {
        let shared = lock(&self.sync);
        let outcome = self.take_outcome(&shared);
        drop(shared);
        taker(outcome);
    }

    /// Runs the `on_running` hook, if still there (it runs at most once).
    pub(super) fn run_on_running(&self) {
        let hook = lock(&self.sync)
            .listeners
            .as_mut()
            .and_then(|l| l.on_running.take());
        if let Some(hook) = hook {
            hook();
        }
    }
}

impl<T> Future<T> {
    /// Consumes the future; `f` gets the outcome by value once it is final
    /// (at once, on this thread, if it already is; otherwise on the thread
    /// that completes it, after any done-callbacks).
    pub(crate) fn then(self, f: impl FnOnce(Result<T>) + Send + 'static) {
        let cell = &self.cell;
        let mut shared = lock(&cell.sync);
        if is_final(cell.raw_state()) && shared.unread() {
            let outcome = cell.take_outcome(&shared);
            drop(shared);
            f(outcome);
            return;
        }
        // Not final yet, or callbacks are reading it: whoever completes the
        // cell (or releases the read token) hands the outcome over.
        shared.listeners().taker = Some(Box::new(f));
    }

    /// Runs `f` once, when the call moves from pending to running (at once if
    /// it already runs or is done). If it is cancelled instead, `f` is dropped
    /// unrun.
    pub(crate) fn on_running(&self, f: impl FnOnce() + Send + 'static) {
        let cell = &self.cell;
        let mut shared = lock(&cell.sync);
        shared.listeners().on_running = Some(Box::new(f));
        cell.watched
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let started = cell.state.load(std::sync::atomic::Ordering::SeqCst) != PENDING;
        drop(shared);
        if started {
            cell.run_on_running();
        }
    }

    /// A second handle that can only cancel the call.
    pub(crate) fn cancel_handle(&self) -> CancelHandle<T> {
        CancelHandle(self.cell.clone())
    }
}

/// Cancels a call whose [`Future`] is owned elsewhere (see [`Future::cancel`]).
pub(crate) struct CancelHandle<T>(CellRef<T>);

impl<T> CancelHandle<T> {
    /// Cancels the call if it is still pending; true if it is (now) cancelled.
    pub(crate) fn cancel(&self) -> bool {
        Future::cancel_cell(&self.0)
    }
}

impl<T> Future<T> {
    fn cancel_cell(cell: &Cell<T>) -> bool {
        match cell.raw_state() {
            super::CANCELLED => true,
            PENDING => {
                cell.complete(Err(Error::Cancelled), true) || cell.raw_state() == super::CANCELLED
            }
            _ => false,
        }
    }
}

impl<T> Cell<T> {
    /// True once the cell is final (cancelled or finished).
    pub(crate) fn is_done(&self) -> bool {
        is_final(self.raw_state())
    }
}

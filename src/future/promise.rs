//! [`Promise`]: the backend's side of a future, and the constructors of a
//! future and its promise.

use super::*;

/// The backend's side of a future: the only way a result gets in.
///
/// Dropping a promise that was never completed fails its future with
/// [`Error::Broken`], so a lost task can never leave a caller waiting forever.
pub(crate) struct Promise<T> {
    cell: CellRef<T>,
}

impl<T: Send + 'static> Promise<T> {
    /// Completes the future with a value.
    #[allow(dead_code)]
    pub(crate) fn set_result(self, value: T) {
        self.set_outcome(Ok(value));
    }

    /// Completes the future with an error.
    pub(crate) fn set_error(self, error: Error) {
        self.set_outcome(Err(error));
    }

    /// Completes the future with an outcome. A future made by
    /// [`remote_pair`] hands its done-callbacks to the callback runner
    /// instead of running them on this thread.
    pub(crate) fn set_outcome(self, outcome: Result<T>) {
        if let Settled::Deferred(callbacks, hooks) =
            self.cell.settle(Some(outcome), None, false, true)
        {
            let cell = self.cell.clone();
            crate::callbacks::run_later(Box::new(move || cell.run_deferred(callbacks, hooks)));
        }
    }
}

impl<T> Promise<T> {
    /// `Pending → Running`; false if the call was cancelled and must not run.
    pub(crate) fn set_running(&self) -> bool {
        self.cell.set_running()
    }

    /// `Running → Pending`, for a call that was handed to a worker which died
    /// before starting it: the call is queued again and is cancellable again.
    pub(crate) fn set_pending(&self) -> bool {
        self.cell
            .state
            .compare_exchange(RUNNING, PENDING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Completes the future successfully with a value that stays where it
    /// is until someone asks for it (`result`, `.await`, a done-callback);
    /// `fetch` gets it then, at most once.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn set_remote(self, fetch: Fetch<T>) {
        self.cell.complete_with(None, Some(fetch), false);
    }

    /// The future's id.
    #[allow(dead_code)]
    pub(crate) fn id(&self) -> u64 {
        self.cell.id()
    }

    /// The cell this promise completes.
    pub(crate) fn cell(&self) -> &CellRef<T> {
        &self.cell
    }
}

impl<T> Drop for Promise<T> {
    fn drop(&mut self) {
        if !is_final(self.cell.raw_state()) {
            self.cell.complete(
                Err(Error::Broken {
                    reason: "the executor dropped the task without running it".into(),
                }),
                false,
            );
        }
    }
}

/// Creates a connected future and promise.
pub(crate) fn pair<T: Send + 'static>() -> (Future<T>, Promise<T>) {
    let cell = CellRef(std::sync::Arc::new(Cell::build(0, Kind::PLAIN)));
    (Future { cell: cell.clone() }, Promise { cell })
}

/// Creates a connected future and promise owned by the executor tagged `owner`.
pub(crate) fn pair_in<T: crate::Payload>(owner: u64) -> (Future<T>, Promise<T>) {
    let cell = CellRef(std::sync::Arc::new(Cell::build(owner, Kind::PAYLOAD)));
    (Future { cell: cell.clone() }, Promise { cell })
}

/// Creates a connected future and promise for a backend that completes
/// futures on a delivery thread which must never block (a process pool's
/// I/O thread, a cluster client's event loop):
///
/// * done-callbacks run on the callback runner (`crate::callbacks`), where
///   a callback may block — on another future of the same executor, say —
///   without stopping delivery;
/// * `result()` inside the future's own done-callback returns a copy of the
///   value (a codec round trip), since the callback still holds the value.
pub(crate) fn remote_pair<T: crate::Payload>(owner: u64) -> (Future<T>, Promise<T>) {
    let cell = CellRef(std::sync::Arc::new(Cell::build(owner, Kind::REMOTE)));
    (Future { cell: cell.clone() }, Promise { cell })
}

/// Creates a connected future and promise for the outcomes of a whole map
/// chunk completed on a delivery thread (as [`remote_pair`], without an
/// encoder: a chunk's future is never an input of another call).
pub(crate) fn chunk_pair<T: Send + 'static>(owner: u64) -> (Future<T>, Promise<T>) {
    let cell = CellRef(std::sync::Arc::new(Cell::build(owner, Kind::DELIVERED)));
    (Future { cell: cell.clone() }, Promise { cell })
}

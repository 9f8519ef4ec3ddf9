//! [`Future`]: the caller's side of a call, blocking and async.

use super::*;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A handle to one submitted call's outcome.
///
/// Not `Clone`; `Send + Sync` when `T: Send`. Dropping it does not cancel the
/// call. It is also a [`std::future::Future`], so it can be `.await`ed.
///
/// ```
/// use fanout::{Executor, ThreadPool};
///
/// fn add(a: i32, b: i32) -> i32 { a + b }
///
/// let pool = ThreadPool::new(2).unwrap();
/// let f = pool.submit(add, (1, 2)).unwrap();
/// assert_eq!(f.result(), Ok(3));
/// ```
pub struct Future<T> {
    pub(super) cell: CellRef<T>,
}

impl<T> Future<T> {
    /// The future of a cell that a backend completes directly.
    pub(crate) fn from_cell(cell: CellRef<T>) -> Self {
        Future { cell }
    }

    /// The completion cell.
    pub(crate) fn cell(&self) -> &CellRef<T> {
        &self.cell
    }

    /// An id unique among all futures of this process.
    ///
    /// ```
    /// let pool = fanout::ThreadPool::new(1).unwrap();
    /// let (a, b) = (pool.spawn(|| 1).unwrap(), pool.spawn(|| 2).unwrap());
    /// assert_ne!(a.id(), b.id());
    /// ```
    pub fn id(&self) -> u64 {
        self.cell.id()
    }

    /// Where the call is now.
    ///
    /// ```
    /// let pool = fanout::ThreadPool::new(1).unwrap();
    /// let f = pool.spawn(|| ()).unwrap();
    /// f.wait(None);
    /// assert_eq!(f.state(), fanout::State::Finished);
    /// ```
    pub fn state(&self) -> State {
        public_state(self.cell.raw_state())
    }

    /// True once the call was cancelled or finished.
    ///
    /// ```
    /// let pool = fanout::ThreadPool::new(1).unwrap();
    /// let f = pool.spawn(|| ()).unwrap();
    /// f.wait(None);
    /// assert!(f.done());
    /// ```
    pub fn done(&self) -> bool {
        is_final(self.cell.raw_state())
    }

    /// True while a worker runs the call.
    ///
    /// ```
    /// let pool = fanout::ThreadPool::new(1).unwrap();
    /// let f = pool.spawn(|| ()).unwrap();
    /// f.wait(None);
    /// assert!(!f.running());
    /// ```
    pub fn running(&self) -> bool {
        self.cell.raw_state() == RUNNING
    }

    /// True if the call was cancelled.
    ///
    /// ```
    /// let pool = fanout::ThreadPool::new(1).unwrap();
    /// let f = pool.spawn(|| ()).unwrap();
    /// f.wait(None);
    /// assert!(!f.cancelled());
    /// ```
    pub fn cancelled(&self) -> bool {
        self.cell.raw_state() == CANCELLED
    }

    /// Cancels the call if it has not started.
    ///
    /// Returns true if the future was pending (and is now cancelled) or was
    /// already cancelled; false if it is running or finished. A cancelled
    /// future is done at once and wakes every waiter.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = fanout::ThreadPool::new(1).unwrap();
    /// let blocker = pool.spawn(|| std::thread::sleep(Duration::from_millis(100))).unwrap();
    /// let queued = pool.spawn(|| 1).unwrap();
    /// assert!(queued.cancel());
    /// assert!(queued.cancelled() && queued.done());
    /// assert_eq!(queued.result(), Err(fanout::Error::Cancelled));
    /// # blocker.result().unwrap();
    /// ```
    pub fn cancel(&self) -> bool {
        match self.cell.raw_state() {
            CANCELLED => true,
            PENDING => {
                self.cell.complete(Err(Error::Cancelled), true)
                    || self.cell.raw_state() == CANCELLED
            }
            _ => false,
        }
    }

    /// Blocks until the future is done or `timeout` passes; true once done.
    ///
    /// ```
    /// let pool = fanout::ThreadPool::new(1).unwrap();
    /// let f = pool.spawn(|| 7).unwrap();
    /// assert!(f.wait(Some(std::time::Duration::from_secs(5))));
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        if self.done() {
            return true;
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        self.cell.block_until(deadline, false).1
    }

    /// Blocks until the call is done and returns its outcome.
    ///
    /// ```
    /// let pool = fanout::ThreadPool::new(1).unwrap();
    /// let f = pool.spawn(|| "hello".to_string()).unwrap();
    /// assert_eq!(f.result().unwrap(), "hello");
    /// ```
    pub fn result(self) -> Result<T> {
        if let Some(outcome) = self.cell.take_if_ready() {
            return outcome;
        }
        if let Some(copy) = self.cell.outcome_in_own_callback() {
            return copy;
        }
        let (shared, _) = self.cell.block_until(None, true);
        self.cell.take_outcome(&shared)
    }

    /// Like [`Future::result`], but gives up with [`Error::Timeout`] after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = fanout::ThreadPool::new(1).unwrap();
    /// let slow = pool.spawn(|| std::thread::sleep(Duration::from_millis(200))).unwrap();
    /// assert!(matches!(slow.result_timeout(Duration::from_millis(10)),
    ///                  Err(fanout::Error::Timeout { .. })));
    /// ```
    pub fn result_timeout(self, timeout: Duration) -> Result<T> {
        if let Some(outcome) = self.cell.take_if_ready() {
            return outcome;
        }
        if let Some(copy) = self.cell.outcome_in_own_callback() {
            return copy;
        }
        let (shared, ready) = self.cell.block_until(Some(Instant::now() + timeout), true);
        if ready {
            self.cell.take_outcome(&shared)
        } else {
            Err(Error::timeout(format!(
                "future {} was not done within {timeout:?}",
                self.cell.id()
            )))
        }
    }

    /// The call's error, if it failed.
    ///
    /// `None` when it finished successfully; `Some(Cancelled)` when cancelled;
    /// `Some(Timeout)` when not done within `timeout`; otherwise the task's error.
    ///
    /// ```
    /// let pool = fanout::ThreadPool::new(1).unwrap();
    /// let ok = pool.spawn(|| 1).unwrap();
    /// assert_eq!(ok.exception(None), None);
    /// let bad = pool.spawn(|| -> i32 { panic!("nope") }).unwrap();
    /// assert!(matches!(bad.exception(None), Some(fanout::Error::Panicked { .. })));
    /// ```
    pub fn exception(&self, timeout: Option<Duration>) -> Option<Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let (shared, done) = self.cell.block_until(deadline, false);
        if !done {
            return Some(Error::timeout(format!(
                "future {} was not done within {:?}",
                self.cell.id(),
                timeout.unwrap_or_default()
            )));
        }
        match self.cell.raw_state() {
            FINISHED_OK => None,
            CANCELLED => Some(Error::Cancelled),
            _ => {
                // No read token here: a done-callback holding it may run for
                // a long time, and `exception` must neither wait for it nor
                // overrun its timeout. The token only keeps the owner from
                // taking the outcome while others read it, and the owner
                // cannot take it now: taking needs `self` or `&mut self`,
                // and this call holds `&self`.
                // SAFETY: the state is final (seen under `sync`), so `value`
                // is written and is never written again; the only concurrent
                // accesses are other reads (callbacks); and this reads only
                // the `Err` side, an `Error`, never the `T`.
                let error = self
                    .cell
                    .value
                    .with(|slot| unsafe { &*slot }.error().cloned());
                drop(shared);
                error
            }
        }
    }

    /// Runs `f` with the outcome once the future is done.
    ///
    /// Callbacks run exactly once, in registration order, on the thread that
    /// completes the future (after its state is final), or at once on the
    /// caller's thread if it is already done. A panicking callback is caught
    /// and logged and does not stop the others.
    ///
    /// Futures of a [`ProcessPool`](crate::ProcessPool) are completed by a
    /// thread that delivers results; their callbacks run on a callback
    /// thread instead, so a callback may block — even on another future of
    /// the same pool (`pool.submit(..)?.result()`) — without stopping
    /// delivery. Inside a callback, `result()` on the future itself returns
    /// its outcome (a copy of the value, made through serde, since the
    /// callback still holds the original; for [`ThreadPool::spawn`](crate::ThreadPool::spawn)
    /// futures, whose values need not be serializable, an
    /// [`Error::InvalidArgument`] saying so).
    ///
    /// ```
    /// use std::sync::mpsc;
    /// let pool = fanout::ThreadPool::new(1).unwrap();
    /// let f = pool.spawn(|| 21 * 2).unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// f.add_done_callback(move |r| tx.send(*r.as_ref().unwrap()).unwrap());
    /// assert_eq!(rx.recv().unwrap(), 42);
    /// ```
    pub fn add_done_callback(&self, f: impl FnOnce(&Result<T>) + Send + 'static) {
        let shared = lock(&self.cell.sync);
        if !is_final(self.cell.raw_state()) {
            let mut shared = shared;
            shared.listeners().callbacks.push(Box::new(f));
            return;
        }
        let shared = self.cell.acquire_read(shared);
        self.cell.materialize(&shared);
        drop(shared);
        self.cell.run_callback(Box::new(f));
        self.cell.release_read();
    }

    /// Registers a multi-future waiter; false if already done.
    pub(crate) fn add_waiter(&self, waiter: &Arc<Waiter>, token: usize) -> bool {
        self.cell.add_waiter(waiter, token)
    }

    pub(crate) fn remove_waiter(&self, waiter: &Arc<Waiter>) {
        self.cell.remove_waiter(waiter)
    }

    /// True if finished with an error other than cancellation.
    pub(crate) fn failed(&self) -> bool {
        self.cell.raw_state() == FINISHED_ERR
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Future")
            .field("id", &self.cell.id())
            .field("state", &self.state())
            .finish()
    }
}

impl<T: Send + 'static> std::future::Future for Future<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let cell = &self.cell;
        let mut shared = lock(&cell.sync);
        if is_final(cell.raw_state()) && shared.unread() {
            return Poll::Ready(cell.take_outcome(&shared));
        }
        let listeners = shared.listeners();
        match &listeners.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => listeners.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Turns a fanout [`Future`] into a `std::future::Future` for async code.
///
/// `Future<T>` already implements `std::future::Future`; this is the spelling
/// Python users know from `asyncio.wrap_future`.
///
/// ```
/// let pool = fanout::ThreadPool::new(1).unwrap();
/// let f = pool.spawn(|| 5).unwrap();
/// let v = futures::executor::block_on(fanout::wrap_future(f));
/// assert_eq!(v, Ok(5));
/// ```
pub fn wrap_future<T: Send + 'static>(
    f: Future<T>,
) -> impl std::future::Future<Output = Result<T>> {
    f
}

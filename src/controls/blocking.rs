//! How a thread tells the executor it works for that it is about to block
//! on a future (`result`, `wait`, `as_completed`, `gather`), so the executor
//! can keep its other calls moving meanwhile: the thread pool starts a
//! stand-in thread, a cluster worker frees the task's slot (secede/rejoin),
//! the callback runner starts another runner thread if callbacks wait.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A wait shorter than this (a poll) is not worth a stand-in thread.
const SHORT_WAIT: Duration = Duration::from_millis(1);

/// True when a wait until `deadline` may be long enough to tell the executor.
pub(crate) fn worth_it(deadline: Option<Instant>) -> bool {
    deadline.is_none_or(|d| d > Instant::now() + SHORT_WAIT)
}

/// An executor that wants to hear when one of its threads blocks.
pub(crate) trait Blocker: Send + Sync {
    /// The current thread is about to block on a future.
    fn enter(&self);
    /// The current thread stopped blocking (it pairs with one `enter`).
    fn exit(&self);
}

thread_local! {
    static BLOCKER: RefCell<Option<Arc<dyn Blocker>>> = const { RefCell::new(None) };
}

/// Makes `blocker` hear about this thread's blocking waits (`None` stops it).
pub(crate) fn install(blocker: Option<Arc<dyn Blocker>>) {
    BLOCKER.with(|b| *b.borrow_mut() = blocker);
}

/// Ends a blocking section when dropped.
pub(crate) struct Section(Option<Arc<dyn Blocker>>);

impl Drop for Section {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.exit();
        }
    }
}

/// Starts a blocking section on this thread (a no-op on threads no executor
/// listens to).
pub(crate) fn enter() -> Section {
    let blocker = BLOCKER.try_with(|b| b.borrow().clone()).ok().flatten();
    if let Some(b) = &blocker {
        b.enter();
    }
    Section(blocker)
}

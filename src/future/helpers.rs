//! Help while waiting: a backend whose results arrive where a waiting
//! thread can read them itself lets that thread do so, instead of
//! sleeping until the backend's own thread reads them and wakes it.
//!
//! On a machine where waking a sleeping thread is the dearest step of a
//! round trip (a 2-core VM: BENCHMARKS.md, tenth round), a result that
//! goes socket → backend thread → waiting caller costs a wake-up more than
//! one that goes socket → caller. A backend registers a [`Helper`] under
//! its owner tag (the one its futures' cells carry); a thread about to
//! block on such a future calls it first (`Cell::block_until`), and sleeps
//! on the future's condition variable as before when it returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Instant;

/// A backend's way to deliver results on a waiting thread.
pub(crate) trait Helper: Send + Sync {
    /// Waits until `done()` holds or `deadline` passes, delivering what
    /// arrives meanwhile on this thread, or returns at once when it cannot
    /// (another thread is already doing so, nothing to read): the caller
    /// then sleeps as usual. It may also return early (after delivering
    /// other futures' results); the caller checks `done()` itself.
    /// `wake_on_done(waker)` has the future wake `waker` when it becomes
    /// done by any path (at once if it is), so the helper can wake itself
    /// for a completion it did not deliver (a cancellation, another
    /// thread); false when the future cannot take it (it already holds
    /// another, an `.await`'s): then the helper must not sleep on its own.
    fn help(&self, done: &dyn Fn() -> bool, wake_on_done: &OnDone<'_>, deadline: Option<Instant>);
}

/// Has the waited-for future wake a waker once it is done (see [`Helper::help`]).
pub(crate) type OnDone<'a> = dyn Fn(std::task::Waker) -> bool + 'a;

type Entry = (u64, Weak<dyn Helper>);

static HELPERS: RwLock<Vec<Entry>> = RwLock::new(Vec::new());

/// How many entries `HELPERS` holds: a wait in a process with none (no
/// cluster client that takes pushed results) does not touch the lock.
static REGISTERED: AtomicUsize = AtomicUsize::new(0);

/// Registers `helper` for the futures of executor `owner` (until it is
/// dropped or [`unregister`]ed).
pub(crate) fn register(owner: u64, helper: Weak<dyn Helper>) {
    let mut all = HELPERS.write().unwrap_or_else(|p| p.into_inner());
    all.retain(|(o, h)| *o != owner && h.strong_count() > 0);
    all.push((owner, helper));
    REGISTERED.store(all.len(), Ordering::SeqCst);
}

/// Forgets the helper of `owner`.
pub(crate) fn unregister(owner: u64) {
    let mut all = HELPERS.write().unwrap_or_else(|p| p.into_inner());
    all.retain(|(o, h)| *o != owner && h.strong_count() > 0);
    REGISTERED.store(all.len(), Ordering::SeqCst);
}

/// The helper of `owner`'s futures, if one is registered and alive.
pub(crate) fn of(owner: u64) -> Option<Arc<dyn Helper>> {
    if owner == 0 || REGISTERED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let all = HELPERS.read().unwrap_or_else(|p| p.into_inner());
    all.iter()
        .find(|(o, _)| *o == owner)
        .and_then(|(_, h)| h.upgrade())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    impl Helper for Counting {
        fn help(&self, _done: &dyn Fn() -> bool, _on: &OnDone<'_>, _deadline: Option<Instant>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn helpers_are_found_by_owner_and_forgotten() {
        let h: Arc<dyn Helper> = Arc::new(Counting(AtomicUsize::new(0)));
        let owner = u64::MAX - 7;
        assert!(of(owner).is_none());
        register(owner, Arc::downgrade(&h));
        of(owner).expect("registered").help(
            &|| true,
            &|w| {
                w.wake();
                true
            },
            None,
        );
        unregister(owner);
        assert!(of(owner).is_none());
        register(owner, Arc::downgrade(&h));
        drop(h);
        assert!(of(owner).is_none(), "a dropped helper is not found");
        assert!(of(0).is_none());
    }
}

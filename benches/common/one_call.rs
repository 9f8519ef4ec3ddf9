//! The one allocation per call both ceilings (`minimal_pool.rs`,
//! `spsc_pool.rs`) make: the call, its state and its result, shared by the
//! one worker that runs it and the one handle that takes the result.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};

/// Not run yet, or running.
pub const PENDING: u32 = 0;
/// The result is stored.
pub const DONE: u32 = 1;

pub struct Call<F, R> {
    pub state: AtomicU32,
    f: UnsafeCell<Option<F>>,
    r: UnsafeCell<Option<R>>,
}

// SAFETY: `f` is taken once, by the one worker that received the call
// (`run_and_store`); `r` is written by it before `state` becomes DONE
// (Release) and read once by the one handle after it saw DONE (Acquire).
unsafe impl<F: Send, R: Send> Sync for Call<F, R> {}

impl<F: FnOnce() -> R, R> Call<F, R> {
    pub fn new(f: F) -> Call<F, R> {
        Call {
            state: AtomicU32::new(PENDING),
            f: UnsafeCell::new(Some(f)),
            r: UnsafeCell::new(None),
        }
    }

    /// Runs the call and stores its result; the caller then publishes it by
    /// setting `state` to DONE with Release.
    ///
    /// # Safety
    /// Only the one worker that received the call, once.
    pub unsafe fn run_and_store(&self) {
        let f = unsafe { (*self.f.get()).take() }.expect("run once");
        unsafe { *self.r.get() = Some(f()) };
    }
}

/// The handle's side of a call: its state and, once DONE, its result.
pub trait Outcome<R>: Send + Sync {
    fn state(&self) -> &AtomicU32;
    /// Called once, after `state` reads DONE (Acquire).
    fn take(&self) -> R;
}

impl<F: Send, R: Send> Outcome<R> for Call<F, R> {
    fn state(&self) -> &AtomicU32 {
        &self.state
    }
    fn take(&self) -> R {
        debug_assert_eq!(self.state.load(Ordering::Acquire), DONE);
        // SAFETY: see `Sync` above: the worker wrote `r` before DONE.
        unsafe { (*self.r.get()).take() }.expect("taken once")
    }
}

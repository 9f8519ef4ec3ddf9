//! Turning a panic inside a task into an [`Error::Panicked`] value.
//!
//! A process-wide panic hook is installed once, chained in front of whatever
//! hook was there. While a thread runs a task (or a done-callback) the hook
//! records the message and location into a thread-local slot and logs it at
//! debug level instead of printing it, because the panic is delivered to the
//! caller as a value. Outside tasks the previous hook runs unchanged.

use crate::Error;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// Set in worker processes: panics there also capture a backtrace, which
/// travels back to the caller inside [`Error::Panicked`].
static CAPTURE_BACKTRACE: AtomicBool = AtomicBool::new(false);

/// Marks this process as a worker (see [`CAPTURE_BACKTRACE`]); `name` is for logs.
pub(crate) fn set_worker_identity(name: String) {
    log::debug!("{name} ready");
    CAPTURE_BACKTRACE.store(true, Ordering::Relaxed);
}

thread_local! {
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    static LAST_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
    static LAST_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_TASK.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                log::debug!(
                    "task panicked at {}: {}",
                    location.as_deref().unwrap_or("<unknown>"),
                    payload_message(info.payload())
                );
                LAST_LOCATION.with(|slot| *slot.borrow_mut() = location);
                if CAPTURE_BACKTRACE.load(Ordering::Relaxed) {
                    let trace = std::backtrace::Backtrace::force_capture().to_string();
                    LAST_BACKTRACE.with(|slot| *slot.borrow_mut() = Some(trace));
                }
            } else {
                previous(info);
            }
        }));
    });
}

/// The message carried by a panic payload.
pub(crate) fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Runs `f`, turning a panic into [`Error::Panicked`] with its message and location.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Error> {
    install_hook();
    let was = IN_TASK.with(|c| c.replace(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    let outcome = outcome.map_err(|payload| {
        let location = LAST_LOCATION.with(|slot| slot.borrow_mut().take());
        let backtrace = LAST_BACKTRACE.with(|slot| slot.borrow_mut().take());
        let mut message = payload_message(payload.as_ref());
        if let Some(again) = drop_payload(payload) {
            message = format!("{message} (and dropping its panic payload panicked: {again})");
        }
        Error::Panicked {
            message,
            location,
            worker: None,
            backtrace,
        }
    });
    IN_TASK.with(|c| c.set(was));
    outcome
}

/// Drops a panic payload. The payload is user data (`panic_any(value)`) and
/// its `Drop` may panic in turn; that panic must not escape from [`catch`]
/// (it would kill the worker thread and leave the task's future unresolved),
/// so it is caught, and a payload of *that* panic, which might do the same,
/// is leaked rather than dropped. Returns the second panic's message.
fn drop_payload(payload: Box<dyn Any + Send>) -> Option<String> {
    let second = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))).err()?;
    let message = payload_message(second.as_ref());
    LAST_LOCATION.with(|slot| slot.borrow_mut().take());
    LAST_BACKTRACE.with(|slot| slot.borrow_mut().take());
    std::mem::forget(second);
    Some(message)
}

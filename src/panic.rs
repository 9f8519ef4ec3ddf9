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
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Not a worker: panics carry no backtrace.
const BACKTRACE_OFF: u8 = 0;
/// A worker process: panics also capture a backtrace, which travels back to
/// the caller inside [`Error::Panicked`].
const BACKTRACE_ON: u8 = 1;
/// A forked worker whose probe (see [`probe_backtraces`]) has not finished.
const BACKTRACE_PROBING: u8 = 2;
/// A forked worker in which capturing would hang: no backtraces.
const BACKTRACE_UNUSABLE: u8 = 3;

static BACKTRACES: AtomicU8 = AtomicU8::new(BACKTRACE_OFF);

/// Set in forked workers: the panic hook does not log. The logger's lock is
/// a copy of the parent's and may have been held by a thread the child does
/// not have; logging would then wait forever.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Marks this process as a worker (see [`BACKTRACE_ON`]); `name` is for logs.
pub(crate) fn set_worker_identity(name: String) {
    log::debug!("{name} ready");
    BACKTRACES.store(BACKTRACE_ON, Ordering::Relaxed);
}

/// Marks this process as a forked worker: no logging from panics, and
/// backtraces only once [`probe_backtraces`] has shown that capturing one
/// does not hang. Takes no lock (it runs between `fork` and the worker loop).
pub(crate) fn set_forked_worker() {
    QUIET.store(true, Ordering::Relaxed);
    BACKTRACES.store(BACKTRACE_PROBING, Ordering::Relaxed);
}

/// Run on a thread of its own in a forked worker: captures one backtrace.
///
/// std serialises backtrace capture with a process-wide lock; if another
/// thread of the parent held it at the moment of the fork, the child's copy
/// stays locked for good and this call never returns. Then the panic hook
/// gives up waiting and the worker's panics carry no backtrace, instead of
/// the worker hanging at its first panic.
pub(crate) fn probe_backtraces() {
    drop(std::backtrace::Backtrace::force_capture());
    let _ = BACKTRACES.compare_exchange(
        BACKTRACE_PROBING,
        BACKTRACE_ON,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
}

/// The probe could not even start: no backtraces in this worker.
pub(crate) fn backtraces_unusable() {
    BACKTRACES.store(BACKTRACE_UNUSABLE, Ordering::Relaxed);
}

/// Whether a panic now should capture a backtrace (waits for a running probe).
fn capture_backtraces() -> bool {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        match BACKTRACES.load(Ordering::Relaxed) {
            BACKTRACE_ON => return true,
            BACKTRACE_PROBING if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(1))
            }
            BACKTRACE_PROBING => {
                backtraces_unusable();
                return false;
            }
            _ => return false,
        }
    }
}

fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
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
                if !quiet() {
                    log::debug!(
                        "task panicked at {}: {}",
                        location.as_deref().unwrap_or("<unknown>"),
                        payload_message(info.payload())
                    );
                }
                LAST_LOCATION.with(|slot| *slot.borrow_mut() = location);
                if capture_backtraces() {
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

/// Runs `step(k, None)` for every `k` in `0..n` under one [`catch`] for the
/// whole run instead of one per item: when step `k` panics, the run resumes
/// at `k + 1` after `step(k, Some(error))` (outside any catch) has recorded
/// the failure of item `k`. A chunk of items costs one catch unless its
/// items panic.
pub(crate) fn catch_each(n: usize, mut step: impl FnMut(usize, Option<Error>)) {
    let mut k = 0;
    while k < n {
        let at = &mut k;
        let run = catch(|| {
            while *at < n {
                step(*at, None);
                *at += 1;
            }
        });
        match run {
            Ok(()) => return,
            Err(e) => {
                step(k, Some(e));
                k += 1;
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("the bomb went off");
        }
    }

    #[test]
    fn a_payload_that_panics_on_drop_is_caught() {
        let out = catch(|| -> u32 { std::panic::panic_any(Bomb) });
        match out {
            Err(Error::Panicked { message, .. }) => {
                assert!(message.contains("the bomb went off"), "{message}")
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
        assert_eq!(catch(|| 7), Ok(7));
        assert!(matches!(
            catch(|| -> u32 { panic!("plain") }),
            Err(Error::Panicked { message, .. }) if message == "plain"
        ));
    }
}

//! Keeping user code (serde impls, `Drop`, done-callbacks) from unwinding
//! into the cluster's own threads.
//!
//! Every place where the cluster calls code it does not own goes through
//! [`contain`]: a panic becomes [`Error::Panicked`], and so does a panic
//! whose payload panics again when it is dropped (`panic_any(Bomb)`), which
//! a plain `catch_unwind` would let escape while the payload is discarded.

use crate::Error;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`; a panic (however nasty its payload) comes back as `Panicked`.
pub(crate) fn contain<R>(f: impl FnOnce() -> R) -> Result<R, Error> {
    match catch_unwind(AssertUnwindSafe(|| crate::panic::catch(f))) {
        Ok(outcome) => outcome,
        // `panic::catch` caught the panic, and dropping its payload panicked.
        Err(payload) => Err(Error::Panicked {
            message: format!(
                "a panic payload panicked while being dropped: {}",
                discard(payload)
            ),
            location: None,
            worker: None,
            backtrace: None,
        }),
    }
}

/// The message of a panic payload; drops the payload, containing any panic
/// its destructor raises (the payload of that second panic is leaked rather
/// than dropped, so this never loops).
pub(crate) fn discard(payload: Box<dyn Any + Send>) -> String {
    let message = crate::panic::payload_message(payload.as_ref());
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
    message
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
    fn a_payload_that_panics_on_drop_is_contained() {
        let out = contain(|| -> u32 { std::panic::panic_any(Bomb) });
        match out {
            Err(Error::Panicked { message, .. }) => {
                assert!(message.contains("the bomb went off"), "{message}")
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
        assert_eq!(contain(|| 7), Ok(7));
        assert!(matches!(
            contain(|| -> u32 { panic!("plain") }),
            Err(Error::Panicked { message, .. }) if message == "plain"
        ));
    }
}

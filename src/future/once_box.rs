//! A value set at most once and then only read, in one word: what
//! `std::sync::OnceLock<Box<T>>` does in two (a `Once` beside the pointer).
//! For a field most cells never set (a cell is fresh memory for every
//! submitted call).

use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Empty until [`OnceBox::set`]; the first value set stays until drop.
///
/// `T: Send + Sync` on the type itself, since the `AtomicPtr` inside would
/// make it `Send` and `Sync` for any `T`: a value set by one thread is read
/// and dropped by others.
pub(crate) struct OnceBox<T: Send + Sync>(AtomicPtr<T>);

impl<T: Send + Sync> OnceBox<T> {
    pub(crate) const fn new() -> Self {
        OnceBox(AtomicPtr::new(null_mut()))
    }

    /// The value, once set.
    pub(crate) fn get(&self) -> Option<&T> {
        // SAFETY: non-null only once `set` published a leaked box (Acquire
        // pairs with its AcqRel), which stays until `self` is dropped.
        unsafe { self.0.load(Ordering::Acquire).as_ref() }
    }

    /// Sets the value unless one is set already: the first writer wins, a
    /// later one's value is dropped. Returns whether this one won.
    pub(crate) fn set(&self, value: Box<T>) -> bool {
        let new = Box::into_raw(value);
        match self
            .0
            .compare_exchange(null_mut(), new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(_) => {
                // SAFETY: `new` came from `Box::into_raw` above and was not published.
                drop(unsafe { Box::from_raw(new) });
                false
            }
        }
    }
}

impl<T: Send + Sync> Drop for OnceBox<T> {
    fn drop(&mut self) {
        let kept = *self.0.get_mut();
        if !kept.is_null() {
            // SAFETY: published by `set` from `Box::into_raw`, dropped once, here.
            drop(unsafe { Box::from_raw(kept) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OnceBox;
    use std::sync::Arc;

    #[test]
    fn the_first_value_set_stays_and_every_value_is_dropped_once() {
        let first = Arc::new(1);
        let second = Arc::new(2);
        let once = OnceBox::new();
        assert!(once.get().is_none());
        assert!(once.set(Box::new(first.clone())));
        assert!(!once.set(Box::new(second.clone())));
        assert_eq!(once.get().map(|v| **v), Some(1));
        // The loser's value went at once, the winner's goes with the box.
        assert_eq!(Arc::strong_count(&second), 1);
        assert_eq!(Arc::strong_count(&first), 2);
        drop(once);
        assert_eq!(Arc::strong_count(&first), 1);
    }

    #[test]
    fn racing_setters_agree_on_one_value() {
        for _ in 0..50 {
            let once = Arc::new(OnceBox::new());
            let setters: Vec<_> = (0..3)
                .map(|i| {
                    let once = once.clone();
                    std::thread::spawn(move || (once.set(Box::new(i)), *once.get().unwrap()))
                })
                .collect();
            let seen: Vec<(bool, i32)> = setters.into_iter().map(|t| t.join().unwrap()).collect();
            let winners: Vec<i32> = seen
                .iter()
                .filter(|(won, _)| *won)
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(winners.len(), 1);
            assert!(seen.iter().all(|(_, v)| *v == winners[0]));
        }
    }
}

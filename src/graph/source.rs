//! Input sources: what an [`Arg`](crate::Arg) points at (the input future's
//! cell) and how a dependent hears that its input is done.
//!
//! The value of an input with `Arg`s is kept encoded once (postcard) in its
//! cell: a process or cluster backend keeps the bytes that came from the
//! worker; otherwise a done-callback registered by [`Future::arg`] encodes
//! the value as it completes. Dependents then take the bytes by reference
//! (spliced into their own argument bytes, or decoded on a thread).

use crate::future::{CellRef, Encoder, Reference};
use crate::{Error, Future, Payload, Result};

use std::sync::Arc;

/// Encodes one value the way the argument frames of every backend spell it.
pub(crate) fn encode_value<T: Payload>(value: &T) -> Result<Arc<[u8]>> {
    let mut out = Vec::new();
    crate::ship::encode(value, &mut out)?;
    Ok(out.into())
}

/// Where an [`Arg`](crate::Arg)'s value comes from: the input future's cell.
pub(crate) struct Source<T> {
    cell: CellRef<T>,
}

impl<T> Clone for Source<T> {
    fn clone(&self) -> Self {
        Source {
            cell: self.cell.clone(),
        }
    }
}

/// How an input ended, as its dependents see it.
pub(crate) enum Outcome {
    /// Finished with a value (kept encoded in the cell).
    Ready,
    /// Cancelled: its dependents are cancelled too.
    Cancelled,
    /// Failed; the error is the root cause (a `Dependency` is unwrapped).
    Failed(Error),
}

/// An input source with its value type erased.
pub(crate) trait AnySource: Send + Sync {
    /// The input future's id.
    fn id(&self) -> u64;
    /// The tag of the executor that owns it.
    fn owner(&self) -> u64;
    /// Calls `f` once the input is done (at once if it already is).
    fn subscribe(&self, f: Box<dyn FnOnce(Outcome) + Send>);
    /// The input's value by reference; an error if it was lost.
    fn encoded(&self) -> Result<Reference>;
}

impl<T> Source<T> {
    /// The input future's id.
    pub(crate) fn id(&self) -> u64 {
        self.cell.id()
    }
}

impl<T: Send + 'static> Source<T> {
    /// Makes sure the value gets encoded as it completes, with `encoder`
    /// (the cell's own, or the one a dependent knows).
    fn arm(&self, encoder: Encoder<T>) {
        if !self.cell.want_encoded() {
            return;
        }
        // A hook, not a done-callback: it must not make a backend fetch a
        // value that stays remote (such a backend keeps a reference instead).
        let weak = std::sync::Arc::downgrade(&self.cell.0);
        self.cell.on_final(Box::new(move || {
            if let Some(holder) = weak.upgrade() {
                keep_encoded(holder.cell(), encoder);
            }
        }));
    }

    /// Arms encoding with the dependent's knowledge of `T` (for futures whose
    /// backend did not know `T` was a payload, e.g. `ThreadPool::spawn`).
    pub(crate) fn arm_as_payload(&self)
    where
        T: Payload,
    {
        self.arm(self.cell.encoder().unwrap_or(encode_value::<T>));
    }

    /// The input's value by reference, for a dependent that is launching.
    ///
    /// The encoding hook runs on the thread that completed the input, after
    /// the state turned final; a dependent that subscribed in between hears
    /// "done" at once and can get here first. Then the value is encoded here
    /// (once: the first encoding kept wins).
    pub(crate) fn encoded_as_payload(&self) -> Result<Reference>
    where
        T: Payload,
    {
        keep_encoded(&self.cell, self.cell.encoder().unwrap_or(encode_value::<T>));
        AnySource::encoded(self)
    }
}

/// Encodes a finished cell's value with `encoder` and keeps the bytes in the
/// cell, unless they are kept already or the value was taken.
fn keep_encoded<T: Send + 'static>(cell: &crate::future::Cell<T>, encoder: Encoder<T>) {
    if cell.encoded().is_some() {
        return;
    }
    cell.peek(|outcome| {
        if let (Ok(value), None) = (outcome, cell.encoded()) {
            cell.keep_encoded(encoder(value));
        }
    });
}

impl<T: Send + 'static> AnySource for Source<T> {
    fn id(&self) -> u64 {
        self.cell.id()
    }

    fn owner(&self) -> u64 {
        self.cell.owner()
    }

    fn subscribe(&self, f: Box<dyn FnOnce(Outcome) + Send>) {
        let weak = std::sync::Arc::downgrade(&self.cell.0);
        self.cell.on_final(Box::new(move || {
            let outcome = match weak.upgrade().and_then(|h| h.cell().final_outcome()) {
                Some(Ok(())) => Outcome::Ready,
                Some(Err(Error::Cancelled)) => Outcome::Cancelled,
                Some(Err(Error::Dependency { error, .. })) => Outcome::Failed(*error),
                Some(Err(e)) => Outcome::Failed(e),
                None => Outcome::Failed(Error::invalid("internal: an input was not final")),
            };
            f(outcome)
        }));
    }

    fn encoded(&self) -> Result<Reference> {
        match self.cell.encoded() {
            Some(r) => r.clone(),
            None => Err(Error::invalid(format!(
                "the value of input future {} was taken by `result` before a call that \
                 needs it was submitted; submit the dependents first, or pass the value",
                self.cell.id()
            ))),
        }
    }
}

impl<T: Send + 'static> Future<T> {
    /// A handle to this future's value, to pass to another call on the same
    /// executor with [`Executor::call`](crate::Executor::call). Does not
    /// consume the future; dropping the future later cancels nothing.
    ///
    /// ```
    /// use fanout::{Executor, ThreadPool};
    /// fn inc(x: u64) -> u64 { x + 1 }
    /// let pool = ThreadPool::new(2)?;
    /// let a = pool.submit(inc, (1,))?;
    /// let b = pool.call(inc).submit((a.arg(),))?;
    /// assert_eq!(b.result()?, 3);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn arg(&self) -> crate::Arg<T> {
        let source = Source {
            cell: self.cell().clone(),
        };
        if let Some(encoder) = self.cell().encoder() {
            source.arm(encoder);
        }
        crate::Arg { source }
    }
}

//! The one error type every fanout operation returns.

/// Everything that can go wrong with a submitted call or an executor.
///
/// Callers match on the variant and ignore the payload with `{ .. }`; the
/// `Display` text of every variant is a complete sentence meant for a user.
///
/// ```
/// use fanout::{Error, Executor, ThreadPool};
///
/// let pool = ThreadPool::new(1).unwrap();
/// pool.shutdown(true, false);
/// match pool.spawn(|| 1) {
///     Err(Error::Shutdown) => {}
///     other => panic!("expected Shutdown, got {other:?}"),
/// }
/// assert_eq!(Error::Shutdown.to_string(), "cannot schedule new futures after shutdown");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The future was cancelled before it started running.
    #[error("the future was cancelled before it ran")]
    Cancelled,

    /// A deadline passed before the work was done.
    #[error("timed out: {what}")]
    Timeout {
        /// What was not done in time, e.g. `"3 (of 10) futures unfinished"`.
        what: String,
    },

    /// The task panicked. The worker that ran it survives.
    #[error("the task panicked{}: {message}{}",
        worker.as_deref().map(|w| format!(" on {w}")).unwrap_or_default(),
        location.as_deref().map(|l| format!(" (at {l})")).unwrap_or_default())]
    Panicked {
        /// The panic message (`"<non-string panic payload>"` when it was not a string).
        message: String,
        /// `file:line:column` of the panic, when it could be captured.
        location: Option<String>,
        /// The worker (process or host) the task ran on, when it ran elsewhere.
        worker: Option<String>,
        /// A backtrace captured on the remote side, when one was available
        /// (not part of the `Display` text; print it when you need it).
        backtrace: Option<String>,
    },

    /// `submit` was called after `shutdown`.
    #[error("cannot schedule new futures after shutdown")]
    Shutdown,

    /// The executor can no longer run tasks (an initializer failed, workers cannot start).
    #[error("the executor is broken and cannot run tasks: {reason}")]
    Broken {
        /// Why the executor broke.
        reason: String,
    },

    /// The process or host running the task died before the task finished.
    #[error("the worker running the task ({worker}) died before it finished: {status}")]
    WorkerLost {
        /// Which worker died (pid, host, consumer name).
        worker: String,
        /// How it died: exit code, signal, or lost lease.
        status: String,
    },

    /// Arguments or a result could not be serialized or deserialized.
    #[error("could not encode or decode a value of type `{type_name}`: {message}")]
    Codec {
        /// The Rust type that failed (or `"frame"` for the envelope itself).
        type_name: String,
        /// What the codec reported.
        message: String,
    },

    /// An argument was out of range or otherwise unusable.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// Which argument, what was given, and what is expected.
        message: String,
    },

    /// The cluster engine failed (connection, protocol, authentication).
    #[error("the cluster backend failed: {message}")]
    Backend {
        /// What the engine reported.
        message: String,
    },

    /// An input of the call (a future passed as an [`Arg`](crate::Arg)) failed,
    /// so the call did not run. Carries the root cause, however deep the chain.
    #[error("input future {input} failed, so this call did not run: {error}")]
    Dependency {
        /// The id ([`Future::id`](crate::Future::id)) of the input that failed.
        input: u64,
        /// The root error: the first failure up the chain of inputs.
        error: Box<Error>,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Timeout`].
    pub(crate) fn timeout(what: impl Into<String>) -> Self {
        Error::Timeout { what: what.into() }
    }
}

/// `Result` with [`Error`] as the default error type.
///
/// ```
/// fn half(n: u32) -> fanout::Result<u32> {
///     if n % 2 == 0 { Ok(n / 2) } else { Err(fanout::Error::Cancelled) }
/// }
/// assert_eq!(half(4), Ok(2));
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_sentences() {
        let e = Error::Panicked {
            message: "boom".into(),
            location: Some("src/x.rs:1:2".into()),
            worker: None,
            backtrace: None,
        };
        assert_eq!(e.to_string(), "the task panicked: boom (at src/x.rs:1:2)");
        let e = Error::timeout("3 (of 10) futures unfinished");
        assert_eq!(e.to_string(), "timed out: 3 (of 10) futures unfinished");
    }
}

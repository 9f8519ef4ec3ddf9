//! [`Call`]: one call with per-call options and inputs that may be futures.
//!
//! `ex.call(f)` starts a call; setters choose retries, priority, a run-time
//! limit and resources; [`Call::submit`] takes the inputs, each a plain value
//! or an [`Arg`] (a handle to another future's value), and returns the future.
//!
//! Layering: this file is the public shape only. Dependency resolution lives
//! in the waiting room (`graph`), retries and backoff in `controls`; a backend
//! learns only the options it must honour itself ([`CallOptions`]).

use crate::{Error, Executor, Future, Payload, Result, Task};
use std::time::Duration;

/// What a backend is told about a call beyond its function and inputs.
///
/// Written once here; backends read `priority`, `timeout` and `resources`
/// (retries and backoff are handled above them, by the owner).
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Extra attempts after a failure that `retry_if` accepts.
    pub retries: u32,
    /// Which failures are retried; `None` is the default predicate.
    pub retry_if: Option<fn(&Error) -> bool>,
    /// Exponential backoff between attempts: (first delay, cap); `None` retries at once.
    pub backoff: Option<(Duration, Duration)>,
    /// Higher runs first among pending calls of the executor; FIFO within a level.
    pub priority: i32,
    /// The call's own run-time limit.
    pub timeout: Option<Duration>,
    /// Named resources a cluster worker must advertise to run the call.
    pub resources: Vec<(String, u32)>,
}

impl CallOptions {
    /// The default retry predicate: a panic, a timeout or a lost worker.
    pub fn default_retry_if(e: &Error) -> bool {
        matches!(
            e,
            Error::Panicked { .. } | Error::Timeout { .. } | Error::WorkerLost { .. }
        )
    }

    /// Whether `e` may be retried under these options.
    pub fn should_retry(&self, e: &Error) -> bool {
        self.retry_if.unwrap_or(Self::default_retry_if)(e)
    }
}

/// One call being set up: `ex.call(f)`, then options, then [`Call::submit`].
///
/// ```
/// use fanout::{Executor, ThreadPool};
/// fn add(a: u64, b: u64) -> u64 { a + b }
/// let pool = ThreadPool::new(2)?;
/// let f = pool.call(add).submit((1u64, 2u64))?;
/// assert_eq!(f.result()?, 3);
/// # Ok::<(), fanout::Error>(())
/// ```
#[must_use = "a Call does nothing until `submit` is called"]
pub struct Call<'e, E: ?Sized, F> {
    pub(crate) executor: &'e E,
    pub(crate) f: F,
    pub(crate) options: CallOptions,
}

impl<'e, E: Executor, F> Call<'e, E, F> {
    pub(crate) fn new(executor: &'e E, f: F) -> Self {
        Call {
            executor,
            f,
            options: CallOptions::default(),
        }
    }

    /// Runs the call again, up to `n` more times, after a failure that
    /// [`Call::retry_if`] accepts. The final error is the last attempt's.
    ///
    /// ```
    /// use fanout::{Executor, ThreadPool};
    /// fn one() -> u32 { 1 }
    /// let pool = ThreadPool::new(1)?;
    /// assert_eq!(pool.call(one).retries(3).submit(())?.result()?, 1);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn retries(mut self, n: u32) -> Self {
        self.options.retries = n;
        self
    }

    /// Which failures are retried (default: `Panicked`, `Timeout`, `WorkerLost`).
    ///
    /// ```
    /// use fanout::{Error, Executor, ThreadPool};
    /// fn one() -> u32 { 1 }
    /// let pool = ThreadPool::new(1)?;
    /// let only_lost = |e: &Error| matches!(e, Error::WorkerLost { .. });
    /// assert_eq!(pool.call(one).retries(2).retry_if(only_lost).submit(())?.result()?, 1);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn retry_if(mut self, pred: fn(&Error) -> bool) -> Self {
        self.options.retry_if = Some(pred);
        self
    }

    /// Waits before each retry: `first`, then doubling up to `max`, with jitter.
    /// Without it a failed call is retried at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fanout::{Executor, ThreadPool};
    /// fn one() -> u32 { 1 }
    /// let pool = ThreadPool::new(1)?;
    /// let f = pool.call(one).retries(2)
    ///     .backoff(Duration::from_millis(10), Duration::from_secs(1)).submit(())?;
    /// assert_eq!(f.result()?, 1);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.options.backoff = Some((first, max.max(first)));
        self
    }

    /// Higher first among pending calls of the executor; FIFO within a level (default 0).
    ///
    /// ```
    /// use fanout::{Executor, ThreadPool};
    /// fn one() -> u32 { 1 }
    /// let pool = ThreadPool::new(1)?;
    /// assert_eq!(pool.call(one).priority(10).submit(())?.result()?, 1);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn priority(mut self, p: i32) -> Self {
        self.options.priority = p;
        self
    }

    /// The call's own run-time limit: it resolves to `Err(Timeout)` when it
    /// runs longer. Process and cluster backends kill (and replace) the worker
    /// running it; the thread pool cannot stop a thread, so the call's thread
    /// runs on to the end and its result is dropped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fanout::{Executor, ThreadPool};
    /// fn one() -> u32 { 1 }
    /// let pool = ThreadPool::new(1)?;
    /// assert_eq!(pool.call(one).timeout(Duration::from_secs(5)).submit(())?.result()?, 1);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.options.timeout = Some(limit);
        self
    }

    /// Cluster: only a worker that advertises at least these amounts runs the
    /// call (it waits, pending and cancellable, until one does). The thread and
    /// process pools ignore resources.
    ///
    /// ```
    /// use fanout::{Executor, ThreadPool};
    /// fn one() -> u32 { 1 }
    /// let pool = ThreadPool::new(1)?;
    /// assert_eq!(pool.call(one).resources(&[("gpu", 1)]).submit(())?.result()?, 1);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn resources(mut self, needs: &[(&str, u32)]) -> Self {
        self.options.resources = needs.iter().map(|&(k, v)| (k.to_string(), v)).collect();
        self
    }

    /// Submits the call. Each input is a plain value or an [`Arg`]; the call
    /// is `Pending` until every `Arg` input is done, then runs with the values.
    ///
    /// ```
    /// use fanout::{Executor, ThreadPool};
    /// fn add(a: u64, b: u64) -> u64 { a + b }
    /// let pool = ThreadPool::new(2)?;
    /// let a = pool.submit(add, (1, 2))?;
    /// let b = pool.call(add).submit((a.arg(), 10u64))?;
    /// assert_eq!(b.result()?, 13);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn submit<Args, In>(self, inputs: In) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
        In: IntoArgs<Args>,
    {
        crate::graph::submit_call(self.executor, self.f, inputs.into_inputs(), self.options)
    }
}

impl<E: ?Sized, F> std::fmt::Debug for Call<'_, E, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("options", &self.options)
            .finish()
    }
}

/// A handle to a future's value, to pass to another call on the same
/// executor ([`Future::arg`]). Cheap to clone; it does not consume the future.
///
/// ```
/// use fanout::{Executor, ThreadPool};
/// fn double(x: u64) -> u64 { 2 * x }
/// let pool = ThreadPool::new(2)?;
/// let a = pool.submit(double, (1,))?;
/// let arg = a.arg();
/// let b = pool.call(double).submit((arg.clone(),))?;
/// let c = pool.call(double).submit((arg,))?;
/// assert_eq!((b.result()?, c.result()?), (4, 4));
/// # Ok::<(), fanout::Error>(())
/// ```
pub struct Arg<T> {
    pub(crate) source: crate::graph::Source<T>,
}

impl<T> Clone for Arg<T> {
    fn clone(&self) -> Self {
        Arg {
            source: self.source.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Arg<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arg")
            .field("future", &self.source.id())
            .finish()
    }
}

/// One input of a call: a plain value or an [`Arg`].
#[doc(hidden)]
pub enum Input<A> {
    /// The value itself.
    Value(A),
    /// Another future's value.
    Arg(Arg<A>),
}

/// Something that can be one input of a [`Call`]: a plain value `A` or an `Arg<A>`.
///
/// ```
/// fn takes<I: fanout::IntoArg<u64>>(_: I) {}
/// takes(5u64);
/// ```
pub trait IntoArg<A> {
    /// Converts into an input.
    #[doc(hidden)]
    fn into_input(self) -> Input<A>;
}

impl<A> IntoArg<A> for A {
    fn into_input(self) -> Input<A> {
        Input::Value(self)
    }
}

impl<A> IntoArg<A> for Arg<A> {
    fn into_input(self) -> Input<A> {
        Input::Arg(self)
    }
}

/// The inputs of a [`Call`]: a tuple of 0 to 8 elements, element `i` an
/// [`IntoArg<Ai>`] for `Args = (A1, ..., An)`.
///
/// ```
/// fn takes<I: fanout::IntoArgs<(u64, String)>>(_: I) {}
/// takes((5u64, String::from("x")));
/// ```
pub trait IntoArgs<Args> {
    /// The inputs, element by element.
    #[doc(hidden)]
    type Inputs: crate::graph::Inputs<Args>;
    /// Converts into inputs.
    #[doc(hidden)]
    fn into_inputs(self) -> Self::Inputs;
}

macro_rules! impl_into_args {
    ($(($into:ident, $arg:ident)),*) => {
        impl<$($into: IntoArg<$arg>, $arg: Payload,)*> IntoArgs<($($arg,)*)> for ($($into,)*) {
            type Inputs = ($(Input<$arg>,)*);
            #[allow(non_snake_case, clippy::unused_unit)]
            fn into_inputs(self) -> Self::Inputs {
                let ($($into,)*) = self;
                ($($into.into_input(),)*)
            }
        }
    };
}

impl_into_args!();
impl_into_args!((I1, A1));
impl_into_args!((I1, A1), (I2, A2));
impl_into_args!((I1, A1), (I2, A2), (I3, A3));
impl_into_args!((I1, A1), (I2, A2), (I3, A3), (I4, A4));
impl_into_args!((I1, A1), (I2, A2), (I3, A3), (I4, A4), (I5, A5));
impl_into_args!((I1, A1), (I2, A2), (I3, A3), (I4, A4), (I5, A5), (I6, A6));
impl_into_args!(
    (I1, A1),
    (I2, A2),
    (I3, A3),
    (I4, A4),
    (I5, A5),
    (I6, A6),
    (I7, A7)
);
impl_into_args!(
    (I1, A1),
    (I2, A2),
    (I3, A3),
    (I4, A4),
    (I5, A5),
    (I6, A6),
    (I7, A7),
    (I8, A8)
);

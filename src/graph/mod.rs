//! The waiting room: calls whose inputs are futures wait here, above the
//! backends, until every input is done (Ray's owner-side dependency
//! resolution). A backend only learns how to take an input by reference.
//!
//! SKELETON: plain-value calls go straight to the backend; `Arg` inputs are
//! refused until the waiting room lands.

use crate::call::{CallOptions, Input};
use crate::{Error, Executor, Future, Payload, Result, Task};

/// Where an [`Arg`](crate::Arg)'s value comes from: the input future.
pub(crate) struct Source<T> {
    id: u64,
    _marker: std::marker::PhantomData<fn() -> T>,
}

impl<T> Clone for Source<T> {
    fn clone(&self) -> Self {
        Source {
            id: self.id,
            _marker: std::marker::PhantomData,
        }
    }
}

impl<T> Source<T> {
    /// The input future's id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl<T> Future<T> {
    /// A handle to this future's value, to pass to another call on the same
    /// executor with [`Executor::call`]. Does not consume the future.
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
        crate::Arg {
            source: Source {
                id: self.id(),
                _marker: std::marker::PhantomData,
            },
        }
    }
}

/// The inputs of one call, element by element (a tuple of [`Input`]s).
#[doc(hidden)]
pub trait Inputs<Args>: Send + 'static {
    /// The arguments, when every input is a plain value; otherwise `Err(self)`.
    fn into_values(self) -> std::result::Result<Args, Self>
    where
        Self: Sized;
}

macro_rules! impl_inputs {
    ($($arg:ident),*) => {
        impl<$($arg: Payload,)*> Inputs<($($arg,)*)> for ($(Input<$arg>,)*) {
            #[allow(non_snake_case, clippy::unused_unit, unreachable_patterns)]
            fn into_values(self) -> std::result::Result<($($arg,)*), Self> {
                match self {
                    ($(Input::Value($arg),)*) => Ok(($($arg,)*)),
                    other => Err(other),
                }
            }
        }
    };
}

impl_inputs!();
impl_inputs!(A1);
impl_inputs!(A1, A2);
impl_inputs!(A1, A2, A3);
impl_inputs!(A1, A2, A3, A4);
impl_inputs!(A1, A2, A3, A4, A5);
impl_inputs!(A1, A2, A3, A4, A5, A6);
impl_inputs!(A1, A2, A3, A4, A5, A6, A7);
impl_inputs!(A1, A2, A3, A4, A5, A6, A7, A8);

/// Submits one call: straight to the backend when every input is a value,
/// through the waiting room otherwise.
pub(crate) fn submit_call<E, F, Args, In>(
    executor: &E,
    f: F,
    inputs: In,
    options: CallOptions,
) -> Result<Future<F::Output>>
where
    E: Executor + ?Sized,
    F: Task<Args>,
    Args: Payload,
    F::Output: Payload,
    In: Inputs<Args>,
{
    match inputs.into_values() {
        // Retries (when asked for) wrap the backend's submission here.
        Ok(args) => crate::controls::submit_values(executor, f, args, &options),
        Err(_) => Err(Error::invalid(
            "futures as arguments are not supported yet (skeleton)",
        )),
    }
}

/// The values of `fs`, in input order; the first error (in input order) wins.
///
/// ```
/// use fanout::{gather, Executor, ThreadPool};
/// fn double(x: u64) -> u64 { 2 * x }
/// let pool = ThreadPool::new(2)?;
/// let fs = (0..4).map(|i| pool.submit(double, (i,))).collect::<Result<Vec<_>, _>>()?;
/// assert_eq!(gather(fs)?, [0, 2, 4, 6]);
/// # Ok::<(), fanout::Error>(())
/// ```
pub fn gather<T>(fs: impl IntoIterator<Item = Future<T>>) -> Result<Vec<T>> {
    let fs: Vec<Future<T>> = fs.into_iter().collect();
    let mut out = Vec::with_capacity(fs.len());
    let mut first_error = None;
    for f in fs {
        match f.result() {
            Ok(v) => out.push(v),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

//! Task graphs: calls whose inputs are other calls' futures.
//!
//! The waiting room ([`room`]) sits above the backends (Ray's owner-side
//! dependency resolution): a call with [`Arg`](crate::Arg) inputs waits
//! there, `Pending`, until every input is done, then goes to its backend
//! with each input by reference ([`Ready`]). A backend only learns how to
//! take those references, through [`Launcher`]:
//!
//! * thread pool: decodes the arguments from the inputs' bytes, encoded once
//!   per input ([`source`]);
//! * process pool: splices the inputs' result bytes, as they came from their
//!   workers, into the call's argument frame without decoding them;
//! * cluster: the same bytes, in the task record.
//!
//! [`put`](fn@put) makes a finished future from a value (encoded once), and
//! [`gather`](fn@gather) collects many values in input order.

mod gather;
mod inputs;
mod put;
mod room;
mod source;

pub use gather::gather;
pub use inputs::{Inputs, Ready};
pub(crate) use put::put;
pub(crate) use source::{encode_value, Source};

use crate::call::CallOptions;
use crate::future::Promise;
use crate::{Executor, Future, Payload, Result, Task};

/// How a backend runs a ready call of one function: it receives the call's
/// argument pieces and the promise to complete (with the outcome, or the
/// error that kept the call from running), owning what it needs of the
/// backend so calls can launch long after `submit` returned.
#[doc(hidden)]
pub struct Launcher<Args, R>(pub(crate) LaunchFn<R>, std::marker::PhantomData<fn(Args)>);

pub(crate) type LaunchFn<R> = Box<dyn Fn(Ready, Promise<R>, &CallOptions) + Send + Sync + 'static>;

impl<Args, R> Launcher<Args, R> {
    pub(crate) fn new(f: impl Fn(Ready, Promise<R>, &CallOptions) + Send + Sync + 'static) -> Self {
        Launcher(Box::new(f), std::marker::PhantomData)
    }
}

/// A fresh executor tag (every executor gets one; futures carry it).
pub(crate) fn new_owner() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

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
        Err(inputs) => room::park(executor.owner(), executor.launcher(f), inputs, options),
    }
}

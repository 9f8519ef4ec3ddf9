//! Per-call controls written once, above the backends: retries with backoff
//! (the owner re-submits), the shared timer that spaces retries and stops
//! overrunning thread-pool calls, and the hook that tells an executor one of
//! its threads is about to block on a future.

pub(crate) mod backoff;
pub(crate) mod blocking;
pub(crate) mod retry;
pub(crate) mod timer;

pub(crate) use retry::submit_values;
/// For the waiting room: a call with `Arg` inputs retries the same way.
#[allow(unused_imports)]
pub(crate) use retry::{launch, Attempt};

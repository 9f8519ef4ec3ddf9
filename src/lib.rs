//! # fanout
//!
//! Python's `concurrent.futures` model for Rust: submit a call, get a
//! [`Future`], wait on many, shut down cleanly — behind one [`Executor`] trait.
//!
//! ```
//! use fanout::{as_completed, wait, Executor, ReturnWhen, ThreadPool};
//!
//! fn slow_add(a: u64, b: u64) -> u64 { a + b }
//!
//! let pool = ThreadPool::new(4)?;
//!
//! // submit → future → result
//! let f = pool.submit(slow_add, (1, 2))?;
//! assert_eq!(f.result()?, 3);
//!
//! // many futures, collected as they finish
//! let fs: Vec<_> = (0..8).map(|i| pool.submit(slow_add, (i, i))).collect::<Result<_, _>>()?;
//! let total: u64 = as_completed(fs, None).map(|f| f.unwrap().result().unwrap()).sum();
//! assert_eq!(total, 56);
//!
//! // wait for a set, then inspect
//! let fs: Vec<_> = (0..4).map(|i| pool.submit(slow_add, (i, 1)).unwrap()).collect();
//! let done = wait(fs, None, ReturnWhen::AllCompleted);
//! assert_eq!(done.not_done.len(), 0);
//!
//! // map, in input order
//! let squares: Vec<u64> = pool.map(|x: u64| x * x, 0..5)?.map(Result::unwrap).collect();
//! assert_eq!(squares, [0, 1, 4, 9, 16]);
//!
//! pool.shutdown(true, false);
//! # Ok::<(), fanout::Error>(())
//! ```
//!
//! ## The pieces
//!
//! | Python `concurrent.futures`            | fanout                                        |
//! |----------------------------------------|-----------------------------------------------|
//! | `ThreadPoolExecutor(max_workers=n)`    | [`ThreadPool::new(n)`](ThreadPool::new)        |
//! | `executor.submit(fn, *args)`           | [`Executor::submit(fn, (args,))`](Executor::submit), [`ThreadPool::spawn`] for closures |
//! | `executor.submit(lambda x: x * k, 5)`  | [`submit(bind(k, \|k: &u64, x: u64\| x * k), (5,))`](bind), on every backend |
//! | `executor.map(fn, items, timeout=, chunksize=, buffersize=)` | [`Executor::map`], [`Executor::map_with`] |
//! | `executor.shutdown(wait, cancel_futures=)` | [`Executor::shutdown`]                    |
//! | `future.result(timeout)`               | [`Future::result`], [`Future::result_timeout`] |
//! | `future.exception(timeout)`            | [`Future::exception`]                         |
//! | `future.cancel()` / `cancelled()` / `running()` / `done()` | same names on [`Future`]  |
//! | `future.add_done_callback(fn)`         | [`Future::add_done_callback`]                 |
//! | `wait(fs, timeout, return_when)`       | [`wait`](fn@crate::wait) with [`ReturnWhen`]                  |
//! | `as_completed(fs, timeout)`            | [`as_completed`]                              |
//! | `asyncio.wrap_future(f)` / `await`     | `f.await`, [`wrap_future`]                    |
//!
//! ## Errors are values
//!
//! A panicking task never takes a worker down: its future resolves to
//! [`Error::Panicked`] with the message and location. A dropped or lost task
//! never leaves a caller waiting: its future resolves to an error.
//!
//! ## Logging
//!
//! fanout logs through the [`log`](https://docs.rs/log) facade (panicking
//! callbacks, broken pools); it never prints.

#![warn(missing_docs)]

mod any;
mod bound;
mod call;
mod callbacks;
#[cfg(target_os = "linux")]
mod cluster;
mod codec_guard;
mod controls;
mod error;
mod executor;
mod future;
mod graph;
mod panic;
#[cfg(target_os = "linux")]
mod process;
#[cfg(feature = "progress")]
mod progress;
mod ship;
mod sync;
mod task;
mod thread;
mod wait;

pub use any::AnyExecutor;
pub use bound::{bind, Bound};
pub use call::{Arg, Call, IntoArg, IntoArgs};
#[doc(hidden)]
pub use call::{CallOptions, Input};
/// The cluster's decoders of bytes from Redis, exposed for the fuzz targets only.
#[doc(hidden)]
#[cfg(target_os = "linux")]
pub use cluster::fuzz as __cluster_fuzz;
#[cfg(target_os = "linux")]
pub use cluster::{Cluster, ClusterBuilder};
pub use error::{Error, Result};
#[doc(hidden)]
pub use executor::{Chunk, ChunkSubmitter, Outcomes, Submitter};
pub use executor::{Executor, Map, MapOptions};
pub use future::{wrap_future, Future, State};
pub use graph::gather;
#[doc(hidden)]
pub use graph::{Inputs, Launcher, Ready};
/// The process pool's frame decoder, exposed for the fuzz target only.
#[doc(hidden)]
#[cfg(target_os = "linux")]
pub use process::wire as __wire;
#[cfg(target_os = "linux")]
pub use process::{ProcessPool, ProcessPoolBuilder, StartMethod};
#[cfg(feature = "progress")]
pub use progress::{progress, Progress, ProgressExt};
/// Frame pieces for hand-laid test frames.
#[doc(hidden)]
pub use ship::frame_parts as __frame_parts;
pub use task::{Payload, Task};
pub use thread::{ThreadPool, ThreadPoolBuilder};
pub use wait::{as_completed, wait, AsCompleted, Done, ReturnWhen};

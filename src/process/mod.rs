//! [`ProcessPool`]: calls shipped to persistent worker processes of this same binary.
//!
//! # How it fits together
//!
//! * **Queue.** Submitted calls wait in one queue in the pool, pending and
//!   cancellable. Calls are handed to a worker only when it has room: up to
//!   [`AHEAD_FRAMES`] frames (a frame is one call, or one `map` chunk) are
//!   with a worker at once, and the least-loaded worker is always chosen, so
//!   no worker idles while calls wait in the queue. A worker that keeps
//!   answering while calls wait earns more: up to [`AHEAD_CALLS`] calls and
//!   [`AHEAD_BYTES`] of arguments, so that a stream of short calls never
//!   lets its pipe run dry (see `dispatch::WorkerBook::has_room`).
//! * **Dispatch** happens on the submitting thread and once per read of a
//!   worker's results (for every DONE frame of that read); frames for one
//!   worker accumulate in its outbox and go out in one `writev`.
//! * **I/O.** One thread per worker slot polls that worker's result pipe (and
//!   its call pipe when the outbox is backed up). Writes are non-blocking, so
//!   the pool can never deadlock against a worker that is writing a large
//!   result while the pool is writing a large call.
//! * **Crashes.** When a worker's pipe closes, the thread reaps it; the frame
//!   it was running fails with [`Error::WorkerLost`](crate::Error::WorkerLost) naming the exit status or
//!   signal, frames it had not started go back to the front of the queue as
//!   pending, and a replacement starts in the same slot.
//!
//! # Files
//!
//! `pool` (the public pool and builder), `dispatch` (the queue, each
//! worker's book, handing frames out), `outbox` (one worker's call pipe and
//! its queued frames), `slot` (one worker slot's I/O thread), `chunk` (a map chunk as
//! one record and one delivery), `controls`
//! (priorities, run-time limits), `wire` (frames), `shm` (large frames in
//! shared memory), `cma` (a lone large byte vector read from the other
//! process's memory), `spare` (a worker's warm buffer for large byte vectors), `start` (starting a worker), `worker` (the worker's loop).

mod chunk;
mod cma;
mod controls;
mod dispatch;
mod outbox;
mod pool;
mod shm;
mod slot;
pub(crate) mod spare;
mod start;
pub mod wire;
mod worker;

pub use pool::{ProcessPool, ProcessPoolBuilder};

use std::sync::{Mutex, MutexGuard};
/// Frames (single calls or map chunks) a worker may always hold at once.
pub(crate) const AHEAD_FRAMES: usize = 3;
/// Calls a worker that has earned it may hold at once (in more frames than
/// [`AHEAD_FRAMES`]): it earns one per answer that arrives while calls wait
/// in the queue, and loses them all when the queue is found empty.
pub(crate) const AHEAD_CALLS: usize = 32;
/// Bytes of arguments a worker holding more than [`AHEAD_FRAMES`] frames may hold.
pub(crate) const AHEAD_BYTES: usize = 256 << 10;

/// How worker processes are started.
///
/// ```
/// use fanout::{ProcessPool, StartMethod};
/// let pool = ProcessPool::builder().workers(1).start_method(StartMethod::Fork).build().unwrap();
/// assert_eq!(pool.worker_pids().len(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartMethod {
    /// Re-execute this binary (`/proc/self/exe`); the child becomes a worker
    /// before `main` runs. Safe with any number of threads in the parent.
    #[default]
    Spawn,
    /// `fork()` the pool's process. Starts faster, but the child inherits a
    /// copy of a multi-threaded process: tasks must not need a lock another
    /// thread of the parent might have held at fork time (stdout, a logger,
    /// your own mutexes). Prefer `Spawn` unless start-up time matters.
    ///
    /// **Stale random state.** Every forked worker starts with a copy of the
    /// parent's memory, random number generators included. After the
    /// parent has drawn from `rand::random()`, 16 draws spread over 4
    /// forked workers give only a handful of distinct values (each worker
    /// repeats the same sequence; with `Spawn`: 16). The fix is to reseed in
    /// the pool's initializer, which runs in every worker before its first
    /// call — keep your own generator (or use `rand::rngs::OsRng` in tasks):
    ///
    /// ```
    /// use fanout::{Executor, ProcessPool, StartMethod};
    /// use rand::{rngs::StdRng, Rng, SeedableRng};
    /// use std::cell::RefCell;
    ///
    /// thread_local! {
    ///     static RNG: RefCell<StdRng> = RefCell::new(StdRng::from_entropy());
    /// }
    /// fn reseed() {
    ///     RNG.with(|r| *r.borrow_mut() = StdRng::from_entropy());
    /// }
    /// fn draw() -> u64 {
    ///     RNG.with(|r| r.borrow_mut().gen())
    /// }
    ///
    /// let _ = draw(); // the parent uses its generator before forking
    /// let pool = ProcessPool::builder()
    ///     .workers(4)
    ///     .start_method(StartMethod::Fork)
    ///     .initializer(reseed, ()) // runs in every worker
    ///     .build()?;
    /// let fs: Vec<_> = (0..16).map(|_| pool.submit(draw, ())).collect::<Result<_, _>>()?;
    /// let values: std::collections::HashSet<u64> =
    ///     fs.into_iter().map(|f| f.result()).collect::<Result<_, _>>()?;
    /// assert_eq!(values.len(), 16);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    Fork,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

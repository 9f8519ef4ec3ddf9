//! [`ThreadPool`]: a fixed set of worker threads pulling calls from one queue.

mod queue;
mod ranked;
mod ring;
mod stand_in;
mod timed;

use crate::executor::Submitter;
use crate::future::{Cell, CellHolder, CellRef, Kind};
use crate::{panic, Error, Executor, Future, Payload, Result, Task};
use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;

/// A submitted call and its completion cell, in one allocation: the
/// [`Future`] holds it as a cell, the queue as something to run.
struct TaskCell<F, R> {
    cell: Cell<R>,
    /// Taken exactly once, by whoever holds the task's one [`Job`]: a
    /// `Job` always runs or fails its task (dropping it unused fails it),
    /// and a task outlives its `Job`, so the call is gone before the task
    /// is dropped and needs no flag (an `Option` was a word more per call).
    call: std::cell::UnsafeCell<std::mem::ManuallyDrop<F>>,
}

// SAFETY: `call` is only accessed through `Runnable`, whose methods only the
// single `Job` handle invokes, once; the cell is `Sync` for `R: Send`.
unsafe impl<F: Send, R: Send> Sync for TaskCell<F, R> {}

impl<F, R> TaskCell<F, R> {
    fn new(cell: Cell<R>, call: F) -> Self {
        TaskCell {
            cell,
            call: std::cell::UnsafeCell::new(std::mem::ManuallyDrop::new(call)),
        }
    }
}

impl<F: Send, R: Send> CellHolder<R> for TaskCell<F, R> {
    fn cell(&self) -> &Cell<R> {
        &self.cell
    }
}

/// The queue's view of a task.
trait Runnable: Send + Sync {
    /// Runs the call unless its future was cancelled. Called at most once,
    /// and only if `fail` is not.
    fn run(&self);
    /// Completes the future without running the call. Called at most once,
    /// and only if `run` is not.
    fn fail(&self, error: Error);
}

impl<F, R> TaskCell<F, R> {
    /// The call, moved out.
    ///
    /// # Safety
    /// Called once per task: by `run` or by `fail`, which only the task's
    /// single [`Job`] calls, one of them once.
    unsafe fn take_call(&self) -> F {
        std::mem::ManuallyDrop::take(&mut *self.call.get())
    }
}

impl<F, R> Runnable for TaskCell<F, R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    fn run(&self) {
        // SAFETY: see `Runnable`: this is the task's one `run`, and no `fail`.
        let call = unsafe { self.take_call() };
        if self.cell.set_running() {
            self.cell.finish(panic::catch(call));
        } else {
            drop_contained(call);
        }
    }

    fn fail(&self, error: Error) {
        // SAFETY: see `Runnable`: this is the task's one `fail`, and no `run`.
        drop_contained(unsafe { self.take_call() });
        self.cell.finish(Err(error));
    }
}

/// Drops user data a worker (or `shutdown`) is left holding: a call that
/// will not run (cancelled, or failed by shutdown or a broken pool), or a
/// finished call's result whose future was dropped. Their destructors are
/// user code: a panic there is caught and logged, so it can neither kill the
/// worker thread (which left a pool without workers and its remaining
/// futures waiting forever) nor escape from `shutdown` before the remaining
/// queued calls are cancelled.
fn drop_contained<D>(value: D) {
    if let Err(Error::Panicked { message, .. }) = panic::catch(move || drop(value)) {
        log::error!("dropping a task's closure or result panicked: {message}");
    }
}

/// The one handle through which a queued task is run or failed. Dropping it
/// unused fails the future, so a lost task never leaves a caller waiting.
struct Job(Option<Arc<dyn Runnable>>);

impl Job {
    fn run(mut self) {
        if let Some(task) = self.0.take() {
            task.run();
            // If the future was dropped already, this is the last reference
            // and drops the call's result: user code, like any other drop.
            if Arc::strong_count(&task) == 1 {
                drop_contained(task);
            }
        }
    }

    fn fail(mut self, error: Error) {
        if let Some(task) = self.0.take() {
            task.fail(error);
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.fail(Error::Broken {
                reason: "the executor dropped the task without running it".into(),
            });
        }
    }
}

type BoxedJob = ranked::Queued;
type Initializer = Arc<dyn Fn() + Send + Sync + 'static>;

struct Shared {
    /// The calls waiting for a worker; closed by `shutdown`, after which
    /// workers finish what is queued and exit.
    queue: queue::Queue<BoxedJob>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Worker threads still in their loop, for `shutdown(wait = true)`.
    ///
    /// Joining `threads` alone is not enough: only the first waiting caller
    /// gets the handles, so a second concurrent `shutdown(true)` (or the
    /// pool's `Drop` after a task called `shutdown(true)` on its own pool)
    /// used to find none and return while work was still running.
    live: Mutex<LiveWorkers>,
    /// Signalled whenever `live` changes.
    live_changed: Condvar,
    /// Set once, when an initializer panicked.
    broken: OnceLock<String>,
    workers: usize,
    /// Calls at a priority other than 0 (and those queued behind them).
    ranked: ranked::Ranked,
    /// Worker threads blocked on a future right now (see `stand_in`).
    blocked: AtomicUsize,
    /// Stand-in threads started so far (for their names).
    stand_ins: AtomicUsize,
    prefix: String,
    initializer: Option<Initializer>,
    /// The handles' shared owner, for `ThreadPool::current`.
    owner: Mutex<Weak<Owner>>,
    /// The tag of this pool's futures (see `Executor::owner`).
    tag: u64,
}

#[derive(Default)]
struct LiveWorkers {
    /// Workers that have not yet left `worker_loop`.
    running: usize,
    /// How many of those are themselves blocked in `shutdown(wait = true)`
    /// (a task shutting down its own pool): they cannot exit before it
    /// returns, so waiters do not wait for them.
    waiting_in_shutdown: usize,
}

thread_local! {
    /// The address of the `Shared` of the pool this thread is a worker of (0 if none).
    static WORKER_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The pool this thread is a worker of, for `ThreadPool::current`.
    static POOL: std::cell::RefCell<Option<Weak<Shared>>> = const { std::cell::RefCell::new(None) };
}

/// Counts a worker out of `Shared::live` when its thread leaves `worker_loop`.
struct LeaveOnExit<'a>(&'a Shared);

impl Drop for LeaveOnExit<'_> {
    fn drop(&mut self) {
        self.0
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .running -= 1;
        self.0.live_changed.notify_all();
    }
}

impl Shared {
    fn broken_error(&self) -> Option<Error> {
        self.broken.get().map(|reason| Error::Broken {
            reason: reason.clone(),
        })
    }

    fn push<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<Future<R>> {
        self.push_with(f, Kind::PLAIN, 0, None)
    }

    /// Queues a call at `priority`, with an optional run-time `limit`; its
    /// future is of `kind` (a payload's lets dependents take the value, see
    /// `graph`, and `result()` inside the future's own done-callback copy it).
    fn push_with<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
        kind: &'static Kind<R>,
        priority: i32,
        limit: Option<std::time::Duration>,
    ) -> Result<Future<R>> {
        if let Some(e) = self.broken_error() {
            return Err(e);
        }
        if self.queue.is_closed() {
            return Err(Error::Shutdown);
        }
        let (future, job) = match limit {
            None => {
                let task = Arc::new(TaskCell::new(Cell::build(self.tag, kind), f));
                (Future::from_cell(CellRef(task.clone())), Job(Some(task)))
            }
            Some(limit) => {
                let task = Arc::new_cyclic(|me| timed::Timed {
                    task: TaskCell::new(Cell::build(self.tag, kind), f),
                    limit,
                    me: me.clone(),
                });
                (Future::from_cell(CellRef(task.clone())), Job(Some(task)))
            }
        };
        // The message is made under the queue's lock, so a call is either
        // queued before `shutdown` closes it or refused whole.
        if let Err(job) = self
            .queue
            .push(job, |job, seq| self.ranked.queue(priority, job, seq))
        {
            job.fail(Error::Shutdown);
            return Err(Error::Shutdown);
        }
        Ok(future)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.queue.close();
        if cancel_futures {
            while let Some(message) = self.queue.try_pop() {
                if let Some(job) = self.ranked.take(message) {
                    job.fail(Error::Cancelled);
                }
            }
        }
        if wait {
            self.wait_for_workers();
        }
    }

    /// Blocks until every worker has finished its loop, except workers that
    /// are themselves waiting here (a task that shuts down its own pool
    /// cannot wait for itself, nor for another task doing the same).
    fn wait_for_workers(&self) {
        let on_worker = WORKER_OF.with(|w| w.get()) == self as *const Shared as usize;
        if on_worker {
            // Counted before joining, so that two tasks shutting down their
            // pool at once do not wait for each other.
            self.live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .waiting_in_shutdown += 1;
            self.live_changed.notify_all();
        }
        let me = std::thread::current().id();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in handles {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
        // Another caller may hold the handles: wait on the count as well.
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        while live.running > live.waiting_in_shutdown {
            live = self
                .live_changed
                .wait(live)
                .unwrap_or_else(|p| p.into_inner());
        }
        if on_worker {
            live.waiting_in_shutdown -= 1;
        }
    }
}

fn worker_loop(shared: &Shared, initializer: Option<Initializer>) {
    if let Some(init) = initializer {
        run_initializer(shared, &init);
    }
    while let Some(message) = shared.queue.pop() {
        run_one(shared, message);
    }
}

fn run_initializer(shared: &Shared, init: &Initializer) {
    if let Err(Error::Panicked { message, .. }) = panic::catch(|| init()) {
        let reason = format!("the pool's initializer panicked: {message}");
        log::error!("{reason}");
        let _ = shared.broken.set(reason);
    }
}

/// Runs (or, on a broken pool, fails) the call one queue message stands for.
fn run_one(shared: &Shared, message: BoxedJob) {
    let Some(job) = shared.ranked.take(message) else {
        return;
    };
    match shared.broken_error() {
        Some(e) => job.fail(e),
        None => job.run(),
    }
}

/// A pool of worker threads, like Python's `ThreadPoolExecutor`.
///
/// Runs `workers` threads at a time (while a task blocks on a future, a
/// stand-in thread takes its place; see [`ThreadPool::current`]). Runs any
/// `FnOnce` through [`ThreadPool::spawn`], and shippable [`Task`]s through
/// [`Executor`]. A cheap `Clone` handle: every clone drives the same pool,
/// `shutdown` through any of them shuts it down, and dropping the last one
/// is `shutdown(true, false)`.
///
/// Per-call controls ([`Executor::call`]): `priority` orders the queue
/// (higher first, FIFO within a level); `timeout` resolves the future to
/// `Err(Timeout)` when the call runs past its limit, but a thread cannot be
/// stopped from outside, so the call's thread runs on to the end (its late
/// result is dropped) and holds its worker until then; `resources` is
/// ignored.
///
/// ```
/// use fanout::{Executor, ThreadPool};
///
/// fn slow_square(x: u64) -> u64 { x * x }
///
/// let pool = ThreadPool::new(4).unwrap();
/// let f = pool.submit(slow_square, (12,)).unwrap();
/// assert_eq!(f.result(), Ok(144));
/// ```
#[derive(Clone)]
pub struct ThreadPool {
    shared: Arc<Shared>,
    /// Shared by every handle; the last one to go shuts the pool down.
    _owner: Arc<Owner>,
}

/// Shuts the pool down when the last [`ThreadPool`] handle is dropped.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.shutdown(true, false);
    }
}

impl ThreadPool {
    /// A pool of `workers` threads; 0 is `InvalidArgument`.
    ///
    /// ```
    /// assert!(fanout::ThreadPool::new(0).is_err());
    /// assert!(fanout::ThreadPool::new(2).is_ok());
    /// ```
    pub fn new(workers: usize) -> Result<ThreadPool> {
        ThreadPool::builder().workers(workers).build()
    }

    /// A builder for thread count, thread names and a per-thread initializer.
    ///
    /// ```
    /// let pool = fanout::ThreadPool::builder()
    ///     .workers(2)
    ///     .thread_name("crunch")
    ///     .initializer(|| log::debug!("worker up"))
    ///     .build()
    ///     .unwrap();
    /// let name = pool.spawn(|| std::thread::current().name().unwrap().to_string()).unwrap();
    /// assert!(name.result().unwrap().starts_with("crunch"));
    /// ```
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    /// Runs any `FnOnce` closure (capturing or not, no serde bounds) on the pool.
    ///
    /// ```
    /// let pool = fanout::ThreadPool::new(2).unwrap();
    /// let data = vec![1, 2, 3];
    /// let f = pool.spawn(move || data.iter().sum::<i32>()).unwrap();
    /// assert_eq!(f.result(), Ok(6));
    /// ```
    pub fn spawn<F, R>(&self, f: F) -> Result<Future<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.shared.push(f)
    }

    /// How many worker threads the pool runs.
    ///
    /// ```
    /// assert_eq!(fanout::ThreadPool::new(3).unwrap().workers(), 3);
    /// ```
    pub fn workers(&self) -> usize {
        self.shared.workers
    }

    /// Inside one of this pool's tasks: a handle to the pool running it
    /// (`None` on any other thread, or once every outside handle is gone
    /// and the pool is shutting down).
    ///
    /// A task may submit more calls through it and block on their futures
    /// (`result`, `wait`, `as_completed`, `gather`): while a worker blocks,
    /// the pool runs a stand-in thread in its place, so a tree of tasks
    /// waiting on their children never deadlocks the pool, however many
    /// block at once. The handle is a clone like any other: the pool shuts
    /// down when the last handle goes, wherever that is.
    ///
    /// ```
    /// use fanout::{gather, Executor, ThreadPool};
    /// fn leaf(x: u64) -> u64 { x * 10 }
    /// fn parent(x: u64) -> u64 {
    ///     let pool = ThreadPool::current().expect("runs on a pool");
    ///     let kids: Vec<_> = (0..3).map(|i| pool.submit(leaf, (x + i,)).unwrap()).collect();
    ///     gather(kids).unwrap().into_iter().sum()
    /// }
    /// let pool = ThreadPool::new(1)?; // one worker, yet the parent's wait does not deadlock
    /// assert_eq!(pool.submit(parent, (1,))?.result()?, 10 + 20 + 30);
    /// assert!(ThreadPool::current().is_none());
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn current() -> Option<ThreadPool> {
        let shared = POOL.with(|p| p.borrow().as_ref().and_then(Weak::upgrade))?;
        let owner = shared
            .owner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()?;
        Some(ThreadPool {
            shared,
            _owner: owner,
        })
    }
}

impl Executor for ThreadPool {
    fn submit<F, Args>(&self, f: F, args: Args) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        self.shared
            .push_with(move || f.call(args), Kind::PAYLOAD, 0, None)
    }

    fn submit_with<F, Args>(
        &self,
        f: F,
        args: Args,
        options: &crate::CallOptions,
    ) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        self.shared.push_with(
            move || f.call(args),
            Kind::PAYLOAD,
            options.priority,
            options.timeout,
        )
    }

    fn submitter_with<F, Args>(
        &self,
        f: F,
        options: &crate::CallOptions,
    ) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let shared = self.shared.clone();
        let (priority, limit) = (options.priority, options.timeout);
        Box::new(move |batch: Vec<Args>| {
            batch
                .into_iter()
                .map(|args| {
                    let f = f.clone();
                    shared.push_with(move || f.call(args), Kind::PAYLOAD, priority, limit)
                })
                .collect()
        })
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.shutdown(wait, cancel_futures);
    }

    fn submitter<F, Args>(&self, f: F) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let shared = self.shared.clone();
        Box::new(move |batch: Vec<Args>| {
            batch
                .into_iter()
                .map(|args| {
                    let f = f.clone();
                    shared.push_with(move || f.call(args), Kind::PAYLOAD, 0, None)
                })
                .collect()
        })
    }

    fn chunk_submitter<F, Args>(&self, f: F) -> crate::ChunkSubmitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        // A chunk is one job with one completion; each item still has its
        // own outcome (a panic fails only its item).
        let mut each = self.submitter(f.clone());
        let shared = self.shared.clone();
        Box::new(move |batch: Vec<Args>| {
            if batch.len() < 2 {
                return each(batch).map(crate::Chunk::each);
            }
            let len = batch.len();
            let f = f.clone();
            let job = move || {
                // One catch for the chunk unless an item panics (as the
                // process pool's chunks do).
                let mut out: crate::executor::Outcomes<_> = Vec::with_capacity(len);
                let mut items = batch.into_iter();
                panic::catch_each(len, |_, panicked| match panicked {
                    Some(e) => out.push(Err(Box::new(e))),
                    None => {
                        if let Some(args) = items.next() {
                            out.push(Ok(f.clone().call(args)));
                        }
                    }
                });
                out
            };
            let future = shared.push_with(job, Kind::PLAIN, 0, None)?;
            Ok(crate::Chunk::whole(future, len))
        })
    }

    fn owner(&self) -> u64 {
        self.shared.tag
    }

    fn launcher<F, Args>(&self, f: F) -> crate::graph::Launcher<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let shared = Arc::downgrade(&self.shared);
        crate::graph::Launcher::new(move |ready, promise, options| {
            let Some(shared) = shared.upgrade() else {
                return promise.set_error(Error::Shutdown);
            };
            let args: Args = match ready.decode() {
                Ok(args) => args,
                Err(e) => return promise.set_error(e),
            };
            let adopted = Arc::new(Adopted(Mutex::new(Some(promise))));
            let job = adopted.clone();
            let f = f.clone();
            let limit = options.timeout;
            // The priority orders it among pending calls; the run-time limit
            // is armed when the call starts: the timer takes the promise and
            // resolves it to `Err(Timeout)`, the thread runs on and its late
            // outcome is dropped (as for a plain call, see `timed`).
            let pushed = shared.push_with(
                move || {
                    if !job.with(|promise| promise.set_running()) {
                        return;
                    }
                    if let Some(limit) = limit {
                        let timer = Arc::downgrade(&job);
                        crate::controls::timer::after(limit, move || {
                            if let Some(promise) = timer.upgrade().and_then(|a| a.take()) {
                                promise.set_error(timed::overran(limit));
                            }
                        });
                    }
                    let outcome = panic::catch(move || f.call(args));
                    match job.take() {
                        Some(promise) => promise.set_outcome(outcome),
                        None => drop_contained(outcome),
                    }
                },
                Kind::PLAIN,
                options.priority,
                None,
            );
            if let Err(e) = pushed {
                if let Some(promise) = adopted.take() {
                    promise.set_error(e);
                }
            }
        })
    }
}

/// The promise of a call launched from the waiting room: the queued job
/// completes it; a job dropped unrun (shutdown with `cancel_futures`)
/// cancels it.
struct Adopted<R: Send + 'static>(Mutex<Option<crate::future::Promise<R>>>);

impl<R: Send + 'static> Adopted<R> {
    fn take(&self) -> Option<crate::future::Promise<R>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// `f` on the promise if it is still here (false if it is gone).
    fn with(&self, f: impl FnOnce(&crate::future::Promise<R>) -> bool) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(f)
    }
}

impl<R: Send + 'static> Drop for Adopted<R> {
    fn drop(&mut self) {
        if let Some(p) = self.take() {
            p.set_error(Error::Cancelled);
        }
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("workers", &self.shared.workers)
            .field("broken", &self.shared.broken.get())
            .finish()
    }
}

/// Configures a [`ThreadPool`]; see [`ThreadPool::builder`].
///
/// ```
/// let pool = fanout::ThreadPool::builder().workers(1).build().unwrap();
/// assert_eq!(pool.workers(), 1);
/// ```
#[derive(Default)]
pub struct ThreadPoolBuilder {
    workers: Option<usize>,
    thread_name: Option<String>,
    initializer: Option<Initializer>,
}

impl ThreadPoolBuilder {
    /// Number of worker threads (default: the number of CPUs; 0 is rejected by `build`).
    ///
    /// ```
    /// assert!(fanout::ThreadPool::builder().workers(0).build().is_err());
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Prefix of the worker threads' names (default `"fanout-worker"`).
    ///
    /// ```
    /// let pool = fanout::ThreadPool::builder().workers(1).thread_name("io").build().unwrap();
    /// let n = pool.spawn(|| std::thread::current().name().map(str::to_owned)).unwrap();
    /// assert_eq!(n.result().unwrap().as_deref(), Some("io-0"));
    /// ```
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = Some(prefix.into());
        self
    }

    /// Runs on every worker thread before it takes its first call.
    ///
    /// If it panics the pool is broken: queued futures and every later
    /// submit get [`Error::Broken`].
    ///
    /// ```
    /// use fanout::Error;
    /// let pool = fanout::ThreadPool::builder()
    ///     .workers(1)
    ///     .initializer(|| panic!("no database"))
    ///     .build()
    ///     .unwrap();
    /// let f = pool.spawn(|| 1);
    /// let outcome = f.and_then(|f| f.result());
    /// assert!(matches!(outcome, Err(Error::Broken { .. })));
    /// ```
    pub fn initializer(mut self, init: impl Fn() + Send + Sync + 'static) -> Self {
        self.initializer = Some(Arc::new(init));
        self
    }

    /// Starts the worker threads.
    ///
    /// ```
    /// let pool = fanout::ThreadPool::builder().workers(2).build().unwrap();
    /// assert_eq!(pool.spawn(|| 1).unwrap().result(), Ok(1));
    /// ```
    pub fn build(self) -> Result<ThreadPool> {
        let workers = self.workers.unwrap_or_else(num_cpus::get);
        if workers == 0 {
            return Err(Error::invalid(
                "a thread pool needs at least 1 worker (got 0)",
            ));
        }
        let prefix = self.thread_name.unwrap_or_else(|| "fanout-worker".into());
        let shared = Arc::new(Shared {
            queue: queue::Queue::new(),
            threads: Mutex::new(Vec::with_capacity(workers)),
            live: Mutex::new(LiveWorkers::default()),
            live_changed: Condvar::new(),
            broken: OnceLock::new(),
            workers,
            ranked: ranked::Ranked::default(),
            blocked: AtomicUsize::new(0),
            stand_ins: AtomicUsize::new(0),
            prefix: prefix.clone(),
            initializer: self.initializer.clone(),
            owner: Mutex::new(Weak::new()),
            tag: crate::graph::new_owner(),
        });
        let owner = Arc::new(Owner {
            shared: shared.clone(),
        });
        *shared.owner.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(&owner);
        let pool = ThreadPool {
            shared: shared.clone(),
            _owner: owner,
        };
        for i in 0..workers {
            let (shared_w, init) = (shared.clone(), self.initializer.clone());
            shared
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .running += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("{prefix}-{i}"))
                .spawn(move || {
                    stand_in::adopt(&shared_w);
                    let _leave = LeaveOnExit(&shared_w);
                    worker_loop(&shared_w, init)
                });
            if spawned.is_err() {
                shared
                    .live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .running -= 1;
            }
            match spawned {
                Ok(handle) => shared
                    .threads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(handle),
                Err(e) => {
                    // `pool` is dropped here, which shuts down the threads started so far.
                    return Err(Error::Broken {
                        reason: format!("could not start worker thread {i}: {e}"),
                    });
                }
            }
        }
        Ok(pool)
    }
}
#[cfg(test)]
mod tests {
    /// A task's cell is fresh memory for every submitted call (BENCHMARKS.md,
    /// "Thread pool"): keep it from growing back unnoticed.
    #[test]
    fn a_task_cell_stays_small() {
        let cell = std::mem::size_of::<crate::future::Cell<u64>>();
        let task = std::mem::size_of::<super::TaskCell<[u64; 2], u64>>();
        assert!(cell <= 88, "Cell<u64> is {cell} bytes");
        // With `Arc`'s two counts, 120 bytes: glibc's fast bins (chunks of
        // at most 128 bytes), a fast path measured in BENCHMARKS.md.
        assert!(task <= 104, "TaskCell of a 16-byte call is {task} bytes");
    }
}

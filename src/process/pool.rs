//! [`ProcessPool`] and [`ProcessPoolBuilder`]: the public pool on top of dispatch.

use super::dispatch::{Batch, Config, Item, Shared, State};
use super::slot::slot_thread;
use super::wire::MAX_FRAME;
use super::{lock, start, worker, StartMethod};
use crate::codec_guard;
use crate::executor::Submitter;
use crate::future::remote_pair;
use crate::ship::{self, Encoded};
use crate::{Error, Executor, Future, Payload, Result, Task};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// A pool of worker processes, like Python's `ProcessPoolExecutor`.
///
/// Workers are this same binary: started by re-executing it
/// ([`StartMethod::Spawn`], the default) or by `fork` ([`StartMethod::Fork`]).
/// No setup call is needed anywhere — a binary, an example or a `tests/*.rs`
/// file works as it is. Calls must be fn items or non-capturing closures
/// with serde arguments and results.
///
/// A task that panics gives [`Error::Panicked`] (the worker survives); a
/// worker that dies (abort, segfault, `exit`, SIGKILL) fails only the call it
/// was running with [`Error::WorkerLost`] and is replaced.
///
/// ```
/// use fanout::{Executor, ProcessPool};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = ProcessPool::new(2).unwrap();
/// assert_eq!(pool.submit(square, (7,)).unwrap().result(), Ok(49));
/// let squares: Vec<u64> = pool.map(square, 0..5).unwrap().map(Result::unwrap).collect();
/// assert_eq!(squares, [0, 1, 4, 9, 16]);
/// ```
///
/// A closure that captures variables cannot be shipped to another process;
/// it is rejected when the program is built (pass the values as arguments):
///
/// ```compile_fail
/// use fanout::{Executor, ProcessPool};
/// let pool = ProcessPool::new(1).unwrap();
/// let offset = 10u64;
/// let f = pool.submit(move |x: u64| x + offset, (1,)); // error: captures `offset`
/// ```
///
/// # How workers start, and the limits
///
/// The crate puts a constructor in `.init_array`; it runs before `main` in
/// every process linking fanout and returns at once unless the process was
/// started as a worker (an environment variable names its two pipes). So a
/// re-executed binary, example or test harness serves calls without ever
/// reaching `main`, and no setup call is needed. Limits: Linux only; the
/// worker is the *same build* (every frame carries the build id, and a
/// worker refuses calls from another); constructors of other libraries still
/// run in workers; with [`StartMethod::Fork`] the child is a copy of a
/// multi-threaded process (see there). Large `Vec<u8>` arguments and results
/// travel without serde's per-byte overhead, and a call or result frame of
/// 1 MiB or more goes through shared memory (`memfd`s of the pool that
/// workers open through `/proc/<pool pid>/fd`: a pool that is not dumpable
/// keeps large frames in the pipes). A call whose only large part is one
/// `Vec<u8>` skips even that: the other process reads the vector straight
/// from the sender's memory (`process_vm_readv`), where ptrace rules allow
/// it (set `FANOUT_CROSS_MEMORY=0` to turn this off).
///
/// # Per-call controls
///
/// [`Executor::call`]: `priority` orders the pool's queue (higher first,
/// FIFO within a level; frames a worker already holds run first);
/// `timeout` kills the worker running an overdue call (SIGKILL), resolves
/// its future to `Err(Timeout)` naming the limit and starts a replacement;
/// `resources` is ignored.
///
/// # Tasks that submit tasks
///
/// There is no `ProcessPool::current()`: a worker process has no pool to
/// hand out, and a pool started inside a task would be a second pool of
/// processes per task. A task that needs more parallel work should return
/// what it found and let the caller submit the follow-up calls (or pass the
/// first call's future to the next with [`Future::arg`](crate::Future::arg));
/// a task that needs a pool of its own may build one (`ProcessPool::new`),
/// or a [`ThreadPool`](crate::ThreadPool) for in-process fan-out.
pub struct ProcessPool {
    shared: Arc<Shared>,
}

impl ProcessPool {
    /// A pool of `workers` processes started with [`StartMethod::Spawn`]; 0 is `InvalidArgument`.
    ///
    /// ```
    /// assert!(fanout::ProcessPool::new(0).is_err());
    /// ```
    pub fn new(workers: usize) -> Result<ProcessPool> {
        ProcessPool::builder().workers(workers).build()
    }

    /// A builder for worker count, start method, recycling and an initializer.
    ///
    /// ```
    /// let pool = fanout::ProcessPool::builder().workers(1).max_tasks_per_child(100).build().unwrap();
    /// assert_eq!(pool.worker_pids().len(), 1);
    /// ```
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::default()
    }

    /// The pids of the live worker processes.
    ///
    /// ```
    /// let pool = fanout::ProcessPool::new(2).unwrap();
    /// let pids = pool.worker_pids();
    /// assert_eq!(pids.len(), 2);
    /// assert!(!pids.contains(&std::process::id()));
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        lock(&self.shared.state)
            .slots
            .iter()
            .flatten()
            .map(|b| b.pid)
            .collect()
    }

    fn items<Args: Payload, R: Payload>(
        owner: u64,
        batch: Vec<Args>,
    ) -> (Vec<Item>, Vec<Future<R>>) {
        let mut items = Vec::with_capacity(batch.len());
        let mut futures = Vec::with_capacity(batch.len());
        for args in batch {
            let (future, promise) = remote_pair::<R>(owner);
            match encode_args(args) {
                Ok(e) => items.push(Item {
                    args: Arc::new(e),
                    records: 0,
                    delivery: Box::new(promise),
                }),
                Err(e) => promise.set_error(e),
            }
            futures.push(future);
        }
        (items, futures)
    }

    /// One call without a submitter (no boxed closure, no `Vec`s around a
    /// single item): what `submit` and `submit_with` do.
    fn submit_one<F, Args>(
        &self,
        f: &F,
        args: Args,
        priority: i32,
        limit: Option<std::time::Duration>,
    ) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let trampoline = callee_within_frame::<F, Args>(f)?;
        let (future, promise) = remote_pair::<F::Output>(self.shared.config.owner);
        let args = match encode_args(args) {
            Ok(args) => args,
            Err(e) => {
                promise.set_error(e);
                return Ok(future);
            }
        };
        let mut batch = Batch {
            trampoline,
            items: vec![Item {
                args: Arc::new(args),
                records: 0,
                delivery: Box::new(promise),
            }],
            large: None,
            priority,
            limit,
        };
        // As the submitters do: only calls without options go through shared memory.
        if priority == 0 && limit.is_none() {
            self.shared.offload(&mut batch);
        }
        // On error the call was never queued; the error goes to the caller.
        self.shared.enqueue_one(batch)?;
        Ok(future)
    }

    /// Queues `items` (calls or map chunks) as frame-sized batches, large
    /// frames in shared memory. On error nothing was queued; the error goes
    /// to the caller.
    fn send(shared: &Shared, trampoline: ship::Callee, items: Vec<Item>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut batches = ProcessPool::batches(trampoline, items);
        for b in &mut batches {
            shared.offload(b);
        }
        shared.enqueue(batches)
    }

    /// Splits items into batches that fit in one frame (each frame carries
    /// the captures once, at most a quarter of a frame: see `submitter`).
    fn batches(trampoline: ship::Callee, items: Vec<Item>) -> Vec<Batch> {
        Self::batches_with(trampoline, items, 0, None)
    }

    /// [`ProcessPool::batches`] at a priority, with a run-time limit per batch.
    fn batches_with(
        trampoline: ship::Callee,
        items: Vec<Item>,
        priority: i32,
        limit: Option<std::time::Duration>,
    ) -> Vec<Batch> {
        let mut batches = Vec::new();
        let mut current = Vec::new();
        let mut size = 0;
        for it in items {
            if !current.is_empty() && size + it.wire_len() > MAX_FRAME / 2 {
                batches.push(Batch {
                    trampoline: trampoline.clone(),
                    items: std::mem::take(&mut current),
                    large: None,
                    priority,
                    limit,
                });
                size = 0;
            }
            size += it.wire_len();
            current.push(it);
        }
        if !current.is_empty() {
            batches.push(Batch {
                trampoline,
                items: current,
                large: None,
                priority,
                limit,
            });
        }
        batches
    }
}

impl Executor for ProcessPool {
    fn submit<F, Args>(&self, f: F, args: Args) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        self.submit_one(&f, args, 0, None)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let (cancelled, touched) = {
            let mut st = lock(&self.shared.state);
            st.shutdown = true;
            let cancelled: Vec<Item> = if cancel_futures {
                st.queue.drain(..).flat_map(|b| b.items).collect()
            } else {
                Vec::new()
            };
            (cancelled, self.shared.dispatch(&mut st))
        };
        for it in cancelled {
            it.delivery.deliver(Err(Error::Cancelled));
        }
        for link in touched {
            link.kick();
        }
        if !wait {
            return;
        }
        let me = std::thread::current().id();
        let mut st = lock(&self.shared.state);
        if st.io_thread_ids.contains(&me) {
            log::warn!("shutdown(wait = true) called from the pool's own I/O thread (a done-callback); not waiting");
            return;
        }
        while st.live_threads > 0 {
            st = self
                .shared
                .thread_exited
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
        let threads = std::mem::take(&mut st.threads);
        drop(st);
        for t in threads {
            let _ = t.join();
        }
    }

    fn submitter<F, Args>(&self, f: F) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        // The captures are encoded once here and shared by every batch.
        let callee = callee_within_frame::<F, Args>(&f);
        let shared = self.shared.clone();
        Box::new(move |batch: Vec<Args>| {
            let trampoline = callee.clone()?;
            let (items, futures) =
                ProcessPool::items::<Args, F::Output>(shared.config.owner, batch);
            ProcessPool::send(&shared, trampoline, items)?;
            Ok(futures)
        })
    }

    fn chunk_submitter<F, Args>(&self, f: F) -> crate::ChunkSubmitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        // A chunk travels as one record set with one delivery (see `chunk`);
        // a chunk of one is an ordinary call.
        let callee = callee_within_frame::<F, Args>(&f);
        let mut each = self.submitter(f);
        let shared = self.shared.clone();
        Box::new(move |batch: Vec<Args>| {
            if batch.len() < 2 {
                return each(batch).map(crate::Chunk::each);
            }
            let trampoline = callee.clone()?;
            let (items, chunk) =
                super::chunk::chunk_items::<Args, F::Output>(shared.config.owner, batch);
            ProcessPool::send(&shared, trampoline, items)?;
            Ok(chunk)
        })
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
        self.submit_one(&f, args, options.priority, options.timeout)
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
        if options.priority == 0 && options.timeout.is_none() {
            return self.submitter(f);
        }
        self.options_submitter::<F, Args>(f, options)
    }

    fn owner(&self) -> u64 {
        self.shared.config.owner
    }

    fn launcher<F, Args>(&self, f: F) -> crate::graph::Launcher<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        // The captures (of a `bind`) are encoded once, for every launch.
        let callee = f.__callee();
        let shared = Arc::downgrade(&self.shared);
        // The inputs' result bytes are spliced into the argument frame as
        // they are: a postcard tuple is its elements' encodings end to end.
        crate::graph::Launcher::new(move |ready, promise, options| {
            let Some(shared) = shared.upgrade() else {
                return promise.set_error(Error::Shutdown);
            };
            let trampoline = match callee.clone() {
                Ok(t) => t,
                Err(e) => return promise.set_error(e),
            };
            if let Err(e) = args_within_frame::<Args>(ready.len()) {
                return promise.set_error(e);
            }
            let item = Item {
                args: Arc::new(Encoded {
                    head: match ready.concat() {
                        Ok(head) => head,
                        Err(e) => return promise.set_error(e),
                    },
                    body: Vec::new(),
                }),
                records: 0,
                delivery: Box::new(promise),
            };
            if let Err((e, batches)) = shared.try_enqueue(ProcessPool::batches_with(
                trampoline,
                vec![item],
                options.priority,
                options.timeout,
            )) {
                for it in batches.into_iter().flat_map(|b| b.items) {
                    it.delivery.deliver(Err(e.clone()));
                }
            }
        })
    }
}

/// A call's encoded arguments, refused with `Codec` over half a frame.
fn encode_args<Args: Payload>(args: Args) -> Result<Encoded> {
    let e = codec_guard::encode_owned(args)?;
    args_within_frame::<Args>(e.len())?;
    Ok(e)
}

/// One call's encoded arguments of `len` bytes may take at most half a
/// frame (the captures another quarter); over that, `Codec` naming the size.
pub(super) fn args_within_frame<Args>(len: usize) -> Result<()> {
    if len > MAX_FRAME / 2 {
        return Err(Error::Codec {
            type_name: std::any::type_name::<Args>().into(),
            message: format!(
                "encoded arguments take {len} bytes, over the {} byte limit",
                MAX_FRAME / 2
            ),
        });
    }
    Ok(())
}

/// `f`'s callee (trampoline and encoded captures), refused with `Codec`
/// when the captures would take more than a quarter of a frame.
fn callee_within_frame<F, Args>(f: &F) -> Result<ship::Callee>
where
    F: Task<Args>,
    Args: Payload,
    F::Output: Payload,
{
    let c = f.__callee()?;
    if c.captures().len() > MAX_FRAME / 4 {
        return Err(Error::Codec {
            type_name: std::any::type_name::<F>().into(),
            message: format!(
                "encoded captures take {} bytes, over the {} byte limit",
                c.captures().len(),
                MAX_FRAME / 4
            ),
        });
    }
    Ok(c)
}

impl ProcessPool {
    /// The submission hook for calls with options: priority and a run-time
    /// limit (resources are ignored by the process pool).
    fn options_submitter<F, Args>(
        &self,
        f: F,
        options: &crate::CallOptions,
    ) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        // As in `submitter`: the captures are encoded once, within a quarter frame.
        let callee = callee_within_frame::<F, Args>(&f);
        let shared = self.shared.clone();
        let (priority, limit) = (options.priority, options.timeout);
        Box::new(move |batch: Vec<Args>| {
            let trampoline = callee.clone()?;
            let (items, futures) =
                ProcessPool::items::<Args, F::Output>(shared.config.owner, batch);
            if !items.is_empty() {
                // One batch per call, so each call's limit is its own.
                let batches = items
                    .into_iter()
                    .flat_map(|it| {
                        ProcessPool::batches_with(trampoline.clone(), vec![it], priority, limit)
                    })
                    .collect();
                shared.enqueue(batches)?;
            }
            Ok(futures)
        })
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.shared.state);
        f.debug_struct("ProcessPool")
            .field("workers", &self.shared.config.workers)
            .field("start", &self.shared.config.start)
            .field(
                "pids",
                &st.slots.iter().flatten().map(|b| b.pid).collect::<Vec<_>>(),
            )
            .field("queued", &st.queue.len())
            .field("broken", &st.broken)
            .finish()
    }
}

/// Configures a [`ProcessPool`]; see [`ProcessPool::builder`].
///
/// ```
/// use fanout::{ProcessPool, StartMethod};
/// fn warm_up(level: u32) { assert!(level < 10); }
/// let pool = ProcessPool::builder()
///     .workers(2)
///     .start_method(StartMethod::Spawn)
///     .max_tasks_per_child(1000)
///     .initializer(warm_up, (3,))
///     .build()
///     .unwrap();
/// # drop(pool);
/// ```
#[derive(Default)]
pub struct ProcessPoolBuilder {
    workers: Option<usize>,
    start: StartMethod,
    max_tasks_per_child: Option<usize>,
    init: Option<Result<(ship::Callee, Vec<u8>)>>,
}

impl ProcessPoolBuilder {
    /// Number of worker processes (default: the number of CPUs).
    ///
    /// ```
    /// assert!(fanout::ProcessPool::builder().workers(0).build().is_err());
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// How workers start (default [`StartMethod::Spawn`]).
    ///
    /// ```
    /// let b = fanout::ProcessPool::builder().start_method(fanout::StartMethod::Fork);
    /// # drop(b);
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start = method;
        self
    }

    /// A worker exits after running `n` calls (counting whole map chunks) and
    /// is replaced by a fresh one; 0 is rejected by `build`.
    ///
    /// ```
    /// use fanout::{Executor, ProcessPool};
    /// fn pid() -> u32 { std::process::id() }
    /// let pool = ProcessPool::builder().workers(1).max_tasks_per_child(1).build().unwrap();
    /// let a = pool.submit(pid, ()).unwrap().result().unwrap();
    /// let b = pool.submit(pid, ()).unwrap().result().unwrap();
    /// assert_ne!(a, b);
    /// ```
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Runs `f(args...)` in every worker before its first call. If it panics
    /// the pool is broken: pending futures and later submits get [`Error::Broken`].
    ///
    /// ```
    /// use fanout::{Error, Executor, ProcessPool};
    /// fn connect(url: String) { panic!("cannot reach {url}") }
    /// fn one() -> u32 { 1 }
    /// let pool = ProcessPool::builder()
    ///     .workers(1)
    ///     .initializer(connect, ("db://nowhere".to_string(),))
    ///     .build()
    ///     .unwrap();
    /// let outcome = pool.submit(one, ()).and_then(|f| f.result());
    /// assert!(matches!(outcome, Err(Error::Broken { .. })));
    /// ```
    pub fn initializer<F, Args>(mut self, f: F, args: Args) -> Self
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let mut bytes = Vec::new();
        self.init =
            Some(f.__callee().and_then(|callee| {
                codec_guard::encode(&args, &mut bytes).map(|()| (callee, bytes))
            }));
        self
    }

    /// Starts the workers.
    ///
    /// ```
    /// let pool = fanout::ProcessPool::builder().workers(1).build().unwrap();
    /// assert_eq!(pool.worker_pids().len(), 1);
    /// ```
    pub fn build(self) -> Result<ProcessPool> {
        if !cfg!(target_os = "linux") || !worker::linked() {
            return Err(Error::Broken {
                reason: "process pools need Linux".into(),
            });
        }
        let workers = self.workers.unwrap_or_else(num_cpus::get);
        if workers == 0 {
            return Err(Error::invalid(
                "a process pool needs at least 1 worker (got 0)",
            ));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::invalid(
                "max_tasks_per_child must be at least 1 (got 0)",
            ));
        }
        let init = self.init.transpose()?;
        let shared = Arc::new(Shared {
            config: Config {
                workers,
                start: self.start,
                max_tasks_per_child: self.max_tasks_per_child,
                init,
                build_id: *ship::build_id(),
                owner: crate::graph::new_owner(),
            },
            state: Mutex::new(State {
                queue: VecDeque::new(),
                slots: (0..workers).map(|_| None).collect(),
                shutdown: false,
                broken: None,
                live_threads: 0,
                threads: Vec::new(),
                io_thread_ids: Vec::new(),
            }),
            thread_exited: Condvar::new(),
            shm: Arc::default(),
            me: OnceLock::new(),
        });
        let _ = shared.me.set(Arc::downgrade(&shared));
        let pool = ProcessPool {
            shared: shared.clone(),
        };
        for slot in 0..workers {
            let started = start::start(self.start).map_err(|e| Error::Broken {
                reason: format!("could not start worker process {slot}: {e}"),
            })?;
            let mut st = lock(&shared.state);
            let (pid, from_worker) =
                shared
                    .install(&mut st, slot, started)
                    .map_err(|e| Error::Broken {
                        reason: format!("could not set up worker process {slot}: {e}"),
                    })?;
            let shared_t = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("fanout-process-io-{slot}"))
                .spawn(move || slot_thread(shared_t, slot, pid, from_worker))
                .map_err(|e| Error::Broken {
                    reason: format!("could not start the I/O thread for worker {slot}: {e}"),
                })?;
            st.io_thread_ids.push(thread.thread().id());
            st.threads.push(thread);
            st.live_threads += 1;
        }
        Ok(pool)
    }
}

//! The [`Executor`] trait every backend implements, and [`Map`].
//!
//! A backend implements `submit`, `shutdown` and the hidden `submitter`
//! (a batch submission hook that owns a handle to the backend); `map`,
//! `map_with` and `starmap` are written once here on top of it.

mod chunk;

use crate::call::{Call, CallOptions};
use crate::{Error, Future, Payload, Result, Task};
pub use chunk::{Chunk, ChunkSubmitter, Outcomes};
use chunk::{Front, Queue};
use std::time::{Duration, Instant};

/// Submits a batch of calls of one function and returns one future per call.
/// Backends that ship calls elsewhere send a batch in one round trip.
#[doc(hidden)]
pub type Submitter<Args, R> = Box<dyn FnMut(Vec<Args>) -> Result<Vec<Future<R>>> + Send>;

/// Options for [`Executor::map_with`].
///
/// ```
/// use std::time::Duration;
/// let opts = fanout::MapOptions::default()
///     .timeout(Duration::from_secs(10))
///     .chunksize(100)
///     .buffersize(1000);
/// assert_eq!(opts.chunksize, 100);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    /// Deadline for the whole map, counted from the call to `map_with`.
    pub timeout: Option<Duration>,
    /// Items sent per round trip on process and cluster backends, and run
    /// as one job on a thread pool (each item keeps its own outcome; a chunk
    /// is cancelled or timed out as a whole before it starts); 0 means 1.
    pub chunksize: usize,
    /// At most `buffersize + 1` items in flight; input is pulled lazily.
    pub buffersize: Option<usize>,
}

impl MapOptions {
    /// Sets the deadline for the whole map.
    ///
    /// ```
    /// let o = fanout::MapOptions::default().timeout(std::time::Duration::from_secs(1));
    /// assert!(o.timeout.is_some());
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets how many items travel per round trip (0 is rejected by `map_with`).
    ///
    /// ```
    /// assert_eq!(fanout::MapOptions::default().chunksize(8).chunksize, 8);
    /// ```
    pub fn chunksize(mut self, chunksize: usize) -> Self {
        // An explicit 0 is an error, but the field's 0 (its default) means 1;
        // remember the explicit 0 as a value no caller would choose.
        self.chunksize = if chunksize == 0 {
            EXPLICIT_ZERO
        } else {
            chunksize
        };
        self
    }

    /// Bounds the items in flight and makes input lazy (0 is rejected by `map_with`).
    ///
    /// ```
    /// assert_eq!(fanout::MapOptions::default().buffersize(4).buffersize, Some(4));
    /// ```
    pub fn buffersize(mut self, buffersize: usize) -> Self {
        self.buffersize = Some(buffersize);
        self
    }
}

/// Something that runs submitted calls and hands back [`Future`]s.
///
/// The same code runs on every backend; only the constructor changes.
///
/// ```
/// use fanout::{Executor, ThreadPool};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// fn sum_of_squares(ex: &impl Executor, n: u64) -> u64 {
///     ex.map(square, 0..n).unwrap().map(|r| r.unwrap()).sum()
/// }
///
/// let pool = ThreadPool::new(2).unwrap();
/// assert_eq!(sum_of_squares(&pool, 4), 14);
/// ```
pub trait Executor: Send + Sync {
    /// Schedules `f(args...)` and returns a future for its outcome.
    ///
    /// `Err(Shutdown)` after [`Executor::shutdown`]; `Err(Broken)` on a broken executor.
    ///
    /// ```
    /// use fanout::{Executor, ThreadPool};
    /// fn add(a: i32, b: i32) -> i32 { a + b }
    /// let pool = ThreadPool::new(1).unwrap();
    /// assert_eq!(pool.submit(add, (1, 2)).unwrap().result(), Ok(3));
    /// ```
    fn submit<F, Args>(&self, f: F, args: Args) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload;

    /// Starts one call with per-call options and inputs that may be futures;
    /// finish it with [`Call::submit`]. `ex.submit(f, args)` is
    /// `ex.call(f).submit(args)`.
    ///
    /// ```
    /// use fanout::{Executor, ThreadPool};
    /// fn add3(a: u64, b: u64, c: u64) -> u64 { a + b + c }
    /// let pool = ThreadPool::new(2)?;
    /// let a = pool.submit(add3, (1, 0, 0))?;
    /// let b = pool.submit(add3, (2, 0, 0))?;
    /// let c = pool.call(add3).submit((a.arg(), b.arg(), 10u64))?;
    /// assert_eq!(c.result()?, 13);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    fn call<F>(&self, f: F) -> Call<'_, Self, F>
    where
        Self: Sized,
    {
        Call::new(self, f)
    }

    /// Dask's `scatter`: a finished future whose value lives where this
    /// executor's workers read inputs (in Redis for the cluster), so many
    /// calls can take it as an [`Arg`](crate::Arg) without the caller
    /// shipping it each time.
    ///
    /// ```
    /// use fanout::{Executor, ThreadPool};
    /// fn len(v: Vec<u8>) -> usize { v.len() }
    /// let pool = ThreadPool::new(2)?;
    /// let data = pool.put(vec![7u8; 1000])?;
    /// let fs: Vec<_> = (0..3).map(|_| pool.call(len).submit((data.arg(),))).collect::<Result<_, _>>()?;
    /// assert_eq!(fanout::gather(fs)?, [1000, 1000, 1000]);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    fn put<T: Payload + Clone>(&self, value: T) -> Result<Future<T>> {
        crate::graph::put(self.owner(), value)
    }

    /// The tag this executor's futures carry; an [`Arg`](crate::Arg) is
    /// accepted only by the executor whose tag its future carries.
    #[doc(hidden)]
    fn owner(&self) -> u64;

    /// Returns how this backend runs ready calls of `f` whose inputs were
    /// futures (taking each input by reference), owning what it needs.
    #[doc(hidden)]
    fn launcher<F, Args>(&self, f: F) -> crate::graph::Launcher<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload;

    /// Submits one call with its options (priority, timeout, resources);
    /// a backend overrides this to honour them. Retries and dependencies are
    /// handled above the backends.
    #[doc(hidden)]
    fn submit_with<F, Args>(
        &self,
        f: F,
        args: Args,
        options: &CallOptions,
    ) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let _ = options;
        self.submit(f, args)
    }

    /// Like [`Executor::submitter`], for calls with options (priority,
    /// timeout, resources): retried calls submit their later attempts through
    /// it. A backend overrides this to honour the options.
    #[doc(hidden)]
    fn submitter_with<F, Args>(&self, f: F, options: &CallOptions) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let _ = options;
        self.submitter(f)
    }

    /// Shuts the executor down. Idempotent.
    ///
    /// `cancel_futures` cancels every call not yet started (their futures are
    /// done at once); `wait` blocks until running work has finished and the
    /// workers are gone. Dropping an executor is `shutdown(true, false)`.
    ///
    /// ```
    /// use fanout::{Error, Executor, ThreadPool};
    /// let pool = ThreadPool::new(1).unwrap();
    /// pool.shutdown(true, false);
    /// pool.shutdown(true, false);
    /// assert!(matches!(pool.spawn(|| 1), Err(Error::Shutdown)));
    /// ```
    fn shutdown(&self, wait: bool, cancel_futures: bool);

    /// Returns a hook that submits batches of calls to `f`, owning what it
    /// needs of the executor so a lazy [`Map`] can keep submitting.
    #[doc(hidden)]
    fn submitter<F, Args>(&self, f: F) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload;

    /// Returns a hook that submits one map chunk of calls to `f` (what
    /// [`Executor::map_with`] uses). The default submits through
    /// [`Executor::submitter`], one future per item; a backend that runs a
    /// chunk as one unit of work overrides it to complete the whole chunk at
    /// once (one completion per chunk, its items' outcomes in order).
    #[doc(hidden)]
    fn chunk_submitter<F, Args>(&self, f: F) -> ChunkSubmitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let mut submit = self.submitter(f);
        Box::new(move |batch: Vec<Args>| submit(batch).map(Chunk::each))
    }

    /// Calls `f` on every item; yields the outcomes in input order.
    ///
    /// Every item is submitted before `map` returns.
    ///
    /// ```
    /// use fanout::{Executor, ThreadPool};
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = ThreadPool::new(2).unwrap();
    /// let squares: Vec<u64> = pool.map(square, 0..5).unwrap().map(Result::unwrap).collect();
    /// assert_eq!(squares, [0, 1, 4, 9, 16]);
    /// ```
    fn map<F, A, I>(&self, f: F, items: I) -> Result<Map<F::Output>>
    where
        F: Task<(A,)>,
        A: Payload,
        F::Output: Payload,
        I: IntoIterator<Item = A>,
    {
        self.starmap(f, items.into_iter().map(|a| (a,)))
    }

    /// [`Executor::map`] with a timeout, chunking and lazy buffering.
    ///
    /// `chunksize(0)` or `buffersize(0)` → `Err(InvalidArgument)`. With
    /// `buffersize = n`, at most `n + 1` items are in flight and the input is
    /// pulled only as results are consumed, so infinite iterators work (hence
    /// the iterator must be `Send + 'static`).
    ///
    /// ```
    /// use fanout::{Executor, MapOptions, ThreadPool};
    /// fn double(x: u64) -> u64 { 2 * x }
    /// let pool = ThreadPool::new(2).unwrap();
    /// let first: Vec<u64> = pool
    ///     .map_with(double, 0.., MapOptions::default().buffersize(4))
    ///     .unwrap()
    ///     .take(3)
    ///     .map(Result::unwrap)
    ///     .collect();
    /// assert_eq!(first, [0, 2, 4]);
    /// ```
    fn map_with<F, A, I>(&self, f: F, items: I, opts: MapOptions) -> Result<Map<F::Output>>
    where
        F: Task<(A,)>,
        A: Payload,
        F::Output: Payload,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        if opts.buffersize == Some(0) {
            return Err(Error::invalid(
                "map buffersize must be at least 1 (got 0); omit it to submit every item at once",
            ));
        }
        let started = Instant::now();
        let chunksize = check_chunksize(&opts)?;
        let submitter = self.chunk_submitter(f);
        let items = items.into_iter().map(|a| (a,));
        Map::start(
            submitter,
            items,
            chunksize,
            opts.buffersize,
            started,
            opts.timeout,
        )
    }

    /// Like [`Executor::map`], but each item is a tuple of arguments.
    ///
    /// ```
    /// use fanout::{Executor, ThreadPool};
    /// fn add(a: i32, b: i32) -> i32 { a + b }
    /// let pool = ThreadPool::new(2).unwrap();
    /// let sums: Vec<i32> = pool.starmap(add, [(1, 2), (3, 4)]).unwrap().map(Result::unwrap).collect();
    /// assert_eq!(sums, [3, 7]);
    /// ```
    fn starmap<F, Args, I>(&self, f: F, items: I) -> Result<Map<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
        I: IntoIterator<Item = Args>,
    {
        let started = Instant::now();
        let mut submit = self.submitter(f);
        let mut queue = Queue::new();
        // One call per item (a batch would make the whole input one unit of
        // work on a process or cluster worker; chunking is `map_with`'s job).
        for args in items {
            match submit(vec![args]) {
                Ok(fs) => fs.into_iter().for_each(|f| queue.push_future(f)),
                Err(e) => {
                    queue.cancel_all();
                    return Err(e);
                }
            }
        }
        Ok(Map::eager(queue, started, None))
    }
}

/// What [`MapOptions::chunksize`] stores for an explicit 0.
const EXPLICIT_ZERO: usize = usize::MAX;

fn check_chunksize(opts: &MapOptions) -> Result<usize> {
    if opts.chunksize == EXPLICIT_ZERO {
        return Err(Error::invalid(
            "map chunksize must be at least 1 (got 0); leave it unset for one item per round trip",
        ));
    }
    Ok(opts.chunksize.max(1))
}

/// Pulls and submits up to the given number of items (at most one chunk).
type Refill<R> = Box<dyn FnMut(usize) -> Option<Result<Chunk<R>>> + Send>;

/// The outcomes of a map, in input order.
///
/// A failed item yields its `Err` and iteration continues. When the map's
/// timeout passes, yields one `Err(Timeout)`, cancels what has not started and
/// ends. Dropping a `Map` cancels what has not started.
///
/// ```
/// use fanout::{Executor, ThreadPool};
/// fn inv(x: i32) -> i32 { if x == 0 { panic!("division by zero") } 100 / x }
/// let pool = ThreadPool::new(2).unwrap();
/// let out: Vec<_> = pool.map(inv, [1, 0, 4]).unwrap().collect();
/// assert_eq!(out[0], Ok(100));
/// assert!(matches!(out[1], Err(fanout::Error::Panicked { .. })));
/// assert_eq!(out[2], Ok(25));
/// ```
pub struct Map<R> {
    /// Submitted items not yet yielded: per-item futures or whole chunks.
    queue: Queue<R>,
    refill: Option<Refill<R>>,
    buffersize: Option<usize>,
    /// Items per submission; with `buffersize`, input is pulled only when a
    /// whole chunk (or the whole buffer, if smaller) fits.
    chunk: usize,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// A submission error to report once the items before it are yielded.
    deferred: Option<Error>,
    finished: bool,
}

impl<R> Map<R> {
    fn eager(queue: Queue<R>, started: Instant, timeout: Option<Duration>) -> Self {
        Map {
            queue,
            refill: None,
            buffersize: None,
            chunk: 1,
            timeout,
            deadline: timeout.map(|t| started + t),
            deferred: None,
            finished: false,
        }
    }

    fn start<Args: Send + 'static>(
        mut submit: ChunkSubmitter<Args, R>,
        items: impl Iterator<Item = Args> + Send + 'static,
        chunksize: usize,
        buffersize: Option<usize>,
        started: Instant,
        timeout: Option<Duration>,
    ) -> Result<Self>
    where
        R: 'static,
    {
        let mut items = items;
        let mut refill: Refill<R> = Box::new(move |room: usize| {
            let chunk: Vec<Args> = items.by_ref().take(chunksize.min(room.max(1))).collect();
            if chunk.is_empty() {
                None
            } else {
                Some(submit(chunk))
            }
        });
        let mut map = Map::eager(Queue::new(), started, timeout);
        match buffersize {
            None => {
                while let Some(batch) = refill(usize::MAX) {
                    match batch {
                        Ok(chunk) => map.queue.push(chunk),
                        // Dropping `map` cancels what was submitted.
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(n) => {
                map.buffersize = Some(n);
                map.chunk = chunksize;
                map.refill = Some(refill);
                map.fill(n);
                if map.queue.is_empty() {
                    if let Some(e) = map.deferred.take() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(map)
    }

    /// Pulls input until `target` items are in flight or the input ends.
    fn fill(&mut self, target: usize) {
        while self.queue.len() < target {
            if target - self.queue.len() < self.chunk.min(target) {
                return;
            }
            let Some(refill) = self.refill.as_mut() else {
                return;
            };
            // Never more than `target` in flight, even with large chunks.
            match refill(target - self.queue.len()) {
                Some(Ok(chunk)) => self.queue.push(chunk),
                Some(Err(e)) => {
                    self.deferred = Some(e);
                    self.refill = None;
                }
                None => self.refill = None,
            }
        }
    }

    fn cancel_rest(&mut self) {
        self.refill = None;
        self.queue.cancel_all();
    }
}

impl<R> Iterator for Map<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if self.finished {
            return None;
        }
        if let Some(n) = self.buffersize {
            self.fill(n + 1);
        }
        if let Some(item) = self.queue.pop_ready() {
            return Some(item);
        }
        match self.queue.pop(self.deadline) {
            Front::Item(item) => Some(item),
            Front::Empty => {
                self.finished = true;
                self.deferred.take().map(Err)
            }
            Front::TimedOut => {
                let unfinished = self.queue.len();
                self.cancel_rest();
                self.finished = true;
                Some(Err(Error::timeout(format!(
                    "map did not finish within {:?}: {unfinished} items unfinished",
                    self.timeout.unwrap_or_default()
                ))))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.finished {
            (0, Some(0))
        } else if self.refill.is_some() {
            (self.queue.len(), None)
        } else {
            // Plus one pending submission error, reported after the items.
            // With a deadline, a timeout may end the map after one error.
            let n = self.queue.len() + usize::from(self.deferred.is_some());
            let lower = if self.deadline.is_some() { n.min(1) } else { n };
            (lower, Some(n))
        }
    }
}

impl<R> Drop for Map<R> {
    fn drop(&mut self) {
        self.cancel_rest();
    }
}

impl<R> std::fmt::Debug for Map<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("in_flight", &self.queue.len())
            .field("lazy", &self.refill.is_some())
            .finish()
    }
}

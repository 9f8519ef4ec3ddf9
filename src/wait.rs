//! Waiting on many futures at once: [`wait`] and [`as_completed`].
//!
//! Both register one [`Waiter`] with every future that is not yet done; each
//! future fires it once, with its index, when it reaches a final state
//! (finished or cancelled). Futures may come from any mix of executors.

use crate::future::Waiter;
use crate::sync::Arc;
use crate::{Error, Future, Result};
use std::time::{Duration, Instant};

/// When [`wait`] returns.
///
/// ```
/// use fanout::{wait, ReturnWhen, ThreadPool};
/// let pool = ThreadPool::new(2).unwrap();
/// let fs = vec![pool.spawn(|| 1).unwrap(), pool.spawn(|| 2).unwrap()];
/// let done = wait(fs, None, ReturnWhen::AllCompleted);
/// assert_eq!(done.done.len(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any future is done (finished or cancelled).
    FirstCompleted,
    /// As soon as any future finishes with an error (cancellation is not an
    /// error); if none does, when all are done.
    FirstException,
    /// When every future is done.
    AllCompleted,
}

/// The two sets [`wait`] returns, each in the order the futures were given.
///
/// ```
/// use fanout::{wait, ReturnWhen, ThreadPool};
/// let pool = ThreadPool::new(1).unwrap();
/// let fanout::Done { done, not_done } =
///     wait(vec![pool.spawn(|| 1).unwrap()], None, ReturnWhen::AllCompleted);
/// assert_eq!((done.len(), not_done.len()), (1, 0));
/// ```
#[derive(Debug)]
pub struct Done<T> {
    /// Futures that were done when `wait` returned.
    pub done: Vec<Future<T>>,
    /// Futures that were not.
    pub not_done: Vec<Future<T>>,
}

/// Waits until the condition `return_when` holds or `timeout` passes.
///
/// Never fails: on timeout it returns what is done so far.
///
/// ```
/// use std::time::Duration;
/// use fanout::{wait, ReturnWhen, ThreadPool};
///
/// let pool = ThreadPool::new(2).unwrap();
/// let fs = vec![
///     pool.spawn(|| 0u64).unwrap(),
///     pool.spawn(|| { std::thread::sleep(Duration::from_millis(300)); 1 }).unwrap(),
/// ];
/// let r = wait(fs, None, ReturnWhen::FirstCompleted);
/// assert!(!r.done.is_empty());
/// ```
pub fn wait<T>(
    fs: impl IntoIterator<Item = Future<T>>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> Done<T> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let fs: Vec<Future<T>> = fs.into_iter().collect();
    let satisfied = |fs: &[Future<T>]| {
        let done = fs.iter().filter(|f| f.done()).count();
        match return_when {
            ReturnWhen::FirstCompleted => done > 0 || fs.is_empty(),
            ReturnWhen::FirstException => fs.iter().any(Future::failed) || done == fs.len(),
            ReturnWhen::AllCompleted => done == fs.len(),
        }
    };
    if !satisfied(&fs) {
        let waiter = Waiter::new();
        for (i, f) in fs.iter().enumerate() {
            f.add_waiter(&waiter, i);
        }
        while !satisfied(&fs) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            waiter.take_fired(deadline);
        }
        for f in &fs {
            f.remove_waiter(&waiter);
        }
    }
    let (done, not_done) = fs.into_iter().partition(Future::done);
    Done { done, not_done }
}

/// Yields futures as they complete: those already done first, then each as it
/// finishes or is cancelled.
///
/// When `timeout` passes with futures left, yields one
/// `Err(Error::Timeout { .. })` ("N (of M) futures unfinished") and ends.
///
/// ```
/// use fanout::{as_completed, Executor, ThreadPool};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = ThreadPool::new(2).unwrap();
/// let fs: Vec<_> = (0..10).map(|i| pool.submit(square, (i,)).unwrap()).collect();
/// let mut total = 0;
/// for f in as_completed(fs, None) {
///     total += f.unwrap().result().unwrap();
/// }
/// assert_eq!(total, 285);
/// ```
pub fn as_completed<T>(
    fs: impl IntoIterator<Item = Future<T>>,
    timeout: Option<Duration>,
) -> AsCompleted<T> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let futures: Vec<Option<Future<T>>> = fs.into_iter().map(Some).collect();
    let total = futures.len();
    let waiter = Waiter::new();
    let mut ready = Vec::new();
    // Already-done futures first, in the order given; register with the rest.
    for (i, f) in futures.iter().enumerate() {
        let f = f.as_ref().expect("just wrapped");
        if f.done() || !f.add_waiter(&waiter, i) {
            ready.push(i);
        }
    }
    ready.reverse();
    AsCompleted {
        futures,
        ready,
        remaining: total,
        total,
        waiter,
        deadline,
        finished: false,
    }
}

/// Iterator returned by [`as_completed`].
///
/// ```
/// use fanout::{as_completed, ThreadPool};
/// let pool = ThreadPool::new(1).unwrap();
/// let it = as_completed(vec![pool.spawn(|| 1).unwrap()], None);
/// assert_eq!(it.count(), 1);
/// ```
pub struct AsCompleted<T> {
    futures: Vec<Option<Future<T>>>,
    /// Indices ready to yield, last one next.
    ready: Vec<usize>,
    remaining: usize,
    total: usize,
    waiter: Arc<Waiter>,
    deadline: Option<Instant>,
    finished: bool,
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Result<Future<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        loop {
            while let Some(i) = self.ready.pop() {
                if let Some(f) = self.futures[i].take() {
                    self.remaining -= 1;
                    return Some(Ok(f));
                }
            }
            if self.remaining == 0 {
                self.finished = true;
                return None;
            }
            if let Some(deadline) = self.deadline.filter(|d| Instant::now() >= *d) {
                // Futures that finished since the last look are not
                // unfinished: collect their tokens (without blocking, the
                // deadline has passed) and yield them before timing out.
                let fired = self.waiter.take_fired(Some(deadline));
                if !fired.is_empty() {
                    self.ready.extend(fired.into_iter().rev());
                    continue;
                }
                self.finished = true;
                self.unregister();
                return Some(Err(Error::timeout(format!(
                    "{} (of {}) futures unfinished",
                    self.remaining, self.total
                ))));
            }
            let mut fired = self.waiter.take_fired(self.deadline);
            fired.reverse();
            self.ready.extend(fired);
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.finished {
            (0, Some(0))
        } else {
            // Every remaining future; with a deadline, possibly fewer and
            // one timeout error (never more than the futures left).
            let n = self.remaining;
            let lower = if self.deadline.is_some() { n.min(1) } else { n };
            (lower, Some(n))
        }
    }
}

impl<T> AsCompleted<T> {
    fn unregister(&mut self) {
        for f in self.futures.iter().flatten() {
            f.remove_waiter(&self.waiter);
        }
    }
}

impl<T> Drop for AsCompleted<T> {
    fn drop(&mut self) {
        self.unregister();
    }
}

//! One submitted map chunk as [`Map`](crate::Map) holds it: per-item futures
//! (the default, built on `Executor::submitter`), or one completion for the
//! whole chunk holding its items' outcomes in order (a backend that runs a
//! chunk as one unit of work: one cell, one delivery, one wake-up per chunk).

use crate::{Error, Future, Result};
use std::collections::VecDeque;
use std::time::Instant;

/// The outcomes of a chunk's items, in order (errors boxed: a `Vec` of
/// plain `Result<R>` would take the size of an [`Error`] per item).
#[doc(hidden)]
pub type Outcomes<R> = Vec<std::result::Result<R, Box<Error>>>;

/// Submits one map chunk of calls of one function.
#[doc(hidden)]
pub type ChunkSubmitter<Args, R> = Box<dyn FnMut(Vec<Args>) -> Result<Chunk<R>> + Send>;

/// The completions of one submitted map chunk, in input order.
///
/// ```
/// # use fanout::{Executor, ThreadPool};
/// # fn square(x: u64) -> u64 { x * x }
/// let pool = ThreadPool::new(1)?;
/// let mut submit = pool.chunk_submitter(square);
/// let chunk = submit(vec![(1,), (2,), (3,)])?;
/// assert_eq!(chunk.len(), 3);
/// # Ok::<(), fanout::Error>(())
/// ```
#[doc(hidden)]
pub struct Chunk<R> {
    parts: Vec<Part<R>>,
    len: usize,
}

impl<R> Chunk<R> {
    /// A chunk with no items yet.
    pub(crate) fn new() -> Self {
        Chunk {
            parts: Vec::new(),
            len: 0,
        }
    }

    /// A chunk of one future per item.
    pub(crate) fn each(futures: Vec<Future<R>>) -> Self {
        let len = futures.len();
        Chunk {
            parts: futures.into_iter().map(Part::One).collect(),
            len,
        }
    }

    /// A chunk of `len` items completed at once by `future`, whose value holds
    /// exactly `len` outcomes (an `Err` of the future fails all of them).
    pub(crate) fn whole(future: Future<Outcomes<R>>, len: usize) -> Self {
        let mut c = Chunk::new();
        c.push_whole(future, len);
        c
    }

    /// Appends one item's own future.
    pub(crate) fn push_one(&mut self, future: Future<R>) {
        self.parts.push(Part::One(future));
        self.len += 1;
    }

    /// Appends `len` items completed at once by `future`.
    pub(crate) fn push_whole(&mut self, future: Future<Outcomes<R>>, len: usize) {
        if len > 0 {
            self.parts.push(Part::Whole { future, len });
            self.len += len;
        }
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the chunk has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One completion inside a [`Chunk`].
pub(crate) enum Part<R> {
    One(Future<R>),
    Whole {
        future: Future<Outcomes<R>>,
        len: usize,
    },
    /// A `Whole` that failed as a unit: `left` more copies of `error`.
    Failed {
        error: Error,
        left: usize,
    },
}

impl<R> Part<R> {
    fn cancel(&self) {
        match self {
            Part::One(f) => {
                f.cancel();
            }
            Part::Whole { future, .. } => {
                future.cancel();
            }
            Part::Failed { .. } => {}
        }
    }
}

/// The items a [`Map`](crate::Map) has submitted and not yet yielded.
pub(crate) struct Queue<R> {
    /// The rest of the front chunk that has completed, yielded before `parts`.
    ready: std::vec::IntoIter<std::result::Result<R, Box<Error>>>,
    parts: VecDeque<Part<R>>,
    /// Items not yet yielded.
    len: usize,
}

/// What waiting for the front item found.
pub(crate) enum Front<R> {
    Item(Result<R>),
    Empty,
    /// The deadline passed first (nothing was taken).
    TimedOut,
}

impl<R> Queue<R> {
    pub(crate) fn new() -> Self {
        Queue {
            ready: Vec::new().into_iter(),
            parts: VecDeque::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push_future(&mut self, f: Future<R>) {
        self.parts.push_back(Part::One(f));
        self.len += 1;
    }

    pub(crate) fn push(&mut self, chunk: Chunk<R>) {
        self.len += chunk.len;
        self.parts.extend(chunk.parts);
    }

    /// Cancels everything that has not started.
    pub(crate) fn cancel_all(&self) {
        for p in &self.parts {
            p.cancel();
        }
    }

    /// The next item of a completed chunk, if the front is one (most items
    /// of a chunked map come this way).
    #[inline]
    pub(crate) fn pop_ready(&mut self) -> Option<Result<R>> {
        let item = self.ready.next()?;
        self.len -= 1;
        Some(item.map_err(|e| *e))
    }

    /// Takes the front item, waiting for it until `deadline`.
    pub(crate) fn pop(&mut self, deadline: Option<Instant>) -> Front<R> {
        loop {
            if let Some(item) = self.pop_ready() {
                return Front::Item(item);
            }
            let Some(front) = self.parts.front_mut() else {
                return Front::Empty;
            };
            match front {
                Part::Failed { error, left } => {
                    if *left == 0 {
                        self.parts.pop_front();
                        continue;
                    }
                    *left -= 1;
                    self.len -= 1;
                    return Front::Item(Err(error.clone()));
                }
                Part::One(f) => {
                    if !wait(f, deadline) {
                        return Front::TimedOut;
                    }
                    let Some(Part::One(f)) = self.parts.pop_front() else {
                        unreachable!("the front part was just matched")
                    };
                    self.len -= 1;
                    return Front::Item(f.result());
                }
                Part::Whole { future, .. } => {
                    if !wait(future, deadline) {
                        return Front::TimedOut;
                    }
                    let Some(Part::Whole { future, len }) = self.parts.pop_front() else {
                        unreachable!("the front part was just matched")
                    };
                    let part = match future.result() {
                        Ok(items) if items.len() == len => {
                            self.ready = items.into_iter();
                            continue;
                        }
                        Ok(items) => Part::Failed {
                            error: Error::invalid(format!(
                                "internal: a map chunk of {len} items completed with {} outcomes",
                                items.len()
                            )),
                            left: len,
                        },
                        Err(error) => Part::Failed { error, left: len },
                    };
                    self.parts.push_front(part);
                }
            }
        }
    }
}

fn wait<T>(f: &Future<T>, deadline: Option<Instant>) -> bool {
    match deadline {
        None => true,
        Some(d) => f.wait(Some(d.saturating_duration_since(Instant::now()))),
    }
}

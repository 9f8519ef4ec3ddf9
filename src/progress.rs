//! Watching many futures finish: a progress bar over any iterator, like
//! Dask's `progress()`. Behind the cargo feature `progress` (uses
//! [`indicatif`](https://docs.rs/indicatif)).
//!
//! The adapter only counts what passes through it: wrap
//! [`as_completed`](crate::as_completed) to see futures finish in any order, or a
//! [`Map`](crate::Map) to see results arrive in input order. It draws on
//! stderr and draws nothing when stderr is not a terminal (a pipe, a log file,
//! CI), so it is safe to leave in batch jobs.

use indicatif::{ProgressBar, ProgressStyle};
use std::borrow::Cow;
use std::iter::FusedIterator;

const BAR: &str =
    "{msg}[{bar:40}] | {percent:>3}% Completed | {pos}/{len} | {elapsed_precise} (eta {eta})";
const SPINNER: &str = "{msg}{spinner} {pos} completed | {elapsed_precise}";

/// Wraps `iter` in a progress bar that advances by one for every item it
/// yields; the items themselves pass through unchanged and in order.
///
/// `total` is the bar's length. With `None` the length comes from the
/// iterator's [`size_hint`](Iterator::size_hint) (its lower bound, or its
/// exact length when both bounds agree), and when that says nothing the bar
/// is a spinner counting items. [`as_completed`](crate::as_completed) does not
/// report a length, so pass its total explicitly; a [`Map`](crate::Map) that
/// submitted everything up front knows its own.
///
/// The bar is finished (left showing 100 %) when the iterator ends; if it
/// ends short of `total`, or you stop early, it stays where it was. Nothing is drawn when stderr is not a
/// terminal.
///
/// ```
/// use fanout::{as_completed, progress, Executor, ThreadPool};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = ThreadPool::new(2)?;
/// let fs: Vec<_> = (0..20).map(|i| pool.submit(square, (i,))).collect::<Result<_, _>>()?;
/// let n = fs.len() as u64;
///
/// let mut total = 0;
/// for f in progress(as_completed(fs, None), Some(n)) {
///     total += f?.result()?;
/// }
/// assert_eq!(total, 2470);
/// # Ok::<(), fanout::Error>(())
/// ```
pub fn progress<I: IntoIterator>(iter: I, total: Option<u64>) -> Progress<I::IntoIter> {
    let inner = iter.into_iter();
    let length = total.or_else(|| match inner.size_hint() {
        (lo, Some(hi)) if lo == hi => Some(lo as u64),
        (0, _) => None,
        (lo, _) => Some(lo as u64),
    });
    let bar = match length {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template(BAR)
                .expect("the bar template is valid")
                .progress_chars("#>-"),
        ),
        None => ProgressBar::new_spinner()
            .with_style(ProgressStyle::with_template(SPINNER).expect("the template is valid")),
    };
    Progress {
        inner,
        bar,
        finished: false,
    }
}

/// Iterator returned by [`progress`] and [`ProgressExt::progress`]: yields
/// the wrapped iterator's items unchanged and advances a progress bar.
///
/// ```
/// use fanout::{Executor, ProgressExt, ThreadPool};
///
/// fn double(x: u32) -> u32 { 2 * x }
///
/// let pool = ThreadPool::new(2)?;
/// let mut it = pool.map(double, 0..4)?.progress();
/// assert_eq!(it.length(), Some(4));
/// assert_eq!(it.next(), Some(Ok(0)));
/// assert_eq!(it.position(), 1);
/// # Ok::<(), fanout::Error>(())
/// ```
#[derive(Debug)]
pub struct Progress<I> {
    inner: I,
    bar: ProgressBar,
    finished: bool,
}

impl<I> Progress<I> {
    /// Shows `message` before the bar (e.g. what is being waited for).
    ///
    /// ```
    /// use fanout::ProgressExt;
    /// let labelled: Vec<u8> = [1u8, 2, 3].into_iter().progress().with_message("parsing").collect();
    /// assert_eq!(labelled, [1, 2, 3]);
    /// ```
    pub fn with_message(self, message: impl Into<Cow<'static, str>>) -> Self {
        let message = message.into();
        if message.is_empty() {
            self.bar.set_message("");
        } else {
            self.bar.set_message(format!("{message} "));
        }
        self
    }

    /// How many items have been yielded so far.
    ///
    /// ```
    /// use fanout::ProgressExt;
    /// let mut it = (0..10).progress();
    /// it.by_ref().take(3).for_each(drop);
    /// assert_eq!(it.position(), 3);
    /// ```
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// The bar's length: the total it counts towards, `None` for a spinner.
    /// Grows if the iterator yields more items than it announced.
    ///
    /// ```
    /// assert_eq!(fanout::progress(0..10, None).length(), Some(10));
    /// assert_eq!(fanout::progress(0..10, Some(20)).length(), Some(20));
    /// assert_eq!(fanout::progress((0..).take_while(|&x| x < 5), None).length(), None);
    /// ```
    pub fn length(&self) -> Option<u64> {
        self.bar.length()
    }

    /// Stops drawing and returns the wrapped iterator, which resumes where
    /// this one left off.
    ///
    /// ```
    /// use fanout::ProgressExt;
    /// let mut it = (0..5).progress();
    /// it.next();
    /// assert_eq!(it.into_inner().collect::<Vec<_>>(), [1, 2, 3, 4]);
    /// ```
    pub fn into_inner(self) -> I {
        self.bar.abandon();
        self.inner
    }
}

impl<I: Iterator> Iterator for Progress<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        match self.inner.next() {
            Some(item) => {
                self.bar.inc(1);
                if let Some(len) = self.bar.length() {
                    let pos = self.bar.position();
                    if pos > len {
                        self.bar.set_length(pos);
                    }
                }
                Some(item)
            }
            None => {
                if !self.finished {
                    self.finished = true;
                    // A stream that ended short of its announced total (a
                    // timeout, a Map that stopped early) stays where it ended.
                    match self.bar.length() {
                        Some(len) if self.bar.position() < len => self.bar.abandon(),
                        _ => self.bar.finish(),
                    }
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<I: ExactSizeIterator> ExactSizeIterator for Progress<I> {}

impl<I: FusedIterator> FusedIterator for Progress<I> {}

/// `.progress()` on any iterator: [`progress`] with the length taken from
/// the iterator's [`size_hint`](Iterator::size_hint).
///
/// Suits iterators that know their length, like a [`Map`](crate::Map) or a
/// `Vec` of results; for [`as_completed`](crate::as_completed) call
/// [`progress`] with the total.
///
/// ```
/// use fanout::{Executor, ProgressExt, ThreadPool};
///
/// fn cube(x: i64) -> i64 { x * x * x }
///
/// let pool = ThreadPool::new(2)?;
/// let cubes: Vec<i64> = pool
///     .map(cube, 0..5)?
///     .progress()
///     .with_message("cubing")
///     .collect::<Result<_, _>>()?;
/// assert_eq!(cubes, [0, 1, 8, 27, 64]);
/// # Ok::<(), fanout::Error>(())
/// ```
pub trait ProgressExt: Iterator + Sized {
    /// Wraps the iterator in a progress bar; see [`progress`].
    ///
    /// ```
    /// use fanout::ProgressExt;
    /// assert_eq!((1..=4).progress().sum::<u32>(), 10);
    /// ```
    fn progress(self) -> Progress<Self> {
        progress(self, None)
    }
}

impl<I: Iterator> ProgressExt for I {}

//! [`gather`]: the values of many futures, in input order.

use crate::{Future, Result};

/// The values of `fs`, in input order; the first error (in input order) wins.
///
/// ```
/// use fanout::{gather, Executor, ThreadPool};
/// fn double(x: u64) -> u64 { 2 * x }
/// let pool = ThreadPool::new(2)?;
/// let fs = (0..4).map(|i| pool.submit(double, (i,))).collect::<Result<Vec<_>, _>>()?;
/// assert_eq!(gather(fs)?, [0, 2, 4, 6]);
/// # Ok::<(), fanout::Error>(())
/// ```
pub fn gather<T>(fs: impl IntoIterator<Item = Future<T>>) -> Result<Vec<T>> {
    let fs: Vec<Future<T>> = fs.into_iter().collect();
    let mut out = Vec::with_capacity(fs.len());
    let mut first_error = None;
    for f in fs {
        match f.result() {
            Ok(v) => out.push(v),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

//! `put` (Dask's `scatter`): a finished future holding a value, encoded
//! once so every call that takes it as an `Arg` gets the same bytes.

use crate::future::pair_in;
use crate::{Future, Payload, Result};

/// A finished future of `value`, owned by the executor tagged `owner`.
pub(crate) fn put<T: Payload>(owner: u64, value: T) -> Result<Future<T>> {
    let (future, promise) = pair_in::<T>(owner);
    let cell = promise.cell();
    cell.keep_encoded(Ok(super::encode_value(&value)?));
    cell.want_encoded();
    promise.set_result(value);
    Ok(future)
}

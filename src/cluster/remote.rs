//! Results that stay in Redis until someone asks for them.
//!
//! A successful one-item result larger than [`LAZY_ABOVE`] is not downloaded
//! when its `done` event arrives: its future completes with a [`Remote`]
//! handle, and the value is fetched (`GET`) the first time the future is
//! asked for it (`result`, `.await`, a done-callback). A dependent of such a
//! future does not get the value through the client either: its task record
//! carries an argument *template* naming the input's task, and the worker
//! reads the input's result from Redis itself (`fill_template` in
//! `worker/run.rs`, with [`parse_template`]).
//!
//! The result key lives as long as the handle: the handle is shared by the
//! future's cell (while the future or an `Arg` of it exists) and by every
//! launched dependent until that dependent is done; when the last one goes,
//! the key is deleted (by the event loop, or at once after shutdown).
//! `put` writes its value once, the same way, under a task id of its own.

use super::client::Shared;
use super::protocol::{ItemOutcome, Outcome};
use crate::future::{pair_in, Promise, Reference};
use crate::{Error, Future, Payload, Result};
use std::sync::Arc;

/// One-item results up to this size come back with the `done` event's
/// batch read (cheaper than a round trip each); larger ones stay in Redis.
pub(crate) const LAZY_ABOVE: usize = 64 << 10;

/// Marks an argument template (a dependent whose inputs the worker reads).
pub(crate) const TEMPLATE_MAGIC: &[u8; 16] = b"\xfffanout-graph\x00v1";

/// A result that stays in Redis; deleting it when dropped.
pub(crate) struct Remote {
    pub(crate) task: String,
    shared: Arc<Shared>,
}

impl Remote {
    pub(crate) fn new(task: String, shared: Arc<Shared>) -> Arc<Remote> {
        shared.hold_result(&task);
        Arc::new(Remote { task, shared })
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.shared.release_result(std::mem::take(&mut self.task));
    }
}

/// Completes `promise` with a value that stays in Redis under `remote`.
pub(crate) fn complete_remote<R: Payload>(promise: Promise<R>, remote: Arc<Remote>) {
    promise
        .cell()
        .keep_reference(Reference::Remote(remote.clone()));
    promise.set_remote(Box::new(move || {
        let bytes = remote.shared.fetch_value(&remote.task)?;
        crate::ship::decode::<R>(&bytes)
    }));
}

/// The one value of a sealed one-item result envelope.
pub(crate) fn single_value(secret: &[u8], task: &str, envelope: &[u8]) -> Result<Vec<u8>> {
    match Outcome::open(secret, task, envelope)? {
        Outcome::Ran { mut items, .. } if items.len() == 1 => match items.pop() {
            Some(ItemOutcome::Value(v)) => Ok(v),
            Some(ItemOutcome::Failed(e)) => Err(e.into_error("the cluster worker")),
            _ => Err(Error::Cancelled),
        },
        _ => Err(Error::Backend {
            message: format!("the result of task {task} is not a single value"),
        }),
    }
}

/// `put`: writes `value` to Redis once and returns a finished future of it.
pub(crate) fn put<T: Payload>(shared: &Arc<Shared>, value: T) -> Result<Future<T>> {
    let bytes = crate::graph::encode_value(&value)?;
    let task = shared.store_value(bytes.to_vec())?;
    let (future, promise) = pair_in::<T>(shared.owner());
    let cell = promise.cell();
    cell.keep_reference(Reference::Remote(Remote::new(task, shared.clone())));
    cell.want_encoded();
    promise.set_result(value);
    Ok(future)
}

/// Handles to inputs' results that a launched dependent keeps alive.
pub(crate) type Handles = Vec<Arc<dyn std::any::Any + Send + Sync>>;

/// The argument bytes of a dependent: the plain bytes when no input stayed
/// in Redis, else a template the worker fills in. Also returns the handles
/// the dependent keeps alive until it is done.
pub(crate) fn template(ready: &crate::graph::Ready) -> Result<(Vec<u8>, Handles)> {
    let remote = ready
        .parts
        .iter()
        .any(|p| matches!(p, Reference::Remote(_)));
    if !remote {
        return Ok((ready.concat()?, Vec::new()));
    }
    let mut out = TEMPLATE_MAGIC.to_vec();
    let mut keep = Vec::new();
    for part in &ready.parts {
        let (kind, bytes): (u8, &[u8]) = match part {
            Reference::Bytes(b) => (0, b),
            Reference::Remote(handle) => {
                let Some(r) = handle.downcast_ref::<Remote>() else {
                    return Err(Error::invalid(
                        "internal: an input held by another backend reached the cluster",
                    ));
                };
                keep.push(handle.clone());
                (1, r.task.as_bytes())
            }
        };
        out.push(kind);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    Ok((out, keep))
}

/// One piece of a template: literal bytes or an input task's id.
pub(crate) enum Piece<'a> {
    Bytes(&'a [u8]),
    Input(&'a str),
}

/// The pieces of `item` when it is a template; `None` when it is plain
/// arguments; `Some(Err)` when it is a malformed template.
pub(crate) fn parse_template(item: &[u8]) -> Option<std::result::Result<Vec<Piece<'_>>, String>> {
    let mut rest = item.strip_prefix(&TEMPLATE_MAGIC[..])?;
    let mut pieces = Vec::new();
    while let Some((&kind, tail)) = rest.split_first() {
        let Some(len) = tail.get(..4).and_then(|l| l.try_into().ok()) else {
            return Some(Err("truncated argument template".into()));
        };
        let len = u32::from_le_bytes(len) as usize;
        let Some(bytes) = tail.get(4..4 + len) else {
            return Some(Err("truncated argument template".into()));
        };
        rest = &tail[4 + len..];
        pieces.push(match kind {
            0 => Piece::Bytes(bytes),
            1 => match std::str::from_utf8(bytes) {
                Ok(task) => Piece::Input(task),
                Err(_) => return Some(Err("a malformed input in the argument template".into())),
            },
            _ => return Some(Err("an unknown piece in the argument template".into())),
        });
    }
    Some(Ok(pieces))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_arguments_are_not_templates() {
        assert!(parse_template(b"\x01\x02").is_none());
        let mut t = TEMPLATE_MAGIC.to_vec();
        t.extend_from_slice(&[0, 2, 0, 0, 0, 7, 8, 1, 3, 0, 0, 0]);
        t.extend_from_slice(b"a.1");
        let pieces = parse_template(&t).unwrap().unwrap();
        assert!(matches!(pieces[0], Piece::Bytes(b) if b == [7, 8]));
        assert!(matches!(pieces[1], Piece::Input("a.1")));
        t.pop();
        assert!(parse_template(&t).unwrap().is_err());
    }
}

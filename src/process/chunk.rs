//! A map chunk as one unit of the pool: its arguments encoded in one pass
//! into one buffer of TASK records, one [`Delivery`] that is set running,
//! set pending and delivered once, and one completion holding the chunk's
//! outcomes in order (decoded in one pass from the worker's DONE frame).
//!
//! The worker sees the records as calls of an ordinary TASK frame (all with
//! the chunk's id) and answers each, so a panic fails only its own item. A
//! worker that dies while running the chunk fails all of its items, as it
//! does for a frame of per-item calls.

use super::dispatch::{Delivery, Item};
use super::wire::{push_record, MAX_FRAME};
use crate::codec_guard;
use crate::future::{chunk_pair, remote_pair, Promise};
use crate::ship::Encoded;
use crate::{Chunk, Error, Payload, Result};
use std::sync::Arc;

/// The pool's side of a map chunk.
struct ChunkDelivery<R> {
    promise: Promise<Vec<Result<R>>>,
    len: usize,
}

impl<R: Payload> Delivery for ChunkDelivery<R> {
    fn id(&self) -> u64 {
        self.promise.id()
    }
    fn set_running(&self) -> bool {
        self.promise.set_running()
    }
    fn set_pending(&self) {
        self.promise.set_pending();
    }
    fn deliver(self: Box<Self>, outcome: Result<&[u8]>) {
        // Only failures of the whole frame come this way (lost, broken, cancelled).
        let error = match outcome {
            Err(e) => e,
            Ok(_) => Error::invalid("internal: a map chunk was delivered as one call"),
        };
        self.promise.set_error(error);
    }
    fn deliver_each(self: Box<Self>, outcomes: &mut dyn Iterator<Item = Result<&[u8]>>) {
        let mut out = Vec::with_capacity(self.len);
        for _ in 0..self.len {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(Error::invalid(
                    "internal: a DONE frame is missing an outcome",
                ))
            });
            out.push(outcome.and_then(codec_guard::decode::<R>));
        }
        // As for one call: completing may run user code (dropping values
        // whose future is gone); it must not kill the I/O thread.
        let id = self.promise.id();
        let promise = self.promise;
        if let Err(e) = crate::panic::catch(move || promise.set_result(out)) {
            log::error!("delivering the results of map chunk {id} panicked: {e}");
        }
    }
}

/// Encodes a map chunk into items of the pool (at most half a frame each)
/// and the [`Chunk`] that `Map` waits on. An item whose arguments fail to
/// encode, or are over half a frame alone, fails alone (its own future).
pub(super) fn chunk_items<Args: Payload, R: Payload>(
    owner: u64,
    batch: Vec<Args>,
) -> (Vec<Item>, Chunk<R>) {
    let mut items = Vec::new();
    let mut chunk = Chunk::new();
    let mut part = Part::<R>::new(owner, batch.len());
    for args in batch {
        let at = part.records.len();
        let id = part.id();
        let encoded = push_record(&mut part.records, id, |out| codec_guard::encode(&args, out));
        let refused = match encoded {
            Ok(n) if n > MAX_FRAME / 2 => Some(Error::Codec {
                type_name: std::any::type_name::<Args>().into(),
                message: format!(
                    "encoded arguments take {n} bytes, over the {} byte limit",
                    MAX_FRAME / 2
                ),
            }),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = refused {
            part.records.truncate(at);
            part.close(&mut items, &mut chunk);
            part = Part::new(owner, 1);
            let (future, promise) = remote_pair::<R>(owner);
            promise.set_error(e);
            chunk.push_one(future);
            continue;
        }
        if part.records.len() > MAX_FRAME / 2 && part.len > 0 {
            // Too big with the others: this record starts the next part.
            let record = part.records.split_off(at);
            part.close(&mut items, &mut chunk);
            part = Part::new(owner, 1);
            let id = part.id().to_le_bytes();
            part.records.extend_from_slice(&id);
            part.records.extend_from_slice(&record[8..]);
        }
        part.len += 1;
    }
    part.close(&mut items, &mut chunk);
    (items, chunk)
}

/// The part of a chunk being encoded.
struct Part<R> {
    promise: Promise<Vec<Result<R>>>,
    future: crate::Future<Vec<Result<R>>>,
    records: Vec<u8>,
    len: usize,
}

impl<R: Payload> Part<R> {
    fn new(owner: u64, expected: usize) -> Self {
        let (future, promise) = chunk_pair(owner);
        Part {
            promise,
            future,
            // A small argument takes a 12-byte record header and a few bytes.
            records: Vec::with_capacity(expected.min(1 << 16) * 16),
            len: 0,
        }
    }

    fn id(&self) -> u64 {
        self.promise.id()
    }

    fn close(self, items: &mut Vec<Item>, chunk: &mut Chunk<R>) {
        if self.len == 0 {
            // Never queued: complete it so its promise is not dropped pending.
            self.promise.set_result(Vec::new());
            return;
        }
        chunk.push_whole(self.future, self.len);
        items.push(Item {
            args: Arc::new(Encoded {
                head: self.records,
                body: Vec::new(),
            }),
            records: self.len as u32,
            delivery: Box::new(ChunkDelivery {
                promise: self.promise,
                len: self.len,
            }),
        });
    }
}

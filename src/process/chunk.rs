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
use super::pool::args_within_frame;
use super::wire::{push_record, MAX_FRAME};
use crate::codec_guard;
use crate::executor::Outcomes;
use crate::future::{chunk_pair, remote_pair, Promise};
use crate::ship::{self, Encoded};
use crate::{Chunk, Error, Payload, Result};
use std::sync::Arc;

/// The pool's side of a map chunk.
struct ChunkDelivery<R> {
    promise: Promise<Outcomes<R>>,
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
        // One pass, under one `catch` (a panicking `Deserialize` fails its item).
        let mut out = Vec::with_capacity(self.len);
        crate::panic::catch_each(self.len, |_, panicked| {
            if let Some(e) = panicked {
                return out.push(Err(Box::new(codec_guard::panicked::<R>(
                    "deserializing",
                    e,
                ))));
            }
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(Error::invalid(
                    "internal: a DONE frame is missing an outcome",
                ))
            });
            out.push(outcome.and_then(ship::decode::<R>).map_err(Box::new));
        });
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
/// and the [`Chunk`] that `Map` waits on, in one pass under one `catch`. An
/// item whose arguments fail to encode (or panic doing so, or in `Drop`),
/// or take over half a frame alone, fails alone (its own future).
pub(super) fn chunk_items<Args: Payload, R: Payload>(
    owner: u64,
    batch: Vec<Args>,
) -> (Vec<Item>, Chunk<R>) {
    let n = batch.len();
    let mut out = Out {
        owner,
        items: Vec::new(),
        chunk: Chunk::new(),
        part: Part::<R>::new(owner, n),
    };
    let mut batch = batch.into_iter();
    let mut at = 0;
    crate::panic::catch_each(n, |_, panicked| {
        if let Some(e) = panicked {
            out.part.records.truncate(at);
            return out.refuse(codec_guard::panicked::<Args>("serializing", e));
        }
        let Some(args) = batch.next() else { return };
        at = out.part.records.len();
        let id = out.part.id();
        let encoded = push_record(&mut out.part.records, id, |buf| ship::encode(&args, buf));
        drop(args);
        match encoded.and_then(|len| args_within_frame::<Args>(len)) {
            Ok(()) => out.accept(at),
            Err(e) => {
                // Nothing of a refused item stays among the records.
                out.part.records.truncate(at);
                out.refuse(e)
            }
        }
    });
    let Out {
        mut items,
        mut chunk,
        part,
        ..
    } = out;
    part.close(&mut items, &mut chunk);
    (items, chunk)
}

/// What `chunk_items` has built so far.
struct Out<R> {
    owner: u64,
    items: Vec<Item>,
    chunk: Chunk<R>,
    part: Part<R>,
}

impl<R: Payload> Out<R> {
    /// The record at `at` (the last one) joins the current part, or starts
    /// the next one when it would take the part past half a frame.
    #[inline]
    fn accept(&mut self, at: usize) {
        if self.part.records.len() > MAX_FRAME / 2 && self.part.len > 0 {
            let record = self.part.records.split_off(at);
            self.next_part();
            let id = self.part.id().to_le_bytes();
            self.part.records.extend_from_slice(&id);
            self.part.records.extend_from_slice(&record[8..]);
        }
        self.part.len += 1;
    }

    /// An item that fails alone, between two parts.
    fn refuse(&mut self, error: Error) {
        self.next_part();
        let (future, promise) = remote_pair::<R>(self.owner);
        promise.set_error(error);
        self.chunk.push_one(future);
    }

    fn next_part(&mut self) {
        let part = std::mem::replace(&mut self.part, Part::new(self.owner, 1));
        part.close(&mut self.items, &mut self.chunk);
    }
}

/// The part of a chunk being encoded.
struct Part<R> {
    promise: Promise<Outcomes<R>>,
    future: crate::Future<Outcomes<R>>,
    records: Vec<u8>,
    len: usize,
}

impl<R: Payload> Part<R> {
    fn new(owner: u64, expected: usize) -> Self {
        let (future, promise) = chunk_pair(owner);
        Part {
            promise,
            future,
            // A small argument takes a 12-byte record header and up to ~12 bytes.
            records: Vec::with_capacity(expected.min(1 << 16) * 24),
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

//! What the cluster keeps in Redis: key names, the Lua scripts that move a
//! task through its life, the signed task record and result envelope, and a
//! reconnecting connection.
//!
//! # Keys
//!
//! Every key starts with the namespace as a hash tag, `{ns}`, so all of a
//! cluster's keys live in one hash slot and every script stays legal on Redis
//! Cluster (each script also declares every key it touches in `KEYS`).
//!
//! | key                  | type   | lifetime                                                    |
//! |----------------------|--------|-------------------------------------------------------------|
//! | `{ns}:q`             | stream | persists (empty when idle), with consumer group `fanout`    |
//! | `{ns}:q:<p>:<needs>` | stream | another lane (priority, resources); persists like `{ns}:q`  |
//! | `{ns}:q:lanes`       | hash   | the lanes in use (stream → `priority|needs`); persists      |
//! | `{ns}:t:<task>`      | hash   | from submit until a worker finishes (or skips) the task     |
//! | `{ns}:r:<task>`      | string | from finish until the client has read it (none for a result of at most 4 KiB, which rides in its event; a value over 64 KiB, and `put` values: until no future, `Arg` or running dependent can ask for it); TTL [`RESULT_TTL`] |
//! | `{ns}:ev:<client>`   | stream | while the client runs (TTL refreshed); deleted by `shutdown` |
//! | `{ns}:live:<client>` | string | signed expiry time, refreshed while the client runs         |
//! | `{ns}:pev:<client>`  | stream | the "done" events of results pushed to the client (`push.rs`), read now and then to catch a lost push; as `{ns}:ev:<client>` |
//! | `{ns}:push:<client>` | string | signed address and token where the client takes pushed results; refreshed with its liveness, deleted by `shutdown` |
//! | `{ns}:fin:<client>`  | bitmap | bit `seq` set when the task finished; lives as the client    |
//! | `{ns}:died:<worker>` | string | how a local worker died; deleted by `shutdown`; TTL 1 hour  |
//!
//! A task id is `<client>.<seq>`: 16 hex digits naming the client, a dot and
//! the client's sequence number in hex. The worker derives the client's
//! event stream from it, so every script knows its keys up front.
//!
//! # Files
//!
//! This file holds the key names and task ids; `scripts` the Lua scripts
//! (their sources are in `../lua/`), `seal` the signatures, `items` and
//! `outcome` a task's argument blob and result envelope, `reply` the reading
//! of Redis replies, `conn` the connection with its retries.
//!
//! # A task's life
//!
//! `submit` writes the record (state `p`) and adds `t=<task>` to `{ns}:q`.
//! A worker reads the entry with `XREADGROUP` and runs `start`, which counts
//! the delivery (`at`), marks the record running (`r`, owner `o`) and, on the
//! first delivery, tells the client (`k=s` on its event stream, one event
//! naming every task a claim started); a busy worker reads and starts up to
//! 16 short tasks at once in its `finish_claim` call (see `batch.rs`), an
//! idle one blocks in `XREADGROUP` as its slot's own consumer. A quick
//! task (a first submission to the default lane with at most 8 KiB of
//! arguments) carries its call in its entry too: a blocking read that
//! delivers it runs it from the entry, and runs `mark` (its start) only if
//! it still runs 200 µs later (`starter.rs`), or first, waiting for it,
//! when the client's liveness is not cached; `cancel` never cancels a quick
//! task the group delivered, and deletes the entry of one it cancels. The
//! worker checks the record's signature, build id and trampoline, runs the
//! call and runs `finish`, which acknowledges the stream entry (done entries
//! leave the stream by trimming, see `lua/tidy_fn.lua`),
//! stores the signed result envelope with `SET NX` (exactly once, even when
//! a redelivered copy finishes too), deletes the record and tells the client
//! (`k=d`, with the envelope itself when it is at most 4 KiB). The client
//! reads the result (from the event, else `MGET`), completes the future, then
//! `ack` (sent with a later `XREAD`: the next one when a result key waits
//! to be deleted, else once 64 events or half a second wait to be trimmed)
//! deletes the result and trims the events read. A worker whose lease lapses
//! (no heartbeat) loses its entries to another worker's `XAUTOCLAIM`; a task
//! started more than its `m` times resolves to `WorkerLost`. `cancel` marks a
//! pending record cancelled (`c`); `start` then drops it without running it.
//!
//! # Replays
//!
//! A record's signature covers the namespace and a per-task nonce as well as
//! the call, so a copy in another namespace sharing the secret does not
//! verify there. `finish` sets the task's bit in the client's finished
//! bitmap, and `start` drops a record whose bit is set, so a finished record
//! written back is never run again. A worker runs a task only while its
//! client's liveness value (HMAC over the namespace, client and an expiry in
//! Redis time, refreshed by the client) verifies and has not expired: the
//! records of a client that is gone are dropped (`drop`), not run.

use std::time::Duration;

/// The consumer group every worker of a namespace reads through.
pub(crate) const GROUP: &str = "fanout";

/// How long an unconsumed result (client gone) stays in Redis.
pub(crate) const RESULT_TTL: Duration = Duration::from_secs(3600);

/// How long a rejected (badly signed) or cancelled record is kept for inspection.
pub(crate) const DEAD_RECORD_TTL: Duration = Duration::from_secs(3600);

/// Most tasks per `submit` script call (a larger batch is split).
pub(crate) const SUBMIT_BATCH: usize = 256;

/// Key names of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    tag: String,
}

impl Keys {
    pub(crate) fn new(namespace: &str) -> Keys {
        Keys {
            tag: format!("{{{namespace}}}"),
        }
    }

    /// The namespace's hash tag, `{ns}`, with which every key starts.
    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    /// The task stream.
    pub(crate) fn queue(&self) -> String {
        format!("{}:q", self.tag)
    }

    /// A task's record.
    pub(crate) fn task(&self, task: &str) -> String {
        format!("{}:t:{task}", self.tag)
    }

    /// A task's result envelope.
    pub(crate) fn result(&self, task: &str) -> String {
        format!("{}:r:{task}", self.tag)
    }

    /// A client's completion event stream.
    pub(crate) fn events(&self, client: &str) -> String {
        format!("{}:ev:{client}", self.tag)
    }

    /// A client's stream of the "done" events of results pushed to it (see
    /// `push`): what it reads, now and then, to catch a push that was lost.
    pub(crate) fn pushed_events(&self, client: &str) -> String {
        format!("{}:pev:{client}", self.tag)
    }

    /// A client's liveness: a signed expiry time, refreshed while it runs.
    pub(crate) fn live(&self, client: &str) -> String {
        format!("{}:live:{client}", self.tag)
    }

    /// Where a client takes results pushed to it (see `push`): a signed
    /// address and token, refreshed with its liveness.
    pub(crate) fn push(&self, client: &str) -> String {
        format!("{}:push:{client}", self.tag)
    }

    /// A client's finished-task bitmap (bit = sequence number).
    pub(crate) fn finished(&self, client: &str) -> String {
        format!("{}:fin:{client}", self.tag)
    }

    /// How a local worker died (written by the supervisor).
    pub(crate) fn died(&self, worker: &str) -> String {
        format!("{}:died:{worker}", self.tag)
    }
}

/// A task id: `<client>.<seq>`.
pub(crate) fn task_id(client: &str, seq: u64) -> String {
    format!("{client}.{seq:x}")
}

/// The sequence number as the scripts take it: decimal, or `-1` when it is
/// beyond what a Redis bitmap can address.
pub(crate) fn bit_of(seq: u64) -> i64 {
    if seq < (1 << 32) {
        seq as i64
    } else {
        -1
    }
}

/// Splits a task id into its client and sequence number; `None` unless it
/// has exactly the shape [`task_id`] produces.
pub(crate) fn parse_task_id(task: &str) -> Option<(&str, u64)> {
    let (client, seq) = task.split_once('.')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if client.len() != 16 || !hex(client) || seq.len() > 16 || !hex(seq) {
        return None;
    }
    Some((client, u64::from_str_radix(seq, 16).ok()?))
}

mod conn;
mod items;
mod outcome;
mod reply;
mod scripts;
mod seal;

pub(crate) use conn::*;
pub(crate) use items::*;
pub(crate) use outcome::*;
pub(crate) use reply::*;
pub(crate) use scripts::*;
pub(crate) use seal::*;

#[cfg(test)]
mod tests;

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
//! | `{ns}:fin:<client>`  | bitmap | bit `seq` set when the task finished; lives as the client    |
//! | `{ns}:died:<worker>` | string | how a local worker died; deleted by `shutdown`; TTL 1 hour  |
//!
//! A task id is `<client>.<seq>`: 16 hex digits naming the client, a dot and
//! the client's sequence number in hex. The worker derives the client's
//! event stream from it, so every script knows its keys up front.
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

use crate::ship::{self, WireError};
use crate::Error;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::{Duration, Instant};

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

// ---------------------------------------------------------------------------
// Lua scripts. Each runs atomically; each declares every key it touches.

/// See `lua/submit.lua` (its keys and arguments are listed there). The
/// queue is the task's lane (`lanes.rs`); another lane than the default is
/// registered, and its group created, on first use. Idempotent: a task whose
/// record exists is not added again (a retried submit after a lost reply).
/// The record remembers its stream entry (`e`) and its run-time limit (`tl`).
pub(crate) const SUBMIT: &str = include_str!("lua/submit.lua");

/// KEYS: queue, task, client events, liveness, finished bitmap. ARGV: entry
/// id, group, worker, delivery token, task id, sequence bit, the worker's
/// cached liveness value of the client, `1` for an entry delivered before
/// (see `lua/start_fn.lua`). An entry other than the one `submit` added for the task
/// (a replayed entry) is dropped. Returns `{'gone'}`, `{'cancelled'}`,
/// `{'lost', owner, starts}` or `{'run', ...}` (see `lua/start_fn.lua`; its
/// last element is the run-time limit in ms). Retrying with the same
/// delivery token does not count a second delivery.
pub(crate) const START: &str = concat!(
    include_str!("lua/tidy_fn.lua"),
    "\n",
    include_str!("lua/start_fn.lua"),
    "\nreturn start(KEYS, ARGV)\n"
);

/// The `finish` of the tasks a worker ran, then the `claim` of the next
/// ones, in one script call (see `lua/finish_claim.lua`): a busy worker's
/// one call per batch.
pub(crate) const FINISH_CLAIM: &str = concat!(
    include_str!("lua/tidy_fn.lua"),
    "\n",
    include_str!("lua/start_fn.lua"),
    "\n",
    include_str!("lua/finish_fn.lua"),
    "\n",
    include_str!("lua/claim_fn.lua"),
    "\n",
    include_str!("lua/finish_claim.lua")
);

/// KEYS: the default lane, then (record, client events, client liveness)
/// per task. Marks quick tasks that an idle slot's blocking group read
/// delivered as started, their first attempt, and tells their clients (see
/// `lua/mark.lua`); the worker runs them from their entries.
pub(crate) const MARK: &str = include_str!("lua/mark.lua");

/// KEYS: queue, task, result, client events. ARGV: entry id, group, signed
/// envelope, TTL (s), task id, reason. A record that failed verification is
/// marked rejected (`st = x`, reason in `why`) and kept for the TTL; its
/// entry is acknowledged; the named client (if it exists) is told.
pub(crate) const REJECT: &str = concat!(
    include_str!("lua/tidy_fn.lua"),
    "\n",
    include_str!("lua/reject.lua")
);

/// KEYS: the default lane, then task keys. ARGV: TTL (s) for cancelled
/// records, the group, then per key the item index to cancel (`-1` for the
/// whole task), the task id and its entry id if the client knows it (a
/// quick task sent by `client/fresh.rs`; else ''). A pending task has the item marked; once
/// every item is cancelled the record is marked `c` and workers drop it (a
/// quick task's entry is deleted). A quick task the group delivered counts
/// as started (see `lua/cancel.lua`). Returns, per key, 2 if the whole task
/// is now cancelled, 1 if the item is, 0 if the task already started (or is
/// gone).
pub(crate) const CANCEL: &str = include_str!("lua/cancel.lua");

/// KEYS: client events, result keys. ARGV: the id of the last event read.
/// Deletes results the client has delivered (read from their events or with
/// `MGET`) and trims the events it has processed (whole stream nodes, which
/// walks no deleted entries, unlike an `XDEL` per event); sent with one
/// of the client's later `XREAD`s, which read only newer events (the next
/// one when a result key waits; a trim alone waits for 64 events or half a
/// second, since an approximate trim frees only whole nodes). Reading
/// and deleting are separate steps so that a reply lost to a dropped
/// connection never loses a result: the client reads again.
pub(crate) const ACK: &str = include_str!("lua/ack.lua");

/// KEYS: the client's finished bitmap, then pairs of (task, result) keys;
/// ARGV: each pair's bit. Returns per pair 1 if either key exists, 2 if
/// only the bit is set, 0 if neither (see `lua/probe.lua`). The client uses
/// it to notice tasks that vanished from Redis, and finished tasks whose
/// events it read past.
pub(crate) const PROBE: &str = include_str!("lua/probe.lua");

/// KEYS: queue, task. ARGV: entry id, group. Drops a task whose client is
/// gone (see `lua/drop.lua`).
pub(crate) const DROP: &str = concat!(
    include_str!("lua/tidy_fn.lua"),
    "\n",
    include_str!("lua/drop.lua")
);

/// See `lua/take.lua` (lanes, in `lanes.rs`).
pub(crate) const TAKE: &str = include_str!("lua/take.lua");

/// KEYS: the default lane. ARGV: the group, the newest entry a slot
/// acknowledged with plain finishes (see `plain.rs`). Trims what is done,
/// exactly (see `lua/tidy.lua`).
pub(crate) const TIDY: &str = concat!(
    include_str!("lua/tidy_fn.lua"),
    "\n",
    include_str!("lua/tidy.lua")
);

/// KEYS: per task, (client events, client finished-bitmap). ARGV: per
/// task, its bit. Clears the bits of tasks whose client's event stream is
/// gone, after plain finishes whose replies were lost (see `lua/unfinish.lua`).
pub(crate) const UNFINISH: &str = include_str!("lua/unfinish.lua");

/// The scripts, in a fixed order (see [`Scripts`]).
const ALL: [&str; 12] = [
    SUBMIT,
    START,
    REJECT,
    CANCEL,
    ACK,
    PROBE,
    DROP,
    TAKE,
    FINISH_CLAIM,
    MARK,
    TIDY,
    UNFINISH,
];

/// Which script to run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScriptName {
    Submit = 0,
    Start = 1,
    Reject = 2,
    Cancel = 3,
    Ack = 4,
    Probe = 5,
    Drop = 6,
    Take = 7,
    FinishClaim = 8,
    Mark = 9,
    Tidy = 10,
    Unfinish = 11,
}

/// The scripts with their SHA1s, for `EVALSHA`.
pub(crate) struct Scripts {
    scripts: Vec<redis::Script>,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            scripts: ALL.iter().map(|code| redis::Script::new(code)).collect(),
        }
    }

    /// An `EVALSHA` command for `which` with `keys`; add the arguments.
    pub(crate) fn call<K: AsRef<[u8]>>(&self, which: ScriptName, keys: &[K]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.scripts[which as usize].get_hash())
            .arg(keys.len());
        for k in keys {
            cmd.arg(k.as_ref());
        }
        cmd
    }

    fn load(&self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        for s in &self.scripts {
            s.load(con)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Signing.

type HmacSha256 = Hmac<Sha256>;

/// Length of a signature.
pub(crate) const SIG_LEN: usize = 32;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable_mac(),
    }
}

#[cold]
fn unreachable_mac() -> HmacSha256 {
    // A zero-length key is valid for HMAC too.
    HmacSha256::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| std::process::abort())
}

/// What a task record's signature covers.
pub(crate) struct TaskSeal<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) task: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) trampoline: u64,
    pub(crate) build_id: &'a str,
    pub(crate) items: u64,
    pub(crate) args: &'a [u8],
}

fn put_field(m: &mut HmacSha256, b: &[u8]) {
    m.update(&(b.len() as u64).to_le_bytes());
    m.update(b);
}

fn task_mac(secret: &[u8], t: &TaskSeal<'_>) -> HmacSha256 {
    let mut m = mac(secret);
    m.update(b"fanout-cluster-task-v2\0");
    put_field(&mut m, t.namespace.as_bytes());
    put_field(&mut m, t.task.as_bytes());
    put_field(&mut m, t.nonce.as_bytes());
    m.update(&t.trampoline.to_le_bytes());
    put_field(&mut m, t.build_id.as_bytes());
    m.update(&t.items.to_le_bytes());
    put_field(&mut m, t.args);
    m
}

/// The signature of a task record: HMAC-SHA256 under the cluster secret
/// over its namespace, id, nonce, trampoline, build id, item count and
/// arguments (so a record copied to another namespace sharing the secret
/// does not verify there).
pub(crate) fn sign_task(secret: &[u8], t: &TaskSeal<'_>) -> [u8; SIG_LEN] {
    task_mac(secret, t).finalize().into_bytes().into()
}

/// Checks a task record's signature in constant time.
pub(crate) fn verify_task(secret: &[u8], t: &TaskSeal<'_>, signature: &[u8]) -> bool {
    task_mac(secret, t).verify_slice(signature).is_ok()
}

fn live_mac(secret: &[u8], namespace: &str, client: &str, expires_ms: u64) -> HmacSha256 {
    let mut m = mac(secret);
    m.update(b"fanout-cluster-live-v1\0");
    put_field(&mut m, namespace.as_bytes());
    put_field(&mut m, client.as_bytes());
    m.update(&expires_ms.to_le_bytes());
    m
}

/// A client's liveness value: `<expires, ms of Redis time>:<hex signature>`.
pub(crate) fn live_value(secret: &[u8], namespace: &str, client: &str, expires_ms: u64) -> String {
    let sig = live_mac(secret, namespace, client, expires_ms)
        .finalize()
        .into_bytes();
    format!("{expires_ms}:{}", ship::hex(&sig))
}

fn push_mac(secret: &[u8], namespace: &str, client: &str, addr: &str, token: &str) -> HmacSha256 {
    let mut m = mac(secret);
    m.update(b"fanout-cluster-push-v1\0");
    put_field(&mut m, namespace.as_bytes());
    put_field(&mut m, client.as_bytes());
    put_field(&mut m, addr.as_bytes());
    put_field(&mut m, token.as_bytes());
    m
}

/// A client's push address value: `<addr> <token> <hex signature>`.
pub(crate) fn push_value(
    secret: &[u8],
    namespace: &str,
    client: &str,
    addr: &str,
    token: &str,
) -> String {
    let sig = push_mac(secret, namespace, client, addr, token)
        .finalize()
        .into_bytes();
    format!("{addr} {token} {}", ship::hex(&sig))
}

/// The address and token in a push value for `client` signed under
/// `secret`; `None` for anything else.
pub(crate) fn push_target(
    secret: &[u8],
    namespace: &str,
    client: &str,
    value: &[u8],
) -> Option<(std::net::SocketAddr, String)> {
    let mut parts = std::str::from_utf8(value).ok()?.split(' ');
    let (addr, token, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let sig = unhex(sig)?;
    push_mac(secret, namespace, client, addr, token)
        .verify_slice(&sig)
        .ok()?;
    Some((addr.parse().ok()?, token.to_string()))
}

/// True if `value` is a liveness value for `client` signed under `secret`
/// that has not expired at `now_ms` (Redis time). Anything else — missing,
/// malformed, forged, or an old value written back — means the client is gone.
pub(crate) fn client_alive(
    secret: &[u8],
    namespace: &str,
    client: &str,
    value: &[u8],
    now_ms: u64,
) -> bool {
    let Some((expires, sig)) = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.split_once(':'))
    else {
        return false;
    };
    let Ok(expires_ms) = expires.parse::<u64>() else {
        return false;
    };
    let Some(sig) = unhex(sig) else {
        return false;
    };
    expires_ms > now_ms
        && live_mac(secret, namespace, client, expires_ms)
            .verify_slice(&sig)
            .is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * SIG_LEN {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn result_mac(secret: &[u8], task: &str, body: &[u8]) -> HmacSha256 {
    let mut m = mac(secret);
    m.update(b"fanout-cluster-result-v1\0");
    m.update(&(task.len() as u64).to_le_bytes());
    m.update(task.as_bytes());
    m.update(body);
    m
}

// ---------------------------------------------------------------------------
// Arguments of a task: one or more items, each length-prefixed.

/// Appends one item's encoded arguments to a task's argument blob.
pub(crate) fn push_item(blob: &mut Vec<u8>, item: &[u8]) {
    blob.extend_from_slice(&(item.len() as u32).to_le_bytes());
    blob.extend_from_slice(item);
}

/// Splits an argument blob into `count` items; `None` if it is malformed.
pub(crate) fn split_items(mut blob: &[u8], count: usize) -> Option<Vec<&[u8]>> {
    let mut items = Vec::with_capacity(count.min(blob.len() / 4 + 1));
    for _ in 0..count {
        let len = u32::from_le_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        items.push(blob.get(4..4 + len)?);
        blob = &blob[4 + len..];
    }
    blob.is_empty().then_some(items)
}

// ---------------------------------------------------------------------------
// Result envelopes: signature, then a small binary body.

/// One item's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemOutcome {
    /// The encoded return value.
    Value(Vec<u8>),
    /// The call failed in the worker.
    Failed(WireError),
    /// The item was cancelled before the task started.
    Skipped,
}

/// What a worker reports for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The task ran; one outcome per item.
    Ran {
        worker: String,
        items: Vec<ItemOutcome>,
    },
    /// The worker refused the call (different build, bad trampoline, malformed record).
    Refused { worker: String, message: String },
    /// The task's workers kept dying.
    Lost { worker: String, status: String },
    /// The record's signature did not verify.
    Rejected { worker: String, reason: String },
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let b = self.0.get(4..4 + len)?;
        self.0 = &self.0[4 + len..];
        Some(b)
    }
    fn string(&mut self) -> Option<String> {
        Some(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

impl Outcome {
    /// The signed envelope for task `task`.
    pub(crate) fn seal(&self, secret: &[u8], task: &str) -> Vec<u8> {
        let mut body = vec![0u8; SIG_LEN];
        match self {
            Outcome::Ran { worker, items } => {
                body.push(0);
                put_bytes(&mut body, worker.as_bytes());
                body.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for item in items {
                    match item {
                        ItemOutcome::Value(v) => {
                            body.push(0);
                            put_bytes(&mut body, v);
                        }
                        ItemOutcome::Failed(e) => {
                            body.push(1);
                            let encoded = postcard::to_allocvec(e).unwrap_or_default();
                            put_bytes(&mut body, &encoded);
                        }
                        ItemOutcome::Skipped => body.push(2),
                    }
                }
            }
            Outcome::Refused { worker, message } => {
                body.push(1);
                put_bytes(&mut body, worker.as_bytes());
                put_bytes(&mut body, message.as_bytes());
            }
            Outcome::Lost { worker, status } => {
                body.push(2);
                put_bytes(&mut body, worker.as_bytes());
                put_bytes(&mut body, status.as_bytes());
            }
            Outcome::Rejected { worker, reason } => {
                body.push(3);
                put_bytes(&mut body, worker.as_bytes());
                put_bytes(&mut body, reason.as_bytes());
            }
        }
        let sig = result_mac(secret, task, &body[SIG_LEN..])
            .finalize()
            .into_bytes();
        body[..SIG_LEN].copy_from_slice(&sig);
        body
    }

    /// Makes the sealed envelope fit in `limit` bytes: the largest values
    /// are replaced, one by one, with a `Codec` error naming their size.
    /// Returns the envelope.
    pub(crate) fn seal_within(&mut self, secret: &[u8], task: &str, limit: u64) -> Vec<u8> {
        // Lengths inside the envelope are u32: never let one wrap.
        let limit = limit.min(u64::from(u32::MAX));
        loop {
            let sealed = self.seal(secret, task);
            if sealed.len() as u64 <= limit {
                return sealed;
            }
            let Outcome::Ran { items, .. } = self else {
                return sealed;
            };
            let largest = items
                .iter_mut()
                .filter_map(|i| match i {
                    ItemOutcome::Value(v) => Some((v.len(), i)),
                    _ => None,
                })
                .max_by_key(|(len, _)| *len);
            let Some((len, item)) = largest else {
                return sealed;
            };
            *item = ItemOutcome::Failed(WireError::Codec {
                type_name: "the call's result".into(),
                message: format!(
                    "the encoded result is {len} bytes ({} in all with the rest of the \
                     task), more than Redis accepts in one value (proto-max-bulk-len = \
                     {limit} bytes); return less, or store large data elsewhere",
                    sealed.len()
                ),
            });
        }
    }

    /// Verifies and decodes an envelope. Every byte here came from Redis, so
    /// nothing is trusted: a bad signature or a malformed body is an error.
    pub(crate) fn open(secret: &[u8], task: &str, envelope: &[u8]) -> Result<Outcome, Error> {
        if envelope.is_empty() {
            return Err(Error::Backend {
                message: format!(
                    "the result of task {task} vanished from Redis before the client read it \
                     (was the server restarted without persistence, or the key deleted?)"
                ),
            });
        }
        let (sig, body) = envelope.split_at(SIG_LEN.min(envelope.len()));
        if result_mac(secret, task, body).verify_slice(sig).is_err() {
            return Err(Error::Backend {
                message: format!(
                    "the result of task {task} is not signed with this cluster's secret; \
                     the workers use a different FANOUT_CLUSTER_SECRET, or something else \
                     wrote to the namespace"
                ),
            });
        }
        Self::decode_body(body).ok_or_else(|| Error::Backend {
            message: format!("the result envelope of task {task} is malformed"),
        })
    }

    pub(crate) fn decode_body(body: &[u8]) -> Option<Outcome> {
        let mut r = Reader(body);
        let kind = r.byte()?;
        let worker = r.string()?;
        let outcome = match kind {
            0 => {
                let n = u32::from_le_bytes(r.0.get(..4)?.try_into().ok()?) as usize;
                r.0 = &r.0[4..];
                let mut items = Vec::with_capacity(n.min(r.0.len()));
                for _ in 0..n {
                    items.push(match r.byte()? {
                        0 => ItemOutcome::Value(r.bytes()?.to_vec()),
                        1 => ItemOutcome::Failed(postcard::from_bytes(r.bytes()?).ok()?),
                        2 => ItemOutcome::Skipped,
                        _ => return None,
                    });
                }
                Outcome::Ran { worker, items }
            }
            1 => Outcome::Refused {
                worker,
                message: r.string()?,
            },
            2 => Outcome::Lost {
                worker,
                status: r.string()?,
            },
            3 => Outcome::Rejected {
                worker,
                reason: r.string()?,
            },
            _ => return None,
        };
        r.0.is_empty().then_some(outcome)
    }
}

/// The build id as stored in task records.
pub(crate) fn build_id_hex() -> String {
    ship::hex(ship::build_id())
}

// ---------------------------------------------------------------------------
// Redis replies.

/// The bytes of a string reply.
pub(crate) fn bytes(v: &redis::Value) -> Option<&[u8]> {
    match v {
        redis::Value::BulkString(b) => Some(b),
        redis::Value::SimpleString(s) => Some(s.as_bytes()),
        redis::Value::Okay => Some(b"OK"),
        _ => None,
    }
}

/// A string reply as text.
pub(crate) fn text(v: &redis::Value) -> Option<&str> {
    std::str::from_utf8(bytes(v)?).ok()
}

/// The elements of an array reply.
pub(crate) fn array(v: &redis::Value) -> Option<&[redis::Value]> {
    match v {
        redis::Value::Array(a) | redis::Value::Set(a) => Some(a),
        _ => None,
    }
}

/// An integer reply.
pub(crate) fn int(v: &redis::Value) -> Option<i64> {
    match v {
        redis::Value::Int(i) => Some(*i),
        _ => text(v)?.parse().ok(),
    }
}

/// One stream entry: its id and field/value pairs.
pub(crate) struct Entry<'a> {
    pub(crate) id: &'a str,
    pub(crate) fields: &'a [redis::Value],
}

impl<'a> Entry<'a> {
    /// The value of `name`, if present.
    pub(crate) fn field(&self, name: &str) -> Option<&'a [u8]> {
        self.fields
            .chunks(2)
            .find(|kv| kv.len() == 2 && bytes(&kv[0]) == Some(name.as_bytes()))
            .and_then(|kv| bytes(&kv[1]))
    }
}

/// The entries of a list of `[id, [field, value, ...]]` (as in `XRANGE`,
/// `XAUTOCLAIM`); a deleted entry (nil fields) comes with no fields.
pub(crate) fn entries(v: &redis::Value) -> Vec<Entry<'_>> {
    let Some(list) = array(v) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let e = array(e)?;
            let id = text(e.first()?)?;
            let fields = e.get(1).and_then(array).unwrap_or(&[]);
            Some(Entry { id, fields })
        })
        .collect()
}

/// The entries of an `XREAD`/`XREADGROUP` reply for a single stream (nil on timeout).
pub(crate) fn read_reply(v: &redis::Value) -> Vec<Entry<'_>> {
    match v {
        redis::Value::Array(streams) => streams
            .first()
            .and_then(array)
            .and_then(|s| s.get(1))
            .map(entries)
            .unwrap_or_default(),
        redis::Value::Map(streams) => streams
            .first()
            .map(|(_, list)| entries(list))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// Connections.

/// How a Redis error should be handled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Connection-level or transient: reconnect, back off, try again.
    Retry,
    /// The server lost its scripts (restart, `SCRIPT FLUSH`): load them, try again.
    NoScript,
    /// The consumer group is missing (server restarted without persistence).
    NoGroup,
    /// Anything else (auth, permissions, wrong type): give up.
    Fatal,
}

pub(crate) fn classify(e: &redis::RedisError) -> Failure {
    use redis::{ErrorKind, RetryMethod, ServerErrorKind};
    let text = e.to_string();
    if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) || text.contains("NOSCRIPT") {
        return Failure::NoScript;
    }
    if e.code() == Some("NOGROUP") || text.contains("NOGROUP") {
        return Failure::NoGroup;
    }
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || text.contains("LOADING")
        || matches!(
            e.retry_method(),
            RetryMethod::Reconnect
                | RetryMethod::ReconnectFromInitialConnections
                | RetryMethod::WaitAndRetry
        )
    {
        return Failure::Retry;
    }
    Failure::Fatal
}

/// A URL with its password blanked, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Makes the stream `key` exist, empty (an `XADD` trimmed to nothing, so
/// it holds no entry): how a client makes its event streams, which workers
/// add to only while they exist (`NOMKSTREAM`).
pub(crate) fn empty_stream(key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key).arg("MAXLEN").arg(0).arg("*").arg("k").arg("i");
    cmd
}

/// The error for a Redis failure.
pub(crate) fn backend(what: &str, url: &str, e: &redis::RedisError) -> Error {
    Error::Backend {
        message: format!("{what} at {}: {e}", redact(url)),
    }
}

/// One connection to Redis that reconnects on demand, loads the scripts on
/// every new connection and makes sure the stream and group exist.
pub(crate) struct Conn {
    client: redis::Client,
    url: String,
    queue: String,
    con: Option<redis::Connection>,
    read_timeout: Duration,
    pub(crate) scripts: std::sync::Arc<Scripts>,
}

/// How long connecting may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Conn {
    pub(crate) fn new(
        url: &str,
        keys: &Keys,
        scripts: std::sync::Arc<Scripts>,
        read_timeout: Duration,
    ) -> Result<Conn, Error> {
        let client = redis::Client::open(url).map_err(|e| Error::Backend {
            message: format!("the Redis URL {} is not usable: {e}", redact(url)),
        })?;
        Ok(Conn {
            client,
            url: url.to_string(),
            queue: keys.queue(),
            con: None,
            read_timeout,
            scripts,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The live connection, connecting (and preparing the server) if needed.
    pub(crate) fn get(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.con.is_none() {
            let mut con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
            con.set_read_timeout(Some(self.read_timeout))?;
            con.set_write_timeout(Some(self.read_timeout))?;
            self.scripts.load(&mut con)?;
            ensure_group(&mut con, &self.queue)?;
            self.con = Some(con);
        }
        match self.con.as_mut() {
            Some(c) => Ok(c),
            None => Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::NotConnected,
            ))),
        }
    }

    /// Forgets the connection (the next call reconnects).
    pub(crate) fn reset(&mut self) {
        self.con = None;
    }

    /// Runs `cmd` once; a failure drops the connection unless it is a plain
    /// server error.
    pub(crate) fn query(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        let out = self.get().and_then(|c| cmd.query::<redis::Value>(c));
        self.after(out)
    }

    /// Runs a pipeline once (see [`Conn::query`]).
    pub(crate) fn query_pipe(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        let out = self.get().and_then(|c| pipe.query::<Vec<redis::Value>>(c));
        self.after(out)
    }

    /// Runs the `n` commands of `pipe` once, returning each command's reply
    /// as its own result (ignored commands included), so that one command's
    /// server error (such as `NOSCRIPT`) loses no other's reply. An error
    /// reading or writing drops the connection and fails the whole call.
    pub(crate) fn query_pipe_each(
        &mut self,
        pipe: &redis::Pipeline,
        n: usize,
    ) -> redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> {
        let packed = pipe.get_packed_pipeline();
        let out = self.get().and_then(|c| {
            c.send_packed_command(&packed)?;
            (0..n)
                .map(|_| c.recv_response().map(|v| v.extract_error()))
                .collect::<redis::RedisResult<Vec<_>>>()
        });
        let out = self.after(out)?;
        for e in out.iter().filter_map(|r| r.as_ref().err()) {
            if classify(e) != Failure::Fatal {
                // NOSCRIPT or NOGROUP: the next call reconnects and repairs.
                self.reset();
            }
        }
        Ok(out)
    }

    fn after<T>(&mut self, out: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &out {
            match classify(e) {
                Failure::Retry | Failure::NoScript | Failure::NoGroup => self.reset(),
                Failure::Fatal => {}
            }
        }
        out
    }

    /// Runs `cmd`, retrying transient failures with backoff until `deadline`
    /// (forever when `None`) or until `give_up()` says so.
    pub(crate) fn query_retry(
        &mut self,
        cmd: &redis::Cmd,
        deadline: Option<Instant>,
        give_up: &dyn Fn() -> bool,
    ) -> redis::RedisResult<redis::Value> {
        let mut backoff = Backoff::new();
        loop {
            match self.query(cmd) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if classify(&e) == Failure::Fatal
                        || deadline.is_some_and(|d| Instant::now() >= d)
                        || give_up()
                    {
                        return Err(e);
                    }
                    log::debug!("redis at {}: {e}; retrying", redact(&self.url));
                    backoff.sleep(deadline);
                }
            }
        }
    }
}

/// The (major, minor) version in an `INFO server` reply ((0, 0) when it
/// names none).
pub(crate) fn server_version(info: &str) -> (u32, u32) {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Redis's default limit on one value (`proto-max-bulk-len`).
pub(crate) const DEFAULT_BULK_LIMIT: u64 = 512 << 20;

/// The server's limit on one value (`CONFIG GET proto-max-bulk-len`); the
/// default when the server does not say (`CONFIG` renamed or forbidden).
pub(crate) fn bulk_limit(conn: &mut Conn) -> u64 {
    conn.query(redis::cmd("CONFIG").arg("GET").arg("proto-max-bulk-len"))
        .ok()
        .and_then(|v| match &v {
            redis::Value::Map(kv) => kv.first().and_then(|(_, v)| int(v)),
            other => array(other).and_then(|a| a.get(1)).and_then(int),
        })
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_BULK_LIMIT)
}

/// Creates the task stream and its consumer group if missing.
pub(crate) fn ensure_group(con: &mut redis::Connection, queue: &str) -> redis::RedisResult<()> {
    let out = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(queue)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query::<redis::Value>(con);
    match out {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Exponential backoff from 5 ms to 500 ms.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(5),
        }
    }

    /// Sleeps for the next interval, never past `deadline`.
    pub(crate) fn sleep(&mut self, deadline: Option<Instant>) {
        let mut d = self.next;
        if let Some(deadline) = deadline {
            d = d.min(deadline.saturating_duration_since(Instant::now()));
        }
        std::thread::sleep(d);
        self.next = (self.next * 2).min(Duration::from_millis(500));
    }
}

/// Random bytes from the operating system's random source (`getrandom`);
/// an error if it fails, never a guessable fallback (these bytes become
/// secrets and the client ids that name keys).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| Error::Broken {
        reason: format!("the operating system's random source failed: {e}"),
    })?;
    Ok(buf)
}

/// This host's name.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes a NUL-terminated name of at most `len` bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip_and_reject_junk() {
        let id = task_id("0123456789abcdef", 0x2a);
        assert_eq!(parse_task_id(&id), Some(("0123456789abcdef", 42)));
        for bad in [
            "",
            "x.1",
            "0123456789abcdef.",
            "0123456789abcdef.zz",
            "{a}.1",
        ] {
            assert_eq!(parse_task_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn items_split_back() {
        let mut blob = Vec::new();
        push_item(&mut blob, b"abc");
        push_item(&mut blob, b"");
        assert_eq!(
            split_items(&blob, 2).unwrap(),
            vec![b"abc".as_slice(), b"".as_slice()]
        );
        assert!(split_items(&blob, 1).is_none());
        assert!(split_items(&blob, 3).is_none());
        assert!(split_items(&blob[..5], 1).is_none());
    }

    #[test]
    fn signatures_bind_every_field() {
        let base = TaskSeal {
            namespace: "ns",
            task: "t",
            nonce: "n",
            trampoline: 1,
            build_id: "b",
            items: 1,
            args: b"a",
        };
        let s = sign_task(b"k", &base);
        assert!(verify_task(b"k", &base, &s));
        assert!(!verify_task(b"K", &base, &s));
        assert!(!verify_task(b"k", &base, &s[..31]));
        let variants = [
            TaskSeal {
                namespace: "other",
                ..base
            },
            TaskSeal { task: "u", ..base },
            TaskSeal { nonce: "m", ..base },
            TaskSeal {
                trampoline: 2,
                ..base
            },
            TaskSeal {
                build_id: "c",
                ..base
            },
            TaskSeal { items: 2, ..base },
            TaskSeal { args: b"b", ..base },
        ];
        for v in &variants {
            assert!(!verify_task(b"k", v, &s));
        }
    }

    #[test]
    fn push_values_are_signed_and_bind_their_client() {
        let v = push_value(b"k", "ns", "c", "127.0.0.1:5", "tok");
        let (addr, token) = push_target(b"k", "ns", "c", v.as_bytes()).unwrap();
        assert_eq!(addr.to_string(), "127.0.0.1:5");
        assert_eq!(token, "tok");
        assert!(push_target(b"K", "ns", "c", v.as_bytes()).is_none());
        assert!(push_target(b"k", "ns", "d", v.as_bytes()).is_none());
        let forged = v.replace("127.0.0.1:5", "127.0.0.1:6");
        assert!(push_target(b"k", "ns", "c", forged.as_bytes()).is_none());
        assert!(push_target(b"k", "ns", "c", b"junk").is_none());
        assert!(push_target(b"k", "ns", "c", b"").is_none());
    }

    #[test]
    fn liveness_values_expire_and_bind_their_client() {
        let v = live_value(b"k", "ns", "c", 1000);
        assert!(client_alive(b"k", "ns", "c", v.as_bytes(), 999));
        assert!(!client_alive(b"k", "ns", "c", v.as_bytes(), 1000));
        assert!(!client_alive(b"K", "ns", "c", v.as_bytes(), 0));
        assert!(!client_alive(b"k", "ns2", "c", v.as_bytes(), 0));
        assert!(!client_alive(b"k", "ns", "d", v.as_bytes(), 0));
        let forged = v.replacen("1000", "9000", 1);
        assert!(!client_alive(b"k", "ns", "c", forged.as_bytes(), 0));
        for junk in ["", ":", "x:y", "5:zz", "1000"] {
            assert!(!client_alive(b"k", "ns", "c", junk.as_bytes(), 0), "{junk}");
        }
    }

    #[test]
    fn oversized_values_are_replaced_until_the_envelope_fits() {
        let mut outcome = Outcome::Ran {
            worker: "w".into(),
            items: vec![
                ItemOutcome::Value(vec![1; 10]),
                ItemOutcome::Value(vec![2; 2000]),
                ItemOutcome::Value(vec![3; 5]),
            ],
        };
        let sealed = outcome.seal_within(b"k", "t", 500);
        assert!(sealed.len() <= 500);
        let Ok(Outcome::Ran { items, .. }) = Outcome::open(b"k", "t", &sealed) else {
            panic!("does not open");
        };
        assert_eq!(items[0], ItemOutcome::Value(vec![1; 10]));
        assert!(
            matches!(&items[1], ItemOutcome::Failed(WireError::Codec { message, .. })
            if message.contains("2000 bytes") && message.contains("proto-max-bulk-len"))
        );
        assert_eq!(items[2], ItemOutcome::Value(vec![3; 5]));
    }

    #[test]
    fn envelopes_round_trip_and_refuse_tampering() {
        let outcome = Outcome::Ran {
            worker: "cluster worker h:1".into(),
            items: vec![
                ItemOutcome::Value(vec![1, 2, 3]),
                ItemOutcome::Failed(WireError::Panicked {
                    message: "boom".into(),
                    location: None,
                    backtrace: None,
                }),
                ItemOutcome::Skipped,
            ],
        };
        let sealed = outcome.seal(b"secret", "task");
        assert_eq!(Outcome::open(b"secret", "task", &sealed), Ok(outcome));
        assert!(Outcome::open(b"other", "task", &sealed).is_err());
        assert!(Outcome::open(b"secret", "task2", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(Outcome::open(b"secret", "task", &tampered).is_err());
        for cut in 0..sealed.len() {
            assert!(Outcome::open(b"secret", "task", &sealed[..cut]).is_err());
        }
        let lost = Outcome::Lost {
            worker: "w".into(),
            status: "s".into(),
        };
        assert_eq!(Outcome::open(b"k", "t", &lost.seal(b"k", "t")), Ok(lost));
    }

    #[test]
    fn random_bytes_come_from_the_os() {
        let a = random_bytes::<32>().unwrap();
        let b = random_bytes::<32>().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:pw@host:1/0"),
            "redis://user:***@host:1/0"
        );
        assert_eq!(redact("redis://host:1/0"), "redis://host:1/0");
    }
}

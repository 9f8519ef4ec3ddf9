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
//! | `{ns}:t:<task>`      | hash   | from submit until a worker finishes (or skips) the task     |
//! | `{ns}:r:<task>`      | string | from finish until the client has read it (a value over 64 KiB: until no future, `Arg` or running dependent can ask for it; also `put` values); TTL [`RESULT_TTL`] |
//! | `{ns}:ev:<client>`   | stream | while the client runs; deleted by `shutdown`                |
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
//! first delivery, tells the client (`k=s` on its event stream). The worker
//! checks the record's signature, build id and trampoline, runs the call and
//! runs `finish`, which acknowledges and deletes the stream entry, stores the
//! signed result envelope with `SET NX` (exactly once, even when a redelivered
//! copy finishes too), deletes the record and tells the client (`k=d`). The
//! client reads the result (`MGET`), completes the future, then `ack` deletes
//! the result and the events. A worker whose lease lapses
//! (no heartbeat) loses its entries to another worker's `XAUTOCLAIM`; a task
//! started more than its `m` times resolves to `WorkerLost`. `cancel` marks a
//! pending record cancelled (`c`); `start` then drops it without running it.

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

    /// How a local worker died (written by the supervisor).
    pub(crate) fn died(&self, worker: &str) -> String {
        format!("{}:died:{worker}", self.tag)
    }
}

/// A task id: `<client>.<seq>`.
pub(crate) fn task_id(client: &str, seq: u64) -> String {
    format!("{client}.{seq:x}")
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

/// KEYS: queue, task keys. ARGV: max deliveries, then per task: id,
/// trampoline, build id, args, signature, item count. Idempotent: a task whose
/// record exists is not added again (a retried submit after a lost reply).
/// The record remembers its stream entry (`e`).
pub(crate) const SUBMIT: &str = r#"
local per = 6
local added = 0
for i = 2, #KEYS do
  local o = 1 + (i - 2) * per
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local entry = redis.call('XADD', KEYS[1], '*', 't', ARGV[o + 1])
    redis.call('HSET', KEYS[i], 'f', ARGV[o + 2], 'b', ARGV[o + 3], 'a', ARGV[o + 4],
      's', ARGV[o + 5], 'n', ARGV[o + 6], 'm', ARGV[1], 'st', 'p', 'at', '0', 'e', entry)
    added = added + 1
  end
end
return added
"#;

/// KEYS: queue, task, client events. ARGV: entry id, group, worker, delivery
/// token, task id. An entry other than the one `submit` added for the task
/// (a replayed entry) is dropped. Returns `{'gone'}`, `{'cancelled'}`,
/// `{'lost', owner, starts}` or `{'run', trampoline, build, args, signature,
/// items, cancelled indices}`. Retrying with the same delivery token does not
/// count a second delivery.
pub(crate) const START: &str = r#"
local st = redis.call('HGET', KEYS[2], 'st')
local entry = redis.call('HGET', KEYS[2], 'e')
if (not st) or st == 'x' or (entry and entry ~= ARGV[1]) then
  -- finished, rejected, never existed, or a second entry naming the task
  redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
  redis.call('XDEL', KEYS[1], ARGV[1])
  return {'gone'}
end
if st == 'c' then
  redis.call('DEL', KEYS[2])
  redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
  redis.call('XDEL', KEYS[1], ARGV[1])
  return {'cancelled'}
end
local at = tonumber(redis.call('HGET', KEYS[2], 'at')) or 0
if redis.call('HGET', KEYS[2], 'd') ~= ARGV[4] then
  at = at + 1
  redis.call('HSET', KEYS[2], 'at', tostring(at))
end
local m = tonumber(redis.call('HGET', KEYS[2], 'm')) or 1
if at > m then
  return {'lost', redis.call('HGET', KEYS[2], 'o') or '', tostring(at - 1)}
end
redis.call('HSET', KEYS[2], 'st', 'r', 'o', ARGV[3], 'd', ARGV[4])
if at == 1 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('XADD', KEYS[3], '*', 'k', 's', 't', ARGV[5])
end
local r = redis.call('HMGET', KEYS[2], 'f', 'b', 'a', 's', 'n', 'x')
local out = {'run'}
for i = 1, 5 do out[i + 1] = r[i] or '' end
local cancelled = {}
if (tonumber(r[6]) or 0) > 0 then
  for i = 0, (tonumber(r[5]) or 0) - 1 do
    if redis.call('HEXISTS', KEYS[2], 'x' .. i) == 1 then cancelled[#cancelled + 1] = tostring(i) end
  end
end
out[7] = table.concat(cancelled, ',')
return out
"#;

/// KEYS: queue, task, result, client events. ARGV: entry id, group, signed
/// envelope, result TTL (s), task id, `1` if the client should leave the
/// result in Redis until asked (a large value). Acknowledges the entry; stores the
/// result and tells the client only if the record still exists (so a
/// redelivered copy finishing second is dropped) and the client is still
/// there. `SET NX` makes a second result for the same task impossible even
/// if the record were written again. Returns 1 if this call delivered.
pub(crate) const FINISH: &str = r#"
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
local st = redis.call('HGET', KEYS[2], 'st')
if (not st) or st == 'x' or st == 'c' then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'EX', ARGV[4]) then return 0 end
redis.call('XADD', KEYS[4], '*', 'k', 'd', 't', ARGV[5], 'l', ARGV[6] or '0')
return 1
"#;

/// KEYS: queue, task, result, client events. ARGV: entry id, group, signed
/// envelope, TTL (s), task id, reason. A record that failed verification is
/// marked rejected (`st = x`, reason in `why`) and kept for the TTL; its
/// entry is acknowledged; the named client (if it exists) is told.
pub(crate) const REJECT: &str = r#"
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'st', 'x', 'why', ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'EX', ARGV[4]) then return 0 end
redis.call('XADD', KEYS[4], '*', 'k', 'd', 't', ARGV[5])
return 1
"#;

/// KEYS: task keys. ARGV: TTL (s) for cancelled records, then per key the
/// item index to cancel (`-1` for the whole task). A pending task has the
/// item marked; once every item is cancelled the record is marked `c` and
/// workers drop it. Returns, per key, 2 if the whole task is now cancelled,
/// 1 if the item is, 0 if the task already started (or is gone).
pub(crate) const CANCEL: &str = r#"
local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local idx = ARGV[i + 1]
  local st = redis.call('HGET', k, 'st')
  if st == 'c' then
    out[i] = 2
  elseif st == 'p' then
    local whole = (idx == '-1')
    if not whole then
      if redis.call('HSETNX', k, 'x' .. idx, '1') == 1 then
        redis.call('HINCRBY', k, 'x', 1)
      end
      whole = (tonumber(redis.call('HGET', k, 'x')) or 0) >= (tonumber(redis.call('HGET', k, 'n')) or 1)
    end
    if whole then
      redis.call('HSET', k, 'st', 'c')
      redis.call('EXPIRE', k, ARGV[1])
      out[i] = 2
    else
      out[i] = 1
    end
  else
    out[i] = 0
  end
end
return out
"#;

/// KEYS: client events, result keys. ARGV: event ids. Deletes results the
/// client has delivered (it read them with `MGET`) and the events it has
/// processed. Reading and deleting are separate steps so that a reply lost
/// to a dropped connection never loses a result: the client reads again.
pub(crate) const ACK: &str = r#"
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
if #ARGV > 0 then redis.call('XDEL', KEYS[1], unpack(ARGV)) end
return 1
"#;

/// KEYS: pairs of (task, result) keys. Returns per pair 1 if either exists.
/// The client uses it to notice tasks that vanished from Redis.
pub(crate) const PROBE: &str = r#"
local out = {}
for i = 1, #KEYS, 2 do
  local n = redis.call('EXISTS', KEYS[i])
  if n == 0 and KEYS[i + 1] then n = redis.call('EXISTS', KEYS[i + 1]) end
  out[#out + 1] = n
end
return out
"#;

/// The scripts, in a fixed order (see [`Scripts`]).
const ALL: [&str; 7] = [SUBMIT, START, FINISH, REJECT, CANCEL, ACK, PROBE];

/// Which script to run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScriptName {
    Submit = 0,
    Start = 1,
    Finish = 2,
    Reject = 3,
    Cancel = 4,
    Ack = 5,
    Probe = 6,
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

fn task_mac(
    secret: &[u8],
    task: &str,
    trampoline: u64,
    build_id: &str,
    items: u64,
    args: &[u8],
) -> HmacSha256 {
    let mut m = mac(secret);
    m.update(b"fanout-cluster-task-v1\0");
    m.update(&(task.len() as u64).to_le_bytes());
    m.update(task.as_bytes());
    m.update(&trampoline.to_le_bytes());
    m.update(&(build_id.len() as u64).to_le_bytes());
    m.update(build_id.as_bytes());
    m.update(&items.to_le_bytes());
    m.update(&(args.len() as u64).to_le_bytes());
    m.update(args);
    m
}

/// The signature of a task record: HMAC-SHA256 over its id, trampoline,
/// build id, item count and arguments under the cluster secret.
pub(crate) fn sign_task(
    secret: &[u8],
    task: &str,
    trampoline: u64,
    build_id: &str,
    items: u64,
    args: &[u8],
) -> [u8; SIG_LEN] {
    task_mac(secret, task, trampoline, build_id, items, args)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks a task record's signature in constant time.
pub(crate) fn verify_task(
    secret: &[u8],
    task: &str,
    trampoline: u64,
    build_id: &str,
    items: u64,
    args: &[u8],
    signature: &[u8],
) -> bool {
    task_mac(secret, task, trampoline, build_id, items, args)
        .verify_slice(signature)
        .is_ok()
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

    fn decode_body(body: &[u8]) -> Option<Outcome> {
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

/// Random bytes from the kernel.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: getrandom writes at most `N - filled` bytes into our buffer.
        let n = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr() as *mut libc::c_void,
                N - filled,
                0,
            )
        };
        if n <= 0 {
            // Fall back to something unique enough for ids (never for secrets:
            // `getrandom` does not fail on Linux ≥ 3.17 once the pool is seeded).
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64
                ^ u64::from(std::process::id()).rotate_left(32);
            for (i, b) in buf[filled..].iter_mut().enumerate() {
                *b = (t.rotate_left((i * 8) as u32 % 64) & 0xff) as u8;
            }
            break;
        }
        filled += n as usize;
    }
    buf
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
        let s = sign_task(b"k", "t", 1, "b", 1, b"a");
        assert!(verify_task(b"k", "t", 1, "b", 1, b"a", &s));
        assert!(!verify_task(b"K", "t", 1, "b", 1, b"a", &s));
        assert!(!verify_task(b"k", "u", 1, "b", 1, b"a", &s));
        assert!(!verify_task(b"k", "t", 2, "b", 1, b"a", &s));
        assert!(!verify_task(b"k", "t", 1, "c", 1, b"a", &s));
        assert!(!verify_task(b"k", "t", 1, "b", 2, b"a", &s));
        assert!(!verify_task(b"k", "t", 1, "b", 1, b"b", &s));
        assert!(!verify_task(b"k", "t", 1, "b", 1, b"a", &s[..31]));
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
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:pw@host:1/0"),
            "redis://user:***@host:1/0"
        );
        assert_eq!(redact("redis://host:1/0"), "redis://host:1/0");
    }
}

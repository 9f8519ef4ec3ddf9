//! Lua scripts. Each runs atomically; each declares every key it touches.

/// See `lua/submit.lua` (its keys and arguments are listed there). The
/// queue is the task's lane (`lanes.rs`); another lane than the default is
/// registered, and its group created, on first use. Idempotent: a task whose
/// record exists is not added again (a retried submit after a lost reply).
/// The record remembers its stream entry (`e`) and its run-time limit (`tl`).
pub(crate) const SUBMIT: &str = include_str!("../lua/submit.lua");

/// KEYS: queue, task, client events, liveness, finished bitmap. ARGV: entry
/// id, group, worker, delivery token, task id, sequence bit, the worker's
/// cached liveness value of the client, `1` for an entry delivered before
/// (see `lua/start_fn.lua`). An entry other than the one `submit` added for the task
/// (a replayed entry) is dropped. Returns `{'gone'}`, `{'cancelled'}`,
/// `{'lost', owner, starts}` or `{'run', ...}` (see `lua/start_fn.lua`; its
/// last element is the run-time limit in ms). Retrying with the same
/// delivery token does not count a second delivery.
pub(crate) const START: &str = concat!(
    include_str!("../lua/tidy_fn.lua"),
    "\n",
    include_str!("../lua/start_fn.lua"),
    "\nreturn start(KEYS, ARGV)\n"
);

/// The `finish` of the tasks a worker ran, then the `claim` of the next
/// ones, in one script call (see `lua/finish_claim.lua`): a busy worker's
/// one call per batch.
pub(crate) const FINISH_CLAIM: &str = concat!(
    include_str!("../lua/tidy_fn.lua"),
    "\n",
    include_str!("../lua/start_fn.lua"),
    "\n",
    include_str!("../lua/finish_fn.lua"),
    "\n",
    include_str!("../lua/claim_fn.lua"),
    "\n",
    include_str!("../lua/finish_claim.lua")
);

/// KEYS: the default lane, then (record, client events, client liveness)
/// per task. Marks quick tasks that an idle slot's blocking group read
/// delivered as started, their first attempt, and tells their clients (see
/// `lua/mark.lua`); the worker runs them from their entries.
pub(crate) const MARK: &str = include_str!("../lua/mark.lua");

/// KEYS: queue, task, result, client events. ARGV: entry id, group, signed
/// envelope, TTL (s), task id, reason. A record that failed verification is
/// marked rejected (`st = x`, reason in `why`) and kept for the TTL; its
/// entry is acknowledged; the named client (if it exists) is told.
pub(crate) const REJECT: &str = concat!(
    include_str!("../lua/tidy_fn.lua"),
    "\n",
    include_str!("../lua/reject.lua")
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
pub(crate) const CANCEL: &str = include_str!("../lua/cancel.lua");

/// KEYS: client events, result keys. ARGV: the id of the last event read.
/// Deletes results the client has delivered (read from their events or with
/// `MGET`) and trims the events it has processed (whole stream nodes, which
/// walks no deleted entries, unlike an `XDEL` per event); sent with one
/// of the client's later `XREAD`s, which read only newer events (the next
/// one when a result key waits; a trim alone waits for 64 events or half a
/// second, since an approximate trim frees only whole nodes). Reading
/// and deleting are separate steps so that a reply lost to a dropped
/// connection never loses a result: the client reads again.
pub(crate) const ACK: &str = include_str!("../lua/ack.lua");

/// KEYS: the client's finished bitmap, then pairs of (task, result) keys;
/// ARGV: each pair's bit. Returns per pair 1 if either key exists, 2 if
/// only the bit is set, 0 if neither (see `lua/probe.lua`). The client uses
/// it to notice tasks that vanished from Redis, and finished tasks whose
/// events it read past.
pub(crate) const PROBE: &str = include_str!("../lua/probe.lua");

/// KEYS: queue, task. ARGV: entry id, group. Drops a task whose client is
/// gone (see `lua/drop.lua`).
pub(crate) const DROP: &str = concat!(
    include_str!("../lua/tidy_fn.lua"),
    "\n",
    include_str!("../lua/drop.lua")
);

/// See `lua/take.lua` (lanes, in `lanes.rs`).
pub(crate) const TAKE: &str = include_str!("../lua/take.lua");

/// KEYS: the default lane. ARGV: the group, the newest entry a slot
/// acknowledged with plain finishes (see `plain.rs`). Trims what is done,
/// exactly (see `lua/tidy.lua`).
pub(crate) const TIDY: &str = concat!(
    include_str!("../lua/tidy_fn.lua"),
    "\n",
    include_str!("../lua/tidy.lua")
);

/// KEYS: per task, (client events, client finished-bitmap). ARGV: per
/// task, its bit. Clears the bits of tasks whose client's event stream is
/// gone, after plain finishes whose replies were lost (see `lua/unfinish.lua`).
pub(crate) const UNFINISH: &str = include_str!("../lua/unfinish.lua");

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

    pub(super) fn load(&self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        for s in &self.scripts {
            s.load(con)?;
        }
        Ok(())
    }
}

//! A first submission of quick tasks as one transaction of plain commands.
//!
//! A `submit` script call costs Redis about three times as much when Redis
//! sleeps between calls, as it does on a round trip, as in a hot loop, and
//! a `MULTI` of the same writes costs about what the script does hot
//! (BENCHMARKS.md, eighth round). So a first attempt at sending tasks to the
//! default lane, each small enough to be quick (see `lua/submit.lua`), goes
//! as `MULTI`, `SET` of the liveness key (`NX`), `EXISTS` of the event
//! stream, an `XADD` of each task's entry and an `HSET` of its record,
//! `EXEC`: the same entry and record the script writes, all or nothing.
//!
//! What the script does that a transaction cannot:
//! * **Record the entry id in the record** (`e`): `XADD`'s id is not known
//!   inside the transaction. The client keeps it instead (`Inflight::entry`)
//!   and passes it to `cancel`, the only script that needs a quick task's
//!   entry (to delete it, or to ask the group whether it was delivered). A
//!   task whose reply was lost is sent again by the script, which finds its
//!   record and adds nothing, so its entry stays unknown: `cancel` then
//!   counts it as started, as it counts a delivered one.
//! * **Repair a lost event stream** before a worker can see the tasks: the
//!   reply says whether the stream was there, and when it was not (a
//!   server restarted without persistence) a `submit` call without tasks
//!   makes it at once. A worker that finished one of these tasks in between
//!   found no client and dropped its result; the event loop's probe sends
//!   such a task again, as it sends every task such a restart lost.
//! * Check for records already there: only a first attempt comes here.

use super::*;

/// The most argument bytes a quick task carries in its entry (as
/// `lua/submit.lua` decides for the tasks it sends).
pub(super) const QUICK_ARGS: usize = 8192;

impl Shared {
    /// True when `batch` may go by [`Shared::send_fresh`]: a first attempt
    /// (`fresh`), to the default lane, with every task quick.
    pub(super) fn may_send_fresh(batch: &[Outgoing], fresh: bool, default_lane: bool) -> bool {
        fresh
            && default_lane
            && batch
                .iter()
                .all(|o| o.lane.1.is_empty() && o.args.len() <= QUICK_ARGS)
    }

    /// Sends `batch` (see [`Shared::may_send_fresh`]) as one transaction,
    /// with `max` deliveries per task. Returns each task's entry id, in
    /// order. A failure of any command in it fails the whole call (as a
    /// script error would).
    pub(super) fn send_fresh(
        &self,
        conn: &mut Conn,
        batch: &[Outgoing],
        max: &str,
    ) -> redis::RedisResult<Vec<String>> {
        let queue = self.cfg.keys.queue();
        let events = self.cfg.keys.events(&self.client_id);
        let ttl = self.cfg.client_ttl.as_millis().max(1) as u64;
        let live = lock(&self.live).clone();
        let mut pipe = redis::pipe();
        pipe.cmd("MULTI")
            .cmd("SET")
            .arg(self.cfg.keys.live(&self.client_id))
            .arg(&live)
            .arg("PX")
            .arg(ttl)
            .arg("NX")
            .cmd("EXISTS")
            .arg(&events);
        for o in batch {
            let mut xadd = redis::cmd("XADD");
            xadd.arg(&queue)
                .arg("*")
                .arg("t")
                .arg(&o.task)
                .arg("q")
                .arg("1");
            self.call_fields(&mut xadd, o);
            xadd.arg("tl").arg(o.limit_ms);
            pipe.add_command(xadd);
            let mut hset = redis::cmd("HSET");
            hset.arg(self.cfg.keys.task(&o.task));
            self.call_fields(&mut hset, o);
            hset.arg("m")
                .arg(max)
                .arg("st")
                .arg("p")
                .arg("at")
                .arg("0")
                .arg("tl")
                .arg(o.limit_ms)
                .arg("q")
                .arg("1");
            pipe.add_command(hset);
        }
        pipe.cmd("EXEC");
        let n = 4 + 2 * batch.len();
        let mut replies = conn.query_pipe_each(&pipe, n)?;
        // A command refused while queueing makes EXEC fail (EXECABORT).
        let exec = replies
            .pop()
            .unwrap_or_else(|| Err(malformed("no reply to EXEC")))?;
        let items = match exec.extract_error()? {
            redis::Value::Array(items) if items.len() == 2 + 2 * batch.len() => items,
            other => return Err(malformed(&format!("EXEC replied {other:?}"))),
        };
        let mut ids = Vec::with_capacity(batch.len());
        for pair in items[2..].chunks(2) {
            match protocol::text(&pair[0]) {
                Some(id) => ids.push(id.to_string()),
                None => return Err(malformed("XADD replied no entry id")),
            }
        }
        if protocol::int(&items[1]) == Some(0) {
            self.repair_events(conn, max, &live, ttl);
        }
        Ok(ids)
    }

    /// The call's fields, as both the entry and the record hold them.
    fn call_fields(&self, cmd: &mut redis::Cmd, o: &Outgoing) {
        cmd.arg("f")
            .arg(o.trampoline)
            .arg("b")
            .arg(&self.build_id)
            .arg("a")
            .arg(o.args.as_slice())
            .arg("s")
            .arg(&o.signature[..])
            .arg("n")
            .arg(o.items)
            .arg("nc")
            .arg(&o.nonce);
    }

    /// Makes the client's event stream again (and its liveness key, if
    /// that is gone too): a `submit` script call without tasks.
    fn repair_events(&self, conn: &mut Conn, max: &str, live: &str, ttl: u64) {
        let queue = self.cfg.keys.queue();
        let keys = [
            self.cfg.keys.queue(),
            self.cfg.keys.live(&self.client_id),
            self.cfg.keys.events(&self.client_id),
            crate::cluster::lanes::registry(&queue),
        ];
        let mut cmd = self.scripts.call(ScriptName::Submit, &keys);
        cmd.arg(max)
            .arg(live)
            .arg(ttl)
            .arg("")
            .arg(protocol::GROUP)
            .arg("0")
            .arg("0");
        if let Err(e) = conn.query(&cmd) {
            log::warn!(
                "{}",
                protocol::backend("could not make the event stream again", conn.url(), &e)
            );
        }
        self.ensure_pushed_events(conn);
    }
}

fn malformed(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply to a submission",
        what.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_limit_is_the_submit_scripts() {
        let script = include_str!("../lua/submit.lua");
        assert!(
            script.contains(&format!("<= {QUICK_ARGS}")),
            "lua/submit.lua decides quick tasks by another limit"
        );
    }
}

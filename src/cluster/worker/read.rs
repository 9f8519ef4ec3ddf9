//! Reading entries: the default lane's stream and the lanes whose needs
//! this worker can meet.

use super::*;

impl Worker {
    /// Reads one new entry (blocking for a while when `block`): from the
    /// best lane this worker can run (see `lanes`), else from the default
    /// lane as the slot's own consumer `me` (so that an entry whose reply
    /// is lost stays pending for `me` alone: see `recover_own`).
    pub(super) fn read(
        &self,
        conn: &mut Conn,
        block: bool,
        me: &str,
    ) -> redis::RedisResult<Option<Job>> {
        if let Some(job) = self.take_from_lanes(conn, me)? {
            return Ok(Some(job));
        }
        self.read_default(conn, block, me)
    }

    /// Refreshes the lane list when stale.
    pub(super) fn refresh_lanes(&self, conn: &mut Conn) {
        if !protocol_lock(&self.view).stale() {
            return;
        }
        let registry = crate::cluster::lanes::registry(&self.queue);
        match conn.query(redis::cmd("HGETALL").arg(&registry)) {
            Ok(v) => {
                let flat = array(&v).unwrap_or(&[]);
                let pairs = flat
                    .chunks(2)
                    .filter_map(|kv| {
                        Some((
                            text(kv.first()?)?.to_string(),
                            text(kv.get(1)?)?.to_string(),
                        ))
                    })
                    .collect();
                protocol_lock(&self.view).update(&self.queue, pairs);
            }
            Err(e) => log::debug!("{}: could not read the lanes: {e}", self.name),
        }
    }

    /// Takes one entry with the `take` script when lanes other than the
    /// default exist; `None` when there are none or all are empty. Taken as
    /// the slot's own consumer `me`, like a default-lane read, so that an
    /// entry whose reply is lost is found by `recover_own`.
    pub(super) fn take_from_lanes(
        &self,
        conn: &mut Conn,
        me: &str,
    ) -> redis::RedisResult<Option<Job>> {
        self.refresh_lanes(conn);
        // One slot at a time, so two slots cannot both count on the same
        // free resources.
        let mut view = protocol_lock(&self.view);
        let runnable: Vec<(String, crate::cluster::lanes::Needs)> = view
            .runnable()
            .into_iter()
            .map(|l| (l.stream.clone(), l.needs.clone()))
            .collect();
        if runnable.len() <= 1 && runnable.first().is_none_or(|l| l.0 == self.queue) {
            return Ok(None);
        }
        let keys: Vec<&str> = runnable.iter().map(|l| l.0.as_str()).collect();
        let mut cmd = self.scripts.call(ScriptName::Take, &keys);
        cmd.arg(GROUP).arg(me);
        let reply = conn.query(&cmd)?;
        let parts = array(&reply).unwrap_or(&[]);
        let (Some(index), Some(entry), Some(task)) = (
            parts
                .first()
                .and_then(text)
                .and_then(|i| i.parse::<usize>().ok()),
            parts.get(1).and_then(text),
            parts.get(2).and_then(text),
        ) else {
            return Ok(None);
        };
        let Some((stream, needs)) = index.checked_sub(1).and_then(|i| runnable.get(i)) else {
            return Ok(None);
        };
        view.hold(needs);
        Ok(Some(Job {
            entry: entry.to_string(),
            task: task.to_string(),
            stream: stream.clone(),
            needs: needs.clone(),
            redelivered: false,
        }))
    }

    /// Reads one new entry of the default lane.
    pub(super) fn read_default(
        &self,
        conn: &mut Conn,
        block: bool,
        me: &str,
    ) -> redis::RedisResult<Option<Job>> {
        let mut cmd = self.read_cmd(block, me);
        let reply = conn.query(&cmd);
        let reply = match reply {
            Err(e) if protocol::classify(&e) == protocol::Failure::NoGroup => {
                // The server lost the group (restarted without persistence): the
                // reconnect in `get` recreates it.
                conn.reset();
                cmd = self.read_cmd(block, me);
                conn.query(&cmd)?
            }
            other => other?,
        };
        let job = read_reply(&reply).first().and_then(|e| self.job_of(e));
        Ok(job)
    }

    pub(super) fn read_cmd(&self, block: bool, me: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(me).arg("COUNT").arg(1);
        if block {
            cmd.arg("BLOCK").arg(READ_BLOCK.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.queue).arg(">");
        cmd
    }
}

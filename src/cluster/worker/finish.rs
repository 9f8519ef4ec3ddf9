//! Finishes: reporting what ran, batched with the next claim, through the
//! finish script or plain commands (see `plain.rs`).

use super::*;

impl Worker {
    /// After plain finishes whose outcome is unknown: clears the bits of
    /// the tasks whose client's event stream is gone (see `plain::unfinish`),
    /// retrying as a finish does.
    pub(super) fn unfinish(&self, conn: &mut Conn, batch: &[crate::cluster::batch::Finished]) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.call(conn, &crate::cluster::plain::unfinish(&self.scripts, batch)) {
            log::error!(
                "{}: could not check the finished bits of {} task(s) ({}...): {e}",
                self.name,
                batch.len(),
                batch[0].task
            );
        }
    }

    /// True when the oldest finish not yet sent has waited long enough, or
    /// the waiting results are large.
    pub(super) fn flush_due(&self) -> bool {
        let unflushed = protocol_lock(&self.unflushed);
        unflushed
            .first()
            .is_some_and(|f| f.done.elapsed() >= crate::cluster::batch::FLUSH_AFTER)
            || unflushed.iter().map(|f| f.envelope.len()).sum::<usize>()
                >= crate::cluster::batch::FLUSH_BYTES
    }

    /// Sends the finishes not yet sent; with `claim` (and only the default
    /// lane about, and not draining) claims the next jobs in the same
    /// script call, and returns what it brought.
    pub(super) fn flush(&self, conn: &mut Conn, claim: bool) -> Claim {
        let batch = std::mem::take(&mut *protocol_lock(&self.unflushed));
        if batch.is_empty() {
            return Claim::Unknown;
        }
        let want = if claim && !self.draining() && self.only_default() {
            self.pace.want()
        } else {
            0
        };
        let next = if want > 0 {
            let cmd = self.finish_claim_cmd(&batch, want as i64);
            // One attempt: on failure the finishes go alone, with retries.
            conn.query(&cmd).ok().map(|reply| self.claimed(&reply))
        } else {
            None
        };
        let next = next.unwrap_or_else(|| {
            self.finish_alone(conn, &batch);
            Claim::Unknown
        });
        self.sent(batch);
        next
    }

    /// Sends finishes without a claim, retrying transient failures (see
    /// `call`); a failure is logged, and the leases lapse.
    pub(super) fn finish_alone(&self, conn: &mut Conn, batch: &[crate::cluster::batch::Finished]) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.call(conn, &self.finish_claim_cmd(batch, 0)) {
            log::error!(
                "{}: could not finish {} task(s) ({}...): {e}",
                self.name,
                batch.len(),
                batch[0].task
            );
        }
    }

    /// Finishes sent (or given up): their entries are no longer held.
    pub(super) fn sent(&self, batch: Vec<crate::cluster::batch::Finished>) {
        let mut held = protocol_lock(&self.held);
        for f in batch {
            held.remove(&(f.stream, f.entry));
        }
    }

    /// The `finish_claim` script call for `batch`, claiming `want` (0: none).
    pub(super) fn finish_claim_cmd(
        &self,
        batch: &[crate::cluster::batch::Finished],
        want: i64,
    ) -> redis::Cmd {
        let mut keys: Vec<&str> = Vec::with_capacity(1 + 5 * batch.len());
        keys.push(&self.queue);
        for f in batch {
            keys.extend([
                f.stream.as_str(),
                &f.task_key,
                &f.result_key,
                &f.events,
                &f.finished,
            ]);
        }
        let mut cmd = self.scripts.call(ScriptName::FinishClaim, &keys);
        cmd.arg(batch.len());
        self.claim_args(&mut cmd, want);
        for f in batch {
            f.args(&mut cmd);
        }
        cmd
    }

    /// The plain finishes of `batch` (see `plain.rs`), when they qualify,
    /// the server takes them and no tidy is due; their results are then
    /// pushed to their client first (see `push`), which is why this is
    /// called just before the finishes go.
    pub(super) fn plain_finish(
        &self,
        conn: &mut Conn,
        batch: &[crate::cluster::batch::Finished],
        debt: &crate::cluster::plain::Debt,
    ) -> Option<Vec<redis::Cmd>> {
        if batch.is_empty() || debt.due() || !self.plain_ok(conn) {
            return None;
        }
        let (client, value) = self.cached_live()?;
        let expires = crate::cluster::plain::expiry_of(&value)?;
        if !crate::cluster::plain::qualifies(batch, &self.queue, &self.keys.events(&client)) {
            return None;
        }
        let pushed = self
            .pusher
            .push(&client, batch)
            .then(|| self.keys.pushed_events(&client));
        Some(crate::cluster::plain::commands(
            batch,
            &self.queue,
            expires,
            pushed.as_deref(),
        ))
    }

    /// True when the server takes `PEXPIREAT`'s `NX` and `GT` (Redis 7.0
    /// or newer), asked once (on `conn`).
    pub(super) fn plain_ok(&self, conn: &mut Conn) -> bool {
        match self.plain.load(Ordering::Relaxed) {
            1 => return true,
            2 => return false,
            _ => {}
        }
        let Ok(info) = conn.query(redis::cmd("INFO").arg("server")) else {
            return false;
        };
        let version = protocol::server_version(protocol::text(&info).unwrap_or(""));
        let ok = version >= (7, 0);
        self.plain.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
        ok
    }

    /// Pays a slot's tidy debt (see `plain.rs`) on its own, before the
    /// slot reads otherwise than by `wait_and_claim`, or ends.
    pub(super) fn pay(&self, conn: &mut Conn, debt: &mut crate::cluster::plain::Debt) {
        if let Some(tidy) = debt.take(&self.scripts, &self.queue) {
            if let Err(e) = conn.query(&tidy) {
                log::debug!("{}: could not tidy the queue: {e}", self.name);
            }
        }
    }
}

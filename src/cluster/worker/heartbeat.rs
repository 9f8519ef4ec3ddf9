//! The heartbeat thread: keeps the leases of running entries, and ends
//! tasks that outrun their time limit.

use super::*;

impl Worker {
    /// Keeps the leases of the entries being run from expiring.
    pub(super) fn heartbeat(self: Arc<Self>) {
        let Some(mut conn) = self.connect(Duration::from_secs(5)) else {
            return;
        };
        let every = (self.cfg.lease / 3).clamp(Duration::from_millis(20), Duration::from_secs(10));
        let mut next = Instant::now() + every;
        loop {
            // Keep beating while a draining worker finishes its tasks.
            std::thread::sleep(Duration::from_millis(20).min(every));
            let held: Vec<(String, String)> = protocol_lock(&self.held).iter().cloned().collect();
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            self.draining();
            self.enforce_limits(&mut conn);
            // A mark deferred without waking its thread (see `Starter::defer`).
            self.starter.kick();
            // A slot running a long task holds finished results: send them.
            let late = protocol_lock(&self.unflushed)
                .first()
                .is_some_and(|f| f.done.elapsed() >= crate::cluster::batch::FLUSH_LATE);
            if late {
                self.flush(&mut conn, false);
            }
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + every;
            if held.is_empty() {
                continue;
            }
            let mut streams: Vec<&str> = held.iter().map(|(s, _)| s.as_str()).collect();
            streams.sort_unstable();
            streams.dedup();
            for stream in streams {
                let mut cmd = redis::cmd("XCLAIM");
                cmd.arg(stream).arg(GROUP).arg(&self.consumer).arg(0);
                for (_, id) in held.iter().filter(|(s, _)| s == stream) {
                    cmd.arg(id);
                }
                cmd.arg("JUSTID");
                if let Err(e) = conn.query(&cmd) {
                    log::debug!("{}: heartbeat failed: {e}", self.name);
                }
            }
        }
    }

    /// Ends the worker when a running task overran its run-time limit: the
    /// task's result becomes `Timeout` (naming the limit), then the process
    /// exits (code 124) so the call stops; a local worker is replaced by its
    /// cluster, a remote one by whatever supervises it. Other tasks running
    /// in the same process are redone elsewhere when their leases lapse.
    pub(super) fn enforce_limits(&self, conn: &mut Conn) {
        let now = Instant::now();
        let overdue: Option<(String, Deadline)> = {
            let mut d = protocol_lock(&self.deadlines);
            let entry = d
                .iter()
                .find(|(_, dl)| dl.at <= now)
                .map(|(e, _)| e.clone());
            entry.and_then(|e| d.remove_entry(&e))
        };
        let Some((entry, dl)) = overdue else {
            return;
        };
        let what = format!(
            "the call ran longer than its limit of {:?}; its worker was stopped and replaced",
            dl.limit
        );
        log::warn!("{}: task {} {what}", self.name, dl.task);
        let outcome = Outcome::Ran {
            worker: self.name.clone(),
            items: (0..dl.items.max(1))
                .map(|_| ItemOutcome::Failed(ship::WireError::Timeout { what: what.clone() }))
                .collect(),
        };
        // Its result, and those of tasks that ran before it, are not lost with
        // the process (one attempt: the overdue task must not wait on Redis).
        let mut batch = std::mem::take(&mut *protocol_lock(&self.unflushed));
        if let Some(id) = protocol::parse_task_id(&dl.task) {
            let envelope = outcome.seal(self.cfg.secret.as_bytes(), &dl.task);
            batch.push(crate::cluster::batch::Finished::new(
                &self.keys, &dl.stream, &entry, &dl.task, id, envelope, false,
            ));
        }
        if !batch.is_empty() {
            if let Err(e) = conn.query(&self.finish_claim_cmd(&batch, 0)) {
                log::error!(
                    "{}: could not report the timeout of {}: {e}",
                    self.name,
                    dl.task
                );
            }
        }
        let _ = std::io::stderr().flush();
        // SAFETY: ends this process at once; the overdue task cannot be
        // stopped any other way, and every other task's lease protects it.
        unsafe { libc::_exit(124) }
    }
}

//! One slot's loop: take the next job (queued ahead, read, reaped or
//! claimed), run it, finish it; and the blocking wait for new entries.

use super::*;

impl Worker {
    /// The slot's loop; true when it left as a surplus slot (already counted out).
    pub(super) fn slot_loop(&self) -> bool {
        let Some(mut conn) = self.connect(READ_BLOCK + Duration::from_secs(5)) else {
            return false;
        };
        let me = {
            let mut names = protocol_lock(&self.slot_consumers);
            let name = format!("{}/{}", self.consumer, names.len());
            names.push(name.clone());
            name
        };
        let mut next = Claim::Unknown;
        let mut backoff = Backoff::new();
        // The tidy owed for plain finishes (see `plain.rs`).
        let mut debt = crate::cluster::plain::Debt::default();
        // The last claim found the queue empty (it brought fewer than it asked).
        let mut drained = false;
        // A blocking read failed: entries may be pending for this slot
        // that it never received (see `recover_own`).
        let mut recover = false;
        loop {
            let idle = match std::mem::replace(&mut next, Claim::Unknown) {
                Claim::Jobs(jobs) => {
                    drained = jobs.len() < self.pace.want();
                    self.queue_ahead(jobs);
                    Claim::Unknown
                }
                other => other,
            };
            // Jobs claimed ahead run first, draining or not: their clients
            // were told they started.
            let queued = protocol_lock(&self.ahead).pop_front();
            if let Some((job, started)) = queued {
                self.run_job(&mut conn, job, started);
                let more = !protocol_lock(&self.ahead).is_empty();
                if !more && drained && self.may_idle_at_once() {
                    // The queue was empty a moment ago: send the finishes
                    // and block for the next entries in one round trip.
                    let batch = std::mem::take(&mut *protocol_lock(&self.unflushed));
                    next = self.wait_and_claim(&mut conn, &me, batch, &mut debt, &mut recover);
                } else if !more || self.flush_due() {
                    next = self.flush(&mut conn, !more);
                }
                continue;
            }
            if self.draining() {
                self.flush(&mut conn, false);
                self.pay(&mut conn, &mut debt);
                return false;
            }
            if crate::cluster::secede::leave_if_surplus(self) {
                self.flush(&mut conn, false);
                self.pay(&mut conn, &mut debt);
                return true;
            }
            if recover {
                match self.recover_own(&mut conn, &me) {
                    Ok(Claim::Idle) => recover = false,
                    Ok(claim) => {
                        recover = false;
                        next = claim;
                        continue;
                    }
                    Err(e) => {
                        log::debug!("{}: {e}; retrying", self.name);
                        backoff.sleep(None);
                        continue;
                    }
                }
            }
            let found = match (self.reap_one(&mut conn), idle) {
                (Some(job), _) => Ok(Some(job)),
                (None, Claim::Idle) if self.only_default() => {
                    // Wait for the next entries and claim them in the same
                    // round trip.
                    next = self.wait_and_claim(&mut conn, &me, Vec::new(), &mut debt, &mut recover);
                    continue;
                }
                (None, _) => {
                    self.pay(&mut conn, &mut debt);
                    self.read(&mut conn, true, &me)
                }
            };
            match found {
                Ok(Some(job)) => {
                    backoff = Backoff::new();
                    next = Claim::Jobs(vec![(job, None)]);
                }
                Ok(None) => {}
                Err(e) => {
                    log::debug!("{}: {e}; retrying", self.name);
                    recover = true;
                    backoff.sleep(None);
                }
            }
        }
    }

    /// True when a slot that ran out of work may send its finishes and go
    /// straight back to its blocking read: not draining, only the default
    /// lane, no surplus slot to retire, and no lease due for a look.
    pub(super) fn may_idle_at_once(&self) -> bool {
        !crate::cluster::secede::surplus(self)
            && !self.draining()
            && self.only_default()
            && Instant::now() < protocol_lock(&self.reap).0
    }

    /// Queues claimed jobs to run next, holding their leases.
    pub(super) fn queue_ahead(&self, jobs: Vec<(Job, Option<redis::Value>)>) {
        let mut held = protocol_lock(&self.held);
        for (job, _) in &jobs {
            held.insert((job.stream.clone(), job.entry.clone()));
        }
        drop(held);
        protocol_lock(&self.ahead).extend(jobs);
    }

    /// An idle slot's read: a group read as the slot's own consumer `me`
    /// blocks until entries are added to the default lane (or `READ_BLOCK`
    /// passes), after sending `finishes` in the same pipeline (`recover`
    /// is set when the read failed: see `recover_own`). Redis wakes
    /// only the blocked reader it serves, so one new entry wakes one idle
    /// slot of one worker. What the read brings is started by `delivered`.
    pub(super) fn wait_and_claim(
        &self,
        conn: &mut Conn,
        me: &str,
        finishes: Vec<crate::cluster::batch::Finished>,
        debt: &mut crate::cluster::plain::Debt,
        recover: &mut bool,
    ) -> Claim {
        let want = self.pace.want();
        let mut pipe = redis::pipe();
        // Plain finishes (see `plain.rs`), or the script, which also tidies
        // exactly; with no finishes, the tidy owed for earlier plain ones.
        let cmds = self.plain_finish(conn, &finishes, debt);
        let plain = cmds.is_some();
        let mut n = 1;
        match cmds {
            Some(cmds) => {
                n += cmds.len();
                for c in cmds {
                    pipe.add_command(c);
                }
            }
            None if !finishes.is_empty() => {
                n += 1;
                pipe.add_command(self.finish_claim_cmd(&finishes, 0));
            }
            None => {
                if let Some(tidy) = debt.take(&self.scripts, &self.queue) {
                    n += 1;
                    pipe.add_command(tidy);
                }
            }
        }
        pipe.cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(me)
            .arg("COUNT")
            .arg(want)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.queue)
            .arg(">");
        let next = match conn.query_pipe_each(&pipe, n) {
            Ok(mut replies) => {
                let read = replies.pop();
                if replies.iter().any(|r| r.is_err()) {
                    // Perhaps before they ran: send them alone (again is harmless).
                    self.finish_alone(conn, &finishes);
                    if plain {
                        self.unfinish(conn, &finishes);
                    }
                    debt.paid();
                } else if plain {
                    if let Some(Ok(exec)) = replies.last() {
                        let lost = crate::cluster::plain::undelivered(&finishes, exec);
                        if !lost.is_empty() {
                            if let Err(e) = conn.query_pipe(&crate::cluster::plain::clear(&lost)) {
                                log::warn!("{}: {e}; clearing finished bits by script", self.name);
                                self.unfinish(conn, &finishes);
                            }
                        }
                    }
                    if let Some(last) = finishes.last() {
                        debt.owe(&last.entry);
                    }
                } else if !finishes.is_empty() {
                    debt.paid();
                }
                match read {
                    Some(Ok(reply)) => self.delivered(conn, &reply),
                    Some(Err(e)) => {
                        log::debug!("{}: {e}; retrying", self.name);
                        *recover = true;
                        Claim::Unknown
                    }
                    None => Claim::Unknown,
                }
            }
            Err(e) => {
                log::debug!("{}: {e}; retrying", self.name);
                *recover = true;
                // Perhaps before they ran: send them alone (again is harmless).
                self.finish_alone(conn, &finishes);
                if plain {
                    self.unfinish(conn, &finishes);
                }
                Claim::Unknown
            }
        };
        self.sent(finishes);
        next
    }
}

//! What departed consumers leave behind: entries whose lease expired
//! (taken over), entries delivered to this worker whose reply was lost
//! (recovered), consumers of workers that are gone (forgotten), and this
//! worker's own consumers when it leaves.

use super::*;

impl Worker {
    /// When due, takes over one entry whose lease expired.
    pub(super) fn reap_one(&self, conn: &mut Conn) -> Option<Job> {
        let cursor = {
            let mut reap = protocol_lock(&self.reap);
            if Instant::now() < reap.0 {
                return None;
            }
            // Claim the turn; pushed back below unless something was found.
            reap.0 = Instant::now() + self.cfg.lease / 2;
            reap.1.clone()
        };
        let reply = conn
            .query(
                redis::cmd("XAUTOCLAIM")
                    .arg(&self.queue)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(self.cfg.lease.as_millis() as u64)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(1),
            )
            .ok()?;
        let parts = array(&reply)?;
        let next_cursor = parts.first().and_then(text).unwrap_or("0-0").to_string();
        let claimed = parts.get(1).map(protocol::entries).unwrap_or_default();
        let job = claimed.iter().find_map(|e| {
            let job = self.job_of(e).map(|j| Job {
                redelivered: true,
                ..j
            });
            if job.is_none() {
                // A deleted or malformed entry: drop it from the group.
                let _ = conn.query(redis::cmd("XACK").arg(&self.queue).arg(GROUP).arg(e.id));
            }
            job
        });
        let wrapped = {
            let mut reap = protocol_lock(&self.reap);
            reap.1 = next_cursor.clone();
            if job.is_some() || next_cursor != "0-0" {
                // More may be waiting: let the next free slot look at once.
                reap.0 = Instant::now();
            }
            job.is_none() && next_cursor == "0-0"
        };
        let job = match job {
            Some(job) => Some(job),
            None => self.reap_lanes(conn),
        };
        if wrapped {
            self.forget_dead_consumers(conn);
        }
        if let Some(j) = &job {
            log::info!(
                "{} took over task {} (its lease expired)",
                self.name,
                j.task
            );
        }
        job
    }

    /// Takes over one expired entry of a lane other than the default that
    /// this worker can run now.
    pub(super) fn reap_lanes(&self, conn: &mut Conn) -> Option<Job> {
        let mut view = protocol_lock(&self.view);
        let lanes: Vec<(String, crate::cluster::lanes::Needs)> = view
            .runnable()
            .into_iter()
            .filter(|l| l.stream != self.queue)
            .map(|l| (l.stream.clone(), l.needs.clone()))
            .collect();
        for (stream, needs) in lanes {
            let Ok(reply) = conn.query(
                redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(self.cfg.lease.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(1),
            ) else {
                continue;
            };
            let claimed = array(&reply)
                .and_then(|p| p.get(1))
                .map(protocol::entries)
                .unwrap_or_default();
            for e in &claimed {
                match e.field("t").and_then(|t| std::str::from_utf8(t).ok()) {
                    Some(task) => {
                        view.hold(&needs);
                        log::info!("{} took over task {task} (its lease expired)", self.name);
                        return Some(Job {
                            entry: e.id.to_string(),
                            task: task.to_string(),
                            stream: stream.clone(),
                            needs: needs.clone(),
                            redelivered: true,
                        });
                    }
                    None => {
                        let _ = conn.query(redis::cmd("XACK").arg(&stream).arg(GROUP).arg(e.id));
                    }
                }
            }
        }
        None
    }

    /// Now and then, removes consumers of workers that are long gone (killed
    /// without a chance to leave): no pending entries and idle for ten leases.
    pub(super) fn forget_dead_consumers(&self, conn: &mut Conn) {
        let idle_limit = (self.cfg.lease * 10).max(Duration::from_secs(30));
        {
            let mut next = protocol_lock(&self.cleanup);
            if Instant::now() < *next {
                return;
            }
            *next = Instant::now() + idle_limit;
        }
        let Ok(reply) = conn.query(
            redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&self.queue)
                .arg(GROUP),
        ) else {
            return;
        };
        for consumer in array(&reply).unwrap_or(&[]) {
            let fields = array(consumer).unwrap_or(&[]);
            let get = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv.len() == 2 && text(&kv[0]) == Some(name))
                    .map(|kv| &kv[1])
            };
            let (Some(name), Some(pending), Some(idle)) = (
                get("name").and_then(text),
                get("pending").and_then(protocol::int),
                get("idle").and_then(protocol::int),
            ) else {
                continue;
            };
            if name != self.consumer && pending == 0 && idle as u128 > idle_limit.as_millis() {
                log::info!(
                    "{}: removing the consumer of departed worker {name}",
                    self.name
                );
                let _ = conn.query(
                    redis::cmd("XGROUP")
                        .arg("DELCONSUMER")
                        .arg(&self.queue)
                        .arg(GROUP)
                        .arg(name),
                );
            }
        }
    }

    /// After a blocking read of slot `me` failed: the entries Redis
    /// delivered to it that it never received. A read whose reply is lost
    /// after Redis served it (the connection dropped; a worker stopped and
    /// continued, whose socket read then fails with `EINTR`, see
    /// signal(7)) leaves them pending for `me` only, and nobody else takes
    /// them before their lease lapses. `me` is this slot's own consumer,
    /// and the slot was idle: what is pending for it is what it never saw,
    /// except entries it read with others and queued (still held) and
    /// entries without their fields (deleted since), which are left alone.
    /// `Idle` when there are none.
    pub(super) fn recover_own(&self, conn: &mut Conn, me: &str) -> redis::RedisResult<Claim> {
        let reply = conn.query(&pending_of(me, &self.queue))?;
        let entries = self.unseen(&self.queue, &reply);
        let lane_jobs = self.recover_own_lanes(conn, me)?;
        if !entries.is_empty() || !lane_jobs.is_empty() {
            log::info!(
                "{}: {} entr(ies) delivered to a read that failed; running them now",
                self.name,
                entries.len() + lane_jobs.len()
            );
        }
        let claim = self.delivered_entries(conn, entries);
        if lane_jobs.is_empty() {
            return Ok(claim);
        }
        match claim {
            Claim::Jobs(mut jobs) => {
                jobs.extend(lane_jobs);
                Ok(Claim::Jobs(jobs))
            }
            _ => Ok(Claim::Jobs(lane_jobs)),
        }
    }

    /// Of the entries `reply` (a read of what is pending for a slot in
    /// `stream`) holds, those the slot never saw: not queued here (held)
    /// and with their fields (not deleted since).
    pub(super) fn unseen<'a>(&self, stream: &str, reply: &'a redis::Value) -> Vec<Entry<'a>> {
        let held = protocol_lock(&self.held);
        read_reply(reply)
            .into_iter()
            .filter(|e| e.field("t").is_some())
            .filter(|e| !held.contains(&(stream.to_string(), e.id.to_string())))
            .collect()
    }

    /// [`Worker::recover_own`] for the lanes other than the default: the
    /// entries a `take` of slot `me` took whose reply was lost. Each is
    /// run now if its lane fits the free resources (and holds them);
    /// otherwise it stays pending and is taken over when its lease lapses.
    pub(super) fn recover_own_lanes(
        &self,
        conn: &mut Conn,
        me: &str,
    ) -> redis::RedisResult<Vec<(Job, Option<redis::Value>)>> {
        let lanes: Vec<String> = protocol_lock(&self.view)
            .lanes
            .iter()
            .filter(|l| l.stream != self.queue)
            .map(|l| l.stream.clone())
            .collect();
        let mut jobs = Vec::new();
        for stream in lanes {
            let reply = match conn.query(&pending_of(me, &stream)) {
                Ok(reply) => reply,
                // A lane whose stream or group is gone holds nothing.
                Err(e) if protocol::classify(&e) == protocol::Failure::NoGroup => continue,
                Err(e) => return Err(e),
            };
            for e in self.unseen(&stream, &reply) {
                let Some(task) = e.field("t").and_then(|t| std::str::from_utf8(t).ok()) else {
                    continue;
                };
                let mut view = protocol_lock(&self.view);
                let Some(needs) = view
                    .runnable()
                    .into_iter()
                    .find(|l| l.stream == stream)
                    .map(|l| l.needs.clone())
                else {
                    log::info!(
                        "{}: task {task} was delivered to a read that failed, and its \
                         resources are busy; it runs when its lease lapses",
                        self.name
                    );
                    continue;
                };
                view.hold(&needs);
                jobs.push((
                    Job {
                        entry: e.id.to_string(),
                        task: task.to_string(),
                        stream: stream.clone(),
                        needs,
                        redelivered: false,
                    },
                    None,
                ));
            }
        }
        Ok(jobs)
    }

    /// Removes this worker's consumer, and its slots' (see
    /// `wait_and_claim`), from the group of every lane it knows, each only
    /// if it holds nothing there: one that holds an entry (a delivery whose
    /// reply was lost, or a task left running) stays for the reaper.
    pub(super) fn leave(&self) {
        let Some(mut conn) = self.connect(Duration::from_secs(2)) else {
            return;
        };
        let slots = std::mem::take(&mut *protocol_lock(&self.slot_consumers));
        let mut streams: Vec<String> = protocol_lock(&self.view)
            .lanes
            .iter()
            .map(|l| l.stream.clone())
            .collect();
        if !streams.contains(&self.queue) {
            streams.push(self.queue.clone());
        }
        let pairs: Vec<(&String, &String)> = streams
            .iter()
            .flat_map(|s| {
                std::iter::once(&self.consumer)
                    .chain(&slots)
                    .map(move |n| (s, n))
            })
            .collect();
        // Two round trips for all of them: what each holds, then the
        // removal of those that hold nothing. (A lane whose group is gone
        // answers an error, and is skipped.)
        let mut ask = redis::pipe();
        for (stream, name) in &pairs {
            ask.cmd("XPENDING")
                .arg(*stream)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(*name);
        }
        let Ok(answers) = conn.query_pipe_each(&ask, pairs.len()) else {
            return;
        };
        let mut remove = redis::pipe();
        for ((stream, name), answer) in pairs.iter().zip(&answers) {
            if answer
                .as_ref()
                .is_ok_and(|v| array(v).is_some_and(|a| a.is_empty()))
            {
                remove
                    .cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(*stream)
                    .arg(GROUP)
                    .arg(*name)
                    .ignore();
            }
        }
        let _ = conn.query_pipe(&remove);
    }
}

/// Reads what `stream`'s group delivered to consumer `me` and it has not
/// acknowledged (a batch at most).
fn pending_of(me: &str, stream: &str) -> redis::Cmd {
    let mut read = redis::cmd("XREADGROUP");
    read.arg("GROUP")
        .arg(GROUP)
        .arg(me)
        .arg("COUNT")
        .arg(crate::cluster::batch::MAX_BATCH)
        .arg("STREAMS")
        .arg(stream)
        .arg("0");
    read
}

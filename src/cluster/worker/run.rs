//! Running one job: check its record and signature, run the call (or its
//! items), and reject what must not run.

use super::*;

impl Worker {
    /// Starts (unless `started` holds the reply of a claim that did) and
    /// runs one job (held by `queue_ahead`); its finish joins `unflushed`.
    pub(super) fn run_job(&self, conn: &mut Conn, job: Job, started: Option<redis::Value>) {
        // The pace counts everything a task costs here, sealing a large
        // result included, not just the call.
        let began = Instant::now();
        let mut finished = self.run_job_inner(conn, &job, started);
        let unmarked = self.starter.finished(&job.entry);
        if let Some(f) = &mut finished {
            f.unmarked = unmarked;
        }
        self.pace.ran(began.elapsed());
        if !job.needs.is_empty() {
            protocol_lock(&self.view).release(&job.needs);
        }
        match finished {
            Some(f) => protocol_lock(&self.unflushed).push(f),
            // Acknowledged already (dropped, rejected, gone, cancelled).
            None => {
                protocol_lock(&self.held).remove(&(job.stream, job.entry));
            }
        }
    }

    pub(super) fn run_job_inner(
        &self,
        conn: &mut Conn,
        job: &Job,
        started: Option<redis::Value>,
    ) -> Option<crate::cluster::batch::Finished> {
        let Some((client, seq)) = protocol::parse_task_id(&job.task) else {
            log::warn!(
                "{}: dropping a malformed stream entry {}",
                self.name,
                job.entry
            );
            self.ack(conn, &job.entry);
            return None;
        };
        let bit = protocol::bit_of(seq);
        let reply = match started {
            Some(reply) => Ok(reply),
            None => self.start(conn, job, client, bit),
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                // Not transient: the record is not a hash, or similar junk.
                log::warn!("{}: could not start task {}: {e}", self.name, job.task);
                self.reject(conn, job, &format!("the task record is unusable: {e}"));
                return None;
            }
        };
        let parts = array(&reply).unwrap_or(&[]);
        let field = |i: usize| parts.get(i).and_then(bytes).unwrap_or(&[]);
        let outcome = match field(0) {
            b"run" => {
                let cancelled: HashSet<usize> = std::str::from_utf8(field(6))
                    .unwrap_or("")
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect();
                let record = Record {
                    trampoline: field(1),
                    build: field(2),
                    args: field(3),
                    signature: field(4),
                    items: field(5),
                    nonce: field(7),
                };
                let limit = std::str::from_utf8(field(10))
                    .ok()
                    .and_then(|l| l.parse::<u64>().ok())
                    .filter(|&ms| ms > 0)
                    .map(Duration::from_millis);
                let items = std::str::from_utf8(field(5))
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                if let Some(limit) = limit {
                    protocol_lock(&self.deadlines).insert(
                        job.entry.clone(),
                        Deadline {
                            at: Instant::now() + limit,
                            limit,
                            task: job.task.clone(),
                            stream: job.stream.clone(),
                            items,
                        },
                    );
                }
                let ran = self.execute(conn, &job.task, &record, &cancelled, || {
                    self.client_alive(client, field(8), field(9))
                });
                if limit.is_some() {
                    protocol_lock(&self.deadlines).remove(&job.entry);
                }
                match ran {
                    Ok(Some(outcome)) => outcome,
                    Ok(None) => {
                        log::info!(
                            "{}: dropped task {} (entry {}): its client is gone",
                            self.name,
                            job.task,
                            job.entry
                        );
                        self.drop_task(conn, job);
                        return None;
                    }
                    Err(reason) => {
                        log::warn!(
                            "{}: rejected task {} (entry {}): {reason}",
                            self.name,
                            job.task,
                            job.entry
                        );
                        self.reject(conn, job, &reason);
                        return None;
                    }
                }
            }
            b"lost" => {
                let owner = String::from_utf8_lossy(field(1)).into_owned();
                let starts = String::from_utf8_lossy(field(2)).into_owned();
                let died = conn
                    .query(redis::cmd("GET").arg(self.keys.died(&owner)))
                    .ok()
                    .and_then(|v| text(&v).map(str::to_string));
                let last = died.map(|how| format!("; it {how}")).unwrap_or_else(|| {
                    "; it died, hung, or lost contact with Redis for longer than the lease".into()
                });
                Outcome::Lost {
                    worker: format!("cluster worker {owner}"),
                    status: format!(
                        "the task was started {starts} times and each time its worker stopped \
                         before finishing (max_deliveries = {starts}){last}"
                    ),
                }
            }
            // Gone (finished elsewhere, never existed) or cancelled: already acknowledged.
            _ => return None,
        };
        // A large single value stays in Redis until the client asks for it.
        let lazy = matches!(&outcome, Outcome::Ran { items, .. } if matches!(
            items.as_slice(),
            [ItemOutcome::Value(v)] if v.len() > crate::cluster::remote::LAZY_ABOVE
        ));
        let mut outcome = outcome;
        let envelope =
            outcome.seal_within(self.cfg.secret.as_bytes(), &job.task, self.bulk_limit());
        Some(crate::cluster::batch::Finished::new(
            &self.keys,
            &job.stream,
            &job.entry,
            &job.task,
            (client, seq),
            envelope,
            lazy,
        ))
    }

    /// Verifies and runs a task record. `Err` means: reject it (bad signature
    /// or a record that cannot be read); `Ok(None)`: drop it, its client is
    /// gone (checked after the signature, with `client_alive`); a refusal
    /// after verification (other build, bad trampoline) is an
    /// `Ok(Some(Refused))` outcome for the client.
    pub(super) fn execute(
        &self,
        conn: &mut Conn,
        task: &str,
        record: &Record<'_>,
        cancelled: &HashSet<usize>,
        client_alive: impl FnOnce() -> bool,
    ) -> Result<Option<Outcome>, String> {
        let parse = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
        let (Some(trampoline), Some(n), Ok(build), Ok(nonce)) = (
            parse(record.trampoline),
            parse(record.items),
            std::str::from_utf8(record.build),
            std::str::from_utf8(record.nonce),
        ) else {
            return Err("the task record is malformed".into());
        };
        let args = record.args;
        // Nothing about the record is trusted before this check.
        let seal = protocol::TaskSeal {
            namespace: &self.cfg.namespace,
            task,
            nonce,
            trampoline,
            build_id: build,
            items: n,
            args,
        };
        if !protocol::verify_task(self.cfg.secret.as_bytes(), &seal, record.signature) {
            return Err(format!(
                "its signature does not verify under this worker's secret and namespace \
                 {:?} (a forged or altered task, a client with a different secret, or a \
                 record copied from another namespace)",
                self.cfg.namespace
            ));
        }
        if !client_alive() {
            return Ok(None);
        }
        let refuse = |message: String| {
            Ok(Some(Outcome::Refused {
                worker: self.name.clone(),
                message,
            }))
        };
        if build != self.build_id {
            return refuse(format!(
                "the call comes from a different build of the program (caller build id \
                 {build}, worker build id {}); run the same binary on every host",
                self.build_id
            ));
        }
        // The blob holds the captures, then the items (see `Shared::enqueue`).
        let Some((captures, items)) = (n as usize)
            .checked_add(1)
            .and_then(|count| protocol::split_items(args, count))
            .and_then(|mut items| (!items.is_empty()).then(|| (items.remove(0), items)))
        else {
            return refuse("the task's arguments are malformed".into());
        };
        let mut call = match ship::resolve(trampoline, captures) {
            Ok(t) => t,
            Err(message) => return refuse(message),
        };
        let mut outcomes = Vec::with_capacity(items.len());
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if cancelled.contains(&i) {
                outcomes.push(ItemOutcome::Skipped);
                continue;
            }
            out.clear();
            // A dependent's arguments may name inputs that stayed in Redis.
            let filled = match crate::cluster::remote::parse_template(item) {
                None => None,
                Some(Ok(pieces)) => match self.fill_template(conn, &pieces) {
                    Ok(args) => Some(args),
                    Err(message) => {
                        outcomes.push(ItemOutcome::Failed(ship::WireError::Refused { message }));
                        continue;
                    }
                },
                Some(Err(message)) => {
                    outcomes.push(ItemOutcome::Failed(ship::WireError::Refused { message }));
                    continue;
                }
            };
            let item = filled.as_deref().unwrap_or(item);
            // The trampoline catches the task's panics; `contain` also
            // catches one whose payload panics again when dropped, which
            // would otherwise end this slot's thread.
            outcomes.push(match crate::panic::catch(|| call.call(item, &mut out)) {
                Ok(Ok(())) => ItemOutcome::Value(std::mem::take(&mut out)),
                Ok(Err(e)) => ItemOutcome::Failed(e),
                Err(e) => ItemOutcome::Failed(ship::WireError::from(e)),
            });
        }
        Ok(Some(Outcome::Ran {
            worker: self.name.clone(),
            items: outcomes,
        }))
    }

    /// Drops a task of a client that is gone (see `drop.lua`).
    pub(super) fn drop_task(&self, conn: &mut Conn, job: &Job) {
        let task_key = self.keys.task(&job.task);
        let mut cmd = self
            .scripts
            .call(ScriptName::Drop, &[job.stream.as_str(), &task_key]);
        cmd.arg(&job.entry).arg(GROUP);
        if self.call(conn, &cmd).is_err() {
            self.ack_in(conn, &job.stream, &job.entry);
        }
    }

    /// The arguments of a template: its literal pieces, and the values of
    /// the inputs it names read from their results in Redis (one `MGET`).
    pub(super) fn fill_template(
        &self,
        conn: &mut Conn,
        pieces: &[crate::cluster::remote::Piece<'_>],
    ) -> Result<Vec<u8>, String> {
        use crate::cluster::remote::Piece;
        let inputs: Vec<&str> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Input(task) => Some(*task),
                Piece::Bytes(_) => None,
            })
            .collect();
        let mut mget = redis::cmd("MGET");
        for task in &inputs {
            mget.arg(self.keys.result(task));
        }
        let reply = conn
            .query(&mget)
            .map_err(|e| format!("could not read the call's inputs from Redis: {e}"))?;
        let envelopes = array(&reply).unwrap_or(&[]);
        let mut values = Vec::with_capacity(inputs.len());
        for (i, task) in inputs.iter().enumerate() {
            let envelope = envelopes.get(i).and_then(bytes).unwrap_or(&[]);
            let value =
                crate::cluster::remote::single_value(self.cfg.secret.as_bytes(), task, envelope)
                    .map_err(|e| format!("input {task} of the call is not usable: {e}"))?;
            values.push(value);
        }
        if let ([Piece::Input(_)], [_]) = (pieces, values.as_slice()) {
            // One input and nothing else: its value is the argument tuple.
            return Ok(values.pop().unwrap_or_default());
        }
        let mut values = values.into_iter();
        let mut args = Vec::new();
        for p in pieces {
            match p {
                Piece::Bytes(b) => args.extend_from_slice(b),
                Piece::Input(_) => args.extend(values.next().unwrap_or_default()),
            }
        }
        Ok(args)
    }

    pub(super) fn reject(&self, conn: &mut Conn, job: &Job, reason: &str) {
        let Some((client, _)) = protocol::parse_task_id(&job.task) else {
            self.ack(conn, &job.entry);
            return;
        };
        let envelope = Outcome::Rejected {
            worker: self.name.clone(),
            reason: reason.to_string(),
        }
        .seal(self.cfg.secret.as_bytes(), &job.task);
        let mut cmd = self.scripts.call(
            ScriptName::Reject,
            &[
                &job.stream,
                &self.keys.task(&job.task),
                &self.keys.result(&job.task),
                &self.keys.events(client),
            ],
        );
        cmd.arg(&job.entry)
            .arg(GROUP)
            .arg(&envelope)
            .arg(protocol::DEAD_RECORD_TTL.as_secs())
            .arg(&job.task)
            .arg(reason);
        if self.call(conn, &cmd).is_err() {
            self.ack_in(conn, &job.stream, &job.entry);
        }
    }
}

//! Claims: the script call that starts what a slot took, and the replies
//! that hand back the next jobs.

use super::*;

impl Worker {
    /// The jobs a blocking group read delivered (`reply`). A quick entry
    /// (see `lua/submit.lua`) carries its call, and runs from the entry.
    /// When the cached liveness covers their clients, each quick job is
    /// marked started only if it runs long enough (see `starter`); else one
    /// `mark` call starts them all before they run, and the liveness values
    /// it reads are checked as `start`'s are. Any other entry is started by
    /// `start` when it runs.
    pub(super) fn delivered(&self, conn: &mut Conn, reply: &redis::Value) -> Claim {
        self.delivered_entries(conn, read_reply(reply))
    }

    /// The jobs of entries read for this worker (see [`Worker::delivered`]).
    pub(super) fn delivered_entries(&self, conn: &mut Conn, entries: Vec<Entry<'_>>) -> Claim {
        if entries.is_empty() {
            return Claim::Idle;
        }
        let cached = self.cached_live();
        let mut jobs: Vec<(Job, Option<redis::Value>)> = Vec::with_capacity(entries.len());
        // The quick jobs (by index in `jobs`).
        let mut quick: Vec<(usize, Quick)> = Vec::new();
        for e in &entries {
            let task = e
                .field("t")
                .and_then(|t| std::str::from_utf8(t).ok())
                .unwrap_or("");
            let job = Job {
                entry: e.id.to_string(),
                task: task.to_string(),
                stream: self.queue.clone(),
                needs: Vec::new(),
                redelivered: false,
            };
            let started = quick_start(e);
            let client = protocol::parse_task_id(task).map(|(c, _)| c);
            if let (Some(_), Some(client)) = (&started, client) {
                let q = Quick {
                    entry: job.entry.clone(),
                    task: job.task.clone(),
                    client: client.to_string(),
                };
                quick.push((jobs.len(), q));
                jobs.push((job, started));
            } else {
                jobs.push((job, None));
            }
        }
        if quick.is_empty() {
            return Claim::Jobs(jobs);
        }
        let trusted = cached
            .as_ref()
            .is_some_and(|(c, _)| quick.iter().all(|(_, q)| &q.client == c));
        if trusted {
            // Each is marked only if it still runs a moment later (see `starter`).
            let short = self.pace.short(crate::cluster::starter::MARK_AFTER / 4);
            for (_, q) in quick {
                self.starter.defer(q, short);
            }
            return Claim::Jobs(jobs);
        }
        let (at, quick): (Vec<usize>, Vec<Quick>) = quick.into_iter().unzip();
        match conn.query(&self.mark_cmd(&quick, cached.as_ref())) {
            Ok(reply) => {
                let answers = array(&reply).unwrap_or(&[]);
                let mut gone = vec![false; jobs.len()];
                for (n, &i) in at.iter().enumerate() {
                    let parts = answers.get(n).and_then(array).unwrap_or(&[]);
                    match (parts.first().and_then(bytes), parts.get(1), parts.get(2)) {
                        (Some(b"run"), Some(live), Some(now)) => {
                            if let Some(redis::Value::Array(fields)) = &mut jobs[i].1 {
                                fields[QUICK_LIVE] = live.clone();
                                fields[QUICK_LIVE + 1] = now.clone();
                            }
                        }
                        // A reply short of answers: `start` starts the rest.
                        _ if n >= answers.len() => jobs[i].1 = None,
                        _ => gone[i] = true,
                    }
                }
                let jobs: Vec<_> = jobs
                    .into_iter()
                    .zip(gone)
                    .filter_map(|(j, gone)| (!gone).then_some(j))
                    .collect();
                if jobs.is_empty() {
                    Claim::Unknown
                } else {
                    Claim::Jobs(jobs)
                }
            }
            Err(e) => {
                log::debug!("{}: could not mark quick tasks started: {e}", self.name);
                for i in at {
                    jobs[i].1 = None;
                }
                Claim::Jobs(jobs)
            }
        }
    }

    /// The `mark` script call for `quick` tasks.
    pub(super) fn mark_cmd(
        &self,
        quick: &[Quick],
        cached: Option<&(String, Vec<u8>)>,
    ) -> redis::Cmd {
        let mut keys: Vec<String> = Vec::with_capacity(1 + 3 * quick.len());
        keys.push(self.queue.clone());
        for q in quick {
            keys.push(self.keys.task(&q.task));
            keys.push(self.keys.events(&q.client));
            keys.push(self.keys.live(&q.client));
        }
        let mut mark = self.scripts.call(ScriptName::Mark, &keys);
        mark.arg(GROUP).arg(&self.consumer).arg(self.token());
        for q in quick {
            let value = cached
                .filter(|(c, _)| *c == q.client)
                .map(|(_, v)| v.as_slice())
                .unwrap_or_default();
            mark.arg(&q.entry).arg(&q.task).arg(value);
        }
        mark
    }

    /// The `start` script call for a job read by other means than `claim`.
    pub(super) fn start(
        &self,
        conn: &mut Conn,
        job: &Job,
        client: &str,
        bit: i64,
    ) -> redis::RedisResult<redis::Value> {
        let cached = self
            .cached_live()
            .filter(|(c, _)| c == client)
            .map(|(_, v)| v)
            .unwrap_or_default();
        let mut start = self.scripts.call(
            ScriptName::Start,
            &[
                &job.stream,
                &self.keys.task(&job.task),
                &self.keys.events(client),
                &self.keys.live(client),
                &self.keys.finished(client),
            ],
        );
        start
            .arg(&job.entry)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.token())
            .arg(&job.task)
            .arg(bit)
            .arg(cached)
            .arg(if job.redelivered { "1" } else { "0" });
        self.call(conn, &start)
    }

    /// The arguments of a claim of at most `want` entries (see `claim_fn.lua`).
    pub(super) fn claim_args(&self, cmd: &mut redis::Cmd, want: i64) {
        let (client, value) = self.cached_live().unwrap_or_default();
        cmd.arg(GROUP)
            .arg(&self.consumer)
            .arg(self.keys.tag())
            .arg(self.token())
            .arg(value)
            .arg(client)
            .arg(want);
    }

    /// What a `claim` reply says.
    pub(super) fn claimed(&self, reply: &redis::Value) -> Claim {
        let parts = array(reply).unwrap_or(&[]);
        // A single string: nothing new (a cursor).
        if let [one] = parts {
            if text(one).is_some() {
                return Claim::Idle;
            }
        }
        let jobs: Vec<(Job, Option<redis::Value>)> = parts
            .iter()
            .filter_map(|claimed| {
                let parts = array(claimed)?;
                let (entry, task) = (text(parts.first()?)?, text(parts.get(1)?)?);
                let job = Job {
                    entry: entry.to_string(),
                    task: task.to_string(),
                    stream: self.queue.clone(),
                    needs: Vec::new(),
                    redelivered: false,
                };
                let started = (parts.len() > 2).then(|| redis::Value::Array(parts[2..].to_vec()));
                Some((job, started))
            })
            .collect();
        if jobs.is_empty() {
            Claim::Unknown
        } else {
            Claim::Jobs(jobs)
        }
    }
}

/// Where `start`'s reply holds the liveness value (the server time follows).
const QUICK_LIVE: usize = 8;

/// The reply `start` would give for a quick entry (see `lua/submit.lua`),
/// from the call it carries: `None` for any other entry. Its liveness is
/// the cached one (`=`), which `delivered` replaces when it checked it.
fn quick_start(e: &Entry<'_>) -> Option<redis::Value> {
    if e.field("q")? != b"1" {
        return None;
    }
    let mut fields = vec![redis::Value::BulkString(b"run".to_vec())];
    for name in ["f", "b", "a", "s", "n"] {
        fields.push(redis::Value::BulkString(e.field(name)?.to_vec()));
    }
    // No item of a quick task is cancelled (see `lua/cancel.lua`).
    fields.push(redis::Value::BulkString(Vec::new()));
    fields.push(redis::Value::BulkString(e.field("nc")?.to_vec()));
    debug_assert_eq!(fields.len(), QUICK_LIVE);
    fields.push(redis::Value::BulkString(b"=".to_vec()));
    fields.push(redis::Value::BulkString(Vec::new()));
    fields.push(redis::Value::BulkString(e.field("tl")?.to_vec()));
    Some(redis::Value::Array(fields))
}

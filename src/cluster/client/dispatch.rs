//! The dispatcher thread: sends queued submissions and cancellations.

use super::*;

impl Shared {
    // -----------------------------------------------------------------------
    // Dispatcher: sends submissions and cancellations.

    pub(super) fn dispatcher(self: Arc<Self>) {
        loop {
            let (outbox, cancels, wake) = {
                let mut st = lock(&self.state);
                loop {
                    if st.loop_done {
                        return;
                    }
                    let wake = st.closing && !st.woken;
                    let work = !st.outbox.is_empty() || !st.cancels.is_empty() || wake;
                    // A caller sending its own submission holds the connection
                    // (and notifies when done): what queued meanwhile waits for it.
                    if work && !st.sending {
                        break;
                    }
                    st = self
                        .work
                        .wait_timeout(st, Duration::from_millis(500))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                let wake = st.closing && !st.woken;
                st.woken |= wake;
                st.sending = true;
                let outbox = std::mem::take(&mut st.outbox);
                let cancels = std::mem::take(&mut st.cancels);
                (outbox, cancels, wake)
            };
            let mut conn = lock(&self.submit_conn);
            let (outbox, remote_cancels) = self.apply_cancels(outbox, cancels);
            if !outbox.is_empty() {
                self.send(&mut conn, outbox, true);
            }
            if !remote_cancels.is_empty() {
                self.send_cancels(&mut conn, remote_cancels);
            }
            if wake {
                // Wake the event loop so it notices the shutdown at once.
                let events = self.cfg.keys.events(&self.client_id);
                let _ = conn.query(
                    redis::cmd("XADD")
                        .arg(&events)
                        .arg("NOMKSTREAM")
                        .arg("*")
                        .arg("k")
                        .arg("w"),
                );
            }
            drop(conn);
            lock(&self.state).sending = false;
        }
    }

    /// Sends `outbox` on the caller's thread (the caller set
    /// `State::sending`): one attempt, no retry, so a caller never waits
    /// out an outage. What could not be sent goes back to the front of the
    /// queue (it came before anything queued meanwhile) for the
    /// dispatcher, which retries (the submit script is idempotent, so a
    /// record whose reply was lost is not added twice) and fails futures.
    pub(super) fn send_direct(&self, outbox: Vec<Outgoing>) {
        let mut conn = lock(&self.submit_conn);
        let left = self.send(&mut conn, outbox, false);
        drop(conn);
        let mut st = lock(&self.state);
        st.sending = false;
        if !left.is_empty() {
            st.direct_off = true;
            let queued = std::mem::replace(&mut st.outbox, left);
            st.outbox.extend(queued);
        }
        let wake = !st.outbox.is_empty() || !st.cancels.is_empty() || st.closing;
        drop(st);
        if wake {
            self.work.notify_all();
        }
    }

    /// Counts cancellations; drops queued tasks whose items are all cancelled.
    /// Returns what is left to send and the cancellations to run in Redis.
    fn apply_cancels(
        &self,
        outbox: Vec<Outgoing>,
        cancels: Vec<(u64, i64)>,
    ) -> (Vec<Outgoing>, Vec<(u64, i64)>) {
        if cancels.is_empty() {
            return (outbox, cancels);
        }
        let mut st = lock(&self.state);
        // Cancels of tasks sent again go to their new sequence number.
        let cancels: Vec<(u64, i64)> = cancels
            .into_iter()
            .map(|(mut seq, idx)| {
                while let Some(&next) = st.aliases.get(&seq) {
                    seq = next;
                }
                (seq, idx)
            })
            .collect();
        let mut remote = Vec::new();
        for &(seq, idx) in &cancels {
            if let Some(t) = st.inflight.get_mut(&seq) {
                t.cancelled += 1;
                if t.sent_at.is_some() {
                    remote.push((seq, idx));
                }
            }
        }
        let mut keep = Vec::with_capacity(outbox.len());
        for out in outbox {
            let all_cancelled = st
                .inflight
                .get(&out.seq)
                .is_none_or(|t| t.cancelled >= out.items);
            if all_cancelled {
                st.inflight.remove(&out.seq);
            } else {
                // Partly cancelled chunk: send it, then cancel its items remotely.
                remote.extend(cancels.iter().filter(|c| c.0 == out.seq).copied());
                keep.push(out);
            }
        }
        let idle = st.inflight.is_empty();
        drop(st);
        if idle {
            self.work.notify_all();
        }
        (keep, remote)
    }

    fn give_up(&self) -> impl Fn() -> bool + '_ {
        || lock(&self.state).loop_done
    }

    /// Sends `outbox`, one script call per lane and batch. With `retry`,
    /// retries for `reconnect_timeout` and fails the futures of what still
    /// could not be sent (returns nothing); without, tries each batch once
    /// and returns, unsent and in order, the batch that failed and every
    /// later one.
    fn send(&self, conn: &mut Conn, outbox: Vec<Outgoing>, retry: bool) -> Vec<Outgoing> {
        let deadline = Instant::now() + self.cfg.reconnect_timeout;
        let default_queue = self.cfg.keys.queue();
        let registry = crate::cluster::lanes::registry(&default_queue);
        let max = self.cfg.max_deliveries.to_string();
        // One script call per lane (in order of first appearance; each lane
        // keeps its submission order), in batches bounded by count and bytes.
        let mut by_lane: Vec<((String, String), Vec<Outgoing>)> = Vec::new();
        for o in outbox {
            match by_lane.iter_mut().find(|(l, _)| *l == o.lane) {
                Some((_, v)) => v.push(o),
                None => by_lane.push((o.lane.clone(), vec![o])),
            }
        }
        let mut left = Vec::new();
        for ((queue, desc), outbox) in by_lane {
            if !left.is_empty() {
                left.extend(outbox);
                continue;
            }
            let batches = byte_bounded(&outbox);
            let mut unsent = None;
            for (b, batch) in batches.iter().enumerate() {
                let mut keys = Vec::with_capacity(batch.len() + 4);
                keys.push(queue.clone());
                keys.push(self.cfg.keys.live(&self.client_id));
                keys.push(self.cfg.keys.events(&self.client_id));
                keys.push(registry.clone());
                keys.extend(batch.iter().map(|o| self.cfg.keys.task(&o.task)));
                // A first attempt needs no check for records already there.
                let fresh = batch.iter().all(|o| !o.tried);
                // Only the default lane's tasks may be quick (see `submit.lua`).
                let quick = queue == default_queue;
                let cmd = |fresh: bool| {
                    let mut cmd = self.scripts.call(ScriptName::Submit, &keys);
                    cmd.arg(&max)
                        .arg(lock(&self.live).as_str())
                        .arg(self.cfg.client_ttl.as_millis().max(1) as u64)
                        .arg(&desc)
                        .arg(protocol::GROUP)
                        .arg(if fresh { "1" } else { "0" })
                        .arg(if quick { "1" } else { "0" });
                    for o in *batch {
                        cmd.arg(&o.task)
                            .arg(o.trampoline)
                            .arg(&self.build_id)
                            .arg(&o.args)
                            .arg(&o.signature[..])
                            .arg(o.items)
                            .arg(&o.nonce)
                            .arg(o.limit_ms);
                    }
                    cmd
                };
                // A first attempt of quick tasks goes as a transaction (see
                // `fresh.rs`), which tells their entry ids; any other as a
                // script call, which records them.
                let mut outcome = if Self::may_send_fresh(batch, fresh, quick) {
                    self.send_fresh(conn, batch, &max)
                } else {
                    conn.query(&cmd(fresh)).map(|_| Vec::new())
                };
                if let Err(e) = &outcome {
                    if retry && protocol::classify(e) != protocol::Failure::Fatal {
                        outcome = conn
                            .query_retry(&cmd(false), Some(deadline), &self.give_up())
                            .map(|_| Vec::new());
                    }
                }
                match outcome {
                    Ok(entries) => {
                        let now = Instant::now();
                        let mut st = lock(&self.state);
                        // The connection works: callers may send their own again.
                        st.direct_off = false;
                        for (i, o) in batch.iter().enumerate() {
                            if let Some(t) = st.inflight.get_mut(&o.seq) {
                                t.sent_at = Some(now);
                                if let Some(e) = entries.get(i) {
                                    t.entry.clone_from(e);
                                }
                            }
                        }
                    }
                    Err(e) if !retry => {
                        log::debug!("cluster submit from the caller: {e}; the dispatcher retries");
                        unsent = Some(batches[..b].iter().map(|b| b.len()).sum::<usize>());
                        break;
                    }
                    Err(e) => {
                        let error =
                            protocol::backend("could not submit tasks to Redis", conn.url(), &e);
                        log::error!("{error}");
                        let mut st = lock(&self.state);
                        let failed: Vec<Inflight> = batch
                            .iter()
                            .filter_map(|o| st.inflight.remove(&o.seq))
                            .collect();
                        drop(st);
                        self.courier.send_all(failing(failed, error));
                        self.work.notify_all();
                    }
                }
            }
            drop(batches);
            if let Some(from) = unsent {
                left.extend(outbox.into_iter().skip(from).map(|mut o| {
                    o.tried = true;
                    o
                }));
            }
        }
        left
    }

    fn send_cancels(&self, conn: &mut Conn, cancels: Vec<(u64, i64)>) {
        let deadline = Instant::now() + self.cfg.reconnect_timeout;
        for batch in cancels.chunks(protocol::SUBMIT_BATCH) {
            let tasks: Vec<String> = batch
                .iter()
                .map(|(seq, _)| protocol::task_id(&self.client_id, *seq))
                .collect();
            let keys: Vec<String> = std::iter::once(self.cfg.keys.queue())
                .chain(tasks.iter().map(|t| self.cfg.keys.task(t)))
                .collect();
            let mut cmd = self.scripts.call(ScriptName::Cancel, &keys);
            cmd.arg(protocol::DEAD_RECORD_TTL.as_secs())
                .arg(protocol::GROUP);
            {
                // The entry ids only the client knows (see `fresh.rs`).
                let st = lock(&self.state);
                for ((seq, idx), task) in batch.iter().zip(&tasks) {
                    let entry = st.inflight.get(seq).map_or("", |t| t.entry.as_str());
                    cmd.arg(*idx).arg(task).arg(entry);
                }
            }
            match conn.query_retry(&cmd, Some(deadline), &self.give_up()) {
                Ok(v) => {
                    let answers = array(&v).unwrap_or(&[]);
                    let mut st = lock(&self.state);
                    for ((seq, _), answer) in batch.iter().zip(answers) {
                        // 2: the whole task is cancelled and no worker will report on it.
                        if protocol::int(answer) == Some(2) {
                            st.inflight.remove(seq);
                        }
                    }
                    let idle = st.inflight.is_empty();
                    drop(st);
                    if idle {
                        self.work.notify_all();
                    }
                }
                Err(e) => {
                    // The futures are cancelled locally already; a worker may
                    // still run the task, and its result is then discarded.
                    log::warn!(
                        "{}",
                        protocol::backend("could not cancel tasks in Redis", conn.url(), &e)
                    );
                }
            }
        }
    }
}

/// Splits records into submit batches of at most `SUBMIT_BATCH` records and
/// about `SUBMIT_BYTES` of arguments (a single larger record goes alone).
fn byte_bounded(outbox: &[Outgoing]) -> Vec<&[Outgoing]> {
    let mut batches = Vec::new();
    let (mut from, mut bytes) = (0, 0usize);
    for (i, o) in outbox.iter().enumerate() {
        if i > from && (i - from >= protocol::SUBMIT_BATCH || bytes + o.args.len() > SUBMIT_BYTES) {
            batches.push(&outbox[from..i]);
            (from, bytes) = (i, 0);
        }
        bytes += o.args.len();
    }
    if from < outbox.len() {
        batches.push(&outbox[from..]);
    }
    batches
}

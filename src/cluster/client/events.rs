//! The event loop: completes futures from the client's event stream.

use super::acks::{Ack, Acks};
use super::*;

impl Shared {
    // -----------------------------------------------------------------------
    // Event loop: completes futures from the client's event stream.

    pub(super) fn event_loop(self: Arc<Self>, mut conn: Conn) {
        let events = self.cfg.keys.events(&self.client_id);
        let mut last = String::from("0-0");
        let mut outage: Option<Instant> = None;
        let mut backoff = protocol::Backoff::new();
        let mut next_probe = Instant::now() + PROBE_EVERY;
        let mut fetch_failing: Option<Instant> = None;
        // What the batches delivered since the last ack leave to delete and
        // trim (see `Acks`), and an ack sent with a read that failed, which
        // goes again with the next one.
        let mut acks = Acks::default();
        let mut ack: Option<redis::Cmd> = None;
        // Results pushed to us (see `pushed`) have their events in a stream
        // of their own, read every `CATCH_UP_EVERY` while tasks are in
        // flight, for any push that was lost, and at least every
        // `TRIM_EVERY`, to trim it.
        let pushing = self.push_value.is_some();
        let mut pushed_last = String::from("0-0");
        let mut last_catch_up = Instant::now();
        loop {
            if self.should_stop() {
                break;
            }
            // Idle, the loop sleeps a whole `EVENT_BLOCK` (a lost push of a
            // task sent meanwhile waits for it, at most).
            let block = if pushing && !lock(&self.state).inflight.is_empty() {
                (last_catch_up + CATCH_UP_EVERY)
                    .saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(1), CATCH_UP_EVERY)
            } else {
                EVENT_BLOCK
            };
            let read = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1024)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&events)
                .arg(&last)
                .clone();
            if ack.is_none() {
                ack = acks.due().map(|a| self.ack_cmd(&events, a));
            }
            let reply = match self.read_events(&mut conn, ack.as_ref(), &read) {
                Ok(v) => {
                    ack = None;
                    v
                }
                Err(e) => {
                    if ack.is_some() && protocol::classify(&e) == protocol::Failure::Fatal {
                        // Not the connection: do not let the ack block reading.
                        log::warn!(
                            "could not delete delivered results from Redis at {} (they \
                             expire within an hour): {e}",
                            protocol::redact(conn.url())
                        );
                        ack = None;
                    }
                    self.outage(&mut conn, &mut outage, &mut backoff, &e);
                    continue;
                }
            };
            if outage.take().is_some() {
                // Back after an outage: make sure our stream exists again.
                self.recreate_events(&mut conn, &events);
            }
            backoff = protocol::Backoff::new();
            let entries = read_reply(&reply);
            if !entries.is_empty() {
                let mut ids = Vec::with_capacity(entries.len());
                let mut started = Vec::new();
                let mut done = Vec::new();
                let mut inline = HashMap::new();
                for e in &entries {
                    ids.push(e.id.to_string());
                    match e.field("k") {
                        Some(b"s") => {
                            // A claim of several tasks names them all in one event.
                            started.extend(
                                e.fields
                                    .chunks(2)
                                    .filter(|kv| kv.len() == 2 && bytes(&kv[0]) == Some(b"t"))
                                    .filter_map(|kv| std::str::from_utf8(bytes(&kv[1])?).ok())
                                    .filter_map(|t| self.own_seq(t)),
                            )
                        }
                        Some(b"d") => self.take_done(e, &mut done, &mut inline),
                        _ => {}
                    }
                }
                if let Some(e) = entries.last() {
                    last = e.id.to_string();
                }
                self.mark_started(&started);
                // A batch of only `started` (or wake) events has nothing to take
                // or delete: no ack of its own (one script call less per task);
                // the next batch's ack trims these events too (its id is later).
                if !done.is_empty() {
                    match self.take_and_deliver(&mut conn, &done, &inline) {
                        Ok(results) => acks.add(results, ids.last().map(String::as_str), ids.len()),
                        Err(e) => {
                            // Reading events may work while fetching results keeps
                            // failing (permissions, a reply too large): that has its
                            // own clock, which a successful XREAD does not reset.
                            let since = *fetch_failing.get_or_insert_with(Instant::now);
                            if since.elapsed() >= self.cfg.reconnect_timeout {
                                self.fail_unfetched(&done, conn.url(), &e);
                                fetch_failing = None;
                            }
                            self.outage(&mut conn, &mut outage, &mut backoff, &e);
                            // Read these events again once Redis is back.
                            last = ids
                                .first()
                                .map(|id| before(id))
                                .unwrap_or_else(|| last.clone());
                            continue;
                        }
                    }
                    fetch_failing = None;
                }
            }
            // For a push that may be lost, or (once a second) to trim.
            let since = last_catch_up.elapsed();
            if pushing
                && (since >= TRIM_EVERY
                    || (since >= CATCH_UP_EVERY && self.sent_before(CATCH_UP_EVERY / 2)))
            {
                last_catch_up = Instant::now();
                self.catch_up_pushed(&mut conn, &mut pushed_last);
            }
            self.delete_released(&mut conn);
            if Instant::now() >= next_probe {
                next_probe = Instant::now() + PROBE_EVERY;
                if self.probe(&mut conn) {
                    // A finished task's event was read past (see `probe`):
                    // read both streams again from their start. What was
                    // delivered already is ignored (each task once).
                    last = String::from("0-0");
                    pushed_last = String::from("0-0");
                    if pushing {
                        last_catch_up = Instant::now();
                        self.catch_up_pushed(&mut conn, &mut pushed_last);
                    }
                }
            }
        }
        // An ack still unsent after a failed read, then what was not due.
        if let Some(ack) = ack.take() {
            self.send_ack(&mut conn, &ack);
        }
        if let Some(a) = acks.take() {
            self.send_ack(&mut conn, &self.ack_cmd(&events, a));
        }
        // Shut down: let the completions already read run (their callbacks
        // may still submit, and get Shutdown), then the event stream goes.
        self.courier.close(COURIER_DRAIN);
        let mut st = lock(&self.state);
        let left = std::mem::take(&mut st.releases);
        st.loop_done = true;
        drop(st);
        for task in left {
            self.release_result(task);
        }
        // Shut down: the event streams go with us.
        let _ = conn.query_retry(
            redis::cmd("DEL")
                .arg(&events)
                .arg(self.cfg.keys.pushed_events(&self.client_id)),
            Some(Instant::now() + Duration::from_secs(2)),
            &|| false,
        );
        lock(&self.state).loop_done = true;
        crate::future::helpers::unregister(self.owner);
        self.work.notify_all();
        self.finished.notify_all();
    }

    /// Fails the futures of `done` tasks whose results could not be read
    /// for `reconnect_timeout`; their events are then acknowledged without
    /// fetching (nothing waits for them any more).
    fn fail_unfetched(&self, done: &[(u64, String, u64, bool)], url: &str, e: &redis::RedisError) {
        let failed: Vec<Inflight> = {
            let mut st = lock(&self.state);
            done.iter()
                .filter_map(|(seq, ..)| st.inflight.remove(seq))
                .collect()
        };
        if failed.is_empty() {
            return;
        }
        let error = Error::Backend {
            message: format!(
                "could not read {} result(s) from Redis at {} for {:?}: {e}",
                failed.len(),
                protocol::redact(url),
                self.cfg.reconnect_timeout
            ),
        };
        log::error!("{error}");
        self.courier.send_all(failing(failed, error));
        self.work.notify_all();
    }

    fn should_stop(&self) -> bool {
        let st = lock(&self.state);
        st.closing && st.inflight.is_empty() && st.outbox.is_empty()
    }

    /// Handles a failed Redis call in the event loop: back off, and once the
    /// outage has lasted `reconnect_timeout`, fail every sent task.
    fn outage(
        &self,
        conn: &mut Conn,
        outage: &mut Option<Instant>,
        backoff: &mut protocol::Backoff,
        e: &redis::RedisError,
    ) {
        let since = *outage.get_or_insert_with(Instant::now);
        log::debug!("cluster event loop: {e}; retrying");
        if since.elapsed() >= self.cfg.reconnect_timeout {
            let error = Error::Backend {
                message: format!(
                    "lost contact with Redis at {} for {:?}: {e}",
                    protocol::redact(conn.url()),
                    self.cfg.reconnect_timeout
                ),
            };
            let failed: Vec<Inflight> = {
                let mut st = lock(&self.state);
                let sent: Vec<u64> = st
                    .inflight
                    .iter()
                    .filter(|(_, t)| t.sent_at.is_some())
                    .map(|(s, _)| *s)
                    .collect();
                sent.iter().filter_map(|s| st.inflight.remove(s)).collect()
            };
            if !failed.is_empty() {
                log::error!("{error}");
                self.courier.send_all(failing(failed, error));
                self.work.notify_all();
            }
            *outage = Some(Instant::now());
        }
        backoff.sleep(None);
    }

    /// True when a task in flight was sent at least `ago` ago (one whose
    /// push may have been lost).
    fn sent_before(&self, ago: Duration) -> bool {
        lock(&self.state)
            .inflight
            .values()
            .any(|t| t.sent_at.is_some_and(|s| s.elapsed() >= ago))
    }

    /// Delivers what the events of pushed results (see `pushed`) after
    /// `last` hold for tasks still in flight (a push that was lost, or not
    /// read yet), and trims them. A failure leaves them for the next time.
    fn catch_up_pushed(self: &Arc<Self>, conn: &mut Conn, last: &mut String) {
        // Whatever came since the last time, in bounded reads.
        for _ in 0..CATCH_UP_READS {
            if self.catch_up_once(conn, last) < CATCH_UP_COUNT {
                return;
            }
        }
    }

    /// One read of [`Shared::catch_up_pushed`]; how many events it took.
    fn catch_up_once(self: &Arc<Self>, conn: &mut Conn, last: &mut String) -> usize {
        let key = self.cfg.keys.pushed_events(&self.client_id);
        let read = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(CATCH_UP_COUNT)
            .arg("STREAMS")
            .arg(&key)
            .arg(last.as_str())
            .clone();
        let Ok(reply) = conn.query(&read) else {
            return 0;
        };
        let entries = read_reply(&reply);
        let Some(newest) = entries.last().map(|e| e.id.to_string()) else {
            return 0;
        };
        let mut done = Vec::with_capacity(entries.len());
        let mut inline = HashMap::new();
        for e in entries.iter().filter(|e| e.field("k") == Some(b"d")) {
            self.take_done(e, &mut done, &mut inline);
        }
        match self.take_and_deliver(conn, &done, &inline) {
            Ok(results) => lock(&self.state).releases.extend(results),
            Err(e) => {
                log::debug!("catching up on pushed results: {e}; later");
                return 0;
            }
        }
        // Delivered (here or by their push): they can go.
        let trim = redis::cmd("XTRIM")
            .arg(&key)
            .arg("MINID")
            .arg(after(&newest))
            .clone();
        if let Err(e) = conn.query(&trim) {
            log::debug!("could not trim the pushed events: {e}; later");
        }
        *last = newest;
        entries.len()
    }

    /// Makes the stream of pushed results' events (see `pushed`) again if
    /// it is gone (a server restarted empty): workers add to it only while
    /// it exists (`NOMKSTREAM`, which is how they learn a client is gone).
    pub(super) fn ensure_pushed_events(&self, conn: &mut Conn) {
        if self.push_value.is_none() {
            return;
        }
        let key = self.cfg.keys.pushed_events(&self.client_id);
        if let Ok(v) = conn.query(redis::cmd("EXISTS").arg(&key)) {
            if protocol::int(&v) == Some(0) {
                let mut pipe = redis::pipe();
                pipe.add_command(protocol::empty_stream(&key))
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(self.cfg.client_ttl.as_millis().max(1) as u64)
                    .ignore();
                if let Err(e) = conn.query_pipe(&pipe) {
                    log::warn!("could not make the stream of pushed results again: {e}");
                }
            }
        }
    }

    fn recreate_events(&self, conn: &mut Conn, events: &str) {
        self.ensure_pushed_events(conn);
        if let Ok(v) = conn.query(redis::cmd("EXISTS").arg(events)) {
            if protocol::int(&v) == Some(0) {
                log::warn!("the cluster's event stream vanished from Redis; recreating it");
                let _ = conn.query(&protocol::empty_stream(events));
            }
        }
    }

    /// Takes the "done" event `e` into `done` (sequence number, task id,
    /// result size, lazy), its result into `inline` when it came with it.
    /// A task not ours (a forged record naming us) gets sequence number 0:
    /// taken, to be dropped.
    fn take_done(
        &self,
        e: &protocol::Entry<'_>,
        done: &mut Vec<(u64, String, u64, bool)>,
        inline: &mut HashMap<u64, Vec<u8>>,
    ) {
        let Some(task) = e.field("t").and_then(|t| std::str::from_utf8(t).ok()) else {
            return;
        };
        // The result's size, so fetches can be bounded by bytes.
        let size = e
            .field("z")
            .and_then(|z| std::str::from_utf8(z).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        match self.own_seq(task) {
            Some(seq) => {
                if let Some(v) = e.field("v") {
                    // A small result comes with its event.
                    inline.insert(seq, v.to_vec());
                }
                done.push((seq, task.to_string(), size, e.field("l") == Some(b"1")));
            }
            None => done.push((0, task.to_string(), size, false)),
        }
    }

    /// The sequence number of one of our own task ids.
    pub(super) fn own_seq(&self, task: &str) -> Option<u64> {
        let (client, seq) = protocol::parse_task_id(task)?;
        (client == self.client_id).then_some(seq)
    }

    fn mark_started(&self, started: &[u64]) {
        if started.is_empty() {
            return;
        }
        let mut st = lock(&self.state);
        for seq in started {
            if let Some(t) = st.inflight.get_mut(seq) {
                t.started = true;
                for d in t.items.iter().flatten() {
                    d.set_running();
                }
            }
        }
    }

    /// Deletes the results nobody can ask for any more.
    fn delete_released(&self, conn: &mut Conn) {
        let released = std::mem::take(&mut lock(&self.state).releases);
        if released.is_empty() {
            return;
        }
        let mut del = redis::cmd("DEL");
        for task in &released {
            del.arg(self.cfg.keys.result(task));
        }
        let deadline = Some(Instant::now() + Duration::from_secs(2));
        if let Err(e) = conn.query_retry(&del, deadline, &|| false) {
            log::warn!("could not delete released results (they expire within an hour): {e}");
        }
    }

    /// Completes the futures of `done` tasks whose result stays in Redis
    /// (one successful item, large); returns the others.
    fn deliver_lazy<'a>(
        self: &Arc<Self>,
        done: &'a [(u64, String, u64, bool)],
    ) -> Vec<(u64, &'a str, u64)> {
        let mut rest = Vec::with_capacity(done.len());
        let mut remote = Vec::new();
        {
            let mut st = lock(&self.state);
            for (seq, task, size, lazy) in done {
                let single = *lazy && st.inflight.get(seq).is_some_and(|t| t.items.len() == 1);
                if !single {
                    rest.push((*seq, task.as_str(), *size));
                } else if let Some(inflight) = st.inflight.remove(seq) {
                    remote.push((inflight, task));
                }
            }
        }
        let jobs: Vec<Job> = remote
            .into_iter()
            .flat_map(|(inflight, task)| {
                inflight.items.into_iter().flatten().map(|d| {
                    let remote = Remote::new(task.clone(), self.clone());
                    Box::new(move || d.deliver_remote(remote)) as Job
                })
            })
            .collect();
        self.courier.send_all(jobs);
        rest
    }

    /// The next `XREAD` of events, in one round trip with `ack` (the
    /// deletion of the batch delivered before) when there is one.
    fn read_events(
        &self,
        conn: &mut Conn,
        ack: Option<&redis::Cmd>,
        read: &redis::Cmd,
    ) -> redis::RedisResult<redis::Value> {
        let Some(ack) = ack else {
            return conn.query(read);
        };
        let mut pipe = redis::pipe();
        pipe.add_command(ack.clone()).add_command(read.clone());
        let mut replies = conn.query_pipe(&pipe)?;
        Ok(replies.pop().unwrap_or(redis::Value::Nil))
    }

    /// The `ack` script call that deletes the result keys of `a` and trims
    /// the event stream `events` up to the last event `a` covers.
    fn ack_cmd(&self, events: &str, a: Ack) -> redis::Cmd {
        let mut keys = Vec::with_capacity(a.results.len() + 1);
        keys.push(events.to_string());
        keys.extend(a.results);
        let mut ack = self.scripts.call(ScriptName::Ack, &keys);
        if let Some(last) = a.last {
            // Events up to it are processed (they arrive in id order).
            ack.arg(last);
        }
        ack
    }

    /// Sends an ack on its own (at shutdown).
    fn send_ack(&self, conn: &mut Conn, ack: &redis::Cmd) {
        let deadline = Instant::now() + self.cfg.reconnect_timeout.min(Duration::from_secs(5));
        if let Err(e) = conn.query_retry(ack, Some(deadline), &|| false) {
            log::warn!(
                "could not delete delivered results from Redis at {} (they expire within \
                 an hour): {e}",
                protocol::redact(conn.url())
            );
        }
    }

    /// Reads the results of `done` tasks and completes their futures.
    /// Returns the keys of the results to delete, which the caller's `ack`
    /// deletes with a later read (so a reply lost to a dropped connection
    /// never loses a result: nothing is deleted before it is delivered).
    /// An error before delivery means: read the same events again (nothing
    /// was deleted).
    fn take_and_deliver(
        self: &Arc<Self>,
        conn: &mut Conn,
        done: &[(u64, String, u64, bool)],
        inline: &HashMap<u64, Vec<u8>>,
    ) -> redis::RedisResult<Vec<String>> {
        // Large single values stay in Redis (their futures fetch them when
        // asked); the rest are read here and their results deleted below.
        let done: Vec<(u64, &str, u64)> = self.deliver_lazy(done);
        let results: Vec<String> = done
            .iter()
            .map(|(_, t, _)| self.cfg.keys.result(t))
            .collect();
        // Fetch only what a future still waits for (a task failed meanwhile,
        // e.g. after a long outage, is not fetched again, so a fetch that
        // keeps failing cannot keep the loop spinning on the same events),
        // in MGETs of at most FETCH_BYTES each.
        let wanted: Vec<usize> = {
            let st = lock(&self.state);
            (0..done.len())
                .filter(|&i| done[i].0 != 0 && st.inflight.contains_key(&done[i].0))
                .collect()
        };
        // Results that came with their events need no fetch.
        let (now, wanted): (Vec<usize>, Vec<usize>) = wanted
            .into_iter()
            .partition(|&i| inline.contains_key(&done[i].0));
        if !now.is_empty() {
            self.deliver_group(&done, &now, |_, i| {
                inline.get(&done[i].0).map(Vec::as_slice).unwrap_or(&[])
            });
        }
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut bytes_in_group = 0u64;
        for i in wanted {
            let size = done[i].2;
            match groups.last_mut() {
                Some(g) if bytes_in_group + size <= FETCH_BYTES => {
                    g.push(i);
                    bytes_in_group += size;
                }
                _ => {
                    groups.push(vec![i]);
                    bytes_in_group = size;
                }
            }
        }
        for group in groups {
            let mut mget = redis::cmd("MGET");
            for &i in &group {
                mget.arg(&results[i]);
            }
            let reply = conn.query(&mget)?;
            let values = array(&reply).unwrap_or(&[]);
            self.deliver_group(&done, &group, |j, _| {
                values.get(j).and_then(bytes).unwrap_or(&[])
            });
        }
        // Delivered: the results and events can go. A result that came in
        // its event under a bit of the finished bitmap has no key (see
        // `finish_fn.lua`).
        Ok(results
            .into_iter()
            .zip(&done)
            .filter_map(|(key, (seq, task, _))| {
                let keyless = inline.contains_key(seq)
                    && self.own_seq(task) == Some(*seq)
                    && protocol::bit_of(*seq) >= 0;
                (!keyless).then_some(key)
            })
            .collect())
    }

    /// Completes the futures of the tasks `done[i]` for `i` in `group`, whose
    /// result envelopes `envelope(j, i)` gives (`j`: the position in `group`).
    fn deliver_group<'e>(
        &self,
        done: &[(u64, &str, u64)],
        group: &[usize],
        envelope: impl Fn(usize, usize) -> &'e [u8],
    ) {
        let mut outcomes = Vec::with_capacity(group.len());
        let idle = {
            let mut st = lock(&self.state);
            for (j, &i) in group.iter().enumerate() {
                let (seq, task, _) = &done[i];
                let Some(inflight) = st.inflight.remove(seq) else {
                    continue;
                };
                outcomes.push((
                    inflight,
                    Outcome::open(self.cfg.secret.as_bytes(), task, envelope(j, i)),
                ));
            }
            st.inflight.is_empty() && st.closing
        };
        self.complete(outcomes, idle);
    }

    /// Completes the futures of `outcomes` (taken out of flight); `idle`:
    /// nothing is in flight any more and the client is closing (the
    /// dispatcher, the only one waiting on `work`, then has a wake-up to
    /// send; at any other time waking it would only cost a context switch).
    pub(super) fn complete(&self, outcomes: Vec<(Inflight, Result<Outcome>)>, idle: bool) {
        // Futures nobody listens to complete here; the rest (and their
        // done-callbacks) on the courier.
        let jobs: Vec<Job> = outcomes
            .into_iter()
            .flat_map(|(inflight, outcome)| completions(inflight, outcome))
            .collect();
        self.courier.send_all(jobs);
        if idle {
            self.work.notify_all();
        }
    }

    /// Sends again tasks that were sent a while ago and whose record and
    /// result are both gone from Redis (a server restarted without
    /// persistence, a flush): while the client lives, no call is lost.
    ///
    /// Returns true when such a task has finished (its bit is set) but its
    /// event has not come, seconds later: the event loop may have read past
    /// it. Stream ids are made from the server's clock, so an event stream
    /// deleted and made again within the millisecond of the last event read
    /// gives its new events the ids already read (seen in
    /// `tests/cluster_plain.rs`: the event of the next task never came, and
    /// its future waited forever). The caller then reads its streams again
    /// from the start.
    fn probe(&self, conn: &mut Conn) -> bool {
        let mut read_past = false;
        let old: Vec<u64> = {
            let st = lock(&self.state);
            st.inflight
                .iter()
                .filter(|(_, t)| t.sent_at.is_some_and(|s| s.elapsed() >= PROBE_EVERY))
                .map(|(s, _)| *s)
                .collect()
        };
        for batch in old.chunks(protocol::SUBMIT_BATCH) {
            let mut keys = Vec::with_capacity(batch.len() * 2 + 1);
            keys.push(self.cfg.keys.finished(&self.client_id));
            for seq in batch {
                let task = protocol::task_id(&self.client_id, *seq);
                keys.push(self.cfg.keys.task(&task));
                keys.push(self.cfg.keys.result(&task));
            }
            let mut cmd = self.scripts.call(ScriptName::Probe, &keys);
            for seq in batch {
                cmd.arg(protocol::bit_of(*seq));
            }
            let Ok(reply) = conn.query(&cmd) else {
                return read_past;
            };
            let answers = array(&reply).unwrap_or(&[]);
            read_past |= answers.iter().any(|a| protocol::int(a) == Some(2));
            let gone: Vec<u64> = batch
                .iter()
                .zip(answers)
                .filter(|(_, a)| protocol::int(a) == Some(0))
                .map(|(seq, _)| *seq)
                .collect();
            if !gone.is_empty() {
                let sent = self.resubmit(&gone);
                log::warn!(
                    "{sent} task(s) vanished from Redis at {} without a result (was the server \
                     restarted without persistence, or the namespace deleted?); sent them again",
                    protocol::redact(conn.url())
                );
            }
        }
        if read_past {
            log::warn!(
                "finished task(s) whose events did not come (was the event stream deleted and \
                 made again?); reading the events again"
            );
        }
        read_past
    }
}

/// The stream id just after `id` (`XTRIM … MINID` of it drops `id`).
fn after(id: &str) -> String {
    match id
        .split_once('-')
        .map(|(ms, seq)| (ms.parse::<u64>(), seq.parse::<u64>()))
    {
        Some((Ok(ms), Ok(u64::MAX))) => format!("{}-0", ms.saturating_add(1)),
        Some((Ok(ms), Ok(seq))) => format!("{ms}-{}", seq + 1),
        _ => "0-1".into(),
    }
}

/// A stream id just before `id`, to read `id` again.
fn before(id: &str) -> String {
    match id.split_once('-') {
        Some((ms, seq)) => match seq.parse::<u64>() {
            Ok(0) => match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => format!("{}-{}", ms - 1, u64::MAX),
                _ => "0-0".into(),
            },
            Ok(s) => format!("{ms}-{}", s - 1),
            Err(_) => "0-0".into(),
        },
        None => "0-0".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_steps_back_one_id() {
        assert_eq!(before("5-3"), "5-2");
        assert_eq!(before("5-0"), format!("4-{}", u64::MAX));
        assert_eq!(before("0-0"), "0-0");
        assert_eq!(before("junk"), "0-0");
    }

    #[test]
    fn after_steps_forward_one_id() {
        assert_eq!(after("5-3"), "5-4");
        assert_eq!(after(&format!("4-{}", u64::MAX)), "5-0");
        assert_eq!(after("junk"), "0-1");
    }
}

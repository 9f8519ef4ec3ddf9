//! Results that stay in Redis (remote values): hold, fetch, store, release.

use super::*;

impl Shared {
    /// Deletes the result of `task`, which nobody can ask for any more: by
    /// the event loop, or (once it is gone) at once.
    pub(crate) fn release_result(&self, task: String) {
        lock(&self.held).remove(&task);
        let mut st = lock(&self.state);
        if !st.loop_done {
            st.releases.push(task);
            return;
        }
        drop(st);
        let key = self.cfg.keys.result(&task);
        let mut conn = lock(&self.fetch_conn);
        let deadline = Some(Instant::now() + Duration::from_secs(2));
        if let Err(e) = conn.query_retry(redis::cmd("DEL").arg(&key), deadline, &|| false) {
            log::warn!("could not delete {key} from Redis (it expires within an hour): {e}");
        }
    }

    /// Notes that the result of `task` stays in Redis while a handle lives.
    pub(crate) fn hold_result(&self, task: &str) {
        lock(&self.held).insert(task.to_string());
    }

    /// Reads the value of a one-item result that stayed in Redis.
    pub(crate) fn fetch_value(&self, task: &str) -> Result<Vec<u8>> {
        let key = self.cfg.keys.result(task);
        let deadline = Some(Instant::now() + self.cfg.reconnect_timeout);
        let reply = lock(&self.fetch_conn)
            .query_retry(redis::cmd("GET").arg(&key), deadline, &|| false)
            .map_err(|e| protocol::backend("could not read a result", &self.cfg.url, &e))?;
        let envelope = bytes(&reply).unwrap_or(&[]);
        crate::cluster::remote::single_value(self.cfg.secret.as_bytes(), task, envelope)
    }

    /// Writes `value` to Redis as the sealed result of a task id of its own
    /// (`put`); returns that task id.
    pub(crate) fn store_value(&self, value: Vec<u8>) -> Result<String> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let task = protocol::task_id(&self.client_id, seq);
        let envelope = Outcome::Ran {
            worker: format!("client {}", self.client_id),
            items: vec![ItemOutcome::Value(value)],
        }
        .seal(self.cfg.secret.as_bytes(), &task);
        let deadline = Some(Instant::now() + self.cfg.reconnect_timeout);
        lock(&self.fetch_conn)
            .query_retry(
                redis::cmd("SET")
                    .arg(self.cfg.keys.result(&task))
                    .arg(envelope)
                    .arg("EX")
                    .arg(protocol::RESULT_TTL.as_secs()),
                deadline,
                &|| false,
            )
            .map_err(|e| protocol::backend("could not store a value", &self.cfg.url, &e))?;
        Ok(task)
    }
}

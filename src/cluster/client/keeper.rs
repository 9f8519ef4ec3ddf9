//! The keeper thread: the client's signed liveness, and the lifetime of
//! its keys.

use super::*;

impl Shared {
    // -----------------------------------------------------------------------
    // Keeper: the client's liveness, and the lifetime of its keys.

    /// Writes a fresh signed liveness value (expiring `client_ttl` from now,
    /// in Redis time) and extends the lifetime of the client's event stream
    /// and finished-task bitmap by as much. A crashed client stops doing
    /// this: its keys expire, and workers drop its queued tasks.
    pub(super) fn refresh(&self, conn: &mut Conn) -> redis::RedisResult<()> {
        let time = conn.query(&redis::cmd("TIME"))?;
        let parts = array(&time).unwrap_or(&[]);
        let field = |i: usize| {
            parts
                .get(i)
                .and_then(protocol::text)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let now_ms = field(0) * 1000 + field(1) / 1000;
        let ttl_ms = self.cfg.client_ttl.as_millis().max(1) as u64;
        let value = protocol::live_value(
            self.cfg.secret.as_bytes(),
            &self.cfg.namespace,
            &self.client_id,
            now_ms + ttl_ms,
        );
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.cfg.keys.live(&self.client_id))
            .arg(&value)
            .arg("PX")
            .arg(ttl_ms)
            .cmd("PEXPIRE")
            .arg(self.cfg.keys.events(&self.client_id))
            .arg(ttl_ms)
            .cmd("PEXPIRE")
            .arg(self.cfg.keys.finished(&self.client_id))
            .arg(ttl_ms);
        if let Some(push) = &self.push_value {
            pipe.cmd("PEXPIRE")
                .arg(self.cfg.keys.pushed_events(&self.client_id))
                .arg(ttl_ms)
                .ignore()
                .cmd("SET")
                .arg(self.cfg.keys.push(&self.client_id))
                .arg(push)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        }
        // Results that stay in Redis for this client's futures live as long
        // as the client (with the grace `finish` gives them).
        for task in lock(&self.held).iter() {
            pipe.cmd("PEXPIRE")
                .arg(self.cfg.keys.result(task))
                .arg(2 * ttl_ms + 1000)
                .ignore();
        }
        conn.query_pipe(&pipe)?;
        *lock(&self.live) = value;
        Ok(())
    }

    pub(super) fn keeper(self: Arc<Self>, mut conn: Conn) {
        // Often enough that a server restarted empty learns again soon
        // that this client is alive (submits restore it too).
        let every =
            (self.cfg.client_ttl / 4).clamp(Duration::from_millis(20), Duration::from_secs(2));
        let mut next = Instant::now() + every;
        loop {
            {
                let mut st = lock(&self.state);
                loop {
                    if st.loop_done {
                        break;
                    }
                    let now = Instant::now();
                    if now >= next {
                        break;
                    }
                    st = self
                        .finished
                        .wait_timeout(st, next - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                if st.loop_done {
                    break;
                }
            }
            next = Instant::now() + every;
            if let Err(e) = self.refresh(&mut conn) {
                log::debug!("cluster keeper: {e}; retrying");
                next = Instant::now() + every.min(Duration::from_millis(200));
            }
        }
        let _ = conn.query_retry(
            redis::cmd("DEL")
                .arg(self.cfg.keys.live(&self.client_id))
                .arg(self.cfg.keys.finished(&self.client_id))
                .arg(self.cfg.keys.push(&self.client_id)),
            Some(Instant::now() + Duration::from_secs(2)),
            &|| false,
        );
    }
}

//! Whether the client that submitted a task is still there: its signed
//! liveness value, checked once and cached for up to a second.

use super::*;

impl Worker {
    /// A fresh delivery token (see `start_fn.lua`).
    pub(super) fn token(&self) -> String {
        format!(
            "{}#{}",
            self.consumer,
            self.deliveries.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The cached liveness value (client, value) while it may be trusted.
    pub(super) fn cached_live(&self) -> Option<(String, Vec<u8>)> {
        let cache = protocol_lock(&self.live_cache);
        cache
            .as_ref()
            .filter(|c| Instant::now() < c.until)
            .map(|c| (c.client.clone(), c.value.clone()))
    }

    /// Checks a liveness value read by `start` (`=`: the cached one, still
    /// trusted when the script was sent), caching it when it verifies.
    pub(super) fn client_alive(&self, client: &str, value: &[u8], now: &[u8]) -> bool {
        if value == b"=" {
            return true;
        }
        let now_ms = std::str::from_utf8(now)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        let alive = protocol::client_alive(
            self.cfg.secret.as_bytes(),
            &self.cfg.namespace,
            client,
            value,
            now_ms,
        );
        if alive {
            let expires_ms = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.split_once(':'))
                .and_then(|(e, _)| e.parse::<u64>().ok())
                .unwrap_or(0);
            let left = Duration::from_millis(expires_ms.saturating_sub(now_ms));
            *protocol_lock(&self.live_cache) = Some(LiveCache {
                client: client.to_string(),
                value: value.to_vec(),
                until: Instant::now() + left.min(LIVE_CACHE),
            });
        }
        alive
    }
}

//! The cluster's decoders of bytes from Redis, exposed for the fuzz targets
//! only (`fuzz/fuzz_targets/cluster_*.rs`); not part of the API.
//!
//! Everything a worker or client reads from Redis is untrusted: these must
//! return `None`/`false`/an error for malformed input and never panic,
//! allocate without bound or read out of range.

use super::protocol::{self, Outcome};

/// Decodes a result envelope's body (what follows the signature); returns
/// the number of item outcomes (0 for a non-`Ran` outcome).
pub fn envelope_body(body: &[u8]) -> Option<usize> {
    Outcome::decode_body(body).map(|o| match o {
        Outcome::Ran { items, .. } => items.len(),
        _ => 0,
    })
}

/// Seals a decodable body again and opens it: true when it round-trips
/// (`None` when the body does not decode).
pub fn envelope_round_trip(body: &[u8]) -> Option<bool> {
    let outcome = Outcome::decode_body(body)?;
    let sealed = outcome.seal(b"fuzz", "0123456789abcdef.1");
    Some(Outcome::open(b"fuzz", "0123456789abcdef.1", &sealed).as_ref() == Ok(&outcome))
}

/// Opens a whole envelope (signature first) under a fixed secret.
pub fn open_envelope(envelope: &[u8]) -> bool {
    Outcome::open(b"fuzz", "0123456789abcdef.1", envelope).is_ok()
}

/// Splits a task's argument blob into `count` items.
pub fn split_items(blob: &[u8], count: usize) -> Option<Vec<&[u8]>> {
    protocol::split_items(blob, count)
}

/// Parses a task id into its client and sequence number.
pub fn parse_task_id(task: &str) -> Option<(&str, u64)> {
    protocol::parse_task_id(task)
}

/// Checks a client liveness value.
pub fn client_alive(value: &[u8], now_ms: u64) -> bool {
    protocol::client_alive(b"fuzz", "ns", "0123456789abcdef", value, now_ms)
}

/// A client's signed push address value (see `Keys::push`), for tests that
/// stand in for a client's listener.
pub fn push_value(secret: &[u8], namespace: &str, client: &str, addr: &str, token: &str) -> String {
    protocol::push_value(secret, namespace, client, addr, token)
}

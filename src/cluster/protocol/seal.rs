//! Signing: task records, client liveness values, push targets and
//! result envelopes are HMAC-SHA256 under the cluster secret.

use crate::ship;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of a signature.
pub(crate) const SIG_LEN: usize = 32;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable_mac(),
    }
}

#[cold]
fn unreachable_mac() -> HmacSha256 {
    // A zero-length key is valid for HMAC too.
    HmacSha256::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| std::process::abort())
}

/// What a task record's signature covers.
pub(crate) struct TaskSeal<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) task: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) trampoline: u64,
    pub(crate) build_id: &'a str,
    pub(crate) items: u64,
    pub(crate) args: &'a [u8],
}

fn put_field(m: &mut HmacSha256, b: &[u8]) {
    m.update(&(b.len() as u64).to_le_bytes());
    m.update(b);
}

fn task_mac(secret: &[u8], t: &TaskSeal<'_>) -> HmacSha256 {
    let mut m = mac(secret);
    m.update(b"fanout-cluster-task-v2\0");
    put_field(&mut m, t.namespace.as_bytes());
    put_field(&mut m, t.task.as_bytes());
    put_field(&mut m, t.nonce.as_bytes());
    m.update(&t.trampoline.to_le_bytes());
    put_field(&mut m, t.build_id.as_bytes());
    m.update(&t.items.to_le_bytes());
    put_field(&mut m, t.args);
    m
}

/// The signature of a task record: HMAC-SHA256 under the cluster secret
/// over its namespace, id, nonce, trampoline, build id, item count and
/// arguments (so a record copied to another namespace sharing the secret
/// does not verify there).
pub(crate) fn sign_task(secret: &[u8], t: &TaskSeal<'_>) -> [u8; SIG_LEN] {
    task_mac(secret, t).finalize().into_bytes().into()
}

/// Checks a task record's signature in constant time.
pub(crate) fn verify_task(secret: &[u8], t: &TaskSeal<'_>, signature: &[u8]) -> bool {
    task_mac(secret, t).verify_slice(signature).is_ok()
}

fn live_mac(secret: &[u8], namespace: &str, client: &str, expires_ms: u64) -> HmacSha256 {
    let mut m = mac(secret);
    m.update(b"fanout-cluster-live-v1\0");
    put_field(&mut m, namespace.as_bytes());
    put_field(&mut m, client.as_bytes());
    m.update(&expires_ms.to_le_bytes());
    m
}

/// A client's liveness value: `<expires, ms of Redis time>:<hex signature>`.
pub(crate) fn live_value(secret: &[u8], namespace: &str, client: &str, expires_ms: u64) -> String {
    let sig = live_mac(secret, namespace, client, expires_ms)
        .finalize()
        .into_bytes();
    format!("{expires_ms}:{}", ship::hex(&sig))
}

fn push_mac(secret: &[u8], namespace: &str, client: &str, addr: &str, token: &str) -> HmacSha256 {
    let mut m = mac(secret);
    m.update(b"fanout-cluster-push-v1\0");
    put_field(&mut m, namespace.as_bytes());
    put_field(&mut m, client.as_bytes());
    put_field(&mut m, addr.as_bytes());
    put_field(&mut m, token.as_bytes());
    m
}

/// A client's push address value: `<addr> <token> <hex signature>`.
pub(crate) fn push_value(
    secret: &[u8],
    namespace: &str,
    client: &str,
    addr: &str,
    token: &str,
) -> String {
    let sig = push_mac(secret, namespace, client, addr, token)
        .finalize()
        .into_bytes();
    format!("{addr} {token} {}", ship::hex(&sig))
}

/// The address and token in a push value for `client` signed under
/// `secret`; `None` for anything else.
pub(crate) fn push_target(
    secret: &[u8],
    namespace: &str,
    client: &str,
    value: &[u8],
) -> Option<(std::net::SocketAddr, String)> {
    let mut parts = std::str::from_utf8(value).ok()?.split(' ');
    let (addr, token, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let sig = unhex(sig)?;
    push_mac(secret, namespace, client, addr, token)
        .verify_slice(&sig)
        .ok()?;
    Some((addr.parse().ok()?, token.to_string()))
}

/// True if `value` is a liveness value for `client` signed under `secret`
/// that has not expired at `now_ms` (Redis time). Anything else — missing,
/// malformed, forged, or an old value written back — means the client is gone.
pub(crate) fn client_alive(
    secret: &[u8],
    namespace: &str,
    client: &str,
    value: &[u8],
    now_ms: u64,
) -> bool {
    let Some((expires, sig)) = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.split_once(':'))
    else {
        return false;
    };
    let Ok(expires_ms) = expires.parse::<u64>() else {
        return false;
    };
    let Some(sig) = unhex(sig) else {
        return false;
    };
    expires_ms > now_ms
        && live_mac(secret, namespace, client, expires_ms)
            .verify_slice(&sig)
            .is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * SIG_LEN {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(super) fn result_mac(secret: &[u8], task: &str, body: &[u8]) -> HmacSha256 {
    let mut m = mac(secret);
    m.update(b"fanout-cluster-result-v1\0");
    m.update(&(task.len() as u64).to_le_bytes());
    m.update(task.as_bytes());
    m.update(body);
    m
}

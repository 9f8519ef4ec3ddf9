//! Result envelopes: signature, then a small binary body.

use super::*;
use crate::ship::{self, WireError};
use crate::Error;
use hmac::Mac;

/// One item's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemOutcome {
    /// The encoded return value.
    Value(Vec<u8>),
    /// The call failed in the worker.
    Failed(WireError),
    /// The item was cancelled before the task started.
    Skipped,
}

/// What a worker reports for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The task ran; one outcome per item.
    Ran {
        worker: String,
        items: Vec<ItemOutcome>,
    },
    /// The worker refused the call (different build, bad trampoline, malformed record).
    Refused { worker: String, message: String },
    /// The task's workers kept dying.
    Lost { worker: String, status: String },
    /// The record's signature did not verify.
    Rejected { worker: String, reason: String },
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let b = self.0.get(4..4 + len)?;
        self.0 = &self.0[4 + len..];
        Some(b)
    }
    fn string(&mut self) -> Option<String> {
        Some(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

impl Outcome {
    /// The signed envelope for task `task`.
    pub(crate) fn seal(&self, secret: &[u8], task: &str) -> Vec<u8> {
        let mut body = vec![0u8; SIG_LEN];
        match self {
            Outcome::Ran { worker, items } => {
                body.push(0);
                put_bytes(&mut body, worker.as_bytes());
                body.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for item in items {
                    match item {
                        ItemOutcome::Value(v) => {
                            body.push(0);
                            put_bytes(&mut body, v);
                        }
                        ItemOutcome::Failed(e) => {
                            body.push(1);
                            let encoded = postcard::to_allocvec(e).unwrap_or_default();
                            put_bytes(&mut body, &encoded);
                        }
                        ItemOutcome::Skipped => body.push(2),
                    }
                }
            }
            Outcome::Refused { worker, message } => {
                body.push(1);
                put_bytes(&mut body, worker.as_bytes());
                put_bytes(&mut body, message.as_bytes());
            }
            Outcome::Lost { worker, status } => {
                body.push(2);
                put_bytes(&mut body, worker.as_bytes());
                put_bytes(&mut body, status.as_bytes());
            }
            Outcome::Rejected { worker, reason } => {
                body.push(3);
                put_bytes(&mut body, worker.as_bytes());
                put_bytes(&mut body, reason.as_bytes());
            }
        }
        let sig = result_mac(secret, task, &body[SIG_LEN..])
            .finalize()
            .into_bytes();
        body[..SIG_LEN].copy_from_slice(&sig);
        body
    }

    /// Makes the sealed envelope fit in `limit` bytes: the largest values
    /// are replaced, one by one, with a `Codec` error naming their size.
    /// Returns the envelope.
    pub(crate) fn seal_within(&mut self, secret: &[u8], task: &str, limit: u64) -> Vec<u8> {
        // Lengths inside the envelope are u32: never let one wrap.
        let limit = limit.min(u64::from(u32::MAX));
        loop {
            let sealed = self.seal(secret, task);
            if sealed.len() as u64 <= limit {
                return sealed;
            }
            let Outcome::Ran { items, .. } = self else {
                return sealed;
            };
            let largest = items
                .iter_mut()
                .filter_map(|i| match i {
                    ItemOutcome::Value(v) => Some((v.len(), i)),
                    _ => None,
                })
                .max_by_key(|(len, _)| *len);
            let Some((len, item)) = largest else {
                return sealed;
            };
            *item = ItemOutcome::Failed(WireError::Codec {
                type_name: "the call's result".into(),
                message: format!(
                    "the encoded result is {len} bytes ({} in all with the rest of the \
                     task), more than Redis accepts in one value (proto-max-bulk-len = \
                     {limit} bytes); return less, or store large data elsewhere",
                    sealed.len()
                ),
            });
        }
    }

    /// Verifies and decodes an envelope. Every byte here came from Redis, so
    /// nothing is trusted: a bad signature or a malformed body is an error.
    pub(crate) fn open(secret: &[u8], task: &str, envelope: &[u8]) -> Result<Outcome, Error> {
        if envelope.is_empty() {
            return Err(Error::Backend {
                message: format!(
                    "the result of task {task} vanished from Redis before the client read it \
                     (was the server restarted without persistence, or the key deleted?)"
                ),
            });
        }
        let (sig, body) = envelope.split_at(SIG_LEN.min(envelope.len()));
        if result_mac(secret, task, body).verify_slice(sig).is_err() {
            return Err(Error::Backend {
                message: format!(
                    "the result of task {task} is not signed with this cluster's secret; \
                     the workers use a different FANOUT_CLUSTER_SECRET, or something else \
                     wrote to the namespace"
                ),
            });
        }
        Self::decode_body(body).ok_or_else(|| Error::Backend {
            message: format!("the result envelope of task {task} is malformed"),
        })
    }

    pub(crate) fn decode_body(body: &[u8]) -> Option<Outcome> {
        let mut r = Reader(body);
        let kind = r.byte()?;
        let worker = r.string()?;
        let outcome = match kind {
            0 => {
                let n = u32::from_le_bytes(r.0.get(..4)?.try_into().ok()?) as usize;
                r.0 = &r.0[4..];
                let mut items = Vec::with_capacity(n.min(r.0.len()));
                for _ in 0..n {
                    items.push(match r.byte()? {
                        0 => ItemOutcome::Value(r.bytes()?.to_vec()),
                        1 => ItemOutcome::Failed(postcard::from_bytes(r.bytes()?).ok()?),
                        2 => ItemOutcome::Skipped,
                        _ => return None,
                    });
                }
                Outcome::Ran { worker, items }
            }
            1 => Outcome::Refused {
                worker,
                message: r.string()?,
            },
            2 => Outcome::Lost {
                worker,
                status: r.string()?,
            },
            3 => Outcome::Rejected {
                worker,
                reason: r.string()?,
            },
            _ => return None,
        };
        r.0.is_empty().then_some(outcome)
    }
}

/// The build id as stored in task records.
pub(crate) fn build_id_hex() -> String {
    ship::hex(ship::build_id())
}

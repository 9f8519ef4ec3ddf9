//! `Cluster::current()`: inside a cluster task, a client of the same
//! namespace and secret, built on first use and shared by the worker's tasks.

use super::Cluster;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// What a worker serves, remembered for `Cluster::current`.
pub(super) struct Serving {
    pub(super) url: String,
    pub(super) namespace: String,
    pub(super) secret: String,
    pub(super) lease: Duration,
}

static SERVING: OnceLock<Serving> = OnceLock::new();
static CLIENT: Mutex<Option<Cluster>> = Mutex::new(None);

/// Called once by a worker process before it serves.
pub(super) fn serving(s: Serving) {
    let _ = SERVING.set(s);
}

/// The worker's client, if this process is a cluster worker.
pub(super) fn current() -> Option<Cluster> {
    let serving = SERVING.get()?;
    let mut client = super::client::lock(&CLIENT);
    if let Some(c) = client.as_ref() {
        return Some(c.clone());
    }
    let built = Cluster::builder(&serving.url)
        .namespace(serving.namespace.clone())
        .secret(serving.secret.clone())
        .lease(serving.lease)
        .build();
    match built {
        Ok(c) => {
            *client = Some(c.clone());
            Some(c)
        }
        Err(e) => {
            log::error!("Cluster::current could not connect a client: {e}");
            None
        }
    }
}

/// Shuts the worker's client down (when the worker drains), so its event
/// stream does not outlive it.
pub(super) fn close() {
    let client = super::client::lock(&CLIENT).take();
    drop(client);
}

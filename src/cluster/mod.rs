//! [`Cluster`]: calls shipped through Redis Streams to worker processes of
//! this same binary, on this host or any other.
//!
//! # How it fits together
//!
//! Redis (6.2+, or Valkey) is the queue, the lease keeper and the result
//! store; nothing in fanout is a central scheduler. A client signs each task
//! record (HMAC-SHA256 under the cluster secret) and adds it to the
//! namespace's stream; workers pull entries through a consumer group, only as
//! many as they have free slots, verify the signature and the build id, run
//! the call and write the signed result with `SET NX`, so a task redelivered
//! after a worker's death still resolves exactly once. The client's event
//! loop completes futures from its own completion stream. Keys, scripts and
//! the task's life are described in `protocol.rs`; the worker in `worker.rs`.
//!
//! # Workers
//!
//! `local_workers(n)` starts and supervises n worker processes of this binary
//! on this host. On any other host, start the same binary with:
//!
//! ```text
//! FANOUT_CLUSTER_URL=redis://host:6379/0 \
//! FANOUT_CLUSTER_NAMESPACE=myjobs \
//! FANOUT_CLUSTER_SECRET=the-shared-secret \
//! FANOUT_CLUSTER_CONCURRENCY=4 \
//! FANOUT_CLUSTER_LEASE_MS=30000 \
//! ./your-binary
//! ```
//!
//! The process becomes a worker before `main` runs; SIGTERM drains it.
//!
//! # What stays in Redis
//!
//! After every task is consumed and the clients and workers have shut down,
//! the namespace holds only `{ns}:q`, the (empty) task stream, with its
//! consumer group `fanout` (and consumers of workers still running).
//! Transient keys: a task record until it is finished, a result until the
//! client takes it (an hour at most if the client went away), a rejected or
//! cancelled record for an hour, a client's event stream while it runs, and
//! how a local worker died (`{ns}:died:<host>:<pid>`, until the cluster that
//! started it shuts down; an hour at most).
//!
//! # Done-callbacks
//!
//! A cluster future's done-callbacks run on one of the client's courier
//! threads, never on the event loop that reads results from Redis: a
//! callback may block (even on another future of the same cluster) without
//! holding back any other future. When every courier thread is blocked in a
//! callback and more results wait, another courier thread starts.
//!
//! # Cancelling
//!
//! [`Future::cancel`] succeeds until the client has heard that a worker
//! started the task; the cancellation then reaches Redis (the record is
//! marked cancelled and workers skip it). A worker that picked the task up
//! in between still runs it, and its result is discarded.

mod client;
mod contain;
mod courier;
mod protocol;
mod remote;
mod worker;

use crate::executor::Submitter;
use crate::{Error, Executor, Future, Payload, Result, Task};
use client::{Config, Shared};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// An executor whose workers pull calls from Redis Streams: processes of this
/// same binary on this host ([`ClusterBuilder::local_workers`]) or any other.
///
/// ```no_run
/// use fanout::{Cluster, Executor};
///
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// let cluster = Cluster::builder("redis://127.0.0.1:6379/0")
///     .namespace("example")
///     .local_workers(2)
///     .build()?;
/// assert_eq!(cluster.submit(add, (1, 2))?.result()?, 3);
/// let squares: Vec<u64> = cluster.map(|x: u64| x * x, 0..4)?.map(Result::unwrap).collect();
/// assert_eq!(squares, [0, 1, 4, 9]);
/// cluster.shutdown(true, false);
/// # Ok::<(), fanout::Error>(())
/// ```
pub struct Cluster {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Configures a [`Cluster`]; see [`Cluster::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// let cluster = fanout::Cluster::builder("redis://:password@10.0.0.5:6379/0")
///     .namespace("nightly")
///     .secret("shared with the remote workers")
///     .local_workers(4)
///     .lease(Duration::from_secs(10))
///     .max_deliveries(2)
///     .build()?;
/// # Ok::<(), fanout::Error>(())
/// ```
#[derive(Clone)]
pub struct ClusterBuilder {
    url: String,
    namespace: String,
    secret: Option<String>,
    local_workers: usize,
    lease: Duration,
    max_deliveries: u32,
    reconnect_timeout: Duration,
    client_ttl: Duration,
}

impl fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("url", &protocol::redact(&self.url))
            .field("namespace", &self.namespace)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("local_workers", &self.local_workers)
            .field("lease", &self.lease)
            .field("max_deliveries", &self.max_deliveries)
            .field("reconnect_timeout", &self.reconnect_timeout)
            .field("client_ttl", &self.client_ttl)
            .finish()
    }
}

impl Cluster {
    /// Starts configuring a cluster on the Redis server at `url`
    /// (`redis://[user:password@]host:port/db`, or `rediss://` with the
    /// `tls` feature).
    ///
    /// ```no_run
    /// let cluster = fanout::Cluster::builder("redis://127.0.0.1:6379/0").local_workers(1).build()?;
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn builder(url: &str) -> ClusterBuilder {
        ClusterBuilder {
            url: url.to_string(),
            namespace: "fanout".into(),
            secret: None,
            local_workers: 0,
            lease: Duration::from_secs(30),
            max_deliveries: 3,
            reconnect_timeout: Duration::from_secs(30),
            client_ttl: Duration::from_secs(60),
        }
    }

    /// The process ids of the local workers started by
    /// [`ClusterBuilder::local_workers`] (replacements included).
    ///
    /// ```no_run
    /// let cluster = fanout::Cluster::builder("redis://127.0.0.1:6379/0").local_workers(2).build()?;
    /// assert_eq!(cluster.worker_pids().len(), 2);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.worker_pids()
    }
}

/// Checks that a namespace is usable inside a `{...}` hash tag.
pub(crate) fn check_namespace(namespace: &str) -> Result<()> {
    if namespace.is_empty()
        || namespace.len() > 128
        || namespace.contains(['{', '}'])
        || namespace.chars().any(char::is_control)
    {
        return Err(Error::invalid(format!(
            "the cluster namespace {namespace:?} is not usable; use 1 to 128 printable \
             characters without braces"
        )));
    }
    Ok(())
}

impl ClusterBuilder {
    /// Isolates this cluster's keys from other clusters on the same server
    /// (default `"fanout"`). Workers serve one namespace.
    ///
    /// ```no_run
    /// let c = fanout::Cluster::builder("redis://127.0.0.1:6379/0").namespace("team-a").build()?;
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn namespace(mut self, name: impl Into<String>) -> Self {
        self.namespace = name.into();
        self
    }

    /// Starts `n` worker processes of this binary on this host, replaced when
    /// they die and drained at shutdown (default 0: remote workers only).
    ///
    /// ```no_run
    /// let c = fanout::Cluster::builder("redis://127.0.0.1:6379/0").local_workers(4).build()?;
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn local_workers(mut self, n: usize) -> Self {
        self.local_workers = n;
        self
    }

    /// How long a worker's claim on a task lasts without a heartbeat before
    /// another worker takes the task over (default 30 s). Remote workers take
    /// theirs from `FANOUT_CLUSTER_LEASE_MS`.
    ///
    /// ```no_run
    /// let c = fanout::Cluster::builder("redis://127.0.0.1:6379/0")
    ///     .lease(std::time::Duration::from_secs(5))
    ///     .build()?;
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How many times a task may be started before, its workers having died
    /// each time, it resolves to [`Error::WorkerLost`] (default 3).
    ///
    /// ```no_run
    /// let c = fanout::Cluster::builder("redis://127.0.0.1:6379/0").max_deliveries(1).build()?;
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// The secret that signs task records and results. Defaults to the
    /// `FANOUT_CLUSTER_SECRET` environment variable, and without it to a
    /// random secret (fine with local workers only: remote workers must be
    /// started with the same secret).
    ///
    /// ```no_run
    /// let c = fanout::Cluster::builder("redis://127.0.0.1:6379/0").secret("s3cr3t").build()?;
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// How long the client keeps retrying when Redis is unreachable at run
    /// time before the affected futures fail with [`Error::Backend`]
    /// (default 30 s). Connecting in [`ClusterBuilder::build`] is not retried.
    ///
    /// ```no_run
    /// let c = fanout::Cluster::builder("redis://127.0.0.1:6379/0")
    ///     .reconnect_timeout(std::time::Duration::from_secs(5))
    ///     .build()?;
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.reconnect_timeout = timeout;
        self
    }

    /// How long this client's keys outlive it if it dies without shutting
    /// down (default 60 s). While the client runs it refreshes them; once it
    /// is gone they expire, and workers drop its queued tasks instead of
    /// running them (nobody is left to receive their results).
    ///
    /// ```no_run
    /// let c = fanout::Cluster::builder("redis://127.0.0.1:6379/0")
    ///     .client_ttl(std::time::Duration::from_secs(10))
    ///     .build()?;
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn client_ttl(mut self, ttl: Duration) -> Self {
        self.client_ttl = ttl;
        self
    }

    /// Connects, checks the server and starts the client (and local workers).
    ///
    /// [`Error::Backend`] when Redis cannot be reached (within a couple of
    /// seconds, never a hang) or refuses the credentials;
    /// [`Error::InvalidArgument`] for a bad namespace, lease or limit.
    ///
    /// ```
    /// // Nothing listens on port 1: the error comes back at once.
    /// let err = fanout::Cluster::builder("redis://127.0.0.1:1/0").build().unwrap_err();
    /// assert!(matches!(err, fanout::Error::Backend { .. }), "{err}");
    /// ```
    pub fn build(self) -> Result<Cluster> {
        check_namespace(&self.namespace)?;
        if self.lease < Duration::from_millis(50) {
            return Err(Error::invalid(format!(
                "the lease must be at least 50 ms (got {:?})",
                self.lease
            )));
        }
        if self.client_ttl < Duration::from_millis(300) {
            return Err(Error::invalid(format!(
                "the client TTL must be at least 300 ms (got {:?})",
                self.client_ttl
            )));
        }
        if self.max_deliveries == 0 {
            return Err(Error::invalid("max_deliveries must be at least 1 (got 0)"));
        }
        let secret = match self
            .secret
            .or_else(|| std::env::var(worker::SECRET_ENV).ok())
        {
            Some(s) if s.is_empty() => {
                return Err(Error::invalid("the cluster secret must not be empty"))
            }
            Some(s) if s.contains('\0') => {
                return Err(Error::invalid(
                    "the cluster secret must not contain NUL characters",
                ))
            }
            Some(s) => s,
            None => {
                log::info!(
                    "no cluster secret given (builder .secret() or {}); using a random one, \
                     shared with local workers only",
                    worker::SECRET_ENV
                );
                crate::ship::hex(&protocol::random_bytes::<32>()?)
            }
        };
        let cfg = Config {
            keys: protocol::Keys::new(&self.namespace),
            url: self.url,
            namespace: self.namespace,
            secret,
            lease: self.lease,
            max_deliveries: self.max_deliveries,
            local_workers: self.local_workers,
            reconnect_timeout: self.reconnect_timeout,
            client_ttl: self.client_ttl,
        };
        let (shared, threads) = Shared::start(cfg)?;
        Ok(Cluster {
            shared,
            threads: Mutex::new(threads),
        })
    }
}

impl Executor for Cluster {
    fn submit<F, Args>(&self, f: F, args: Args) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let callee = f.__callee()?;
        self.shared
            .enqueue::<Args, F::Output>(&callee, vec![args], true)?
            .pop()
            .ok_or_else(|| Error::invalid("internal: a batch of one produced no future"))
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.close(cancel_futures);
        if !wait {
            return;
        }
        if self.shared.on_own_thread() {
            log::warn!(
                "Cluster::shutdown(wait = true) called from the cluster's own thread \
                 (a done-callback); not waiting"
            );
            return;
        }
        let threads = std::mem::take(&mut *client::lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }

    fn submitter<F, Args>(&self, f: F) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        // The captures are encoded once here and shared by every chunk.
        let callee = f.__callee();
        let shared = self.shared.clone();
        // Each batch is one map chunk: one task record, one round trip.
        Box::new(move |batch: Vec<Args>| {
            shared.enqueue(callee.as_ref().map_err(Clone::clone)?, batch, true)
        })
    }

    fn owner(&self) -> u64 {
        self.shared.owner()
    }

    fn launcher<F, Args>(&self, f: F) -> crate::graph::Launcher<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        // The captures (of a `bind`) are encoded once, for every launch.
        let callee = f.__callee();
        let shared = std::sync::Arc::downgrade(&self.shared);
        // Inputs that stayed in Redis go by key: the worker reads them.
        crate::graph::Launcher::new(move |ready, promise, _options| {
            let Some(shared) = shared.upgrade() else {
                return promise.set_error(Error::Shutdown);
            };
            let callee = match &callee {
                Ok(c) => c,
                Err(e) => return promise.set_error(e.clone()),
            };
            match remote::template(&ready) {
                Ok((args, keep)) => {
                    if !keep.is_empty() {
                        // The inputs' results stay until this call is done.
                        promise.cell().on_final(Box::new(move || drop(keep)));
                    }
                    shared.enqueue_ready(callee, args, promise)
                }
                Err(e) => promise.set_error(e),
            }
        })
    }

    fn put<T: Payload + Clone>(&self, value: T) -> Result<Future<T>> {
        remote::put(&self.shared, value)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &protocol::redact(&self.shared.cfg.url))
            .field("namespace", &self.shared.cfg.namespace)
            .field("client", &self.shared.client_id())
            .field("worker_pids", &self.worker_pids())
            .finish()
    }
}

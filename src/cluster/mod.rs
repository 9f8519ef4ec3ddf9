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
//! the task's life are described in `protocol/mod.rs`; the worker in `worker/`.
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
//! FANOUT_CLUSTER_RESOURCES="gpu=2,mem_gb=64" \
//! ./your-binary
//! ```
//!
//! The process becomes a worker before `main` runs; SIGTERM drains it.
//! `FANOUT_CLUSTER_RESOURCES` (optional) is what the worker offers to calls
//! that need resources ([`Call::resources`](crate::Call::resources)).
//!
//! # Per-call controls
//!
//! * `priority(p)` and `resources(..)` choose the call's *lane*: one stream
//!   per (priority, resources) pair in use, besides the default `{ns}:q`.
//!   Workers read the highest-priority lane they can run first, FIFO within a
//!   lane. A call in a lane no live worker can run stays pending (and
//!   cancellable) until one joins; a worker counts the resources its running
//!   calls hold and takes a call only while the rest covers it. An idle worker
//!   blocks on the default lane and looks at the others between reads, so a
//!   call in another lane may wait up to a quarter second for an idle worker.
//! * `timeout(limit)`: when a call runs past its limit, its worker records
//!   `Err(Timeout)` (naming the limit) as the result and exits (code 124),
//!   since a running call cannot be stopped otherwise; a local worker is
//!   replaced at once. A remote worker needs its own supervisor (systemd
//!   `Restart=always`, a container restart policy) to come back, and calls
//!   running in other slots of the same worker process are redone elsewhere
//!   when their leases lapse.
//! * Retries are the client's: a failed attempt is submitted again as a new
//!   task, so `max_deliveries` still counts only the deliveries of one
//!   attempt to workers that died.
//! * The lane and the limit are scheduling hints stored beside the signed
//!   record, not covered by its signature: whoever can write to Redis can
//!   delay or drop tasks anyway, but cannot change what runs.
//!
//! # What stays in Redis
//!
//! After every task is consumed and the clients and workers have shut down,
//! the namespace holds only `{ns}:q`, the (empty) task stream, with its
//! consumer group `fanout` (and consumers of workers still running).
//! Calls at another priority or with resources add their lane streams
//! (empty when idle, with the group) and the lane list `{ns}:q:lanes`.
//! Transient keys: a task record until it is finished, a result until the
//! client takes it, a rejected or cancelled record for an hour, a client's
//! event stream, liveness and finished-task bitmap while it runs, and how a
//! local worker died (`{ns}:died:<host>:<pid>`, until the cluster that
//! started it shuts down; an hour at most).
//!
//! A client that dies without shutting down stops refreshing its keys: they
//! expire after [`ClusterBuilder::client_ttl`]. Workers drop its queued
//! tasks (and their records) instead of running them; a result written just
//! before the death expires within about twice the TTL.
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
//! in between still runs it, and its result is discarded. A quick task (a
//! first submission with at most 8 KiB of arguments) that an idle worker
//! picks up runs at once, and its client hears of the start only if it runs
//! longer than 200 µs; in Redis the cancellation of a quick task is exact
//! (a task a worker was given is never marked cancelled, one that no worker
//! was given never runs).

mod batch;
mod client;
mod courier;
mod current;
#[doc(hidden)]
pub mod fuzz;
mod lanes;
mod plain;
mod protocol;
mod push;
mod remote;
mod secede;
mod starter;
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
///
/// A cheap `Clone` handle: every clone is the same client, `shutdown`
/// through any of them shuts it down, and dropping the last one is
/// `shutdown(true, false)`. Per-call controls (priority, timeout, resources)
/// are described in the module's guide; see also [`Cluster::current`].
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    /// Shared by every handle; the last one to go shuts the client down.
    owner: Arc<Owner>,
}

/// The client's threads; shuts the client down when the last handle goes.
struct Owner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        shutdown(&self.shared, &self.threads, true, false);
    }
}

/// `shutdown` of one client, through any of its handles.
fn shutdown(shared: &Shared, threads: &Mutex<Vec<JoinHandle<()>>>, wait: bool, cancel: bool) {
    shared.close(cancel);
    if !wait {
        return;
    }
    if shared.on_own_thread() {
        log::warn!(
            "Cluster::shutdown(wait = true) called from the cluster's own thread \
             (a done-callback); not waiting"
        );
        return;
    }
    let threads = std::mem::take(&mut *client::lock(threads));
    for t in threads {
        let _ = t.join();
    }
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
    local_worker_resources: Vec<(String, u32)>,
    client_ttl: Duration,
    push_results: bool,
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
            .field("local_worker_resources", &self.local_worker_resources)
            .field("client_ttl", &self.client_ttl)
            .field("push_results", &self.push_results)
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
            local_worker_resources: Vec::new(),
            client_ttl: Duration::from_secs(60),
            push_results: true,
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

    /// Inside a cluster task: a client of the same namespace and secret
    /// (built on first use and shared by the worker's tasks); `None` outside
    /// a cluster worker.
    ///
    /// A task may submit more calls through it and block on their futures
    /// (`result`, `wait`, `as_completed`, `gather`): while it waits, its
    /// worker frees the task's slot and runs other tasks there (Dask's
    /// secede/rejoin), up to 64 slots beyond its concurrency, so parents
    /// waiting on children never deadlock the cluster.
    ///
    /// ```no_run
    /// use fanout::{gather, Cluster, Executor};
    /// fn leaf(x: u64) -> u64 { x * 10 }
    /// fn parent(x: u64) -> u64 {
    ///     let cluster = Cluster::current().expect("runs on a cluster worker");
    ///     let kids: Vec<_> = (0..2).map(|i| cluster.submit(leaf, (x + i,)).unwrap()).collect();
    ///     gather(kids).unwrap().into_iter().sum()
    /// }
    /// let cluster = Cluster::builder("redis://127.0.0.1:6379/0").local_workers(1).build()?;
    /// assert_eq!(cluster.submit(parent, (1,))?.result()?, 10 + 20);
    /// assert!(Cluster::current().is_none());
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn current() -> Option<Cluster> {
        current::current()
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

    /// What the local workers offer to calls that need resources
    /// ([`Call::resources`](crate::Call::resources)): each local worker
    /// advertises these amounts, and runs a call only while the calls it runs
    /// hold no more than that. Remote workers advertise theirs with
    /// `FANOUT_CLUSTER_RESOURCES="gpu=2,mem_gb=64"`. Default: none.
    ///
    /// ```no_run
    /// let c = fanout::Cluster::builder("redis://127.0.0.1:6379/0")
    ///     .local_workers(1)
    ///     .local_worker_resources(&[("gpu", 1)])
    ///     .build()?;
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn local_worker_resources(mut self, resources: &[(&str, u32)]) -> Self {
        self.local_worker_resources = resources.iter().map(|&(k, v)| (k.to_string(), v)).collect();
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

    /// Whether workers may push small results straight to this client
    /// (default `true`), ahead of their events in Redis. The client listens
    /// on a TCP port of the address through which it reaches Redis
    /// (loopback for a Redis on loopback) and advertises it, signed, in
    /// Redis; a worker that can connect sends the results of short tasks
    /// there before it reports them to Redis, which saves a round trip
    /// through Redis on each. Nothing depends on it: results also go
    /// through Redis as before, and a worker that cannot connect (a
    /// firewall, another network) just does not push. Never with a
    /// `rediss://` URL (the results would cross the network unencrypted).
    /// Turn it off when the client must not listen on a port.
    ///
    /// ```no_run
    /// let c = fanout::Cluster::builder("redis://127.0.0.1:6379/0")
    ///     .push_results(false)
    ///     .build()?;
    /// # Ok::<(), fanout::Error>(())
    /// ```
    pub fn push_results(mut self, on: bool) -> Self {
        self.push_results = on;
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
            local_worker_resources: lanes::spell(&lanes::canonical(&self.local_worker_resources)?),
            client_ttl: self.client_ttl,
            push_results: self.push_results,
        };
        let (shared, threads) = Shared::start(cfg)?;
        Ok(Cluster {
            owner: Arc::new(Owner {
                shared: shared.clone(),
                threads: Mutex::new(threads),
            }),
            shared,
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
        shutdown(&self.shared, &self.owner.threads, wait, cancel_futures);
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
        crate::graph::Launcher::new(move |ready, promise, options| {
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
                    shared.enqueue_ready(callee, args, promise, options)
                }
                Err(e) => promise.set_error(e),
            }
        })
    }

    fn put<T: Payload + Clone>(&self, value: T) -> Result<Future<T>> {
        remote::put(&self.shared, value)
    }

    fn submit_with<F, Args>(
        &self,
        f: F,
        args: Args,
        options: &crate::CallOptions,
    ) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let callee = f.__callee()?;
        self.shared
            .enqueue_with::<Args, F::Output>(&callee, vec![args], true, options)?
            .pop()
            .ok_or_else(|| Error::invalid("internal: a batch of one produced no future"))
    }

    fn submitter_with<F, Args>(
        &self,
        f: F,
        options: &crate::CallOptions,
    ) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let callee = f.__callee();
        let shared = self.shared.clone();
        let options = options.clone();
        Box::new(move |batch: Vec<Args>| {
            shared.enqueue_with(
                callee.as_ref().map_err(Clone::clone)?,
                batch,
                true,
                &options,
            )
        })
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

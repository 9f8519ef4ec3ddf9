//! A cluster worker: this same binary, started with [`URL_ENV`] set.
//!
//! # Becoming a worker before `main`
//!
//! Like the process pool's workers, a function pointer in `.init_array` runs
//! before `main` (and before a test harness). When [`URL_ENV`] is set it
//! turns the process into a cluster worker that serves the namespace until it
//! is told to stop (SIGTERM or SIGINT: running tasks finish, nothing new is
//! read, then the process exits), and `main` never runs.
//!
//! | variable                      | meaning                                                |
//! |-------------------------------|--------------------------------------------------------|
//! | `FANOUT_CLUSTER_URL`          | `redis://[user:password@]host:port/db` (or `rediss://`) |
//! | `FANOUT_CLUSTER_NAMESPACE`    | the cluster's namespace (default `fanout`)             |
//! | `FANOUT_CLUSTER_SECRET`       | the cluster secret (required)                          |
//! | `FANOUT_CLUSTER_CONCURRENCY`  | tasks run at once (default: number of CPUs)            |
//! | `FANOUT_CLUSTER_LEASE_MS`     | the lease in milliseconds (default 30000)              |
//! | `FANOUT_CLUSTER_RESOURCES`    | what it offers, e.g. `gpu=2,mem_gb=64` (default none)  |
//!
//! # Serving
//!
//! Each of the `concurrency` slots is a thread with its own connection. A
//! slot claims the next entries and starts their tasks in one script call:
//! one entry while tasks take a millisecond or more, several while they are
//! short (see `batch`). It sends the finishes of what it ran and its next
//! claim in one round trip. A
//! heartbeat thread re-claims the entries being run every lease/3, which
//! keeps their idle time (the lease) from running out; a free slot
//! periodically runs `XAUTOCLAIM` with min-idle = lease to take over entries
//! whose worker died.

use super::protocol::{
    self, array, bytes, read_reply, text, Backoff, Conn, Entry, ItemOutcome, Keys, Outcome,
    ScriptName, Scripts, GROUP,
};
use super::starter::Quick;
use crate::ship;
use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Makes a process a worker: the Redis URL.
pub const URL_ENV: &str = "FANOUT_CLUSTER_URL";
/// The namespace to serve.
pub const NAMESPACE_ENV: &str = "FANOUT_CLUSTER_NAMESPACE";
/// The cluster secret.
pub const SECRET_ENV: &str = "FANOUT_CLUSTER_SECRET";
/// Tasks run at once.
pub const CONCURRENCY_ENV: &str = "FANOUT_CLUSTER_CONCURRENCY";
/// Lease in milliseconds.
pub const LEASE_ENV: &str = "FANOUT_CLUSTER_LEASE_MS";
/// What the worker offers to calls that need resources: `gpu=2,mem_gb=64`.
pub const RESOURCES_ENV: &str = "FANOUT_CLUSTER_RESOURCES";
/// Set for local workers: the client's pid; the worker drains when it is gone.
pub(crate) const PARENT_ENV: &str = "FANOUT_CLUSTER_PARENT_PID";

/// How long a slot blocks in one `XREADGROUP`.
const READ_BLOCK: Duration = Duration::from_millis(250);

/// Set by SIGTERM/SIGINT (or a vanished parent): stop reading, finish, exit.
static DRAIN: AtomicBool = AtomicBool::new(false);

#[used]
#[link_section = ".init_array"]
static BECOME_CLUSTER_WORKER: extern "C" fn(libc::c_int, *const *const u8, *const *const u8) =
    become_worker;

extern "C" fn become_worker(_argc: libc::c_int, _argv: *const *const u8, _envp: *const *const u8) {
    if std::env::var_os(URL_ENV).is_none() {
        return;
    }
    let code = std::panic::catch_unwind(|| match WorkerConfig::from_env() {
        Ok(cfg) => serve(cfg),
        Err(message) => {
            // Before main, with no logger installed: stderr is the only way
            // to tell the operator why the worker did not start.
            eprintln!("fanout cluster worker: {message}");
            2
        }
    })
    .unwrap_or(101);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: ends the process without running `main` or atexit handlers;
    // the worker's threads have all finished or are blocked in I/O.
    unsafe { libc::_exit(code) }
}

/// Makes sure the constructor is linked into any binary that builds a cluster.
pub(crate) fn linked() -> bool {
    BECOME_CLUSTER_WORKER as usize != 0
}

struct WorkerConfig {
    url: String,
    namespace: String,
    secret: String,
    concurrency: usize,
    lease: Duration,
    parent: Option<u32>,
    resources: super::lanes::Needs,
}

impl WorkerConfig {
    fn from_env() -> Result<WorkerConfig, String> {
        let take = |name: &str| {
            let v = std::env::var(name).ok();
            // Not inherited by anything the tasks start.
            std::env::remove_var(name);
            v
        };
        let url = take(URL_ENV).unwrap_or_default();
        let namespace = take(NAMESPACE_ENV).unwrap_or_else(|| "fanout".into());
        let secret = take(SECRET_ENV).ok_or_else(|| {
            format!("{SECRET_ENV} is not set; set it to the secret the cluster's clients use")
        })?;
        if secret.is_empty() {
            // HMAC under an empty key is public: anyone could sign tasks.
            return Err(format!(
                "{SECRET_ENV} is empty, and an empty secret lets anyone who can write to                  Redis run code in this worker; set it to the (non-empty) secret the                  cluster's clients use"
            ));
        }
        let concurrency = match take(CONCURRENCY_ENV) {
            Some(c) => c
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{CONCURRENCY_ENV}={c:?} is not a positive number"))?,
            None => num_cpus::get().max(1),
        };
        let lease = match take(LEASE_ENV) {
            Some(l) => Duration::from_millis(
                l.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n >= 50)
                    .ok_or_else(|| format!("{LEASE_ENV}={l:?} is not a number ≥ 50"))?,
            ),
            None => Duration::from_secs(30),
        };
        let parent = take(PARENT_ENV).and_then(|p| p.parse().ok());
        let resources = match take(RESOURCES_ENV) {
            Some(r) => {
                super::lanes::parse(&r).map_err(|e| format!("{RESOURCES_ENV}={r:?}: {e}"))?
            }
            None => Vec::new(),
        };
        super::check_namespace(&namespace).map_err(|e| e.to_string())?;
        Ok(WorkerConfig {
            url,
            namespace,
            secret,
            concurrency,
            lease,
            parent,
            resources,
        })
    }
}

extern "C" fn on_stop_signal(_: libc::c_int) {
    DRAIN.store(true, Ordering::SeqCst);
}

fn install_signals() {
    // SAFETY: installing handlers that only store to an atomic (async-signal-safe),
    // and ignoring SIGPIPE so a dropped connection is an error, not a death
    // (std does this before `main`, which a worker never reaches).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_stop_signal as *const () as usize;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGTERM, &act, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &act, std::ptr::null_mut());
    }
}

/// What every slot of one worker process shares.
pub(super) struct Worker {
    cfg: WorkerConfig,
    keys: Keys,
    queue: String,
    scripts: Arc<Scripts>,
    /// `host:pid`, the consumer name.
    consumer: String,
    /// `cluster worker host:pid`, for errors.
    name: String,
    build_id: String,
    /// Entries claimed and not yet finished (queued in `ahead`, running, or
    /// waiting in `unflushed`), with their streams (for the heartbeat).
    held: Mutex<HashSet<(String, String)>>,
    /// Jobs claimed (and started) ahead of running, which any slot of this
    /// worker runs next (see `batch`).
    ahead: Mutex<std::collections::VecDeque<(Job, Option<redis::Value>)>>,
    /// Finishes not yet sent (see `batch`).
    unflushed: Mutex<Vec<super::batch::Finished>>,
    /// How long tasks run, on average (see `batch::Pace`).
    pace: super::batch::Pace,
    /// The consumer names of this worker's slots' blocking reads (see
    /// `wait_and_claim`), and how many were made.
    slot_consumers: Mutex<Vec<String>>,
    /// When a free slot should next look for expired leases, and where.
    reap: Mutex<(Instant, String)>,
    deliveries: AtomicU64,
    /// Every slot has finished: the heartbeat can stop.
    stopped: AtomicBool,
    /// When to next look for consumers of departed workers.
    cleanup: Mutex<Instant>,
    /// The server's limit on one value (0: not asked yet).
    bulk_limit: AtomicU64,
    /// Whether finishes may go plain (see `plain.rs`): 0 not asked yet,
    /// 1 yes, 2 no (a server older than 7.0).
    plain: std::sync::atomic::AtomicU8,
    /// Slot threads running (more than `concurrency` while tasks wait; see `secede`).
    pub(super) slots: Mutex<usize>,
    /// Slots whose task is blocked on a future right now.
    pub(super) blocked: AtomicUsize,
    /// The lanes and the resources in use (see `lanes`).
    view: Mutex<super::lanes::View>,
    /// Run-time limits of the tasks running now, by entry id.
    deadlines: Mutex<std::collections::HashMap<String, Deadline>>,
    /// The last client liveness value this worker verified (see `LiveCache`).
    live_cache: Mutex<Option<LiveCache>>,
    /// Marks of quick tasks not sent yet (see `starter`).
    starter: super::starter::Starter,
    /// Connections to clients that take pushed results (see `push`).
    pusher: super::push::Pusher,
}

/// A client's signed liveness value verified recently: while `until` has
/// not passed, the same value read from Redis again needs no second
/// signature check (nor the server's time). `until` is at most a second
/// after the check and never past the value's signed expiry, so a client
/// that is gone is noticed as before: its key is deleted or expires (the
/// value read differs or is missing), or the cached value runs out.
struct LiveCache {
    client: String,
    value: Vec<u8>,
    until: Instant,
}

/// How long a verified liveness value is trusted without a new check.
const LIVE_CACHE: Duration = Duration::from_secs(1);

/// A running task's run-time limit.
struct Deadline {
    at: Instant,
    limit: Duration,
    task: String,
    stream: String,
    items: usize,
}

fn serve(cfg: WorkerConfig) -> i32 {
    install_signals();
    super::current::serving(super::current::Serving {
        url: cfg.url.clone(),
        namespace: cfg.namespace.clone(),
        secret: cfg.secret.clone(),
        lease: cfg.lease,
    });
    let consumer = format!("{}:{}", protocol::hostname(), std::process::id());
    let name = format!("cluster worker {consumer}");
    crate::panic::set_worker_identity(name.clone());
    let keys = Keys::new(&cfg.namespace);
    let keys_queue = keys.queue();
    let worker = Arc::new(Worker {
        queue: keys.queue(),
        keys,
        scripts: Arc::new(Scripts::new()),
        consumer,
        name,
        build_id: protocol::build_id_hex(),
        held: Mutex::new(HashSet::new()),
        ahead: Mutex::new(std::collections::VecDeque::new()),
        unflushed: Mutex::new(Vec::new()),
        pace: super::batch::Pace::default(),
        slot_consumers: Mutex::new(Vec::new()),
        reap: Mutex::new((Instant::now(), "0-0".into())),
        deliveries: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
        cleanup: Mutex::new(Instant::now()),
        bulk_limit: AtomicU64::new(0),
        plain: std::sync::atomic::AtomicU8::new(0),
        slots: Mutex::new(0),
        blocked: AtomicUsize::new(0),
        view: Mutex::new(super::lanes::View::new(&keys_queue, cfg.resources.clone())),
        deadlines: Mutex::new(std::collections::HashMap::new()),
        live_cache: Mutex::new(None),
        starter: super::starter::Starter::default(),
        pusher: super::push::Pusher::new(super::push::Lookup {
            url: cfg.url.clone(),
            keys: Keys::new(&cfg.namespace),
            secret: cfg.secret.clone(),
            namespace: cfg.namespace.clone(),
        }),
        cfg,
    });
    let starter = {
        let w = worker.clone();
        std::thread::Builder::new()
            .name("fanout-cluster-starter".into())
            .spawn(move || {
                if let Some(conn) = w.connect(Duration::from_secs(5)) {
                    w.starter.run(conn, &w.name, |due| {
                        w.mark_cmd(due, w.cached_live().as_ref())
                    });
                }
            })
    };
    let heartbeat = {
        let w = worker.clone();
        std::thread::Builder::new()
            .name("fanout-cluster-heartbeat".into())
            .spawn(move || w.heartbeat())
    };
    let slots: Vec<_> = (0..worker.cfg.concurrency)
        .filter_map(|i| {
            let w = worker.clone();
            *protocol_lock(&worker.slots) += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("fanout-cluster-slot-{i}"))
                .spawn(move || w.slot())
                .ok();
            if spawned.is_none() {
                *protocol_lock(&worker.slots) -= 1;
            }
            spawned
        })
        .collect();
    if slots.is_empty() {
        eprintln!("fanout cluster worker: could not start any worker thread");
        return 3;
    }
    for s in slots {
        let _ = s.join();
    }
    // Slots started for waiting tasks (see `secede`) are not joined: wait
    // for their count.
    while *protocol_lock(&worker.slots) > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    super::current::close();
    // Every slot has finished its task: say goodbye to the group.
    worker.stopped.store(true, Ordering::SeqCst);
    worker.leave();
    worker.starter.stop();
    if let Ok(h) = starter {
        let _ = h.join();
    }
    if let Ok(h) = heartbeat {
        let _ = h.join();
    }
    0
}

/// The fields of a task record that `start` hands back.
struct Record<'a> {
    trampoline: &'a [u8],
    build: &'a [u8],
    args: &'a [u8],
    signature: &'a [u8],
    items: &'a [u8],
    nonce: &'a [u8],
}

/// What a `claim` brought (see `claim_fn.lua`).
enum Claim {
    /// The next jobs, each with start's reply when the claim started it.
    Jobs(Vec<(Job, Option<redis::Value>)>),
    /// Nothing new: the slot may block until there is (`wait_and_claim`).
    Idle,
    /// Nothing known (an error, or a path that did not claim).
    Unknown,
}

/// One task taken from a lane's stream.
pub(super) struct Job {
    entry: String,
    task: String,
    /// The lane's stream it came from.
    stream: String,
    /// The resources it holds while it runs (its lane's needs).
    needs: super::lanes::Needs,
    /// Taken over after its lease expired (delivered before).
    redelivered: bool,
}

impl Worker {
    /// A job read from the default lane.
    fn job_of(&self, e: &Entry<'_>) -> Option<Job> {
        let task = std::str::from_utf8(e.field("t")?).ok()?;
        Some(Job {
            entry: e.id.to_string(),
            task: task.to_string(),
            stream: self.queue.clone(),
            needs: Vec::new(),
            redelivered: false,
        })
    }
}

impl Worker {
    fn connect(&self, read_timeout: Duration) -> Option<Conn> {
        match Conn::new(
            &self.cfg.url,
            &self.keys,
            self.scripts.clone(),
            read_timeout,
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("fanout cluster worker: {e}");
                DRAIN.store(true, Ordering::SeqCst);
                None
            }
        }
    }

    /// The server's limit on one value, asked once.
    fn bulk_limit(&self) -> u64 {
        let known = self.bulk_limit.load(Ordering::Relaxed);
        if known != 0 {
            return known;
        }
        let limit = self
            .connect(Duration::from_secs(5))
            .map(|mut c| protocol::bulk_limit(&mut c))
            .unwrap_or(protocol::DEFAULT_BULK_LIMIT);
        self.bulk_limit.store(limit, Ordering::Relaxed);
        limit
    }

    fn draining(&self) -> bool {
        if DRAIN.load(Ordering::Relaxed) {
            return true;
        }
        if let Some(parent) = self.cfg.parent {
            // SAFETY: getppid has no preconditions.
            if unsafe { libc::getppid() } as u32 != parent {
                DRAIN.store(true, Ordering::SeqCst);
                return true;
            }
        }
        false
    }

    /// The configured number of slots.
    pub(super) fn concurrency(&self) -> usize {
        self.cfg.concurrency
    }

    /// One slot: read an entry, run it, finish it, repeat. Counted in
    /// `slots` by whoever started it; counts itself out when it ends.
    pub(super) fn slot(self: Arc<Self>) {
        super::secede::install(&self);
        if !self.slot_loop() {
            *protocol_lock(&self.slots) -= 1;
        }
    }

    /// The slot's loop; true when it left as a surplus slot (already counted out).
    fn slot_loop(&self) -> bool {
        let Some(mut conn) = self.connect(READ_BLOCK + Duration::from_secs(5)) else {
            return false;
        };
        let me = {
            let mut names = protocol_lock(&self.slot_consumers);
            let name = format!("{}/{}", self.consumer, names.len());
            names.push(name.clone());
            name
        };
        let mut next = Claim::Unknown;
        let mut backoff = Backoff::new();
        // The tidy owed for plain finishes (see `plain.rs`).
        let mut debt = super::plain::Debt::default();
        // The last claim found the queue empty (it brought fewer than it asked).
        let mut drained = false;
        // A blocking read failed: entries may be pending for this slot
        // that it never received (see `recover_own`).
        let mut recover = false;
        loop {
            let idle = match std::mem::replace(&mut next, Claim::Unknown) {
                Claim::Jobs(jobs) => {
                    drained = jobs.len() < self.pace.want();
                    self.queue_ahead(jobs);
                    Claim::Unknown
                }
                other => other,
            };
            // Jobs claimed ahead run first, draining or not: their clients
            // were told they started.
            let queued = protocol_lock(&self.ahead).pop_front();
            if let Some((job, started)) = queued {
                self.run_job(&mut conn, job, started);
                let more = !protocol_lock(&self.ahead).is_empty();
                if !more && drained && self.may_idle_at_once() {
                    // The queue was empty a moment ago: send the finishes
                    // and block for the next entries in one round trip.
                    let batch = std::mem::take(&mut *protocol_lock(&self.unflushed));
                    next = self.wait_and_claim(&mut conn, &me, batch, &mut debt, &mut recover);
                } else if !more || self.flush_due() {
                    next = self.flush(&mut conn, !more);
                }
                continue;
            }
            if self.draining() {
                self.flush(&mut conn, false);
                self.pay(&mut conn, &mut debt);
                return false;
            }
            if super::secede::leave_if_surplus(self) {
                self.flush(&mut conn, false);
                self.pay(&mut conn, &mut debt);
                return true;
            }
            if recover {
                match self.recover_own(&mut conn, &me) {
                    Ok(Claim::Idle) => recover = false,
                    Ok(claim) => {
                        recover = false;
                        next = claim;
                        continue;
                    }
                    Err(e) => {
                        log::debug!("{}: {e}; retrying", self.name);
                        backoff.sleep(None);
                        continue;
                    }
                }
            }
            let found = match (self.reap_one(&mut conn), idle) {
                (Some(job), _) => Ok(Some(job)),
                (None, Claim::Idle) if self.only_default() => {
                    // Wait for the next entries and claim them in the same
                    // round trip.
                    next = self.wait_and_claim(&mut conn, &me, Vec::new(), &mut debt, &mut recover);
                    continue;
                }
                (None, _) => {
                    self.pay(&mut conn, &mut debt);
                    self.read(&mut conn, true, &me)
                }
            };
            match found {
                Ok(Some(job)) => {
                    backoff = Backoff::new();
                    next = Claim::Jobs(vec![(job, None)]);
                }
                Ok(None) => {}
                Err(e) => {
                    log::debug!("{}: {e}; retrying", self.name);
                    recover = true;
                    backoff.sleep(None);
                }
            }
        }
    }

    /// True when a slot that ran out of work may send its finishes and go
    /// straight back to its blocking read: not draining, only the default
    /// lane, no surplus slot to retire, and no lease due for a look.
    fn may_idle_at_once(&self) -> bool {
        !super::secede::surplus(self)
            && !self.draining()
            && self.only_default()
            && Instant::now() < protocol_lock(&self.reap).0
    }

    /// Queues claimed jobs to run next, holding their leases.
    fn queue_ahead(&self, jobs: Vec<(Job, Option<redis::Value>)>) {
        let mut held = protocol_lock(&self.held);
        for (job, _) in &jobs {
            held.insert((job.stream.clone(), job.entry.clone()));
        }
        drop(held);
        protocol_lock(&self.ahead).extend(jobs);
    }

    /// Reads one new entry (blocking for a while when `block`): from the
    /// best lane this worker can run (see `lanes`), else from the default
    /// lane as the slot's own consumer `me` (so that an entry whose reply
    /// is lost stays pending for `me` alone: see `recover_own`).
    fn read(&self, conn: &mut Conn, block: bool, me: &str) -> redis::RedisResult<Option<Job>> {
        if let Some(job) = self.take_from_lanes(conn, me)? {
            return Ok(Some(job));
        }
        self.read_default(conn, block, me)
    }

    /// Refreshes the lane list when stale.
    fn refresh_lanes(&self, conn: &mut Conn) {
        if !protocol_lock(&self.view).stale() {
            return;
        }
        let registry = super::lanes::registry(&self.queue);
        match conn.query(redis::cmd("HGETALL").arg(&registry)) {
            Ok(v) => {
                let flat = array(&v).unwrap_or(&[]);
                let pairs = flat
                    .chunks(2)
                    .filter_map(|kv| {
                        Some((
                            text(kv.first()?)?.to_string(),
                            text(kv.get(1)?)?.to_string(),
                        ))
                    })
                    .collect();
                protocol_lock(&self.view).update(&self.queue, pairs);
            }
            Err(e) => log::debug!("{}: could not read the lanes: {e}", self.name),
        }
    }

    /// Takes one entry with the `take` script when lanes other than the
    /// default exist; `None` when there are none or all are empty. Taken as
    /// the slot's own consumer `me`, like a default-lane read, so that an
    /// entry whose reply is lost is found by `recover_own`.
    fn take_from_lanes(&self, conn: &mut Conn, me: &str) -> redis::RedisResult<Option<Job>> {
        self.refresh_lanes(conn);
        // One slot at a time, so two slots cannot both count on the same
        // free resources.
        let mut view = protocol_lock(&self.view);
        let runnable: Vec<(String, super::lanes::Needs)> = view
            .runnable()
            .into_iter()
            .map(|l| (l.stream.clone(), l.needs.clone()))
            .collect();
        if runnable.len() <= 1 && runnable.first().is_none_or(|l| l.0 == self.queue) {
            return Ok(None);
        }
        let keys: Vec<&str> = runnable.iter().map(|l| l.0.as_str()).collect();
        let mut cmd = self.scripts.call(ScriptName::Take, &keys);
        cmd.arg(GROUP).arg(me);
        let reply = conn.query(&cmd)?;
        let parts = array(&reply).unwrap_or(&[]);
        let (Some(index), Some(entry), Some(task)) = (
            parts
                .first()
                .and_then(text)
                .and_then(|i| i.parse::<usize>().ok()),
            parts.get(1).and_then(text),
            parts.get(2).and_then(text),
        ) else {
            return Ok(None);
        };
        let Some((stream, needs)) = index.checked_sub(1).and_then(|i| runnable.get(i)) else {
            return Ok(None);
        };
        view.hold(needs);
        Ok(Some(Job {
            entry: entry.to_string(),
            task: task.to_string(),
            stream: stream.clone(),
            needs: needs.clone(),
            redelivered: false,
        }))
    }

    /// Reads one new entry of the default lane.
    fn read_default(
        &self,
        conn: &mut Conn,
        block: bool,
        me: &str,
    ) -> redis::RedisResult<Option<Job>> {
        let mut cmd = self.read_cmd(block, me);
        let reply = conn.query(&cmd);
        let reply = match reply {
            Err(e) if protocol::classify(&e) == protocol::Failure::NoGroup => {
                // The server lost the group (restarted without persistence): the
                // reconnect in `get` recreates it.
                conn.reset();
                cmd = self.read_cmd(block, me);
                conn.query(&cmd)?
            }
            other => other?,
        };
        let job = read_reply(&reply).first().and_then(|e| self.job_of(e));
        Ok(job)
    }

    fn read_cmd(&self, block: bool, me: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(me).arg("COUNT").arg(1);
        if block {
            cmd.arg("BLOCK").arg(READ_BLOCK.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.queue).arg(">");
        cmd
    }

    /// When due, takes over one entry whose lease expired.
    fn reap_one(&self, conn: &mut Conn) -> Option<Job> {
        let cursor = {
            let mut reap = protocol_lock(&self.reap);
            if Instant::now() < reap.0 {
                return None;
            }
            // Claim the turn; pushed back below unless something was found.
            reap.0 = Instant::now() + self.cfg.lease / 2;
            reap.1.clone()
        };
        let reply = conn
            .query(
                redis::cmd("XAUTOCLAIM")
                    .arg(&self.queue)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(self.cfg.lease.as_millis() as u64)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(1),
            )
            .ok()?;
        let parts = array(&reply)?;
        let next_cursor = parts.first().and_then(text).unwrap_or("0-0").to_string();
        let claimed = parts.get(1).map(protocol::entries).unwrap_or_default();
        let job = claimed.iter().find_map(|e| {
            let job = self.job_of(e).map(|j| Job {
                redelivered: true,
                ..j
            });
            if job.is_none() {
                // A deleted or malformed entry: drop it from the group.
                let _ = conn.query(redis::cmd("XACK").arg(&self.queue).arg(GROUP).arg(e.id));
            }
            job
        });
        let wrapped = {
            let mut reap = protocol_lock(&self.reap);
            reap.1 = next_cursor.clone();
            if job.is_some() || next_cursor != "0-0" {
                // More may be waiting: let the next free slot look at once.
                reap.0 = Instant::now();
            }
            job.is_none() && next_cursor == "0-0"
        };
        let job = match job {
            Some(job) => Some(job),
            None => self.reap_lanes(conn),
        };
        if wrapped {
            self.forget_dead_consumers(conn);
        }
        if let Some(j) = &job {
            log::info!(
                "{} took over task {} (its lease expired)",
                self.name,
                j.task
            );
        }
        job
    }

    /// Takes over one expired entry of a lane other than the default that
    /// this worker can run now.
    fn reap_lanes(&self, conn: &mut Conn) -> Option<Job> {
        let mut view = protocol_lock(&self.view);
        let lanes: Vec<(String, super::lanes::Needs)> = view
            .runnable()
            .into_iter()
            .filter(|l| l.stream != self.queue)
            .map(|l| (l.stream.clone(), l.needs.clone()))
            .collect();
        for (stream, needs) in lanes {
            let Ok(reply) = conn.query(
                redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(self.cfg.lease.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(1),
            ) else {
                continue;
            };
            let claimed = array(&reply)
                .and_then(|p| p.get(1))
                .map(protocol::entries)
                .unwrap_or_default();
            for e in &claimed {
                match e.field("t").and_then(|t| std::str::from_utf8(t).ok()) {
                    Some(task) => {
                        view.hold(&needs);
                        log::info!("{} took over task {task} (its lease expired)", self.name);
                        return Some(Job {
                            entry: e.id.to_string(),
                            task: task.to_string(),
                            stream: stream.clone(),
                            needs: needs.clone(),
                            redelivered: true,
                        });
                    }
                    None => {
                        let _ = conn.query(redis::cmd("XACK").arg(&stream).arg(GROUP).arg(e.id));
                    }
                }
            }
        }
        None
    }

    /// Now and then, removes consumers of workers that are long gone (killed
    /// without a chance to leave): no pending entries and idle for ten leases.
    fn forget_dead_consumers(&self, conn: &mut Conn) {
        let idle_limit = (self.cfg.lease * 10).max(Duration::from_secs(30));
        {
            let mut next = protocol_lock(&self.cleanup);
            if Instant::now() < *next {
                return;
            }
            *next = Instant::now() + idle_limit;
        }
        let Ok(reply) = conn.query(
            redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&self.queue)
                .arg(GROUP),
        ) else {
            return;
        };
        for consumer in array(&reply).unwrap_or(&[]) {
            let fields = array(consumer).unwrap_or(&[]);
            let get = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv.len() == 2 && text(&kv[0]) == Some(name))
                    .map(|kv| &kv[1])
            };
            let (Some(name), Some(pending), Some(idle)) = (
                get("name").and_then(text),
                get("pending").and_then(protocol::int),
                get("idle").and_then(protocol::int),
            ) else {
                continue;
            };
            if name != self.consumer && pending == 0 && idle as u128 > idle_limit.as_millis() {
                log::info!(
                    "{}: removing the consumer of departed worker {name}",
                    self.name
                );
                let _ = conn.query(
                    redis::cmd("XGROUP")
                        .arg("DELCONSUMER")
                        .arg(&self.queue)
                        .arg(GROUP)
                        .arg(name),
                );
            }
        }
    }

    /// Runs a redis call until it succeeds (retrying transient failures with
    /// backoff). Gives up only on a non-transient error.
    /// While draining, a worker that cannot reach Redis gives up instead: its
    /// leases lapse and another worker redoes the task.
    fn call(&self, conn: &mut Conn, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        conn.query_retry(cmd, None, &|| DRAIN.load(Ordering::Relaxed))
    }

    /// True when the default lane is the only one (known, not stale).
    fn only_default(&self) -> bool {
        let view = protocol_lock(&self.view);
        !view.stale() && view.lanes.len() == 1
    }

    /// An idle slot's read: a group read as the slot's own consumer `me`
    /// blocks until entries are added to the default lane (or `READ_BLOCK`
    /// passes), after sending `finishes` in the same pipeline (`recover`
    /// is set when the read failed: see `recover_own`). Redis wakes
    /// only the blocked reader it serves, so one new entry wakes one idle
    /// slot of one worker. What the read brings is started by `delivered`.
    fn wait_and_claim(
        &self,
        conn: &mut Conn,
        me: &str,
        finishes: Vec<super::batch::Finished>,
        debt: &mut super::plain::Debt,
        recover: &mut bool,
    ) -> Claim {
        let want = self.pace.want();
        let mut pipe = redis::pipe();
        // Plain finishes (see `plain.rs`), or the script, which also tidies
        // exactly; with no finishes, the tidy owed for earlier plain ones.
        let cmds = self.plain_finish(conn, &finishes, debt);
        let plain = cmds.is_some();
        let mut n = 1;
        match cmds {
            Some(cmds) => {
                n += cmds.len();
                for c in cmds {
                    pipe.add_command(c);
                }
            }
            None if !finishes.is_empty() => {
                n += 1;
                pipe.add_command(self.finish_claim_cmd(&finishes, 0));
            }
            None => {
                if let Some(tidy) = debt.take(&self.scripts, &self.queue) {
                    n += 1;
                    pipe.add_command(tidy);
                }
            }
        }
        pipe.cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(me)
            .arg("COUNT")
            .arg(want)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.queue)
            .arg(">");
        let next = match conn.query_pipe_each(&pipe, n) {
            Ok(mut replies) => {
                let read = replies.pop();
                if replies.iter().any(|r| r.is_err()) {
                    // Perhaps before they ran: send them alone (again is harmless).
                    self.finish_alone(conn, &finishes);
                    if plain {
                        self.unfinish(conn, &finishes);
                    }
                    debt.paid();
                } else if plain {
                    if let Some(Ok(exec)) = replies.last() {
                        let lost = super::plain::undelivered(&finishes, exec);
                        if !lost.is_empty() {
                            if let Err(e) = conn.query_pipe(&super::plain::clear(&lost)) {
                                log::warn!("{}: {e}; clearing finished bits by script", self.name);
                                self.unfinish(conn, &finishes);
                            }
                        }
                    }
                    if let Some(last) = finishes.last() {
                        debt.owe(&last.entry);
                    }
                } else if !finishes.is_empty() {
                    debt.paid();
                }
                match read {
                    Some(Ok(reply)) => self.delivered(conn, &reply),
                    Some(Err(e)) => {
                        log::debug!("{}: {e}; retrying", self.name);
                        *recover = true;
                        Claim::Unknown
                    }
                    None => Claim::Unknown,
                }
            }
            Err(e) => {
                log::debug!("{}: {e}; retrying", self.name);
                *recover = true;
                // Perhaps before they ran: send them alone (again is harmless).
                self.finish_alone(conn, &finishes);
                if plain {
                    self.unfinish(conn, &finishes);
                }
                Claim::Unknown
            }
        };
        self.sent(finishes);
        next
    }

    /// After plain finishes whose outcome is unknown: clears the bits of
    /// the tasks whose client's event stream is gone (see `plain::unfinish`),
    /// retrying as a finish does.
    fn unfinish(&self, conn: &mut Conn, batch: &[super::batch::Finished]) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.call(conn, &super::plain::unfinish(&self.scripts, batch)) {
            log::error!(
                "{}: could not check the finished bits of {} task(s) ({}...): {e}",
                self.name,
                batch.len(),
                batch[0].task
            );
        }
    }

    /// The jobs a blocking group read delivered (`reply`). A quick entry
    /// (see `lua/submit.lua`) carries its call, and runs from the entry.
    /// When the cached liveness covers their clients, each quick job is
    /// marked started only if it runs long enough (see `starter`); else one
    /// `mark` call starts them all before they run, and the liveness values
    /// it reads are checked as `start`'s are. Any other entry is started by
    /// `start` when it runs.
    fn delivered(&self, conn: &mut Conn, reply: &redis::Value) -> Claim {
        self.delivered_entries(conn, read_reply(reply))
    }

    /// After a blocking read of slot `me` failed: the entries Redis
    /// delivered to it that it never received. A read whose reply is lost
    /// after Redis served it (the connection dropped; a worker stopped and
    /// continued, whose socket read then fails with `EINTR`, see
    /// signal(7)) leaves them pending for `me` only, and nobody else takes
    /// them before their lease lapses. `me` is this slot's own consumer,
    /// and the slot was idle: what is pending for it is what it never saw,
    /// except entries it read with others and queued (still held) and
    /// entries without their fields (deleted since), which are left alone.
    /// `Idle` when there are none.
    fn recover_own(&self, conn: &mut Conn, me: &str) -> redis::RedisResult<Claim> {
        let reply = conn.query(&pending_of(me, &self.queue))?;
        let entries = self.unseen(&self.queue, &reply);
        let lane_jobs = self.recover_own_lanes(conn, me)?;
        if !entries.is_empty() || !lane_jobs.is_empty() {
            log::info!(
                "{}: {} entr(ies) delivered to a read that failed; running them now",
                self.name,
                entries.len() + lane_jobs.len()
            );
        }
        let claim = self.delivered_entries(conn, entries);
        if lane_jobs.is_empty() {
            return Ok(claim);
        }
        match claim {
            Claim::Jobs(mut jobs) => {
                jobs.extend(lane_jobs);
                Ok(Claim::Jobs(jobs))
            }
            _ => Ok(Claim::Jobs(lane_jobs)),
        }
    }

    /// Of the entries `reply` (a read of what is pending for a slot in
    /// `stream`) holds, those the slot never saw: not queued here (held)
    /// and with their fields (not deleted since).
    fn unseen<'a>(&self, stream: &str, reply: &'a redis::Value) -> Vec<Entry<'a>> {
        let held = protocol_lock(&self.held);
        read_reply(reply)
            .into_iter()
            .filter(|e| e.field("t").is_some())
            .filter(|e| !held.contains(&(stream.to_string(), e.id.to_string())))
            .collect()
    }

    /// [`Worker::recover_own`] for the lanes other than the default: the
    /// entries a `take` of slot `me` took whose reply was lost. Each is
    /// run now if its lane fits the free resources (and holds them);
    /// otherwise it stays pending and is taken over when its lease lapses.
    fn recover_own_lanes(
        &self,
        conn: &mut Conn,
        me: &str,
    ) -> redis::RedisResult<Vec<(Job, Option<redis::Value>)>> {
        let lanes: Vec<String> = protocol_lock(&self.view)
            .lanes
            .iter()
            .filter(|l| l.stream != self.queue)
            .map(|l| l.stream.clone())
            .collect();
        let mut jobs = Vec::new();
        for stream in lanes {
            let reply = match conn.query(&pending_of(me, &stream)) {
                Ok(reply) => reply,
                // A lane whose stream or group is gone holds nothing.
                Err(e) if protocol::classify(&e) == protocol::Failure::NoGroup => continue,
                Err(e) => return Err(e),
            };
            for e in self.unseen(&stream, &reply) {
                let Some(task) = e.field("t").and_then(|t| std::str::from_utf8(t).ok()) else {
                    continue;
                };
                let mut view = protocol_lock(&self.view);
                let Some(needs) = view
                    .runnable()
                    .into_iter()
                    .find(|l| l.stream == stream)
                    .map(|l| l.needs.clone())
                else {
                    log::info!(
                        "{}: task {task} was delivered to a read that failed, and its \
                         resources are busy; it runs when its lease lapses",
                        self.name
                    );
                    continue;
                };
                view.hold(&needs);
                jobs.push((
                    Job {
                        entry: e.id.to_string(),
                        task: task.to_string(),
                        stream: stream.clone(),
                        needs,
                        redelivered: false,
                    },
                    None,
                ));
            }
        }
        Ok(jobs)
    }

    /// The jobs of entries read for this worker (see [`Worker::delivered`]).
    fn delivered_entries(&self, conn: &mut Conn, entries: Vec<Entry<'_>>) -> Claim {
        if entries.is_empty() {
            return Claim::Idle;
        }
        let cached = self.cached_live();
        let mut jobs: Vec<(Job, Option<redis::Value>)> = Vec::with_capacity(entries.len());
        // The quick jobs (by index in `jobs`).
        let mut quick: Vec<(usize, Quick)> = Vec::new();
        for e in &entries {
            let task = e
                .field("t")
                .and_then(|t| std::str::from_utf8(t).ok())
                .unwrap_or("");
            let job = Job {
                entry: e.id.to_string(),
                task: task.to_string(),
                stream: self.queue.clone(),
                needs: Vec::new(),
                redelivered: false,
            };
            let started = quick_start(e);
            let client = protocol::parse_task_id(task).map(|(c, _)| c);
            if let (Some(_), Some(client)) = (&started, client) {
                let q = Quick {
                    entry: job.entry.clone(),
                    task: job.task.clone(),
                    client: client.to_string(),
                };
                quick.push((jobs.len(), q));
                jobs.push((job, started));
            } else {
                jobs.push((job, None));
            }
        }
        if quick.is_empty() {
            return Claim::Jobs(jobs);
        }
        let trusted = cached
            .as_ref()
            .is_some_and(|(c, _)| quick.iter().all(|(_, q)| &q.client == c));
        if trusted {
            // Each is marked only if it still runs a moment later (see `starter`).
            let short = self.pace.short(super::starter::MARK_AFTER / 4);
            for (_, q) in quick {
                self.starter.defer(q, short);
            }
            return Claim::Jobs(jobs);
        }
        let (at, quick): (Vec<usize>, Vec<Quick>) = quick.into_iter().unzip();
        match conn.query(&self.mark_cmd(&quick, cached.as_ref())) {
            Ok(reply) => {
                let answers = array(&reply).unwrap_or(&[]);
                let mut gone = vec![false; jobs.len()];
                for (n, &i) in at.iter().enumerate() {
                    let parts = answers.get(n).and_then(array).unwrap_or(&[]);
                    match (parts.first().and_then(bytes), parts.get(1), parts.get(2)) {
                        (Some(b"run"), Some(live), Some(now)) => {
                            if let Some(redis::Value::Array(fields)) = &mut jobs[i].1 {
                                fields[QUICK_LIVE] = live.clone();
                                fields[QUICK_LIVE + 1] = now.clone();
                            }
                        }
                        // A reply short of answers: `start` starts the rest.
                        _ if n >= answers.len() => jobs[i].1 = None,
                        _ => gone[i] = true,
                    }
                }
                let jobs: Vec<_> = jobs
                    .into_iter()
                    .zip(gone)
                    .filter_map(|(j, gone)| (!gone).then_some(j))
                    .collect();
                if jobs.is_empty() {
                    Claim::Unknown
                } else {
                    Claim::Jobs(jobs)
                }
            }
            Err(e) => {
                log::debug!("{}: could not mark quick tasks started: {e}", self.name);
                for i in at {
                    jobs[i].1 = None;
                }
                Claim::Jobs(jobs)
            }
        }
    }

    /// The `mark` script call for `quick` tasks.
    fn mark_cmd(&self, quick: &[Quick], cached: Option<&(String, Vec<u8>)>) -> redis::Cmd {
        let mut keys: Vec<String> = Vec::with_capacity(1 + 3 * quick.len());
        keys.push(self.queue.clone());
        for q in quick {
            keys.push(self.keys.task(&q.task));
            keys.push(self.keys.events(&q.client));
            keys.push(self.keys.live(&q.client));
        }
        let mut mark = self.scripts.call(ScriptName::Mark, &keys);
        mark.arg(GROUP).arg(&self.consumer).arg(self.token());
        for q in quick {
            let value = cached
                .filter(|(c, _)| *c == q.client)
                .map(|(_, v)| v.as_slice())
                .unwrap_or_default();
            mark.arg(&q.entry).arg(&q.task).arg(value);
        }
        mark
    }

    /// Starts (unless `started` holds the reply of a claim that did) and
    /// runs one job (held by `queue_ahead`); its finish joins `unflushed`.
    fn run_job(&self, conn: &mut Conn, job: Job, started: Option<redis::Value>) {
        // The pace counts everything a task costs here, sealing a large
        // result included, not just the call.
        let began = Instant::now();
        let mut finished = self.run_job_inner(conn, &job, started);
        let unmarked = self.starter.finished(&job.entry);
        if let Some(f) = &mut finished {
            f.unmarked = unmarked;
        }
        self.pace.ran(began.elapsed());
        if !job.needs.is_empty() {
            protocol_lock(&self.view).release(&job.needs);
        }
        match finished {
            Some(f) => protocol_lock(&self.unflushed).push(f),
            // Acknowledged already (dropped, rejected, gone, cancelled).
            None => {
                protocol_lock(&self.held).remove(&(job.stream, job.entry));
            }
        }
    }

    /// True when the oldest finish not yet sent has waited long enough, or
    /// the waiting results are large.
    fn flush_due(&self) -> bool {
        let unflushed = protocol_lock(&self.unflushed);
        unflushed
            .first()
            .is_some_and(|f| f.done.elapsed() >= super::batch::FLUSH_AFTER)
            || unflushed.iter().map(|f| f.envelope.len()).sum::<usize>()
                >= super::batch::FLUSH_BYTES
    }

    /// Sends the finishes not yet sent; with `claim` (and only the default
    /// lane about, and not draining) claims the next jobs in the same
    /// script call, and returns what it brought.
    fn flush(&self, conn: &mut Conn, claim: bool) -> Claim {
        let batch = std::mem::take(&mut *protocol_lock(&self.unflushed));
        if batch.is_empty() {
            return Claim::Unknown;
        }
        let want = if claim && !self.draining() && self.only_default() {
            self.pace.want()
        } else {
            0
        };
        let next = if want > 0 {
            let cmd = self.finish_claim_cmd(&batch, want as i64);
            // One attempt: on failure the finishes go alone, with retries.
            conn.query(&cmd).ok().map(|reply| self.claimed(&reply))
        } else {
            None
        };
        let next = next.unwrap_or_else(|| {
            self.finish_alone(conn, &batch);
            Claim::Unknown
        });
        self.sent(batch);
        next
    }

    /// Sends finishes without a claim, retrying transient failures (see
    /// `call`); a failure is logged, and the leases lapse.
    fn finish_alone(&self, conn: &mut Conn, batch: &[super::batch::Finished]) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.call(conn, &self.finish_claim_cmd(batch, 0)) {
            log::error!(
                "{}: could not finish {} task(s) ({}...): {e}",
                self.name,
                batch.len(),
                batch[0].task
            );
        }
    }

    /// Finishes sent (or given up): their entries are no longer held.
    fn sent(&self, batch: Vec<super::batch::Finished>) {
        let mut held = protocol_lock(&self.held);
        for f in batch {
            held.remove(&(f.stream, f.entry));
        }
    }

    /// The `finish_claim` script call for `batch`, claiming `want` (0: none).
    fn finish_claim_cmd(&self, batch: &[super::batch::Finished], want: i64) -> redis::Cmd {
        let mut keys: Vec<&str> = Vec::with_capacity(1 + 5 * batch.len());
        keys.push(&self.queue);
        for f in batch {
            keys.extend([
                f.stream.as_str(),
                &f.task_key,
                &f.result_key,
                &f.events,
                &f.finished,
            ]);
        }
        let mut cmd = self.scripts.call(ScriptName::FinishClaim, &keys);
        cmd.arg(batch.len());
        self.claim_args(&mut cmd, want);
        for f in batch {
            f.args(&mut cmd);
        }
        cmd
    }

    /// The plain finishes of `batch` (see `plain.rs`), when they qualify,
    /// the server takes them and no tidy is due; their results are then
    /// pushed to their client first (see `push`), which is why this is
    /// called just before the finishes go.
    fn plain_finish(
        &self,
        conn: &mut Conn,
        batch: &[super::batch::Finished],
        debt: &super::plain::Debt,
    ) -> Option<Vec<redis::Cmd>> {
        if batch.is_empty() || debt.due() || !self.plain_ok(conn) {
            return None;
        }
        let (client, value) = self.cached_live()?;
        let expires = super::plain::expiry_of(&value)?;
        if !super::plain::qualifies(batch, &self.queue, &self.keys.events(&client)) {
            return None;
        }
        let pushed = self
            .pusher
            .push(&client, batch)
            .then(|| self.keys.pushed_events(&client));
        Some(super::plain::commands(
            batch,
            &self.queue,
            expires,
            pushed.as_deref(),
        ))
    }

    /// True when the server takes `PEXPIREAT`'s `NX` and `GT` (Redis 7.0
    /// or newer), asked once (on `conn`).
    fn plain_ok(&self, conn: &mut Conn) -> bool {
        match self.plain.load(Ordering::Relaxed) {
            1 => return true,
            2 => return false,
            _ => {}
        }
        let Ok(info) = conn.query(redis::cmd("INFO").arg("server")) else {
            return false;
        };
        let version = protocol::server_version(protocol::text(&info).unwrap_or(""));
        let ok = version >= (7, 0);
        self.plain.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
        ok
    }

    /// Pays a slot's tidy debt (see `plain.rs`) on its own, before the
    /// slot reads otherwise than by `wait_and_claim`, or ends.
    fn pay(&self, conn: &mut Conn, debt: &mut super::plain::Debt) {
        if let Some(tidy) = debt.take(&self.scripts, &self.queue) {
            if let Err(e) = conn.query(&tidy) {
                log::debug!("{}: could not tidy the queue: {e}", self.name);
            }
        }
    }

    /// A fresh delivery token (see `start_fn.lua`).
    fn token(&self) -> String {
        format!(
            "{}#{}",
            self.consumer,
            self.deliveries.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The cached liveness value (client, value) while it may be trusted.
    fn cached_live(&self) -> Option<(String, Vec<u8>)> {
        let cache = protocol_lock(&self.live_cache);
        cache
            .as_ref()
            .filter(|c| Instant::now() < c.until)
            .map(|c| (c.client.clone(), c.value.clone()))
    }

    /// Checks a liveness value read by `start` (`=`: the cached one, still
    /// trusted when the script was sent), caching it when it verifies.
    fn client_alive(&self, client: &str, value: &[u8], now: &[u8]) -> bool {
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

    /// The `start` script call for a job read by other means than `claim`.
    fn start(
        &self,
        conn: &mut Conn,
        job: &Job,
        client: &str,
        bit: i64,
    ) -> redis::RedisResult<redis::Value> {
        let cached = self
            .cached_live()
            .filter(|(c, _)| c == client)
            .map(|(_, v)| v)
            .unwrap_or_default();
        let mut start = self.scripts.call(
            ScriptName::Start,
            &[
                &job.stream,
                &self.keys.task(&job.task),
                &self.keys.events(client),
                &self.keys.live(client),
                &self.keys.finished(client),
            ],
        );
        start
            .arg(&job.entry)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.token())
            .arg(&job.task)
            .arg(bit)
            .arg(cached)
            .arg(if job.redelivered { "1" } else { "0" });
        self.call(conn, &start)
    }

    /// The arguments of a claim of at most `want` entries (see `claim_fn.lua`).
    fn claim_args(&self, cmd: &mut redis::Cmd, want: i64) {
        let (client, value) = self.cached_live().unwrap_or_default();
        cmd.arg(GROUP)
            .arg(&self.consumer)
            .arg(self.keys.tag())
            .arg(self.token())
            .arg(value)
            .arg(client)
            .arg(want);
    }

    /// What a `claim` reply says.
    fn claimed(&self, reply: &redis::Value) -> Claim {
        let parts = array(reply).unwrap_or(&[]);
        // A single string: nothing new (a cursor).
        if let [one] = parts {
            if text(one).is_some() {
                return Claim::Idle;
            }
        }
        let jobs: Vec<(Job, Option<redis::Value>)> = parts
            .iter()
            .filter_map(|claimed| {
                let parts = array(claimed)?;
                let (entry, task) = (text(parts.first()?)?, text(parts.get(1)?)?);
                let job = Job {
                    entry: entry.to_string(),
                    task: task.to_string(),
                    stream: self.queue.clone(),
                    needs: Vec::new(),
                    redelivered: false,
                };
                let started = (parts.len() > 2).then(|| redis::Value::Array(parts[2..].to_vec()));
                Some((job, started))
            })
            .collect();
        if jobs.is_empty() {
            Claim::Unknown
        } else {
            Claim::Jobs(jobs)
        }
    }

    fn run_job_inner(
        &self,
        conn: &mut Conn,
        job: &Job,
        started: Option<redis::Value>,
    ) -> Option<super::batch::Finished> {
        let Some((client, seq)) = protocol::parse_task_id(&job.task) else {
            log::warn!(
                "{}: dropping a malformed stream entry {}",
                self.name,
                job.entry
            );
            self.ack(conn, &job.entry);
            return None;
        };
        let bit = protocol::bit_of(seq);
        let reply = match started {
            Some(reply) => Ok(reply),
            None => self.start(conn, job, client, bit),
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                // Not transient: the record is not a hash, or similar junk.
                log::warn!("{}: could not start task {}: {e}", self.name, job.task);
                self.reject(conn, job, &format!("the task record is unusable: {e}"));
                return None;
            }
        };
        let parts = array(&reply).unwrap_or(&[]);
        let field = |i: usize| parts.get(i).and_then(bytes).unwrap_or(&[]);
        let outcome = match field(0) {
            b"run" => {
                let cancelled: HashSet<usize> = std::str::from_utf8(field(6))
                    .unwrap_or("")
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect();
                let record = Record {
                    trampoline: field(1),
                    build: field(2),
                    args: field(3),
                    signature: field(4),
                    items: field(5),
                    nonce: field(7),
                };
                let limit = std::str::from_utf8(field(10))
                    .ok()
                    .and_then(|l| l.parse::<u64>().ok())
                    .filter(|&ms| ms > 0)
                    .map(Duration::from_millis);
                let items = std::str::from_utf8(field(5))
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                if let Some(limit) = limit {
                    protocol_lock(&self.deadlines).insert(
                        job.entry.clone(),
                        Deadline {
                            at: Instant::now() + limit,
                            limit,
                            task: job.task.clone(),
                            stream: job.stream.clone(),
                            items,
                        },
                    );
                }
                let ran = self.execute(conn, &job.task, &record, &cancelled, || {
                    self.client_alive(client, field(8), field(9))
                });
                if limit.is_some() {
                    protocol_lock(&self.deadlines).remove(&job.entry);
                }
                match ran {
                    Ok(Some(outcome)) => outcome,
                    Ok(None) => {
                        log::info!(
                            "{}: dropped task {} (entry {}): its client is gone",
                            self.name,
                            job.task,
                            job.entry
                        );
                        self.drop_task(conn, job);
                        return None;
                    }
                    Err(reason) => {
                        log::warn!(
                            "{}: rejected task {} (entry {}): {reason}",
                            self.name,
                            job.task,
                            job.entry
                        );
                        self.reject(conn, job, &reason);
                        return None;
                    }
                }
            }
            b"lost" => {
                let owner = String::from_utf8_lossy(field(1)).into_owned();
                let starts = String::from_utf8_lossy(field(2)).into_owned();
                let died = conn
                    .query(redis::cmd("GET").arg(self.keys.died(&owner)))
                    .ok()
                    .and_then(|v| text(&v).map(str::to_string));
                let last = died.map(|how| format!("; it {how}")).unwrap_or_else(|| {
                    "; it died, hung, or lost contact with Redis for longer than the lease".into()
                });
                Outcome::Lost {
                    worker: format!("cluster worker {owner}"),
                    status: format!(
                        "the task was started {starts} times and each time its worker stopped \
                         before finishing (max_deliveries = {starts}){last}"
                    ),
                }
            }
            // Gone (finished elsewhere, never existed) or cancelled: already acknowledged.
            _ => return None,
        };
        // A large single value stays in Redis until the client asks for it.
        let lazy = matches!(&outcome, Outcome::Ran { items, .. } if matches!(
            items.as_slice(),
            [ItemOutcome::Value(v)] if v.len() > super::remote::LAZY_ABOVE
        ));
        let mut outcome = outcome;
        let envelope =
            outcome.seal_within(self.cfg.secret.as_bytes(), &job.task, self.bulk_limit());
        Some(super::batch::Finished::new(
            &self.keys,
            &job.stream,
            &job.entry,
            &job.task,
            (client, seq),
            envelope,
            lazy,
        ))
    }

    /// Verifies and runs a task record. `Err` means: reject it (bad signature
    /// or a record that cannot be read); `Ok(None)`: drop it, its client is
    /// gone (checked after the signature, with `client_alive`); a refusal
    /// after verification (other build, bad trampoline) is an
    /// `Ok(Some(Refused))` outcome for the client.
    fn execute(
        &self,
        conn: &mut Conn,
        task: &str,
        record: &Record<'_>,
        cancelled: &HashSet<usize>,
        client_alive: impl FnOnce() -> bool,
    ) -> Result<Option<Outcome>, String> {
        let parse = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
        let (Some(trampoline), Some(n), Ok(build), Ok(nonce)) = (
            parse(record.trampoline),
            parse(record.items),
            std::str::from_utf8(record.build),
            std::str::from_utf8(record.nonce),
        ) else {
            return Err("the task record is malformed".into());
        };
        let args = record.args;
        // Nothing about the record is trusted before this check.
        let seal = protocol::TaskSeal {
            namespace: &self.cfg.namespace,
            task,
            nonce,
            trampoline,
            build_id: build,
            items: n,
            args,
        };
        if !protocol::verify_task(self.cfg.secret.as_bytes(), &seal, record.signature) {
            return Err(format!(
                "its signature does not verify under this worker's secret and namespace \
                 {:?} (a forged or altered task, a client with a different secret, or a \
                 record copied from another namespace)",
                self.cfg.namespace
            ));
        }
        if !client_alive() {
            return Ok(None);
        }
        let refuse = |message: String| {
            Ok(Some(Outcome::Refused {
                worker: self.name.clone(),
                message,
            }))
        };
        if build != self.build_id {
            return refuse(format!(
                "the call comes from a different build of the program (caller build id \
                 {build}, worker build id {}); run the same binary on every host",
                self.build_id
            ));
        }
        // The blob holds the captures, then the items (see `Shared::enqueue`).
        let Some((captures, items)) = (n as usize)
            .checked_add(1)
            .and_then(|count| protocol::split_items(args, count))
            .and_then(|mut items| (!items.is_empty()).then(|| (items.remove(0), items)))
        else {
            return refuse("the task's arguments are malformed".into());
        };
        let mut call = match ship::resolve(trampoline, captures) {
            Ok(t) => t,
            Err(message) => return refuse(message),
        };
        let mut outcomes = Vec::with_capacity(items.len());
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if cancelled.contains(&i) {
                outcomes.push(ItemOutcome::Skipped);
                continue;
            }
            out.clear();
            // A dependent's arguments may name inputs that stayed in Redis.
            let filled = match super::remote::parse_template(item) {
                None => None,
                Some(Ok(pieces)) => match self.fill_template(conn, &pieces) {
                    Ok(args) => Some(args),
                    Err(message) => {
                        outcomes.push(ItemOutcome::Failed(ship::WireError::Refused { message }));
                        continue;
                    }
                },
                Some(Err(message)) => {
                    outcomes.push(ItemOutcome::Failed(ship::WireError::Refused { message }));
                    continue;
                }
            };
            let item = filled.as_deref().unwrap_or(item);
            // The trampoline catches the task's panics; `contain` also
            // catches one whose payload panics again when dropped, which
            // would otherwise end this slot's thread.
            outcomes.push(match crate::panic::catch(|| call.call(item, &mut out)) {
                Ok(Ok(())) => ItemOutcome::Value(std::mem::take(&mut out)),
                Ok(Err(e)) => ItemOutcome::Failed(e),
                Err(e) => ItemOutcome::Failed(ship::WireError::from(e)),
            });
        }
        Ok(Some(Outcome::Ran {
            worker: self.name.clone(),
            items: outcomes,
        }))
    }

    /// Drops a task of a client that is gone (see `drop.lua`).
    fn drop_task(&self, conn: &mut Conn, job: &Job) {
        let task_key = self.keys.task(&job.task);
        let mut cmd = self
            .scripts
            .call(ScriptName::Drop, &[job.stream.as_str(), &task_key]);
        cmd.arg(&job.entry).arg(GROUP);
        if self.call(conn, &cmd).is_err() {
            self.ack_in(conn, &job.stream, &job.entry);
        }
    }

    /// The arguments of a template: its literal pieces, and the values of
    /// the inputs it names read from their results in Redis (one `MGET`).
    fn fill_template(
        &self,
        conn: &mut Conn,
        pieces: &[super::remote::Piece<'_>],
    ) -> Result<Vec<u8>, String> {
        use super::remote::Piece;
        let inputs: Vec<&str> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Input(task) => Some(*task),
                Piece::Bytes(_) => None,
            })
            .collect();
        let mut mget = redis::cmd("MGET");
        for task in &inputs {
            mget.arg(self.keys.result(task));
        }
        let reply = conn
            .query(&mget)
            .map_err(|e| format!("could not read the call's inputs from Redis: {e}"))?;
        let envelopes = array(&reply).unwrap_or(&[]);
        let mut values = Vec::with_capacity(inputs.len());
        for (i, task) in inputs.iter().enumerate() {
            let envelope = envelopes.get(i).and_then(bytes).unwrap_or(&[]);
            let value = super::remote::single_value(self.cfg.secret.as_bytes(), task, envelope)
                .map_err(|e| format!("input {task} of the call is not usable: {e}"))?;
            values.push(value);
        }
        if let ([Piece::Input(_)], [_]) = (pieces, values.as_slice()) {
            // One input and nothing else: its value is the argument tuple.
            return Ok(values.pop().unwrap_or_default());
        }
        let mut values = values.into_iter();
        let mut args = Vec::new();
        for p in pieces {
            match p {
                Piece::Bytes(b) => args.extend_from_slice(b),
                Piece::Input(_) => args.extend(values.next().unwrap_or_default()),
            }
        }
        Ok(args)
    }

    fn reject(&self, conn: &mut Conn, job: &Job, reason: &str) {
        let Some((client, _)) = protocol::parse_task_id(&job.task) else {
            self.ack(conn, &job.entry);
            return;
        };
        let envelope = Outcome::Rejected {
            worker: self.name.clone(),
            reason: reason.to_string(),
        }
        .seal(self.cfg.secret.as_bytes(), &job.task);
        let mut cmd = self.scripts.call(
            ScriptName::Reject,
            &[
                &job.stream,
                &self.keys.task(&job.task),
                &self.keys.result(&job.task),
                &self.keys.events(client),
            ],
        );
        cmd.arg(&job.entry)
            .arg(GROUP)
            .arg(&envelope)
            .arg(protocol::DEAD_RECORD_TTL.as_secs())
            .arg(&job.task)
            .arg(reason);
        if self.call(conn, &cmd).is_err() {
            self.ack_in(conn, &job.stream, &job.entry);
        }
    }

    fn ack(&self, conn: &mut Conn, entry: &str) {
        self.ack_in(conn, &self.queue, entry);
    }

    fn ack_in(&self, conn: &mut Conn, stream: &str, entry: &str) {
        let _ = conn.query(redis::cmd("XACK").arg(stream).arg(GROUP).arg(entry));
        let _ = conn.query(redis::cmd("XDEL").arg(stream).arg(entry));
    }

    /// Keeps the leases of the entries being run from expiring.
    fn heartbeat(self: Arc<Self>) {
        let Some(mut conn) = self.connect(Duration::from_secs(5)) else {
            return;
        };
        let every = (self.cfg.lease / 3).clamp(Duration::from_millis(20), Duration::from_secs(10));
        let mut next = Instant::now() + every;
        loop {
            // Keep beating while a draining worker finishes its tasks.
            std::thread::sleep(Duration::from_millis(20).min(every));
            let held: Vec<(String, String)> = protocol_lock(&self.held).iter().cloned().collect();
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            self.draining();
            self.enforce_limits(&mut conn);
            // A mark deferred without waking its thread (see `Starter::defer`).
            self.starter.kick();
            // A slot running a long task holds finished results: send them.
            let late = protocol_lock(&self.unflushed)
                .first()
                .is_some_and(|f| f.done.elapsed() >= super::batch::FLUSH_LATE);
            if late {
                self.flush(&mut conn, false);
            }
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + every;
            if held.is_empty() {
                continue;
            }
            let mut streams: Vec<&str> = held.iter().map(|(s, _)| s.as_str()).collect();
            streams.sort_unstable();
            streams.dedup();
            for stream in streams {
                let mut cmd = redis::cmd("XCLAIM");
                cmd.arg(stream).arg(GROUP).arg(&self.consumer).arg(0);
                for (_, id) in held.iter().filter(|(s, _)| s == stream) {
                    cmd.arg(id);
                }
                cmd.arg("JUSTID");
                if let Err(e) = conn.query(&cmd) {
                    log::debug!("{}: heartbeat failed: {e}", self.name);
                }
            }
        }
    }

    /// Ends the worker when a running task overran its run-time limit: the
    /// task's result becomes `Timeout` (naming the limit), then the process
    /// exits (code 124) so the call stops; a local worker is replaced by its
    /// cluster, a remote one by whatever supervises it. Other tasks running
    /// in the same process are redone elsewhere when their leases lapse.
    fn enforce_limits(&self, conn: &mut Conn) {
        let now = Instant::now();
        let overdue: Option<(String, Deadline)> = {
            let mut d = protocol_lock(&self.deadlines);
            let entry = d
                .iter()
                .find(|(_, dl)| dl.at <= now)
                .map(|(e, _)| e.clone());
            entry.and_then(|e| d.remove_entry(&e))
        };
        let Some((entry, dl)) = overdue else {
            return;
        };
        let what = format!(
            "the call ran longer than its limit of {:?}; its worker was stopped and replaced",
            dl.limit
        );
        log::warn!("{}: task {} {what}", self.name, dl.task);
        let outcome = Outcome::Ran {
            worker: self.name.clone(),
            items: (0..dl.items.max(1))
                .map(|_| ItemOutcome::Failed(ship::WireError::Timeout { what: what.clone() }))
                .collect(),
        };
        // Its result, and those of tasks that ran before it, are not lost with
        // the process (one attempt: the overdue task must not wait on Redis).
        let mut batch = std::mem::take(&mut *protocol_lock(&self.unflushed));
        if let Some(id) = protocol::parse_task_id(&dl.task) {
            let envelope = outcome.seal(self.cfg.secret.as_bytes(), &dl.task);
            batch.push(super::batch::Finished::new(
                &self.keys, &dl.stream, &entry, &dl.task, id, envelope, false,
            ));
        }
        if !batch.is_empty() {
            if let Err(e) = conn.query(&self.finish_claim_cmd(&batch, 0)) {
                log::error!(
                    "{}: could not report the timeout of {}: {e}",
                    self.name,
                    dl.task
                );
            }
        }
        let _ = std::io::stderr().flush();
        // SAFETY: ends this process at once; the overdue task cannot be
        // stopped any other way, and every other task's lease protects it.
        unsafe { libc::_exit(124) }
    }

    /// Removes this worker's consumer, and its slots' (see
    /// `wait_and_claim`), from the group of every lane it knows, each only
    /// if it holds nothing there: one that holds an entry (a delivery whose
    /// reply was lost, or a task left running) stays for the reaper.
    fn leave(&self) {
        let Some(mut conn) = self.connect(Duration::from_secs(2)) else {
            return;
        };
        let slots = std::mem::take(&mut *protocol_lock(&self.slot_consumers));
        let mut streams: Vec<String> = protocol_lock(&self.view)
            .lanes
            .iter()
            .map(|l| l.stream.clone())
            .collect();
        if !streams.contains(&self.queue) {
            streams.push(self.queue.clone());
        }
        let pairs: Vec<(&String, &String)> = streams
            .iter()
            .flat_map(|s| {
                std::iter::once(&self.consumer)
                    .chain(&slots)
                    .map(move |n| (s, n))
            })
            .collect();
        // Two round trips for all of them: what each holds, then the
        // removal of those that hold nothing. (A lane whose group is gone
        // answers an error, and is skipped.)
        let mut ask = redis::pipe();
        for (stream, name) in &pairs {
            ask.cmd("XPENDING")
                .arg(*stream)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(*name);
        }
        let Ok(answers) = conn.query_pipe_each(&ask, pairs.len()) else {
            return;
        };
        let mut remove = redis::pipe();
        for ((stream, name), answer) in pairs.iter().zip(&answers) {
            if answer
                .as_ref()
                .is_ok_and(|v| array(v).is_some_and(|a| a.is_empty()))
            {
                remove
                    .cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(*stream)
                    .arg(GROUP)
                    .arg(*name)
                    .ignore();
            }
        }
        let _ = conn.query_pipe(&remove);
    }
}

/// Reads what `stream`'s group delivered to consumer `me` and it has not
/// acknowledged (a batch at most).
fn pending_of(me: &str, stream: &str) -> redis::Cmd {
    let mut read = redis::cmd("XREADGROUP");
    read.arg("GROUP")
        .arg(GROUP)
        .arg(me)
        .arg("COUNT")
        .arg(super::batch::MAX_BATCH)
        .arg("STREAMS")
        .arg(stream)
        .arg("0");
    read
}

/// Where `start`'s reply holds the liveness value (the server time follows).
const QUICK_LIVE: usize = 8;

/// The reply `start` would give for a quick entry (see `lua/submit.lua`),
/// from the call it carries: `None` for any other entry. Its liveness is
/// the cached one (`=`), which `delivered` replaces when it checked it.
fn quick_start(e: &Entry<'_>) -> Option<redis::Value> {
    if e.field("q")? != b"1" {
        return None;
    }
    let mut fields = vec![redis::Value::BulkString(b"run".to_vec())];
    for name in ["f", "b", "a", "s", "n"] {
        fields.push(redis::Value::BulkString(e.field(name)?.to_vec()));
    }
    // No item of a quick task is cancelled (see `lua/cancel.lua`).
    fields.push(redis::Value::BulkString(Vec::new()));
    fields.push(redis::Value::BulkString(e.field("nc")?.to_vec()));
    debug_assert_eq!(fields.len(), QUICK_LIVE);
    fields.push(redis::Value::BulkString(b"=".to_vec()));
    fields.push(redis::Value::BulkString(Vec::new()));
    fields.push(redis::Value::BulkString(e.field("tl")?.to_vec()));
    Some(redis::Value::Array(fields))
}

fn protocol_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

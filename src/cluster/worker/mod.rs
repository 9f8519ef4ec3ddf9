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
//!
//! # Files
//!
//! This file holds the configuration, the process's start and the state the
//! slots share (`Worker`); one file each for a slot's loop (`slot`), reading
//! entries (`read`), claims and starts (`claim`), running a job (`run`),
//! finishes (`finish`), what departed consumers leave behind (`reap`), the
//! client liveness check (`alive`) and the heartbeat (`heartbeat`).

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

mod alive;
mod claim;
mod finish;
mod heartbeat;
mod read;
mod reap;
mod run;
mod slot;

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

    fn ack(&self, conn: &mut Conn, entry: &str) {
        self.ack_in(conn, &self.queue, entry);
    }

    fn ack_in(&self, conn: &mut Conn, stream: &str, entry: &str) {
        let _ = conn.query(redis::cmd("XACK").arg(stream).arg(GROUP).arg(entry));
        let _ = conn.query(redis::cmd("XDEL").arg(stream).arg(entry));
    }
}

fn protocol_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

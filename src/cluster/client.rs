//! The client side of a [`Cluster`](super::Cluster): submission, the event
//! loop that completes futures, and the supervisor of local workers.
//!
//! Three threads, each with its own Redis connection:
//!
//! * **dispatcher** — sends queued submissions (many tasks per `submit`
//!   script call) and cancellations; retries transient failures with backoff
//!   for [`Config::reconnect_timeout`], then fails the affected futures with
//!   [`Error::Backend`].
//! * **event loop** — blocks on `XREAD` of the client's event stream, marks
//!   futures running on `started` events, and on `done` events reads the
//!   results of the whole batch with one `MGET`, verifies their signatures,
//!   completes the promises, then deletes results and events with one `ack`
//!   script call. It also probes, now and then, for tasks that vanished from
//!   Redis, and sends them again, so no future can wait forever.
//! * **supervisor** (with `local_workers(n)`) — keeps n worker processes of
//!   this binary running, and stops them (SIGTERM: drain) at shutdown.

use super::courier::{Courier, Job};
use super::protocol::{
    self, array, bytes, read_reply, Conn, ItemOutcome, Keys, Outcome, ScriptName, Scripts,
};
use super::remote::Remote;
use crate::future::{pair_in, Promise};
use crate::ship;
use crate::{Error, Future, Payload, Result};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything fixed at build time.
pub(crate) struct Config {
    pub(crate) url: String,
    pub(crate) namespace: String,
    pub(crate) keys: Keys,
    pub(crate) secret: String,
    pub(crate) lease: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) local_workers: usize,
    pub(crate) reconnect_timeout: Duration,
    /// How long the client's keys outlive it (refreshed while it runs).
    pub(crate) client_ttl: Duration,
    /// What local workers advertise (`FANOUT_CLUSTER_RESOURCES`).
    pub(crate) local_worker_resources: String,
}

/// How long the event loop blocks in one `XREAD`.
const EVENT_BLOCK: Duration = Duration::from_millis(1000);

/// Most result bytes fetched in one `MGET` (a larger result comes alone).
const FETCH_BYTES: u64 = 64 << 20;

/// Most argument bytes sent in one `submit` script call (a larger task goes alone).
const SUBMIT_BYTES: usize = 64 << 20;

/// How long shutdown waits for done-callbacks that are still running.
const COURIER_DRAIN: Duration = Duration::from_secs(30);

/// How often (and after how long) the event loop checks that sent tasks still exist.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The client's side of one call: how its outcome gets decoded and delivered.
trait Delivery: Send {
    fn set_running(&self) -> bool;
    fn deliver(self: Box<Self>, outcome: Result<&[u8]>);
    fn fail(self: Box<Self>, error: Error);
    /// Completes with a value that stays in Redis until asked for.
    fn deliver_remote(self: Box<Self>, remote: Arc<Remote>);
}

impl<R: Payload> Delivery for Promise<R> {
    fn set_running(&self) -> bool {
        Promise::set_running(self)
    }
    fn deliver(self: Box<Self>, outcome: Result<&[u8]>) {
        if let Ok(bytes) = outcome {
            // A future with `Arg`s keeps its result bytes for its dependents.
            if self.cell().wants_encoded() {
                self.cell().keep_encoded(Ok(bytes.into()));
            }
        }
        // The result type's `Deserialize` is user code: a panic there is
        // this call's error, never the courier's death.
        let decoded = outcome.and_then(|bytes| crate::panic::catch(|| ship::decode::<R>(bytes))?);
        self.set_outcome(decoded);
    }
    fn fail(self: Box<Self>, error: Error) {
        self.set_error(error);
    }
    fn deliver_remote(self: Box<Self>, remote: Arc<Remote>) {
        super::remote::complete_remote(*self, remote);
    }
}

/// A submitted task whose outcome has not arrived.
struct Inflight {
    /// One per item; `None` once delivered elsewhere (cancelled at shutdown).
    items: Vec<Option<Box<dyn Delivery>>>,
    started: bool,
    /// When the dispatcher got it into Redis; `None` while queued.
    sent_at: Option<Instant>,
    /// Items whose cancellation the dispatcher has processed.
    cancelled: usize,
    /// The call, kept until its outcome arrives: a task whose record
    /// vanished from Redis (a restart without persistence) is sent again.
    trampoline: u64,
    args: Arc<Vec<u8>>,
    /// Its lane and run-time limit, as in [`Outgoing`].
    lane: (String, String),
    limit_ms: u64,
}

/// A task record waiting for the dispatcher.
struct Outgoing {
    seq: u64,
    task: String,
    trampoline: u64,
    args: Arc<Vec<u8>>,
    signature: [u8; protocol::SIG_LEN],
    items: usize,
    nonce: String,
    /// The stream of its lane, and the lane's registry entry ("" for the
    /// default lane); see `lanes`.
    lane: (String, String),
    /// Its run-time limit in milliseconds (0: none).
    limit_ms: u64,
}

#[derive(Default)]
struct State {
    inflight: HashMap<u64, Inflight>,
    outbox: Vec<Outgoing>,
    /// (seq, item index or -1 for a one-item task)
    cancels: Vec<(u64, i64)>,
    /// A task sent again under a new sequence number: old → new.
    aliases: HashMap<u64, u64>,
    closing: bool,
    /// Result keys nobody can ask for any more, deleted by the event loop.
    releases: Vec<String>,
    woken: bool,
    loop_done: bool,
    workers_started: bool,
}

/// A local worker process and its slot.
struct LocalWorker {
    child: Child,
    started: Instant,
}

pub(crate) struct Shared {
    pub(crate) cfg: Config,
    client_id: String,
    build_id: String,
    scripts: Arc<Scripts>,
    seq: AtomicU64,
    state: Mutex<State>,
    /// Wakes the dispatcher.
    work: Condvar,
    /// Notified when the event loop or the workers finish.
    finished: Condvar,
    workers: Mutex<Vec<Option<LocalWorker>>>,
    /// The client's own threads (a shutdown from one of them must not wait).
    thread_ids: Mutex<Vec<ThreadId>>,
    /// The tag of this cluster's futures (see `Executor::owner`).
    owner: u64,
    /// For values fetched on demand, `put` and deletes after shutdown.
    fetch_conn: Mutex<Conn>,
    /// Results that stay in Redis while a handle to them lives (see
    /// `remote`); the keeper extends their lifetime with the client's.
    held: Mutex<std::collections::HashSet<String>>,
    /// Completes futures (and runs their done-callbacks) off the event loop.
    courier: Courier,
    /// The latest liveness value the keeper wrote.
    live: Mutex<String>,
    /// The server's limit on one value (`proto-max-bulk-len`).
    bulk_limit: u64,
}

impl Shared {
    /// Connects, prepares the namespace and starts the client's threads.
    pub(crate) fn start(cfg: Config) -> Result<(Arc<Shared>, Vec<std::thread::JoinHandle<()>>)> {
        let scripts = Arc::new(Scripts::new());
        let client_id = ship::hex(&protocol::random_bytes::<8>()?);
        let mut conn = Conn::new(&cfg.url, &cfg.keys, scripts.clone(), Duration::from_secs(5))?;
        let url = protocol::redact(&cfg.url);
        let info = conn
            .query(redis::cmd("INFO").arg("server"))
            .map_err(|e| Error::Backend {
                message: format!(
                    "could not connect to Redis at {url}: {e}; is redis-server running and \
                     reachable, and are the password and user in the URL right?"
                ),
            })?;
        check_version(protocol::text(&info).unwrap_or(""), &url)?;
        let events = cfg.keys.events(&client_id);
        conn.query(
            redis::cmd("XADD")
                .arg(&events)
                .arg("MAXLEN")
                .arg(0)
                .arg("*")
                .arg("k")
                .arg("i"),
        )
        .map_err(|e| protocol::backend("could not create the event stream", &cfg.url, &e))?;
        let fetch_conn = Conn::new(
            &cfg.url,
            &cfg.keys,
            scripts.clone(),
            Duration::from_secs(30),
        )?;
        let event_conn = Conn::new(
            &cfg.url,
            &cfg.keys,
            scripts.clone(),
            EVENT_BLOCK + Duration::from_secs(3),
        )?;
        let shared = Arc::new(Shared {
            cfg,
            client_id,
            build_id: protocol::build_id_hex(),
            scripts,
            seq: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            finished: Condvar::new(),
            workers: Mutex::new(Vec::new()),
            thread_ids: Mutex::new(Vec::new()),
            owner: crate::graph::new_owner(),
            fetch_conn: Mutex::new(fetch_conn),
            held: Mutex::new(std::collections::HashSet::new()),
            courier: Courier::default(),
            live: Mutex::new(String::new()),
            bulk_limit: protocol::bulk_limit(&mut conn),
        });
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::Broken {
                    reason: format!("could not start the cluster's {name} thread: {e}"),
                })
        };
        let abort = |e: Error| {
            // Let any thread already started end.
            let mut st = lock(&shared.state);
            st.closing = true;
            st.loop_done = true;
            drop(st);
            shared.work.notify_all();
            shared.finished.notify_all();
            e
        };
        // Workers run only tasks of a live client: be alive before the first submit.
        let mut keeper_conn = Conn::new(
            &shared.cfg.url,
            &shared.cfg.keys,
            shared.scripts.clone(),
            Duration::from_secs(5),
        )?;
        shared
            .refresh(&mut keeper_conn)
            .map_err(|e| protocol::backend("could not register the client", &shared.cfg.url, &e))?;
        let s = shared.clone();
        threads.push(
            spawn(
                "fanout-cluster-keeper",
                Box::new(move || s.keeper(keeper_conn)),
            )
            .map_err(abort)?,
        );
        let s = shared.clone();
        threads.push(
            spawn(
                "fanout-cluster-dispatch",
                Box::new(move || s.dispatcher(conn)),
            )
            .map_err(abort)?,
        );
        let s = shared.clone();
        threads.push(
            spawn(
                "fanout-cluster-events",
                Box::new(move || s.event_loop(event_conn)),
            )
            .map_err(abort)?,
        );
        if shared.cfg.local_workers > 0 {
            super::worker::linked();
            let s = shared.clone();
            threads.push(
                spawn("fanout-cluster-supervisor", Box::new(move || s.supervise()))
                    .map_err(abort)?,
            );
            // Return with the first workers started (their pids known).
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut st = lock(&shared.state);
            while !st.workers_started && Instant::now() < deadline {
                st = shared
                    .finished
                    .wait_timeout(st, Duration::from_millis(20))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        {
            let mut ids = lock(&shared.thread_ids);
            ids.extend(threads.iter().map(|t| t.thread().id()));
        }
        Ok((shared, threads))
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    // -----------------------------------------------------------------------
    // Keeper: the client's liveness, and the lifetime of its keys.

    /// Writes a fresh signed liveness value (expiring `client_ttl` from now,
    /// in Redis time) and extends the lifetime of the client's event stream
    /// and finished-task bitmap by as much. A crashed client stops doing
    /// this: its keys expire, and workers drop its queued tasks.
    fn refresh(&self, conn: &mut Conn) -> redis::RedisResult<()> {
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

    fn keeper(self: Arc<Self>, mut conn: Conn) {
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
                .arg(self.cfg.keys.finished(&self.client_id)),
            Some(Instant::now() + Duration::from_secs(2)),
            &|| false,
        );
    }

    // -----------------------------------------------------------------------
    // Submitting.

    /// Queues calls of `callee`: as one task record with every item
    /// (`one_task`, a map chunk) or one record per item. A record's argument
    /// blob holds the callee's captures first (once), then its items.
    pub(crate) fn enqueue<Args: Payload, R: Payload>(
        self: &Arc<Self>,
        callee: &ship::Callee,
        batch: Vec<Args>,
        one_task: bool,
    ) -> Result<Vec<Future<R>>> {
        self.enqueue_with(callee, batch, one_task, &crate::CallOptions::default())
    }

    /// [`Shared::enqueue`] with per-call options: the lane (priority and
    /// resources) and the run-time limit.
    pub(crate) fn enqueue_with<Args: Payload, R: Payload>(
        self: &Arc<Self>,
        callee: &ship::Callee,
        batch: Vec<Args>,
        one_task: bool,
        options: &crate::CallOptions,
    ) -> Result<Vec<Future<R>>> {
        if lock(&self.state).closing {
            return Err(Error::Shutdown);
        }
        let needs = super::lanes::canonical(&options.resources)?;
        let lane = super::lanes::lane_of(&self.cfg.keys.queue(), options.priority, &needs);
        let limit_ms = options
            .timeout
            .map(|t| (t.as_millis() as u64).max(1))
            .unwrap_or(0);
        // The arguments' `Serialize` and `Drop` are user code: a panic there
        // is an error from `submit`, never an unwinding `submit`.
        let encoded = crate::panic::catch(move || {
            let mut encoded = Vec::with_capacity(batch.len());
            for args in &batch {
                let mut out = Vec::new();
                ship::encode(args, &mut out)?;
                encoded.push(out);
            }
            drop(batch);
            Ok::<_, Error>(encoded)
        })??;
        let groups: Vec<Vec<Vec<u8>>> = if one_task {
            vec![encoded]
        } else {
            encoded.into_iter().map(|e| vec![e]).collect()
        };
        let mut futures = Vec::new();
        let mut records = Vec::with_capacity(groups.len());
        for items in groups {
            if items.is_empty() {
                continue;
            }
            let size: u64 = items.iter().map(|i| i.len() as u64 + 4).sum();
            let largest = items.iter().map(Vec::len).max().unwrap_or(0) as u64;
            if size > self.bulk_limit || largest > u64::from(u32::MAX) {
                // Redis would refuse the value (and drop the connection, failing
                // every call sent with it): fail only these calls, at once.
                let error = Error::Codec {
                    type_name: std::any::type_name::<Args>().to_string(),
                    message: format!(
                        "the encoded arguments are {size} bytes, more than Redis accepts in \
                         one value (proto-max-bulk-len = {} bytes); pass less, or store \
                         large data elsewhere and pass its name",
                        self.bulk_limit
                    ),
                };
                for _ in 0..items.len() {
                    let (future, promise) = pair_in::<R>(self.owner);
                    promise.set_error(error.clone());
                    futures.push(future);
                }
                continue;
            }
            let promises: Vec<Promise<R>> = (0..items.len())
                .map(|_| {
                    let (future, promise) = pair_in::<R>(self.owner);
                    futures.push(future);
                    promise
                })
                .collect();
            records.push(self.record(callee, items, promises, lane.clone(), limit_ms)?);
        }
        let mut st = lock(&self.state);
        if st.closing {
            // Dropping the promises fails the futures; report Shutdown.
            return Err(Error::Shutdown);
        }
        for (out, inflight) in records {
            st.inflight.insert(out.seq, inflight);
            st.outbox.push(out);
        }
        drop(st);
        self.work.notify_one();
        Ok(futures)
    }

    /// One task record for `items`, completing `promises` (one per item).
    fn record<R: Payload>(
        self: &Arc<Self>,
        callee: &ship::Callee,
        items: Vec<Vec<u8>>,
        promises: Vec<Promise<R>>,
        lane: (String, String),
        limit_ms: u64,
    ) -> Result<(Outgoing, Inflight)> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let task = protocol::task_id(&self.client_id, seq);
        let trampoline = callee.trampoline;
        let mut args = Vec::with_capacity(
            callee.captures().len() + 4 + items.iter().map(|i| i.len() + 4).sum::<usize>(),
        );
        protocol::push_item(&mut args, callee.captures());
        for item in &items {
            protocol::push_item(&mut args, item);
        }
        let n = items.len();
        let args = Arc::new(args);
        let outgoing = self.outgoing(
            seq,
            task,
            trampoline,
            args.clone(),
            n,
            (lane.clone(), limit_ms),
        )?;
        let mut deliveries: Vec<Option<Box<dyn Delivery>>> = Vec::with_capacity(n);
        for (idx, promise) in promises.into_iter().enumerate() {
            let weak = Arc::downgrade(self);
            let which = if n == 1 { -1 } else { idx as i64 };
            // A hook, not a done-callback: a done-callback would make the
            // client fetch a value that can stay in Redis.
            let cell = std::sync::Arc::downgrade(&promise.cell().0);
            promise.cell().on_final(Box::new(move || {
                let cancelled = cell
                    .upgrade()
                    .and_then(|c| c.cell().final_outcome())
                    .is_some_and(|o| matches!(o, Err(Error::Cancelled)));
                if cancelled {
                    request_cancel(&weak, seq, which);
                }
            }));
            deliveries.push(Some(Box::new(promise)));
        }
        Ok((
            outgoing,
            Inflight {
                items: deliveries,
                started: false,
                sent_at: None,
                cancelled: 0,
                trampoline,
                args,
                lane,
                limit_ms,
            },
        ))
    }

    /// A signed task record (a fresh nonce each time).
    fn outgoing(
        &self,
        seq: u64,
        task: String,
        trampoline: u64,
        args: Arc<Vec<u8>>,
        items: usize,
        (lane, limit_ms): ((String, String), u64),
    ) -> Result<Outgoing> {
        let nonce = ship::hex(&protocol::random_bytes::<12>()?);
        let signature = protocol::sign_task(
            self.cfg.secret.as_bytes(),
            &protocol::TaskSeal {
                namespace: &self.cfg.namespace,
                task: &task,
                nonce: &nonce,
                trampoline,
                build_id: &self.build_id,
                items: items as u64,
                args: &args,
            },
        );
        Ok(Outgoing {
            seq,
            task,
            trampoline,
            args,
            signature,
            items,
            nonce,
            lane,
            limit_ms,
        })
    }

    /// Sends tasks again whose records vanished from Redis, each under a new
    /// sequence number (so nothing the server remembers of the old one, a
    /// finished bit or a late event, can get in the way). The client still
    /// delivers exactly one outcome per future; the call may run twice.
    fn resubmit(&self, seqs: &[u64]) -> usize {
        let mut st = lock(&self.state);
        let mut sent = 0;
        for old in seqs {
            let Some(mut inflight) = st.inflight.remove(old) else {
                continue;
            };
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let task = protocol::task_id(&self.client_id, seq);
            let n = inflight.items.len();
            match self.outgoing(
                seq,
                task,
                inflight.trampoline,
                inflight.args.clone(),
                n,
                (inflight.lane.clone(), inflight.limit_ms),
            ) {
                Ok(out) => {
                    inflight.sent_at = None;
                    st.inflight.insert(seq, inflight);
                    st.aliases.insert(*old, seq);
                    st.outbox.push(out);
                    sent += 1;
                }
                Err(e) => {
                    drop(st);
                    self.courier.send_all(failing(vec![inflight], e));
                    st = lock(&self.state);
                }
            }
        }
        drop(st);
        self.work.notify_all();
        sent
    }

    /// Queues one call launched from the waiting room, with its argument
    /// bytes already encoded; refusals complete `promise`.
    pub(crate) fn enqueue_ready<R: Payload>(
        self: &Arc<Self>,
        callee: &ship::Callee,
        args: Vec<u8>,
        promise: Promise<R>,
        options: &crate::CallOptions,
    ) {
        let lane = match super::lanes::canonical(&options.resources) {
            Ok(needs) => super::lanes::lane_of(&self.cfg.keys.queue(), options.priority, &needs),
            Err(e) => return promise.set_error(e),
        };
        let limit_ms = options
            .timeout
            .map(|t| (t.as_millis() as u64).max(1))
            .unwrap_or(0);
        let record = match self.record(callee, vec![args], vec![promise], lane, limit_ms) {
            Ok(r) => r,
            Err(e) => {
                // The promise was dropped with the record: its future is Broken.
                log::error!("could not make a task record: {e}");
                return;
            }
        };
        let mut st = lock(&self.state);
        if st.closing {
            drop(st);
            for d in record.1.items.into_iter().flatten() {
                d.fail(Error::Shutdown);
            }
            return;
        }
        st.inflight.insert(record.0.seq, record.1);
        st.outbox.push(record.0);
        drop(st);
        self.work.notify_one();
    }

    /// The tag of this cluster's futures.
    pub(crate) fn owner(&self) -> u64 {
        self.owner
    }

    /// Deletes the result of `task`, which nobody can ask for any more: by
    /// the event loop, or (once it is gone) at once.
    pub(crate) fn release_result(&self, task: String) {
        lock(&self.held).remove(&task);
        let mut st = lock(&self.state);
        if !st.loop_done {
            st.releases.push(task);
            return;
        }
        drop(st);
        let key = self.cfg.keys.result(&task);
        let mut conn = lock(&self.fetch_conn);
        let deadline = Some(Instant::now() + Duration::from_secs(2));
        if let Err(e) = conn.query_retry(redis::cmd("DEL").arg(&key), deadline, &|| false) {
            log::warn!("could not delete {key} from Redis (it expires within an hour): {e}");
        }
    }

    /// Notes that the result of `task` stays in Redis while a handle lives.
    pub(crate) fn hold_result(&self, task: &str) {
        lock(&self.held).insert(task.to_string());
    }

    /// Reads the value of a one-item result that stayed in Redis.
    pub(crate) fn fetch_value(&self, task: &str) -> Result<Vec<u8>> {
        let key = self.cfg.keys.result(task);
        let deadline = Some(Instant::now() + self.cfg.reconnect_timeout);
        let reply = lock(&self.fetch_conn)
            .query_retry(redis::cmd("GET").arg(&key), deadline, &|| false)
            .map_err(|e| protocol::backend("could not read a result", &self.cfg.url, &e))?;
        let envelope = bytes(&reply).unwrap_or(&[]);
        super::remote::single_value(self.cfg.secret.as_bytes(), task, envelope)
    }

    /// Writes `value` to Redis as the sealed result of a task id of its own
    /// (`put`); returns that task id.
    pub(crate) fn store_value(&self, value: Vec<u8>) -> Result<String> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let task = protocol::task_id(&self.client_id, seq);
        let envelope = Outcome::Ran {
            worker: format!("client {}", self.client_id),
            items: vec![ItemOutcome::Value(value)],
        }
        .seal(self.cfg.secret.as_bytes(), &task);
        let deadline = Some(Instant::now() + self.cfg.reconnect_timeout);
        lock(&self.fetch_conn)
            .query_retry(
                redis::cmd("SET")
                    .arg(self.cfg.keys.result(&task))
                    .arg(envelope)
                    .arg("EX")
                    .arg(protocol::RESULT_TTL.as_secs()),
                deadline,
                &|| false,
            )
            .map_err(|e| protocol::backend("could not store a value", &self.cfg.url, &e))?;
        Ok(task)
    }

    // -----------------------------------------------------------------------
    // Dispatcher: sends submissions and cancellations.

    fn dispatcher(self: Arc<Self>, mut conn: Conn) {
        loop {
            let (outbox, cancels, wake) = {
                let mut st = lock(&self.state);
                loop {
                    if st.loop_done {
                        return;
                    }
                    let wake = st.closing && !st.woken;
                    if !st.outbox.is_empty() || !st.cancels.is_empty() || wake {
                        break;
                    }
                    st = self
                        .work
                        .wait_timeout(st, Duration::from_millis(500))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                let wake = st.closing && !st.woken;
                st.woken |= wake;
                let outbox = std::mem::take(&mut st.outbox);
                let cancels = std::mem::take(&mut st.cancels);
                (outbox, cancels, wake)
            };
            let (outbox, remote_cancels) = self.apply_cancels(outbox, cancels);
            if !outbox.is_empty() {
                self.send(&mut conn, outbox);
            }
            if !remote_cancels.is_empty() {
                self.send_cancels(&mut conn, remote_cancels);
            }
            if wake {
                // Wake the event loop so it notices the shutdown at once.
                let events = self.cfg.keys.events(&self.client_id);
                let _ = conn.query(
                    redis::cmd("XADD")
                        .arg(&events)
                        .arg("NOMKSTREAM")
                        .arg("*")
                        .arg("k")
                        .arg("w"),
                );
            }
        }
    }

    /// Counts cancellations; drops queued tasks whose items are all cancelled.
    /// Returns what is left to send and the cancellations to run in Redis.
    fn apply_cancels(
        &self,
        outbox: Vec<Outgoing>,
        cancels: Vec<(u64, i64)>,
    ) -> (Vec<Outgoing>, Vec<(u64, i64)>) {
        if cancels.is_empty() {
            return (outbox, cancels);
        }
        let mut st = lock(&self.state);
        // Cancels of tasks sent again go to their new sequence number.
        let cancels: Vec<(u64, i64)> = cancels
            .into_iter()
            .map(|(mut seq, idx)| {
                while let Some(&next) = st.aliases.get(&seq) {
                    seq = next;
                }
                (seq, idx)
            })
            .collect();
        let mut remote = Vec::new();
        for &(seq, idx) in &cancels {
            if let Some(t) = st.inflight.get_mut(&seq) {
                t.cancelled += 1;
                if t.sent_at.is_some() {
                    remote.push((seq, idx));
                }
            }
        }
        let mut keep = Vec::with_capacity(outbox.len());
        for out in outbox {
            let all_cancelled = st
                .inflight
                .get(&out.seq)
                .is_none_or(|t| t.cancelled >= out.items);
            if all_cancelled {
                st.inflight.remove(&out.seq);
            } else {
                // Partly cancelled chunk: send it, then cancel its items remotely.
                remote.extend(cancels.iter().filter(|c| c.0 == out.seq).copied());
                keep.push(out);
            }
        }
        let idle = st.inflight.is_empty();
        drop(st);
        if idle {
            self.work.notify_all();
        }
        (keep, remote)
    }

    fn give_up(&self) -> impl Fn() -> bool + '_ {
        || lock(&self.state).loop_done
    }

    fn send(&self, conn: &mut Conn, outbox: Vec<Outgoing>) {
        let deadline = Instant::now() + self.cfg.reconnect_timeout;
        let registry = super::lanes::registry(&self.cfg.keys.queue());
        let max = self.cfg.max_deliveries.to_string();
        // One script call per lane (in order of first appearance; each lane
        // keeps its submission order), in batches bounded by count and bytes.
        let mut by_lane: Vec<((String, String), Vec<Outgoing>)> = Vec::new();
        for o in outbox {
            match by_lane.iter_mut().find(|(l, _)| *l == o.lane) {
                Some((_, v)) => v.push(o),
                None => by_lane.push((o.lane.clone(), vec![o])),
            }
        }
        for ((queue, desc), outbox) in by_lane {
            for batch in byte_bounded(&outbox) {
                let mut keys = Vec::with_capacity(batch.len() + 4);
                keys.push(queue.clone());
                keys.push(self.cfg.keys.live(&self.client_id));
                keys.push(self.cfg.keys.events(&self.client_id));
                keys.push(registry.clone());
                keys.extend(batch.iter().map(|o| self.cfg.keys.task(&o.task)));
                let mut cmd = self.scripts.call(ScriptName::Submit, &keys);
                cmd.arg(&max)
                    .arg(lock(&self.live).as_str())
                    .arg(self.cfg.client_ttl.as_millis().max(1) as u64)
                    .arg(&desc)
                    .arg(protocol::GROUP);
                for o in batch {
                    cmd.arg(&o.task)
                        .arg(o.trampoline)
                        .arg(&self.build_id)
                        .arg(&o.args)
                        .arg(&o.signature[..])
                        .arg(o.items)
                        .arg(&o.nonce)
                        .arg(o.limit_ms);
                }
                let outcome = conn.query_retry(&cmd, Some(deadline), &self.give_up());
                let mut st = lock(&self.state);
                match outcome {
                    Ok(_) => {
                        let now = Instant::now();
                        for o in batch {
                            if let Some(t) = st.inflight.get_mut(&o.seq) {
                                t.sent_at = Some(now);
                            }
                        }
                    }
                    Err(e) => {
                        let error =
                            protocol::backend("could not submit tasks to Redis", conn.url(), &e);
                        log::error!("{error}");
                        let failed: Vec<Inflight> = batch
                            .iter()
                            .filter_map(|o| st.inflight.remove(&o.seq))
                            .collect();
                        drop(st);
                        self.courier.send_all(failing(failed, error));
                        self.work.notify_all();
                    }
                }
            }
        }
    }

    fn send_cancels(&self, conn: &mut Conn, cancels: Vec<(u64, i64)>) {
        let deadline = Instant::now() + self.cfg.reconnect_timeout;
        for batch in cancels.chunks(protocol::SUBMIT_BATCH) {
            let keys: Vec<String> = batch
                .iter()
                .map(|(seq, _)| {
                    self.cfg
                        .keys
                        .task(&protocol::task_id(&self.client_id, *seq))
                })
                .collect();
            let mut cmd = self.scripts.call(ScriptName::Cancel, &keys);
            cmd.arg(protocol::DEAD_RECORD_TTL.as_secs());
            for (_, idx) in batch {
                cmd.arg(*idx);
            }
            match conn.query_retry(&cmd, Some(deadline), &self.give_up()) {
                Ok(v) => {
                    let answers = array(&v).unwrap_or(&[]);
                    let mut st = lock(&self.state);
                    for ((seq, _), answer) in batch.iter().zip(answers) {
                        // 2: the whole task is cancelled and no worker will report on it.
                        if protocol::int(answer) == Some(2) {
                            st.inflight.remove(seq);
                        }
                    }
                    let idle = st.inflight.is_empty();
                    drop(st);
                    if idle {
                        self.work.notify_all();
                    }
                }
                Err(e) => {
                    // The futures are cancelled locally already; a worker may
                    // still run the task, and its result is then discarded.
                    log::warn!(
                        "{}",
                        protocol::backend("could not cancel tasks in Redis", conn.url(), &e)
                    );
                }
            }
        }
    }

    // -----------------------------------------------------------------------
    // Event loop: completes futures from the client's event stream.

    fn event_loop(self: Arc<Self>, mut conn: Conn) {
        let events = self.cfg.keys.events(&self.client_id);
        let mut last = String::from("0-0");
        let mut outage: Option<Instant> = None;
        let mut backoff = protocol::Backoff::new();
        let mut next_probe = Instant::now() + PROBE_EVERY;
        let mut fetch_failing: Option<Instant> = None;
        loop {
            if self.should_stop() {
                break;
            }
            let read = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1024)
                .arg("BLOCK")
                .arg(EVENT_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&events)
                .arg(&last)
                .clone();
            let reply = match conn.query(&read) {
                Ok(v) => v,
                Err(e) => {
                    self.outage(&mut conn, &mut outage, &mut backoff, &e);
                    continue;
                }
            };
            if outage.take().is_some() {
                // Back after an outage: make sure our stream exists again.
                self.recreate_events(&mut conn, &events);
            }
            backoff = protocol::Backoff::new();
            let entries = read_reply(&reply);
            if !entries.is_empty() {
                let mut ids = Vec::with_capacity(entries.len());
                let mut started = Vec::new();
                let mut done = Vec::new();
                for e in &entries {
                    ids.push(e.id.to_string());
                    let task = e.field("t").and_then(|t| std::str::from_utf8(t).ok());
                    let seq = task.and_then(|t| self.own_seq(t));
                    // The result's size, so fetches can be bounded by bytes.
                    let size = e
                        .field("z")
                        .and_then(|z| std::str::from_utf8(z).ok()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    match (e.field("k"), seq, task) {
                        (Some(b"s"), Some(seq), _) => started.push(seq),
                        (Some(b"d"), Some(seq), Some(task)) => {
                            let lazy = e.field("l") == Some(b"1");
                            done.push((seq, task.to_string(), size, lazy))
                        }
                        (Some(b"d"), None, Some(task)) => {
                            // Not ours (a forged record naming us): take and drop it.
                            done.push((0, task.to_string(), size, false))
                        }
                        _ => {}
                    }
                }
                if let Some(e) = entries.last() {
                    last = e.id.to_string();
                }
                self.mark_started(&started);
                if let Err(e) = self.take_and_deliver(&mut conn, &events, &ids, &done) {
                    // Reading events may work while fetching results keeps
                    // failing (permissions, a reply too large): that has its
                    // own clock, which a successful XREAD does not reset.
                    let since = *fetch_failing.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.cfg.reconnect_timeout {
                        self.fail_unfetched(&done, conn.url(), &e);
                        fetch_failing = None;
                    }
                    self.outage(&mut conn, &mut outage, &mut backoff, &e);
                    // Read these events again once Redis is back.
                    last = ids
                        .first()
                        .map(|id| before(id))
                        .unwrap_or_else(|| last.clone());
                    continue;
                }
                fetch_failing = None;
            }
            self.delete_released(&mut conn);
            if Instant::now() >= next_probe {
                next_probe = Instant::now() + PROBE_EVERY;
                self.probe(&mut conn);
            }
        }
        // Shut down: let the completions already read run (their callbacks
        // may still submit, and get Shutdown), then the event stream goes.
        self.courier.close(COURIER_DRAIN);
        let mut st = lock(&self.state);
        let left = std::mem::take(&mut st.releases);
        st.loop_done = true;
        drop(st);
        for task in left {
            self.release_result(task);
        }
        // Shut down: the event stream goes with us.
        let _ = conn.query_retry(
            redis::cmd("DEL").arg(&events),
            Some(Instant::now() + Duration::from_secs(2)),
            &|| false,
        );
        lock(&self.state).loop_done = true;
        self.work.notify_all();
        self.finished.notify_all();
    }

    /// Fails the futures of `done` tasks whose results could not be read
    /// for `reconnect_timeout`; their events are then acknowledged without
    /// fetching (nothing waits for them any more).
    fn fail_unfetched(&self, done: &[(u64, String, u64, bool)], url: &str, e: &redis::RedisError) {
        let failed: Vec<Inflight> = {
            let mut st = lock(&self.state);
            done.iter()
                .filter_map(|(seq, ..)| st.inflight.remove(seq))
                .collect()
        };
        if failed.is_empty() {
            return;
        }
        let error = Error::Backend {
            message: format!(
                "could not read {} result(s) from Redis at {} for {:?}: {e}",
                failed.len(),
                protocol::redact(url),
                self.cfg.reconnect_timeout
            ),
        };
        log::error!("{error}");
        self.courier.send_all(failing(failed, error));
        self.work.notify_all();
    }

    fn should_stop(&self) -> bool {
        let st = lock(&self.state);
        st.closing && st.inflight.is_empty() && st.outbox.is_empty()
    }

    /// Handles a failed Redis call in the event loop: back off, and once the
    /// outage has lasted `reconnect_timeout`, fail every sent task.
    fn outage(
        &self,
        conn: &mut Conn,
        outage: &mut Option<Instant>,
        backoff: &mut protocol::Backoff,
        e: &redis::RedisError,
    ) {
        let since = *outage.get_or_insert_with(Instant::now);
        log::debug!("cluster event loop: {e}; retrying");
        if since.elapsed() >= self.cfg.reconnect_timeout {
            let error = Error::Backend {
                message: format!(
                    "lost contact with Redis at {} for {:?}: {e}",
                    protocol::redact(conn.url()),
                    self.cfg.reconnect_timeout
                ),
            };
            let failed: Vec<Inflight> = {
                let mut st = lock(&self.state);
                let sent: Vec<u64> = st
                    .inflight
                    .iter()
                    .filter(|(_, t)| t.sent_at.is_some())
                    .map(|(s, _)| *s)
                    .collect();
                sent.iter().filter_map(|s| st.inflight.remove(s)).collect()
            };
            if !failed.is_empty() {
                log::error!("{error}");
                self.courier.send_all(failing(failed, error));
                self.work.notify_all();
            }
            *outage = Some(Instant::now());
        }
        backoff.sleep(None);
    }

    fn recreate_events(&self, conn: &mut Conn, events: &str) {
        if let Ok(v) = conn.query(redis::cmd("EXISTS").arg(events)) {
            if protocol::int(&v) == Some(0) {
                log::warn!("the cluster's event stream vanished from Redis; recreating it");
                let _ = conn.query(
                    redis::cmd("XADD")
                        .arg(events)
                        .arg("MAXLEN")
                        .arg(0)
                        .arg("*")
                        .arg("k")
                        .arg("i"),
                );
            }
        }
    }

    /// The sequence number of one of our own task ids.
    fn own_seq(&self, task: &str) -> Option<u64> {
        let (client, seq) = protocol::parse_task_id(task)?;
        (client == self.client_id).then_some(seq)
    }

    fn mark_started(&self, started: &[u64]) {
        if started.is_empty() {
            return;
        }
        let mut st = lock(&self.state);
        for seq in started {
            if let Some(t) = st.inflight.get_mut(seq) {
                t.started = true;
                for d in t.items.iter().flatten() {
                    d.set_running();
                }
            }
        }
    }

    /// Deletes the results nobody can ask for any more.
    fn delete_released(&self, conn: &mut Conn) {
        let released = std::mem::take(&mut lock(&self.state).releases);
        if released.is_empty() {
            return;
        }
        let mut del = redis::cmd("DEL");
        for task in &released {
            del.arg(self.cfg.keys.result(task));
        }
        let deadline = Some(Instant::now() + Duration::from_secs(2));
        if let Err(e) = conn.query_retry(&del, deadline, &|| false) {
            log::warn!("could not delete released results (they expire within an hour): {e}");
        }
    }

    /// Completes the futures of `done` tasks whose result stays in Redis
    /// (one successful item, large); returns the others.
    fn deliver_lazy<'a>(
        self: &Arc<Self>,
        done: &'a [(u64, String, u64, bool)],
    ) -> Vec<(u64, &'a str, u64)> {
        let mut rest = Vec::with_capacity(done.len());
        let mut remote = Vec::new();
        {
            let mut st = lock(&self.state);
            for (seq, task, size, lazy) in done {
                let single = *lazy && st.inflight.get(seq).is_some_and(|t| t.items.len() == 1);
                if !single {
                    rest.push((*seq, task.as_str(), *size));
                } else if let Some(inflight) = st.inflight.remove(seq) {
                    remote.push((inflight, task));
                }
            }
        }
        let jobs: Vec<Job> = remote
            .into_iter()
            .flat_map(|(inflight, task)| {
                inflight.items.into_iter().flatten().map(|d| {
                    let remote = Remote::new(task.clone(), self.clone());
                    Box::new(move || d.deliver_remote(remote)) as Job
                })
            })
            .collect();
        self.courier.send_all(jobs);
        rest
    }

    /// Reads the results of `done` tasks, completes their futures, then
    /// deletes the results and the events `ids`. An error before delivery
    /// means: read the same events again (nothing was deleted).
    fn take_and_deliver(
        self: &Arc<Self>,
        conn: &mut Conn,
        events: &str,
        ids: &[String],
        done: &[(u64, String, u64, bool)],
    ) -> redis::RedisResult<()> {
        // Large single values stay in Redis (their futures fetch them when
        // asked); the rest are read here and their results deleted below.
        let done: Vec<(u64, &str, u64)> = self.deliver_lazy(done);
        let results: Vec<String> = done
            .iter()
            .map(|(_, t, _)| self.cfg.keys.result(t))
            .collect();
        // Fetch only what a future still waits for (a task failed meanwhile,
        // e.g. after a long outage, is not fetched again, so a fetch that
        // keeps failing cannot keep the loop spinning on the same events),
        // in MGETs of at most FETCH_BYTES each.
        let wanted: Vec<usize> = {
            let st = lock(&self.state);
            (0..done.len())
                .filter(|&i| done[i].0 != 0 && st.inflight.contains_key(&done[i].0))
                .collect()
        };
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut bytes_in_group = 0u64;
        for i in wanted {
            let size = done[i].2;
            match groups.last_mut() {
                Some(g) if bytes_in_group + size <= FETCH_BYTES => {
                    g.push(i);
                    bytes_in_group += size;
                }
                _ => {
                    groups.push(vec![i]);
                    bytes_in_group = size;
                }
            }
        }
        for group in groups {
            let mut mget = redis::cmd("MGET");
            for &i in &group {
                mget.arg(&results[i]);
            }
            let reply = conn.query(&mget)?;
            let values = array(&reply).unwrap_or(&[]);
            let mut outcomes = Vec::with_capacity(group.len());
            let idle = {
                let mut st = lock(&self.state);
                for (j, &i) in group.iter().enumerate() {
                    let (seq, task, _) = &done[i];
                    let task = *task;
                    let Some(inflight) = st.inflight.remove(seq) else {
                        continue;
                    };
                    let envelope = values.get(j).and_then(bytes).unwrap_or(&[]);
                    outcomes.push((
                        inflight,
                        Outcome::open(self.cfg.secret.as_bytes(), task, envelope),
                    ));
                }
                st.inflight.is_empty()
            };
            self.courier.send_all(
                outcomes
                    .into_iter()
                    .flat_map(|(inflight, outcome)| completions(inflight, outcome)),
            );
            if idle {
                self.work.notify_all();
            }
        }
        // Delivered: the results and events can go.
        let mut keys = Vec::with_capacity(results.len() + 1);
        keys.push(events.to_string());
        keys.extend(results);
        let mut ack = self.scripts.call(ScriptName::Ack, &keys);
        for id in ids {
            ack.arg(id);
        }
        let deadline = Instant::now() + self.cfg.reconnect_timeout;
        if let Err(e) = conn.query_retry(&ack, Some(deadline), &|| false) {
            log::warn!(
                "could not delete delivered results from Redis at {} (they expire within \
                 an hour): {e}",
                protocol::redact(conn.url())
            );
        }
        Ok(())
    }

    /// Sends again tasks that were sent a while ago and whose record and
    /// result are both gone from Redis (a server restarted without
    /// persistence, a flush): while the client lives, no call is lost.
    fn probe(&self, conn: &mut Conn) {
        let old: Vec<u64> = {
            let st = lock(&self.state);
            st.inflight
                .iter()
                .filter(|(_, t)| t.sent_at.is_some_and(|s| s.elapsed() >= PROBE_EVERY))
                .map(|(s, _)| *s)
                .collect()
        };
        for batch in old.chunks(protocol::SUBMIT_BATCH) {
            let mut keys = Vec::with_capacity(batch.len() * 2);
            for seq in batch {
                let task = protocol::task_id(&self.client_id, *seq);
                keys.push(self.cfg.keys.task(&task));
                keys.push(self.cfg.keys.result(&task));
            }
            let Ok(reply) = conn.query(&self.scripts.call(ScriptName::Probe, &keys)) else {
                return;
            };
            let answers = array(&reply).unwrap_or(&[]);
            let gone: Vec<u64> = batch
                .iter()
                .zip(answers)
                .filter(|(_, a)| protocol::int(a) == Some(0))
                .map(|(seq, _)| *seq)
                .collect();
            if !gone.is_empty() {
                let sent = self.resubmit(&gone);
                log::warn!(
                    "{sent} task(s) vanished from Redis at {} without a result (was the server \
                     restarted without persistence, or the namespace deleted?); sent them again",
                    protocol::redact(conn.url())
                );
            }
        }
    }

    // -----------------------------------------------------------------------
    // Shutdown.

    /// Marks the client closing; with `cancel_futures`, cancels every task
    /// that has not started.
    pub(crate) fn close(&self, cancel_futures: bool) {
        let cancelled: Vec<Box<dyn Delivery>> = {
            let mut st = lock(&self.state);
            st.closing = true;
            if cancel_futures {
                st.inflight
                    .values_mut()
                    .filter(|t| !t.started)
                    .flat_map(|t| t.items.iter_mut().filter_map(Option::take))
                    .collect()
            } else {
                Vec::new()
            }
        };
        self.work.notify_all();
        // Each cancellation's done-callback queues its remote cancel.
        for d in cancelled {
            d.fail(Error::Cancelled);
        }
    }

    /// True when called from one of the client's own threads (a done-callback).
    pub(crate) fn on_own_thread(&self) -> bool {
        let me = std::thread::current().id();
        lock(&self.thread_ids).contains(&me) || self.courier.is_own_thread()
    }

    // -----------------------------------------------------------------------
    // Local workers.

    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        lock(&self.workers)
            .iter()
            .flatten()
            .map(|w| w.child.id())
            .collect()
    }

    fn spawn_worker(&self) -> std::io::Result<LocalWorker> {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.env(super::worker::URL_ENV, &self.cfg.url)
            .env(super::worker::NAMESPACE_ENV, &self.cfg.namespace)
            .env(super::worker::SECRET_ENV, &self.cfg.secret)
            .env(super::worker::CONCURRENCY_ENV, "1")
            .env(
                super::worker::LEASE_ENV,
                self.cfg.lease.as_millis().to_string(),
            )
            .env(super::worker::PARENT_ENV, std::process::id().to_string())
            .env(
                super::worker::RESOURCES_ENV,
                &self.cfg.local_worker_resources,
            )
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                // Drain and exit if this (supervisor) thread's process dies.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(LocalWorker {
            child,
            started: Instant::now(),
        })
    }

    fn supervise(self: Arc<Self>) {
        let n = self.cfg.local_workers;
        let host = protocol::hostname();
        let mut control = Conn::new(
            &self.cfg.url,
            &self.cfg.keys,
            self.scripts.clone(),
            Duration::from_secs(2),
        )
        .ok();
        let mut died_keys: Vec<String> = Vec::new();
        let mut respawn_at: Vec<Option<Instant>> = vec![Some(Instant::now()); n];
        lock(&self.workers).resize_with(n, || None);
        loop {
            let stopping = lock(&self.state).loop_done;
            if stopping {
                break;
            }
            let now = Instant::now();
            for (slot, due) in respawn_at.iter_mut().enumerate() {
                // Reap a dead worker.
                let exited = {
                    let mut ws = lock(&self.workers);
                    match ws[slot].as_mut().map(|w| w.child.try_wait()) {
                        Some(Ok(Some(status))) => ws[slot].take().map(|w| (w, status)),
                        _ => None,
                    }
                };
                if let Some((w, status)) = exited {
                    let how = describe(status);
                    let pid = w.child.id();
                    log::warn!("cluster worker {host}:{pid} {how}; starting a replacement");
                    if let Some(c) = control.as_mut() {
                        let key = self.cfg.keys.died(&format!("{host}:{pid}"));
                        let _ = c.query(redis::cmd("SET").arg(&key).arg(&how).arg("EX").arg(3600));
                        died_keys.push(key);
                    }
                    // Crash loops back off.
                    let quick = w.started.elapsed() < Duration::from_secs(1);
                    *due = Some(now + Duration::from_millis(if quick { 500 } else { 0 }));
                }
                if due.is_some_and(|d| now >= d) {
                    match self.spawn_worker() {
                        Ok(w) => {
                            lock(&self.workers)[slot] = Some(w);
                            *due = None;
                        }
                        Err(e) => {
                            log::error!("could not start a local cluster worker: {e}");
                            *due = Some(now + Duration::from_secs(1));
                        }
                    }
                }
            }
            let mut st = lock(&self.state);
            if !st.workers_started {
                st.workers_started = true;
                self.finished.notify_all();
            }
            if st.loop_done {
                break;
            }
            let _ = self
                .finished
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner());
        }
        // Stop: SIGTERM drains (running tasks finish, nothing new is read).
        let mut workers: Vec<LocalWorker> = lock(&self.workers)
            .iter_mut()
            .flat_map(Option::take)
            .collect();
        for w in &workers {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(w.child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10) + self.cfg.lease;
        for w in &mut workers {
            loop {
                match w.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        log::warn!(
                            "cluster worker {} did not drain in time; killing it",
                            w.child.id()
                        );
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        if let Some(c) = control.as_mut() {
            if !died_keys.is_empty() {
                let mut del = redis::cmd("DEL");
                for k in &died_keys {
                    del.arg(k);
                }
                let _ = c.query(&del);
            }
        }
        self.finished.notify_all();
    }
}

/// A stream id just before `id`, to read `id` again.
/// Splits records into submit batches of at most `SUBMIT_BATCH` records and
/// about `SUBMIT_BYTES` of arguments (a single larger record goes alone).
fn byte_bounded(outbox: &[Outgoing]) -> Vec<&[Outgoing]> {
    let mut batches = Vec::new();
    let (mut from, mut bytes) = (0, 0usize);
    for (i, o) in outbox.iter().enumerate() {
        if i > from && (i - from >= protocol::SUBMIT_BATCH || bytes + o.args.len() > SUBMIT_BYTES) {
            batches.push(&outbox[from..i]);
            (from, bytes) = (i, 0);
        }
        bytes += o.args.len();
    }
    if from < outbox.len() {
        batches.push(&outbox[from..]);
    }
    batches
}

fn before(id: &str) -> String {
    match id.split_once('-') {
        Some((ms, seq)) => match seq.parse::<u64>() {
            Ok(0) => match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => format!("{}-{}", ms - 1, u64::MAX),
                _ => "0-0".into(),
            },
            Ok(s) => format!("{ms}-{}", s - 1),
            Err(_) => "0-0".into(),
        },
        None => "0-0".into(),
    }
}

fn request_cancel(shared: &Weak<Shared>, seq: u64, idx: i64) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    lock(&shared.state).cancels.push((seq, idx));
    shared.work.notify_one();
}

/// The courier jobs that fail every item of `tasks` with `error`, one job
/// per item (a callback of one item may wait for another).
fn failing(tasks: Vec<Inflight>, error: Error) -> Vec<Job> {
    tasks
        .into_iter()
        .flat_map(|t| t.items.into_iter().flatten())
        .map(|d| {
            let error = error.clone();
            Box::new(move || d.fail(error)) as Job
        })
        .collect()
}

/// The courier jobs that complete a task's items with its outcome.
fn completions(inflight: Inflight, outcome: Result<Outcome>) -> Vec<Job> {
    let n = inflight.items.len();
    let error = match outcome {
        Ok(Outcome::Ran { worker, items }) if items.len() == n => {
            let worker: Arc<str> = worker.into();
            return inflight
                .items
                .into_iter()
                .zip(items)
                .filter_map(|(d, item)| {
                    let d = d?;
                    let worker = worker.clone();
                    Some(Box::new(move || match item {
                        ItemOutcome::Value(v) => d.deliver(Ok(&v)),
                        ItemOutcome::Failed(e) => d.fail(e.into_error(&worker)),
                        ItemOutcome::Skipped => d.fail(Error::Cancelled),
                    }) as Job)
                })
                .collect();
        }
        Ok(Outcome::Ran { worker, items }) => Error::Backend {
            message: format!(
                "{worker} reported {} outcomes for a task of {n} items",
                items.len()
            ),
        },
        Ok(Outcome::Refused { worker, message }) => Error::Backend {
            message: format!("{worker} refused the task: {message}"),
        },
        Ok(Outcome::Lost { worker, status }) => Error::WorkerLost { worker, status },
        Ok(Outcome::Rejected { worker, reason }) => Error::Backend {
            message: format!("{worker} rejected the task: {reason}"),
        },
        Err(e) => e,
    };
    failing(vec![inflight], error)
}

fn check_version(info: &str, url: &str) -> Result<()> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (6, 2) {
        return Err(Error::Backend {
            message: format!(
                "the server at {url} reports Redis version {version:?}; the cluster needs \
                 Redis 6.2 or newer (or Valkey) for XAUTOCLAIM"
            ),
        });
    }
    Ok(())
}

/// Human-readable exit status.
pub(crate) fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exited with code {code}")
    } else if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGKILL => "SIGKILL",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGABRT => "SIGABRT",
            libc::SIGTERM => "SIGTERM",
            libc::SIGBUS => "SIGBUS",
            libc::SIGFPE => "SIGFPE",
            libc::SIGILL => "SIGILL",
            libc::SIGINT => "SIGINT",
            _ => "signal",
        };
        format!("was killed by signal {sig} ({name})")
    } else {
        "ended".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_steps_back_one_id() {
        assert_eq!(before("5-3"), "5-2");
        assert_eq!(before("5-0"), format!("4-{}", u64::MAX));
        assert_eq!(before("0-0"), "0-0");
        assert_eq!(before("junk"), "0-0");
    }

    #[test]
    fn old_servers_are_refused() {
        assert!(check_version("redis_version:6.0.9\r\n", "u").is_err());
        assert!(check_version("redis_version:6.2.0\r\n", "u").is_ok());
        assert!(check_version("redis_version:7.0.15\r\n", "u").is_ok());
        assert!(check_version("", "u").is_err());
    }
}

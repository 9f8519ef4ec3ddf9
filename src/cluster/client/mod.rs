//! The client side of a [`Cluster`](super::Cluster): submission, the event
//! loop that completes futures, and the supervisor of local workers.
//!
//! These threads, each with its own Redis connection (the push thread has
//! none: it listens on a TCP port of its own):
//!
//! * **dispatcher** — sends queued submissions (many tasks per `submit`
//!   script call) and cancellations; retries transient failures with backoff
//!   for [`Config::reconnect_timeout`], then fails the affected futures with
//!   [`Error::Backend`]. A caller that finds nothing queued, nothing being
//!   sent and no task in flight sends its own (small) submission on its
//!   own thread instead (one thread hop less on an idle client), once, on
//!   the same connection; a failed attempt goes back to the dispatcher.
//! * **event loop** — blocks on `XREAD` of the client's event stream, marks
//!   futures running on `started` events, and on `done` events takes the
//!   results of the whole batch (from the events when small, else with one
//!   `MGET`), verifies their signatures and completes the promises — here
//!   when nobody listens to a future, on the courier when it has
//!   done-callbacks — then deletes results and events with one `ack` script
//!   call sent with the next `XREAD` (at once when results wait to be
//!   deleted; a trim of events alone waits for 64 events or half a second,
//!   see `acks.rs`). It also probes, now and then, for tasks that vanished from
//!   Redis, and sends them again, so no future can wait forever.
//! * **push** (unless [`push_results(false)`](super::ClusterBuilder::push_results))
//!   — takes the results workers push straight to this client (see
//!   `pushed.rs` and `cluster/push.rs`) and completes their futures, ahead
//!   of the events that the event loop reads, now and then, to catch any
//!   push that was lost.
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
    /// Listen for results pushed by workers (see `pushed`).
    pub(crate) push_results: bool,
}

/// How long the event loop blocks in one `XREAD`.
const EVENT_BLOCK: Duration = Duration::from_millis(1000);

/// How often, while tasks are in flight, the event loop reads the events
/// of pushed results (see `pushed`) for a push that was lost.
const CATCH_UP_EVERY: Duration = Duration::from_millis(100);

/// How often the event loop reads (and trims) the events of pushed results
/// when no push can be overdue.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Events of pushed results read at a time, and the most reads in a row.
const CATCH_UP_COUNT: usize = 4096;
const CATCH_UP_READS: usize = 16;

/// Most result bytes fetched in one `MGET` (a larger result comes alone).
const FETCH_BYTES: u64 = 64 << 20;

/// Most argument bytes sent in one `submit` script call (a larger task goes alone).
const SUBMIT_BYTES: usize = 64 << 20;

/// A caller sends its own submission (see `Shared::send_or_queue`) only
/// when no task is in flight, and only a small one: at most this many task
/// records, of at most
/// `DIRECT_BYTES` of arguments in all (a larger one is the dispatcher's, so
/// a caller never waits long for its own send).
const DIRECT_RECORDS: usize = 8;
const DIRECT_BYTES: usize = 64 << 10;

/// How long shutdown waits for done-callbacks that are still running.
const COURIER_DRAIN: Duration = Duration::from_secs(30);

/// How often (and after how long) the event loop checks that sent tasks still exist.
const PROBE_EVERY: Duration = Duration::from_secs(5);

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
    /// Its stream entry when it went by a transaction (see `fresh.rs`),
    /// which cannot record it in Redis; else empty (`submit` recorded it,
    /// or the reply that named it was lost).
    entry: String,
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
    /// A send of it failed (its reply may have been lost, the record may
    /// exist): later sends ask the submit script to check.
    tried: bool,
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
    /// Someone (the dispatcher, or a caller sending its own submission)
    /// holds the submit connection: the rest queue in `outbox`.
    sending: bool,
    /// A caller's own send failed: callers queue until the dispatcher
    /// has sent successfully again (it retries; a caller never does).
    direct_off: bool,
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
    /// The submit connection: the dispatcher's, or a caller's that sends
    /// its own submission (see `State::sending`, which whoever holds it set).
    submit_conn: Mutex<Conn>,
    /// Results that stay in Redis while a handle to them lives (see
    /// `remote`); the keeper extends their lifetime with the client's.
    held: Mutex<std::collections::HashSet<String>>,
    /// Completes futures (and runs their done-callbacks) off the event loop.
    courier: Courier,
    /// The latest liveness value the keeper wrote.
    live: Mutex<String>,
    /// The server's limit on one value (`proto-max-bulk-len`).
    bulk_limit: u64,
    /// Where task nonces come from.
    nonces: Mutex<submit::Nonces>,
    /// The signed push address the keeper writes with the liveness (see
    /// `pushed`); `None` when the client does not listen.
    push_value: Option<String>,
    /// The push connections and who reads them (with `push_value`).
    pushed: Option<pushed::Pushed>,
}

mod acks;
mod delivery;
mod dispatch;
mod events;
mod fresh;
mod keeper;
mod local;
mod pushed;
mod submit;
mod values;

use delivery::{completions, failing, Delivery};

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
        conn.query(&protocol::empty_stream(&events))
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
        let bulk_limit = protocol::bulk_limit(&mut conn);
        let listener = if cfg.push_results {
            pushed::listen(&cfg.url)
        } else {
            None
        };
        let listener = listener.and_then(|l| Some((pushed::Pushed::new(&l.token)?, l)));
        let push_value = listener.as_ref().map(|(_, l)| {
            protocol::push_value(
                cfg.secret.as_bytes(),
                &cfg.namespace,
                &client_id,
                &l.addr.to_string(),
                &l.token,
            )
        });
        if listener.is_some() {
            // Where workers put the events of results they pushed (see `pushed`).
            conn.query(&protocol::empty_stream(&cfg.keys.pushed_events(&client_id)))
                .map_err(|e| {
                    protocol::backend("could not create the event stream", &cfg.url, &e)
                })?;
        }
        let (pushed, push_socket) = match listener {
            Some((p, l)) => (Some(p), Some(l.socket)),
            None => (None, None),
        };
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
            submit_conn: Mutex::new(conn),
            held: Mutex::new(std::collections::HashSet::new()),
            courier: Courier::default(),
            live: Mutex::new(String::new()),
            bulk_limit,
            nonces: Mutex::new(submit::Nonces::default()),
            push_value,
            pushed,
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
            spawn("fanout-cluster-dispatch", Box::new(move || s.dispatcher())).map_err(abort)?,
        );
        let s = shared.clone();
        threads.push(
            spawn(
                "fanout-cluster-events",
                Box::new(move || s.event_loop(event_conn)),
            )
            .map_err(abort)?,
        );
        if let Some(socket) = push_socket {
            let s = shared.clone();
            threads.push(
                spawn("fanout-cluster-push", Box::new(move || s.push_loop(socket)))
                    .map_err(abort)?,
            );
            // Waiting threads read pushed results themselves (see `pushed`).
            let helper: Arc<dyn crate::future::helpers::Helper> = shared.clone();
            crate::future::helpers::register(shared.owner, Arc::downgrade(&helper));
        }
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

    /// The tag of this cluster's futures.
    pub(crate) fn owner(&self) -> u64 {
        self.owner
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
}

fn check_version(info: &str, url: &str) -> Result<()> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("");
    if protocol::server_version(info) < (6, 2) {
        return Err(Error::Backend {
            message: format!(
                "the server at {url} reports Redis version {version:?}; the cluster needs \
                 Redis 6.2 or newer (or Valkey) for XAUTOCLAIM"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_servers_are_refused() {
        assert!(check_version("redis_version:6.0.9\r\n", "u").is_err());
        assert!(check_version("redis_version:6.2.0\r\n", "u").is_ok());
        assert!(check_version("redis_version:7.0.15\r\n", "u").is_ok());
        assert!(check_version("", "u").is_err());
    }
}

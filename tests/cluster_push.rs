//! Results pushed from a worker straight to its client (see
//! `src/cluster/push.rs` and `src/cluster/client/pushed.rs`): they arrive,
//! a push that is lost is caught up from Redis, junk on the client's port
//! changes nothing, and nothing is left in Redis after a shutdown.

mod cluster_hardening_support;
mod cluster_support;

use cluster_support::{eventually, keys_like as keys, xlen, Redis};
use fanout::{Cluster, Executor};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "push secret";

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn cluster(redis: &Redis, ns: &str, push: bool) -> Cluster {
    Cluster::builder(&redis.url())
        .namespace(ns)
        .secret(SECRET)
        .local_workers(1)
        .push_results(push)
        .build()
        .unwrap()
}

/// The client id and its push value (`addr token signature`).
fn push_key(con: &mut redis::Connection, ns: &str) -> (String, String) {
    let found = keys(con, &format!("{{{ns}}}:push:*"));
    assert_eq!(found.len(), 1, "one client, one push key: {found:?}");
    let client = found[0].rsplit(':').next().unwrap().to_string();
    let value: String = redis::cmd("GET").arg(&found[0]).query(con).unwrap();
    (client, value)
}

fn round_trips(c: &Cluster, n: u64) {
    for i in 0..n {
        let r = c.submit(add, (i, 1)).unwrap().result_timeout(WAIT).unwrap();
        assert_eq!(r, i + 1);
    }
}

#[test]
fn pushed_results_arrive_and_leave_nothing_behind() {
    let _w = cluster_hardening_support::watchdog("push_arrive", Duration::from_secs(120));
    let redis = Redis::start();
    let mut con = redis.conn();
    let c = cluster(&redis, "pa", true);
    let (client, value) = push_key(&mut con, "pa");
    let parts: Vec<&str> = value.split(' ').collect();
    assert_eq!(parts.len(), 3, "{value}");
    assert!(
        parts[0].starts_with("127.0.0.1:"),
        "loopback Redis, loopback port: {value}"
    );
    round_trips(&c, 300);
    // Caught up and trimmed once idle (the event loop reads them at least
    // every second).
    let pev = format!("{{pa}}:pev:{client}");
    assert!(
        eventually(Duration::from_secs(10), || xlen(&mut con, &pev) == 0),
        "pushed events not trimmed: {}",
        xlen(&mut con, &pev)
    );
    c.shutdown(true, false);
    assert!(
        eventually(Duration::from_secs(10), || {
            keys(&mut con, "{pa}:push:*").is_empty() && keys(&mut con, "{pa}:pev:*").is_empty()
        }),
        "left behind: {:?}",
        redis.keys("pa")
    );
}

/// Runs 60 round trips on a cluster in `ns` whose workers are sent to a
/// listener of the test's (advertised, signed with the cluster's secret,
/// before any worker has looked) instead of the client's: it swallows
/// every push, or with `hang_up` closes each connection once it has read
/// the greeting. Returns the connections it accepted and the bytes it
/// swallowed, and checks the local workers survived.
fn against_a_sink(ns: &str, hang_up: bool) -> (usize, usize) {
    let redis = Redis::start();
    let mut con = redis.conn();
    let c = cluster(&redis, ns, true);
    let pids = c.worker_pids();
    let (client, value) = push_key(&mut con, ns);
    let token = value.split(' ').nth(1).unwrap().to_string();
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let swallowed = Arc::new(AtomicUsize::new(0));
    {
        let (accepted, swallowed) = (accepted.clone(), swallowed.clone());
        std::thread::spawn(move || {
            for conn in sink.incoming() {
                let Ok(mut conn) = conn else { return };
                accepted.fetch_add(1, Ordering::SeqCst);
                let swallowed = swallowed.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || hang_up {
                            return;
                        }
                        swallowed.fetch_add(n, Ordering::SeqCst);
                    }
                });
            }
        });
    }
    let forged =
        fanout::__cluster_fuzz::push_value(SECRET.as_bytes(), ns, &client, &sink_addr, &token);
    // The client's keeper writes its own value again every couple of
    // seconds: keep writing ours (a worker reads it once, when it connects).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forger = {
        let (stop, key) = (stop.clone(), format!("{{{ns}}}:push:{client}"));
        let mut con = redis.conn();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _: redis::RedisResult<()> =
                    redis::cmd("SET").arg(&key).arg(&forged).query(&mut con);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    round_trips(&c, 60);
    stop.store(true, Ordering::SeqCst);
    forger.join().unwrap();
    assert_eq!(c.worker_pids(), pids, "a worker died pushing to the sink");
    c.shutdown(true, false);
    (
        accepted.load(Ordering::SeqCst),
        swallowed.load(Ordering::SeqCst),
    )
}

#[test]
fn a_lost_push_is_caught_up_from_redis() {
    let _w = cluster_hardening_support::watchdog("push_lost", Duration::from_secs(120));
    let (accepted, swallowed) = against_a_sink("pl", false);
    assert!(
        accepted > 0 && swallowed > 0,
        "no worker pushed to the advertised address"
    );
}

/// A client that hangs up on its workers (gone, or restarted) must cost
/// them nothing but the push: no SIGPIPE, no stall, results by Redis.
#[test]
fn a_client_that_hangs_up_does_not_hurt_its_workers() {
    let _w = cluster_hardening_support::watchdog("push_hangup", Duration::from_secs(120));
    let (accepted, _) = against_a_sink("ph", true);
    assert!(
        accepted > 0,
        "no worker connected to the advertised address"
    );
}

#[test]
fn junk_on_the_push_port_changes_nothing() {
    let _w = cluster_hardening_support::watchdog("push_junk", Duration::from_secs(120));
    let redis = Redis::start();
    let mut con = redis.conn();
    let c = cluster(&redis, "pj", true);
    let (client, value) = push_key(&mut con, "pj");
    let p: Vec<&str> = value.split(' ').collect();
    let (addr, token) = (p[0].to_string(), p[1].to_string());
    let hello = |t: &str| {
        let mut h = b"fanout-push-v1 ".to_vec();
        h.extend_from_slice(t.as_bytes());
        h
    };
    let frame = |task: &str, envelope: &[u8], claimed: u32| {
        let mut f = (task.len() as u16).to_le_bytes().to_vec();
        f.extend_from_slice(task.as_bytes());
        f.extend_from_slice(&claimed.to_le_bytes());
        f.extend_from_slice(envelope);
        f
    };
    let ours = format!("{client}.1");
    let mut cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("wrong hello", b"GET / HTTP/1.1\r\n\r\n".to_vec(), true),
        ("wrong token", hello(&"0".repeat(32)), true),
        (
            "oversized frame",
            [hello(&token), frame(&ours, b"x", 1 << 30)].concat(),
            true,
        ),
        (
            "empty task id",
            [hello(&token), vec![0, 0, 1, 0, 0, 0, b'x']].concat(),
            true,
        ),
        (
            "half a frame",
            [hello(&token), frame(&ours, b"abc", 3)[..5].to_vec()].concat(),
            false,
        ),
    ];
    // A well-framed envelope that does not open, for one of our tasks and
    // for another client's: dropped, the connection stays.
    cases.push((
        "forged envelope",
        [
            hello(&token),
            frame(&ours, &[7; 40], 40),
            frame("ffff.1", &[7; 40], 40),
        ]
        .concat(),
        false,
    ));
    let mut open = Vec::new();
    for (what, bytes, closed_by_client) in cases {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&bytes).unwrap();
        if closed_by_client {
            let mut b = [0u8; 16];
            let r = s.read(&mut b);
            assert!(
                matches!(r, Ok(0) | Err(_)),
                "{what}: the client should close the connection, got {r:?}"
            );
            if let Err(e) = r {
                assert!(
                    e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut,
                    "{what}: not closed within 10 s"
                );
            }
        } else {
            open.push(s);
        }
    }
    round_trips(&c, 100);
    drop(open);
    round_trips(&c, 20);
    c.shutdown(true, false);
}

#[test]
fn without_push_results_the_client_listens_nowhere() {
    let _w = cluster_hardening_support::watchdog("push_off", Duration::from_secs(120));
    let redis = Redis::start();
    let mut con = redis.conn();
    let c = cluster(&redis, "po", false);
    assert!(keys(&mut con, "{po}:push:*").is_empty());
    assert!(keys(&mut con, "{po}:pev:*").is_empty());
    round_trips(&c, 100);
    c.shutdown(true, false);
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// A thread blocked on a cluster future reads pushed results itself (see
/// `src/cluster/client/pushed.rs`); whatever way its future gets done — a
/// push, a cancel from another thread, a done-callback's courier, another
/// waiter's delivery — it must see it, and repeated timed waits must work.
#[test]
fn a_waiting_thread_sees_its_future_done_by_any_path() {
    let _w = cluster_hardening_support::watchdog("push_waiters", Duration::from_secs(120));
    let redis = Redis::start();
    let c = cluster(&redis, "pw", true);
    round_trips(&c, 50);
    // Repeated short waits, then the result.
    let f = c.submit(sleepy, (50,)).unwrap();
    let mut waits = 0;
    while !f.wait(Some(Duration::from_millis(1))) {
        waits += 1;
        assert!(waits < 30_000, "not done within 30 s");
    }
    assert_eq!(f.result_timeout(WAIT), Ok(50));
    // A done-callback moves the completion to the courier.
    let (tx, rx) = std::sync::mpsc::channel();
    let f = c.submit(add, (2, 3)).unwrap();
    f.add_done_callback(move |r| {
        let _ = tx.send(r.clone());
    });
    assert_eq!(f.result_timeout(WAIT), Ok(5));
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Ok(5));
    // A cancel from another thread while this one waits: one local worker
    // runs one task at a time per slot; fill them so the next one queues.
    let slots = std::thread::available_parallelism().map_or(1, |n| n.get());
    let busy: Vec<_> = (0..slots)
        .map(|_| c.submit(sleepy, (1500,)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let queued = Arc::new(c.submit(sleepy, (1,)).unwrap());
    let canceller = {
        let queued = queued.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            queued.cancel()
        })
    };
    assert!(queued.wait(Some(WAIT)), "the waiter missed the cancel");
    let cancelled = canceller.join().unwrap();
    assert_eq!(queued.cancelled(), cancelled);
    for f in busy {
        assert_eq!(f.result_timeout(WAIT), Ok(1500));
    }
    // Many waiters at once, each on its own futures: one drives, the
    // others sleep on their futures and are woken by its deliveries.
    let c = Arc::new(c);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    let r = c
                        .submit(add, (t * 1000 + i, 1))
                        .unwrap()
                        .result_timeout(WAIT);
                    assert_eq!(r, Ok(t * 1000 + i + 1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    c.shutdown(true, false);
}

//! A worker stopped and continued (`SIGSTOP`, `SIGCONT`: a debugger, a
//! job-control stop, a paused container) while it waits in its blocking
//! read: the continued read can fail (`EINTR`, signal(7), for a socket
//! with a receive timeout) after Redis has delivered an entry to it. The
//! entry is then pending for that worker, which never saw it; it must run
//! at once when the worker is back, not a lease later.

mod cluster_hardening_support;
mod cluster_support;

use cluster_support::Redis;
use fanout::{Cluster, Executor};
use std::time::{Duration, Instant};

fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[test]
fn an_entry_delivered_to_a_stopped_worker_runs_when_it_continues() {
    let _w = cluster_hardening_support::watchdog("stopped_worker", Duration::from_secs(150));
    let redis = Redis::start();
    let c = Cluster::builder(&redis.url())
        .namespace("sw")
        .secret("stopped secret")
        .local_workers(1)
        .lease(Duration::from_secs(60))
        .build()
        .unwrap();
    for i in 0..20 {
        assert_eq!(
            c.submit(add, (i, 1))
                .unwrap()
                .result_timeout(Duration::from_secs(30)),
            Ok(i + 1)
        );
    }
    let pid = c.worker_pids()[0] as libc::pid_t;
    for round in 0..3u64 {
        // Idle in its blocking read: stop it, let Redis deliver, continue it.
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: signals a child process this test's cluster started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let f = c.submit(add, (round, 100)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        let t = Instant::now();
        assert_eq!(
            f.result_timeout(Duration::from_secs(20)),
            Ok(round + 100),
            "round {round}: not run within 20 s of SIGCONT (the lease is 60 s)"
        );
        eprintln!("round {round}: result {:?} after SIGCONT", t.elapsed());
    }
    assert_eq!(c.worker_pids(), vec![pid as u32], "the worker was replaced");
    c.shutdown(true, false);
}

/// The same for a lane other than the default (a call with resources): an
/// entry a slot took from the lane but never received (here taken in its
/// name while the worker is stopped, as a `take` whose reply was lost
/// leaves it) runs when the slot's next read fails, not a lease later.
#[test]
fn a_lane_entry_taken_for_a_slot_that_never_saw_it_runs_after_its_next_failed_read() {
    let _w = cluster_hardening_support::watchdog("stopped_worker_lane", Duration::from_secs(150));
    let redis = Redis::start();
    let c = Cluster::builder(&redis.url())
        .namespace("swl")
        .secret("stopped secret")
        .local_workers(1)
        .local_worker_resources(&[("gpu", 1)])
        .lease(Duration::from_secs(60))
        .build()
        .unwrap();
    let lane_call = |i: u64| {
        c.call(add)
            .resources(&[("gpu", 1)])
            .submit((i, 1000))
            .unwrap()
    };
    for i in 0..5 {
        assert_eq!(
            lane_call(i).result_timeout(Duration::from_secs(30)),
            Ok(i + 1000)
        );
    }
    let mut con = redis.conn();
    let registry = cluster_support::keys_like(&mut con, "*lanes*");
    assert_eq!(registry.len(), 1, "one lane registry: {registry:?}");
    let lanes: Vec<String> = redis::cmd("HKEYS")
        .arg(&registry[0])
        .query(&mut con)
        .unwrap();
    assert_eq!(lanes.len(), 1, "one lane besides the default: {lanes:?}");
    let lane = &lanes[0];
    // The slot's consumer in the lane's group (`host:pid/0`).
    let consumers: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(lane)
        .arg("fanout")
        .query(&mut con)
        .unwrap();
    let slot = consumers
        .iter()
        .filter_map(|fields| match fields.get(1) {
            Some(redis::Value::BulkString(name)) => String::from_utf8(name.clone()).ok(),
            _ => None,
        })
        .find(|name| name.ends_with("/0"))
        .unwrap_or_else(|| panic!("no slot consumer in the lane's group: {consumers:?}"));
    let pid = c.worker_pids()[0] as libc::pid_t;
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signals a child process this test's cluster started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let before = cluster_support::xlen(&mut con, lane);
    let f = lane_call(7);
    let give_up = Instant::now() + Duration::from_secs(20);
    while cluster_support::xlen(&mut con, lane) == before {
        assert!(Instant::now() < give_up, "the call never reached its lane");
        std::thread::sleep(Duration::from_millis(5));
    }
    let taken: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("fanout")
        .arg(&slot)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(lane)
        .arg(">")
        .query(&mut con)
        .unwrap();
    assert!(
        !matches!(taken, redis::Value::Nil),
        "the entry was taken for the slot"
    );
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let t = Instant::now();
    assert_eq!(
        f.result_timeout(Duration::from_secs(20)),
        Ok(1007),
        "not run within 20 s of SIGCONT (the lease is 60 s)"
    );
    eprintln!("lane entry: result {:?} after SIGCONT", t.elapsed());
    assert_eq!(c.worker_pids(), vec![pid as u32], "the worker was replaced");
    c.shutdown(true, false);
    // The worker left the lane's group too (its own and its slot's consumer).
    let left: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(lane)
        .arg("fanout")
        .query(&mut con);
    assert!(
        left.as_ref().map_or(true, |c| c.is_empty()),
        "consumers left in the lane's group: {left:?}"
    );
}

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

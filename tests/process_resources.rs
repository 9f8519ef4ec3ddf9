//! After a ProcessPool shuts down, nothing is left behind: no worker process,
//! no zombie, no pipe, eventfd or other descriptor — also after crashes,
//! corrupt frames and recycling, for both start methods.
//!
//! One `#[test]` only: this binary's descriptor count and child processes
//! must not be disturbed by tests running in parallel.

mod process_util;

use fanout::{Executor, MapOptions, ProcessPool, StartMethod};
use process_util::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn garbage_then_return() -> u32 {
    let fd = result_pipe_fd().expect("the worker's result pipe");
    write_raw(fd, &[3, 0, 0, 0, 0xAB, 0xCD, 0xEF]);
    1
}

/// Runs a busy life on `pool`; returns every worker pid seen.
fn exercise(pool: &ProcessPool) -> BTreeSet<u32> {
    let mut seen: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
    let fs: Vec<_> = (0..40u64)
        .map(|i| pool.submit(nap_echo, (i,)).unwrap())
        .collect();
    let crashes = [
        pool.submit(segfault, ()).unwrap(),
        pool.submit(abort_now, ()).unwrap(),
        pool.submit(exit3, ()).unwrap(),
        pool.submit(sigkill_self, ()).unwrap(),
        pool.submit(garbage_then_return, ()).unwrap(),
    ];
    seen.extend(pool.worker_pids());
    for f in crashes {
        assert!(f.result_timeout(T).is_err());
        seen.extend(pool.worker_pids());
    }
    for (i, f) in fs.into_iter().enumerate() {
        assert_eq!(f.result_timeout(T), Ok(i as u64));
    }
    let opts = MapOptions::default().chunksize(16).timeout(T);
    for p in pool
        .map_with(|_: u64| std::process::id(), 0..200u64, opts)
        .unwrap()
    {
        seen.insert(p.unwrap());
    }
    for _ in 0..6 {
        seen.insert(pool.submit(pid, ()).unwrap().result_timeout(T).unwrap());
    }
    seen.extend(pool.worker_pids());
    seen
}

fn check_clean(what: &str, pids: &BTreeSet<u32>, fds_before: usize, listing_before: &[String]) {
    // Everything must be gone by the time shutdown(wait = true) returns;
    // `eventually` only guards against a slow /proc, and reports how long.
    let clean =
        || open_fds() == fds_before && pids.iter().all(|&p| process_gone(p)) && no_children();
    assert!(
        eventually(Duration::from_secs(5), clean),
        "{what}: fds {} → {} ({:?} → {:?}), alive {:?}, children left: {}",
        fds_before,
        open_fds(),
        listing_before,
        fd_listing(),
        pids.iter()
            .filter(|&&p| !process_gone(p))
            .collect::<Vec<_>>(),
        !no_children()
    );
    assert!(
        clean(),
        "{what}: clean only some time after shutdown returned"
    );
}

#[test]
fn shutdown_leaves_no_process_zombie_or_descriptor() {
    let _watchdog = watchdog(
        "shutdown_leaves_no_process_zombie_or_descriptor",
        Duration::from_secs(120),
    );
    // Warm up whatever the first pool initialises lazily and keeps for the
    // process's life (build id, panic hook, std's own state).
    {
        let warm = ProcessPool::builder().workers(1).build().unwrap();
        warm.submit(add, (1, 1)).unwrap().result_timeout(T).unwrap();
        let warm = ProcessPool::builder()
            .workers(1)
            .start_method(StartMethod::Fork)
            .build()
            .unwrap();
        warm.submit(add, (1, 1)).unwrap().result_timeout(T).unwrap();
    }
    assert!(eventually(Duration::from_secs(5), no_children));
    let fds_before = open_fds();
    let listing_before = fd_listing();

    for method in METHODS {
        // Plain life, crashes, corrupt frames, then shutdown(wait).
        let pool = process_util::pool(method, 2);
        let pids = exercise(&pool);
        pool.shutdown(true, false);
        assert!(pool.worker_pids().is_empty());
        check_clean(
            &format!("{method:?} shutdown"),
            &pids,
            fds_before,
            &listing_before,
        );
        drop(pool);
        check_clean(
            &format!("{method:?} drop after shutdown"),
            &pids,
            fds_before,
            &listing_before,
        );

        // Recycling every call, ended by Drop.
        let pool = ProcessPool::builder()
            .workers(2)
            .start_method(method)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        let pids = exercise(&pool);
        assert!(pids.len() > 20, "{method:?}: {} pids", pids.len());
        drop(pool);
        check_clean(
            &format!("{method:?} recycling + drop"),
            &pids,
            fds_before,
            &listing_before,
        );

        // shutdown(wait = false, cancel_futures = true) with calls queued and
        // running: clean shortly after, once the running calls end.
        let pool = process_util::pool(method, 2);
        let mut pids: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
        let fs: Vec<_> = (0..20)
            .map(|_| pool.submit(sleep_ms, (100,)).unwrap())
            .collect();
        pool.shutdown(false, true);
        pids.extend(pool.worker_pids());
        drop(pool);
        for f in fs {
            assert!(f.done());
        }
        check_clean(
            &format!("{method:?} cancel + drop"),
            &pids,
            fds_before,
            &listing_before,
        );

        // A broken pool (its initializer panics, or kills the worker) also cleans up.
        fn panicking_init(_: u8) {
            panic!("no")
        }
        fn aborting_init(_: u8) {
            std::process::abort()
        }
        for name in ["panicking", "aborting"] {
            let builder = ProcessPool::builder().workers(2).start_method(method);
            let builder = if name == "panicking" {
                builder.initializer(panicking_init, (0,))
            } else {
                builder.initializer(aborting_init, (0,))
            };
            let pool = builder.build().unwrap();
            let mut pids: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
            if let Ok(f) = pool.submit(add, (1, 2)) {
                assert!(f.result_timeout(T).is_err());
            }
            pids.extend(pool.worker_pids());
            drop(pool);
            check_clean(
                &format!("{method:?} {name} initializer + drop"),
                &pids,
                fds_before,
                &listing_before,
            );
        }
    }
}

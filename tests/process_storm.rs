//! ProcessPool under concurrent load mixed with crashes, recycling, cancels
//! and a racing shutdown: every future ends with the outcome it should, and
//! nothing hangs.

mod process_util;

use fanout::{Error, Executor, Future, MapOptions, ProcessPool};
use process_util::*;
use std::sync::Arc;
use std::time::Duration;

/// What call `i` of a storm does.
fn storm_call(i: u64) -> u64 {
    match i % 41 {
        7 => std::process::abort(),
        19 => {
            // SAFETY: a deliberate segmentation fault.
            unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
            0
        }
        31 => std::process::exit(3),
        13 => panic!("call {i} panics"),
        _ => {
            if i.is_multiple_of(5) {
                std::thread::sleep(Duration::from_millis(1));
            }
            i * 2
        }
    }
}

fn check_storm_outcome(i: u64, r: fanout::Result<u64>, cancelled: bool) {
    match (i % 41, r) {
        (_, Err(Error::Cancelled)) if cancelled => {}
        (7 | 19 | 31, Err(Error::WorkerLost { .. })) => {}
        (13, Err(Error::Panicked { message, .. })) => {
            assert_eq!(message, format!("call {i} panics"))
        }
        (7 | 13 | 19 | 31, other) => panic!("call {i}: {other:?}"),
        // A call handed ahead to a worker that then crashed is requeued and
        // runs elsewhere; it never fails.
        (_, Ok(v)) => assert_eq!(v, i * 2, "call {i}"),
        (_, other) => panic!("call {i}: {other:?}"),
    }
}

#[test]
fn concurrent_submits_with_crashes_recycling_and_cancels() {
    let _watchdog = watchdog(
        "concurrent_submits_with_crashes_recycling_and_cancels",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = Arc::new(
            ProcessPool::builder()
                .workers(3)
                .start_method(method)
                .max_tasks_per_child(23)
                .build()
                .unwrap(),
        );
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let calls: Vec<(u64, Future<u64>)> = (0..150u64)
                        .map(|k| {
                            let i = t * 1000 + k;
                            (i, pool.submit(storm_call, (i,)).unwrap())
                        })
                        .collect();
                    let mut cancelled = std::collections::HashSet::new();
                    for (i, f) in &calls {
                        if i % 9 == 4 && f.cancel() {
                            cancelled.insert(*i);
                        }
                    }
                    for (i, f) in calls {
                        check_storm_outcome(i, f.result_timeout(T), cancelled.contains(&i));
                    }
                    // A chunked map through the same storm.
                    let opts = MapOptions::default().chunksize(4).timeout(T);
                    let items: Vec<u64> = (0..80).map(|k| t * 1000 + 500 + k).collect();
                    let out: Vec<_> = pool
                        .map_with(storm_call, items.clone(), opts)
                        .unwrap()
                        .collect();
                    assert_eq!(out.len(), items.len());
                    let chunk_crashed: Vec<bool> = items
                        .chunks(4)
                        .map(|c| c.iter().any(|i| matches!(i % 41, 7 | 19 | 31)))
                        .collect();
                    for (n, (i, r)) in items.iter().zip(out).enumerate() {
                        if chunk_crashed[n / 4] {
                            // The whole chunk was the running frame.
                            assert!(
                                r.is_ok()
                                    || matches!(
                                        r,
                                        Err(Error::WorkerLost { .. }) | Err(Error::Panicked { .. })
                                    ),
                                "call {i}: {r:?}"
                            );
                            if matches!(i % 41, 7 | 19 | 31) {
                                assert!(
                                    matches!(r, Err(Error::WorkerLost { .. })),
                                    "call {i}: {r:?}"
                                );
                            }
                        } else {
                            check_storm_outcome(*i, r, false);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // A recycled worker's slot is empty until its replacement is up.
        assert!(eventually(Duration::from_secs(5), || pool
            .worker_pids()
            .len()
            == 3));
        let sum: u64 = pool
            .map(|x: u64| x, 0..100u64)
            .unwrap()
            .map(Result::unwrap)
            .sum();
        assert_eq!(sum, 4950);
    }
}

#[test]
fn shutdown_racing_with_submitters_leaves_no_future_pending() {
    let _watchdog = watchdog(
        "shutdown_racing_with_submitters_leaves_no_future_pending",
        Duration::from_secs(120),
    );
    for method in METHODS {
        for cancel in [false, true] {
            let pool = Arc::new(process_util::pool(method, 2));
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..3u64)
                .map(|t| {
                    let pool = pool.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        barrier.wait();
                        let mut fs = Vec::new();
                        for k in 0..300u64 {
                            match pool.submit(nap_echo, (t * 1000 + k,)) {
                                Ok(f) => fs.push((t * 1000 + k, f)),
                                Err(Error::Shutdown) => break,
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                        fs
                    })
                })
                .collect();
            barrier.wait();
            std::thread::sleep(Duration::from_millis(30));
            pool.shutdown(true, cancel);
            for t in threads {
                for (i, f) in t.join().unwrap() {
                    assert!(
                        f.done(),
                        "{method:?}: call {i} not done after shutdown(wait)"
                    );
                    match f.result_timeout(Duration::from_secs(1)) {
                        Ok(v) => assert_eq!(v, i),
                        Err(Error::Cancelled) if cancel => {}
                        other => panic!("{method:?} cancel={cancel}: call {i}: {other:?}"),
                    }
                }
            }
            assert!(pool.worker_pids().is_empty());
        }
    }
}

#[test]
fn large_payloads_both_ways_at_once() {
    let _watchdog = watchdog("large_payloads_both_ways_at_once", Duration::from_secs(120));
    fn echo_rev(mut v: Vec<u8>) -> Vec<u8> {
        v.reverse();
        v
    }
    for method in METHODS {
        let pool = process_util::pool(method, 2);
        let inputs: Vec<Vec<u8>> = (0..6u8)
            .map(|k| (0..(8 << 20) + k as usize).map(|i| (i as u8) ^ k).collect())
            .collect();
        let fs: Vec<_> = inputs
            .iter()
            .map(|v| pool.submit(echo_rev, (v.clone(),)).unwrap())
            .collect();
        for (v, f) in inputs.into_iter().zip(fs) {
            let mut want = v;
            want.reverse();
            assert!(f.result_timeout(T).unwrap() == want, "{method:?}");
        }
    }
}

/// A task that runs its own pool inside the worker.
fn nested(method_fork: bool, x: u64) -> (u32, Vec<u32>, u64) {
    let method = if method_fork {
        fanout::StartMethod::Fork
    } else {
        fanout::StartMethod::Spawn
    };
    let inner = ProcessPool::builder()
        .workers(2)
        .start_method(method)
        .build()
        .unwrap();
    let pids: Vec<u32> = inner
        .map_with(|_: u64| std::process::id(), 0..4u64, MapOptions::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let sq = inner
        .submit(square, (x,))
        .unwrap()
        .result_timeout(T)
        .unwrap();
    (std::process::id(), pids, sq)
}

#[test]
fn a_task_can_run_its_own_pool() {
    let _watchdog = watchdog("a_task_can_run_its_own_pool", Duration::from_secs(120));
    for method in METHODS {
        let pool = process_util::pool(method, 1);
        for inner_fork in [false, true] {
            let (worker, inner_pids, sq) = pool
                .submit(nested, (inner_fork, 9))
                .unwrap()
                .result_timeout(T)
                .unwrap();
            assert_eq!(sq, 81);
            assert!(pool.worker_pids().contains(&worker));
            assert!(!inner_pids.contains(&worker) && !inner_pids.contains(&std::process::id()));
        }
    }
}

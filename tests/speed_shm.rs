//! Large call and result frames travel through shared memory (memfd + mmap)
//! instead of the pipes, and nothing of it leaks: not in the pool, not in a
//! worker, not when a worker dies holding a region — for both start methods.
//!
//! The tests share one lock: they count this process's descriptors and
//! mappings, which a test running in parallel would disturb. They turn off
//! cross-memory reads (`FANOUT_CROSS_MEMORY=0`, inherited by the workers),
//! which would otherwise carry a lone large byte vector
//! (`tests/speed_cross_memory.rs`), so that every large frame here takes
//! the shared-memory path.

mod process_util;

use fanout::{Executor, MapOptions, StartMethod};
use process_util::large::*;
use process_util::*;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

/// The shared lock; shared memory only, before any pool of this process
/// reads the setting.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    std::env::set_var("FANOUT_CROSS_MEMORY", "0");
    guard
}

/// Regions a pool of 2 may hold when idle: the call regions it keeps for
/// reuse (`shm::KEEP`) and one result region per worker.
const KEEP: usize = 4 + 2;

/// Writes its pid to `path` once it holds its (large) arguments, then
/// waits to be killed (bounded, so a failed kill fails the test).
fn hold_until_killed(v: Vec<u8>, path: String) -> usize {
    std::fs::write(&path, std::process::id().to_string()).unwrap();
    std::thread::sleep(T);
    v.len()
}

/// Descriptors of `pid` that are shared-memory regions.
fn region_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| t.to_string_lossy().starts_with(&format!("/{NAME}")))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn large_arguments_and_results_round_trip() {
    let _serial = serial();
    let _dog = watchdog(
        "large_arguments_and_results_round_trip",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 2);
        // Around the threshold, both directions, and far above it.
        let sizes = [SHM_AT - 64, SHM_AT, SHM_AT + 1, 3 * SHM_AT + 7, 24 << 20];
        round_trips(&pool, method, &sizes, 1);
        // Many large results at once: while the pool has not read a worker's
        // last one, the next goes through the pipe; all arrive intact.
        let fs: Vec<_> = (0..12u8)
            .map(|i| pool.submit(make, (2 * SHM_AT, i)).unwrap())
            .collect();
        for (i, f) in fs.into_iter().enumerate() {
            assert!(f.result_timeout(T).unwrap() == payload(2 * SHM_AT, i as u8));
        }
        // A map chunk of medium items is one large frame.
        chunk_of_items(&pool, 8, 300 << 10);
        // Large results went through the workers' result regions.
        assert!(
            pool.worker_pids().iter().any(|&w| region_fds(w) == 1),
            "{method:?}: no worker has a result region"
        );
        // The worker keeps its result region, and has let go of the
        // pool's call regions once their calls are done.
        for w in pool.worker_pids() {
            assert!(
                eventually(T, || region_fds(w) <= 1 && region_maps(w) == region_fds(w)),
                "{method:?}: worker {w} holds {} region fds, {} mappings",
                region_fds(w),
                region_maps(w)
            );
        }
        assert!(region_fds(me()) <= KEEP, "{method:?}: {:?}", fd_listing());
        // (The I/O thread unmaps a result region just after delivering.)
        assert!(eventually(T, || region_maps(me()) == region_fds(me())));
        drop(pool);
        assert_eq!(region_fds(me()), 0, "{method:?}: {:?}", fd_listing());
        assert_eq!(region_maps(me()), 0, "{method:?}");
    }
}

#[test]
fn a_worker_killed_mid_call_leaks_nothing() {
    let _serial = serial();
    let _dog = watchdog(
        "a_worker_killed_mid_call_leaks_nothing",
        Duration::from_secs(120),
    );
    let dir = tempfile::tempdir().unwrap();
    let fds_before = open_fds();
    for method in METHODS {
        let pool = pool(method, 2);
        let big = payload(4 * SHM_AT, 1);

        // Killed from outside while it holds a call region mapped.
        let marker = dir.path().join(format!("{method:?}-held"));
        let f = pool
            .submit(
                hold_until_killed,
                (big.clone(), marker.to_string_lossy().into_owned()),
            )
            .unwrap();
        assert!(
            eventually(T, || marker.exists()),
            "{method:?}: call never started"
        );
        let victim: u32 = std::fs::read_to_string(&marker).unwrap().parse().unwrap();
        assert!(
            region_maps(victim) >= 1,
            "{method:?}: the call's arguments should be in a mapped region"
        );
        // SAFETY: killing a worker process this test's pool started.
        unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
        expect_worker_lost(f.result_timeout(T), "SIGKILL");

        // Dies by itself while holding one.
        expect_worker_lost(
            pool.submit(die_holding, (big.clone(),))
                .unwrap()
                .result_timeout(T),
            "SIGKILL",
        );
        assert!(eventually(T, || process_gone(victim)));

        // The replacements serve large calls, and the regions of the
        // calls that died were given back, not lost.
        for i in 0..6u8 {
            let v = payload(2 * SHM_AT, i);
            assert!(pool.submit(echo, (v.clone(),)).unwrap().result_timeout(T) == Ok(v));
        }
        assert!(region_fds(me()) <= KEEP, "{method:?}: {:?}", fd_listing());
        // (The I/O thread unmaps a result region just after delivering.)
        assert!(eventually(T, || region_maps(me()) == region_fds(me())));
        drop(pool);
        assert_eq!(region_fds(me()), 0, "{method:?}: {:?}", fd_listing());
        assert_eq!(region_maps(me()), 0, "{method:?}");
        assert!(eventually(T, no_children), "{method:?}: a worker is left");
    }
    assert_eq!(open_fds(), fds_before, "{:?}", fd_listing());
}

#[test]
fn a_large_result_sent_just_before_the_worker_dies_still_arrives() {
    let _serial = serial();
    let _dog = watchdog("a_large_result_sent_just_before", Duration::from_secs(120));
    for method in METHODS {
        let pool = pool(method, 1);
        // Through its result region.
        results_outlive_their_worker(&pool, method, 5);
        drop(pool);
        assert_eq!(region_fds(me()), 0, "{method:?}: {:?}", fd_listing());
        assert_eq!(region_maps(me()), 0, "{method:?}");
    }
}

#[test]
fn large_captures_travel_through_shared_memory_too() {
    let _serial = serial();
    let _dog = watchdog("large_captures_travel", Duration::from_secs(120));
    for method in METHODS {
        let pool = pool(method, 2);
        let table = payload(3 * SHM_AT, 5);
        let lookup = fanout::bind(table.clone(), |t: &Vec<u8>, i: usize| t[i]);
        for i in [0, SHM_AT, 3 * SHM_AT - 1] {
            let got = pool.submit(lookup.clone(), (i,)).unwrap().result_timeout(T);
            assert_eq!(got, Ok(table[i]), "{method:?}");
        }
        let got: Vec<u8> = pool
            .map_with(
                lookup,
                (0..40).map(|k| k * 1000),
                MapOptions::default().chunksize(8),
            )
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got, (0..40).map(|k| table[k * 1000]).collect::<Vec<u8>>());
    }
}

#[test]
fn shm_and_pipes_agree_on_many_interleaved_calls() {
    let _serial = serial();
    let _dog = watchdog(
        "shm_and_pipes_agree_on_many_interleaved_calls",
        Duration::from_secs(120),
    );
    let pool = pool(StartMethod::Fork, 2);
    let sizes = [10, SHM_AT + 3, 5000, 2 * SHM_AT, 0, SHM_AT - 1];
    let fs: Vec<_> = (0..30)
        .map(|i| {
            let v = payload(sizes[i % sizes.len()], i as u8);
            (v.clone(), pool.submit(echo, (v,)).unwrap())
        })
        .collect();
    for (v, f) in fs {
        assert!(f.result_timeout(T) == Ok(v));
    }
}

/// An initializer whose (unsent) output is a large byte vector.
fn big_init(n: usize) -> Vec<u8> {
    payload(n, 4)
}

#[test]
fn large_byte_vector_outputs_reuse_and_splicing_keep_results_apart() {
    let _serial = serial();
    let _dog = watchdog("large_byte_vector_outputs_reuse", Duration::from_secs(120));
    for method in METHODS {
        let pool = fanout::ProcessPool::builder()
            .workers(1)
            .start_method(method)
            .initializer(big_init, (2 * SHM_AT,))
            .build()
            .unwrap();
        // The initializer's output is not taken for this call's result.
        assert_eq!(
            pool.submit(len_of, (payload(10, 1),))
                .unwrap()
                .result_timeout(T),
            Ok(10),
            "{method:?}"
        );
        // Sizes that do and do not fit the buffer the last output left behind,
        // and results that are not byte vectors in between.
        for (i, n) in [3 * SHM_AT, 3 * SHM_AT, 2 * SHM_AT, 8 * SHM_AT, SHM_AT, 5]
            .into_iter()
            .enumerate()
        {
            let v = payload(n, i as u8);
            let back = pool.submit(echo, (v.clone(),)).unwrap().result_timeout(T);
            assert!(back.as_ref() == Ok(&v), "{method:?}: echo of {n} bytes");
            let len = pool.submit(len_of, (v,)).unwrap().result_timeout(T);
            assert_eq!(len, Ok(n), "{method:?}");
        }
        // A map whose items each return a large byte vector (one DONE frame).
        let made: Vec<Vec<u8>> = pool
            .map_with(
                |i: u8| make(SHM_AT + i as usize, i),
                0..4u8,
                MapOptions::default().chunksize(4),
            )
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        for (i, m) in made.iter().enumerate() {
            assert!(*m == payload(SHM_AT + i, i as u8), "{method:?}: item {i}");
        }
    }
}

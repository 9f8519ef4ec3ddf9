//! A call whose only large part is one byte vector (its argument, or its
//! output) crosses by cross-memory attach: the receiver reads the bytes
//! straight from the sender's memory (`process_vm_readv`), one copy each
//! way, and nothing else changes: results arrive whole, a worker that dies
//! after sending a result still delivers it, dependents get the whole
//! value, and nothing leaks — for both start methods.
//!
//! Where this machine does not allow one process to read another's memory
//! (Yama's `ptrace_scope` above 1, a seccomp filter, a non-dumpable
//! process), the same calls take shared memory, and the tests check only
//! their results; they say so on stderr.
//!
//! The tests share one lock: they count this process's descriptors.

mod process_util;

use fanout::Executor;
use process_util::large::*;
use process_util::*;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn sum_of(v: Vec<u8>) -> (usize, u64) {
    (v.len(), v.iter().map(|&b| u64::from(b)).sum())
}

/// This process's shared-memory regions: (count, largest size).
fn regions() -> (usize, u64) {
    let mut count = 0;
    let mut largest = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for e in dir.flatten() {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            if target.to_string_lossy().starts_with(&format!("/{NAME}")) {
                count += 1;
                largest = largest.max(std::fs::metadata(e.path()).map_or(0, |m| m.len()));
            }
        }
    }
    (count, largest)
}

/// Whether a worker may read this process and this process a worker: the
/// conditions `process::cma` checks (the test binary is the pool).
fn cross_memory_here() -> bool {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    // SAFETY: PR_GET_DUMPABLE only reads a flag of this process.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) } == 1;
    let from = [7u8; 8];
    let mut to = [0u8; 8];
    let local = libc::iovec {
        iov_base: to.as_mut_ptr() as *mut libc::c_void,
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: from.as_ptr() as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: two live 8-byte local buffers.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    let ok = scope == 0 && dumpable && n == 8 && to == from;
    if !ok {
        eprintln!(
            "cross-memory reads are not allowed here (ptrace_scope {scope}, dumpable \
             {dumpable}, probe {n}): checking results only"
        );
    }
    ok
}

/// What a pool of `workers` holds once its calls crossed by cross-memory
/// reads: only the result regions (one per worker, never grown, as their
/// only use was the "not yet read" flag), and no call region.
fn assert_no_region_carried_bytes(workers: usize, what: &str) {
    let (count, largest) = regions();
    assert_eq!(count, workers, "{what}: {:?}", fd_listing());
    assert!(
        largest <= 2 << 20,
        "{what}: a region grew to {largest} bytes"
    );
}

#[test]
fn lone_large_vectors_cross_both_ways_and_leave_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _dog = watchdog("lone_large_vectors_cross", Duration::from_secs(120));
    let direct = cross_memory_here();
    for method in METHODS {
        let fds_before = open_fds();
        let pool = pool(method, 2);
        // Twice each: the second time the worker's argument buffer is warm
        // and the caller's argument buffer takes the result.
        round_trips(
            &pool,
            method,
            &[SHM_AT, SHM_AT + 1, 3 * SHM_AT + 7, 24 << 20],
            2,
        );
        // Many large results at once, some of them dropped unread: a worker
        // waits for the pool to read each lent output before it runs on.
        let fs: Vec<_> = (0..12u8)
            .map(|i| pool.submit(make, (2 * SHM_AT, i)).unwrap())
            .collect();
        for (i, f) in fs.into_iter().enumerate() {
            if i % 3 == 0 {
                drop(f);
            } else {
                assert!(f.result_timeout(T).unwrap() == payload(2 * SHM_AT, i as u8));
            }
        }
        // Small frames around them still use the pipe; a chunk of large
        // items is not a lone vector (shared memory).
        chunk_of_items(&pool, 4, 600 << 10);
        let v = payload(5 * SHM_AT, 3);
        let back = pool.submit(echo, (v.clone(),)).unwrap().result_timeout(T);
        assert!(back.as_ref() == Ok(&v), "{method:?}: echo after a chunk");
        if direct {
            // The chunk took one call region; the lone vectors took none,
            // and no result went through a region.
            let (count, largest) = regions();
            assert!(count <= 2 + 1, "{method:?}: {:?}", fd_listing());
            assert!(
                largest <= 4 << 20,
                "{method:?}: a region grew to {largest} bytes"
            );
        }
        drop(pool);
        assert_eq!(regions().0, 0, "{method:?}: {:?}", fd_listing());
        assert_eq!(region_maps(me()), 0, "{method:?}");
        assert!(eventually(T, no_children), "{method:?}: a worker is left");
        assert_eq!(open_fds(), fds_before, "{method:?}: {:?}", fd_listing());
    }
}

#[test]
fn only_lone_vectors_means_no_region_carries_bytes() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _dog = watchdog("only_lone_vectors", Duration::from_secs(120));
    if !cross_memory_here() {
        return;
    }
    for method in METHODS {
        let pool = pool(method, 2);
        let fs: Vec<_> = (0..6u8)
            .map(|i| pool.submit(echo, (payload(3 * SHM_AT, i),)).unwrap())
            .collect();
        for (i, f) in fs.into_iter().enumerate() {
            assert!(f.result_timeout(T).unwrap() == payload(3 * SHM_AT, i as u8));
        }
        assert_no_region_carried_bytes(2, &format!("{method:?}"));
        drop(pool);
    }
}

#[test]
fn a_lent_result_survives_its_worker_and_a_killed_reader_loses_nothing_else() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _dog = watchdog("a_lent_result_survives", Duration::from_secs(120));
    for method in METHODS {
        let pool = pool(method, 1);
        // Lent from its memory: it waits until the pool has read it.
        results_outlive_their_worker(&pool, method, 4);
        // A worker that dies holding a large argument it read fails that
        // call alone; the next large call runs on its replacement.
        expect_worker_lost(
            pool.submit(die_holding, (payload(4 * SHM_AT, 1),))
                .unwrap()
                .result_timeout(T),
            "SIGKILL",
        );
        let v = payload(4 * SHM_AT, 2);
        assert!(pool.submit(echo, (v.clone(),)).unwrap().result_timeout(T) == Ok(v));
        drop(pool);
        assert_eq!(regions().0, 0, "{method:?}: {:?}", fd_listing());
        assert!(eventually(T, no_children), "{method:?}: a worker is left");
    }
}

#[test]
fn a_dependent_gets_a_lent_output_whole() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _dog = watchdog("a_dependent_gets", Duration::from_secs(120));
    for method in METHODS {
        let pool = pool(method, 2);
        let n = 3 * SHM_AT + 5;
        let a = pool.submit(make, (n, 4)).unwrap();
        let b = pool.call(sum_of).submit((a.arg(),)).unwrap();
        let want = payload(n, 4);
        let sum = want.iter().map(|&x| u64::from(x)).sum();
        assert_eq!(b.result_timeout(T), Ok((n, sum)), "{method:?}");
        assert!(a.result_timeout(T).unwrap() == want, "{method:?}");
        drop(pool);
    }
}

#[test]
fn a_worker_retired_after_one_call_still_delivers_its_lent_output() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _dog = watchdog("a_worker_retired", Duration::from_secs(120));
    for method in METHODS {
        // Each worker is told to leave right after its one call: it must
        // wait for the pool to read its output before it exits.
        let pool = fanout::ProcessPool::builder()
            .workers(2)
            .start_method(method)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        let fs: Vec<_> = (0..6u8)
            .map(|i| pool.submit(echo, (payload(3 * SHM_AT, i),)).unwrap())
            .collect();
        for (i, f) in fs.into_iter().enumerate() {
            assert!(
                f.result_timeout(T).unwrap() == payload(3 * SHM_AT, i as u8),
                "{method:?}: call {i}"
            );
        }
        drop(pool);
        assert!(eventually(T, no_children), "{method:?}: a worker is left");
    }
}

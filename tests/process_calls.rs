//! ProcessPool calls: arities, closures, serde payloads, map/map_with/starmap,
//! panics, initializers and worker recycling — each on both start methods.
//!
//! Capturing closures are rejected at compile time (a post-monomorphisation
//! assertion in `ship::trampoline_of`); that is checked by the `compile_fail`
//! doctest on `ProcessPool`, not here.

mod process_util;

use fanout::{Error, Executor, MapOptions, ProcessPool};
use process_util::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

fn a0() -> u32 {
    42
}
fn a1(a: u8) -> u32 {
    a as u32
}
fn a2(a: u8, b: u16) -> u32 {
    a as u32 + b as u32
}
fn a3(a: u8, b: u16, c: u32) -> u32 {
    a as u32 + b as u32 + c
}
fn a4(a: u8, b: u16, c: u32, d: u64) -> u64 {
    a as u64 + b as u64 + c as u64 + d
}
fn a5(a: u8, b: u16, c: u32, d: u64, e: i8) -> i64 {
    a as i64 + b as i64 + c as i64 + d as i64 + e as i64
}
fn a6(a: u8, b: u16, c: u32, d: u64, e: i8, f: String) -> String {
    format!("{a}-{b}-{c}-{d}-{e}-{f}")
}
fn a7(a: u8, b: u16, c: u32, d: u64, e: i8, f: String, g: bool) -> (String, bool) {
    (a6(a, b, c, d, e, f), !g)
}
#[allow(clippy::too_many_arguments)]
fn a8(a: u8, b: u16, c: u32, d: u64, e: i8, f: String, g: bool, h: Vec<u32>) -> Vec<String> {
    let head = a6(a, b, c, d, e, f);
    h.iter().map(|x| format!("{head}:{g}:{x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    name: String,
    xs: Vec<i64>,
    tag: Option<u8>,
    nested: HashMap<String, (u32, f64)>,
}

fn transform(p: Point, k: i64) -> Point {
    Point {
        name: p.name.to_uppercase(),
        xs: p.xs.iter().map(|x| x * k).collect(),
        tag: p.tag.map(|t| t + 1),
        nested: p.nested,
    }
}

fn rev_bytes(mut v: Vec<u8>) -> Vec<u8> {
    v.reverse();
    v
}

fn len_and_sum(label: String, v: Vec<u8>) -> (String, usize, u64) {
    (label, v.len(), v.iter().map(|&b| b as u64).sum())
}

fn checked_div(a: i32, b: i32) -> Result<i32, String> {
    if b == 0 {
        Err(format!("{a} / 0"))
    } else {
        Ok(a / b)
    }
}

fn fails_on_multiples_of_97(x: u64) -> u64 {
    if x.is_multiple_of(97) && x > 0 {
        panic!("item {x} is a multiple of 97");
    }
    x + 1
}

#[test]
fn all_arities_closures_and_payloads() {
    let _watchdog = watchdog(
        "all_arities_closures_and_payloads",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 2);
        let s = || "s".to_string();
        assert_eq!(pool.submit(a0, ()).unwrap().result_timeout(T), Ok(42));
        assert_eq!(pool.submit(a1, (1,)).unwrap().result_timeout(T), Ok(1));
        assert_eq!(pool.submit(a2, (1, 2)).unwrap().result_timeout(T), Ok(3));
        assert_eq!(pool.submit(a3, (1, 2, 3)).unwrap().result_timeout(T), Ok(6));
        assert_eq!(
            pool.submit(a4, (1, 2, 3, 4)).unwrap().result_timeout(T),
            Ok(10)
        );
        assert_eq!(
            pool.submit(a5, (1, 2, 3, 4, -20))
                .unwrap()
                .result_timeout(T),
            Ok(-10)
        );
        assert_eq!(
            pool.submit(a6, (1, 2, 3, 4, -5, s()))
                .unwrap()
                .result_timeout(T),
            Ok("1-2-3-4--5-s".to_string())
        );
        assert_eq!(
            pool.submit(a7, (1, 2, 3, 4, -5, s(), false))
                .unwrap()
                .result_timeout(T),
            Ok(("1-2-3-4--5-s".to_string(), true))
        );
        assert_eq!(
            pool.submit(a8, (1, 2, 3, 4, -5, s(), true, vec![7, 8]))
                .unwrap()
                .result_timeout(T),
            Ok(vec![
                "1-2-3-4--5-s:true:7".to_string(),
                "1-2-3-4--5-s:true:8".to_string()
            ])
        );

        // Non-capturing closures, including one with no arguments.
        assert_eq!(
            pool.submit(|x: u64, y: u64| x * y, (6, 7))
                .unwrap()
                .result_timeout(T),
            Ok(42)
        );
        assert_eq!(
            pool.submit(|| "hi".to_string(), ())
                .unwrap()
                .result_timeout(T),
            Ok("hi".to_string())
        );
        let (worker_pid, tag) = pool
            .submit(|| (std::process::id(), 'w'), ())
            .unwrap()
            .result_timeout(T)
            .unwrap();
        assert_eq!(tag, 'w');
        assert_ne!(worker_pid, std::process::id());
        assert!(pool.worker_pids().contains(&worker_pid));

        // Strings, vectors, structs, nested maps, Result outputs.
        let p = Point {
            name: "héllo wörld".into(),
            xs: vec![1, -2, i64::MAX / 4],
            tag: Some(7),
            nested: [("a".to_string(), (1, 0.5)), ("b".to_string(), (2, -1e300))].into(),
        };
        assert_eq!(
            pool.submit(transform, (p.clone(), 2))
                .unwrap()
                .result_timeout(T),
            Ok(transform(p, 2))
        );
        assert_eq!(
            pool.submit(checked_div, (7, 2)).unwrap().result_timeout(T),
            Ok(Ok(3))
        );
        assert_eq!(
            pool.submit(checked_div, (7, 0)).unwrap().result_timeout(T),
            Ok(Err("7 / 0".to_string()))
        );
        assert_eq!(
            pool.submit(a6, (0, 0, 0, 0, 0, String::new()))
                .unwrap()
                .result_timeout(T),
            Ok("0-0-0-0-0-".to_string())
        );

        // Byte vectors take a fast path: empty, small, and large (above the
        // size written from its own buffer), alone and next to other arguments.
        for n in [0usize, 1, 1000, 64 * 1024 - 1, 64 * 1024, 3 << 20] {
            let v: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            let mut r = v.clone();
            r.reverse();
            assert_eq!(
                pool.submit(rev_bytes, (v.clone(),))
                    .unwrap()
                    .result_timeout(T),
                Ok(r),
                "{method:?} n={n}"
            );
            let sum = v.iter().map(|&b| b as u64).sum();
            assert_eq!(
                pool.submit(len_and_sum, (format!("n{n}"), v))
                    .unwrap()
                    .result_timeout(T),
                Ok((format!("n{n}"), n, sum))
            );
        }
    }
}

#[test]
fn map_starmap_chunks_and_buffers() {
    let _watchdog = watchdog("map_starmap_chunks_and_buffers", Duration::from_secs(120));
    for method in METHODS {
        let pool = pool(method, 2);
        let got: Vec<u64> = pool
            .map(square, 0..300u64)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, (0..300u64).map(|x| x * x).collect::<Vec<_>>());

        // Chunks of 100: failures are reported per item, the rest succeed.
        let opts = MapOptions::default().chunksize(100).timeout(T);
        let out: Vec<_> = pool
            .map_with(fails_on_multiples_of_97, 0..1000u64, opts)
            .unwrap()
            .collect();
        assert_eq!(out.len(), 1000);
        for (x, r) in out.into_iter().enumerate() {
            let x = x as u64;
            if x.is_multiple_of(97) && x > 0 {
                match r {
                    Err(Error::Panicked {
                        message, worker, ..
                    }) => {
                        assert_eq!(message, format!("item {x} is a multiple of 97"));
                        assert!(worker.unwrap().starts_with("process worker pid "));
                    }
                    other => panic!("item {x}: expected Panicked, got {other:?}"),
                }
            } else {
                assert_eq!(r, Ok(x + 1), "item {x}");
            }
        }

        // Chunks that do not divide the input evenly, with a closure.
        let out: Vec<u64> = pool
            .map_with(
                |x: u64| x * 3,
                0..1001u64,
                MapOptions::default().chunksize(7),
            )
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(out, (0..1001u64).map(|x| x * 3).collect::<Vec<_>>());

        let sums: Vec<u64> = pool
            .starmap(add, vec![(1, 2), (3, 4), (5, 6)])
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(sums, [3, 7, 11]);
        let strs: Vec<String> = pool
            .starmap(a6, (0..5u8).map(|i| (i, 1, 2, 3, 4, "x".to_string())))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(strs[4], "4-1-2-3-4-x");

        // An infinite input with a buffer: pulled lazily, in order.
        let opts = MapOptions::default().buffersize(4).timeout(T);
        let first: Vec<u64> = pool
            .map_with(square, 0u64.., opts)
            .unwrap()
            .take(50)
            .map(Result::unwrap)
            .collect();
        assert_eq!(first, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
        let opts = MapOptions::default().buffersize(3).chunksize(5).timeout(T);
        let first: Vec<u64> = pool
            .map_with(square, 0u64.., opts)
            .unwrap()
            .take(40)
            .map(Result::unwrap)
            .collect();
        assert_eq!(first, (0..40u64).map(|x| x * x).collect::<Vec<_>>());

        // Empty input, and the invalid options.
        assert_eq!(pool.map(square, Vec::<u64>::new()).unwrap().count(), 0);
        assert!(matches!(
            pool.map_with(square, 0..3u64, MapOptions::default().chunksize(0)),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            pool.map_with(square, 0..3u64, MapOptions::default().buffersize(0)),
            Err(Error::InvalidArgument { .. })
        ));
    }
}

fn boom(msg: String) -> u32 {
    panic!("{msg}")
}

fn boom_non_string() -> u32 {
    std::panic::panic_any(17u8)
}

#[test]
fn panics_are_values_and_the_worker_survives() {
    let _watchdog = watchdog(
        "panics_are_values_and_the_worker_survives",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let [worker] = pool.worker_pids()[..] else {
            panic!("one worker")
        };
        let f = pool.submit(boom, ("kaput: ünïcode".to_string(),)).unwrap();
        match f.result_timeout(T) {
            Err(Error::Panicked {
                message,
                location,
                worker: who,
                backtrace,
            }) => {
                assert_eq!(message, "kaput: ünïcode");
                let location = location.expect("a location");
                assert!(
                    location.contains("process_calls.rs"),
                    "location {location:?} should name this file"
                );
                assert_eq!(who, Some(format!("process worker pid {worker}")));
                assert!(backtrace.is_some(), "{method:?}: a worker backtrace");
            }
            other => panic!("{method:?}: expected Panicked, got {other:?}"),
        }
        let e = pool.submit(boom_non_string, ()).unwrap().result_timeout(T);
        assert!(
            matches!(&e, Err(Error::Panicked { message, .. }) if message.contains("non-string")),
            "{e:?}"
        );
        // The same process serves the next calls.
        assert_eq!(pool.submit(pid, ()).unwrap().result_timeout(T), Ok(worker));
        assert_eq!(pool.worker_pids(), [worker]);
        // Display is one sentence naming the worker and the location.
        let e = pool
            .submit(boom, ("x".to_string(),))
            .unwrap()
            .result_timeout(T)
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "the task panicked on process worker pid {worker}: x (at "
            )),
            "{text}"
        );
    }
}

static INIT_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn init_env(value: String, extra: u32) {
    INIT_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    std::env::set_var("FANOUT_TEST_INIT", format!("{value}/{extra}"));
}

fn read_init() -> (Option<String>, usize, u32) {
    (
        std::env::var("FANOUT_TEST_INIT").ok(),
        INIT_RUNS.load(std::sync::atomic::Ordering::SeqCst),
        std::process::id(),
    )
}

fn init_panics(why: String) {
    panic!("init failed: {why}")
}

#[test]
fn initializer_runs_once_per_worker_before_tasks() {
    let _watchdog = watchdog(
        "initializer_runs_once_per_worker_before_tasks",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = ProcessPool::builder()
            .workers(2)
            .start_method(method)
            .max_tasks_per_child(5)
            .initializer(init_env, ("ready".to_string(), 9))
            .build()
            .unwrap();
        let fs: Vec<_> = (0..30)
            .map(|_| pool.submit(read_init, ()).unwrap())
            .collect();
        let mut pids = std::collections::HashSet::new();
        for f in fs {
            let (value, runs, pid) = f.result_timeout(T).unwrap();
            assert_eq!(value.as_deref(), Some("ready/9"), "{method:?}");
            assert_eq!(runs, 1, "{method:?}: the initializer ran once per worker");
            pids.insert(pid);
        }
        // Recycled workers (5 calls each) ran the initializer too.
        assert!(pids.len() >= 6, "{method:?}: {pids:?}");
        // Never in the pool's own process.
        assert_eq!(INIT_RUNS.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(std::env::var("FANOUT_TEST_INIT").is_err());
    }
}

#[test]
fn panicking_initializer_breaks_the_pool() {
    let _watchdog = watchdog(
        "panicking_initializer_breaks_the_pool",
        Duration::from_secs(120),
    );
    for method in METHODS {
        for workers in [1, 2] {
            let pool = ProcessPool::builder()
                .workers(workers)
                .start_method(method)
                .initializer(init_panics, ("no database".to_string(),))
                .build()
                .unwrap();
            // Submitted at once: some are handed to the worker before it
            // reports the failure, the rest wait in the queue. All must end
            // Broken, none may hang.
            let fs: Vec<_> = (0..12u64)
                .filter_map(|i| pool.submit(sleep_ms, (i,)).ok())
                .collect();
            for (i, f) in fs.into_iter().enumerate() {
                match f.result_timeout(Duration::from_secs(10)) {
                    Err(Error::Broken { reason }) => {
                        assert!(reason.contains("init failed: no database"), "{reason}")
                    }
                    other => panic!("{method:?}/{workers}: future {i}: {other:?}"),
                }
            }
            match pool.submit(sleep_ms, (1,)) {
                Err(Error::Broken { reason }) => {
                    assert!(reason.contains("init failed: no database"), "{reason}")
                }
                Ok(f) => panic!("{method:?}: submit after break gave {:?}", f.result()),
                Err(e) => panic!("{method:?}: submit after break gave {e:?}"),
            }
            assert!(matches!(
                pool.map(square, 0..3u64).map(|m| m.count()),
                Err(Error::Broken { .. })
            ));
            // A broken pool still shuts down without hanging.
            pool.shutdown(true, false);
        }
    }
}

fn init_aborts() {
    std::process::abort()
}

fn init_exits(code: i32) {
    std::process::exit(code)
}

/// Sees whether the pool respawns workers whose initializer kills them.
fn check_crashing_initializer(pool: ProcessPool, needle: &str) {
    let mut seen = std::collections::HashSet::new();
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_millis(300) {
        seen.extend(pool.worker_pids());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(seen.len() <= 2, "{} workers started in 300 ms", seen.len());
    let outcome = pool
        .submit(sleep_ms, (1,))
        .and_then(|f| f.result_timeout(Duration::from_secs(10)));
    match outcome {
        Err(Error::Broken { reason }) => {
            assert!(reason.contains("initializer"), "{reason}");
            assert!(reason.contains(needle), "{reason}");
        }
        other => panic!("expected Broken, got {other:?}"),
    }
    pool.shutdown(true, false);
}

#[test]
fn an_initializer_that_kills_its_worker_breaks_the_pool() {
    let _watchdog = watchdog(
        "an_initializer_that_kills_its_worker_breaks_the_pool",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = ProcessPool::builder()
            .workers(2)
            .start_method(method)
            .initializer(init_aborts, ())
            .build()
            .unwrap();
        check_crashing_initializer(pool, "SIGABRT");
        let pool = ProcessPool::builder()
            .workers(1)
            .start_method(method)
            .initializer(init_exits, (5,))
            .build()
            .unwrap();
        // Calls submitted before the worker dies are failed too.
        let early: Vec<_> = (0..5u64)
            .filter_map(|i| pool.submit(sleep_ms, (i,)).ok())
            .collect();
        for f in early {
            assert!(matches!(
                f.result_timeout(Duration::from_secs(10)),
                Err(Error::Broken { .. })
            ));
        }
        check_crashing_initializer(pool, "exited with code 5");
    }
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    let _watchdog = watchdog(
        "max_tasks_per_child_recycles_workers",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = ProcessPool::builder()
            .workers(1)
            .start_method(method)
            .max_tasks_per_child(2)
            .build()
            .unwrap();
        // One at a time: the pid changes every 2 calls.
        let pids: Vec<u32> = (0..8)
            .map(|_| pool.submit(pid, ()).unwrap().result_timeout(T).unwrap())
            .collect();
        for pair in pids.chunks(2) {
            assert_eq!(pair[0], pair[1], "{method:?}: {pids:?}");
        }
        for w in pids.windows(3).step_by(2) {
            assert_ne!(w[0], w[2], "{method:?}: {pids:?}");
        }
        let distinct: std::collections::HashSet<_> = pids.iter().collect();
        assert_eq!(distinct.len(), 4, "{method:?}: {pids:?}");

        // Many at once: all results right, no process serves more than 2.
        let fs: Vec<_> = (0..20u64)
            .map(|i| {
                pool.submit(|x: u64| (x * x, std::process::id()), (i,))
                    .unwrap()
            })
            .collect();
        let mut per_pid: HashMap<u32, usize> = HashMap::new();
        for (i, f) in fs.into_iter().enumerate() {
            let (sq, p) = f.result_timeout(T).unwrap();
            assert_eq!(sq, (i * i) as u64);
            *per_pid.entry(p).or_default() += 1;
        }
        assert!(per_pid.values().all(|&n| n <= 2), "{per_pid:?}");
        assert_eq!(per_pid.len(), 10, "{per_pid:?}");
        assert!(eventually(Duration::from_secs(5), || pool
            .worker_pids()
            .len()
            == 1));
    }
}

//! `Executor::map`, `map_with` and `starmap`, ported from CPython's
//! `executor.py` (`test_map`, `test_map_exception`, `test_map_timeout`,
//! `test_map_close`, `test_map_buffersize*`, `test_shutdown_race_issue12456`)
//! and `test_thread_pool.py` (`test_map_submits_without_iteration`,
//! `test_executor_map_current_future_cancel`).
//!
//! Map tasks are plain functions (a `Task` is `Copy`), so where a test needs
//! to hold a task it blocks on a named gate in a static registry.

use fanout::{Error, Executor, MapOptions, ThreadPool};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::GUARD;

static OPEN_GATES: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static GATE_CHANGED: Condvar = Condvar::new();

fn open_gate(key: u64) {
    OPEN_GATES.lock().unwrap().push(key);
    GATE_CHANGED.notify_all();
}

/// Blocks until `open_gate(key)` (or the guard time passes).
fn wait_gate(key: u64) {
    let gates = OPEN_GATES.lock().unwrap();
    let _ = GATE_CHANGED
        .wait_timeout_while(gates, GUARD, |g| !g.contains(&key))
        .unwrap();
}

/// Opens a gate when dropped, so a failing test never leaves a task blocked.
struct GateGuard(u64);
impl Drop for GateGuard {
    fn drop(&mut self) {
        open_gate(self.0);
    }
}

/// Returns `key` at once for 0; otherwise blocks on gate `key` first.
fn nap(key: u64) -> u64 {
    if key != 0 {
        wait_gate(key);
    }
    key
}

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn add3(a: u64, b: u64, c: u64) -> u64 {
    a + b + c
}

fn divide(a: u64, b: u64) -> u64 {
    a / b
}

fn five_over(d: u64) -> u64 {
    5 / d
}

/// Finishes out of input order: later items sleep less.
fn jitter(i: u64) -> u64 {
    thread::sleep(Duration::from_micros(100 * (10 - i % 10)));
    i
}

/// Works through the trait only, as user code generic over backends would.
fn squares_via_trait(ex: &impl Executor, n: u64) -> Vec<u64> {
    ex.map(square, 0..n).unwrap().map(Result::unwrap).collect()
}

// CPython: test_map
#[test]
fn map_yields_in_input_order() {
    let pool = ThreadPool::new(4).unwrap();
    let want: Vec<u64> = (0..200).map(|x| x * x).collect();
    assert_eq!(squares_via_trait(&pool, 200), want);

    let got: Vec<u64> = pool
        .map(jitter, 0..60)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..60).collect::<Vec<_>>());

    for chunksize in [1, 3, 7, 200, 500] {
        let got: Vec<u64> = pool
            .map_with(square, 0..200, MapOptions::default().chunksize(chunksize))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, want, "chunksize {chunksize}");
    }
}

// CPython: test_map_exception — a failed item yields its error and the
// iteration goes on; then the iterator ends for good.
#[test]
fn failed_item_yields_error_and_iteration_continues() {
    let pool = ThreadPool::new(2).unwrap();
    let mut it = pool
        .starmap(divide, [(5, 2), (5, 3), (5, 0), (5, 5)])
        .unwrap();
    assert_eq!(it.next(), Some(Ok(2)));
    assert_eq!(it.next(), Some(Ok(1)));
    match it.next() {
        Some(Err(Error::Panicked { message, .. })) => {
            assert!(message.contains("divide by zero"), "{message}")
        }
        other => panic!("expected the division's panic, got {other:?}"),
    }
    assert_eq!(it.next(), Some(Ok(1)));
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);

    for opts in [
        MapOptions::default().chunksize(3),
        MapOptions::default().buffersize(1),
        MapOptions::default().timeout(GUARD),
    ] {
        let got: Vec<_> = pool
            .map_with(five_over, [2, 0, 3, 5], opts)
            .unwrap()
            .collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], Ok(2));
        assert!(matches!(got[1], Err(Error::Panicked { .. })));
        assert_eq!(got[2..], [Ok(1), Ok(1)]);
    }
}

// CPython: test_map_timeout — two quick items, then one that outlives the
// deadline: Ok, Ok, one Timeout, then the iterator is exhausted.
#[test]
fn timeout_yields_one_error_then_ends() {
    const KEY: u64 = 101;
    let pool = ThreadPool::new(2).unwrap();
    // Declared after the pool so it opens the gate before the pool's drop
    // waits for the gated task.
    let _open = GateGuard(KEY);
    let start = Instant::now();
    let mut it = pool
        .map_with(
            nap,
            [0, 0, KEY, 0, 0],
            MapOptions::default().timeout(Duration::from_millis(100)),
        )
        .unwrap();
    assert_eq!(it.next(), Some(Ok(0)));
    assert_eq!(it.next(), Some(Ok(0)));
    assert!(matches!(it.next(), Some(Err(Error::Timeout { .. }))));
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
}

/// The deadline counts from the call to `map_with`, not from the first `next()`.
#[test]
fn timeout_clock_starts_at_the_map_call() {
    const KEY: u64 = 102;
    let pool = ThreadPool::new(2).unwrap();
    // Declared after the pool so it opens the gate before the pool's drop
    // waits for the gated task.
    let _open = GateGuard(KEY);
    let mut it = pool
        .map_with(
            nap,
            [0, KEY],
            MapOptions::default().timeout(Duration::from_millis(200)),
        )
        .unwrap();
    thread::sleep(Duration::from_millis(250));
    let t0 = Instant::now();
    // Done before the deadline passed: still yielded.
    assert_eq!(it.next(), Some(Ok(0)));
    assert!(matches!(it.next(), Some(Err(Error::Timeout { .. }))));
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_millis(150),
        "the timeout was counted from the first next() ({waited:?})"
    );
    assert_eq!(it.next(), None);
}

// CPython: test_executor_map_current_future_cancel — a zero timeout on a
// saturated pool: the item being waited for and the ones after it are
// cancelled and never run.
#[test]
fn timeout_cancels_unstarted_items() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    fn record(_: u64) -> u64 {
        RAN.fetch_add(1, Ordering::SeqCst);
        0
    }
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::hold(&pool);
    let mut it = pool
        .map_with(
            record,
            [1, 2, 3],
            MapOptions::default().timeout(Duration::ZERO),
        )
        .unwrap();
    assert!(matches!(it.next(), Some(Err(Error::Timeout { .. }))));
    assert_eq!(it.next(), None);
    release.send(()).unwrap();
    blocker.result_timeout(GUARD).unwrap();
    pool.shutdown(true, false);
    assert_eq!(RAN.load(Ordering::SeqCst), 0);
}

#[test]
fn timeout_not_reached_yields_everything() {
    let pool = ThreadPool::new(2).unwrap();
    let got: Vec<_> = pool
        .map_with(square, 0..50, MapOptions::default().timeout(GUARD))
        .unwrap()
        .collect();
    assert_eq!(got, (0..50).map(|x| Ok(x * x)).collect::<Vec<_>>());
}

// CPython: test_map_close — dropping the map cancels what has not started.
#[test]
fn dropping_the_map_cancels_unstarted_items() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    fn record(i: u64) -> u64 {
        RAN.fetch_add(1, Ordering::SeqCst);
        i
    }
    let pool = ThreadPool::new(1).unwrap();
    let (blocker, release) = common::hold(&pool);
    for opts in [
        MapOptions::default(),
        MapOptions::default().chunksize(4),
        MapOptions::default().buffersize(3),
    ] {
        let m = pool.map_with(record, 0..10, opts).unwrap();
        drop(m);
    }
    drop(pool.map(record, 0..10).unwrap());
    release.send(()).unwrap();
    blocker.result_timeout(GUARD).unwrap();
    pool.shutdown(true, false);
    assert_eq!(RAN.load(Ordering::SeqCst), 0, "cancelled items ran");
}

/// Dropped after consuming some: only the item that had already started may run.
#[test]
fn dropping_a_partly_consumed_map() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    const KEY: u64 = 103;
    fn step(i: u64) -> u64 {
        if i > 0 {
            wait_gate(KEY);
            RAN.fetch_add(1, Ordering::SeqCst);
        }
        i
    }
    let pool = ThreadPool::new(1).unwrap();
    let _open = GateGuard(KEY);
    let mut m = pool.map(step, 0..10).unwrap();
    assert_eq!(m.next(), Some(Ok(0)));
    drop(m);
    open_gate(KEY);
    pool.shutdown(true, false);
    assert!(
        RAN.load(Ordering::SeqCst) <= 1,
        "{}",
        RAN.load(Ordering::SeqCst)
    );
}

/// Lazy input: `buffersize = n` pulls at most n + 1 items ahead of the
/// consumer, whatever the chunk size.
#[test]
fn buffersize_pulls_input_lazily() {
    let pool = ThreadPool::new(2).unwrap();
    for n in [1usize, 2, 5] {
        for chunk in [1usize, 3, 8] {
            let pulled = Arc::new(AtomicUsize::new(0));
            let p = pulled.clone();
            let input = (0..40u64).inspect(move |_| {
                p.fetch_add(1, Ordering::SeqCst);
            });
            let opts = MapOptions::default().buffersize(n).chunksize(chunk);
            let it = pool.map_with(jitter, input, opts).unwrap();
            let before = pulled.load(Ordering::SeqCst);
            assert!(
                (1..=n + 1).contains(&before),
                "buffersize {n} chunksize {chunk}: pulled {before} before iterating"
            );
            let mut consumed = 0;
            for r in it {
                assert_eq!(r, Ok(consumed as u64));
                consumed += 1;
                let ahead = pulled.load(Ordering::SeqCst) - consumed;
                assert!(
                    ahead <= n + 1,
                    "buffersize {n} chunksize {chunk}: {ahead} in flight"
                );
            }
            assert_eq!(consumed, 40);
            assert_eq!(pulled.load(Ordering::SeqCst), 40);
        }
    }
}

// CPython: test_map_buffersize_when_buffer_is_full — without iterating, only
// the buffer's worth of input is fetched.
#[test]
fn buffersize_fetches_only_a_buffer_without_iteration() {
    let pool = ThreadPool::new(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let input = (0..100u64).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let m = pool
        .map_with(square, input, MapOptions::default().buffersize(2))
        .unwrap();
    pool.shutdown(true, false);
    let n = pulled.load(Ordering::SeqCst);
    assert!((1..=3).contains(&n), "fetched {n} of the input");
    drop(m);
}

// CPython: test_map_buffersize_on_infinite_iterable (and the multiple-iterables
// variant through starmap)
#[test]
fn buffersize_with_infinite_input() {
    let pool = ThreadPool::new(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let input = (0u64..).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let got: Vec<u64> = pool
        .map_with(square, input, MapOptions::default().buffersize(3))
        .unwrap()
        .take(5)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [0, 1, 4, 9, 16]);
    assert!(pulled.load(Ordering::SeqCst) <= 5 + 3 + 1);

    // `0..` as the contract spells it.
    let got: Vec<u64> = pool
        .map_with(square, 0.., MapOptions::default().buffersize(1))
        .unwrap()
        .take(3)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, [0, 1, 4]);
}

// CPython: test_map_buffersize (and its chunksize cross product in newer
// versions), test_map_buffersize_on_empty_iterable
#[test]
fn buffersize_and_chunksize_combinations_keep_order() {
    let pool = ThreadPool::new(3).unwrap();
    let want: Vec<u64> = (0..10).map(|x| x * x).collect();
    for bs in [1, 2, 9, 10, 11] {
        for cs in [1, 2, 9, 10, 11] {
            let got: Vec<u64> = pool
                .map_with(
                    square,
                    0..10,
                    MapOptions::default().buffersize(bs).chunksize(cs),
                )
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(got, want, "buffersize {bs} chunksize {cs}");
        }
        let mut empty = pool
            .map_with(
                square,
                Vec::<u64>::new(),
                MapOptions::default().buffersize(bs),
            )
            .unwrap();
        assert_eq!(empty.next(), None);
    }
}

// CPython: test_map_buffersize_value_validation, chunksize validation
#[test]
fn zero_chunksize_or_buffersize_is_invalid() {
    let pool = ThreadPool::new(1).unwrap();
    for opts in [
        MapOptions::default().chunksize(0),
        MapOptions::default().buffersize(0),
        MapOptions::default().chunksize(0).buffersize(4),
    ] {
        match pool.map_with(square, 0..4, opts.clone()) {
            Err(e @ Error::InvalidArgument { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("chunksize") || text.contains("buffersize"),
                    "{text}"
                );
            }
            Err(e) => panic!("{opts:?}: expected InvalidArgument, got {e}"),
            Ok(_) => panic!("{opts:?}: expected InvalidArgument, got a map"),
        }
    }
    // The default (an unset chunksize of 0) means one item per round trip.
    let got: Vec<_> = pool
        .map_with(square, 0..3, MapOptions::default())
        .unwrap()
        .collect();
    assert_eq!(got, [Ok(0), Ok(1), Ok(4)]);
}

#[test]
fn starmap_unpacks_argument_tuples() {
    let pool = ThreadPool::new(2).unwrap();
    let sums: Vec<_> = pool.starmap(add, [(1, 2), (3, 4)]).unwrap().collect();
    assert_eq!(sums, [Ok(3), Ok(7)]);
    let sums: Vec<u64> = pool
        .starmap(add3, (0..30).map(|i| (i, i, i)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sums, (0..30).map(|i| 3 * i).collect::<Vec<_>>());
    assert_eq!(pool.starmap(add, Vec::new()).unwrap().next(), None);
}

// CPython: test_map_submits_without_iteration (issue 11777)
#[test]
fn map_submits_everything_without_iteration() {
    static SEEN: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    fn record(i: u64) -> u64 {
        SEEN.lock().unwrap().push(i);
        i
    }
    let pool = ThreadPool::new(2).unwrap();
    let m = pool.map(record, 0..10).unwrap();
    pool.shutdown(true, false);
    let seen: HashSet<u64> = SEEN.lock().unwrap().iter().copied().collect();
    assert_eq!(seen, (0..10).collect());
    // The results are all there after shutdown.
    assert_eq!(m.map(Result::unwrap).sum::<u64>(), 45);
}

// CPython: test_shutdown_race_issue12456
#[test]
fn map_then_shutdown_does_not_hang() {
    let pool = ThreadPool::new(3).unwrap();
    let m = pool.map(square, vec![2; 4]).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        pool.shutdown(true, false);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(GUARD).expect("shutdown hung");
    assert_eq!(m.collect::<Vec<_>>(), vec![Ok(4); 4]);
}

#[test]
fn map_after_shutdown_fails() {
    let pool = ThreadPool::new(1).unwrap();
    pool.shutdown(true, false);
    assert!(matches!(pool.map(square, 0..3), Err(Error::Shutdown)));
    assert!(matches!(
        pool.map_with(square, 0..3, MapOptions::default().buffersize(2)),
        Err(Error::Shutdown)
    ));
    assert!(matches!(pool.starmap(add, [(1, 1)]), Err(Error::Shutdown)));
}

/// A lazy map whose pool shuts down midway yields what was submitted, then
/// one `Shutdown` error, then ends.
#[test]
fn lazy_map_reports_shutdown_midway() {
    let pool = ThreadPool::new(2).unwrap();
    let mut it = pool
        .map_with(square, 0..1000, MapOptions::default().buffersize(4))
        .unwrap();
    assert_eq!(it.next(), Some(Ok(0)));
    pool.shutdown(false, false);
    let mut oks = 1;
    let mut errors = Vec::new();
    for r in it.by_ref() {
        match r {
            Ok(v) => {
                assert!(errors.is_empty(), "a value after the error");
                assert_eq!(v, oks * oks);
                oks += 1;
            }
            Err(e) => errors.push(e),
        }
    }
    assert_eq!(errors, [Error::Shutdown]);
    assert!(oks <= 7, "{oks} items were submitted after shutdown");
    assert_eq!(it.next(), None);
}

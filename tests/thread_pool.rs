//! `ThreadPool`, ported from CPython's `test_thread_pool.py`
//! (`test_saturation`, `test_idle_thread_reuse`), `executor.py`
//! (`test_submit`, `test_max_workers_negative`, `test_no_stale_references`),
//! `test_init.py` (`test_initializer`, failing initializer) and
//! `test_shutdown.py` (`test_thread_names_assigned`).

use fanout::{Error, Executor, Future, ThreadPool};
use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

mod common;
use common::GUARD;

fn answer() -> u32 {
    42
}
fn square(x: u64) -> u64 {
    x * x
}
fn add(a: i32, b: i32) -> i32 {
    a + b
}
#[allow(clippy::too_many_arguments)]
fn eight(a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: i32, h: i64) -> i64 {
    [
        a as i64, b as i64, c as i64, d as i64, e as i64, f as i64, g as i64, h,
    ]
    .iter()
    .sum()
}
fn concat(a: String, b: Vec<u8>) -> String {
    format!("{a}{}", b.len())
}
fn my_thread() -> String {
    format!("{:?}", thread::current().id())
}

// CPython: test_submit (and arities 0 through 8 of the `Task` trait)
#[test]
fn submit_fn_items_of_every_arity() {
    let pool = ThreadPool::new(2).unwrap();
    assert_eq!(pool.submit(answer, ()).unwrap().result(), Ok(42));
    assert_eq!(pool.submit(square, (16,)).unwrap().result(), Ok(256));
    assert_eq!(pool.submit(add, (1, 2)).unwrap().result(), Ok(3));
    assert_eq!(
        pool.submit(eight, (1, 2, 3, 4, -5, 6, 7, 8))
            .unwrap()
            .result(),
        Ok(26)
    );
    assert_eq!(
        pool.submit(concat, ("n=".to_string(), vec![0; 5]))
            .unwrap()
            .result(),
        Ok("n=5".to_string())
    );
    // Non-capturing closures are tasks too.
    assert_eq!(pool.submit(|x: i32| x * 3, (5,)).unwrap().result(), Ok(15));
}

// CPython: test_max_workers_negative
#[test]
fn zero_workers_is_invalid() {
    for built in [ThreadPool::new(0), ThreadPool::builder().workers(0).build()] {
        match built {
            Err(e @ Error::InvalidArgument { .. }) => {
                assert!(e.to_string().contains('0'), "{e}")
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
    assert_eq!(ThreadPool::new(3).unwrap().workers(), 3);
}

/// Waits until `n` parties have arrived, or fails after the guard time.
struct Rendezvous {
    arrived: Mutex<usize>,
    cond: Condvar,
    n: usize,
}

impl Rendezvous {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Rendezvous {
            arrived: Mutex::new(0),
            cond: Condvar::new(),
            n,
        })
    }
    fn arrive_and_wait(&self, limit: Duration) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.cond.notify_all();
        let (arrived, _) = self
            .cond
            .wait_timeout_while(arrived, limit, |a| *a < self.n)
            .unwrap();
        *arrived >= self.n
    }
}

// CPython: test_saturation — exactly N threads run at once: N tasks can all
// be inside a rendezvous together, and N + 1 cannot.
#[test]
fn runs_exactly_n_tasks_at_once() {
    let pool = ThreadPool::new(4).unwrap();
    let all_four = Rendezvous::new(4);
    let fs: Vec<_> = (0..4)
        .map(|_| {
            let r = all_four.clone();
            pool.spawn(move || r.arrive_and_wait(GUARD)).unwrap()
        })
        .collect();
    for f in fs {
        assert_eq!(f.result(), Ok(true), "four tasks did not run at once");
    }

    // And never more: the most tasks ever inside at once, over many tasks.
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let fs: Vec<_> = (0..60)
        .map(|_| {
            let (inside, most) = (inside.clone(), most.clone());
            pool.spawn(move || {
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(1));
                inside.fetch_sub(1, Ordering::SeqCst);
            })
            .unwrap()
        })
        .collect();
    for f in fs {
        f.result().unwrap();
    }
    let most = most.load(Ordering::SeqCst);
    assert!((1..=4).contains(&most), "{most} tasks ran at once");
}

/// Never more than N distinct threads across many tasks, submitted from
/// several threads at once.
#[test]
fn never_more_than_n_threads() {
    let pool = Arc::new(ThreadPool::new(3).unwrap());
    let mut submitters = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        submitters.push(thread::spawn(move || {
            (0..500)
                .map(|_| pool.submit(my_thread, ()).unwrap())
                .collect::<Vec<Future<String>>>()
        }));
    }
    let mut ids = HashSet::new();
    for s in submitters {
        for f in s.join().unwrap() {
            ids.insert(f.result().unwrap());
        }
    }
    assert!(!ids.is_empty() && ids.len() <= 3, "{} threads", ids.len());
    assert!(!ids.contains(&format!("{:?}", thread::current().id())));
}

// CPython: test_idle_thread_reuse — sequential calls reuse the pool's threads.
#[test]
fn sequential_calls_reuse_workers() {
    let pool = ThreadPool::new(2).unwrap();
    let ids: HashSet<ThreadId> = (0..50)
        .map(|_| {
            pool.spawn(|| thread::current().id())
                .unwrap()
                .result()
                .unwrap()
        })
        .collect();
    assert!(ids.len() <= 2);
}

// CPython: test_init.py test_initializer — runs on every worker before any
// task there.
#[test]
fn initializer_runs_before_any_task_on_each_thread() {
    thread_local! { static READY: Cell<bool> = const { Cell::new(false) }; }
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let pool = ThreadPool::builder()
        .workers(3)
        .initializer(|| {
            // Slow, so that tasks queue up while workers are starting.
            thread::sleep(Duration::from_millis(10));
            READY.with(|r| r.set(true));
            CALLS.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let fs: Vec<_> = (0..200)
        .map(|_| pool.spawn(|| READY.with(Cell::get)).unwrap())
        .collect();
    for f in fs {
        assert_eq!(f.result(), Ok(true), "a task ran before the initializer");
    }
    pool.shutdown(true, false);
    assert_eq!(CALLS.load(Ordering::SeqCst), 3, "once per worker thread");
}

// CPython: test_init.py FailingInitializerMixin.test_initializer — queued
// futures and every later submit get Broken.
#[test]
fn panicking_initializer_breaks_the_pool() {
    let pool = ThreadPool::builder()
        .workers(2)
        .initializer(|| {
            thread::sleep(Duration::from_millis(20)); // let some calls queue
            panic!("error in initializer")
        })
        .build()
        .unwrap();
    let queued: Vec<_> = (0..5).map(|_| pool.submit(answer, ())).collect();
    for q in queued {
        match q.and_then(|f| f.result_timeout(GUARD)) {
            Err(Error::Broken { reason }) => {
                assert!(reason.contains("error in initializer"), "{reason}")
            }
            other => panic!("expected Broken, got {other:?}"),
        }
    }
    // From now on every submit fails at once.
    let deadline = Instant::now() + GUARD;
    loop {
        match pool.submit(answer, ()) {
            Err(Error::Broken { .. }) => break,
            Ok(f) => assert!(matches!(f.result_timeout(GUARD), Err(Error::Broken { .. }))),
            Err(e) => panic!("expected Broken, got {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the pool never reported itself broken"
        );
    }
    assert!(matches!(pool.spawn(|| 1), Err(Error::Broken { .. })));
    assert!(matches!(pool.map(square, 0..3), Err(Error::Broken { .. })));
    // Shutting a broken pool down does not hang.
    pool.shutdown(true, false);
}

#[test]
fn spawn_runs_capturing_closures_without_serde() {
    let pool = ThreadPool::new(2).unwrap();
    // A moved Vec, grown before it is moved.
    let mut data = Vec::new();
    data.extend([1, 2, 3, 4]);
    assert_eq!(
        pool.spawn(move || data.into_iter().sum::<i32>())
            .unwrap()
            .result(),
        Ok(10)
    );
    // Shared state.
    let total = Arc::new(Mutex::new(0));
    let fs: Vec<_> = (1..=10)
        .map(|i| {
            let total = total.clone();
            pool.spawn(move || *total.lock().unwrap() += i).unwrap()
        })
        .collect();
    for f in fs {
        f.result().unwrap();
    }
    assert_eq!(*total.lock().unwrap(), 55);
    // A result type with no serde at all: a boxed closure.
    let f = pool
        .spawn(|| Box::new(|x: i32| x + 1) as Box<dyn Fn(i32) -> i32 + Send>)
        .unwrap();
    assert_eq!((f.result().unwrap())(41), 42);
    // A channel moved in.
    let (tx, rx) = mpsc::channel();
    pool.spawn(move || tx.send("hello").unwrap()).unwrap();
    assert_eq!(rx.recv_timeout(GUARD), Ok("hello"));
}

/// A panicking task gives `Panicked` with its message and its location in
/// this file; the worker survives, and the pool keeps its N threads.
#[test]
fn panicking_task_yields_panicked_and_worker_survives() {
    let pool = ThreadPool::new(2).unwrap();
    let code = 42;
    let f = pool
        .spawn(move || -> u32 { panic!("boom {code}") })
        .unwrap();
    match f.result() {
        Err(e @ Error::Panicked { .. }) => {
            let text = e.to_string();
            let Error::Panicked {
                message, location, ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(message, "boom 42");
            let location = location.expect("a location");
            assert!(location.contains("thread_pool.rs"), "{location}");
            assert!(text.contains("boom 42"), "{text}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }

    // A non-string payload still gives a message.
    let f = pool.spawn(|| std::panic::panic_any(17u8)).unwrap();
    assert!(matches!(f.result(), Err(Error::Panicked { message, .. }) if !message.is_empty()));

    // Many panics, then ordinary work on the same threads.
    let panics: Vec<_> = (0..50)
        .map(|i| pool.spawn(move || -> u32 { panic!("panic #{i}") }).unwrap())
        .collect();
    for (i, p) in panics.into_iter().enumerate() {
        match p.result() {
            Err(Error::Panicked { message, .. }) => assert_eq!(message, format!("panic #{i}")),
            other => panic!("{other:?}"),
        }
    }
    let ids: HashSet<String> = (0..200)
        .map(|_| pool.submit(my_thread, ()).unwrap())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|f| f.result().unwrap())
        .collect();
    assert!(ids.len() <= 2, "{} threads after panics", ids.len());
    assert_eq!(pool.submit(square, (9,)).unwrap().result(), Ok(81));
}

// CPython: test_thread_names_assigned
#[test]
fn thread_name_prefix_names_every_worker() {
    let pool = ThreadPool::builder()
        .workers(3)
        .thread_name("SpecialPool")
        .build()
        .unwrap();
    let rendezvous = Rendezvous::new(3);
    let names: HashSet<String> = (0..3)
        .map(|_| {
            let r = rendezvous.clone();
            pool.spawn(move || {
                // All three at once, so each name comes from a different thread.
                assert!(r.arrive_and_wait(GUARD));
                thread::current().name().unwrap_or("").to_string()
            })
            .unwrap()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|f| f.result().unwrap())
        .collect();
    let want: HashSet<String> = (0..3).map(|i| format!("SpecialPool-{i}")).collect();
    assert_eq!(names, want);
}

// CPython: test_no_stale_references — the pool does not keep a finished (or
// discarded) call's captures alive.
#[test]
fn no_stale_references_to_captures() {
    let pool = ThreadPool::new(1).unwrap();
    let object = Arc::new(());
    let weak = Arc::downgrade(&object);
    let (tx, rx) = mpsc::channel();
    drop(
        pool.spawn(move || {
            let _keep = object;
            tx.send(()).unwrap();
        })
        .unwrap(),
    );
    rx.recv_timeout(GUARD).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while weak.upgrade().is_some() {
        assert!(Instant::now() < deadline, "the pool kept the capture alive");
        thread::sleep(Duration::from_millis(1));
    }

    // The result of a finished call is owned by its future alone.
    let payload = Arc::new(7);
    let weak = Arc::downgrade(&payload);
    let f = pool.spawn(move || payload).unwrap();
    let value = f.result().unwrap();
    drop(value);
    assert!(weak.upgrade().is_none());
}

#[test]
fn pool_is_send_and_sync_and_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ThreadPool>();
    let pool = Arc::new(ThreadPool::new(2).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let pool = pool.clone();
            thread::spawn(move || {
                let fs: Vec<_> = (0..100)
                    .map(|i| pool.submit(square, (t * 100 + i,)).unwrap())
                    .collect();
                fs.into_iter().map(|f| f.result().unwrap()).sum::<u64>()
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, (0..400u64).map(|x| x * x).sum());
}

/// Captured state whose destructor panics.
struct PanicOnDrop(Arc<AtomicUsize>);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a destructor panicked");
    }
}

/// A cancelled call is dropped without running; a panic in its captures'
/// destructor neither kills the worker (the pool keeps serving) nor escapes
/// from `shutdown(cancel_futures)` before every queued call is cancelled.
#[test]
fn panicking_drop_of_an_unrun_call_is_contained() {
    let pool = ThreadPool::new(1).unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let hold = common::hold;

    // Cancelled with cancel(): dropped later by the worker.
    let (blocker, release) = hold(&pool);
    let p = PanicOnDrop(drops.clone());
    let f = pool.spawn(move || drop(p)).unwrap();
    assert!(f.cancel());
    release.send(()).unwrap();
    blocker.result_timeout(GUARD).unwrap();
    assert_eq!(
        pool.spawn(|| 2)
            .unwrap()
            .result_timeout(Duration::from_secs(5)),
        Ok(2),
        "the worker died dropping a cancelled call"
    );
    assert_eq!(drops.load(Ordering::SeqCst), 1);

    // Cancelled by shutdown: dropped on the caller's thread.
    let (blocker, release) = hold(&pool);
    let fs: Vec<_> = (0..3)
        .map(|_| {
            let p = PanicOnDrop(drops.clone());
            pool.spawn(move || drop(p)).unwrap()
        })
        .collect();
    pool.shutdown(false, true);
    assert!(fs.iter().all(Future::cancelled));
    assert_eq!(drops.load(Ordering::SeqCst), 4);
    release.send(()).unwrap();
    blocker.result_timeout(GUARD).unwrap();
}

/// A result whose future was dropped before the call finished is dropped by
/// the worker; a panic in its destructor does not kill the worker.
#[test]
fn panicking_drop_of_an_orphaned_result_is_contained() {
    let pool = ThreadPool::new(1).unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let d = drops.clone();
        let f = pool
            .spawn(move || {
                let _ = go_rx.recv_timeout(GUARD);
                PanicOnDrop(d)
            })
            .unwrap();
        drop(f); // the worker now holds the only reference
        go_tx.send(()).unwrap();
    }
    assert_eq!(
        pool.spawn(|| 2)
            .unwrap()
            .result_timeout(Duration::from_secs(5)),
        Ok(2),
        "the worker died dropping an orphaned result"
    );
    pool.shutdown(true, false);
    assert_eq!(drops.load(Ordering::SeqCst), 3);
}

//! Done-callbacks that call back into fanout: `result()` on the future
//! inside its own callback returns the outcome; a process-pool callback that
//! blocks on another future of the same pool does not deadlock (callbacks of
//! process-pool futures run on a callback thread, never on the thread that
//! delivers results); submitting from a callback works; a panicking
//! callback stays contained. Thread pool and process pool (both start
//! methods).

mod process_util;

use fanout::{Error, Executor, Future, ProcessPool, ThreadPool};
use process_util::{pool, square, watchdog, METHODS, T};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Waits (up to 20 s) until `path` exists, then returns `x * x`: a call that
/// cannot finish before the test has set up its callback.
fn gated_square(path: String, x: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(20);
    while !std::path::Path::new(&path).exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
    x * x
}

fn gated_panic(path: String) -> u64 {
    gated_square(path, 0);
    panic!("gated panic")
}

/// A file that does not exist until `open`; its directory goes with it.
struct Gate {
    _dir: tempfile::TempDir,
    path: String,
}

fn gate() -> Gate {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open").display().to_string();
    Gate { _dir: dir, path }
}

impl Gate {
    fn path(&self) -> String {
        self.path.clone()
    }
    fn open(&self) {
        std::fs::write(&self.path, b"").unwrap();
    }
}

type Slot<T> = Arc<Mutex<Option<Future<T>>>>;

/// Registers a callback on `f` that calls `result_timeout` on `f` itself,
/// and reports what it got.
fn result_in_own_callback<T: Send + 'static>(
    f: Future<T>,
) -> mpsc::Receiver<Option<fanout::Result<T>>> {
    let slot: Slot<T> = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let s = slot.clone();
    f.add_done_callback(move |_outcome| {
        let me = s.lock().unwrap().take();
        tx.send(me.map(|f| f.result_timeout(T))).unwrap();
    });
    *slot.lock().unwrap() = Some(f);
    rx
}

#[test]
fn thread_pool_result_inside_its_own_callback() {
    let pool = ThreadPool::new(1).unwrap();
    let g = gate();
    let rx = result_in_own_callback(pool.submit(gated_square, (g.path(), 7)).unwrap());
    let rx_err = result_in_own_callback(pool.submit(gated_panic, (g.path(),)).unwrap());
    let rx_spawn = result_in_own_callback(pool.spawn(move || 5u8).unwrap());
    g.open();
    assert_eq!(rx.recv_timeout(T).unwrap(), Some(Ok(49)));
    let e = rx_err.recv_timeout(T).unwrap().unwrap();
    assert!(
        matches!(&e, Err(Error::Panicked { message, .. }) if message == "gated panic"),
        "{e:?}"
    );
    // A `spawn` result need not be serializable, so it cannot be copied:
    // a clear error at once, never a deadlock (or the value, if the call
    // finished before the callback was registered: then the callback ran here).
    match rx_spawn.recv_timeout(T).unwrap() {
        Some(Err(Error::InvalidArgument { .. })) | Some(Ok(5)) => {}
        other => panic!("{other:?}"),
    }
    // The worker is not stuck.
    assert_eq!(pool.spawn(|| 1).unwrap().result_timeout(T), Ok(1));
    // A callback added after the future is done runs on this thread; the same holds.
    let f = pool.submit(square, (9,)).unwrap();
    f.wait(Some(T));
    let rx = result_in_own_callback(f);
    assert_eq!(
        rx.recv_timeout(T).unwrap(),
        None,
        "ran before the slot was filled"
    );
}

#[test]
fn thread_pool_callbacks_submit_and_panics_are_contained() {
    let pool = Arc::new(ThreadPool::new(1).unwrap());
    let g = gate();
    let f = pool.submit(gated_square, (g.path(), 2)).unwrap();
    let (tx, rx) = mpsc::channel();
    let p = pool.clone();
    f.add_done_callback(|_| panic!("a callback panics"));
    f.add_done_callback(move |r| {
        let next = p.submit(square, (*r.as_ref().unwrap(),)).unwrap();
        tx.send(next).unwrap();
    });
    g.open();
    let next = rx.recv_timeout(T).unwrap();
    assert_eq!(next.result_timeout(T), Ok(16));
    assert_eq!(f.result_timeout(T), Ok(4));
    assert_eq!(pool.spawn(|| 3).unwrap().result_timeout(T), Ok(3));
}

#[test]
fn process_pool_result_inside_its_own_callback() {
    let _w = watchdog(
        "process_pool_result_inside_its_own_callback",
        Duration::from_secs(150),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let g = gate();
        let rx = result_in_own_callback(pool.submit(gated_square, (g.path(), 6)).unwrap());
        let rx_err = result_in_own_callback(pool.submit(gated_panic, (g.path(),)).unwrap());
        g.open();
        assert_eq!(rx.recv_timeout(T).unwrap(), Some(Ok(36)), "{method:?}");
        let e = rx_err.recv_timeout(T).unwrap().unwrap();
        assert!(
            matches!(&e, Err(Error::Panicked { .. })),
            "{method:?}: {e:?}"
        );
        // The slot's delivery is not stuck.
        assert_eq!(pool.submit(square, (3,)).unwrap().result_timeout(T), Ok(9));
    }
}

/// A callback on `f` that blocks on a new call of `pool` (which has a
/// callback of its own doing the same, `depth` levels down); reports the
/// innermost result.
fn chain(
    pool: &Arc<ProcessPool>,
    f: &Future<u64>,
    depth: u32,
    tx: mpsc::Sender<fanout::Result<u64>>,
) {
    let p = pool.clone();
    f.add_done_callback(move |r| {
        let x = *r.as_ref().unwrap();
        let next = p.submit(square, (x + 1,)).unwrap();
        if depth > 0 {
            chain(&p, &next, depth - 1, tx.clone());
        }
        // Blocks this callback thread until the next result is delivered.
        let got = next.result_timeout(T);
        if depth == 0 {
            tx.send(got).unwrap();
        }
    });
}

#[test]
fn process_pool_callback_blocking_on_the_same_pool_does_not_deadlock() {
    let _w = watchdog(
        "process_pool_callback_blocking_on_the_same_pool_does_not_deadlock",
        Duration::from_secs(150),
    );
    for method in METHODS {
        let pool = Arc::new(pool(method, 1));
        // One level: submit(..)?.result() inside a callback.
        let (tx, rx) = mpsc::channel();
        let p = pool.clone();
        let f = pool.submit(square, (4,)).unwrap();
        f.add_done_callback(move |_| {
            tx.send(p.submit(square, (5,)).and_then(|g| g.result_timeout(T)))
                .unwrap();
        });
        assert_eq!(rx.recv_timeout(T).unwrap(), Ok(25), "{method:?}");
        // Three levels, each callback blocked on a future whose own callback
        // blocks on the next: every level needs a callback thread of its own.
        let (tx, rx) = mpsc::channel();
        let f = pool.submit(square, (1,)).unwrap();
        chain(&pool, &f, 2, tx);
        // 1 → square(2) = 4 → square(5) = 25 → square(26) = 676
        assert_eq!(rx.recv_timeout(T).unwrap(), Ok(676), "{method:?}");
        assert_eq!(f.result_timeout(T), Ok(1));
        // Many at once.
        let (tx, rx) = mpsc::channel();
        let fs: Vec<_> = (0..8u64)
            .map(|i| pool.submit(square, (i,)).unwrap())
            .collect();
        for f in &fs {
            let (p, tx) = (pool.clone(), tx.clone());
            f.add_done_callback(move |r| {
                let x = *r.as_ref().unwrap();
                tx.send(p.submit(square, (x,)).and_then(|g| g.result_timeout(T)))
                    .unwrap();
            });
        }
        let mut got: Vec<u64> = (0..8)
            .map(|_| rx.recv_timeout(T).unwrap().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (0..8u64).map(|i| i.pow(4)).collect::<Vec<_>>());
    }
}

#[test]
fn process_pool_callbacks_submit_and_panics_are_contained() {
    let _w = watchdog(
        "process_pool_callbacks_submit_and_panics_are_contained",
        Duration::from_secs(150),
    );
    for method in METHODS {
        let pool = Arc::new(pool(method, 1));
        let before = pool.worker_pids();
        let f = pool.submit(square, (3,)).unwrap();
        let (tx, rx) = mpsc::channel();
        let p = pool.clone();
        f.add_done_callback(|_| panic!("a callback panics"));
        f.add_done_callback(move |r| {
            tx.send(p.submit(square, (*r.as_ref().unwrap(),)).unwrap())
                .unwrap();
        });
        let next = rx.recv_timeout(T).unwrap();
        assert_eq!(next.result_timeout(T), Ok(81), "{method:?}");
        assert_eq!(f.result_timeout(T), Ok(9));
        assert_eq!(pool.submit(square, (2,)).unwrap().result_timeout(T), Ok(4));
        assert_eq!(pool.worker_pids(), before);
    }
}

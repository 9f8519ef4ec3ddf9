//! A panic payload whose own `Drop` panics (`std::panic::panic_any(Bomb)`)
//! resolves the future to `Panicked`, and the worker survives — on the
//! thread pool and in process workers of both start methods.

mod process_util;

use fanout::{Error, Executor, ThreadPool};
use process_util::{pool, watchdog, METHODS, T};
use std::time::Duration;

/// A payload that panics when dropped.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the bomb went off while its panic was being caught");
    }
}

/// A payload whose drop panics with another payload of the same kind.
struct Chain(u32);

impl Drop for Chain {
    fn drop(&mut self) {
        if self.0 > 0 {
            std::panic::panic_any(Chain(self.0 - 1));
        }
    }
}

fn throw_bomb() -> u32 {
    std::panic::panic_any(Bomb)
}

fn throw_chain() -> u32 {
    std::panic::panic_any(Chain(5))
}

fn one() -> u32 {
    1
}

fn expect_panicked(r: fanout::Result<u32>, what: &str) {
    assert!(
        matches!(&r, Err(Error::Panicked { message, .. }) if message.contains("non-string")),
        "{what}: expected Panicked, got {r:?}"
    );
}

#[test]
fn thread_pool_worker_survives_a_payload_whose_drop_panics() {
    let pool = ThreadPool::new(1).unwrap();
    for round in 0..3 {
        let f = pool.spawn(throw_bomb).unwrap();
        expect_panicked(f.result_timeout(T), "spawn(Bomb)");
        let f = pool.submit(throw_chain, ()).unwrap();
        expect_panicked(f.result_timeout(T), "submit(Chain)");
        // The one worker is still there to serve the next call.
        assert_eq!(
            pool.spawn(one).unwrap().result_timeout(T),
            Ok(1),
            "round {round}"
        );
    }
    let f = pool.spawn(throw_bomb).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    f.add_done_callback(move |r| tx.send(r.is_err()).unwrap());
    assert_eq!(rx.recv_timeout(T), Ok(true));
}

#[test]
fn process_worker_survives_a_payload_whose_drop_panics() {
    let _w = watchdog(
        "process_worker_survives_a_payload_whose_drop_panics",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let before = pool.worker_pids();
        expect_panicked(
            pool.submit(throw_bomb, ()).unwrap().result_timeout(T),
            &format!("{method:?} Bomb"),
        );
        expect_panicked(
            pool.submit(throw_chain, ()).unwrap().result_timeout(T),
            &format!("{method:?} Chain"),
        );
        assert_eq!(pool.submit(one, ()).unwrap().result_timeout(T), Ok(1));
        assert_eq!(
            pool.worker_pids(),
            before,
            "{method:?}: the worker survived"
        );
    }
}

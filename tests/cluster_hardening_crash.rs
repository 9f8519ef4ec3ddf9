//! The crash matrix on the Cluster (loky's `TestExecutorDeadLock` in Rust
//! types): an argument or result that misbehaves at each of the four stages
//! of a call — the caller serializes the arguments, the worker deserializes
//! them, the worker serializes the result, the caller deserializes the
//! result — in each way that can be survived there. Worker-side stages try
//! all five ways (serde error, panic, `abort()`, `_exit(0)`, SIGSEGV);
//! caller-side stages only the serde error and the panic, because abort,
//! exit or a segfault in the caller kills this test process itself. After
//! every case the cluster serves the next call.

mod cluster_support;

use cluster_support::Redis;
use fanout::{Cluster, Error, Executor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

const CALLER_SERIALIZES_ARGS: u8 = 1;
const WORKER_DESERIALIZES_ARGS: u8 = 2;
const WORKER_SERIALIZES_RESULT: u8 = 3;
const CALLER_DESERIALIZES_RESULT: u8 = 4;

const ERROR: u8 = 0;
const PANIC: u8 = 1;
const ABORT: u8 = 2;
const EXIT0: u8 = 3;
const SEGV: u8 = 4;

/// A value whose serde impl misbehaves in way `WAY` at stage `STAGE`.
/// (Each stage uses only one direction of one type: arguments are
/// serialized by the caller and deserialized by the worker, results the
/// other way round; so "serialize at stage 1" only ever runs in the caller.)
#[derive(Debug)]
struct Bad<const STAGE: u8, const WAY: u8>(u32);

fn misbehave<E>(way: u8, make_error: impl FnOnce() -> E) -> Result<(), E> {
    match way {
        ERROR => Err(make_error()),
        PANIC => panic!("serde impl panicked on purpose"),
        ABORT => std::process::abort(),
        EXIT0 => {
            // SAFETY: ends this (worker) process at once, as the test intends.
            unsafe { libc::_exit(0) }
        }
        SEGV => {
            // SAFETY: raising a signal on ourselves; the worker dies of it.
            unsafe { libc::raise(libc::SIGSEGV) };
            Ok(())
        }
        _ => Ok(()),
    }
}

impl<const STAGE: u8, const WAY: u8> Serialize for Bad<STAGE, WAY> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if STAGE == CALLER_SERIALIZES_ARGS || STAGE == WORKER_SERIALIZES_RESULT {
            misbehave(WAY, || {
                serde::ser::Error::custom("this Serialize impl fails on purpose")
            })?;
        }
        s.serialize_u32(self.0)
    }
}

impl<'de, const STAGE: u8, const WAY: u8> Deserialize<'de> for Bad<STAGE, WAY> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if STAGE == WORKER_DESERIALIZES_ARGS || STAGE == CALLER_DESERIALIZES_RESULT {
            misbehave(WAY, || {
                serde::de::Error::custom("this Deserialize impl fails on purpose")
            })?;
        }
        Ok(Bad(u32::deserialize(d)?))
    }
}

/// Takes a misbehaving argument.
fn take<const STAGE: u8, const WAY: u8>(b: Bad<STAGE, WAY>) -> u32 {
    b.0 + 1
}

/// Returns a misbehaving result.
fn make<const STAGE: u8, const WAY: u8>(x: u32) -> Bad<STAGE, WAY> {
    Bad(x)
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

const WAIT: Duration = Duration::from_secs(60);

fn cluster(redis: &Redis, namespace: &str) -> Cluster {
    Cluster::builder(&redis.url())
        .namespace(namespace)
        .local_workers(1)
        .lease(Duration::from_millis(500))
        .max_deliveries(2)
        .build()
        .unwrap()
}

/// Submits and waits, asserting that nothing unwinds into the caller.
fn outcome<R: Send + 'static>(what: &str, f: impl FnOnce() -> fanout::Result<R>) -> Error {
    let t = Instant::now();
    let out = catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| panic!("{what}: a panic escaped into the caller"));
    assert!(t.elapsed() < WAIT, "{what}: took {:?}", t.elapsed());
    match out {
        Ok(_) => panic!("{what}: the call succeeded"),
        Err(e) => e,
    }
}

fn still_serves(c: &Cluster, what: &str) {
    assert_eq!(
        c.submit(add, (20, 22)).unwrap().result_timeout(WAIT),
        Ok(42),
        "after {what}"
    );
}

fn expect(what: &str, way: u8, e: Error) {
    match (way, &e) {
        (ERROR, Error::Codec { type_name, .. }) => {
            assert!(type_name.contains("Bad<"), "{what}: {e}")
        }
        (PANIC, Error::Codec { .. } | Error::Panicked { .. }) => {}
        (ABORT | EXIT0 | SEGV, Error::WorkerLost { status, .. }) => {
            assert!(status.contains("2 times"), "{what}: {e}");
            let how = match way {
                ABORT => "SIGABRT",
                EXIT0 => "exited with code 0",
                _ => "SIGSEGV",
            };
            assert!(status.contains(how), "{what}: expected {how} in {e}");
        }
        _ => panic!("{what}: unexpected {e:?}"),
    }
}

#[test]
fn caller_serializing_the_arguments() {
    let redis = Redis::start();
    let c = cluster(&redis, "crash1");
    let e = outcome("serde error", || {
        c.submit(take::<CALLER_SERIALIZES_ARGS, ERROR>, (Bad(1),))?
            .result_timeout(WAIT)
    });
    expect("caller ser error", ERROR, e);
    still_serves(&c, "caller ser error");
    let e = outcome("panic", || {
        c.submit(take::<CALLER_SERIALIZES_ARGS, PANIC>, (Bad(1),))?
            .result_timeout(WAIT)
    });
    expect("caller ser panic", PANIC, e);
    still_serves(&c, "caller ser panic");
    // A batch (map) with a panicking Serialize fails from map, not by unwinding.
    let e = outcome("panic in map", || {
        c.map(
            take::<CALLER_SERIALIZES_ARGS, PANIC>,
            (0..3).map(Bad::<CALLER_SERIALIZES_ARGS, PANIC>),
        )?
        .collect::<fanout::Result<Vec<u32>>>()
    });
    expect("caller ser panic in map", PANIC, e);
    still_serves(&c, "caller ser panic in map");
}

#[test]
fn caller_deserializing_the_result() {
    let redis = Redis::start();
    let c = cluster(&redis, "crash4");
    let e = outcome("serde error", || {
        c.submit(make::<CALLER_DESERIALIZES_RESULT, ERROR>, (1,))?
            .result_timeout(WAIT)
    });
    expect("caller de error", ERROR, e);
    still_serves(&c, "caller de error");
    let e = outcome("panic", || {
        c.submit(make::<CALLER_DESERIALIZES_RESULT, PANIC>, (1,))?
            .result_timeout(WAIT)
    });
    expect("caller de panic", PANIC, e);
    still_serves(&c, "caller de panic");
    // Many at once: every one resolves, none takes the event loop down.
    let fs: Vec<_> = (0..20)
        .map(|i| {
            c.submit(make::<CALLER_DESERIALIZES_RESULT, PANIC>, (i,))
                .unwrap()
        })
        .collect();
    for f in fs {
        expect(
            "caller de panic, many",
            PANIC,
            f.result_timeout(WAIT).unwrap_err(),
        );
    }
    still_serves(&c, "caller de panic, many");
}

macro_rules! worker_stage {
    ($c:expr, $task:ident, $stage:expr, $arg:expr) => {{
        let c = $c;
        macro_rules! case {
            ($way:expr, $name:expr) => {{
                let what = format!("stage {} {}", $stage, $name);
                let e = outcome(&what, || {
                    c.submit($task::<{ $stage }, { $way }>, ($arg,))?
                        .result_timeout(WAIT)
                });
                expect(&what, $way, e);
                still_serves(c, &what);
            }};
        }
        case!(ERROR, "serde error");
        case!(PANIC, "panic");
        case!(ABORT, "abort");
        case!(EXIT0, "_exit(0)");
        case!(SEGV, "SIGSEGV");
    }};
}

#[test]
fn worker_deserializing_the_arguments() {
    let redis = Redis::start();
    let c = cluster(&redis, "crash2");
    worker_stage!(&c, take, WORKER_DESERIALIZES_ARGS, Bad(1));
}

#[test]
fn worker_serializing_the_result() {
    let redis = Redis::start();
    let c = cluster(&redis, "crash3");
    worker_stage!(&c, make, WORKER_SERIALIZES_RESULT, 1u32);
}

struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the panic payload exploded while being dropped");
    }
}

fn panic_with_a_bomb() -> u32 {
    std::panic::panic_any(Bomb)
}

fn worker_pid() -> u32 {
    std::process::id()
}

/// Item 3: a panic payload whose own `Drop` panics resolves to `Panicked`,
/// and the worker (and its slot) survives.
#[test]
fn a_panic_payload_that_panics_on_drop_is_contained() {
    let redis = Redis::start();
    let c = cluster(&redis, "bomb");
    let pid = c
        .submit(worker_pid, ())
        .unwrap()
        .result_timeout(WAIT)
        .unwrap();
    for _ in 0..3 {
        match c
            .submit(panic_with_a_bomb, ())
            .unwrap()
            .result_timeout(WAIT)
        {
            Err(Error::Panicked { message, .. }) => {
                assert!(message.contains("exploded"), "{message}")
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
    }
    // The same worker process, its only slot still serving.
    assert_eq!(
        c.submit(worker_pid, ()).unwrap().result_timeout(WAIT),
        Ok(pid)
    );
    still_serves(&c, "a bomb payload");
}

//! The crash matrix (loky's `TestExecutorDeadLock`, ported to Rust types):
//! a call whose argument or result misbehaves at each of the four stages —
//! the caller serializes the arguments, the worker deserializes them, the
//! worker serializes the result, the caller deserializes the result — in
//! each of five ways: the serde impl returns an error, panics, calls
//! `abort()`, calls `_exit(0)`, or raises SIGSEGV.
//!
//! Expected: a serde error is `Codec`; a panic is `Codec` or `Panicked` and
//! never escapes into the caller of `submit`/`result`; abort, exit and
//! segfault in a worker are `WorkerLost` naming the signal or exit code.
//! After every case the pool serves the next call.
//!
//! The two caller-side stages run in this test process: there abort, exit
//! and segfault would end the test binary itself (as they would end any
//! program whose own code does that), so for those stages only the error
//! and the panic apply.

mod process_util;

use fanout::{Error, Executor, ProcessPool, StartMethod};
use process_util::{add, pool, watchdog, METHODS, T};
use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The test process's pid; a worker sees another pid (spawned workers see 0).
static CALLER: AtomicU32 = AtomicU32::new(0);

fn in_worker() -> bool {
    CALLER.load(Ordering::SeqCst) != std::process::id()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    CallerSerializes,
    WorkerDeserializes,
    WorkerSerializes,
    CallerDeserializes,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum How {
    Error,
    Panic,
    Abort,
    Exit0,
    Segfault,
}

const STAGES: [Stage; 4] = [
    Stage::CallerSerializes,
    Stage::WorkerDeserializes,
    Stage::WorkerSerializes,
    Stage::CallerDeserializes,
];
const HOWS: [How; 5] = [
    How::Error,
    How::Panic,
    How::Abort,
    How::Exit0,
    How::Segfault,
];

impl Stage {
    fn in_caller(self) -> bool {
        matches!(self, Stage::CallerSerializes | Stage::CallerDeserializes)
    }
    fn code(self) -> u8 {
        STAGES.iter().position(|&s| s == self).unwrap() as u8
    }
}

impl How {
    fn code(self) -> u8 {
        HOWS.iter().position(|&h| h == self).unwrap() as u8
    }
}

/// Misbehaves at `stage`, in the way `how`; travels as two bytes otherwise.
#[derive(Clone, Copy, Debug)]
struct Evil {
    stage: Stage,
    how: How,
}

/// Does `how` unless it is an error, which the caller returns itself.
fn misbehave(how: How, stage: Stage) {
    match how {
        How::Error => {}
        How::Panic => panic!("evil {stage:?} panics"),
        How::Abort => std::process::abort(),
        // SAFETY: ends the process at once, as the case demands.
        How::Exit0 => unsafe { libc::_exit(0) },
        // A real fault (a null write), not a raised signal.
        // SAFETY: not safe at all; this is the point.
        How::Segfault => unsafe { std::ptr::null_mut::<u8>().write_volatile(1) },
    }
}

impl Serialize for Evil {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let here = match self.stage {
            Stage::CallerSerializes => !in_worker(),
            Stage::WorkerSerializes => in_worker(),
            _ => false,
        };
        if here {
            misbehave(self.how, self.stage);
            return Err(ser::Error::custom(format!("evil {:?} refuses", self.stage)));
        }
        (self.stage.code(), self.how.code()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Evil {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (s, h) = <(u8, u8)>::deserialize(d)?;
        let (Some(&stage), Some(&how)) = (STAGES.get(s as usize), HOWS.get(h as usize)) else {
            return Err(de::Error::custom("bad evil"));
        };
        let here = match stage {
            Stage::WorkerDeserializes => in_worker(),
            Stage::CallerDeserializes => !in_worker(),
            _ => false,
        };
        if here {
            misbehave(how, stage);
            return Err(de::Error::custom(format!("evil {stage:?} refuses")));
        }
        Ok(Evil { stage, how })
    }
}

fn echo(e: Evil) -> Evil {
    e
}

/// Checks one case's outcome against the matrix's expectation.
fn check(method: StartMethod, stage: Stage, how: How, r: fanout::Result<Evil>) {
    let case = format!("{method:?} {stage:?} {how:?}");
    match (how, &r) {
        // (postcard drops a custom message; the type is named)
        (How::Error, Err(Error::Codec { type_name, .. })) => {
            assert!(type_name.contains("Evil"), "{case}: {type_name}")
        }
        (How::Panic, Err(Error::Codec { message, .. }))
        | (How::Panic, Err(Error::Panicked { message, .. })) => {
            assert!(message.contains("panics"), "{case}: {message}")
        }
        (How::Abort, Err(Error::WorkerLost { status, .. })) => {
            assert!(status.contains("SIGABRT"), "{case}: {status}")
        }
        (How::Exit0, Err(Error::WorkerLost { status, .. })) => {
            assert!(status.contains("exited with code 0"), "{case}: {status}")
        }
        (How::Segfault, Err(Error::WorkerLost { status, .. })) => {
            assert!(status.contains("SIGSEGV"), "{case}: {status}")
        }
        _ => panic!("{case}: unexpected outcome {r:?}"),
    }
}

fn run_case(pool: &ProcessPool, method: StartMethod, stage: Stage, how: How) {
    let case = format!("{method:?} {stage:?} {how:?}");
    let evil = Evil { stage, how };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        pool.submit(echo, (evil,)).and_then(|f| f.result_timeout(T))
    }));
    match outcome {
        Ok(r) => check(method, stage, how, r),
        Err(_) => panic!("{case}: the panic escaped into the caller"),
    }
    assert_eq!(
        pool.submit(add, (1, 2)).unwrap().result_timeout(T),
        Ok(3),
        "{case}: the pool serves the next call"
    );
}

#[test]
fn crash_matrix() {
    let _w = watchdog("crash_matrix", Duration::from_secs(300));
    CALLER.store(std::process::id(), Ordering::SeqCst);
    for method in METHODS {
        let pool = pool(method, 2);
        for stage in STAGES {
            for how in HOWS {
                if stage.in_caller() && !matches!(how, How::Error | How::Panic) {
                    continue; // would end this test process (see the module docs)
                }
                run_case(&pool, method, stage, how);
            }
        }
        // map goes the same way, per item, and the other items are unharmed.
        let items = vec![
            Evil {
                stage: Stage::CallerDeserializes,
                how: How::Panic,
            },
            Evil {
                stage: Stage::WorkerDeserializes,
                how: How::Error,
            },
        ];
        let got: Vec<_> = pool.map(echo, items).unwrap().collect();
        assert!(matches!(got[0], Err(Error::Codec { .. })), "{got:?}");
        assert!(matches!(got[1], Err(Error::Codec { .. })), "{got:?}");
        let t0 = std::time::Instant::now();
        drop(pool);
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{method:?}: shutdown"
        );
    }
}

/// A result whose `Drop` panics, delivered to a future nobody holds any
/// more: the pool's delivery survives it.
#[derive(Serialize, Deserialize)]
struct DropBomb(u8);

impl Drop for DropBomb {
    fn drop(&mut self) {
        if !in_worker() && self.0 == 1 {
            panic!("DropBomb dropped in the caller");
        }
    }
}

fn bomb(x: u8) -> DropBomb {
    std::thread::sleep(Duration::from_millis(50));
    DropBomb(x)
}

#[test]
fn a_dropped_result_whose_drop_panics_does_not_stop_delivery() {
    let _w = watchdog(
        "a_dropped_result_whose_drop_panics_does_not_stop_delivery",
        Duration::from_secs(120),
    );
    CALLER.store(std::process::id(), Ordering::SeqCst);
    for method in METHODS {
        let pool = pool(method, 1);
        drop(pool.submit(bomb, (1,)).unwrap());
        let next = pool.submit(bomb, (0,)).unwrap().result_timeout(T);
        assert!(matches!(next, Ok(DropBomb(0))), "{method:?}");
        assert_eq!(pool.submit(add, (2, 2)).unwrap().result_timeout(T), Ok(4));
    }
}

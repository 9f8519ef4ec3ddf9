//! The task-graph checks, written once against `Executor` and run on every
//! backend by `tests/graph_{thread,process,cluster}.rs`.
#![allow(dead_code)]

use fanout::{gather, Error, Executor, State, ThreadPool};
use std::time::Duration;

// The process tests' helpers (`eventually`), shared rather than copied.
#[path = "../process_util/mod.rs"]
mod process_util;
use process_util::eventually;

/// How long any single result may take before the test fails instead of hanging.
pub const T: Duration = Duration::from_secs(60);

pub fn inc(x: u64) -> u64 {
    x + 1
}

pub fn double(x: u64) -> u64 {
    2 * x
}

pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

pub fn add3(a: u64, b: u64, c: u64) -> u64 {
    a + b + c
}

pub fn boom(msg: String) -> u64 {
    panic!("{msg}")
}

pub fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

pub fn len(v: Vec<u8>) -> usize {
    v.len()
}

pub fn sum_bytes(v: Vec<u8>, k: u64) -> u64 {
    v.iter().map(|&b| u64::from(b)).sum::<u64>() * k
}

/// r → (a = r + 1, b = 2r) → c = a + b → d = c + 1, plus values mixed with `Arg`s.
pub fn diamond(ex: &impl Executor) {
    let r = ex.submit(inc, (4,)).unwrap();
    let a = ex.call(inc).submit((r.arg(),)).unwrap();
    let b = ex.call(double).submit((r.arg(),)).unwrap();
    let c = ex.call(add).submit((a.arg(), b.arg())).unwrap();
    let d = ex.call(inc).submit((c.arg(),)).unwrap();
    let e = ex.call(add3).submit((a.arg(), 100u64, b.arg())).unwrap();
    assert_eq!(d.result_timeout(T), Ok(5 + 1 + 10 + 1));
    assert_eq!(e.result_timeout(T), Ok(6 + 100 + 10));
    assert_eq!(c.result_timeout(T), Ok(16));
    assert_eq!(r.result_timeout(T), Ok(5));
}

/// 200 calls, each taking the previous one's future; only the last is kept.
pub fn chain(ex: &impl Executor) {
    let mut f = ex.submit(inc, (0,)).unwrap();
    for _ in 1..200 {
        f = ex.call(inc).submit((f.arg(),)).unwrap();
    }
    assert_eq!(f.result_timeout(T), Ok(200));
}

/// A failing input: dependents one and two levels down get `Dependency`
/// naming their input and carrying the root panic message.
pub fn failing_input(ex: &impl Executor) {
    let a = ex.submit(boom, ("root cause 42".to_string(),)).unwrap();
    let b = ex.call(inc).submit((a.arg(),)).unwrap();
    let c1 = ex.call(inc).submit((b.arg(),)).unwrap();
    let c2 = ex.call(add).submit((b.arg(), 1u64)).unwrap();
    let ok = ex.submit(inc, (1,)).unwrap();
    let c3 = ex.call(add).submit((ok.arg(), b.arg())).unwrap();
    let (a_id, b_id) = (a.id(), b.id());
    match b.exception(Some(T)) {
        Some(Error::Dependency { input, error }) => {
            assert_eq!(input, a_id);
            assert!(
                matches!(&*error, Error::Panicked { message, .. } if message.contains("root cause 42")),
                "{error:?}"
            );
        }
        other => panic!("expected Dependency, got {other:?}"),
    }
    for c in [c1, c2, c3] {
        match c.result_timeout(T) {
            Err(Error::Dependency { input, error }) => {
                assert_eq!(input, b_id, "names its own input");
                match *error {
                    Error::Panicked { message, .. } => assert!(message.contains("root cause 42")),
                    other => panic!("root cause expected, got {other:?}"),
                }
            }
            other => panic!("expected Dependency, got {other:?}"),
        }
    }
    assert!(matches!(a.result_timeout(T), Err(Error::Panicked { .. })));
    assert_eq!(ok.result_timeout(T), Ok(2));
}

/// Cancelling a pending input cancels its dependents, transitively; a
/// dependent cancelled itself leaves its input alone.
pub fn cancelled_input(ex: &impl Executor) {
    let slow = ex.submit(sleepy, (300,)).unwrap();
    let a = ex.call(inc).submit((slow.arg(),)).unwrap();
    let b = ex.call(inc).submit((a.arg(),)).unwrap();
    let c = ex.call(add).submit((b.arg(), 5u64)).unwrap();
    let sibling = ex.call(inc).submit((slow.arg(),)).unwrap();
    assert_eq!(a.state(), State::Pending);
    assert!(a.cancel(), "a waiting dependent is cancellable");
    assert!(b.cancelled() && b.done(), "cancelled at once, transitively");
    assert_eq!(c.result_timeout(T), Err(Error::Cancelled));
    assert_eq!(b.result_timeout(T), Err(Error::Cancelled));
    assert_eq!(
        sibling.result_timeout(T),
        Ok(301),
        "the input and its other dependents run"
    );
    assert_eq!(slow.result_timeout(T), Ok(300));
}

/// Dropping input futures cancels nothing: dependents still get the values.
pub fn dropped_inputs(ex: &impl Executor) {
    let slow = ex.submit(sleepy, (200,)).unwrap();
    let fast = ex.submit(inc, (1,)).unwrap();
    let d = ex.call(add).submit((slow.arg(), fast.arg())).unwrap();
    drop(slow);
    drop(fast);
    assert_eq!(d.result_timeout(T), Ok(202));
    // An Arg outliving its future, used after the future is gone.
    let x = ex.submit(inc, (9,)).unwrap();
    let arg = x.arg();
    drop(x);
    let y = ex.call(double).submit((arg.clone(),)).unwrap();
    let z = ex.call(add).submit((arg.clone(), arg)).unwrap();
    assert_eq!(y.result_timeout(T), Ok(20));
    assert_eq!(z.result_timeout(T), Ok(20));
}

/// An `Arg` from another executor is refused by `submit`.
pub fn foreign_arg(ex: &impl Executor) {
    let other = ThreadPool::new(1).unwrap();
    let theirs = other.submit(inc, (1,)).unwrap();
    match ex.call(inc).submit((theirs.arg(),)) {
        Err(Error::InvalidArgument { message }) => {
            assert!(message.contains("another executor"), "{message}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let put = other.put(5u64).unwrap();
    assert!(matches!(
        ex.call(add).submit((1u64, put.arg())),
        Err(Error::InvalidArgument { .. })
    ));
    // The executor's own futures still work, and so does the other one.
    let mine = ex.submit(inc, (1,)).unwrap();
    assert_eq!(
        ex.call(inc)
            .submit((mine.arg(),))
            .unwrap()
            .result_timeout(T),
        Ok(3)
    );
    assert_eq!(theirs.result_timeout(T), Ok(2));
}

/// One `put` value taken by 20 calls.
pub fn put_shared(ex: &impl Executor) {
    let data = ex.put(vec![3u8; 100_000]).unwrap();
    assert_eq!(data.state(), State::Finished);
    let fs: Vec<_> = (0..20)
        .map(|k| ex.call(sum_bytes).submit((data.arg(), k as u64)).unwrap())
        .collect();
    let want: Vec<u64> = (0..20).map(|k| 300_000 * k).collect();
    assert_eq!(gather(fs), Ok(want));
    let lens: Vec<_> = (0..3)
        .map(|_| ex.call(len).submit((data.arg(),)).unwrap())
        .collect();
    assert_eq!(gather(lens), Ok(vec![100_000; 3]));
    assert_eq!(data.result().map(|v| v.len()), Ok(100_000));
}

/// `gather`: input order, and an error wins over the values.
pub fn gather_order_and_error(ex: &impl Executor) {
    let fs: Vec<_> = [300u64, 10, 150, 0]
        .into_iter()
        .map(|ms| ex.submit(sleepy, (ms,)).unwrap())
        .collect();
    assert_eq!(gather(fs), Ok(vec![300, 10, 150, 0]));
    let a = ex.submit(inc, (1,)).unwrap();
    let bad = ex.submit(boom, ("gathered".to_string(),)).unwrap();
    let dep = ex.call(inc).submit((bad.arg(),)).unwrap();
    match gather(vec![a, bad, dep]) {
        Err(Error::Panicked { message, .. }) => assert!(message.contains("gathered")),
        other => panic!("expected the first error, got {other:?}"),
    }
}

/// A dependent stays `Pending` (and cancellable) while its input runs.
pub fn pending_while_input_runs(ex: &impl Executor) {
    let slow = ex.submit(sleepy, (400,)).unwrap();
    assert!(eventually(T, || slow.running()), "the input starts");
    let d = ex.call(inc).submit((slow.arg(),)).unwrap();
    for _ in 0..5 {
        assert_eq!(d.state(), State::Pending);
        assert!(!d.running() && !d.done());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(slow.running());
    assert_eq!(d.result_timeout(T), Ok(401));
}

/// A call that captures values (`bind`) takes futures as arguments too.
pub fn bound_call_with_args(ex: &impl Executor) {
    let a = ex.submit(inc, (4,)).unwrap();
    let scaled = ex
        .call(fanout::bind(3u64, |k: &u64, x: u64, y: u64| k * x + y))
        .submit((a.arg(), 1u64))
        .unwrap();
    assert_eq!(scaled.result_timeout(T), Ok(16));
}

/// One `#[test]` per check, each on a fresh executor from `$setup`, which
/// returns `(guard, executor)` (the guard keeps what the executor needs alive).
#[macro_export]
macro_rules! graph_tests {
    ($setup:path) => {
        $crate::graph_tests!(@each $setup; diamond, chain, failing_input, cancelled_input,
            dropped_inputs, foreign_arg, put_shared, gather_order_and_error,
            pending_while_input_runs, bound_call_with_args);
    };
    (@each $setup:path; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let (_guard, ex) = $setup();
                graph_support::$name(&ex);
            }
        )*
    };
}

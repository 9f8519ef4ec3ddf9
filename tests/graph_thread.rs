//! Task graphs on the thread pool (the checks live in `graph_support`).

mod graph_support;

use fanout::ThreadPool;

fn pool() -> ThreadPool {
    ThreadPool::new(3).unwrap()
}

#[test]
fn diamond() {
    graph_support::diamond(&pool());
}

#[test]
fn chain_of_200() {
    graph_support::chain(&pool());
}

#[test]
fn failing_input() {
    graph_support::failing_input(&pool());
}

#[test]
fn cancelled_input() {
    graph_support::cancelled_input(&pool());
}

#[test]
fn dropped_inputs() {
    graph_support::dropped_inputs(&pool());
}

#[test]
fn foreign_arg() {
    graph_support::foreign_arg(&pool());
}

#[test]
fn put_shared() {
    graph_support::put_shared(&pool());
}

#[test]
fn gather_order_and_error() {
    graph_support::gather_order_and_error(&pool());
}

#[test]
fn pending_while_input_runs() {
    graph_support::pending_while_input_runs(&pool());
}

#[test]
fn bound_call_with_args() {
    graph_support::bound_call_with_args(&pool());
}

#[test]
fn spawned_futures_as_args() {
    // `spawn` knows no serde bounds; its futures still work as inputs.
    use fanout::Executor;
    let pool = pool();
    let a = pool.spawn(|| 20u64).unwrap();
    let b = pool.call(graph_support::inc).submit((a.arg(),)).unwrap();
    assert_eq!(b.result_timeout(graph_support::T), Ok(21));
}

#[test]
fn long_chains_propagate_without_deep_recursion() {
    use fanout::{Error, Executor};
    use graph_support::{inc, sleepy, T};
    let pool = pool();
    // A failure at the head of a 20,000-long chain reaches its tail.
    let head = pool.submit(sleepy, (100,)).unwrap();
    let bad = pool
        .call(graph_support::boom)
        .submit(("deep".to_string(),))
        .unwrap();
    let mut f = pool
        .call(graph_support::add)
        .submit((head.arg(), bad.arg()))
        .unwrap();
    for _ in 0..20_000 {
        f = pool.call(inc).submit((f.arg(),)).unwrap();
    }
    match f.result_timeout(T) {
        Err(Error::Dependency { error, .. }) => {
            assert!(matches!(*error, Error::Panicked { ref message, .. } if message == "deep"))
        }
        other => panic!("expected Dependency, got {other:?}"),
    }
    // Cancelling the head of a 20,000-long pending chain cancels its tail.
    // The input runs until the chain is built and cancelled (a fixed sleep
    // could end first on a loaded machine, and `first` would start).
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let slow = pool
        .spawn(move || {
            let _ = gate.recv_timeout(T);
            0u64
        })
        .unwrap();
    let first = pool.call(inc).submit((slow.arg(),)).unwrap();
    let mut f = pool.call(inc).submit((first.arg(),)).unwrap();
    for _ in 0..20_000 {
        f = pool.call(inc).submit((f.arg(),)).unwrap();
    }
    assert!(first.cancel());
    drop(release);
    assert_eq!(f.result_timeout(T), Err(Error::Cancelled));
    assert_eq!(slow.result_timeout(T), Ok(0));
}

#[test]
fn waiting_calls_at_shutdown() {
    use fanout::{Error, Executor};
    use graph_support::{inc, sleepy, T};
    let pool = ThreadPool::new(1).unwrap();
    let running = pool.submit(sleepy, (200,)).unwrap();
    let started = std::time::Instant::now();
    while !running.running() {
        assert!(started.elapsed() < T, "the first call starts");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let queued = pool.submit(sleepy, (1,)).unwrap();
    let after_running = pool.call(inc).submit((running.arg(),)).unwrap();
    let after_queued = pool.call(inc).submit((queued.arg(),)).unwrap();
    pool.shutdown(true, true);
    assert_eq!(queued.result_timeout(T), Err(Error::Cancelled));
    assert_eq!(after_queued.result_timeout(T), Err(Error::Cancelled));
    assert_eq!(running.result_timeout(T), Ok(200));
    assert_eq!(after_running.result_timeout(T), Err(Error::Shutdown));
}

#[test]
fn an_input_finishing_while_its_dependent_subscribes_is_not_lost() {
    // The input's encoding hook runs on the thread that completed it, after
    // its state turned final; a dependent subscribing in that window hears
    // "done" at once and must still find the value.
    use fanout::Executor;
    use graph_support::{inc, T};
    let pool = pool();
    for i in 0..3000u64 {
        let a = pool.spawn(move || i).unwrap();
        let b = pool.call(inc).submit((a.arg(),)).unwrap();
        assert_eq!(
            b.result_timeout(T),
            Ok(i + 1),
            "spawned input, iteration {i}"
        );
        let a = pool.submit(inc, (i,)).unwrap();
        let b = pool.call(inc).submit((a.arg(),)).unwrap();
        assert_eq!(
            b.result_timeout(T),
            Ok(i + 2),
            "submitted input, iteration {i}"
        );
    }
}

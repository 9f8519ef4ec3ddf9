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
fn spawned_futures_as_args() {
    // `spawn` knows no serde bounds; its futures still work as inputs.
    use fanout::Executor;
    let pool = pool();
    let a = pool.spawn(|| 20u64).unwrap();
    let b = pool.call(graph_support::inc).submit((a.arg(),)).unwrap();
    assert_eq!(b.result_timeout(graph_support::T), Ok(21));
}

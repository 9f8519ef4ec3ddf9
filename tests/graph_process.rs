//! Task graphs on the process pool (the checks live in `graph_support`):
//! inputs' result bytes are spliced into the dependents' argument frames.

mod graph_support;

use fanout::{Executor, ProcessPool, StartMethod};

fn setup() -> ((), ProcessPool) {
    let pool = ProcessPool::builder()
        .workers(2)
        .start_method(StartMethod::Spawn)
        .build()
        .expect("process pool");
    ((), pool)
}

graph_tests!(setup);

#[test]
fn fork_workers_too() {
    let pool = ProcessPool::builder()
        .workers(2)
        .start_method(StartMethod::Fork)
        .build()
        .unwrap();
    graph_support::diamond(&pool);
    graph_support::failing_input(&pool);
}

#[test]
fn large_inputs_are_spliced() {
    fn make(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }
    fn check(a: Vec<u8>, tag: String, b: Vec<u8>) -> (usize, String, u64) {
        let sum = a.iter().chain(&b).map(|&x| u64::from(x)).sum();
        (a.len() + b.len(), tag, sum)
    }
    let (_g, pool) = setup();
    let a = pool.submit(make, (3 << 20,)).unwrap();
    let b = pool.submit(make, (1000,)).unwrap();
    let c = pool
        .call(check)
        .submit((a.arg(), "mid".to_string(), b.arg()))
        .unwrap();
    let want: u64 = make(3 << 20)
        .iter()
        .chain(&make(1000))
        .map(|&x| u64::from(x))
        .sum();
    assert_eq!(
        c.result_timeout(graph_support::T),
        Ok(((3 << 20) + 1000, "mid".to_string(), want))
    );
}

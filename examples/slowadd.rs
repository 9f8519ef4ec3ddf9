//! `submit` many slow calls, get many futures: the futures notebook, in Rust.
//!
//! Part 1 is the notebook's first demo: ten calls of a one-second `slowadd`
//! one after another (about 10 s), then all ten submitted at once and
//! collected with `result()` (about 10 s / workers, rounded up: 3 s on 4
//! workers, just like the notebook's `ThreadPoolExecutor(4)`).
//!
//! Part 2 is the notebook's exercise: for `i, j` in `0..5`, `slowadd(i, j)`
//! when `i < j`, `slowsub(i, j)` when `i > j`, nothing on the diagonal; 20
//! calls, each sleeping 0.1 s instead of the notebook's 1 s to keep the
//! example short.
//!
//! The backend is a `ThreadPool` of 4 (the calls only sleep, so they need no
//! CPU and more threads than cores is fine), unless `FANOUT_EXECUTOR` names
//! another: `FANOUT_EXECUTOR=process://4 cargo run --release --example slowadd`
//! runs the same code on worker processes.
//!
//! Run it with `cargo run --release --example slowadd` (about 16 s).

use fanout::{AnyExecutor, Executor, Future};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// `a + b`, one second later.
fn slowadd(a: i64, b: i64) -> i64 {
    sleep(Duration::from_secs(1));
    a + b
}

/// `a + b`, `delay_ms` milliseconds later (the notebook's `delay=` keyword).
fn slowadd_ms(a: i64, b: i64, delay_ms: u64) -> i64 {
    sleep(Duration::from_millis(delay_ms));
    a + b
}

/// `a - b`, `delay_ms` milliseconds later.
fn slowsub_ms(a: i64, b: i64, delay_ms: u64) -> i64 {
    sleep(Duration::from_millis(delay_ms));
    a - b
}

const EXERCISE_DELAY_MS: u64 = 100;

fn main() -> fanout::Result<()> {
    let url = std::env::var("FANOUT_EXECUTOR").unwrap_or_else(|_| "thread://4".into());
    let e = AnyExecutor::from_url(&url)?;
    println!("backend: {} ({url})", e.kind());

    // ---- Part 1: ten one-second calls ---------------------------------
    println!("\n== ten calls of slowadd (1 s each) ==");
    let t = Instant::now();
    let results: Vec<i64> = (0..10).map(|i| slowadd(i, i)).collect();
    let sequential = t.elapsed();
    println!("sequential: {results:?} in {sequential:.2?}");

    let t = Instant::now();
    let futures: Vec<Future<i64>> = (0..10)
        .map(|i| e.submit(slowadd, (i, i)))
        .collect::<fanout::Result<_>>()?;
    let submitted = t.elapsed();
    let results: Vec<i64> = futures
        .into_iter()
        .map(Future::result)
        .collect::<fanout::Result<_>>()?;
    let parallel = t.elapsed();
    println!(
        "submitted:  {results:?} in {parallel:.2?} \
         (all 10 submitted in {submitted:.2?}; {:.1}x faster)",
        sequential.as_secs_f64() / parallel.as_secs_f64()
    );

    // ---- Part 2: the exercise -------------------------------------------
    println!("\n== exercise: slowadd if i < j, slowsub if i > j, {EXERCISE_DELAY_MS} ms each ==");
    let t = Instant::now();
    let mut sequential_results = Vec::new();
    for i in 0..5 {
        for j in 0..5 {
            if i < j {
                sequential_results.push(slowadd_ms(i, j, EXERCISE_DELAY_MS));
            } else if i > j {
                sequential_results.push(slowsub_ms(i, j, EXERCISE_DELAY_MS));
            }
        }
    }
    let sequential = t.elapsed();
    println!(
        "sequential: {} calls in {sequential:.2?}",
        sequential_results.len()
    );

    // The parallel version: the same loops, with each call replaced by
    // `submit` and a different function on each side of the diagonal.
    let t = Instant::now();
    let mut futures = Vec::new();
    for i in 0..5 {
        for j in 0..5 {
            if i < j {
                futures.push(((i, j), e.submit(slowadd_ms, (i, j, EXERCISE_DELAY_MS))?));
            } else if i > j {
                futures.push(((i, j), e.submit(slowsub_ms, (i, j, EXERCISE_DELAY_MS))?));
            }
        }
    }
    let mut matrix = [[None::<i64>; 5]; 5];
    let mut results = Vec::new();
    for ((i, j), f) in futures {
        let r = f.result()?;
        matrix[i as usize][j as usize] = Some(r);
        results.push(r);
    }
    let parallel = t.elapsed();
    assert_eq!(results, sequential_results);
    println!(
        "submitted:  {} calls in {parallel:.2?} ({:.1}x faster), same results",
        results.len(),
        sequential.as_secs_f64() / parallel.as_secs_f64()
    );
    println!("results matrix (row i, column j; '.' on the diagonal):");
    println!("        j=0  j=1  j=2  j=3  j=4");
    for (i, row) in matrix.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .map(|c| c.map_or_else(|| ".".to_string(), |v| v.to_string()))
            .map(|s| format!("{s:>5}"))
            .collect();
        println!("  i={i} {}", cells.concat());
    }

    e.shutdown(true, false);
    Ok(())
}

//! One workload, any backend: the backend is picked at run time.
//!
//! `workload` is written once against the `Executor` trait; `main` builds the
//! executor from the `FANOUT_EXECUTOR` environment variable with
//! `AnyExecutor::from_env()`. Its three URL forms:
//!
//! * `thread://N` — a `ThreadPool` of N threads (the default when unset:
//!   one per CPU);
//! * `process://N` — a `ProcessPool` of N worker processes of this binary
//!   (options: `?start=fork|spawn&max_tasks_per_child=K`);
//! * `redis://host:port/db?namespace=NAME&workers=N` — the Redis cluster
//!   backend, with N local worker processes on this host (more can join from
//!   other hosts).
//!
//! ```text
//! cargo run --release --example swap_backends
//! FANOUT_EXECUTOR=thread://2  cargo run --release --example swap_backends
//! FANOUT_EXECUTOR=process://2 cargo run --release --example swap_backends
//! FANOUT_EXECUTOR='redis://127.0.0.1:6379/0?namespace=demo&workers=2' \
//!     cargo run --release --example swap_backends
//! ```
//!
//! The workload counts the primes below 3,000,000 by trial division, in 24
//! ranges, so it is CPU-bound: threads and processes both use every core.

use fanout::{AnyExecutor, Executor};
use std::time::Instant;

const LIMIT: u64 = 3_000_000;
const PIECES: u64 = 24;

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    !n.is_multiple_of(2)
        && (3..)
            .step_by(2)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// How many primes lie in `start..end` (trial division: slow on purpose).
fn count_primes(start: u64, end: u64) -> u64 {
    (start..end).filter(|&n| is_prime(n)).count() as u64
}

/// The workload, written once for every backend.
fn workload(ex: &impl Executor) -> fanout::Result<u64> {
    let ranges = (0..PIECES).map(|i| (i * LIMIT / PIECES, (i + 1) * LIMIT / PIECES));
    ex.starmap(count_primes, ranges)?.sum()
}

fn main() -> fanout::Result<()> {
    let url = std::env::var("FANOUT_EXECUTOR").unwrap_or_default();
    let shown = if url.trim().is_empty() {
        "unset (default: thread://, one thread per CPU)".to_string()
    } else {
        url.clone()
    };
    let ex = match AnyExecutor::from_env() {
        Ok(ex) => ex,
        Err(e) => {
            eprintln!("FANOUT_EXECUTOR={shown}: {e}");
            std::process::exit(2);
        }
    };
    println!("FANOUT_EXECUTOR: {shown}");
    println!("backend:         {}", ex.kind());

    // Sequential, for reference.
    let t = Instant::now();
    let expected = count_primes(0, LIMIT);
    let sequential = t.elapsed();

    let t = Instant::now();
    let primes = workload(&ex)?;
    let elapsed = t.elapsed();
    assert_eq!(primes, expected);
    println!(
        "result:          {primes} primes below {LIMIT} (in {PIECES} tasks)\n\
         time:            {elapsed:.2?} on {} vs {sequential:.2?} sequentially ({:.2}x)",
        ex.kind(),
        sequential.as_secs_f64() / elapsed.as_secs_f64()
    );
    ex.shutdown(true, false);
    Ok(())
}

//! A small driver for profiling the `ThreadPool` under a profiler that
//! counts instructions (callgrind): one workload, a given size, nothing
//! else, so that the difference between two sizes is the cost of the extra
//! calls.
//!
//! ```text
//! cargo build --release --example profile_thread
//! B=target/release/examples/profile_thread
//! $B submit 200000          # N submits of add(i, 1), then every result
//! $B map 200000             # map(square, 0..N), consume all
//! $B submit 200000 1        # the same with one worker (default: two)
//! valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=ct.%p $B submit 100000
//! ```
//!
//! See BENCHMARKS.md ("Profiles per call") for the commands and the numbers.

use fanout::{Executor, ThreadPool};

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> fanout::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map(String::as_str).unwrap_or("submit");
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let workers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let pool = ThreadPool::new(workers)?;
    // Warm up: both threads have run a call.
    for f in (0..4).map(|i| pool.submit(add, (i, 1))).collect::<Vec<_>>() {
        f?.result()?;
    }
    match workload {
        "submit" => {
            let start = std::time::Instant::now();
            let fs = (0..n)
                .map(|i| pool.submit(add, (i, 1)))
                .collect::<fanout::Result<Vec<_>>>()?;
            let submitted = start.elapsed();
            let total = fs
                .into_iter()
                .map(|f| f.result().unwrap())
                .fold(0u64, u64::wrapping_add);
            let all = start.elapsed();
            println!("submit {n}: {total}");
            eprintln!(
                "submitting {:.0} ns per call, collecting {:.0} ns per call",
                submitted.as_nanos() as f64 / n as f64,
                (all - submitted).as_nanos() as f64 / n as f64
            );
        }
        "map" => {
            let total = pool
                .map(square, 0..n)?
                .map(|r| r.unwrap())
                .fold(0u64, u64::wrapping_add);
            println!("map {n}: {total}");
        }
        other => {
            eprintln!("unknown workload {other:?}: submit or map");
            std::process::exit(2);
        }
    }
    Ok(())
}

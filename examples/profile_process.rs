//! A small driver for profiling the `ProcessPool` under a profiler that
//! counts instructions (callgrind) or syscalls (strace): one workload, a
//! given size, nothing else, so that the difference between two sizes is the
//! cost of the extra items. The workers are forked (`StartMethod::Fork`), so
//! profilers that follow forks see them without re-executing the binary.
//!
//! ```text
//! cargo build --release --example profile_process
//! B=target/release/examples/profile_process
//! $B map 100000            # map_with(square, 0..N, chunksize 100), consume all
//! $B submit 20000          # N submits of add(i, 1), then every result
//! $B chunks 100000         # the same squares as `map`, one submit per 100 (a Vec<u64> each)
//! $B echo 64 [K]           # an N MiB Vec<u8> echoed through one worker, K times (1);
//!                          # prints the min and median round trip (submit → result)
//! $B copy 64 [K]           # the same clone + compare as `echo`, without the pool (its baseline)
//! valgrind --tool=callgrind --callgrind-out-file=cg.%p $B map 100000
//! strace -c -f $B submit 20000
//! ```
//!
//! See BENCHMARKS.md ("Profiles per call") for the commands and the numbers.

use fanout::{Executor, MapOptions, ProcessPool, StartMethod};

fn square(x: u64) -> u64 {
    x * x
}

/// `map`'s work with one call, and one completion, per chunk of 100.
fn square_chunk(xs: Vec<u64>) -> Vec<u64> {
    xs.into_iter().map(square).collect()
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn echo(v: Vec<u8>) -> Vec<u8> {
    v
}

fn main() -> fanout::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map(String::as_str).unwrap_or("map");
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let workers = if workload == "echo" { 1 } else { 2 };
    let pool = ProcessPool::builder()
        .workers(workers)
        .start_method(StartMethod::Fork)
        .build()?;
    // Warm up: every worker has run a call.
    for f in (0..4).map(|i| pool.submit(add, (i, 1))).collect::<Vec<_>>() {
        f?.result()?;
    }
    match workload {
        "map" => {
            let total: u64 = pool
                .map_with(square, 0..n, MapOptions::default().chunksize(100))?
                .map(|r| r.unwrap())
                .fold(0u64, u64::wrapping_add);
            println!("map {n}: {total}");
        }
        "chunks" => {
            let fs = (0..n)
                .step_by(100)
                .map(|i| pool.submit(square_chunk, ((i..(i + 100).min(n)).collect(),)))
                .collect::<fanout::Result<Vec<_>>>()?;
            let total: u64 = fs
                .into_iter()
                .flat_map(|f| f.result().unwrap())
                .fold(0u64, u64::wrapping_add);
            println!("chunks {n}: {total}");
        }
        "submit" => {
            let fs = (0..n)
                .map(|i| pool.submit(add, (i, 1)))
                .collect::<fanout::Result<Vec<_>>>()?;
            let total: u64 = fs.into_iter().map(|f| f.result().unwrap()).sum();
            println!("submit {n}: {total}");
        }
        "copy" => {
            let times: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            let payload: Vec<u8> = (0..(n as usize) << 20).map(|i| i as u8).collect();
            for _ in 0..times {
                let back = std::hint::black_box(payload.clone());
                assert!(back == payload);
            }
            println!("copy {n} MiB × {times}: ok");
        }
        "echo" => {
            let times: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            let payload: Vec<u8> = (0..(n as usize) << 20).map(|i| i as u8).collect();
            let mut trips = Vec::with_capacity(times);
            for _ in 0..times {
                let sent = payload.clone();
                let start = std::time::Instant::now();
                let back = pool.submit(echo, (sent,))?.result()?;
                trips.push(start.elapsed());
                assert!(back == payload);
            }
            trips.sort();
            println!(
                "echo {n} MiB × {times}: ok; round trip min {:.1} ms, median {:.1} ms",
                trips[0].as_secs_f64() * 1e3,
                trips[times / 2].as_secs_f64() * 1e3
            );
        }
        other => {
            eprintln!("unknown workload {other:?}: use map, chunks, submit, echo or copy");
            std::process::exit(2);
        }
    }
    Ok(())
}

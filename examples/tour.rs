//! A tour of fanout: the `concurrent.futures` model, one workload, every backend.
//!
//! Run it with `cargo run --release --example tour`.
//!
//! The talks this crate grew from start the same way: a slow function run in a
//! loop (`slowadd`), then the same calls handed to an executor with `submit`,
//! then thousands of files (15,000 gzipped files of tweets) pushed through
//! `map` and `as_completed`. This tour does each of those with CPU-bound Rust
//! functions, and checks every parallel answer against the sequential one.
//!
//! The workloads are written once, in [`tour`], generic over
//! `E: fanout::Executor`; `main` calls it once per backend. Everything sent
//! through the `Executor` trait is a plain `fn` item (or, to capture values,
//! a `fanout::bind` of them and a non-capturing closure) whose arguments and
//! result are serde types, so the same code can ship calls to other processes
//! or hosts. At the end the tour prints what it measured: sequential time
//! (the same work in the main thread), parallel time and speedup, per workload
//! and per backend.

use fanout::{
    as_completed, wait, Cluster, Error, Executor, MapOptions, ProcessPool, ReturnWhen, State,
    ThreadPool,
};
use serde::{Deserialize, Serialize};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "../benches/common/redis.rs"]
mod redis;
use redis::Redis;

// ---------------------------------------------------------------------------
// The functions we run. Plain `fn` items: zero-sized, `Copy`, shippable.
// ---------------------------------------------------------------------------

/// How many primes lie in `lo..hi` (trial division: honest CPU work).
fn count_primes(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&n| is_prime(n)).count() as u64
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The talks' `slowadd(a, b, delay)`, burning CPU instead of sleeping:
/// `rounds` steps of a pseudo-random walk, then `a + b`.
fn slow_add(a: u64, b: u64, rounds: u64) -> u64 {
    std::hint::black_box(spin(a ^ b, rounds));
    a + b
}

fn spin(seed: u64, rounds: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// What processing one "file of tweets" produces. A serde type, so it can
/// come back from another process or host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileSummary {
    file: u32,
    tweets: u32,
    words: u64,
    checksum: u64,
}

/// Stands in for "decompress one big file of tweets, clean it, summarise
/// it" (tens of milliseconds of CPU).
fn process_file(file: u32) -> FileSummary {
    summarize(file, 40_000, 40_000)
}

/// The same for a small file (tens of microseconds): the "15,000 files" case,
/// where the cost of a round trip per item matters and `chunksize` pays off.
fn process_small_file(file: u32) -> FileSummary {
    summarize(file, 50, 100)
}

/// Generates a file's tweets deterministically from its number (at least
/// `min_tweets`, up to `min_tweets + spread`) and counts their words.
fn summarize(file: u32, min_tweets: u32, spread: u32) -> FileSummary {
    let mut rng = u64::from(file).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let tweets = min_tweets + (next() % u64::from(spread)) as u32;
    let (mut words, mut checksum) = (0u64, 0u64);
    for _ in 0..tweets {
        let chars = 20 + next() % 260;
        for _ in 0..chars {
            let c = next();
            if c % 6 == 0 {
                words += 1;
            }
            checksum = checksum.rotate_left(5) ^ c;
        }
    }
    FileSummary {
        file,
        tweets,
        words,
        checksum,
    }
}

/// A task that fails: its panic becomes `Error::Panicked` in its future.
fn parse_tweet(text: String) -> usize {
    if text.is_empty() {
        panic!("empty tweet");
    }
    text.split_whitespace().count()
}

/// A flaky call: fails the first time it runs for `marker` (it leaves the
/// file behind), succeeds after. A retried call gets past it.
fn flaky_fetch(marker: String) -> String {
    let first = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok();
    if first {
        panic!("connection reset (first attempt)");
    }
    let _ = std::fs::remove_file(&marker);
    "fetched".into()
}

/// A call that hangs (far longer than the limit it is given).
fn stuck() -> u32 {
    std::thread::sleep(Duration::from_millis(1500));
    0
}

/// Graph step: a prime count weighted by its range's entry in a shared table.
fn weigh(count: u64, range: u64, weights: Vec<u64>) -> u64 {
    count * weights[range as usize]
}

fn add2(a: u64, b: u64) -> u64 {
    a + b
}

/// Graph step: a dependent of `parse_tweet` (which fails on an empty tweet).
fn words_times(words: usize, k: u64) -> u64 {
    words as u64 * k
}

/// Graph step: the per-range weights, shared by every `weigh` call via `put`.
fn weights() -> Vec<u64> {
    (1..=PRIME_RANGES).collect()
}

// ---------------------------------------------------------------------------
// The work, described once.
// ---------------------------------------------------------------------------

/// `submit`: primes below this, in this many ranges.
const PRIME_LIMIT: u64 = 4_000_000;
const PRIME_RANGES: u64 = 16;
/// `wait`: this many `slow_add` calls; call `i` spins `(i + 1) * SPIN_ROUNDS`.
const ADDS: u64 = 10;
const SPIN_ROUNDS: u64 = 5_500_000;
/// `as_completed` and `map`: this many big files each.
const FILES: u32 = 24;
/// `map_with`: this many small files, taken from an endless iterator.
const SMALL_FILES: usize = 15_000;

fn prime_ranges() -> impl Iterator<Item = (u64, u64)> {
    let step = PRIME_LIMIT / PRIME_RANGES;
    (0..PRIME_RANGES).map(move |i| (i * step, (i + 1) * step))
}

fn add_args() -> impl Iterator<Item = (u64, u64, u64)> {
    (0..ADDS).map(|i| (i, i, (i + 1) * SPIN_ROUNDS))
}

/// Folds file summaries into one number, so runs can be compared.
fn digest(acc: u64, s: &FileSummary) -> u64 {
    acc.rotate_left(7) ^ s.checksum ^ (u64::from(s.file) << 32) ^ s.words
}

/// One workload's outcome: how long it took and an answer to check.
struct Measured {
    workload: &'static str,
    elapsed: Duration,
    answer: u64,
}

fn measure(
    workload: &'static str,
    run: impl FnOnce() -> fanout::Result<u64>,
) -> fanout::Result<Measured> {
    let started = Instant::now();
    let answer = run()?;
    Ok(Measured {
        workload,
        elapsed: started.elapsed(),
        answer,
    })
}

/// Every workload, run in the calling (main) thread, one call after another.
fn sequential() -> fanout::Result<Vec<Measured>> {
    Ok(vec![
        measure("submit", || {
            Ok(prime_ranges().map(|(lo, hi)| count_primes(lo, hi)).sum())
        })?,
        measure("wait", || {
            Ok(add_args().map(|(a, b, r)| slow_add(a, b, r)).sum())
        })?,
        measure("as_completed", || {
            let mut all: Vec<_> = (0..FILES).map(process_file).collect();
            all.sort_by_key(|s| s.file);
            Ok(all.iter().fold(0, digest))
        })?,
        measure("map", || {
            Ok((0..FILES).map(process_file).fold(0, |a, s| digest(a, &s)))
        })?,
        measure("map_with", || {
            Ok((0..SMALL_FILES as u32)
                .map(process_small_file)
                .fold(0, |a, s| digest(a, &s)))
        })?,
        measure("graph", || {
            let w = weights();
            Ok(prime_ranges()
                .enumerate()
                .map(|(i, (lo, hi))| weigh(count_primes(lo, hi), i as u64, w.clone()))
                .sum())
        })?,
    ])
}

// ---------------------------------------------------------------------------
// The same work through an executor. Generic: the code is the same on every
// backend, only the constructor in `main` changes.
// ---------------------------------------------------------------------------

fn tour<E: Executor>(ex: &E) -> fanout::Result<Vec<Measured>> {
    let mut out = Vec::new();

    // submit → future → result ------------------------------------------------
    println!("  submit: {PRIME_RANGES} calls of count_primes(lo, hi) below {PRIME_LIMIT}");
    out.push(measure("submit", || {
        let futures: Vec<_> = prime_ranges()
            .map(|(lo, hi)| ex.submit(count_primes, (lo, hi)))
            .collect::<fanout::Result<_>>()?;
        let (first, last) = (&futures[0], &futures[futures.len() - 1]);
        println!(
            "    right after submitting: first future {:?}, last {:?}",
            first.state(),
            last.state()
        );
        // A done-callback runs on the thread that completes the future.
        let (tx, rx) = mpsc::channel();
        last.add_done_callback(move |r| {
            let _ = tx.send(r.clone());
        });
        let mut total = 0;
        for f in futures {
            total += f.result()?;
        }
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(outcome) => println!("    the last call's done-callback saw {outcome:?}"),
            Err(e) => println!("    the last call's done-callback did not report: {e}"),
        }
        Ok(total)
    })?);
    println!("    {} primes", out[0].answer);

    // wait: FirstCompleted, then AllCompleted ----------------------------------
    println!("  wait: {ADDS} calls of slow_add(a, b, rounds), shortest first");
    out.push(measure("wait", || {
        let started = Instant::now();
        let futures: Vec<_> = add_args()
            .map(|(a, b, r)| ex.submit(slow_add, (a, b, r)))
            .collect::<fanout::Result<_>>()?;
        let first = wait(futures, None, ReturnWhen::FirstCompleted);
        println!(
            "    FirstCompleted returned after {:>6.1?}: {} done, {} not done",
            started.elapsed(),
            first.done.len(),
            first.not_done.len()
        );
        let rest = wait(first.not_done, None, ReturnWhen::AllCompleted);
        println!(
            "    AllCompleted   returned after {:>6.1?}: {} done, {} not done",
            started.elapsed(),
            first.done.len() + rest.done.len(),
            rest.not_done.len()
        );
        let mut total = 0;
        for f in first.done.into_iter().chain(rest.done) {
            total += f.result()?;
        }
        Ok(total)
    })?);

    // as_completed with progress lines -----------------------------------------
    println!("  as_completed: {FILES} files of tweets, reported as they finish");
    out.push(measure("as_completed", || {
            let started = Instant::now();
            let futures: Vec<_> = (0..FILES)
                .map(|file| ex.submit(process_file, (file,)))
                .collect::<fanout::Result<_>>()?;
            let mut summaries = Vec::new();
            for (n, f) in as_completed(futures, Some(Duration::from_secs(60))).enumerate() {
                let summary = f?.result()?;
                let n = n as u32 + 1;
                if n.is_multiple_of(FILES / 4) {
                    println!(
                        "    [{:>3}%] {n:>2}/{FILES} files, {:>6.1?} (just finished: file {:>2}, {} tweets)",
                        100 * n / FILES,
                        started.elapsed(),
                        summary.file,
                        summary.tweets
                    );
                }
                summaries.push(summary);
            }
            summaries.sort_by_key(|s| s.file);
            Ok(summaries.iter().fold(0, digest))
    })?);

    // map: results in input order --------------------------------------------
    println!("  map: {FILES} files, results in input order");
    out.push(measure("map", || {
        let mut acc = 0;
        for (expected, summary) in (0..FILES).zip(ex.map(process_file, 0..FILES)?) {
            let summary = summary?;
            assert_eq!(summary.file, expected, "map yields in input order");
            acc = digest(acc, &summary);
        }
        Ok(acc)
    })?);
    println!("    every result arrived in input order");

    // map_with: chunksize, buffersize (lazy input), timeout ---------------------
    println!(
        "  map_with: {SMALL_FILES} small files from an endless iterator, \
         chunksize 100, buffersize 1000"
    );
    out.push(measure("map_with", || {
        let opts = MapOptions::default()
            .chunksize(100)
            .buffersize(1000)
            .timeout(Duration::from_secs(60));
        // `0..` never ends: with a buffersize, input is pulled only as results
        // are consumed, and dropping the Map cancels what has not started.
        let results = ex.map_with(process_small_file, 0u32.., opts)?;
        let mut acc = 0;
        for summary in results.take(SMALL_FILES) {
            acc = digest(acc, &summary?);
        }
        Ok(acc)
    })?);

    // a task graph: futures as arguments, put, a failing input ---------------
    println!(
        "  graph: {PRIME_RANGES} count_primes -> weigh(count, i, put(weights)) -> a tree of add2"
    );
    out.push(measure("graph", || {
        // `put` ships the table once; every `weigh` takes it by reference.
        let table = ex.put(weights())?;
        let mut level: Vec<_> = prime_ranges()
            .enumerate()
            .map(|(i, (lo, hi))| {
                let count = ex.submit(count_primes, (lo, hi))?;
                ex.call(weigh).submit((count.arg(), i as u64, table.arg()))
            })
            .collect::<fanout::Result<_>>()?;
        // Pairwise sums: each call waits (Pending) until its two inputs are done;
        // no intermediate value comes back here.
        while level.len() > 1 {
            let mut next = Vec::new();
            for pair in level.chunks(2) {
                next.push(match pair {
                    [a, b] => ex.call(add2).submit((a.arg(), b.arg()))?,
                    [a] => ex.call(add2).submit((a.arg(), 0u64))?,
                    _ => unreachable!("chunks(2) yields one or two"),
                });
            }
            println!(
                "    {} sums submitted, the first {:?}",
                next.len(),
                next[0].state()
            );
            level = next;
        }
        // An input that fails: its dependents (two levels down) do not run
        // and carry its error, the root cause.
        let bad = ex.submit(parse_tweet, (String::new(),))?;
        let doubled = ex.call(words_times).submit((bad.arg(), 2u64))?;
        let plus_one = ex.call(add2).submit((doubled.arg(), 1u64))?;
        match plus_one.result() {
            Err(Error::Dependency { input, error }) => match *error {
                Error::Panicked { message, .. } => println!(
                    "    a dependent of a failing input -> Err(Dependency): input future {input} \
                     failed, root cause: panicked with {message:?}"
                ),
                other => return Err(other),
            },
            other => println!("    a dependent of a failing input -> unexpected: {other:?}"),
        }
        let total = level.pop().expect("one sum left").result()?;
        Ok(total)
    })?);

    Ok(out)
}

/// Errors are values, and shutdown is clean. Takes the executor: it ends here.
fn errors_and_shutdown<E: Executor>(ex: E) -> fanout::Result<()> {
    // A closure that captures, on any backend: `bind` ships the captured
    // value (here `min_len`) beside the arguments.
    let min_len = 5usize;
    let long_words = fanout::bind(min_len, |min: &usize, text: String| {
        text.split_whitespace().filter(|w| w.len() >= *min).count()
    });
    let f = ex.submit(long_words, ("fanout brings futures to rust".to_string(),))?;
    println!(
        "  bind(min_len = {min_len}, |min, text| ..) -> {} long words",
        f.result()?
    );
    println!("  errors are values:");
    let bad = ex.submit(parse_tweet, (String::new(),))?;
    let good = ex.submit(parse_tweet, ("fanout brings futures to rust".to_string(),))?;
    let done = wait([bad, good], None, ReturnWhen::FirstException);
    for f in done.done.into_iter().chain(done.not_done) {
        match f.result() {
            Ok(words) => println!("    parse_tweet -> Ok({words})"),
            // Its Display also carries the worker and, from another process,
            // the remote backtrace; the message and location are enough here.
            Err(Error::Panicked {
                message, location, ..
            }) => println!(
                "    parse_tweet -> Err(Panicked): {message} (at {})",
                location.as_deref().unwrap_or("unknown location")
            ),
            Err(e) => println!("    parse_tweet -> unexpected: {e}"),
        }
    }

    println!("  per-call controls:");
    let marker = std::env::temp_dir()
        .join(format!(
            "fanout-tour-flaky-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ))
        .display()
        .to_string();
    let _ = std::fs::remove_file(&marker);
    let retried = ex
        .call(flaky_fetch)
        .retries(2)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .submit((marker,))?;
    println!("    flaky_fetch with retries(2) -> {:?}", retried.result());
    let limited = ex
        .call(stuck)
        .timeout(Duration::from_millis(300))
        .submit(())?;
    let started = Instant::now();
    match limited.result() {
        Err(e @ Error::Timeout { .. }) => {
            println!(
                "    stuck with timeout(300ms) -> Err(Timeout) after {:.2?}: {e}",
                started.elapsed()
            )
        }
        other => println!("    stuck with timeout(300ms) -> unexpected: {other:?}"),
    }

    // Queue more work than the workers can start, then shut down with
    // cancel_futures: running calls finish, queued ones are cancelled at once.
    let queued: Vec<_> = (0..12)
        .map(|i| ex.submit(slow_add, (i, i, SPIN_ROUNDS)))
        .collect::<fanout::Result<_>>()?;
    let started = Instant::now();
    while !queued[0].running() && !queued[0].done() && started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
    ex.shutdown(true, true);
    let states = queued.iter().map(|f| f.state());
    let finished = states.clone().filter(|s| *s == State::Finished).count();
    let cancelled = states.filter(|s| *s == State::Cancelled).count();
    println!(
        "  shutdown(wait = true, cancel_futures = true) with 12 calls queued: \
         {finished} finished, {cancelled} cancelled"
    );
    match ex.submit(slow_add, (1, 2, 0)) {
        Err(e @ Error::Shutdown) => println!("  submit after shutdown -> Err(Shutdown): {e}"),
        other => println!("  submit after shutdown -> unexpected: {other:?}"),
    }
    Ok(())
}

/// Runs the tour on one backend and records its measurements.
fn run_backend<E: Executor>(
    name: &'static str,
    ex: fanout::Result<E>,
    report: &mut Vec<(&'static str, Vec<Measured>)>,
) -> fanout::Result<()> {
    println!("\n== {name} ==");
    let ex = ex?;
    let started = Instant::now();
    let measured = tour(&ex)?;
    errors_and_shutdown(ex)?;
    println!("  ({name}: {:.2?} in all)", started.elapsed());
    report.push((name, measured));
    Ok(())
}

fn main() -> fanout::Result<()> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("fanout tour: {workers} CPUs, {workers} workers per backend");

    println!("\n== sequential (main thread) ==");
    let seq = sequential()?;
    for m in &seq {
        println!("  {:<13} {:>9.1?}", m.workload, m.elapsed);
    }

    // One line per backend; the workloads are the same code on each.
    let mut report = Vec::new();
    run_backend("ThreadPool", ThreadPool::new(workers), &mut report)?;
    run_backend("ProcessPool", ProcessPool::new(workers), &mut report)?;
    match Redis::try_start() {
        Some(redis) => {
            let cluster = Cluster::builder(&redis.url())
                .namespace("tour")
                .local_workers(workers)
                .build();
            run_backend("Cluster (Redis)", cluster, &mut report)?;
            drop(redis);
        }
        None => println!("\n== Cluster ==\n  skipped: redis-server is not on PATH (apt-get install redis-server)"),
    }

    println!("\n== what it measured ==");
    println!(
        "{:<16} {:<13} {:>11} {:>11} {:>8}  answer",
        "backend", "workload", "sequential", "parallel", "speedup"
    );
    let mut all_match = true;
    for (backend, measured) in &report {
        let (mut seq_total, mut par_total) = (Duration::ZERO, Duration::ZERO);
        for (s, p) in seq.iter().zip(measured) {
            let same = s.answer == p.answer;
            all_match &= same;
            println!(
                "{:<16} {:<13} {:>11.1?} {:>11.1?} {:>7.2}x  {}",
                backend,
                p.workload,
                s.elapsed,
                p.elapsed,
                s.elapsed.as_secs_f64() / p.elapsed.as_secs_f64(),
                if same { "same" } else { "DIFFERENT" }
            );
            seq_total += s.elapsed;
            par_total += p.elapsed;
        }
        println!(
            "{:<16} {:<13} {:>11.1?} {:>11.1?} {:>7.2}x",
            backend,
            "total",
            seq_total,
            par_total,
            seq_total.as_secs_f64() / par_total.as_secs_f64()
        );
    }
    if !all_match {
        return Err(Error::Backend {
            message: "a parallel run gave a different answer from the sequential run".into(),
        });
    }
    Ok(())
}

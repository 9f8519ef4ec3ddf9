//! Offloading CPU-heavy calls from async code: Python's `loop.run_in_executor`.
//!
//! Run it with `cargo run --release --example async_bridge`.
//!
//! An async server loop must not run long computations itself: while it
//! computes, nothing else on its thread makes progress. In Python one writes
//! `await loop.run_in_executor(pool, cpu_heavy, n)`; with fanout it is
//! `pool.submit(cpu_heavy, (n,))?.await`, because a [`fanout::Future`] is also a
//! `std::future::Future`.
//!
//! The program runs the same simulated requests twice on a single-threaded
//! tokio runtime, with a ticker task that should tick every 10 ms:
//!
//! 1. computing inline, in the handlers (what not to do), and
//! 2. offloading the computation to a fanout [`ThreadPool`] and awaiting it,
//!
//! and prints what it measured: the total time, and how late the ticker got.
//! Then it shows `fanout::wrap_future` with `tokio::join!`, a capturing
//! closure through `ThreadPool::spawn`, and that giving up on an awaited
//! future (a tokio timeout) does not cancel the call.

use fanout::{wrap_future, Executor, ThreadPool};
use futures::future::join_all;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The CPU-heavy part of a request: `rounds` steps of a xorshift walk.
fn cpu_heavy(rounds: u64) -> u64 {
    let mut x = rounds | 1;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// How many primes lie below `n` (a second kind of CPU work).
fn count_primes(n: u64) -> u64 {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

const REQUESTS: u64 = 8;
const ROUNDS: u64 = 40_000_000;
const TICK: Duration = Duration::from_millis(10);

/// What the ticker saw while a phase ran.
struct Ticks {
    count: u32,
    worst_gap: Duration,
}

/// Runs `work` while a ticker task ticks every [`TICK`] on the same runtime.
async fn with_ticker<F: std::future::Future>(work: F) -> (F::Output, Ticks) {
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut interval = tokio::time::interval(TICK);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = Instant::now();
            let mut ticks = Ticks {
                count: 0,
                worst_gap: Duration::ZERO,
            };
            while !stop.load(Ordering::Relaxed) {
                interval.tick().await;
                let now = Instant::now();
                ticks.count += 1;
                ticks.worst_gap = ticks.worst_gap.max(now - last);
                last = now;
            }
            ticks
        }
    });
    // Let the ticker start before the work does.
    tokio::task::yield_now().await;
    let output = work.await;
    stop.store(true, Ordering::Relaxed);
    let ticks = ticker.await.expect("the ticker task does not panic");
    (output, ticks)
}

/// A request handler that computes inline: blocks the runtime's thread.
async fn handle_inline(request: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(5)).await; // read the request
    let answer = cpu_heavy(ROUNDS + request);
    tokio::time::sleep(Duration::from_millis(5)).await; // write the response
    answer
}

/// The same handler, offloading the computation: `run_in_executor`.
async fn handle_offloaded(pool: &ThreadPool, request: u64) -> fanout::Result<u64> {
    tokio::time::sleep(Duration::from_millis(5)).await; // read the request
    let answer = pool.submit(cpu_heavy, (ROUNDS + request,))?.await?;
    tokio::time::sleep(Duration::from_millis(5)).await; // write the response
    Ok(answer)
}

fn report(label: &str, elapsed: Duration, ticks: &Ticks) {
    println!(
        "  {label:<10} {REQUESTS} requests in {elapsed:>8.1?}; ticker ticked {:>3} times, \
         longest gap between ticks {:>8.1?} (should be ~{TICK:?})",
        ticks.count, ticks.worst_gap
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> fanout::Result<()> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = ThreadPool::new(workers)?;
    println!(
        "async_bridge: a single-threaded tokio runtime, a fanout ThreadPool of {workers} threads"
    );

    println!("\n== {REQUESTS} concurrent requests, each {ROUNDS} rounds of CPU work ==");
    let started = Instant::now();
    let (inline, ticks) = with_ticker(join_all((0..REQUESTS).map(handle_inline))).await;
    report("inline:", started.elapsed(), &ticks);

    let started = Instant::now();
    let (offloaded, ticks) = with_ticker(join_all(
        (0..REQUESTS).map(|request| handle_offloaded(&pool, request)),
    ))
    .await;
    report("offloaded:", started.elapsed(), &ticks);
    let offloaded: Vec<u64> = offloaded.into_iter().collect::<fanout::Result<_>>()?;
    println!(
        "  both runs computed the same answers: {}",
        if inline == offloaded { "yes" } else { "NO" }
    );

    println!("\n== wrap_future and tokio::join! ==");
    let started = Instant::now();
    let primes = wrap_future(pool.submit(count_primes, (300_000,))?);
    let walk = wrap_future(pool.submit(cpu_heavy, (ROUNDS,))?);
    let (primes, walk) = tokio::join!(primes, walk);
    println!(
        "  count_primes(300000) = {} and cpu_heavy({ROUNDS}) = {:#x}, together in {:.1?}",
        primes?,
        walk?,
        started.elapsed()
    );

    // ThreadPool::spawn takes any closure, capturing included (thread pool only).
    let body = String::from("the quick brown fox jumps over the lazy dog");
    let words = pool.spawn(move || body.split_whitespace().count())?.await?;
    println!("  a capturing closure through ThreadPool::spawn counted {words} words");

    println!("\n== giving up on an awaited future does not cancel the call ==");
    let call = pool.submit(cpu_heavy, (4 * ROUNDS,))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    call.add_done_callback(move |outcome| {
        let _ = tx.send(outcome.clone());
    });
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_millis(20), call).await {
        Ok(outcome) => println!("  finished within 20 ms: {outcome:?}"),
        Err(_) => println!("  tokio::time::timeout(20 ms) gave up and dropped the future"),
    }
    match rx.await {
        Ok(Ok(value)) => println!(
            "  ...the call ran on; its done-callback saw Ok({value:#x}) after {:.1?}",
            started.elapsed()
        ),
        Ok(Err(e)) => println!("  ...the call ran on and failed: {e}"),
        Err(_) => println!("  ...the done-callback never ran"),
    }

    // Dropping the pool would block this thread until running calls finish;
    // shut down explicitly (it is idle now, so this returns at once).
    pool.shutdown(true, false);
    Ok(())
}

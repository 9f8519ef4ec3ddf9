//! A task graph built from futures: the Dask talk's divisibility demo.
//!
//! Which of the numbers `0..10_000_000` are divisible by 3, 5 *and* 7? The
//! data are split into 20 chunks; each chunk gets three independent tasks
//! (divisible by 3? by 5? by 7?, each a bitset as `Vec<u8>`), one task that
//! logical-ands its chunk's three bitsets, and a tree of `concat2` tasks
//! joins the 20 chunk results in order:
//!
//! ```text
//!   chunk 0 ──┬── divisible_by 3 ──┐
//!             ├── divisible_by 5 ──┼── and3 ──┐
//!             └── divisible_by 7 ──┘          │
//!   chunk 1 ──┬── divisible_by 3 ──┐          │
//!             ├── divisible_by 5 ──┼── and3 ──┼── concat2 tree ── count = 95,239
//!             └── divisible_by 7 ──┘          │
//!     ...                                ...  │
//!   chunk 19 ─── (same) ──────────────── and3 ┘
//! ```
//!
//! There is no graph object: the graph is the order of `submit` calls, and
//! an edge is a future passed as an argument (`f.arg()`). Each `and3` takes
//! its chunk's three check futures; the 20 ands are joined pairwise by
//! `concat2` calls that take the ands' futures; only the final bitset comes
//! back to this code. A call waits (`Pending`) until its inputs are done, so
//! ands of early chunks run while later checks are still computing.
//!
//! For comparison the example also runs the old shape, where this code
//! collects each check with `as_completed`, takes its value and submits it
//! again (`through_caller`), and prints the bitset bytes that went through
//! the calling code in each shape.
//!
//! The same graph runs sequentially (plain calls), on a `ThreadPool(2)`, on a
//! `ProcessPool(2)` and on a `Cluster` (a private `redis-server`, 2 local
//! workers, skipped when redis-server is not installed); the count is
//! checked against the closed form: the multiples of 105 in `0..n` number
//! `(n + 104) / 105`.
//!
//! Run it with `cargo run --release --example divisibility` (a few seconds).

use fanout::{as_completed, wait, Cluster, Executor, Future, ProcessPool, ReturnWhen, ThreadPool};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[path = "../benches/common/redis.rs"]
mod redis;
use redis::Redis;

const N: u64 = 10_000_000;
const CHUNKS: u64 = 20;
const DIVISORS: [u64; 3] = [3, 5, 7];
// Chunks must be whole bytes of bitset for `concat` to just append them.
const _: () = assert!((N / CHUNKS).is_multiple_of(8) && N.is_multiple_of(CHUNKS));

/// Bit `k` of the result is set when `start + k` is divisible by `d`.
fn divisible_by(start: u64, end: u64, d: u64) -> Vec<u8> {
    let mut bits = vec![0u8; ((end - start) as usize).div_ceil(8)];
    for x in start..end {
        if x % d == 0 {
            let k = (x - start) as usize;
            bits[k / 8] |= 1 << (k % 8);
        }
    }
    bits
}

/// The logical and of three bitsets.
fn and3(a: Vec<u8>, b: Vec<u8>, c: Vec<u8>) -> Vec<u8> {
    a.iter()
        .zip(&b)
        .zip(&c)
        .map(|((x, y), z)| x & y & z)
        .collect()
}

/// The chunks' bitsets, end to end (each chunk is a multiple of 8 numbers).
fn concat(parts: Vec<Vec<u8>>) -> Vec<u8> {
    parts.concat()
}

/// Two runs of chunks' bitsets, end to end.
fn concat2(mut a: Vec<u8>, b: Vec<u8>) -> Vec<u8> {
    a.extend_from_slice(&b);
    a
}

fn chunk_bounds(c: u64) -> (u64, u64) {
    (c * N / CHUNKS, (c + 1) * N / CHUNKS)
}

/// What one run of the graph reports besides its answer.
struct Run {
    bits: Vec<u8>,
    total: Duration,
    /// When the last `and3` (graph) or the first (through the caller) was submitted.
    first_and: Duration,
    /// Bitset bytes this code received from or sent to the executor.
    through_caller: usize,
}

/// Builds the graph with futures as arguments and runs it on `ex`: only the
/// final bitset comes back to this code.
fn run_graph(ex: &impl Executor) -> fanout::Result<Run> {
    let t = Instant::now();
    let mut ands: Vec<Future<Vec<u8>>> = Vec::new();
    for c in 0..CHUNKS {
        let (start, end) = chunk_bounds(c);
        let [a, b, d] = DIVISORS.map(|d| ex.submit(divisible_by, (start, end, d)));
        ands.push(ex.call(and3).submit((a?.arg(), b?.arg(), d?.arg()))?);
    }
    let first_and = t.elapsed();
    // Join adjacent runs pairwise, in chunk order, until one is left.
    while ands.len() > 1 {
        let mut next = Vec::new();
        for pair in ands.chunks(2) {
            next.push(match pair {
                [a, b] => ex.call(concat2).submit((a.arg(), b.arg()))?,
                [a] => ex.call(concat2).submit((a.arg(), Vec::new()))?,
                _ => unreachable!("chunks(2) yields one or two"),
            });
        }
        ands = next;
    }
    let bits = ands.pop().expect("one run left").result()?;
    Ok(Run {
        through_caller: bits.len(),
        bits,
        total: t.elapsed(),
        first_and,
    })
}

/// The old shape: this code takes every intermediate value and submits it
/// again (what the crate could do before futures were arguments).
fn through_caller(ex: &impl Executor) -> fanout::Result<Run> {
    let t = Instant::now();

    // Layer 1: three checks per chunk, all submitted at once.
    let mut checks: Vec<Future<Vec<u8>>> = Vec::new();
    let mut role: HashMap<u64, (usize, usize)> = HashMap::new(); // future id -> (chunk, divisor)
    for c in 0..CHUNKS {
        let (start, end) = chunk_bounds(c);
        for (k, &d) in DIVISORS.iter().enumerate() {
            let f = ex.submit(divisible_by, (start, end, d))?;
            role.insert(f.id(), (c as usize, k));
            checks.push(f);
        }
    }

    // Layer 2: as checks complete, fill each chunk's three slots; the third
    // one to arrive releases that chunk's and3.
    let mut slots: Vec<[Option<Vec<u8>>; 3]> = (0..CHUNKS).map(|_| [None, None, None]).collect();
    let mut ands: Vec<Future<Vec<u8>>> = Vec::new();
    let mut and_chunk: HashMap<u64, usize> = HashMap::new();
    let mut first_and = None;
    let mut moved = 0;
    for f in as_completed(checks, None) {
        let f = f?;
        let (c, k) = role[&f.id()];
        let bits = f.result()?;
        moved += 2 * bits.len(); // received, then sent to and3
        slots[c][k] = Some(bits);
        if slots[c].iter().all(Option::is_some) {
            let [a, b, d] = std::mem::take(&mut slots[c]).map(|s| s.expect("all three present"));
            let and = ex.submit(and3, (a, b, d))?;
            and_chunk.insert(and.id(), c);
            ands.push(and);
            first_and.get_or_insert_with(|| t.elapsed());
        }
    }

    // Layer 3: wait for every and3, put the parts back in chunk order, concat.
    let done = wait(ands, None, ReturnWhen::AllCompleted);
    assert!(done.not_done.is_empty());
    let mut parts = vec![Vec::new(); CHUNKS as usize];
    for f in done.done {
        let c = and_chunk[&f.id()];
        parts[c] = f.result()?;
        moved += 2 * parts[c].len(); // received, then sent to concat
    }
    let bits = ex.submit(concat, (parts,))?.result()?;
    Ok(Run {
        through_caller: moved + bits.len(),
        bits,
        total: t.elapsed(),
        first_and: first_and.unwrap_or_default(),
    })
}

fn count_and_check(bits: &[u8]) -> u64 {
    let mut count = 0;
    for x in 0..N {
        let set = bits[(x / 8) as usize] >> (x % 8) & 1 == 1;
        assert_eq!(set, x % 105 == 0, "bit {x} is wrong");
        count += u64::from(set);
    }
    count
}

fn main() -> fanout::Result<()> {
    let tasks = CHUNKS * 3 + CHUNKS + (CHUNKS - 1);
    let edges = CHUNKS * 3 + 2 * (CHUNKS - 1);
    println!(
        "task graph: {N} numbers in {CHUNKS} chunks of {}\n  \
         {} x divisible_by(chunk, d) for d in {DIVISORS:?}\n  \
         {CHUNKS} x and3(by 3, by 5, by 7), each depending on its chunk's three\n   \
         {} x concat2(left, right), joining the ands pairwise in chunk order\n  \
         = {tasks} tasks, {edges} dependency edges (futures as arguments)",
        N / CHUNKS,
        CHUNKS * 3,
        CHUNKS - 1,
    );

    // The same graph as plain calls, for the baseline.
    let t = Instant::now();
    let parts: Vec<Vec<u8>> = (0..CHUNKS)
        .map(|c| {
            let (start, end) = chunk_bounds(c);
            let [a, b, d] = DIVISORS.map(|d| divisible_by(start, end, d));
            and3(a, b, d)
        })
        .collect();
    let sequential_bits = concat(parts);
    let sequential = t.elapsed();

    let expected = N.div_ceil(105);
    let count = count_and_check(&sequential_bits);
    assert_eq!(count, expected);
    println!("\nsequential:     {sequential:>9.2?}  count = {count}");

    let threads = ThreadPool::new(2)?;
    let processes = ProcessPool::new(2)?;
    // Let the worker processes come up before timing.
    processes.map(concat, vec![vec![]; 2])?.for_each(drop);
    let redis = Redis::try_start();
    let cluster = match &redis {
        Some(r) => Some(
            Cluster::builder(&r.url())
                .namespace("divisibility")
                .local_workers(2)
                .build()?,
        ),
        None => {
            println!("(Cluster skipped: redis-server is not on PATH)");
            None
        }
    };
    if let Some(c) = &cluster {
        c.map(concat, vec![vec![]; 2])?.for_each(drop);
    }

    let mut timings = vec![("sequential", sequential)];
    let mut runs = vec![
        (
            "ThreadPool(2)",
            through_caller(&threads)?,
            run_graph(&threads)?,
        ),
        (
            "ProcessPool(2)",
            through_caller(&processes)?,
            run_graph(&processes)?,
        ),
    ];
    if let Some(c) = &cluster {
        runs.push(("Cluster(2)", through_caller(c)?, run_graph(c)?));
    }
    for (name, before, run) in runs {
        for r in [&before, &run] {
            assert_eq!(r.bits, sequential_bits);
            assert_eq!(count_and_check(&r.bits), expected);
        }
        println!(
            "{:<15} {:>9.2?}  count = {expected}  (all 20 and3 submitted at {:.2?}; \
             bitset bytes through this code: {} with futures as arguments, {} when \
             every value came back here, which took {:.2?})",
            format!("{name}:"),
            run.total,
            run.first_and,
            run.through_caller,
            before.through_caller,
            before.total,
        );
        timings.push((name, run.total));
    }
    drop(cluster);
    drop(redis);
    println!(
        "\ncount of multiples of 105 below {N}: {expected} = ceil({N} / 105), verified \
         bit by bit on every backend"
    );
    for (name, time) in &timings[1..] {
        // `time` is the graph run (futures as arguments).
        println!(
            "{name}: {:.2}x the sequential speed",
            sequential.as_secs_f64() / time.as_secs_f64()
        );
    }
    Ok(())
}

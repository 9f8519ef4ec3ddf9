//! A task graph built from futures: the Dask talk's divisibility demo.
//!
//! Which of the numbers `0..10_000_000` are divisible by 3, 5 *and* 7? The
//! data are split into 20 chunks; each chunk gets three independent tasks
//! (divisible by 3? by 5? by 7?, each a bitset as `Vec<u8>`), one task that
//! logical-ands its chunk's three bitsets, and a final task concatenates the
//! 20 chunk results:
//!
//! ```text
//!   chunk 0 ──┬── divisible_by 3 ──┐
//!             ├── divisible_by 5 ──┼── and3 ──┐
//!             └── divisible_by 7 ──┘          │
//!   chunk 1 ──┬── divisible_by 3 ──┐          │
//!             ├── divisible_by 5 ──┼── and3 ──┼── concat ── count = 95,239
//!             └── divisible_by 7 ──┘          │
//!     ...                                ...  │
//!   chunk 19 ─── (same) ──────────────── and3 ┘
//! ```
//!
//! There is no graph object: the graph is the order of `submit` calls. The 60
//! check futures are collected with `as_completed`, and a chunk's `and3` is
//! submitted the moment its third check completes, so ands of early chunks
//! run while later checks are still computing. `wait(.., AllCompleted)`
//! gathers the ands before `concat`. (Unlike Dask, results travel through
//! this process between dependent tasks; the bitsets are 62.5 KB each.)
//!
//! The same graph function runs sequentially (plain calls), on a
//! `ThreadPool(2)` and on a `ProcessPool(2)`; the count is checked against
//! the closed form: the multiples of 105 in `0..n` number `(n + 104) / 105`.
//!
//! Run it with `cargo run --release --example divisibility` (a few seconds).

use fanout::{as_completed, wait, Executor, Future, ProcessPool, ReturnWhen, ThreadPool};
use std::collections::HashMap;
use std::time::{Duration, Instant};

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

fn chunk_bounds(c: u64) -> (u64, u64) {
    (c * N / CHUNKS, (c + 1) * N / CHUNKS)
}

/// What one run of the graph reports besides its answer.
struct Run {
    bits: Vec<u8>,
    total: Duration,
    /// When the first `and3` was submitted / when the last check finished.
    first_and: Duration,
    last_check: Duration,
}

/// Builds and runs the graph on `ex`.
fn run_graph(ex: &impl Executor) -> fanout::Result<Run> {
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
    for f in as_completed(checks, None) {
        let f = f?;
        let (c, k) = role[&f.id()];
        slots[c][k] = Some(f.result()?);
        if slots[c].iter().all(Option::is_some) {
            let [a, b, d] = std::mem::take(&mut slots[c]).map(|s| s.expect("all three present"));
            let and = ex.submit(and3, (a, b, d))?;
            and_chunk.insert(and.id(), c);
            ands.push(and);
            first_and.get_or_insert_with(|| t.elapsed());
        }
    }
    let last_check = t.elapsed();

    // Layer 3: wait for every and3, put the parts back in chunk order, concat.
    let done = wait(ands, None, ReturnWhen::AllCompleted);
    assert!(done.not_done.is_empty());
    let mut parts = vec![Vec::new(); CHUNKS as usize];
    for f in done.done {
        let c = and_chunk[&f.id()];
        parts[c] = f.result()?;
    }
    let bits = ex.submit(concat, (parts,))?.result()?;
    Ok(Run {
        bits,
        total: t.elapsed(),
        first_and: first_and.unwrap_or_default(),
        last_check,
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
    let tasks = CHUNKS * 3 + CHUNKS + 1;
    let edges = CHUNKS * 3 + CHUNKS;
    println!(
        "task graph: {N} numbers in {CHUNKS} chunks of {}\n  \
         {} x divisible_by(chunk, d) for d in {DIVISORS:?}\n  \
         {CHUNKS} x and3(by 3, by 5, by 7), each depending on its chunk's three\n   \
         1 x concat({CHUNKS} parts)\n  \
         = {tasks} tasks, {edges} dependency edges, depth 3",
        N / CHUNKS,
        CHUNKS * 3,
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

    let mut timings = vec![("sequential", sequential)];
    for (name, run) in [
        ("ThreadPool(2)", run_graph(&threads)?),
        ("ProcessPool(2)", run_graph(&processes)?),
    ] {
        let count = count_and_check(&run.bits);
        assert_eq!(run.bits, sequential_bits);
        assert_eq!(count, expected);
        println!(
            "{:<15} {:>9.2?}  count = {count}  (first and3 submitted at {:.2?}, \
             before the last check finished at {:.2?})",
            format!("{name}:"),
            run.total,
            run.first_and,
            run.last_check,
        );
        timings.push((name, run.total));
    }
    println!(
        "\ncount of multiples of 105 below {N}: {expected} = ceil({N} / 105), verified \
         bit by bit on every backend"
    );
    for (name, time) in &timings[1..] {
        println!(
            "{name}: {:.2}x the sequential speed",
            sequential.as_secs_f64() / time.as_secs_f64()
        );
    }
    Ok(())
}

//! What one uncontended atomic instruction costs on this machine, with
//! nothing of fanout in it: 100 million back-to-back `fetch_add`s,
//! compare-and-swaps, `SeqCst` fences and (for contrast) plain release
//! stores on one atomic no other thread touches. A thread-pool call pays
//! a dozen or so of the first three (BENCHMARKS.md, twelfth round).
//!
//! ```text
//! cargo run --release --example atomic_cost
//! ```

use std::hint::black_box;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::Instant;

const N: u64 = 100_000_000;

/// Nanoseconds per run of `op`.
fn per_op(op: impl Fn()) -> f64 {
    let start = Instant::now();
    for _ in 0..N {
        op();
    }
    start.elapsed().as_nanos() as f64 / N as f64
}

fn main() {
    let a = AtomicU64::new(0);
    let add = per_op(|| {
        black_box(&a).fetch_add(1, Ordering::AcqRel);
    });
    let cas = per_op(|| {
        let _ = black_box(&a).compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
    });
    let fenced = per_op(|| {
        fence(Ordering::SeqCst);
        black_box(&a);
    });
    let store = per_op(|| black_box(&a).store(1, Ordering::Release));
    println!(
        "fetch_add {add:.1} ns, compare_exchange {cas:.1} ns, SeqCst fence {fenced:.1} ns, \
         release store {store:.2} ns"
    );
}

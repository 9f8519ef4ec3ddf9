//! A crashing native call fails only its own future.
//!
//! The Dask tutorial this project grew from ends with an exercise: load HDF5
//! files on a thread pool, and watch the non-thread-safe library crash the
//! whole Python session. On a `ProcessPool` the same mistake costs one
//! future: the worker that segfaults is reaped and replaced, its call resolves
//! to `Error::WorkerLost` naming the signal, and the rest of the batch
//! completes normally.
//!
//! Run it with `cargo run --release --example crash_isolation`.

use fanout::{as_completed, Error, Executor, ProcessPool};
use std::time::Instant;

/// Stands in for a call into a native library that is not safe to use the
/// way we use it: on "corrupt" input it dereferences a null pointer.
fn load_file(index: u32) -> u64 {
    if index == 13 {
        // SAFETY: it is not; that is the point. This is the "unsafe native
        // code" of the exercise, and it kills the worker process with SIGSEGV.
        unsafe { std::ptr::null_mut::<u64>().write_volatile(u64::from(index)) };
    }
    // Some real work: checksum a synthetic file of 200k values.
    (0..200_000u64).fold(u64::from(index), |acc, x| {
        acc.wrapping_mul(6364136223846793005).wrapping_add(x)
    })
}

fn main() -> fanout::Result<()> {
    let pool = ProcessPool::new(2)?;
    let before = pool.worker_pids();
    println!("worker pids before: {before:?}");

    let started = Instant::now();
    let files = 0..32u32;
    let futures: Vec<_> = files
        .clone()
        .map(|i| pool.submit(load_file, (i,)))
        .collect::<Result<_, _>>()?;
    let ids: Vec<u64> = futures.iter().map(|f| f.id()).collect();

    let (mut ok, mut lost) = (0, 0);
    for done in as_completed(futures, None) {
        let f = done?;
        let index = ids.iter().position(|&id| id == f.id()).unwrap_or(0);
        match f.result() {
            Ok(_) => ok += 1,
            Err(e @ Error::WorkerLost { .. }) => {
                lost += 1;
                println!("file {index:>2}: {e}");
            }
            Err(e) => println!("file {index:>2}: unexpected error: {e}"),
        }
    }
    let after = pool.worker_pids();
    println!("worker pids after:  {after:?} (the crashed worker was replaced)");
    println!(
        "{ok} of {} files loaded, {lost} lost to the crash, in {:.2?}; this process is fine",
        files.len(),
        started.elapsed()
    );
    assert_eq!((ok, lost), (31, 1));
    assert_eq!(after.len(), 2);
    Ok(())
}

//! Stress: two threads push 100 000 calls each onto one pool, with random
//! cancels, panics, short `result_timeout`s and done-callbacks (fixed seeds),
//! and every call is accounted for: ran + panicked + cancelled == submitted.
//! Plus a cancel-versus-start race over shared futures.
//!
//! A watchdog aborts the process if a test runs past 60 s, so a hang (a lost
//! wake-up, a deadlock) fails loudly instead of stalling the suite.

use fanout::{as_completed, wait, Error, Future, ReturnWhen, ThreadPool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[path = "watchdog/mod.rs"]
mod watchdog;
use watchdog::watchdog;

const PER_SUBMITTER: usize = 100_000;
const LIMIT: Duration = Duration::from_secs(60);
const RESOLVE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Counters {
    ran: AtomicUsize,
    panicked: AtomicUsize,
    cancelled: AtomicUsize,
    callbacks_registered: AtomicUsize,
    callbacks_run: AtomicUsize,
    timed_out: AtomicUsize,
}

/// One call the submitter kept, with what its outcome must be.
struct Kept {
    i: usize,
    will_panic: bool,
    cancelled: bool,
    future: Future<usize>,
}

fn check(k_i: usize, will_panic: bool, cancelled: bool, outcome: &fanout::Result<usize>) {
    match outcome {
        Err(Error::Cancelled) => assert!(cancelled, "call {k_i}: cancelled, but not by us"),
        _ if cancelled => panic!("call {k_i}: cancel() said true but got {outcome:?}"),
        Err(Error::Panicked { message, .. }) => {
            assert!(will_panic, "call {k_i} panicked unexpectedly: {message}");
            assert_eq!(message, &format!("planned panic {k_i}"));
        }
        Ok(v) => {
            assert!(!will_panic, "call {k_i} should have panicked");
            assert_eq!(*v, k_i);
        }
        Err(e) => panic!("call {k_i}: unexpected {e}"),
    }
}

fn submitter(pool: Arc<ThreadPool>, seed: u64, base: usize, c: Arc<Counters>) -> Vec<Kept> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kept = Vec::with_capacity(PER_SUBMITTER);
    for n in 0..PER_SUBMITTER {
        let i = base + n;
        let will_panic = rng.gen_bool(0.02);
        let counters = c.clone();
        let future = pool
            .spawn(move || {
                if will_panic {
                    counters.panicked.fetch_add(1, Ordering::Relaxed);
                    panic!("planned panic {i}");
                }
                counters.ran.fetch_add(1, Ordering::Relaxed);
                i
            })
            .unwrap();
        if rng.gen_ratio(1, 8) {
            c.callbacks_registered.fetch_add(1, Ordering::Relaxed);
            let counters = c.clone();
            future.add_done_callback(move |r| {
                check(i, will_panic, matches!(r, Err(Error::Cancelled)), r);
                counters.callbacks_run.fetch_add(1, Ordering::Relaxed);
            });
        }
        let roll = rng.gen_range(0..100);
        let mut cancelled = false;
        if roll < 10 {
            cancelled = future.cancel();
            if cancelled {
                c.cancelled.fetch_add(1, Ordering::Relaxed);
                assert!(future.done() && future.cancelled());
            }
        } else if roll < 12 {
            // A short timed wait: either the outcome, or Timeout (the future
            // is then gone, but its call still runs and is counted).
            let wait = Duration::from_micros(rng.gen_range(0..200));
            match future.result_timeout(wait) {
                Err(Error::Timeout { .. }) => {
                    c.timed_out.fetch_add(1, Ordering::Relaxed);
                }
                outcome => check(i, will_panic, false, &outcome),
            }
            continue;
        }
        kept.push(Kept {
            i,
            will_panic,
            cancelled,
            future,
        });
    }
    kept
}

/// Resolves the kept futures in batches, alternating between `wait`,
/// `as_completed` and plain `result_timeout`.
fn resolve(kept: Vec<Kept>) -> usize {
    let mut resolved = 0;
    let mut kept = kept.into_iter().peekable();
    let mut batch_no = 0;
    while kept.peek().is_some() {
        let batch: Vec<Kept> = kept.by_ref().take(1000).collect();
        let expect: std::collections::HashMap<u64, (usize, bool, bool)> = batch
            .iter()
            .map(|k| (k.future.id(), (k.i, k.will_panic, k.cancelled)))
            .collect();
        let futures: Vec<Future<usize>> = batch.into_iter().map(|k| k.future).collect();
        let done: Vec<Future<usize>> = match batch_no % 3 {
            0 => {
                let r = wait(futures, Some(RESOLVE), ReturnWhen::AllCompleted);
                assert!(
                    r.not_done.is_empty(),
                    "wait timed out with {} left",
                    r.not_done.len()
                );
                r.done
            }
            1 => as_completed(futures, Some(RESOLVE))
                .map(|f| f.expect("as_completed timed out"))
                .collect(),
            _ => futures,
        };
        for f in done {
            let (i, will_panic, cancelled) = expect[&f.id()];
            let outcome = f.result_timeout(RESOLVE);
            assert!(
                !matches!(outcome, Err(Error::Timeout { .. })),
                "call {i} never resolved"
            );
            check(i, will_panic, cancelled, &outcome);
            resolved += 1;
        }
        batch_no += 1;
    }
    resolved
}

#[test]
fn two_submitters_100k_each() {
    let _watchdog = watchdog("two_submitters_100k_each", LIMIT);
    let start = Instant::now();
    let pool = Arc::new(ThreadPool::new(4).unwrap());
    let counters = Arc::new(Counters::default());
    let submitters: Vec<_> = (0..2u64)
        .map(|t| {
            let (pool, counters) = (pool.clone(), counters.clone());
            thread::spawn(move || {
                let kept = submitter(pool, 0xFA_0000 + t, t as usize * PER_SUBMITTER, counters);
                resolve(kept)
            })
        })
        .collect();
    let resolved: usize = submitters.into_iter().map(|s| s.join().unwrap()).sum();
    // Calls whose futures were dropped after a timeout still finish.
    let pool = Arc::try_unwrap(pool).expect("submitters are done");
    drop(pool);
    let elapsed = start.elapsed();

    let c = &counters;
    let (ran, panicked, cancelled) = (
        c.ran.load(Ordering::SeqCst),
        c.panicked.load(Ordering::SeqCst),
        c.cancelled.load(Ordering::SeqCst),
    );
    let total = 2 * PER_SUBMITTER;
    println!(
        "stress: {total} calls in {elapsed:?}: ran {ran}, panicked {panicked}, \
         cancelled {cancelled}, timed out {}, kept and resolved {resolved}, callbacks {}",
        c.timed_out.load(Ordering::SeqCst),
        c.callbacks_run.load(Ordering::SeqCst),
    );
    assert_eq!(ran + panicked + cancelled, total, "calls lost or run twice");
    assert_eq!(
        c.callbacks_run.load(Ordering::SeqCst),
        c.callbacks_registered.load(Ordering::SeqCst),
        "every callback runs exactly once"
    );
    assert!(panicked > 0 && ran > 0);
    assert!(elapsed < LIMIT);
}

/// Cancelling shared futures from one thread while a worker starts them:
/// each call either ran or was cancelled, never both, never neither.
///
/// In each round the worker and the canceller are released together by a
/// barrier and race along the front of a fresh queue; many short rounds keep
/// them contending for the same futures, however the scheduler treats them.
#[test]
fn cancel_races_start() {
    let _watchdog = watchdog("cancel_races_start", LIMIT);
    let start = Instant::now();
    const ROUNDS: usize = 200;
    const PER_ROUND: usize = 100;
    let pool = ThreadPool::new(1).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let (mut n_cancelled, mut n_ran) = (0, 0);
    for round in 0..ROUNDS {
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let b = barrier.clone();
        let gate = pool.spawn(move || {
            b.wait();
        });
        let gate = gate.unwrap();
        let ran: Arc<Vec<AtomicBool>> =
            Arc::new((0..PER_ROUND).map(|_| AtomicBool::new(false)).collect());
        let futures: Arc<Vec<Future<usize>>> = Arc::new(
            (0..PER_ROUND)
                .map(|i| {
                    let ran = ran.clone();
                    pool.spawn(move || {
                        ran[i].store(true, Ordering::SeqCst);
                        i
                    })
                    .unwrap()
                })
                .collect(),
        );
        let try_cancel: Vec<bool> = (0..PER_ROUND).map(|_| rng.gen_bool(0.5)).collect();
        let fs = futures.clone();
        let canceller = thread::spawn(move || {
            barrier.wait();
            (0..PER_ROUND)
                .map(|i| try_cancel[i] && fs[i].cancel())
                .collect::<Vec<bool>>()
        });
        let cancelled = canceller.join().unwrap();
        gate.result_timeout(RESOLVE).unwrap();
        let futures = Arc::try_unwrap(futures).expect("canceller is done");
        for (i, f) in futures.into_iter().enumerate() {
            let outcome = f.result_timeout(RESOLVE);
            if cancelled[i] {
                assert_eq!(outcome, Err(Error::Cancelled), "round {round} call {i}");
            } else {
                assert_eq!(outcome, Ok(i), "round {round} call {i}");
            }
            // Every call has resolved, so `ran` is final for this round.
            assert_ne!(
                ran[i].load(Ordering::SeqCst),
                cancelled[i],
                "round {round} call {i}: ran and cancelled must be exclusive and exhaustive"
            );
        }
        let c = cancelled.iter().filter(|c| **c).count();
        n_cancelled += c;
        n_ran += PER_ROUND - c;
    }
    println!(
        "cancel_races_start: {} calls, {n_cancelled} cancelled, {n_ran} ran, in {:?}",
        ROUNDS * PER_ROUND,
        start.elapsed()
    );
    assert!(n_cancelled > 0 && n_ran > 0);
}

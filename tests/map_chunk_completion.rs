//! A map chunk completes as one unit on the thread and process pools (one
//! job or record, one completion): its items still have their own outcomes,
//! and a timeout, a drop or a lazy refill acts on whole chunks that have
//! not started.

use fanout::{Error, Executor, MapOptions, ProcessPool, ThreadPool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Ok for even items, an `Err` value for odd ones, a panic for 5.
fn mixed(x: u64) -> Result<u64, String> {
    if x == 5 {
        panic!("item five");
    }
    if x.is_multiple_of(2) {
        Ok(x * 10)
    } else {
        Err(format!("odd {x}"))
    }
}

fn check_mixed(ex: &impl Executor) {
    for chunksize in [1, 3, 16] {
        let out: Vec<_> = ex
            .map_with(mixed, 0..12u64, MapOptions::default().chunksize(chunksize))
            .unwrap()
            .collect();
        assert_eq!(out.len(), 12, "chunksize {chunksize}");
        for (x, r) in out.into_iter().enumerate() {
            let x = x as u64;
            match r {
                Ok(Ok(v)) => assert_eq!((x % 2, v), (0, x * 10)),
                Ok(Err(e)) => assert_eq!(e, format!("odd {x}")),
                Err(Error::Panicked { message, .. }) => {
                    assert_eq!((x, message.as_str()), (5, "item five"))
                }
                other => panic!("item {x}, chunksize {chunksize}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_chunk_mixing_values_errors_and_a_panic_keeps_each_outcome() {
    check_mixed(&ThreadPool::new(2).unwrap());
    check_mixed(&ProcessPool::new(2).unwrap());
}

/// Arguments whose serialization fails for one value.
#[derive(serde::Deserialize, Debug)]
struct Picky(u64);

impl serde::Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            3 => Err(serde::ser::Error::custom("three will not travel")),
            4 => panic!("four panics while serializing"),
            n => s.serialize_u64(n),
        }
    }
}

fn unwrap_picky(p: Picky) -> u64 {
    p.0
}

#[test]
fn a_process_chunk_with_unencodable_arguments_fails_only_those_items() {
    let pool = ProcessPool::new(2).unwrap();
    let out: Vec<_> = pool
        .map_with(
            unwrap_picky,
            (0..8).map(Picky),
            MapOptions::default().chunksize(8),
        )
        .unwrap()
        .collect();
    assert_eq!(out.len(), 8);
    for (x, r) in out.into_iter().enumerate() {
        match (x, r) {
            (3 | 4, Err(Error::Codec { .. })) => {}
            (x, Ok(v)) if x != 3 && x != 4 => assert_eq!(v, x as u64),
            (x, other) => panic!("item {x}: {other:?}"),
        }
    }
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn check_timeout_mid_chunk(ex: &impl Executor) {
    // The first chunk's last item outlives the map's timeout while its
    // first items are done: one Timeout for all six items, then the end.
    let items = [0, 0, 2500, 0, 0, 0];
    let opts = MapOptions::default()
        .chunksize(3)
        .timeout(Duration::from_millis(300));
    let mut out = ex.map_with(nap, items, opts).unwrap();
    assert_eq!(out.size_hint(), (1, Some(6)));
    match out.next() {
        Some(Err(Error::Timeout { what: message })) => {
            assert!(message.contains("6 items unfinished"), "{message}")
        }
        other => panic!("expected one Timeout, got {other:?}"),
    }
    assert_eq!(out.next(), None);
    assert_eq!(out.size_hint(), (0, Some(0)));
}

#[test]
fn a_timeout_mid_chunk_yields_one_error_then_ends() {
    check_timeout_mid_chunk(&ThreadPool::new(1).unwrap());
    check_timeout_mid_chunk(&ProcessPool::new(1).unwrap());
}

static RAN: AtomicUsize = AtomicUsize::new(0);

fn counted_nap(ms: u64) -> u64 {
    RAN.fetch_add(1, Ordering::SeqCst);
    nap(ms)
}

#[test]
fn dropping_a_map_mid_chunk_cancels_the_chunks_not_started() {
    // One worker thread: the first chunk runs while the others wait.
    let pool = ThreadPool::new(1).unwrap();
    let items = std::iter::repeat_n(20u64, 40);
    let mut out = pool
        .map_with(counted_nap, items, MapOptions::default().chunksize(4))
        .unwrap();
    assert_eq!(out.size_hint(), (40, Some(40)));
    assert_eq!(out.next(), Some(Ok(20)));
    assert_eq!(out.size_hint(), (39, Some(39)));
    drop(out);
    pool.shutdown(true, false);
    let ran = RAN.load(Ordering::SeqCst);
    assert!((4..40).contains(&ran), "{ran} items ran");
    assert_eq!(ran % 4, 0, "whole chunks run or are cancelled: {ran}");

    // On a process pool, the pool goes on serving after the drop.
    let pool = ProcessPool::new(1).unwrap();
    let mut out = pool
        .map_with(nap, vec![10u64; 40], MapOptions::default().chunksize(4))
        .unwrap();
    assert_eq!(out.next(), Some(Ok(10)));
    drop(out);
    assert_eq!(pool.submit(nap, (1,)).unwrap().result(), Ok(1));
}

fn check_lazy_cancel(ex: &impl Executor) {
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let input = (0u64..).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let opts = MapOptions::default().chunksize(4).buffersize(8);
    let mut out = ex.map_with(|x: u64| x + 1, input, opts).unwrap();
    for k in 0..10u64 {
        assert_eq!(out.next(), Some(Ok(k + 1)));
        assert!(pulled.load(Ordering::SeqCst) <= k as usize + 1 + 9);
    }
    // Chunks submitted lazily are cancelled (or finish) with the map; the
    // input is not pulled again.
    drop(out);
    let at_drop = pulled.load(Ordering::SeqCst);
    assert_eq!(ex.submit(|x: u64| x, (7,)).unwrap().result(), Ok(7));
    assert_eq!(pulled.load(Ordering::SeqCst), at_drop);
}

#[test]
fn a_lazily_submitted_chunk_is_cancelled_with_its_map() {
    check_lazy_cancel(&ThreadPool::new(2).unwrap());
    check_lazy_cancel(&ProcessPool::new(2).unwrap());
}

#[test]
fn a_worker_lost_mid_chunk_fails_that_chunks_items_only() {
    fn die_on_7(x: u64) -> u64 {
        if x == 7 {
            std::process::abort();
        }
        x
    }
    let pool = ProcessPool::new(1).unwrap();
    let out: Vec<_> = pool
        .map_with(die_on_7, 0..12u64, MapOptions::default().chunksize(4))
        .unwrap()
        .collect();
    for (x, r) in out.into_iter().enumerate() {
        match (x / 4, r) {
            (1, Err(Error::WorkerLost { .. })) => {}
            (0 | 2, Ok(v)) => assert_eq!(v, x as u64),
            (_, other) => panic!("item {x}: {other:?}"),
        }
    }
}

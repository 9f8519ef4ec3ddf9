//! `map_with(buffersize, chunksize)` keeps at most `buffersize + 1` items in flight,
//! still sending whole chunks when they fit, on every backend.

use fanout::{Executor, MapOptions, ProcessPool, ThreadPool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn double(x: u64) -> u64 {
    2 * x
}

/// Pulls `0..` while counting how many items were taken from the input.
fn counted(pulled: Arc<AtomicUsize>) -> impl Iterator<Item = u64> + Send + 'static {
    (0u64..).inspect(move |_| {
        pulled.fetch_add(1, Ordering::SeqCst);
    })
}

fn check_bound(ex: &impl Executor) {
    for (buffersize, chunksize) in [(10, 4), (3, 100), (1, 1), (7, 7)] {
        let pulled = Arc::new(AtomicUsize::new(0));
        let opts = MapOptions::default()
            .buffersize(buffersize)
            .chunksize(chunksize);
        let mut results = ex.map_with(double, counted(pulled.clone()), opts).unwrap();
        for consumed in 1..=50usize {
            assert_eq!(results.next(), Some(Ok(2 * (consumed as u64 - 1))));
            let ahead = pulled.load(Ordering::SeqCst) - consumed;
            assert!(
                ahead <= buffersize + 1,
                "buffersize {buffersize}, chunksize {chunksize}: {ahead} items in flight after {consumed} yielded"
            );
        }
    }
}

#[test]
fn thread_pool_bounds_in_flight_items() {
    check_bound(&ThreadPool::new(2).unwrap());
}

#[test]
fn process_pool_bounds_in_flight_items() {
    check_bound(&ProcessPool::new(2).unwrap());
}

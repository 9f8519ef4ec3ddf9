//! The `progress` adapter passes items through untouched.
//!
//! Only built with `--features progress`; a plain `cargo test` skips it.
#![cfg(feature = "progress")]

use fanout::{as_completed, progress, Executor, ProcessPool, ProgressExt, ThreadPool};
use std::time::Duration;

fn square(x: u64) -> u64 {
    x * x
}

fn jittery(x: u64) -> u64 {
    // Later items finish first, so completion order differs from input order.
    std::thread::sleep(Duration::from_millis(2 * (20 - x % 20)));
    x + 1000
}

#[test]
fn map_items_pass_through_in_order() {
    let pool = ThreadPool::new(4).unwrap();
    let expected: Vec<u64> = (0..100).map(square).collect();
    let it = pool.map(jittery, 0..100).unwrap().progress();
    assert_eq!(it.length(), Some(100));
    let got: Vec<u64> = it.map(Result::unwrap).collect();
    assert_eq!(got, (0..100).map(|x| x + 1000).collect::<Vec<_>>());

    let got: Vec<u64> = progress(pool.map(square, 0..100).unwrap(), None)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn map_on_a_process_pool_passes_through_in_order() {
    let pool = ProcessPool::new(2).unwrap();
    let got: Vec<u64> = pool
        .map(square, 0..50)
        .unwrap()
        .progress()
        .with_message("squares")
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..50).map(square).collect::<Vec<_>>());
}

#[test]
fn as_completed_yields_every_future() {
    let pool = ThreadPool::new(4).unwrap();
    let fs: Vec<_> = (0..60)
        .map(|i| pool.submit(jittery, (i,)).unwrap())
        .collect();
    let n = fs.len() as u64;
    let mut it = progress(as_completed(fs, None), Some(n));
    assert_eq!(it.length(), Some(60));
    let mut got: Vec<u64> = it.by_ref().map(|f| f.unwrap().result().unwrap()).collect();
    assert_eq!(it.position(), 60);
    got.sort_unstable();
    assert_eq!(got, (0..60).map(|x| x + 1000).collect::<Vec<_>>());
    // Exhausted and stays exhausted.
    assert!(it.next().is_none());
}

#[test]
fn as_completed_without_a_total_sizes_the_bar_from_its_size_hint() {
    let pool = ThreadPool::new(2).unwrap();
    let fs: Vec<_> = (0..10)
        .map(|i| pool.submit(square, (i,)).unwrap())
        .collect();
    let mut it = progress(as_completed(fs, None), None);
    // `as_completed` without a deadline knows exactly how many futures are left.
    assert_eq!(it.length(), Some(10));
    let sum: u64 = it.by_ref().map(|f| f.unwrap().result().unwrap()).sum();
    assert_eq!(sum, 285);
    assert_eq!(it.position(), 10);
}

#[test]
fn a_timeout_item_passes_through_too() {
    let pool = ThreadPool::new(1).unwrap();
    let slow = pool
        .spawn(|| std::thread::sleep(Duration::from_millis(500)))
        .unwrap();
    let items: Vec<_> = progress(
        as_completed(vec![slow], Some(Duration::from_millis(20))),
        Some(1),
    )
    .collect();
    assert_eq!(items.len(), 1);
    assert!(matches!(items[0], Err(fanout::Error::Timeout { .. })));
}

#[test]
fn length_comes_from_size_hint_and_grows_when_exceeded() {
    assert_eq!(progress(vec![1, 2, 3], None).length(), Some(3));
    // Announces 2, yields 5: the bar grows instead of overflowing.
    let mut it = progress(0..5, Some(2));
    let all: Vec<i32> = it.by_ref().collect();
    assert_eq!(all, [0, 1, 2, 3, 4]);
    assert_eq!(it.length(), Some(5));
    // into_inner resumes where the adapter stopped.
    let mut it = (10..15).progress();
    assert_eq!(it.next(), Some(10));
    assert_eq!(it.into_inner().collect::<Vec<_>>(), [11, 12, 13, 14]);
}

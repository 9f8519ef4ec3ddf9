//! Per-call controls and tasks that submit tasks, on the thread pool.

mod process_util;

use fanout::{as_completed, gather, wait, Error, Executor, ReturnWhen, State, ThreadPool};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn priorities_run_highest_first_fifo_within_a_level() {
    let _watchdog = process_util::watchdog(
        "priorities_run_highest_first_fifo_within_a_level",
        Duration::from_secs(180),
    );
    let pool = ThreadPool::new(1).unwrap();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let busy = pool
        .spawn(move || release_rx.recv_timeout(T).is_ok())
        .unwrap();
    let start = Instant::now();
    while busy.state() != State::Running && start.elapsed() < T {
        std::thread::yield_now();
    }
    assert_eq!(busy.state(), State::Running);
    // Submitted in a scrambled order; tags name (priority, position in level).
    let submissions = [
        (0, "0a"),
        (-1, "-1a"),
        (5, "5a"),
        (0, "0b"),
        (5, "5b"),
        (0, "0c"),
        (5, "5c"),
    ];
    // `spawn` has no options; go through `call` with a shippable task that
    // records into a global log instead.
    static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
    fn record(tag: String) {
        LOG.lock().unwrap().push(tag);
    }
    let fs: Vec<_> = submissions
        .iter()
        .map(|&(p, tag)| {
            pool.call(record)
                .priority(p)
                .submit((tag.to_string(),))
                .unwrap()
        })
        .collect();
    release_tx.send(()).unwrap();
    assert_eq!(busy.result_timeout(T), Ok(true));
    for f in fs {
        f.result_timeout(T).unwrap();
    }
    assert_eq!(
        *LOG.lock().unwrap(),
        ["5a", "5b", "5c", "0a", "0b", "0c", "-1a"]
    );
}

#[test]
fn priority_keeps_fifo_for_plain_calls_behind_ranked_ones() {
    let _watchdog = process_util::watchdog(
        "priority_keeps_fifo_for_plain_calls_behind_ranked_ones",
        Duration::from_secs(180),
    );
    // Level-0 calls submitted before and after a high one keep their order.
    static LOG: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    fn record(i: u32) {
        LOG.lock().unwrap().push(i);
    }
    let pool = ThreadPool::new(1).unwrap();
    let blocker = pool.submit(nap, (200,)).unwrap();
    let mut fs = Vec::new();
    for i in 0..5 {
        fs.push(pool.submit(record, (i,)).unwrap());
    }
    fs.push(pool.call(record).priority(1).submit((100u32,)).unwrap());
    for i in 5..10 {
        fs.push(pool.submit(record, (i,)).unwrap());
    }
    blocker.result_timeout(T).unwrap();
    for f in fs {
        f.result_timeout(T).unwrap();
    }
    assert_eq!(*LOG.lock().unwrap(), [100, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn a_call_with_future_inputs_honours_its_timeout() {
    let _watchdog = process_util::watchdog(
        "a_call_with_future_inputs_honours_its_timeout",
        Duration::from_secs(180),
    );
    let pool = ThreadPool::new(2).unwrap();
    let input = pool.submit(nap, (1,)).unwrap();
    let start = Instant::now();
    let f = pool
        .call(nap)
        .timeout(Duration::from_millis(300))
        .submit((input.arg(),))
        .unwrap();
    // The input (1 ms) finishes, then the call itself sleeps 1 ms: within its limit.
    assert_eq!(f.result_timeout(T), Ok(1));
    let slow_input = pool.submit(nap, (1500,)).unwrap();
    let f = pool
        .call(nap)
        .timeout(Duration::from_millis(300))
        .submit((slow_input.arg(),))
        .unwrap();
    // The limit counts from the call's start, not while it waits for its input,
    // so the call starts after 1.5 s, sleeps 1.5 s itself and overruns at 300 ms.
    process_util::assert_overran(f.result_timeout(T), "300ms", "thread pool");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1800), "{took:?}");
    assert_eq!(slow_input.result_timeout(T), Ok(1500));
}

#[test]
fn timeout_resolves_and_the_thread_runs_on() {
    let _watchdog = process_util::watchdog(
        "timeout_resolves_and_the_thread_runs_on",
        Duration::from_secs(180),
    );
    let pool = ThreadPool::new(1).unwrap();
    let start = Instant::now();
    let f = pool
        .call(nap)
        .timeout(Duration::from_millis(300))
        .submit((1500u64,))
        .unwrap();
    process_util::assert_overran(f.result_timeout(T), "300ms", "thread pool");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1400),
        "{took:?}"
    );
    // The thread was not stopped: the next call waits for it.
    let next = pool.submit(nap, (1,)).unwrap();
    assert_eq!(next.result_timeout(T), Ok(1));
    assert!(start.elapsed() >= Duration::from_millis(1500));
    // A call within its limit is unaffected.
    let ok = pool
        .call(nap)
        .timeout(Duration::from_secs(5))
        .submit((10u64,))
        .unwrap();
    assert_eq!(ok.result_timeout(T), Ok(10));
}

#[test]
fn a_timed_out_call_is_retried() {
    let _watchdog = process_util::watchdog("a_timed_out_call_is_retried", Duration::from_secs(180));
    use std::sync::atomic::{AtomicU32, Ordering};
    static RUNS: AtomicU32 = AtomicU32::new(0);
    fn slow_then_fast() -> u32 {
        let n = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            std::thread::sleep(Duration::from_millis(800));
        }
        n
    }
    let pool = ThreadPool::new(2).unwrap();
    let f = pool
        .call(slow_then_fast)
        .timeout(Duration::from_millis(200))
        .retries(1)
        .submit(())
        .unwrap();
    assert_eq!(f.result_timeout(T), Ok(2));
}

fn child(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(5));
    x * 2
}

fn parent(x: u64) -> u64 {
    let pool = ThreadPool::current().expect("a pool task sees its pool");
    let kids: Vec<_> = (0..3)
        .map(|i| pool.submit(child, (x * 10 + i,)).unwrap())
        .collect();
    gather(kids).unwrap().into_iter().sum()
}

#[test]
fn eight_parents_waiting_on_three_children_each_finish_on_two_threads() {
    let _watchdog = process_util::watchdog(
        "eight_parents_waiting_on_three_children_each_finish_on_two_threads",
        Duration::from_secs(180),
    );
    let pool = ThreadPool::new(2).unwrap();
    let fs: Vec<_> = (0..8u64)
        .map(|x| pool.submit(parent, (x,)).unwrap())
        .collect();
    let got: Vec<u64> = fs
        .into_iter()
        .map(|f| f.result_timeout(T).unwrap())
        .collect();
    let want: Vec<u64> = (0..8u64)
        .map(|x| (0..3).map(|i| (x * 10 + i) * 2).sum())
        .collect();
    assert_eq!(got, want);
}

fn waits_every_way(x: u64) -> u64 {
    let pool = ThreadPool::current().unwrap();
    let a: Vec<_> = (0..2)
        .map(|i| pool.submit(child, (x + i,)).unwrap())
        .collect();
    let done = wait(a, Some(T), ReturnWhen::AllCompleted);
    assert!(done.not_done.is_empty());
    let mut sum: u64 = done.done.into_iter().map(|f| f.result().unwrap()).sum();
    let b: Vec<_> = (0..2)
        .map(|i| pool.submit(child, (x + i,)).unwrap())
        .collect();
    sum += as_completed(b, Some(T))
        .map(|f| f.unwrap().result().unwrap())
        .sum::<u64>();
    sum
}

#[test]
fn nested_wait_and_as_completed_do_not_deadlock_a_one_thread_pool() {
    let _watchdog = process_util::watchdog(
        "nested_wait_and_as_completed_do_not_deadlock_a_one_thread_pool",
        Duration::from_secs(180),
    );
    let pool = ThreadPool::new(1).unwrap();
    let fs: Vec<_> = (0..4u64)
        .map(|x| pool.submit(waits_every_way, (x,)).unwrap())
        .collect();
    for (x, f) in fs.into_iter().enumerate() {
        let x = x as u64;
        assert_eq!(f.result_timeout(T), Ok(2 * ((x * 2 + 1) * 2)));
    }
}

fn deep(level: u32) -> u32 {
    if level == 0 {
        return 0;
    }
    let pool = ThreadPool::current().unwrap();
    pool.submit(deep, (level - 1,)).unwrap().result().unwrap() + 1
}

#[test]
fn a_deep_chain_of_waiting_tasks_finishes() {
    let _watchdog = process_util::watchdog(
        "a_deep_chain_of_waiting_tasks_finishes",
        Duration::from_secs(180),
    );
    let pool = ThreadPool::new(2).unwrap();
    assert_eq!(pool.submit(deep, (50,)).unwrap().result_timeout(T), Ok(50));
}

#[test]
fn handles_are_clones_of_one_pool() {
    let _watchdog =
        process_util::watchdog("handles_are_clones_of_one_pool", Duration::from_secs(180));
    let pool = ThreadPool::new(2).unwrap();
    let other = pool.clone();
    drop(pool);
    // The pool lives on while a handle does.
    assert_eq!(other.submit(child, (4,)).unwrap().result_timeout(T), Ok(8));
    let third = other.clone();
    third.shutdown(true, false);
    assert!(matches!(other.submit(child, (1,)), Err(Error::Shutdown)));
}

#[test]
fn the_last_handle_dropped_waits_for_running_work() {
    let _watchdog = process_util::watchdog(
        "the_last_handle_dropped_waits_for_running_work",
        Duration::from_secs(180),
    );
    let pool = ThreadPool::new(1).unwrap();
    let clone = pool.clone();
    let f = pool.submit(nap, (200,)).unwrap();
    drop(pool);
    let start = Instant::now();
    drop(clone);
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "drop of the last handle waited"
    );
    assert_eq!(f.result_timeout(T), Ok(200));
}

#[test]
fn current_is_none_outside_a_pool() {
    let _watchdog =
        process_util::watchdog("current_is_none_outside_a_pool", Duration::from_secs(180));
    assert!(ThreadPool::current().is_none());
    let pool = ThreadPool::new(1).unwrap();
    let other = ThreadPool::new(1).unwrap();
    // A task of `pool` sees `pool`: a task it submits runs on one of pool's threads.
    let name = pool
        .spawn(|| {
            let me = ThreadPool::current().unwrap();
            me.spawn(|| std::thread::current().name().unwrap().to_string())
                .unwrap()
                .result()
                .unwrap()
        })
        .unwrap();
    assert!(name.result_timeout(T).unwrap().starts_with("fanout-worker"));
    drop(other);
}

//! A task that forks without exec leaves a child holding copies of the
//! worker's pipes. The pool must still notice the real worker's death at
//! once (not when that child exits), and a child that returns from the task
//! into the worker's loop must not answer frames in the worker's name.

mod process_util;

use fanout::Executor;
use process_util::{add, expect_worker_lost, pid, pool, process_gone, watchdog, METHODS, T};
use std::time::{Duration, Instant};

/// Forks a child that sleeps for a minute, writes its pid to `path`, then
/// aborts the worker.
fn fork_sleeper_then_abort(path: String) -> u32 {
    // SAFETY: fork; the child only sleeps and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: a plain sleep, then leave without running anything else.
        unsafe {
            libc::sleep(60);
            libc::_exit(0);
        }
    }
    std::fs::write(&path, child.to_string()).unwrap();
    std::process::abort()
}

/// Forks; both the worker and its copy return from the task.
fn fork_and_both_return() -> u32 {
    // SAFETY: fork; the child returns into the worker's loop, which must
    // end it without it answering.
    let child = unsafe { libc::fork() };
    if child == 0 {
        return 0;
    }
    // Give the copy time to reach the loop (and, unfixed, to answer first).
    std::thread::sleep(Duration::from_millis(100));
    std::process::id()
}

#[test]
fn a_crash_is_seen_at_once_while_a_forked_child_holds_the_pipes() {
    let _w = watchdog(
        "a_crash_is_seen_at_once_while_a_forked_child_holds_the_pipes",
        Duration::from_secs(200),
    );
    let dir = tempfile::tempdir().unwrap();
    for method in METHODS {
        let pool = pool(method, 1);
        let path = dir.path().join(format!("{method:?}")).display().to_string();
        let t0 = Instant::now();
        let r = pool
            .submit(fork_sleeper_then_abort, (path.clone(),))
            .unwrap()
            .result_timeout(T);
        let took = t0.elapsed();
        let sleeper: i32 = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let sleeper_alive = !process_gone(sleeper as u32);
        // SAFETY: ending the child our test task forked, by its pid.
        unsafe { libc::kill(sleeper, libc::SIGKILL) };
        expect_worker_lost(r, "SIGABRT");
        assert!(
            sleeper_alive,
            "{method:?}: the forked child should still hold the pipes"
        );
        assert!(
            took < Duration::from_secs(10),
            "{method:?}: WorkerLost took {took:?}"
        );
        assert_eq!(
            pool.submit(add, (1, 2)).unwrap().result_timeout(T),
            Ok(3),
            "{method:?}"
        );
    }
}

#[test]
fn a_forked_copy_of_the_worker_never_answers() {
    let _w = watchdog(
        "a_forked_copy_of_the_worker_never_answers",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let [worker] = pool.worker_pids()[..] else {
            panic!("one worker")
        };
        for _ in 0..3 {
            let r = pool
                .submit(fork_and_both_return, ())
                .unwrap()
                .result_timeout(T);
            assert_eq!(r, Ok(worker), "{method:?}: only the worker answers");
        }
        assert_eq!(pool.submit(pid, ()).unwrap().result_timeout(T), Ok(worker));
        assert_eq!(
            pool.worker_pids(),
            vec![worker],
            "{method:?}: the worker survived"
        );
    }
}

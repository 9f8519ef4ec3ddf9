//! A forked worker does nothing between `fork` and its worker loop that
//! takes a lock another thread of the parent could hold — the logger's,
//! stderr's or std's backtrace lock — and its panics do not wait for those
//! locks either: the child's copies of them may be held, for good, by
//! threads the child does not have.
//!
//! One test function, because the second half points this process's stderr
//! at a full pipe for a moment.

mod process_util;

use fanout::{Error, Executor, ProcessPool, StartMethod};
use process_util::{add, watchdog, T};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lock of this test's logger (a stand-in for any logger's lock).
static LOG_LOCK: Mutex<()> = Mutex::new(());

struct LockingLogger;

impl log::Log for LockingLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, _: &log::Record) {
        let _held = LOG_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    }
    fn flush(&self) {}
}

fn boom() -> u64 {
    panic!("boom in a forked worker")
}

fn build_fork_pool() -> ProcessPool {
    ProcessPool::builder()
        .workers(1)
        .start_method(StartMethod::Fork)
        .build()
        .unwrap()
}

/// Builds a fork pool on another thread, giving up after `within`.
fn build_within(within: Duration) -> ProcessPool {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(build_fork_pool()).unwrap());
    rx.recv_timeout(within)
        .expect("building the pool waited for a lock another thread holds")
}

fn expect_panicked(r: fanout::Result<u64>) {
    assert!(
        matches!(&r, Err(Error::Panicked { message, .. }) if message.contains("boom")),
        "{r:?}"
    );
}

fn fork_while_the_logger_is_locked() {
    log::set_logger(&LockingLogger).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let held = LOG_LOCK.lock().unwrap();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
        drop(held);
    });
    held_rx.recv().unwrap();
    let pool = build_within(Duration::from_secs(20));
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    // The child's copy of the logger's lock stays held: the worker must not log.
    assert_eq!(pool.submit(add, (2, 3)).unwrap().result_timeout(T), Ok(5));
    expect_panicked(pool.submit(boom, ()).unwrap().result_timeout(T));
    assert_eq!(pool.submit(add, (1, 1)).unwrap().result_timeout(T), Ok(2));
    let t0 = Instant::now();
    drop(pool);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

static PANICKER_TID: AtomicI32 = AtomicI32::new(0);
static PANICKER_DONE: AtomicBool = AtomicBool::new(false);

/// A bare thread (no test-harness output capture), so the default panic
/// hook prints to fd 2 — while holding std's backtrace lock.
extern "C" fn panicker(_: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: gettid has no preconditions.
    PANICKER_TID.store(unsafe { libc::gettid() }, Ordering::SeqCst);
    let _ = std::panic::catch_unwind(|| panic!("printing this blocks on a full stderr"));
    PANICKER_DONE.store(true, Ordering::SeqCst);
    std::ptr::null_mut()
}

/// True while thread `tid` is blocked in write(2, ...).
fn blocked_writing_stderr(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
        .map(|s| s.starts_with("1 0x2 "))
        .unwrap_or(false)
}

fn fork_while_the_backtrace_lock_is_held() {
    // SAFETY: descriptor juggling on our own descriptors; fd 2 is restored below.
    let (saved, pipe_r) = unsafe {
        let saved = libc::dup(2);
        let mut p = [0; 2];
        assert_eq!(libc::pipe(p.as_mut_ptr()), 0);
        let fl = libc::fcntl(p[1], libc::F_GETFL);
        libc::fcntl(p[1], libc::F_SETFL, fl | libc::O_NONBLOCK);
        let chunk = [b'x'; 4096];
        while libc::write(p[1], chunk.as_ptr() as *const libc::c_void, chunk.len()) > 0 {}
        libc::fcntl(p[1], libc::F_SETFL, fl);
        libc::dup2(p[1], 2);
        libc::close(p[1]);
        let fl = libc::fcntl(p[0], libc::F_GETFL);
        libc::fcntl(p[0], libc::F_SETFL, fl | libc::O_NONBLOCK);
        (saved, p[0])
    };
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `panicker` matches pthread's signature and takes no argument.
    assert_eq!(
        unsafe {
            libc::pthread_create(
                &mut thread,
                std::ptr::null(),
                panicker,
                std::ptr::null_mut(),
            )
        },
        0
    );
    let end = Instant::now() + Duration::from_secs(10);
    let blocked = loop {
        let tid = PANICKER_TID.load(Ordering::SeqCst);
        if tid != 0 && blocked_writing_stderr(tid) {
            break true;
        }
        if Instant::now() > end {
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Fork now: the child's backtrace lock is held by a thread it lacks.
    let pool = if blocked {
        Some(build_within(Duration::from_secs(20)))
    } else {
        None
    };
    // SAFETY: restore stderr, then drain the pipe until the panicker is done.
    unsafe { libc::dup2(saved, 2) };
    let mut buf = [0u8; 65536];
    let end = Instant::now() + Duration::from_secs(10);
    while !PANICKER_DONE.load(Ordering::SeqCst) && Instant::now() < end {
        // SAFETY: a non-blocking read into a live buffer.
        unsafe { libc::read(pipe_r, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: joining the thread we created.
    unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
    assert!(blocked, "the panicking thread never blocked on stderr");
    let pool = pool.unwrap();
    // The worker's panic must not wait for its copy of the backtrace lock.
    expect_panicked(pool.submit(boom, ()).unwrap().result_timeout(T));
    assert_eq!(pool.submit(add, (2, 2)).unwrap().result_timeout(T), Ok(4));
    let t0 = Instant::now();
    drop(pool);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // SAFETY: closing our own descriptors.
    unsafe {
        libc::close(saved);
        libc::close(pipe_r);
    }
}

#[test]
fn forked_workers_take_no_lock_the_parent_may_hold() {
    let _w = watchdog(
        "forked_workers_take_no_lock_the_parent_may_hold",
        Duration::from_secs(150),
    );
    fork_while_the_logger_is_locked();
    fork_while_the_backtrace_lock_is_held();
    // A fork with no lock held still gives workers their backtraces.
    let pool = build_fork_pool();
    match pool.submit(boom, ()).unwrap().result_timeout(T) {
        Err(Error::Panicked { backtrace, .. }) => assert!(backtrace.is_some()),
        other => panic!("{other:?}"),
    }
}

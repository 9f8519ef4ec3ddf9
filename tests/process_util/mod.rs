//! Helpers shared by the `tests/process_*.rs` files (each includes this with `mod process_util;`).
#![allow(dead_code)]

pub mod large;

use fanout::{Error, ProcessPool, StartMethod};
use std::time::{Duration, Instant};

/// Both ways of starting workers; every behaviour is checked with each.
pub const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

/// How long any single result may take before the test fails instead of hanging.
pub const T: Duration = Duration::from_secs(30);

pub fn pool(method: StartMethod, workers: usize) -> ProcessPool {
    ProcessPool::builder()
        .workers(workers)
        .start_method(method)
        .build()
        .unwrap_or_else(|e| panic!("{method:?} pool of {workers}: {e}"))
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- tasks -------------------------------------------------------------------

pub fn pid() -> u32 {
    std::process::id()
}

pub fn square(x: u64) -> u64 {
    x * x
}

pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Sleeps `ms` milliseconds and returns `ms`.
pub fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Returns `x` after a short nap (so a batch of these overlaps a crash).
pub fn nap_echo(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(2));
    x
}

/// Creates `path` (a side effect proving the call ran), after sleeping `ms`.
pub fn touch_after(path: String, ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(&path, b"ran").unwrap();
    std::process::id()
}

pub fn abort_now() -> u32 {
    std::process::abort()
}

/// A real segmentation fault (a null write), not a raised signal: a forked
/// worker inherits the pool's Rust SIGSEGV handler, which a raised signal
/// would not get past.
pub fn segfault() -> u32 {
    // SAFETY: not safe at all; this is the point.
    unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
    0
}

pub fn exit3() -> u32 {
    std::process::exit(3)
}

pub fn sigkill_self() -> u32 {
    // SAFETY: signalling ourselves.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    loop {
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- checks ------------------------------------------------------------------

pub fn expect_worker_lost<T: std::fmt::Debug>(r: fanout::Result<T>, needle: &str) {
    match &r {
        Err(Error::WorkerLost { worker, status }) => {
            assert!(
                status.contains(needle),
                "status {status:?} should name {needle:?}"
            );
            assert!(
                worker.contains("pid"),
                "worker {worker:?} should name a pid"
            );
        }
        other => panic!("expected WorkerLost naming {needle:?}, got {other:?}"),
    }
}

/// True once no process `pid` exists, not even as a zombie.
pub fn process_gone(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    let esrch = r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    esrch && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Number of open descriptors of this process.
pub fn open_fds() -> usize {
    // The read_dir handle itself shows up once in its own listing.
    std::fs::read_dir("/proc/self/fd").unwrap().count() - 1
}

/// The open descriptors of this process with what they point at, for messages.
pub fn fd_listing() -> Vec<String> {
    watchdog::open_files()
}

/// True when this process has no child left, zombie or alive.
pub fn no_children() -> bool {
    let mut status = 0;
    // SAFETY: non-blocking wait for any child.
    let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

// ---- in a worker: find and abuse the result pipe -------------------------------

fn pipe_inode(pid: &str, fd: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = link.to_string_lossy().into_owned();
    link.starts_with("pipe:").then_some(link)
}

fn fdinfo_accmode(pid: &str, fd: &str) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
    Some(i32::from_str_radix(flags, 8).ok()? & libc::O_ACCMODE)
}

/// In a worker: the descriptor of its result pipe — the write-only pipe among
/// fds ≥ 3 whose read end the pool (our parent) holds.
pub fn result_pipe_fd() -> Option<i32> {
    let ppid = std::os::unix::process::parent_id().to_string();
    let parent_reads: Vec<String> = std::fs::read_dir(format!("/proc/{ppid}/fd"))
        .ok()?
        .filter_map(|e| {
            let fd = e.ok()?.file_name().to_string_lossy().into_owned();
            (fdinfo_accmode(&ppid, &fd)? == libc::O_RDONLY)
                .then(|| pipe_inode(&ppid, &fd))
                .flatten()
        })
        .collect();
    let mut found = Vec::new();
    for fd in 3..1024 {
        // SAFETY: F_GETFL on a descriptor number; fails harmlessly if closed.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if fl < 0 || fl & libc::O_ACCMODE != libc::O_WRONLY {
            continue;
        }
        if let Some(inode) = pipe_inode("self", &fd.to_string()) {
            if parent_reads.contains(&inode) {
                found.push(fd);
            }
        }
    }
    (found.len() == 1).then(|| found[0])
}

pub fn write_raw(fd: i32, bytes: &[u8]) {
    let mut at = 0;
    while at < bytes.len() {
        // SAFETY: writing from a live slice.
        let n = unsafe {
            libc::write(
                fd,
                bytes[at..].as_ptr() as *const libc::c_void,
                bytes.len() - at,
            )
        };
        assert!(n > 0, "write to the result pipe failed");
        at += n as usize;
    }
}

// ---- hangs fail ----------------------------------------------------------------

#[path = "../watchdog/mod.rs"]
mod watchdog;
/// A hang fails the run (see `tests/watchdog`).
#[allow(unused_imports)]
pub use watchdog::{watchdog, Watchdog};

/// Appends `tag` to the file at `path` (the order calls ran in), after a
/// 10 ms pause so a queue has time to fill behind it.
pub fn log_tag(path: String, tag: u32) -> u32 {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .unwrap();
    writeln!(f, "{tag}").unwrap();
    std::thread::sleep(Duration::from_millis(10));
    tag
}

/// The tags `log_tag` wrote to `path`, in the order the calls ran.
pub fn logged_order(path: &str) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// With `busy` holding the executor's only worker, queues ten level-0 calls
/// of `log_tag` and then one at priority 10 (tagged 99, or taking its tag
/// from the finished future `tag`, a call with an `Arg` input): the high one
/// must run within the first `within` calls (a worker may have taken a few
/// ahead of time) and the level-0 calls in their order.
pub fn check_overtaking<E: fanout::Executor>(
    ex: &E,
    busy: fanout::Future<u64>,
    path: &str,
    within: usize,
    what: &str,
    tag: Option<&fanout::Future<u32>>,
) {
    let queued: Vec<_> = (0..10u32)
        .map(|i| ex.submit(log_tag, (path.to_owned(), i)).unwrap())
        .collect();
    let high = ex.call(log_tag).priority(10);
    let high = match tag {
        None => high.submit((path.to_owned(), 99u32)),
        Some(tag) => high.submit((path.to_owned(), tag.arg())),
    }
    .unwrap();
    assert_eq!(high.result_timeout(T), Ok(99));
    for f in queued {
        f.result_timeout(T).unwrap();
    }
    busy.result_timeout(T).unwrap();
    let order = logged_order(path);
    let at = order.iter().position(|&t| t == 99).unwrap();
    assert!(at <= within, "{what}: the high call ran {at}th: {order:?}");
    let rest: Vec<u32> = order.into_iter().filter(|&t| t != 99).collect();
    assert_eq!(
        rest,
        (0..10).collect::<Vec<_>>(),
        "{what}: FIFO within a level"
    );
}

/// Asserts that `outcome` is `Err(Timeout)` naming the call's `limit`
/// (as `Debug` prints it, e.g. "300ms"); `what` says which case failed.
pub fn assert_overran<V: std::fmt::Debug>(outcome: Result<V, Error>, limit: &str, what: &str) {
    match outcome {
        Err(Error::Timeout { what: message }) => {
            assert!(
                message.contains(limit),
                "{what}: names the limit: {message}"
            )
        }
        other => panic!("{what}: expected Timeout, got {other:?}"),
    }
}

//! The one watchdog of the test suite: a regression must fail, not hang.
//! Even a wait a test does not control (a `Drop` that shuts a pool down, a
//! join) is bounded: past its limit the guard reports which test was stuck,
//! what the process had open and every thread's stack, ends the child
//! processes it started (a Redis server, pool workers: an abort skips the
//! `Drop`s that would stop them, and they outlived the run) and aborts.
//!
//! The report goes straight to the process's standard error, not through
//! `eprintln!`, which the test harness captures and an abort would lose.
//! The stacks come from `gdb` when it is installed (`scripts/test.sh`
//! installs it when it can); without it the report says so.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long gdb gets to print the stacks before the abort goes ahead anyway.
const STACKS_WITHIN: Duration = Duration::from_secs(60);

/// Aborts the process, with a report, unless dropped within its limit.
pub struct Watchdog(Arc<AtomicBool>);

/// A guard for the test named `test`, which must finish within `limit`.
pub fn watchdog(test: &'static str, limit: Duration) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let seen = done.clone();
    std::thread::spawn(move || {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if seen.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        report(&format!(
            "WATCHDOG: test {test} still running after {limit:?}: a hang; aborting."
        ));
        for pid in children() {
            if let Ok(pid) = pid.parse::<libc::pid_t>() {
                // SAFETY: a plain syscall; `pid` is a child of this process
                // (not reaped, since nothing waits while we report).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::process::abort();
    });
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn report(headline: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{headline}");
    let _ = writeln!(err, "child processes: {}", children().join(" "));
    let _ = writeln!(err, "open files:\n  {}", open_files().join("\n  "));
    let _ = err.flush();
    drop(err);
    let _ = match stacks() {
        Ok(stacks) => writeln!(std::io::stderr(), "threads:\n{stacks}"),
        Err(why) => writeln!(std::io::stderr(), "threads: no stacks ({why})"),
    };
}

/// The pids of this process's children, from every thread's list.
fn children() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids: Vec<String> = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort();
    pids
}

/// `fd -> target` for every open descriptor, sorted.
pub fn open_files() -> Vec<String> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut v: Vec<String> = fds
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some(format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            ))
        })
        .collect();
    v.sort();
    v
}

/// Every thread's stack, by `gdb` attached to this process for a moment.
/// (Into a file: while gdb holds the process stopped, no thread of ours
/// could drain a pipe, and a full pipe would stop gdb in turn.)
fn stacks() -> Result<String, String> {
    let pid = std::process::id().to_string();
    let path = std::env::temp_dir().join(format!("watchdog-stacks-{pid}.txt"));
    let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut gdb = Command::new("gdb")
        .args(["-nx", "-batch", "-p", &pid, "-ex", "thread apply all bt"])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("gdb: {e}"))?;
    let end = Instant::now() + STACKS_WITHIN;
    let finished = loop {
        match gdb.try_wait() {
            Ok(Some(_)) => break true,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = gdb.kill();
                let _ = gdb.wait();
                break false;
            }
        }
    };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    if finished {
        Ok(text)
    } else {
        Err(format!(
            "gdb did not finish within {STACKS_WITHIN:?}; it printed:\n{text}"
        ))
    }
}

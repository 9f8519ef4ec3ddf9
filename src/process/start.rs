//! Starting worker processes (spawn or fork), and reaping them.
//!
//! Each worker gets two pipes: the pool writes calls into one and reads
//! results from the other. With [`StartMethod::Spawn`] the worker is this
//! same binary re-executed from `/proc/self/exe` with the environment variable
//! [`WORKER_ENV`] naming its two pipe descriptors; a constructor in this crate
//! (see `worker.rs`) turns the process into a worker before `main` — or the
//! test harness — runs. With [`StartMethod::Fork`] the pool forks and the
//! child serves straight away.

use super::worker;
use super::StartMethod;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Environment variable that makes a re-executed binary a worker: `"<read fd>,<write fd>"`.
pub(crate) const WORKER_ENV: &str = "FANOUT_PROCESS_WORKER";

/// The pool's ends of a started worker's pipes.
pub(crate) struct Started {
    pub(crate) pid: u32,
    /// Calls go here (non-blocking).
    pub(crate) to_worker: OwnedFd,
    /// Results come from here (non-blocking).
    pub(crate) from_worker: OwnedFd,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor we own.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// Grows a pipe's buffer so large frames need fewer wake-ups (best effort).
fn grow_pipe(fd: RawFd) {
    // SAFETY: F_SETPIPE_SZ on a pipe we own; failure is harmless.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// Starts one worker.
pub(crate) fn start(method: StartMethod) -> io::Result<Started> {
    let (call_r, call_w) = pipe()?;
    let (result_r, result_w) = pipe()?;
    grow_pipe(call_w.as_raw_fd());
    grow_pipe(result_w.as_raw_fd());
    let pid = match method {
        StartMethod::Spawn => spawn(&call_r, &result_w)?,
        StartMethod::Fork => fork(call_r.as_raw_fd(), result_w.as_raw_fd())?,
    };
    // The child's ends are closed here in the pool, so each side sees EOF
    // when the other goes away.
    drop((call_r, result_w));
    set_nonblocking(call_w.as_raw_fd())?;
    set_nonblocking(result_r.as_raw_fd())?;
    Ok(Started {
        pid,
        to_worker: call_w,
        from_worker: result_r,
    })
}

fn spawn(call_r: &OwnedFd, result_w: &OwnedFd) -> io::Result<u32> {
    let (r, w) = (call_r.as_raw_fd(), result_w.as_raw_fd());
    let mut cmd = Command::new("/proc/self/exe");
    cmd.env(WORKER_ENV, format!("{r},{w}"))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // SAFETY: the closure only calls fcntl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [r, w] {
                cvt(libc::fcntl(fd, libc::F_SETFD, 0))?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(child.id())
    // Dropping `Child` neither waits nor kills; the pool reaps by pid.
}

fn fork(call_r: RawFd, result_w: RawFd) -> io::Result<u32> {
    // Make sure lazily-initialised state the child needs exists before the
    // fork, so the child never waits on a lock another thread held.
    worker::prepare_for_fork();
    // SAFETY: fork has no memory-safety preconditions; the child below only
    // rearranges descriptors and enters the worker loop, then `_exit`s.
    let pid = cvt(unsafe { libc::fork() })?;
    if pid == 0 {
        // Child: keep only stdio and the two pipe ends, as fds 3 and 4.
        // SAFETY: descriptor juggling in the freshly forked child.
        unsafe {
            let r = libc::fcntl(call_r, libc::F_DUPFD, 1000);
            let w = libc::fcntl(result_w, libc::F_DUPFD, 1000);
            if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                libc::_exit(121);
            }
            close_from(5);
        }
        worker::run_forked(3, 4)
    }
    Ok(pid as u32)
}

/// Closes every descriptor numbered `first` or higher (in a forked child).
unsafe fn close_from(first: RawFd) {
    // SAFETY: closing descriptors we no longer need in this process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if r == 0 {
        return;
    }
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&fd| fd >= first)
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
}

/// Waits for `pid` to exit, killing it if it lingers; returns how it ended.
pub(crate) fn reap(pid: u32) -> String {
    let pid = pid as libc::pid_t;
    let mut status = 0;
    for attempt in 0..100 {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return describe(status);
        }
        if r < 0 {
            return "exited (its status was already collected)".into();
        }
        if attempt == 50 {
            // It closed its pipe but did not exit: make sure it goes.
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: as above; blocking wait after SIGKILL.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        if libc::waitpid(pid, &mut status, 0) == pid {
            return describe(status);
        }
    }
    "vanished".into()
}

/// A descriptor that becomes readable when our child `pid` exits (pidfd,
/// Linux 5.3+); `None` where the kernel has none (then only EOF on the
/// result pipe reveals a death).
pub(crate) fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open on our own unreaped child; no memory is involved.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall returned a new descriptor (close-on-exec) we own.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Kills a worker (used when it broke the protocol).
pub(crate) fn kill(pid: u32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// Human-readable `waitpid` status: "exited with code 3", "killed by signal 11 (SIGSEGV)".
pub(crate) fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let core = if libc::WCOREDUMP(status) {
            ", core dumped"
        } else {
            ""
        };
        format!("killed by signal {sig} ({}{core})", signal_name(sig))
    } else {
        format!("ended with wait status {status:#x}")
    }
}

fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => "signal",
    }
}

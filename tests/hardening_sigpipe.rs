//! A task that writes to a pipe whose reader is gone gets `EPIPE`, as in any
//! Rust program, instead of its worker being killed by SIGPIPE — in workers
//! of both start methods, even when the pool's own process has SIGPIPE at
//! its default disposition when it forks.

mod process_util;

use fanout::Executor;
use process_util::{pool, watchdog, METHODS, T};
use std::time::Duration;

/// Writes to a pipe whose read end is closed; returns the write's errno.
fn write_to_closed_pipe() -> i32 {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: closing our own read end, then writing one byte to the write end.
    unsafe {
        libc::close(fds[0]);
        let n = libc::write(fds[1], b"x".as_ptr() as *const libc::c_void, 1);
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        libc::close(fds[1]);
        if n < 0 {
            errno
        } else {
            0
        }
    }
}

/// What SIGPIPE's disposition is in this process: true when ignored.
fn sigpipe_ignored() -> bool {
    // SAFETY: a query (null new action) of the current disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old);
        old.sa_sigaction == libc::SIG_IGN
    }
}

#[test]
fn writing_to_a_closed_pipe_gives_epipe_in_every_worker() {
    let _w = watchdog(
        "writing_to_a_closed_pipe_gives_epipe_in_every_worker",
        Duration::from_secs(120),
    );
    for method in METHODS {
        // A host program may run with SIGPIPE at its default (a C main, or
        // `-Zon-broken-pipe=kill`); a forked worker would inherit that.
        // SAFETY: changing a signal disposition; restored below.
        let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let pool = pool(method, 1);
        // SAFETY: restoring the disposition saved above.
        unsafe { libc::signal(libc::SIGPIPE, previous) };
        let before = pool.worker_pids();
        let r = pool
            .submit(write_to_closed_pipe, ())
            .unwrap()
            .result_timeout(T);
        assert_eq!(r, Ok(libc::EPIPE), "{method:?}");
        assert_eq!(
            pool.submit(sigpipe_ignored, ()).unwrap().result_timeout(T),
            Ok(true)
        );
        assert_eq!(pool.worker_pids(), before, "{method:?}: the worker lives");
    }
}

//! The worker process: reads TASK frames, runs them, writes DONE frames.
//!
//! # Becoming a worker before `main`
//!
//! A function pointer in `.init_array` runs in every process that links this
//! crate, before `main` (and before a test harness parses its arguments). It
//! looks for [`WORKER_ENV`]; when present, the process serves calls on the two
//! named descriptors and exits with `_exit` when the pool closes its pipe, so
//! `main` never runs. When absent it returns at once. This is why no setup
//! call is needed in binaries, examples or `tests/*.rs` files.
//!
//! Limits: Linux/glibc (`.init_array` receives argc/argv/envp); the binary
//! must link this crate statically (the default for Rust crates); code in a
//! constructor of another crate that runs before ours still runs in workers.

use super::start::WORKER_ENV;
use super::wire::{self, decode_frame, Frame, FrameBuf, FrameWriter, Spliced};
use super::{cma, shm, spare};
use crate::ship::{self, WireError};
use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

#[used]
#[link_section = ".init_array"]
static BECOME_WORKER: extern "C" fn(libc::c_int, *const *const u8, *const *const u8) =
    become_worker;

extern "C" fn become_worker(_argc: libc::c_int, _argv: *const *const u8, _envp: *const *const u8) {
    let Some(spec) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    // Not inherited by anything the tasks start.
    std::env::remove_var(WORKER_ENV);
    let fds: Vec<RawFd> = spec
        .to_str()
        .unwrap_or("")
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let code = match fds[..] {
        [r, w] => serve(r, w, false),
        _ => 120,
    };
    exit(code, true)
}

/// Makes sure the constructor is linked into any binary that starts a pool.
pub(crate) fn linked() -> bool {
    BECOME_WORKER as usize != 0
}

/// Called in the pool before `fork`: initialise what the child will use.
pub(crate) fn prepare_for_fork() {
    let _ = ship::build_id();
    let _ = crate::panic::catch(|| ());
}

/// Entry of a forked child.
pub(crate) fn run_forked(r: RawFd, w: RawFd) -> ! {
    // Never unwind out of here: the stack below is a copy of the pool
    // thread's, and unwinding would run the pool's code in this child.
    let code = std::panic::catch_unwind(|| serve(r, w, true)).unwrap_or(9);
    // No flush: Rust's stdout/stderr locks were copied from the pool's
    // process, where another thread may have held them at the fork (the test
    // harness printing, a logger); flushing would then wait forever, the
    // worker would never exit, and the pool's shutdown would hang.
    exit(code, false)
}

fn exit(code: i32, flush_stdio: bool) -> ! {
    if flush_stdio {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
    }
    // SAFETY: ends the process without running the host program's atexit
    // handlers or destructors, which belong to the pool's process, not us.
    unsafe { libc::_exit(code) }
}

fn write_all(fd: RawFd, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writing from a live slice to our own descriptor.
        let n = unsafe { libc::write(fd, bytes.as_ptr() as *const libc::c_void, bytes.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// Serves frames until the pool closes the pipe. Returns the exit code.
fn serve(input: RawFd, output: RawFd, forked: bool) -> i32 {
    // The pipes reached us without close-on-exec (inheriting them is how a
    // spawned worker gets them; dup2 clears the flag in a forked one). Set it
    // now, or every process a task starts would inherit them: a grandchild
    // outliving a crashed worker would hold the result pipe open, and the
    // pool would not see the crash (EOF) until that grandchild exited.
    for fd in [input, output] {
        // SAFETY: plain fcntl on our own descriptors; failure is harmless.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // As std does before a Rust `main`: a write to a closed pipe fails with
    // EPIPE instead of killing the process. A spawned worker never reaches
    // std's start-up (it serves from a constructor), and a forked one
    // inherits whatever the pool's process had.
    // SAFETY: installing SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if forked {
        // Nothing here may take a lock that another thread of the parent
        // could have held at the fork: no logging, no backtrace on this
        // thread (the probe runs on a thread of its own).
        crate::panic::set_forked_worker();
        if !spawn_bare(Box::new(crate::panic::probe_backtraces)) {
            crate::panic::backtraces_unusable();
        }
    } else {
        crate::panic::set_worker_identity(format!("process worker pid {}", std::process::id()));
    }
    // Large byte-vector outputs lend their buffers to the next arguments.
    super::spare::enable();
    let mine = *ship::build_id();
    let me = std::process::id();
    // SAFETY: registers a child handler that only stores to an atomic.
    unsafe { libc::pthread_atfork(None, None, Some(forked_away)) };
    // Frames are read by a thread of their own into `inbox`, so that while a
    // call runs the worker can still hand back frames it has not started
    // (STEAL → RETURNED) to a pool that has an idle worker for them.
    let inbox = Arc::new(Inbox::default());
    let out_lock = Arc::new(Mutex::new(()));
    {
        let (inbox, out_lock) = (inbox.clone(), out_lock.clone());
        if !spawn_bare(Box::new(move || {
            read_frames(input, output, &inbox, &out_lock)
        })) {
            return 9;
        }
    }
    let mut reply = Vec::with_capacity(64 * 1024);
    let mut shm_out = shm::Outgoing::default();
    // SAFETY: getppid has no preconditions. The pool is our parent.
    let pool_pid = unsafe { libc::getppid() } as u32;
    // Large outputs may be lent from this process's memory (see `cma`).
    let lend_outputs = cma::allowed(cma::Reader::Parent);
    loop {
        let (buffer, offset) = match inbox.next() {
            Ok(frame) => frame,
            Err(code) => return code,
        };
        // The pool's first frame may offer a region for large results.
        if shm_out.adopt(&buffer[offset..], pool_pid) {
            continue;
        }
        // A large argument may be read from the pool's memory (see `cma`).
        let body = match cma::split(&buffer[offset..]) {
            None => &buffer[offset..],
            Some(Err(_)) => return 5,
            Some(Ok((remote, _))) if remote.pid != pool_pid => return 5,
            Some(Ok((remote, inner))) => match cma::read(&remote, spare::take(remote.len), 1) {
                Ok(v) => {
                    spare::set_incoming(Some(v));
                    inner
                }
                Err(_) => return shm::EXIT_UNMAPPABLE,
            },
        };
        // A large frame arrives as a reference to the pool's shared memory.
        let mapped = match shm::map_incoming(body, pool_pid) {
            Ok(m) => m,
            Err(_) => return shm::EXIT_UNMAPPABLE,
        };
        let frame = match decode_frame(mapped.as_deref().unwrap_or(body)) {
            Ok(f) => f,
            Err(_) => return 5,
        };
        let mut w = FrameWriter::new(std::mem::take(&mut reply));
        let keep_going = match frame {
            Frame::Task {
                build_id,
                trampoline,
                captures,
                items,
            } => {
                let mut call = check(&build_id, &mine).and_then(|()| {
                    ship::resolve(trampoline, captures)
                        .map_err(|message| WireError::Refused { message })
                });
                w.begin_done();
                for (id, args) in items {
                    w.outcome(id, |out| match &mut call {
                        Ok(t) => t.call(args, out),
                        Err(e) => Err(e.clone()),
                    });
                    // The flag, per item: `getpid` is a system call (a map
                    // chunk runs hundreds of items per frame).
                    if FORKED_AWAY.load(Ordering::Relaxed) {
                        leave_if_forked(me);
                    }
                }
                // The pid, once per frame, before anything is answered (a
                // copy made by a raw `fork` system call runs no atfork handler).
                leave_if_forked(me);
                w.end();
                true
            }
            Frame::Init {
                build_id,
                trampoline,
                captures,
                args,
            } => {
                let outcome = check(&build_id, &mine)
                    .and_then(|()| {
                        ship::resolve(trampoline, captures)
                            .map_err(|message| WireError::Refused { message })
                    })
                    .and_then(|mut t| t.call(args, &mut Vec::new()));
                // An initializer's output is not sent: nor is a large one set aside.
                if let Some(v) = super::spare::take_tail() {
                    super::spare::keep(v);
                }
                leave_if_forked(me);
                match outcome {
                    Ok(()) => {
                        w.init_ok();
                        true
                    }
                    Err(e) => {
                        w.init_failed(&e);
                        false
                    }
                }
            }
            // A pool never sends these; treat them as a broken pipe.
            Frame::Done { .. }
            | Frame::InitFailed { .. }
            | Frame::InitOk
            | Frame::Steal
            | Frame::Returned { .. } => return 6,
        };
        // An argument read for this frame that no decode took.
        if let Some(v) = spare::set_incoming(None) {
            spare::keep(v);
        }
        let frame = w.into_parts();
        let mut lent = false;
        if !frame.is_empty() {
            // A large output is lent from this process's memory (the pipe
            // carries where it is), or goes through shared memory.
            let by_ref = lend_outputs
                .then(|| frame.detached())
                .flatten()
                .filter(|(_, tail)| tail.len() >= shm::SHM_AT && shm_out.try_lend())
                .map(|(inline, tail)| cma::frame(tail, [&inline[..]].into_iter()));
            lent = by_ref.is_some();
            let small = match by_ref {
                Some(f) => Some(f),
                None => shm_out.offload(frame.pieces()),
            };
            let _out = out_lock.lock().unwrap_or_else(|p| p.into_inner());
            let written = match &small {
                Some(f) => write_all(output, f),
                None => frame.pieces().all(|p| write_all(output, p)),
            };
            if !written {
                return 7;
            }
        }
        // A lent output: nothing runs until the pool has read it, so that a
        // call that kills this worker next cannot take a finished result
        // with it (the pool reads it as soon as the frame arrives).
        let read = !lent || shm_out.wait_read(LENT_WAIT);
        // A large output's buffer takes the next large argument.
        let Spliced { buf, tails, .. } = frame;
        for (_, v) in tails {
            if read {
                spare::keep(v);
            } else {
                // Never read: the pool may still read it; never reuse it.
                std::mem::forget(v);
            }
        }
        reply = buf;
        reply.clear();
        // Keep a large reply buffer warm for the next large result, up to a bound.
        if reply.capacity() > 256 << 20 {
            reply = Vec::with_capacity(64 * 1024);
        }
        if !keep_going {
            return 8;
        }
    }
}

/// How long a worker waits for the pool to read the output it lent (a pool
/// that is alive reads it as soon as the frame arrives).
const LENT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Set in a copy of the worker that a task made with `fork` (an atfork
/// handler registered by `serve`): a cheap check between a frame's calls.
static FORKED_AWAY: AtomicBool = AtomicBool::new(false);

extern "C" fn forked_away() {
    FORKED_AWAY.store(true, Ordering::Relaxed);
}

/// Ends this process, silently, if it is not the worker `original` but a
/// copy of it that a task made with `fork` (without exec) and that returned
/// from the task into this loop. Such a copy shares the worker's pipes: it
/// must never answer or read frames (the pool would take its answers for
/// the worker's), so it leaves without a word.
fn leave_if_forked(original: u32) {
    if std::process::id() != original {
        // SAFETY: ends this copy at once; its memory is a copy of the worker's.
        unsafe { libc::_exit(0) }
    }
}

/// Runs `f` on a bare pthread rather than through `std::thread`.
///
/// A forked worker is a copy of a multi-threaded process; std's thread
/// start-up takes a process-wide lock that another thread of the pool's
/// process may have held at the moment of the fork, and then never returns
/// (seen as a hung worker). The reader thread needs none of that start-up:
/// it only uses libc, std's futex-based `Mutex`/`Condvar` and the allocator,
/// all of which are safe here. A panic in `f` aborts the worker (unwinding
/// out of an `extern "C"` function aborts), which the pool sees as a death.
fn spawn_bare(f: Box<dyn FnOnce() + Send>) -> bool {
    extern "C" fn start(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the box leaked by `spawn_bare`, taken back once here.
        let f = unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>) };
        f();
        std::ptr::null_mut()
    }
    let arg = Box::into_raw(Box::new(f)) as *mut libc::c_void;
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `start` matches pthread's signature and owns `arg` once started.
    let rc = unsafe { libc::pthread_create(&mut thread, std::ptr::null(), start, arg) };
    if rc != 0 {
        // SAFETY: the thread did not start, so `arg` is still ours to free.
        drop(unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>) });
        return false;
    }
    // SAFETY: a thread we just created; nobody joins it.
    unsafe { libc::pthread_detach(thread) };
    true
}

/// Frames read from the pool and not yet started, oldest first.
#[derive(Default)]
struct Inbox {
    state: Mutex<InboxState>,
    arrived: Condvar,
}

#[derive(Default)]
struct InboxState {
    /// Each frame's buffer and the offset of its body in it.
    frames: VecDeque<(Vec<u8>, usize)>,
    /// Set when the pool's pipe ended (or broke): the exit code to use once
    /// the frames already read are done.
    closed: Option<i32>,
    /// The serving thread waits for a frame (only then is it notified: a
    /// notification is a syscall, and a busy worker would pay one per call).
    waiting: bool,
}

impl Inbox {
    /// The next frame to run, or the exit code once there will be none.
    fn next(&self) -> Result<(Vec<u8>, usize), i32> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(body) = st.frames.pop_front() {
                return Ok(body);
            }
            if let Some(code) = st.closed {
                return Err(code);
            }
            st.waiting = true;
            st = self.arrived.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiting = false;
        }
    }

    fn close(&self, code: i32) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = Some(code);
        self.arrived.notify_all();
    }
}

/// The worker's reader thread: queues frames, and answers STEAL at once by
/// handing back every task frame not yet started.
fn read_frames(input: RawFd, output: RawFd, inbox: &Inbox, out_lock: &Mutex<()>) {
    let mut frames = FrameBuf::new();
    loop {
        let range = match frames.next_frame() {
            Ok(Some(r)) => r,
            Ok(None) => match frames.read_from(input) {
                Ok(0) => return inbox.close(if frames.has_partial() { 3 } else { 0 }),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return inbox.close(4),
            },
            Err(_) => return inbox.close(5),
        };
        if wire::is_steal(frames.slice(range.clone())) {
            let returned: Vec<u64> = {
                let mut st = inbox.state.lock().unwrap_or_else(|p| p.into_inner());
                let (tasks, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut st.frames)
                    .into_iter()
                    .partition(|(b, at)| wire::task_first_id(&b[*at..]).is_some());
                st.frames = keep;
                tasks
                    .iter()
                    .filter_map(|(b, at)| wire::task_first_id(&b[*at..]))
                    .collect()
            };
            let mut w = FrameWriter::new(Vec::new());
            w.returned(&returned);
            let _out = out_lock.lock().unwrap_or_else(|p| p.into_inner());
            if !write_all(output, &w.into_inner()) {
                return inbox.close(7);
            }
            continue;
        }
        let frame = frames.take_frame(range);
        let mut st = inbox.state.lock().unwrap_or_else(|p| p.into_inner());
        st.frames.push_back(frame);
        let wake = st.waiting;
        drop(st);
        if wake {
            inbox.arrived.notify_one();
        }
    }
}

fn check(theirs: &ship::BuildId, mine: &ship::BuildId) -> Result<(), WireError> {
    if theirs == mine {
        Ok(())
    } else {
        Err(WireError::Refused {
            message: format!(
                "the call comes from a different build of the program (caller build id {}, \
                 worker build id {})",
                ship::hex(theirs),
                ship::hex(mine)
            ),
        })
    }
}

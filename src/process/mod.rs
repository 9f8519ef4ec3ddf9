//! [`ProcessPool`]: calls shipped to persistent worker processes of this same binary.
//!
//! # How it fits together
//!
//! * **Queue.** Submitted calls wait in one queue in the pool, pending and
//!   cancellable. Calls are handed to a worker only when it has room: at most
//!   [`MAX_AHEAD`] frames (a frame is one call, or one `map` chunk) are with a
//!   worker at once, and the least-loaded worker is always chosen, so no
//!   worker idles while calls wait in the queue.
//! * **Dispatch** happens on the submitting thread and on each result; frames
//!   for one worker accumulate in its outbox and go out in one `writev`.
//! * **I/O.** One thread per worker slot polls that worker's result pipe (and
//!   its call pipe when the outbox is backed up). Writes are non-blocking, so
//!   the pool can never deadlock against a worker that is writing a large
//!   result while the pool is writing a large call.
//! * **Crashes.** When a worker's pipe closes, the thread reaps it; the frame
//!   it was running fails with [`Error::WorkerLost`] naming the exit status or
//!   signal, frames it had not started go back to the front of the queue as
//!   pending, and a replacement starts in the same slot.

mod controls;
mod shm;
mod start;
pub mod wire;
mod worker;

use crate::codec_guard;
use crate::executor::Submitter;
use crate::future::{remote_pair, Promise};
use crate::ship::{self, BuildId, Encoded};
use crate::{Error, Executor, Future, Payload, Result, Task};
use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::{JoinHandle, ThreadId};

use start::Started;
use wire::{decode_frame, task_frame, Frame, FrameBuf, FrameWriter, Piece, MAX_FRAME};

/// Frames (single calls or map chunks) handed to one worker ahead of time.
pub const MAX_AHEAD: usize = 3;

/// How worker processes are started.
///
/// ```
/// use fanout::{ProcessPool, StartMethod};
/// let pool = ProcessPool::builder().workers(1).start_method(StartMethod::Fork).build().unwrap();
/// assert_eq!(pool.worker_pids().len(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartMethod {
    /// Re-execute this binary (`/proc/self/exe`); the child becomes a worker
    /// before `main` runs. Safe with any number of threads in the parent.
    #[default]
    Spawn,
    /// `fork()` the pool's process. Starts faster, but the child inherits a
    /// copy of a multi-threaded process: tasks must not need a lock another
    /// thread of the parent might have held at fork time (stdout, a logger,
    /// your own mutexes). Prefer `Spawn` unless start-up time matters.
    ///
    /// **Stale random state.** Every forked worker starts with a copy of the
    /// parent's memory, random number generators included. After the
    /// parent has drawn from `rand::random()`, 16 draws spread over 4
    /// forked workers give only a handful of distinct values (each worker
    /// repeats the same sequence; with `Spawn`: 16). The fix is to reseed in
    /// the pool's initializer, which runs in every worker before its first
    /// call — keep your own generator (or use `rand::rngs::OsRng` in tasks):
    ///
    /// ```
    /// use fanout::{Executor, ProcessPool, StartMethod};
    /// use rand::{rngs::StdRng, Rng, SeedableRng};
    /// use std::cell::RefCell;
    ///
    /// thread_local! {
    ///     static RNG: RefCell<StdRng> = RefCell::new(StdRng::from_entropy());
    /// }
    /// fn reseed() {
    ///     RNG.with(|r| *r.borrow_mut() = StdRng::from_entropy());
    /// }
    /// fn draw() -> u64 {
    ///     RNG.with(|r| r.borrow_mut().gen())
    /// }
    ///
    /// let _ = draw(); // the parent uses its generator before forking
    /// let pool = ProcessPool::builder()
    ///     .workers(4)
    ///     .start_method(StartMethod::Fork)
    ///     .initializer(reseed, ()) // runs in every worker
    ///     .build()?;
    /// let fs: Vec<_> = (0..16).map(|_| pool.submit(draw, ())).collect::<Result<_, _>>()?;
    /// let values: std::collections::HashSet<u64> =
    ///     fs.into_iter().map(|f| f.result()).collect::<Result<_, _>>()?;
    /// assert_eq!(values.len(), 16);
    /// # Ok::<(), fanout::Error>(())
    /// ```
    Fork,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pool's side of one call: how its outcome gets decoded and delivered.
trait Delivery: Send {
    fn id(&self) -> u64;
    fn set_running(&self) -> bool;
    fn set_pending(&self);
    fn deliver(self: Box<Self>, outcome: Result<&[u8]>);
}

impl<R: Payload> Delivery for Promise<R> {
    fn id(&self) -> u64 {
        Promise::id(self)
    }
    fn set_running(&self) -> bool {
        Promise::set_running(self)
    }
    fn set_pending(&self) {
        Promise::set_pending(self);
    }
    fn deliver(self: Box<Self>, outcome: Result<&[u8]>) {
        if let Ok(bytes) = outcome {
            // A future with `Arg`s keeps its result bytes for its dependents.
            if self.cell().wants_encoded() {
                self.cell().keep_encoded(Ok(bytes.into()));
            }
        }
        let outcome = outcome.and_then(codec_guard::decode::<R>);
        // Completing runs user code too (a waker; dropping the value when
        // its future is gone); a panic there must not kill the I/O thread,
        // which delivers every other result of this worker slot.
        let id = self.id();
        if let Err(e) = crate::panic::catch(move || self.set_outcome(outcome)) {
            log::error!("delivering the result of future {id} panicked: {e}");
        }
    }
}

struct Item {
    /// Shared with the outbox while the frame is being written.
    args: Arc<Encoded>,
    delivery: Box<dyn Delivery>,
}

/// One frame's worth of calls to one function: a single submit or a map chunk.
struct Batch {
    /// The trampoline and the captures sent with it.
    trampoline: ship::Callee,
    items: Vec<Item>,
    /// The batch's TASK frame in shared memory, when it is large (see `shm`).
    shm: Option<shm::Lent>,
    /// Higher leaves the queue first (see `controls`).
    priority: i32,
    /// The call's run-time limit (single calls only).
    limit: Option<std::time::Duration>,
}

/// A worker process as the pool's bookkeeping sees it.
struct WorkerBook {
    pid: u32,
    link: Arc<Link>,
    /// Frames sent and not yet answered, oldest first; the front one is running.
    in_flight: VecDeque<Batch>,
    /// Calls sent over this worker's life (for `max_tasks_per_child`).
    sent: usize,
    /// Its call pipe is being closed; it gets nothing more.
    closing: bool,
    /// Its initializer (if any) has succeeded.
    initialized: bool,
    /// A STEAL request is on its way; its RETURNED answer has not arrived.
    steal_pending: bool,
    /// The call whose run-time limit is armed (see `controls`).
    armed: Option<u64>,
    /// Its running call overran this limit; it is being killed.
    timed_out: Option<std::time::Duration>,
}

struct State {
    queue: VecDeque<Batch>,
    slots: Vec<Option<WorkerBook>>,
    shutdown: bool,
    broken: Option<String>,
    live_threads: usize,
    threads: Vec<JoinHandle<()>>,
    io_thread_ids: Vec<ThreadId>,
}

struct Config {
    workers: usize,
    start: StartMethod,
    max_tasks_per_child: Option<usize>,
    init: Option<(ship::Callee, Vec<u8>)>,
    build_id: BuildId,
    /// The tag of this pool's futures (see `Executor::owner`).
    owner: u64,
}

struct Shared {
    config: Config,
    state: Mutex<State>,
    thread_exited: Condvar,
    /// Idle shared-memory regions for large call frames.
    shm: Arc<shm::Cache>,
    /// The pool itself, for timers that fire later.
    me: OnceLock<Weak<Shared>>,
}

/// The pool's end of one worker's call pipe, with the frames waiting to go out.
struct Link {
    outbox: Mutex<Outbox>,
    /// Wakes the slot's I/O thread (eventfd).
    wake: OwnedFd,
    /// The region the worker puts large results in (see `shm`).
    results: Option<shm::Results>,
}

struct Outbox {
    frames: VecDeque<Piece>,
    /// Bytes of the front frame already written.
    offset: usize,
    close_when_empty: bool,
    /// Only the slot's I/O thread closes it (it polls on the raw number).
    fd: Option<OwnedFd>,
}

enum Flush {
    Done,
    Blocked,
}

impl Link {
    fn new(to_worker: OwnedFd) -> std::io::Result<Link> {
        // SAFETY: plain eventfd creation.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Link {
            outbox: Mutex::new(Outbox {
                frames: VecDeque::new(),
                offset: 0,
                close_when_empty: false,
                fd: Some(to_worker),
            }),
            // SAFETY: eventfd succeeded; we own the descriptor.
            wake: unsafe { OwnedFd::from_raw_fd(efd) },
            results: shm::Results::new(),
        })
    }

    /// Writes queued frames without blocking.
    fn flush(&self) -> Flush {
        let mut ob = lock(&self.outbox);
        loop {
            if ob.frames.is_empty() {
                return Flush::Done;
            }
            let Some(fd) = ob.fd.as_ref().map(AsRawFd::as_raw_fd) else {
                ob.frames.clear();
                return Flush::Done;
            };
            let iov: Vec<libc::iovec> = ob
                .frames
                .iter()
                .take(64)
                .enumerate()
                .map(|(i, f)| {
                    let f = f.bytes();
                    let part = if i == 0 { &f[ob.offset..] } else { f };
                    libc::iovec {
                        iov_base: part.as_ptr() as *mut libc::c_void,
                        iov_len: part.len(),
                    }
                })
                .collect();
            // SAFETY: every iovec points into a frame owned by `ob`, which the
            // lock keeps alive and unchanged during the call.
            let n = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => return Flush::Blocked,
                    // The worker is gone; its I/O thread will see EOF and
                    // account for the calls.
                    _ => {
                        ob.frames.clear();
                        ob.offset = 0;
                        return Flush::Done;
                    }
                }
            }
            let mut n = n as usize;
            while n > 0 {
                let left = ob.frames[0].bytes().len() - ob.offset;
                if n >= left {
                    n -= left;
                    ob.frames.pop_front();
                    ob.offset = 0;
                } else {
                    ob.offset += n;
                    n = 0;
                }
            }
        }
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    /// Sends what is queued; wakes the I/O thread when it must finish the job.
    fn kick(&self) {
        let blocked = matches!(self.flush(), Flush::Blocked);
        if blocked || lock(&self.outbox).close_when_empty {
            self.wake();
        }
    }
}

impl Shared {
    fn worker_name(pid: u32) -> String {
        format!("process worker pid {pid}")
    }

    /// Hands queued calls to workers with room, and closes workers that are
    /// done. Runs under the state lock; returns the links to flush after it.
    fn dispatch(&self, st: &mut State) -> Vec<Arc<Link>> {
        let mut touched: Vec<Arc<Link>> = Vec::new();
        let max_tasks = self.config.max_tasks_per_child;
        if st.broken.is_none() {
            while !st.queue.is_empty() {
                let pick = st
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        let b = s.as_ref()?;
                        let has_room = !b.closing
                            && b.in_flight.len() < MAX_AHEAD
                            && max_tasks.is_none_or(|m| b.sent < m);
                        has_room.then_some((b.in_flight.len(), i))
                    })
                    .min();
                let Some((_, i)) = pick else { break };
                let Some(Batch {
                    trampoline,
                    items,
                    shm,
                    priority,
                    limit,
                }) = st.queue.pop_front()
                else {
                    break;
                };
                let submitted = items.len();
                let items: Vec<Item> = items
                    .into_iter()
                    .filter(|it| it.delivery.set_running())
                    .collect();
                if items.is_empty() {
                    continue;
                }
                // A frame in shared memory is only good for all its calls.
                let shm = shm.filter(|_| items.len() == submitted);
                let pieces = match &shm {
                    Some(lent) => vec![Piece::Own(lent.frame())],
                    None => self.task_pieces(&trampoline, &items),
                };
                let Some(book) = st.slots[i].as_mut() else {
                    break;
                };
                lock(&book.link.outbox).frames.extend(pieces);
                book.sent += items.len();
                book.in_flight.push_back(Batch {
                    trampoline,
                    items,
                    shm,
                    priority,
                    limit,
                });
                controls::arm_front(self, i, book);
                if !touched.iter().any(|l| Arc::ptr_eq(l, &book.link)) {
                    touched.push(book.link.clone());
                }
            }
        }
        if st.broken.is_none() && st.queue.is_empty() {
            let idle = st.slots.iter().flatten().any(|b| {
                !b.closing && b.in_flight.is_empty() && max_tasks.is_none_or(|m| b.sent < m)
            });
            if idle {
                for book in st.slots.iter_mut().flatten() {
                    // Frames behind its running one could run on the idle
                    // worker: ask for the ones not started back (STEAL); they
                    // return through `RETURNED` and are dispatched again.
                    if book.in_flight.len() >= 2 && !book.steal_pending {
                        book.steal_pending = true;
                        let mut w = FrameWriter::new(Vec::new());
                        w.steal();
                        lock(&book.link.outbox)
                            .frames
                            .push_back(Piece::Own(w.into_inner()));
                        if !touched.iter().any(|l| Arc::ptr_eq(l, &book.link)) {
                            touched.push(book.link.clone());
                        }
                    }
                }
            }
        }
        let finished = st.broken.is_some() || (st.shutdown && st.queue.is_empty());
        for book in st.slots.iter_mut().flatten() {
            let retire = max_tasks.is_some_and(|m| book.sent >= m);
            if !book.closing && book.in_flight.is_empty() && (finished || retire) {
                book.closing = true;
                lock(&book.link.outbox).close_when_empty = true;
                if !touched.iter().any(|l| Arc::ptr_eq(l, &book.link)) {
                    touched.push(book.link.clone());
                }
            }
        }
        touched
    }

    /// The TASK frame for `items`, as pieces for `writev`.
    fn task_pieces(&self, trampoline: &ship::Callee, items: &[Item]) -> Vec<Piece> {
        let calls: Vec<(u64, Arc<Encoded>)> = items
            .iter()
            .map(|it| (it.delivery.id(), it.args.clone()))
            .collect();
        task_frame(&self.config.build_id, trampoline, &calls)
    }

    /// Puts a large batch's TASK frame into shared memory (on the
    /// submitting thread, before the batch is queued).
    fn offload(&self, batch: &mut Batch) {
        let body: usize = 33
            + batch.trampoline.captures().len()
            + batch
                .items
                .iter()
                .map(|it| 12 + it.args.len())
                .sum::<usize>();
        if body < shm::SHM_AT {
            return;
        }
        let Some(first) = batch.items.first().map(|it| it.delivery.id()) else {
            return;
        };
        let pieces = self.task_pieces(&batch.trampoline, &batch.items);
        batch.shm = shm::offload(&self.shm, pieces.iter().map(Piece::bytes), first);
        drop(pieces);
        // A single call's frame in shared memory is never rebuilt (it cannot
        // be partly cancelled), so its argument bytes can go now.
        if let (Some(_), [only]) = (&batch.shm, &mut batch.items[..]) {
            only.args = Arc::default();
        }
    }

    /// Queues batches and dispatches them.
    fn enqueue(&self, batches: Vec<Batch>) -> Result<()> {
        self.try_enqueue(batches).map_err(|(e, _)| e)
    }

    /// Queues batches and dispatches them; hands them back when refused.
    fn try_enqueue(&self, batches: Vec<Batch>) -> std::result::Result<(), (Error, Vec<Batch>)> {
        let touched = {
            let mut st = lock(&self.state);
            if let Some(reason) = &st.broken {
                let reason = reason.clone();
                return Err((Error::Broken { reason }, batches));
            }
            if st.shutdown {
                return Err((Error::Shutdown, batches));
            }
            controls::enqueue_ranked(&mut st.queue, batches);
            self.dispatch(&mut st)
        };
        for link in touched {
            link.kick();
        }
        Ok(())
    }

    /// Marks the pool broken and fails everything queued.
    fn break_pool(&self, st: &mut State, reason: String) -> Vec<Item> {
        log::error!("process pool broken: {reason}");
        st.broken.get_or_insert(reason);
        st.queue.drain(..).flat_map(|b| b.items).collect()
    }

    /// Starts a worker into `slot`; returns its pid and result pipe.
    fn install(
        &self,
        st: &mut State,
        slot: usize,
        started: Started,
    ) -> std::io::Result<(u32, OwnedFd)> {
        let Started {
            pid,
            to_worker,
            from_worker,
        } = started;
        let link = Arc::new(Link::new(to_worker)?);
        if let Some(results) = &link.results {
            let offer = results.offer();
            lock(&link.outbox).frames.push_back(Piece::Own(offer));
        }
        if let Some((trampoline, args)) = &self.config.init {
            let mut w = FrameWriter::new(Vec::new());
            w.init(&self.config.build_id, trampoline, args);
            lock(&link.outbox)
                .frames
                .push_back(Piece::Own(w.into_inner()));
        }
        st.slots[slot] = Some(WorkerBook {
            pid,
            link,
            in_flight: VecDeque::new(),
            sent: 0,
            closing: false,
            initialized: self.config.init.is_none(),
            steal_pending: false,
            armed: None,
            timed_out: None,
        });
        Ok((pid, from_worker))
    }
}

/// Why a worker's pipe stopped.
enum Ending {
    /// End of file: the worker exited or died.
    Closed,
    /// It sent something that is not a valid frame; it was killed.
    Malformed(String),
}

/// The I/O thread of one worker slot: serves a worker, and its replacements.
fn slot_thread(shared: Arc<Shared>, slot: usize, mut pid: u32, mut from_worker: OwnedFd) {
    loop {
        let Some(link) = lock(&shared.state).slots[slot]
            .as_ref()
            .map(|b| b.link.clone())
        else {
            break;
        };
        link.kick();
        let ending = serve_worker(&shared, slot, pid, &link, &from_worker);
        drop(from_worker);
        if let Ending::Malformed(_) = ending {
            start::kill(pid);
        }
        let status = start::reap(pid);
        let worker = Shared::worker_name(pid);

        // Account for the calls it held, and decide on a replacement.
        let mut st = lock(&shared.state);
        let book = st.slots[slot].take();
        let mut lost = Vec::new();
        let mut init_died = false;
        let timed_out = book.as_ref().and_then(|b| b.timed_out);
        if let Some(mut book) = book {
            init_died = !book.initialized;
            drop(lock(&book.link.outbox).fd.take());
            if let Some(running) = book.in_flight.pop_front() {
                lost = running.items;
            }
            // Frames it never started go back to the front of the queue.
            for batch in book.in_flight.into_iter().rev() {
                for it in &batch.items {
                    it.delivery.set_pending();
                }
                st.queue.push_front(batch);
            }
        }
        let mut failed: Vec<Item> = Vec::new();
        // A worker that died before its initializer finished (the initializer
        // crashed or exited) would die the same way in every replacement: the
        // pool would respawn workers in a tight loop (hundreds a second) while
        // every call failed with WorkerLost. Break the pool instead, as a
        // panicking initializer does.
        if init_died && st.broken.is_none() && matches!(ending, Ending::Closed) {
            let reason = format!("the initializer ended {worker}: {status}");
            failed = shared.break_pool(&mut st, reason);
        }
        let lost_error = match (&st.broken, &ending) {
            (Some(reason), _) => Error::Broken {
                reason: reason.clone(),
            },
            (None, _) if timed_out.is_some() => {
                controls::timeout_error(timed_out.unwrap_or_default(), &worker)
            }
            (None, Ending::Malformed(why)) => Error::Codec {
                type_name: "frame".into(),
                message: format!(
                    "{worker} sent a malformed frame ({why}); it was killed and replaced"
                ),
            },
            (None, Ending::Closed) => Error::WorkerLost {
                worker: worker.clone(),
                status: status.clone(),
            },
        };
        if !lost.is_empty() {
            log::warn!("{worker} {status} with {} call(s) running", lost.len());
        }
        let replace = st.broken.is_none() && !(st.shutdown && st.queue.is_empty());
        let mut next = None;
        if replace {
            drop(st);
            let started = start::start(shared.config.start);
            st = lock(&shared.state);
            match started.and_then(|s| shared.install(&mut st, slot, s)) {
                Ok(p) => next = Some(p),
                Err(e) => {
                    failed.extend(shared.break_pool(
                        &mut st,
                        format!("could not start a replacement worker: {e}"),
                    ));
                }
            }
        }
        // A broken pool dispatches nothing more, so calls still queued — such
        // as the frames requeued above from a worker whose initializer failed
        // before it read them — would wait forever: fail them too.
        if st.broken.is_some() {
            failed.extend(st.queue.drain(..).flat_map(|b| b.items));
        }
        let broken = st.broken.clone();
        let touched = shared.dispatch(&mut st);
        if next.is_none() {
            st.live_threads -= 1;
            shared.thread_exited.notify_all();
        }
        drop(st);
        for it in lost {
            it.delivery.deliver(Err(lost_error.clone()));
        }
        let reason = broken.unwrap_or_default();
        for it in failed {
            it.delivery.deliver(Err(Error::Broken {
                reason: reason.clone(),
            }));
        }
        for link in touched {
            link.kick();
        }
        match next {
            Some((p, fd)) => {
                pid = p;
                from_worker = fd;
            }
            None => break,
        }
    }
}

/// Pumps one worker's pipes until it closes its end. Delivers results.
fn serve_worker(
    shared: &Shared,
    slot: usize,
    pid: u32,
    link: &Link,
    from_worker: &OwnedFd,
) -> Ending {
    let from = from_worker.as_raw_fd();
    let mut frames = FrameBuf::new();
    // The worker's own exit, seen without waiting for EOF: a process that a
    // task forked (without exec) holds a copy of the result pipe's write
    // end, and keeps the pipe open after the worker itself died.
    let exited = start::pidfd(pid);
    let mut worker_gone = false;
    loop {
        // Closing the call pipe is this thread's job (see `Outbox::fd`).
        let out_fd: Option<RawFd> = {
            let mut ob = lock(&link.outbox);
            if ob.close_when_empty && ob.frames.is_empty() {
                drop(ob.fd.take());
            }
            match &ob.fd {
                Some(fd) if !ob.frames.is_empty() => Some(fd.as_raw_fd()),
                _ => None,
            }
        };
        let mut fds = [
            libc::pollfd {
                fd: from,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: link.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: out_fd.unwrap_or(-1),
                events: libc::POLLOUT,
                revents: 0,
            },
            libc::pollfd {
                fd: exited.as_ref().map_or(-1, AsRawFd::as_raw_fd),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of four pollfds (a negative fd is ignored).
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 4, -1) };
        if r < 0 {
            continue; // EINTR
        }
        if fds[3].revents != 0 {
            // It is gone: read what it wrote before it died, then stop, even
            // if the pipe stays open.
            worker_gone = true;
            fds[0].revents = libc::POLLIN;
        }
        if fds[1].revents != 0 {
            let mut buf = 0u64;
            // SAFETY: an 8-byte read from our eventfd into a u64.
            unsafe {
                libc::read(
                    link.wake.as_raw_fd(),
                    &mut buf as *mut u64 as *mut libc::c_void,
                    8,
                )
            };
            if controls::overran(shared, slot) {
                start::kill(pid);
            }
        }
        if fds[2].revents != 0 {
            link.flush();
        }
        if fds[0].revents == 0 {
            continue;
        }
        loop {
            match frames.read_from(from) {
                Ok(0) => {
                    return if frames.has_partial() {
                        Ending::Malformed("its pipe closed in the middle of a frame".into())
                    } else {
                        Ending::Closed
                    };
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if worker_gone {
                        return Ending::Closed;
                    }
                    break;
                }
                Err(_) => return Ending::Closed,
            }
            loop {
                let range = match frames.next_frame() {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => return Ending::Malformed(e.0),
                };
                let body = frames.slice(range);
                // A large result arrives in the worker's result region.
                let mapped = match link.results.as_ref().map(|r| r.incoming(body)) {
                    Some(Err(why)) => return Ending::Malformed(why),
                    Some(Ok(m)) => m,
                    None => None,
                };
                if let Err(why) = handle_frame(shared, slot, pid, mapped.as_deref().unwrap_or(body))
                {
                    return Ending::Malformed(why);
                }
            }
        }
    }
}

/// Handles one frame from a worker.
fn handle_frame(
    shared: &Shared,
    slot: usize,
    pid: u32,
    body: &[u8],
) -> std::result::Result<(), String> {
    let worker = Shared::worker_name(pid);
    match decode_frame(body).map_err(|e| e.0)? {
        Frame::Done { results } => {
            let (batch, touched) = {
                let mut st = lock(&shared.state);
                let Some(book) = st.slots[slot].as_mut() else {
                    return Err("results from a worker the pool no longer tracks".into());
                };
                let matches = book.in_flight.front().is_some_and(|b| {
                    b.items.len() == results.len()
                        && b.items
                            .iter()
                            .zip(&results)
                            .all(|(it, (id, _))| it.delivery.id() == *id)
                });
                if !matches {
                    return Err("results that do not match the calls it was given".into());
                }
                let batch = book.in_flight.pop_front();
                controls::arm_front(shared, slot, book);
                (batch, shared.dispatch(&mut st))
            };
            for link in touched {
                link.kick();
            }
            if let Some(batch) = batch {
                for (it, (_, outcome)) in batch.items.into_iter().zip(results) {
                    it.delivery
                        .deliver(outcome.map_err(|e| e.into_error(&worker)));
                }
            }
            Ok(())
        }
        Frame::InitFailed { error } => {
            let error = error.into_error(&worker);
            let (failed, touched) = {
                let mut st = lock(&shared.state);
                let failed = shared.break_pool(&mut st, format!("the initializer failed: {error}"));
                (failed, shared.dispatch(&mut st))
            };
            let reason = format!("the initializer failed: {error}");
            for it in failed {
                it.delivery.deliver(Err(Error::Broken {
                    reason: reason.clone(),
                }));
            }
            for link in touched {
                link.kick();
            }
            Ok(())
        }
        Frame::InitOk => {
            if let Some(book) = lock(&shared.state).slots[slot].as_mut() {
                book.initialized = true;
            }
            Ok(())
        }
        Frame::Returned { frames } => {
            let touched = {
                let mut st = lock(&shared.state);
                let Some(book) = st.slots[slot].as_mut() else {
                    return Err("a reply from a worker the pool no longer tracks".into());
                };
                book.steal_pending = false;
                let mut back = Vec::new();
                for first in frames {
                    let at = book
                        .in_flight
                        .iter()
                        .position(|b| b.items.first().is_some_and(|it| it.delivery.id() == first));
                    // Any position: after answering the front frame, a worker
                    // may hand back the next one before it starts it.
                    match at {
                        Some(at) => back.extend(book.in_flight.remove(at)),
                        None => return Err("it handed back a frame it was not holding".into()),
                    }
                }
                book.armed = None;
                controls::arm_front(shared, slot, book);
                for batch in back.into_iter().rev() {
                    for it in &batch.items {
                        it.delivery.set_pending();
                    }
                    st.queue.push_front(batch);
                }
                shared.dispatch(&mut st)
            };
            for link in touched {
                link.kick();
            }
            Ok(())
        }
        Frame::Task { .. } | Frame::Init { .. } | Frame::Steal => {
            Err("a frame only a pool may send".into())
        }
    }
}

/// A pool of worker processes, like Python's `ProcessPoolExecutor`.
///
/// Workers are this same binary: started by re-executing it
/// ([`StartMethod::Spawn`], the default) or by `fork` ([`StartMethod::Fork`]).
/// No setup call is needed anywhere — a binary, an example or a `tests/*.rs`
/// file works as it is. Calls must be fn items or non-capturing closures
/// with serde arguments and results.
///
/// A task that panics gives [`Error::Panicked`] (the worker survives); a
/// worker that dies (abort, segfault, `exit`, SIGKILL) fails only the call it
/// was running with [`Error::WorkerLost`] and is replaced.
///
/// ```
/// use fanout::{Executor, ProcessPool};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = ProcessPool::new(2).unwrap();
/// assert_eq!(pool.submit(square, (7,)).unwrap().result(), Ok(49));
/// let squares: Vec<u64> = pool.map(square, 0..5).unwrap().map(Result::unwrap).collect();
/// assert_eq!(squares, [0, 1, 4, 9, 16]);
/// ```
///
/// A closure that captures variables cannot be shipped to another process;
/// it is rejected when the program is built (pass the values as arguments):
///
/// ```compile_fail
/// use fanout::{Executor, ProcessPool};
/// let pool = ProcessPool::new(1).unwrap();
/// let offset = 10u64;
/// let f = pool.submit(move |x: u64| x + offset, (1,)); // error: captures `offset`
/// ```
///
/// # How workers start, and the limits
///
/// The crate puts a constructor in `.init_array`; it runs before `main` in
/// every process linking fanout and returns at once unless the process was
/// started as a worker (an environment variable names its two pipes). So a
/// re-executed binary, example or test harness serves calls without ever
/// reaching `main`, and no setup call is needed. Limits: Linux only; the
/// worker is the *same build* (every frame carries the build id, and a
/// worker refuses calls from another); constructors of other libraries still
/// run in workers; with [`StartMethod::Fork`] the child is a copy of a
/// multi-threaded process (see there). Large `Vec<u8>` arguments and results
/// travel without serde's per-byte overhead, and a call or result frame of
/// 1 MiB or more goes through shared memory (`memfd`s of the pool that
/// workers open through `/proc/<pool pid>/fd`: a pool that is not dumpable
/// keeps large frames in the pipes).
///
/// # Per-call controls
///
/// [`Executor::call`]: `priority` orders the pool's queue (higher first,
/// FIFO within a level; frames a worker already holds run first);
/// `timeout` kills the worker running an overdue call (SIGKILL), resolves
/// its future to `Err(Timeout)` naming the limit and starts a replacement;
/// `resources` is ignored.
///
/// # Tasks that submit tasks
///
/// There is no `ProcessPool::current()`: a worker process has no pool to
/// hand out, and a pool started inside a task would be a second pool of
/// processes per task. A task that needs more parallel work should return
/// what it found and let the caller submit the follow-up calls (or pass the
/// first call's future to the next with [`Future::arg`](crate::Future::arg));
/// a task that needs a pool of its own may build one (`ProcessPool::new`),
/// or a [`ThreadPool`](crate::ThreadPool) for in-process fan-out.
pub struct ProcessPool {
    shared: Arc<Shared>,
}

impl ProcessPool {
    /// A pool of `workers` processes started with [`StartMethod::Spawn`]; 0 is `InvalidArgument`.
    ///
    /// ```
    /// assert!(fanout::ProcessPool::new(0).is_err());
    /// ```
    pub fn new(workers: usize) -> Result<ProcessPool> {
        ProcessPool::builder().workers(workers).build()
    }

    /// A builder for worker count, start method, recycling and an initializer.
    ///
    /// ```
    /// let pool = fanout::ProcessPool::builder().workers(1).max_tasks_per_child(100).build().unwrap();
    /// assert_eq!(pool.worker_pids().len(), 1);
    /// ```
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::default()
    }

    /// The pids of the live worker processes.
    ///
    /// ```
    /// let pool = fanout::ProcessPool::new(2).unwrap();
    /// let pids = pool.worker_pids();
    /// assert_eq!(pids.len(), 2);
    /// assert!(!pids.contains(&std::process::id()));
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        lock(&self.shared.state)
            .slots
            .iter()
            .flatten()
            .map(|b| b.pid)
            .collect()
    }

    fn items<Args: Payload, R: Payload>(
        owner: u64,
        batch: Vec<Args>,
    ) -> (Vec<Item>, Vec<Future<R>>) {
        let mut items = Vec::with_capacity(batch.len());
        let mut futures = Vec::with_capacity(batch.len());
        for args in batch {
            let (future, promise) = remote_pair::<R>(owner);
            let encoded = codec_guard::encode_owned(args).and_then(|e| {
                if e.len() > MAX_FRAME / 2 {
                    Err(Error::Codec {
                        type_name: std::any::type_name::<Args>().into(),
                        message: format!(
                            "encoded arguments take {} bytes, over the {} byte limit",
                            e.len(),
                            MAX_FRAME / 2
                        ),
                    })
                } else {
                    Ok(e)
                }
            });
            match encoded {
                Ok(e) => items.push(Item {
                    args: Arc::new(e),
                    delivery: Box::new(promise),
                }),
                Err(e) => promise.set_error(e),
            }
            futures.push(future);
        }
        (items, futures)
    }

    /// Splits items into batches that fit in one frame (each frame carries
    /// the captures once, at most a quarter of a frame: see `submitter`).
    fn batches(trampoline: ship::Callee, items: Vec<Item>) -> Vec<Batch> {
        Self::batches_with(trampoline, items, 0, None)
    }

    /// [`ProcessPool::batches`] at a priority, with a run-time limit per batch.
    fn batches_with(
        trampoline: ship::Callee,
        items: Vec<Item>,
        priority: i32,
        limit: Option<std::time::Duration>,
    ) -> Vec<Batch> {
        let mut batches = Vec::new();
        let mut current = Vec::new();
        let mut size = 0;
        for it in items {
            if !current.is_empty() && size + it.args.len() + 12 > MAX_FRAME / 2 {
                batches.push(Batch {
                    trampoline: trampoline.clone(),
                    items: std::mem::take(&mut current),
                    shm: None,
                    priority,
                    limit,
                });
                size = 0;
            }
            size += it.args.len() + 12;
            current.push(it);
        }
        if !current.is_empty() {
            batches.push(Batch {
                trampoline,
                items: current,
                shm: None,
                priority,
                limit,
            });
        }
        batches
    }
}

impl Executor for ProcessPool {
    fn submit<F, Args>(&self, f: F, args: Args) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let _ = f;
        let mut submit = self.submitter::<F, Args>(f);
        let mut fs = submit(vec![args])?;
        fs.pop()
            .ok_or_else(|| Error::invalid("internal: a batch of one produced no future"))
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let (cancelled, touched) = {
            let mut st = lock(&self.shared.state);
            st.shutdown = true;
            let cancelled: Vec<Item> = if cancel_futures {
                st.queue.drain(..).flat_map(|b| b.items).collect()
            } else {
                Vec::new()
            };
            (cancelled, self.shared.dispatch(&mut st))
        };
        for it in cancelled {
            it.delivery.deliver(Err(Error::Cancelled));
        }
        for link in touched {
            link.kick();
        }
        if !wait {
            return;
        }
        let me = std::thread::current().id();
        let mut st = lock(&self.shared.state);
        if st.io_thread_ids.contains(&me) {
            log::warn!("shutdown(wait = true) called from the pool's own I/O thread (a done-callback); not waiting");
            return;
        }
        while st.live_threads > 0 {
            st = self
                .shared
                .thread_exited
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
        let threads = std::mem::take(&mut st.threads);
        drop(st);
        for t in threads {
            let _ = t.join();
        }
    }

    fn submitter<F, Args>(&self, f: F) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        // The captures are encoded once here and shared by every batch.
        let callee = callee_within_frame::<F, Args>(&f);
        let shared = self.shared.clone();
        Box::new(move |batch: Vec<Args>| {
            let trampoline = callee.clone()?;
            let (items, futures) =
                ProcessPool::items::<Args, F::Output>(shared.config.owner, batch);
            if !items.is_empty() {
                let mut batches = ProcessPool::batches(trampoline, items);
                for b in &mut batches {
                    shared.offload(b);
                }
                // On error the items were never queued; the error goes to the caller.
                shared.enqueue(batches)?;
            }
            Ok(futures)
        })
    }

    fn submit_with<F, Args>(
        &self,
        f: F,
        args: Args,
        options: &crate::CallOptions,
    ) -> Result<Future<F::Output>>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        if options.priority == 0 && options.timeout.is_none() {
            return self.submit(f, args);
        }
        let mut submit = self.options_submitter::<F, Args>(f, options);
        let mut fs = submit(vec![args])?;
        fs.pop()
            .ok_or_else(|| Error::invalid("internal: a batch of one produced no future"))
    }

    fn submitter_with<F, Args>(
        &self,
        f: F,
        options: &crate::CallOptions,
    ) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        if options.priority == 0 && options.timeout.is_none() {
            return self.submitter(f);
        }
        self.options_submitter::<F, Args>(f, options)
    }

    fn owner(&self) -> u64 {
        self.shared.config.owner
    }

    fn launcher<F, Args>(&self, f: F) -> crate::graph::Launcher<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        // The captures (of a `bind`) are encoded once, for every launch.
        let callee = f.__callee();
        let shared = Arc::downgrade(&self.shared);
        // The inputs' result bytes are spliced into the argument frame as
        // they are: a postcard tuple is its elements' encodings end to end.
        crate::graph::Launcher::new(move |ready, promise, _options| {
            let Some(shared) = shared.upgrade() else {
                return promise.set_error(Error::Shutdown);
            };
            let trampoline = match callee.clone() {
                Ok(t) => t,
                Err(e) => return promise.set_error(e),
            };
            if ready.len() > MAX_FRAME / 2 {
                return promise.set_error(Error::Codec {
                    type_name: std::any::type_name::<Args>().into(),
                    message: format!(
                        "encoded arguments take {} bytes, over the {} byte limit",
                        ready.len(),
                        MAX_FRAME / 2
                    ),
                });
            }
            let item = Item {
                args: Arc::new(Encoded {
                    head: match ready.concat() {
                        Ok(head) => head,
                        Err(e) => return promise.set_error(e),
                    },
                    body: Vec::new(),
                }),
                delivery: Box::new(promise),
            };
            if let Err((e, batches)) =
                shared.try_enqueue(ProcessPool::batches(trampoline, vec![item]))
            {
                for it in batches.into_iter().flat_map(|b| b.items) {
                    it.delivery.deliver(Err(e.clone()));
                }
            }
        })
    }
}

/// `f`'s callee (trampoline and encoded captures), refused with `Codec`
/// when the captures would take more than a quarter of a frame.
fn callee_within_frame<F, Args>(f: &F) -> Result<ship::Callee>
where
    F: Task<Args>,
    Args: Payload,
    F::Output: Payload,
{
    let c = f.__callee()?;
    if c.captures().len() > MAX_FRAME / 4 {
        return Err(Error::Codec {
            type_name: std::any::type_name::<F>().into(),
            message: format!(
                "encoded captures take {} bytes, over the {} byte limit",
                c.captures().len(),
                MAX_FRAME / 4
            ),
        });
    }
    Ok(c)
}

impl ProcessPool {
    /// The submission hook for calls with options: priority and a run-time
    /// limit (resources are ignored by the process pool).
    fn options_submitter<F, Args>(
        &self,
        f: F,
        options: &crate::CallOptions,
    ) -> Submitter<Args, F::Output>
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        // As in `submitter`: the captures are encoded once, within a quarter frame.
        let callee = callee_within_frame::<F, Args>(&f);
        let shared = self.shared.clone();
        let (priority, limit) = (options.priority, options.timeout);
        Box::new(move |batch: Vec<Args>| {
            let trampoline = callee.clone()?;
            let (items, futures) =
                ProcessPool::items::<Args, F::Output>(shared.config.owner, batch);
            if !items.is_empty() {
                // One batch per call, so each call's limit is its own.
                let batches = items
                    .into_iter()
                    .flat_map(|it| {
                        ProcessPool::batches_with(trampoline.clone(), vec![it], priority, limit)
                    })
                    .collect();
                shared.enqueue(batches)?;
            }
            Ok(futures)
        })
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.shared.state);
        f.debug_struct("ProcessPool")
            .field("workers", &self.shared.config.workers)
            .field("start", &self.shared.config.start)
            .field(
                "pids",
                &st.slots.iter().flatten().map(|b| b.pid).collect::<Vec<_>>(),
            )
            .field("queued", &st.queue.len())
            .field("broken", &st.broken)
            .finish()
    }
}

/// Configures a [`ProcessPool`]; see [`ProcessPool::builder`].
///
/// ```
/// use fanout::{ProcessPool, StartMethod};
/// fn warm_up(level: u32) { assert!(level < 10); }
/// let pool = ProcessPool::builder()
///     .workers(2)
///     .start_method(StartMethod::Spawn)
///     .max_tasks_per_child(1000)
///     .initializer(warm_up, (3,))
///     .build()
///     .unwrap();
/// # drop(pool);
/// ```
#[derive(Default)]
pub struct ProcessPoolBuilder {
    workers: Option<usize>,
    start: StartMethod,
    max_tasks_per_child: Option<usize>,
    init: Option<Result<(ship::Callee, Vec<u8>)>>,
}

impl ProcessPoolBuilder {
    /// Number of worker processes (default: the number of CPUs).
    ///
    /// ```
    /// assert!(fanout::ProcessPool::builder().workers(0).build().is_err());
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// How workers start (default [`StartMethod::Spawn`]).
    ///
    /// ```
    /// let b = fanout::ProcessPool::builder().start_method(fanout::StartMethod::Fork);
    /// # drop(b);
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start = method;
        self
    }

    /// A worker exits after running `n` calls (counting whole map chunks) and
    /// is replaced by a fresh one; 0 is rejected by `build`.
    ///
    /// ```
    /// use fanout::{Executor, ProcessPool};
    /// fn pid() -> u32 { std::process::id() }
    /// let pool = ProcessPool::builder().workers(1).max_tasks_per_child(1).build().unwrap();
    /// let a = pool.submit(pid, ()).unwrap().result().unwrap();
    /// let b = pool.submit(pid, ()).unwrap().result().unwrap();
    /// assert_ne!(a, b);
    /// ```
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Runs `f(args...)` in every worker before its first call. If it panics
    /// the pool is broken: pending futures and later submits get [`Error::Broken`].
    ///
    /// ```
    /// use fanout::{Error, Executor, ProcessPool};
    /// fn connect(url: String) { panic!("cannot reach {url}") }
    /// fn one() -> u32 { 1 }
    /// let pool = ProcessPool::builder()
    ///     .workers(1)
    ///     .initializer(connect, ("db://nowhere".to_string(),))
    ///     .build()
    ///     .unwrap();
    /// let outcome = pool.submit(one, ()).and_then(|f| f.result());
    /// assert!(matches!(outcome, Err(Error::Broken { .. })));
    /// ```
    pub fn initializer<F, Args>(mut self, f: F, args: Args) -> Self
    where
        F: Task<Args>,
        Args: Payload,
        F::Output: Payload,
    {
        let mut bytes = Vec::new();
        self.init =
            Some(f.__callee().and_then(|callee| {
                codec_guard::encode(&args, &mut bytes).map(|()| (callee, bytes))
            }));
        self
    }

    /// Starts the workers.
    ///
    /// ```
    /// let pool = fanout::ProcessPool::builder().workers(1).build().unwrap();
    /// assert_eq!(pool.worker_pids().len(), 1);
    /// ```
    pub fn build(self) -> Result<ProcessPool> {
        if !cfg!(target_os = "linux") || !worker::linked() {
            return Err(Error::Broken {
                reason: "process pools need Linux".into(),
            });
        }
        let workers = self.workers.unwrap_or_else(num_cpus::get);
        if workers == 0 {
            return Err(Error::invalid(
                "a process pool needs at least 1 worker (got 0)",
            ));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::invalid(
                "max_tasks_per_child must be at least 1 (got 0)",
            ));
        }
        let init = self.init.transpose()?;
        let shared = Arc::new(Shared {
            config: Config {
                workers,
                start: self.start,
                max_tasks_per_child: self.max_tasks_per_child,
                init,
                build_id: *ship::build_id(),
                owner: crate::graph::new_owner(),
            },
            state: Mutex::new(State {
                queue: VecDeque::new(),
                slots: (0..workers).map(|_| None).collect(),
                shutdown: false,
                broken: None,
                live_threads: 0,
                threads: Vec::new(),
                io_thread_ids: Vec::new(),
            }),
            thread_exited: Condvar::new(),
            shm: Arc::default(),
            me: OnceLock::new(),
        });
        let _ = shared.me.set(Arc::downgrade(&shared));
        let pool = ProcessPool {
            shared: shared.clone(),
        };
        for slot in 0..workers {
            let started = start::start(self.start).map_err(|e| Error::Broken {
                reason: format!("could not start worker process {slot}: {e}"),
            })?;
            let mut st = lock(&shared.state);
            let (pid, from_worker) =
                shared
                    .install(&mut st, slot, started)
                    .map_err(|e| Error::Broken {
                        reason: format!("could not set up worker process {slot}: {e}"),
                    })?;
            let shared_t = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("fanout-process-io-{slot}"))
                .spawn(move || slot_thread(shared_t, slot, pid, from_worker))
                .map_err(|e| Error::Broken {
                    reason: format!("could not start the I/O thread for worker {slot}: {e}"),
                })?;
            st.io_thread_ids.push(thread.thread().id());
            st.threads.push(thread);
            st.live_threads += 1;
        }
        Ok(pool)
    }
}

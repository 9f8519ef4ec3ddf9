//! Dispatch: the central queue of calls (`State`), each worker's bookkeeping
//! (`WorkerBook`), and handing queued frames to workers with room (`Shared`).
//! The pool's side of one call is a [`Delivery`].

use super::outbox::{Link, Outbox, Touched};
use super::start::Started;
use super::wire::FrameWriter;
use super::wire::{task_frame, task_frame_into, Piece};
use super::{cma, controls, lock, shm, StartMethod, AHEAD_BYTES, AHEAD_CALLS, AHEAD_FRAMES};
use crate::codec_guard;
use crate::future::Promise;
use crate::ship::{self, BuildId, Encoded};
use crate::{Error, Payload, Result};
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::{JoinHandle, ThreadId};

/// The pool's side of one call: how its outcome gets decoded and delivered.
pub(super) trait Delivery: Send {
    fn id(&self) -> u64;
    fn set_running(&self) -> bool;
    fn set_pending(&self);
    fn deliver(self: Box<Self>, outcome: Result<&[u8]>);
    /// Delivers this item's outcomes from a DONE frame, taking as many as
    /// it has calls (a map chunk takes all of its own in one step).
    fn deliver_each(self: Box<Self>, outcomes: &mut dyn Iterator<Item = Result<&[u8]>>) {
        let missing = || {
            Err(Error::invalid(
                "internal: a DONE frame is missing an outcome",
            ))
        };
        self.deliver(outcomes.next().unwrap_or_else(missing));
    }
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
                self.cell().keep_encoded(Ok(super::spare::whole(bytes)));
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

pub(super) struct Item {
    /// Shared with the outbox while the frame is being written.
    pub(super) args: Arc<Encoded>,
    /// 0: `args` are one call's arguments. n > 0: a map chunk, whose `args`
    /// hold its `n` TASK records already laid out (see `chunk`).
    pub(super) records: u32,
    pub(super) delivery: Box<dyn Delivery>,
}

impl Item {
    /// The calls this item stands for (records of the TASK frame).
    pub(super) fn calls(&self) -> usize {
        (self.records as usize).max(1)
    }

    /// The bytes this item takes in a TASK frame.
    pub(super) fn wire_len(&self) -> usize {
        if self.records == 0 {
            12 + self.args.len()
        } else {
            self.args.len()
        }
    }
}

/// One frame's worth of calls to one function: a single submit or a map chunk.
pub(super) struct Batch {
    /// The trampoline and the captures sent with it.
    pub(super) trampoline: ship::Callee,
    pub(super) items: Vec<Item>,
    /// The batch's TASK frame in shared memory, or naming its large
    /// argument in this process's memory, when it is large (see `shm`, `cma`).
    pub(super) large: Option<Large>,
    /// Higher leaves the queue first (see `controls`).
    pub(super) priority: i32,
    /// The call's run-time limit (single calls only).
    pub(super) limit: Option<std::time::Duration>,
}

/// How a large batch's TASK frame travels (see [`Shared::offload`]).
pub(super) enum Large {
    /// Its body is in a shared-memory region lent to the batch.
    Shm(shm::Lent),
    /// This CMA frame names its argument vector, which the worker reads from
    /// the batch's own `Encoded` (kept until the batch is answered).
    Cma(Vec<u8>),
}

impl Large {
    /// The small frame that goes into the pipe.
    fn frame(&self) -> Vec<u8> {
        match self {
            Large::Shm(lent) => lent.frame(),
            Large::Cma(frame) => frame.clone(),
        }
    }
}

/// A worker process as the pool's bookkeeping sees it.
pub(super) struct WorkerBook {
    pub(super) pid: u32,
    pub(super) link: Arc<Link>,
    /// Frames sent and not yet answered, oldest first; the front one is running.
    pub(super) in_flight: VecDeque<Batch>,
    /// Calls sent over this worker's life (for `max_tasks_per_child`).
    pub(super) sent: usize,
    /// Its call pipe is being closed; it gets nothing more.
    pub(super) closing: bool,
    /// Its initializer (if any) has succeeded.
    pub(super) initialized: bool,
    /// A STEAL request is on its way; its RETURNED answer has not arrived.
    pub(super) steal_pending: bool,
    /// The call whose run-time limit is armed (see `controls`).
    pub(super) armed: Option<u64>,
    /// Its running call overran this limit; it is being killed.
    pub(super) timed_out: Option<std::time::Duration>,
    /// Calls in `in_flight`, and the bytes of their arguments.
    pub(super) ahead_calls: usize,
    pub(super) ahead_bytes: usize,
    /// Calls it may hold beyond [`AHEAD_FRAMES`] frames (see [`WorkerBook::earn`]).
    pub(super) credit: usize,
}

impl WorkerBook {
    /// True if it may take one more frame: up to [`AHEAD_FRAMES`] frames
    /// always, and more while its calls and their bytes stay within what it
    /// has earned (at most [`AHEAD_CALLS`] and [`AHEAD_BYTES`]).
    pub(super) fn has_room(&self, max_tasks: Option<usize>) -> bool {
        !self.closing
            && max_tasks.is_none_or(|m| self.sent < m)
            && (self.in_flight.len() < AHEAD_FRAMES
                || (self.ahead_calls < self.credit && self.ahead_bytes < AHEAD_BYTES))
    }

    /// After one of its frames is answered: with calls still waiting in the
    /// queue it earns room for one more call ahead (so a worker that keeps
    /// up with a backlog of short calls is never left with an empty pipe);
    /// with none waiting it is back to [`AHEAD_FRAMES`] frames (so a long
    /// call that follows holds back few others, which stay cancellable and
    /// ordered by priority in the queue).
    pub(super) fn earn(&mut self, calls_wait: bool) {
        self.credit = if calls_wait {
            (self.credit + 1).min(AHEAD_CALLS)
        } else {
            0
        };
    }

    fn weight(batch: &Batch) -> (usize, usize) {
        let calls = batch.items.iter().map(Item::calls).sum();
        let bytes = batch.items.iter().map(Item::wire_len).sum();
        (calls, bytes)
    }

    /// Hands `batch` to this worker (its frame is queued by the caller).
    pub(super) fn push_flight(&mut self, batch: Batch) {
        let (calls, bytes) = Self::weight(&batch);
        self.ahead_calls += calls;
        self.ahead_bytes += bytes;
        self.in_flight.push_back(batch);
    }

    /// Takes the frame at `at` of `in_flight` (0: the running one).
    pub(super) fn take_flight(&mut self, at: usize) -> Option<Batch> {
        let batch = self.in_flight.remove(at)?;
        let (calls, bytes) = Self::weight(&batch);
        self.ahead_calls -= calls;
        self.ahead_bytes -= bytes;
        Some(batch)
    }
}

pub(super) struct State {
    pub(super) queue: VecDeque<Batch>,
    pub(super) slots: Vec<Option<WorkerBook>>,
    pub(super) shutdown: bool,
    pub(super) broken: Option<String>,
    pub(super) live_threads: usize,
    pub(super) threads: Vec<JoinHandle<()>>,
    pub(super) io_thread_ids: Vec<ThreadId>,
}

pub(super) struct Config {
    pub(super) workers: usize,
    pub(super) start: StartMethod,
    pub(super) max_tasks_per_child: Option<usize>,
    pub(super) init: Option<(ship::Callee, Vec<u8>)>,
    pub(super) build_id: BuildId,
    /// The tag of this pool's futures (see `Executor::owner`).
    pub(super) owner: u64,
}

pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) state: Mutex<State>,
    pub(super) thread_exited: Condvar,
    /// Idle shared-memory regions for large call frames.
    pub(super) shm: Arc<shm::Cache>,
    /// The pool itself, for timers that fire later.
    pub(super) me: OnceLock<Weak<Shared>>,
}

impl Shared {
    pub(super) fn worker_name(pid: u32) -> String {
        format!("process worker pid {pid}")
    }

    /// Hands queued calls to workers with room, and closes workers that are
    /// done. Runs under the state lock; returns the links to flush after it.
    pub(super) fn dispatch(&self, st: &mut State) -> Touched {
        let mut touched = Touched::default();
        let max_tasks = self.config.max_tasks_per_child;
        if st.broken.is_none() {
            while !st.queue.is_empty() {
                let pick = st
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        let b = s.as_ref()?;
                        b.has_room(max_tasks).then_some((b.in_flight.len(), i))
                    })
                    .min();
                let Some((_, i)) = pick else { break };
                let Some(Batch {
                    trampoline,
                    items,
                    large,
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
                let large = large.filter(|_| items.len() == submitted);
                let Some(book) = st.slots[i].as_mut() else {
                    break;
                };
                {
                    let mut ob = lock(&book.link.outbox);
                    // A worker with fewer frames than this could run dry:
                    // its frame goes out now; otherwise with its I/O
                    // thread's next flush (see `Outbox::urgent`).
                    ob.urgent |= book.in_flight.len() < AHEAD_FRAMES;
                    match &large {
                        Some(large) => ob.frames.push_back(Piece::Own(large.frame())),
                        None => self.queue_task(&trampoline, &items, &mut ob),
                    }
                }
                book.sent += items.iter().map(Item::calls).sum::<usize>();
                book.push_flight(Batch {
                    trampoline,
                    items,
                    large,
                    priority,
                    limit,
                });
                controls::arm_front(self, i, book);
                touched.add(&book.link);
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
                        let mut ob = lock(&book.link.outbox);
                        ob.frames.push_back(Piece::Own(w.into_inner()));
                        ob.urgent = true;
                        drop(ob);
                        touched.add(&book.link);
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
                touched.add(&book.link);
            }
        }
        touched
    }

    /// The TASK frame for `items`, as pieces for `writev`.
    pub(super) fn task_pieces(&self, trampoline: &ship::Callee, items: &[Item]) -> Vec<Piece> {
        let calls: Vec<(u64, u32, Arc<Encoded>)> = items
            .iter()
            .map(|it| (it.delivery.id(), it.records, it.args.clone()))
            .collect();
        task_frame(&self.config.build_id, trampoline, &calls)
    }

    /// Queues the TASK frame for `items` on an outbox, in a buffer of an
    /// earlier frame (and, for a single call, without collecting the calls).
    fn queue_task(&self, trampoline: &ship::Callee, items: &[Item], ob: &mut Outbox) {
        let cur = ob.scratch();
        let build_id = &self.config.build_id;
        if let [only] = items {
            let calls = [(only.delivery.id(), only.records, only.args.clone())];
            task_frame_into(build_id, trampoline, &calls, cur, &mut ob.frames);
        } else {
            let calls: Vec<(u64, u32, Arc<Encoded>)> = items
                .iter()
                .map(|it| (it.delivery.id(), it.records, it.args.clone()))
                .collect();
            task_frame_into(build_id, trampoline, &calls, cur, &mut ob.frames);
        }
    }

    /// Puts a large batch's TASK frame into shared memory (on the
    /// submitting thread, before the batch is queued).
    pub(super) fn offload(&self, batch: &mut Batch) {
        let body: usize = 33
            + batch.trampoline.captures().len()
            + batch.items.iter().map(Item::wire_len).sum::<usize>();
        if body < shm::SHM_AT {
            return;
        }
        let Some(first) = batch.items.first().map(|it| it.delivery.id()) else {
            return;
        };
        // One call whose argument is a large byte vector: the worker reads
        // the vector from this process's memory (one copy, see `cma`).
        if let [only] = &batch.items[..] {
            if only.records == 0
                && only.args.body.len() >= shm::SHM_AT
                && cma::allowed(cma::Reader::Child)
            {
                let head = Arc::new(Encoded {
                    head: only.args.head.clone(),
                    body: Vec::new(),
                });
                let calls = [(only.delivery.id(), 0, head)];
                let inner = task_frame(&self.config.build_id, &batch.trampoline, &calls);
                let frame = cma::frame(&only.args.body, inner.iter().map(Piece::bytes));
                batch.large = Some(Large::Cma(frame));
                return;
            }
        }
        let pieces = self.task_pieces(&batch.trampoline, &batch.items);
        batch.large =
            shm::offload(&self.shm, pieces.iter().map(Piece::bytes), first).map(Large::Shm);
        drop(pieces);
        // A single call's frame in shared memory is never rebuilt (it cannot
        // be partly cancelled), so its argument bytes can go now.
        if let (Some(_), [only]) = (&batch.large, &mut batch.items[..]) {
            only.args = Arc::default();
        }
    }

    /// Queues batches and dispatches them.
    pub(super) fn enqueue(&self, batches: Vec<Batch>) -> Result<()> {
        self.try_enqueue(batches).map_err(|(e, _)| e)
    }

    /// Queues one batch and dispatches it (a single `submit`).
    pub(super) fn enqueue_one(&self, batch: Batch) -> Result<()> {
        let touched = {
            let mut st = lock(&self.state);
            Self::admits(&st)?;
            controls::enqueue_one(&mut st.queue, batch);
            self.dispatch(&mut st)
        };
        for link in touched {
            link.kick();
        }
        Ok(())
    }

    /// Refuses new calls to a broken or shut-down pool.
    fn admits(st: &State) -> Result<()> {
        if let Some(reason) = &st.broken {
            let reason = reason.clone();
            return Err(Error::Broken { reason });
        }
        if st.shutdown {
            return Err(Error::Shutdown);
        }
        Ok(())
    }

    /// Queues batches and dispatches them; hands them back when refused.
    pub(super) fn try_enqueue(
        &self,
        batches: Vec<Batch>,
    ) -> std::result::Result<(), (Error, Vec<Batch>)> {
        let touched = {
            let mut st = lock(&self.state);
            if let Err(e) = Self::admits(&st) {
                return Err((e, batches));
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
    pub(super) fn break_pool(&self, st: &mut State, reason: String) -> Vec<Item> {
        log::error!("process pool broken: {reason}");
        st.broken.get_or_insert(reason);
        st.queue.drain(..).flat_map(|b| b.items).collect()
    }

    /// Starts a worker into `slot`; returns its pid and result pipe.
    pub(super) fn install(
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
        lock(&link.outbox).urgent = true;
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
            ahead_calls: 0,
            ahead_bytes: 0,
            credit: 0,
        });
        Ok((pid, from_worker))
    }
}

//! [`Future`], its [`State`], and the completion cell every backend drives.
//!
//! # The completion cell
//!
//! One [`Cell`] per submitted call, shared between the caller's [`Future`] and
//! the backend's [`Promise`]. The state machine, as in CPython's `_base.py`:
//!
//! ```text
//!   Pending ──set_running──▶ Running ──set_result/set_error──▶ Finished
//!      │                                                          ▲
//!      ├──cancel──▶ Cancelled                                     │
//!      └──────────────set_result/set_error (e.g. Broken)──────────┘
//! ```
//!
//! * `state` is an atomic so `done()`/`state()` never lock. `Pending → Running`
//!   is a lock-free compare-and-swap; every move to a final state happens under
//!   `sync`, together with writing the outcome, so anybody who locks `sync` and
//!   sees a final state also sees the outcome.
//! * The outcome (`value`) is written once. Shared access to it (done-callbacks,
//!   callbacks added after completion) is serialised through a *read token*
//!   held by one thread at a time (re-entrant for that thread), so `T` need only
//!   be `Send`. The owner takes the outcome out (`result`, `.await`) only when
//!   nobody holds the token; since those consume or exclusively borrow the one
//!   `Future`, nobody can start reading afterwards.
//! * Waiters on many futures ([`Waiter`]), the condition variable for blocking
//!   callers and the async waker are all notified on the transition to a final
//!   state, so no state exists in which a future is done but a waiter sleeps.
//!
//! The cell is here; the caller's side ([`Future`]) is in `future/handle.rs`,
//! the backend's ([`Promise`]) in `future/promise.rs`, the loom models of
//! the cell in `future/loom_models.rs`.

use crate::panic;
mod handle;
pub(crate) mod helpers;
mod hooks;
mod once_box;
mod promise;
use crate::sync::{
    self, current_thread, lock, Arc, AtomicU8, Condvar, Mutex, MutexGuard, Ordering,
};
use crate::{Error, Result};
pub use handle::{wrap_future, Future};
pub(crate) use hooks::CancelHandle;
use once_box::OnceBox;
pub(crate) use promise::*;
use std::sync::atomic::AtomicU64;
use std::task::Waker;
use std::time::Instant;

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;
const FINISHED_OK: u8 = 3;
const FINISHED_ERR: u8 = 4;

fn is_final(state: u8) -> bool {
    state >= CANCELLED
}

/// Where a future is in its life.
///
/// ```
/// use fanout::{State, ThreadPool};
///
/// let pool = ThreadPool::new(1).unwrap();
/// let f = pool.spawn(|| 2 + 2).unwrap();
/// f.wait(None);
/// assert_eq!(f.state(), State::Finished);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Submitted, not yet started; can still be cancelled.
    Pending,
    /// A worker is running it; it can no longer be cancelled.
    Running,
    /// Cancelled before it started; done.
    Cancelled,
    /// Ran to completion (successfully or not); done.
    Finished,
}

fn public_state(raw: u8) -> State {
    match raw {
        PENDING => State::Pending,
        RUNNING => State::Running,
        CANCELLED => State::Cancelled,
        _ => State::Finished,
    }
}

type Callback<T> = Box<dyn FnOnce(&Result<T>) + Send + 'static>;
type Hook = Box<dyn FnOnce() + Send + 'static>;

/// Wakes one thread that waits on many futures at once (`wait`, `as_completed`).
///
/// Each future the waiter is registered with reports its `token` (its index in
/// the caller's list) once, when it reaches a final state.
pub(crate) struct Waiter {
    fired: Mutex<Vec<usize>>,
    cond: Condvar,
}

impl Waiter {
    pub(crate) fn new() -> Arc<Waiter> {
        Arc::new(Waiter {
            fired: Mutex::new(Vec::new()),
            cond: Condvar::new(),
        })
    }

    fn fire(&self, token: usize) {
        lock(&self.fired).push(token);
        self.cond.notify_one();
    }

    /// Blocks until at least one token has fired or `deadline` passes, then
    /// returns (and forgets) the tokens fired so far.
    pub(crate) fn take_fired(&self, deadline: Option<Instant>) -> Vec<usize> {
        let mut fired = lock(&self.fired);
        let mut blocking = None;
        while fired.is_empty() {
            if blocking.is_none() && crate::controls::blocking::worth_it(deadline) {
                drop(fired);
                blocking = Some(crate::controls::blocking::enter());
                fired = lock(&self.fired);
                continue;
            }
            match deadline {
                None => fired = sync::wait(&self.cond, fired),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    fired = sync::wait_timeout(&self.cond, fired, d - now);
                }
            }
        }
        std::mem::take(&mut *fired)
    }
}

/// Who wants to hear about completion. Boxed and created on first use, so
/// the common future that nobody registers with stays small.
struct Listeners<T> {
    callbacks: Vec<Callback<T>>,
    /// Internal hooks that need the final state, not the value (task graphs).
    hooks: Vec<Hook>,
    waiters: Vec<(Arc<Waiter>, usize)>,
    waker: Option<Waker>,
    /// Takes the outcome by value once it is final (see `hooks`).
    taker: Option<hooks::Taker<T>>,
    /// Runs once when the call starts (see `hooks`).
    on_running: Option<hooks::OnRunning>,
}

struct Shared<T> {
    listeners: Option<Box<Listeners<T>>>,
    /// The thread holding the read token …
    reader: Option<sync::ThreadId>,
    /// … and how many times it took it. With no `reader`, 1 means that
    /// callbacks queued on the callback runner hold the token until one of
    /// its threads takes it over (see [`Cell::run_deferred`]); 0, that
    /// nobody holds it. (Two `u32`s rather than a `usize` and a flag: one
    /// word less in every cell.)
    reads: u32,
    /// Threads blocked on `cond`; notifications are skipped when zero.
    blocked: u32,
}

impl<T> Shared<T> {
    fn listeners(&mut self) -> &mut Listeners<T> {
        self.listeners.get_or_insert_with(|| {
            Box::new(Listeners {
                callbacks: Vec::new(),
                hooks: Vec::new(),
                waiters: Vec::new(),
                waker: None,
                taker: None,
                on_running: None,
            })
        })
    }

    fn take_waker(&mut self) -> Option<Waker> {
        self.listeners.as_mut().and_then(|l| l.waker.take())
    }

    /// Nobody reads the outcome now or is about to (the owner may take it).
    fn unread(&self) -> bool {
        self.reads == 0
    }

    /// The read token goes to `thread`, once.
    fn hand_read(&mut self, thread: sync::ThreadId) {
        self.reader = Some(thread);
        self.reads = 1;
    }

    /// Whether `thread` holds the read token.
    fn reads_on(&self, thread: sync::ThreadId) -> bool {
        self.reader == Some(thread)
    }
}

/// Makes a second value equal to a finished future's value, for `result()`
/// called inside one of the future's own done-callbacks (which still holds
/// a reference to the first).
pub(crate) type Copier<T> = fn(&T) -> Result<T>;

/// A [`Copier`] for serializable values: a round trip through the codec.
fn copy_payload<T: crate::Payload>(value: &T) -> Result<T> {
    let mut bytes = Vec::new();
    crate::codec_guard::encode(value, &mut bytes)?;
    crate::codec_guard::decode(&bytes)
}

/// What completing a cell did.
enum Settled<T> {
    /// It was final already; nothing changed.
    AlreadyFinal,
    /// Completed; any callbacks ran on this thread.
    Done,
    /// Completed; these callbacks are to run on the callback runner, and
    /// hold the read token until then.
    Deferred(Vec<Callback<T>>, Vec<Hook>),
}

/// The completion cell shared by a [`Future`] and its backend's [`Promise`].
pub(crate) struct Cell<T> {
    /// Given when first asked for (0: not yet), so that making a cell
    /// touches no counter shared with other submitting threads.
    id: std::sync::atomic::AtomicU64,
    /// The executor whose calls this cell belongs to (0: none); an `Arg`
    /// is accepted only by the executor that owns its input.
    owner: u64,
    /// The outcome's value encoded once (postcard), for dependents that take
    /// it by reference; set only for cells with `Arg`s (see `graph`).
    /// (Boxed: most cells never have one, and a smaller cell is fewer
    /// fresh pages per submitted call.)
    encoded: OnceBox<Result<Reference>>,
    /// Set once an `Arg` of this cell exists: a backend that receives the
    /// value encoded should keep those bytes in `encoded`.
    wants_encoded: std::sync::atomic::AtomicBool,
    /// What the value's type and the backend fix (a promoted constant).
    /// A raw pointer rather than `&'static`, which would need `T: 'static`
    /// on every `Future<T>`.
    kind: *const Kind<T>,
    state: AtomicU8,
    /// Set once an `on_running` hook is registered (see `hooks`).
    watched: std::sync::atomic::AtomicBool,
    sync: Mutex<Shared<T>>,
    cond: Condvar,
    value: sync::UnsafeCell<Slot<T>>,
}

/// What a cell knows from its value's type and its backend, fixed when it
/// is made: one pointer in every cell instead of three fields (a cell is
/// fresh memory for every submitted call; BENCHMARKS.md, "Thread pool").
pub(crate) struct Kind<T> {
    /// How to encode the value, when its type is known to be a payload.
    encoder: Option<Encoder<T>>,
    /// For `result()` inside the future's own done-callback (see [`Copier`]).
    copier: Option<Copier<T>>,
    /// Done-callbacks run on the callback runner rather than on the thread
    /// that completes the future (a backend's delivery thread, which must
    /// never block); see `crate::callbacks`.
    defer_callbacks: bool,
}

impl<T: 'static> Kind<T> {
    /// Any value: not encodable, not copyable, callbacks on the thread
    /// that completes the cell.
    pub(crate) const PLAIN: &'static Kind<T> = &Kind {
        encoder: None,
        copier: None,
        defer_callbacks: false,
    };
    /// As [`Kind::PLAIN`], completed on a delivery thread (see [`chunk_pair`]).
    const DELIVERED: &'static Kind<T> = &Kind {
        encoder: None,
        copier: None,
        defer_callbacks: true,
    };
}

impl<T: crate::Payload> Kind<T> {
    /// A payload: dependents can take it encoded, and `result()` inside
    /// the future's own done-callback gets a copy.
    pub(crate) const PAYLOAD: &'static Kind<T> = &Kind {
        encoder: Some(crate::graph::encode_value::<T>),
        copier: Some(copy_payload::<T>),
        defer_callbacks: false,
    };
    /// As [`Kind::PAYLOAD`], completed on a delivery thread (see [`remote_pair`]).
    const REMOTE: &'static Kind<T> = &Kind {
        encoder: Some(crate::graph::encode_value::<T>),
        copier: Some(copy_payload::<T>),
        defer_callbacks: true,
    };
}

/// What a cell holds: nothing until final, then its outcome. The error is
/// boxed, and a whole `Result` is made only for code that borrows one (a
/// done-callback), so that a cell stays small: an `Error` is 96 bytes and
/// most outcomes are values, and every byte of a cell is a byte of fresh
/// memory per submitted call (see BENCHMARKS.md, "Thread pool").
enum Slot<T> {
    /// Not final yet, or the outcome was taken.
    Empty,
    Value(T),
    Error(Box<Error>),
    /// A success not yet fetched (see [`Promise::set_remote`]); boxed once
    /// more, so that a thin pointer keeps `Slot` at 16 bytes for small values.
    Remote(Box<Fetch<T>>),
    /// The outcome as one `Result`, made when it was first lent whole.
    Whole(Box<Result<T>>),
}

impl<T> Slot<T> {
    fn of(outcome: Result<T>) -> Self {
        match outcome {
            Ok(value) => Slot::Value(value),
            Err(e) => Slot::Error(Box::new(e)),
        }
    }

    /// The outcome, borrowed; `None` when taken, not final or still remote.
    fn borrowed(&self) -> Option<std::result::Result<&T, &Error>> {
        match self {
            Slot::Value(value) => Some(Ok(value)),
            Slot::Error(e) => Some(Err(e)),
            Slot::Whole(outcome) => Some((**outcome).as_ref()),
            Slot::Empty | Slot::Remote(_) => None,
        }
    }

    /// The error, if the outcome is one and still here.
    fn error(&self) -> Option<&Error> {
        self.borrowed().and_then(|o| o.err())
    }

    /// Takes the outcome (`None` when taken already or still remote).
    fn take(&mut self) -> Option<Result<T>> {
        match std::mem::replace(self, Slot::Empty) {
            Slot::Value(value) => Some(Ok(value)),
            Slot::Error(e) => Some(Err(*e)),
            Slot::Whole(outcome) => Some(*outcome),
            remote @ Slot::Remote(_) => {
                *self = remote;
                None
            }
            Slot::Empty => None,
        }
    }

    /// The fetch of a remote success, taken.
    fn take_remote(&mut self) -> Option<Fetch<T>> {
        match std::mem::replace(self, Slot::Empty) {
            Slot::Remote(fetch) => Some(*fetch),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Makes a success lendable as a whole `Result` (see [`Cell::lend`]).
    fn make_whole(&mut self) {
        if let Slot::Value(_) = self {
            if let Slot::Value(value) = std::mem::replace(self, Slot::Empty) {
                *self = Slot::Whole(Box::new(Ok(value)));
            }
        }
    }
}

// SAFETY: `value` is written once under `sync` before the state becomes final
// and is afterwards only accessed by the thread holding the read token, or
// taken by the unique owner when no thread holds it (see the module docs);
// the later writes of a success (fetching a remote one, making it whole to
// lend it) happen under `sync` or the read token, with the read token or the
// owner's exclusive access; threads without the token read only an error.
// So a `T` is never touched by two threads at once, and `T: Send` suffices.
unsafe impl<T: Send> Sync for Cell<T> {}
// SAFETY: the cell owns its `T`; moving it between threads needs `T: Send`.
unsafe impl<T: Send> Send for Cell<T> {}

/// Something that contains a completion cell: a bare [`Cell`], or a thread
/// pool's task, which keeps its closure in the same allocation.
pub(crate) trait CellHolder<T>: Send + Sync {
    fn cell(&self) -> &Cell<T>;
}

impl<T: Send> CellHolder<T> for Cell<T> {
    fn cell(&self) -> &Cell<T> {
        self
    }
}

/// A counted reference to a completion cell, wherever it lives.
///
/// (A std `Arc` even under loom: reference counting is not what the models
/// check; the cell's own synchronisation is.)
pub(crate) struct CellRef<T>(pub(crate) std::sync::Arc<dyn CellHolder<T>>);

impl<T> std::ops::Deref for CellRef<T> {
    type Target = Cell<T>;
    fn deref(&self) -> &Cell<T> {
        self.0.cell()
    }
}

impl<T> Clone for CellRef<T> {
    fn clone(&self) -> Self {
        CellRef(self.0.clone())
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Encodes a value once for dependents that take it by reference.
pub(crate) type Encoder<T> = fn(&T) -> Result<std::sync::Arc<[u8]>>;

/// Fetches a value that stayed where it was computed (a cluster result in
/// Redis), the first time someone asks for it.
pub(crate) type Fetch<T> = Box<dyn FnOnce() -> Result<T> + Send + 'static>;

/// How dependents take a finished future's value: its encoded bytes, or a
/// handle to where it stays (a cluster's result key), which the backend
/// that made it knows how to read.
#[derive(Clone)]
pub(crate) enum Reference {
    Bytes(std::sync::Arc<[u8]>),
    Remote(std::sync::Arc<dyn std::any::Any + Send + Sync>),
}

impl<T> Cell<T> {
    /// A cell owned by the executor with tag `owner`, of `kind` (one of
    /// [`Kind`]'s constants).
    pub(crate) fn build(owner: u64, kind: &'static Kind<T>) -> Self {
        Cell {
            id: std::sync::atomic::AtomicU64::new(0),
            owner,
            encoded: OnceBox::new(),
            wants_encoded: std::sync::atomic::AtomicBool::new(false),
            kind,
            state: AtomicU8::new(PENDING),
            watched: std::sync::atomic::AtomicBool::new(false),
            sync: Mutex::new(Shared {
                listeners: None,
                reader: None,
                reads: 0,
                blocked: 0,
            }),
            cond: Condvar::new(),
            value: sync::UnsafeCell::new(Slot::Empty),
        }
    }

    fn kind(&self) -> &Kind<T> {
        // SAFETY: `kind` came from a `&'static Kind<T>` (see `build`).
        unsafe { &*self.kind }
    }

    fn raw_state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// `Pending → Running`. False when the future was cancelled (or already
    /// started or finished): the backend must then not run the call.
    pub(crate) fn set_running(&self) -> bool {
        let started = self
            .state
            .compare_exchange(PENDING, RUNNING, Ordering::SeqCst, Ordering::Acquire)
            .is_ok();
        if started && self.watched.load(std::sync::atomic::Ordering::SeqCst) {
            self.run_on_running();
        }
        started
    }

    /// Completes the cell with `outcome` unless it is already final (the
    /// backend-side completion used by the thread pool's tasks).
    pub(crate) fn finish(&self, outcome: Result<T>) -> bool {
        self.complete(outcome, false)
    }

    /// Moves to the final state that fits `outcome`, unless already final;
    /// runs the callbacks here. Returns whether this call decided the outcome.
    fn complete(&self, outcome: Result<T>, cancel_only_pending: bool) -> bool {
        self.complete_with(Some(outcome), None, cancel_only_pending)
    }

    /// Completes with `outcome`, or (when `None`) successfully with a value
    /// that `fetch` gets when first asked for; fetched at once when there
    /// are done-callbacks to run.
    fn complete_with(
        &self,
        outcome: Option<Result<T>>,
        fetch: Option<Fetch<T>>,
        cancel_only_pending: bool,
    ) -> bool {
        match self.settle(outcome, fetch, cancel_only_pending, false) {
            Settled::AlreadyFinal => false,
            Settled::Done => true,
            Settled::Deferred(callbacks, hooks) => {
                // Not reached (deferring was not allowed); run them here.
                self.run_deferred(callbacks, hooks);
                true
            }
        }
    }

    /// [`Cell::complete_with`], except that with `may_defer` and a cell that
    /// defers its callbacks, the callbacks (and internal hooks) are handed
    /// back to be queued.
    fn settle(
        &self,
        outcome: Option<Result<T>>,
        fetch: Option<Fetch<T>>,
        cancel_only_pending: bool,
        may_defer: bool,
    ) -> Settled<T> {
        self.settle_locked(
            lock(&self.sync),
            outcome,
            fetch,
            cancel_only_pending,
            may_defer,
        )
    }

    /// Completes with `outcome` on this thread, as `finish` does, if nobody
    /// listens but internal hooks (at most `own_hooks` of them: a backend's
    /// own): no done-callback, no consumer taking the value. Otherwise
    /// hands `outcome` back, so the caller can complete elsewhere (a thread
    /// where callbacks may block). Decided under the cell's lock, so a
    /// callback added concurrently either comes first (and the outcome is
    /// handed back) or finds the cell final (and runs on its own thread).
    pub(crate) fn complete_if_unobserved(
        &self,
        outcome: Result<T>,
        own_hooks: usize,
    ) -> std::result::Result<(), Result<T>> {
        let shared = lock(&self.sync);
        let observed = shared.listeners.as_ref().is_some_and(|l| {
            !l.callbacks.is_empty() || l.taker.is_some() || l.hooks.len() > own_hooks
        });
        if observed {
            return Err(outcome);
        }
        match self.settle_locked(shared, Some(outcome), None, false, false) {
            Settled::Deferred(callbacks, hooks) => self.run_deferred(callbacks, hooks),
            Settled::AlreadyFinal | Settled::Done => {}
        }
        Ok(())
    }

    /// [`Cell::settle`] with the cell's lock already held.
    fn settle_locked(
        &self,
        mut shared: MutexGuard<'_, Shared<T>>,
        outcome: Option<Result<T>>,
        fetch: Option<Fetch<T>>,
        cancel_only_pending: bool,
        may_defer: bool,
    ) -> Settled<T> {
        let wants_value = shared
            .listeners
            .as_ref()
            .is_some_and(|l| !l.callbacks.is_empty());
        let (outcome, fetch) = match (outcome, fetch) {
            (Some(o), _) => (Some(o), None),
            (None, Some(f)) if wants_value && !is_final(self.raw_state()) => (Some(f()), None),
            (None, f) => (None, f),
        };
        let final_state = match &outcome {
            None | Some(Ok(_)) => FINISHED_OK,
            Some(Err(Error::Cancelled)) => CANCELLED,
            Some(Err(_)) => FINISHED_ERR,
        };
        loop {
            let current = self.state.load(Ordering::Acquire);
            if is_final(current) || (cancel_only_pending && current != PENDING) {
                return Settled::AlreadyFinal;
            }
            if self
                .state
                .compare_exchange(current, final_state, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break;
            }
        }
        // SAFETY: we hold `sync` and just made the state final; nobody reads
        // `value` before locking `sync` and seeing a final state, and this is
        // the only write (the compare-and-swap above succeeds once).
        let stored = match (outcome, fetch) {
            (Some(outcome), _) => Slot::of(outcome),
            (None, Some(fetch)) => Slot::Remote(Box::new(fetch)),
            (None, None) => Slot::Empty,
        };
        self.value.with_mut(|slot| unsafe { *slot = stored });
        let (callbacks, hooks, waiters) = match shared.listeners.as_mut() {
            Some(l) => (
                std::mem::take(&mut l.callbacks),
                std::mem::take(&mut l.hooks),
                std::mem::take(&mut l.waiters),
            ),
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        let reading = !callbacks.is_empty() || !hooks.is_empty();
        let defer = may_defer && self.kind().defer_callbacks && reading;
        // A taker (the future was consumed by `then`) takes the outcome now
        // unless callbacks read it first; then `release_read` hands it over.
        // A start hook that never ran (the call was cancelled) goes now.
        let stale_hook = shared.listeners.as_mut().and_then(|l| l.on_running.take());
        let taker = if !reading {
            shared.listeners.as_mut().and_then(|l| l.taker.take())
        } else {
            None
        };
        let waker = if !reading {
            shared.take_waker()
        } else if defer {
            // The queued callbacks hold the read token until they run.
            shared.reader = None;
            shared.reads = 1;
            None
        } else {
            // Callbacks and hooks run below, outside the lock; hold the read
            // token so the owner does not take the outcome from under them.
            shared.hand_read(current_thread().id());
            None
        };
        let notify = shared.blocked > 0;
        drop(shared);
        drop(stale_hook);
        if notify {
            self.cond.notify_all();
        }
        for (waiter, token) in waiters {
            waiter.fire(token);
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        if let Some(taker) = taker {
            self.hand_to_taker(taker);
        }
        if defer {
            return Settled::Deferred(callbacks, hooks);
        }
        if reading {
            for callback in callbacks {
                self.run_callback(callback);
            }
            for hook in hooks {
                self.run_hook(hook);
            }
            self.release_read();
        }
        Settled::Done
    }

    /// Runs callbacks that [`Cell::settle`] deferred: takes over the read
    /// token they held, runs them, releases it.
    fn run_deferred(&self, callbacks: Vec<Callback<T>>, hooks: Vec<Hook>) {
        {
            let mut shared = lock(&self.sync);
            shared.hand_read(current_thread().id());
        }
        for callback in callbacks {
            self.run_callback(callback);
        }
        for hook in hooks {
            self.run_hook(hook);
        }
        self.release_read();
    }

    /// The outcome, taken, if the cell is final and nobody reads it: the
    /// common end of `result()` in one lock (no thread can be inside one of
    /// the future's own callbacks then, since no thread holds the read token).
    /// The caller is the unique owner of the future.
    fn take_if_ready(&self) -> Option<Result<T>> {
        if !is_final(self.raw_state()) {
            return None;
        }
        let shared = lock(&self.sync);
        shared.unread().then(|| self.take_outcome(&shared))
    }

    /// `result()` called by a thread that holds the read token, i.e. inside
    /// one of this future's own done-callbacks: the outcome stays where the
    /// callback can see it, and the caller gets a copy of it (errors are
    /// cloned; a value needs a [`Copier`]). `None` on any other thread.
    fn outcome_in_own_callback(&self) -> Option<Result<T>> {
        let shared = lock(&self.sync);
        let me = current_thread().id();
        if !shared.reads_on(me) {
            return None;
        }
        // SAFETY: this thread holds the read token, so the state is final,
        // `value` is written and never written again, and no other thread
        // reads it or takes it meanwhile; `sync` is held as well.
        let copy = self.value.with(|slot| match unsafe { &*slot }.borrowed() {
            Some(Ok(value)) => match self.kind().copier {
                Some(copy) => copy(value),
                None => Err(Error::invalid(
                    "result() was called inside the future's own done-callback, and its \
                     value cannot be copied (a ThreadPool::spawn result need not be \
                     serializable): use the callback's argument instead",
                )),
            },
            Some(Err(e)) => Err(e.clone()),
            None => Err(Error::invalid(
                "the future's result was already taken (it was awaited to completion before)",
            )),
        });
        drop(shared);
        Some(copy)
    }

    fn run_hook(&self, hook: Hook) {
        if let Err(Error::Panicked { message, .. }) = panic::catch(hook) {
            log::error!(
                "an internal hook of future {} panicked: {message}",
                self.id()
            );
        }
    }

    /// Runs `f` with the outcome, if the cell is final and the outcome is
    /// still there (not taken by the owner); does not fetch a remote value.
    pub(crate) fn peek(&self, f: impl FnOnce(&Result<T>)) {
        let shared = lock(&self.sync);
        if !is_final(self.raw_state()) {
            return;
        }
        let shared = self.acquire_read(shared);
        drop(shared);
        self.lend(f);
        self.release_read();
    }

    /// Runs one callback with the outcome. The caller holds the read token.
    fn run_callback(&self, callback: Callback<T>) {
        self.lend(|outcome| {
            if let Err(Error::Panicked { message, .. }) = panic::catch(|| callback(outcome)) {
                log::error!(
                    "a done-callback of future {} panicked: {message}",
                    self.id()
                );
            }
        });
    }

    /// Runs `f` with the outcome borrowed as one `Result`, if it is here (not
    /// taken, not remote). The caller holds the read token of a final cell.
    /// A success is boxed as a whole `Result` the first time (the cell keeps
    /// values unwrapped, see [`Slot`]); `f` gets a copy of an error.
    fn lend(&self, f: impl FnOnce(&Result<T>)) {
        if self.raw_state() == FINISHED_OK {
            // SAFETY: final and successful, and this thread holds the read
            // token: no other thread reads a success (`exception` and
            // `final_outcome` read only errors), and the owner cannot take
            // it until the token is released; nothing here is borrowed yet.
            self.value.with_mut(|slot| unsafe { (*slot).make_whole() });
        }
        // SAFETY: final, so written; from here on only read, by this thread
        // (the token holder) and by readers of an error.
        self.value.with(|slot| match unsafe { &*slot } {
            Slot::Whole(outcome) => f(outcome),
            Slot::Error(e) => f(&Err((**e).clone())),
            Slot::Value(_) | Slot::Remote(_) | Slot::Empty => {}
        });
    }

    /// Takes the read token (re-entrantly), waiting while another thread holds it.
    fn acquire_read<'a>(
        &'a self,
        mut shared: MutexGuard<'a, Shared<T>>,
    ) -> MutexGuard<'a, Shared<T>> {
        let me = current_thread().id();
        loop {
            if shared.unread() {
                shared.hand_read(me);
                return shared;
            }
            match shared.reader {
                Some(holder) if holder == me => {
                    shared.reads += 1;
                    return shared;
                }
                _ => {
                    // Another thread's callbacks read the outcome: possibly
                    // for long, so the executor (or callback runner) this
                    // thread belongs to hears that it blocks.
                    drop(shared);
                    let _section = crate::controls::blocking::enter();
                    shared = lock(&self.sync);
                    if shared.unread() {
                        continue;
                    }
                    shared.blocked += 1;
                    shared = sync::wait(&self.cond, shared);
                    shared.blocked -= 1;
                }
            }
        }
    }

    fn release_read(&self) {
        let mut shared = lock(&self.sync);
        let released = shared.reads <= 1;
        if released {
            shared.reader = None;
            shared.reads = 0;
        } else {
            shared.reads -= 1;
        }
        if !released {
            return;
        }
        if let Some(taker) = shared.listeners.as_mut().and_then(|l| l.taker.take()) {
            drop(shared);
            self.hand_to_taker(taker);
            return;
        }
        let waker = shared.take_waker();
        let notify = shared.blocked > 0;
        drop(shared);
        if notify {
            self.cond.notify_all();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Blocks until the state is final (and, with `for_take`, nobody holds the
    /// read token) or the deadline passes. Returns the guard and whether the
    /// condition holds.
    fn block_until<'a>(
        &'a self,
        deadline: Option<Instant>,
        for_take: bool,
    ) -> (MutexGuard<'a, Shared<T>>, bool) {
        // A result that is microseconds away is cheaper to spin for than to
        // sleep for (sleeping costs both sides a futex call).
        #[cfg(not(loom))]
        for _ in 0..32 {
            if is_final(self.raw_state()) {
                break;
            }
            std::hint::spin_loop();
        }
        let mut shared = lock(&self.sync);
        let mut blocking = None;
        let mut helped = false;
        loop {
            if is_final(self.raw_state()) && (!for_take || shared.unread()) {
                return (shared, true);
            }
            if blocking.is_none() && crate::controls::blocking::worth_it(deadline) {
                // Tell the executor this thread runs on (if any) that it is
                // about to sleep, so it can keep its other calls moving.
                drop(shared);
                blocking = Some(crate::controls::blocking::enter());
                shared = lock(&self.sync);
                continue;
            }
            // Let the backend deliver on this thread first (see `helpers`).
            if !helped {
                helped = true;
                if let Some(helper) = helpers::of(self.owner) {
                    drop(shared);
                    helper.help(
                        &|| is_final(self.raw_state()),
                        &|waker| self.wake_on_final(waker),
                        deadline,
                    );
                    shared = lock(&self.sync);
                    continue;
                }
            }
            shared.blocked += 1;
            match deadline {
                None => shared = sync::wait(&self.cond, shared),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        shared.blocked -= 1;
                        return (shared, false);
                    }
                    shared = sync::wait_timeout(&self.cond, shared, d - now);
                }
            }
            shared.blocked -= 1;
        }
    }

    /// Has the cell wake `waker` once it is final (at once if it is): its
    /// waker slot, which an `.await` otherwise uses; false when that holds
    /// another waker already. Not an observer: a backend still completes an
    /// unobserved future on its own thread (`complete_if_unobserved`).
    fn wake_on_final(&self, waker: Waker) -> bool {
        let mut shared = lock(&self.sync);
        if is_final(self.raw_state()) {
            drop(shared);
            waker.wake();
            return true;
        }
        let listeners = shared.listeners();
        match &listeners.waker {
            Some(w) if !w.will_wake(&waker) => false,
            _ => {
                listeners.waker = Some(waker);
                true
            }
        }
    }

    /// Takes the outcome. The caller holds `sync`, saw a final state and no reader,
    /// and is the unique owner of the future.
    fn take_outcome(&self, shared: &MutexGuard<'_, Shared<T>>) -> Result<T> {
        self.materialize(shared);
        // SAFETY: final state (written), no read token held, and the caller is
        // the one `Future`, which is consumed or exclusively borrowed, so no
        // new reader can appear; `sync` is held for the duration.
        self.value
            .with_mut(|slot| unsafe { (*slot).take() })
            .unwrap_or_else(|| {
                Err(Error::invalid(
                    "the future's result was already taken (it was awaited to completion before)",
                ))
            })
    }

    /// The owning executor's tag (0: none).
    pub(crate) fn owner(&self) -> u64 {
        self.owner
    }

    /// The future's id.
    pub(crate) fn id(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let id = self.id.load(Relaxed);
        if id != 0 {
            return id;
        }
        // The first to ask gives it; one that loses the race takes the winner's.
        let id = next_id();
        match self.id.compare_exchange(0, id, Relaxed, Relaxed) {
            Ok(_) => id,
            Err(given) => given,
        }
    }

    /// How to encode the value, when its type is known to be a payload.
    pub(crate) fn encoder(&self) -> Option<Encoder<T>> {
        self.kind().encoder
    }

    /// Runs `hook` once the cell is final: at once if it already is (even
    /// when the owner has taken the outcome), else on the completing thread.
    pub(crate) fn on_final(&self, hook: Box<dyn FnOnce() + Send + 'static>) {
        let mut shared = lock(&self.sync);
        if !is_final(self.raw_state()) {
            shared.listeners().hooks.push(hook);
            return;
        }
        drop(shared);
        self.run_hook(hook);
    }

    /// Whether the cell finished successfully (`None` while not final).
    pub(crate) fn final_outcome(&self) -> Option<std::result::Result<(), Error>> {
        let shared = lock(&self.sync);
        match self.raw_state() {
            FINISHED_OK => Some(Ok(())),
            CANCELLED => Some(Err(Error::Cancelled)),
            FINISHED_ERR => {
                // SAFETY: as in `Future::exception`: final state seen under
                // `sync`, so `value` is written and never written again, and
                // only the `Err` side (an `Error`, never a `T`) is read.
                let error = self.value.with(|slot| match unsafe { &*slot }.error() {
                    Some(e) => e.clone(),
                    None => Error::invalid(format!(
                        "the error of future {} was already taken by `result`",
                        self.id()
                    )),
                });
                drop(shared);
                Some(Err(error))
            }
            _ => None,
        }
    }

    /// Whether an `Arg` of this cell exists (its value is wanted encoded).
    pub(crate) fn wants_encoded(&self) -> bool {
        self.wants_encoded
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the value as wanted encoded; true the first time.
    pub(crate) fn want_encoded(&self) -> bool {
        !self
            .wants_encoded
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Keeps the encoded value (first writer wins).
    pub(crate) fn keep_encoded(&self, bytes: Result<std::sync::Arc<[u8]>>) {
        self.encoded.set(Box::new(bytes.map(Reference::Bytes)));
    }

    /// Keeps a reference for dependents (first writer wins).
    pub(crate) fn keep_reference(&self, reference: Reference) {
        self.encoded.set(Box::new(Ok(reference)));
    }

    /// The reference dependents take, once kept.
    pub(crate) fn encoded(&self) -> Option<&Result<Reference>> {
        self.encoded.get()
    }

    /// Fetches a remote value into `value`, if it is still remote. The caller
    /// holds `sync` and either the read token or the owner's exclusive access.
    fn materialize(&self, _shared: &MutexGuard<'_, Shared<T>>) {
        if self.raw_state() != FINISHED_OK {
            return;
        }
        // SAFETY: the state is final and successful; the caller holds `sync`
        // and the read token (or is the owner with nobody holding it), so no
        // other thread reads or writes the success now; `exception` and
        // `final_outcome` read only errors.
        let fetch = self.value.with_mut(|slot| unsafe { (*slot).take_remote() });
        if let Some(fetch) = fetch {
            let outcome = fetch();
            self.value
                .with_mut(|slot| unsafe { *slot = Slot::of(outcome) });
        }
    }

    /// Registers `waiter` to be fired with `token` on completion. False if already final.
    pub(crate) fn add_waiter(&self, waiter: &Arc<Waiter>, token: usize) -> bool {
        let mut shared = lock(&self.sync);
        if is_final(self.raw_state()) {
            return false;
        }
        shared.listeners().waiters.push((waiter.clone(), token));
        true
    }

    /// Forgets a waiter registered with [`Cell::add_waiter`] (no-op if it already fired).
    pub(crate) fn remove_waiter(&self, waiter: &Arc<Waiter>) {
        let mut shared = lock(&self.sync);
        if let Some(l) = shared.listeners.as_mut() {
            l.waiters.retain(|(w, _)| !Arc::ptr_eq(w, waiter));
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models;

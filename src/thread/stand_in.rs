//! Nested waits on the thread pool: a task that blocks on a future (its
//! children's `result`, `wait`, `as_completed`, `gather`) would hold its
//! worker thread while the children wait in the queue behind it; with every
//! worker doing so the pool deadlocks. So while a worker blocks, the pool
//! runs a stand-in thread in its place: at most one per blocked worker,
//! never more running threads than `workers` that are not blocked. A
//! stand-in leaves when its worker is back (after its current call) or after
//! a short idle spell. Fresh threads, not calls run on the waiting thread's
//! own stack, so deep nesting cannot overflow a stack.

use super::{run_one, Shared, POOL, WORKER_OF};
use crate::controls::blocking::{self, Blocker};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// More stand-ins than this at once are refused (and logged): a task tree
/// that blocks this many threads is better served by `Arg` inputs.
const MAX_STAND_INS: usize = 1024;

/// How long an idle stand-in waits for work before it leaves.
const IDLE: Duration = Duration::from_millis(200);

/// Listens to one worker thread's blocking waits.
pub(super) struct StandIns(pub(super) Weak<Shared>);

/// Makes this thread a worker of `shared`: `ThreadPool::current`, nested
/// waits and shutdown-from-a-task all find the pool through it.
pub(super) fn adopt(shared: &Arc<Shared>) {
    WORKER_OF.with(|w| w.set(Arc::as_ptr(shared) as usize));
    POOL.with(|p| *p.borrow_mut() = Some(Arc::downgrade(shared)));
    blocking::install(Some(Arc::new(StandIns(Arc::downgrade(shared)))));
}

impl Blocker for StandIns {
    fn enter(&self) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let blocked = shared.blocked.fetch_add(1, Ordering::AcqRel) + 1;
        let mut live = shared.live.lock().unwrap_or_else(|p| p.into_inner());
        let active = live
            .running
            .saturating_sub(blocked + live.waiting_in_shutdown);
        if active >= shared.workers {
            return;
        }
        if live.running >= shared.workers + MAX_STAND_INS {
            log::warn!(
                "a thread pool task blocks while {} threads already do; no stand-in started",
                live.running
            );
            return;
        }
        live.running += 1;
        drop(live);
        let n = shared.stand_ins.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-standin-{n}", shared.prefix);
        let for_thread = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || stand_in_loop(for_thread));
        match spawned {
            Ok(handle) => shared
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(handle),
            Err(e) => {
                log::error!("could not start a stand-in thread for a blocked task: {e}");
                shared
                    .live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .running -= 1;
                shared.live_changed.notify_all();
            }
        }
    }

    fn exit(&self) {
        if let Some(shared) = self.0.upgrade() {
            shared.blocked.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// True (and counted out) when the pool has more unblocked threads than
/// `workers`, so this stand-in should leave.
fn leave_if_surplus(shared: &Shared, force: bool) -> bool {
    let mut live = shared.live.lock().unwrap_or_else(|p| p.into_inner());
    let blocked = shared.blocked.load(Ordering::Acquire);
    let active = live
        .running
        .saturating_sub(blocked + live.waiting_in_shutdown);
    if force || active > shared.workers {
        live.running -= 1;
        drop(live);
        shared.live_changed.notify_all();
        true
    } else {
        false
    }
}

fn stand_in_loop(shared: Arc<Shared>) {
    adopt(&shared);
    if let Some(init) = shared.initializer.clone() {
        super::run_initializer(&shared, &init);
    }
    loop {
        if leave_if_surplus(&shared, false) {
            return;
        }
        match shared.queue.pop_timeout(IDLE) {
            Ok(message) => run_one(&shared, message),
            Err(super::queue::Empty::Timeout) => {}
            Err(super::queue::Empty::Closed) => {
                leave_if_surplus(&shared, true);
                return;
            }
        }
    }
}

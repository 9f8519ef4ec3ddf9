//! Tasks that wait on tasks, on a cluster worker (Dask's secede/rejoin).
//!
//! A task that blocks on a future (its children's `result`, `wait`,
//! `as_completed`, `gather`) gives its slot back while it waits: the worker
//! starts another slot thread, which reads the next entry, so the children
//! can run on this worker even when every slot of every worker holds a
//! waiting parent. When the parent's wait ends it "rejoins": the worker has
//! one slot too many, and the first slot to finish its task leaves. The
//! waiting task keeps its lease (the heartbeat covers it). At most
//! [`MAX_SECEDED`] slots beyond the configured concurrency run at once.

use super::worker::Worker;
use crate::controls::blocking::{self, Blocker};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

/// Slots beyond `FANOUT_CLUSTER_CONCURRENCY` a worker may add for waiting tasks.
pub(crate) const MAX_SECEDED: usize = 64;

struct Seceder(Weak<Worker>);

/// Makes this slot thread's blocking waits free its slot.
pub(super) fn install(worker: &Arc<Worker>) {
    blocking::install(Some(Arc::new(Seceder(Arc::downgrade(worker)))));
}

impl Blocker for Seceder {
    fn enter(&self) {
        let Some(worker) = self.0.upgrade() else {
            return;
        };
        let blocked = worker.blocked.fetch_add(1, Ordering::AcqRel) + 1;
        let mut slots = super::client::lock(&worker.slots);
        let limit = worker.concurrency();
        if slots.saturating_sub(blocked) >= limit || *slots >= limit + MAX_SECEDED {
            return;
        }
        *slots += 1;
        drop(slots);
        let w = worker.clone();
        let spawned = std::thread::Builder::new()
            .name("fanout-cluster-slot-seceded".into())
            .spawn(move || w.slot());
        if let Err(e) = spawned {
            log::error!("could not start a slot for a waiting task: {e}");
            *super::client::lock(&worker.slots) -= 1;
        }
    }

    fn exit(&self) {
        if let Some(worker) = self.0.upgrade() {
            worker.blocked.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// True when the worker runs more unblocked slots than its concurrency.
pub(super) fn surplus(worker: &Worker) -> bool {
    over(worker, *super::client::lock(&worker.slots))
}

fn over(worker: &Worker, slots: usize) -> bool {
    slots.saturating_sub(worker.blocked.load(Ordering::Acquire)) > worker.concurrency()
}

/// True (and counted out) when the worker runs more unblocked slots than its
/// concurrency, so the calling slot should leave before reading more.
pub(super) fn leave_if_surplus(worker: &Worker) -> bool {
    let mut slots = super::client::lock(&worker.slots);
    if over(worker, *slots) {
        *slots -= 1;
        true
    } else {
        false
    }
}

//! Per-call controls on the process pool: priorities on the central queue
//! and run-time limits that kill the worker running an overdue call.
//!
//! * **Priority.** A batch goes into the queue behind every batch of its
//!   level or higher, so the queue stays sorted (highest first, FIFO within
//!   a level); with every call at level 0 that is a plain push to the back.
//!   Frames a worker hands back or leaves unstarted when it dies return to
//!   the front, as before: they were dispatched ahead of the rest already.
//! * **Timeout.** A frame runs while it is the front of its worker's
//!   `in_flight`; when a frame with a limit becomes the front, the shared
//!   timer is armed. If the same frame is still the front when it fires, the
//!   book is marked and the slot's I/O thread is woken; that thread (the
//!   only one that reaps the worker, so the pid cannot have been reused)
//!   kills the worker. Its call resolves to `Err(Timeout)` naming the limit,
//!   and the slot starts a replacement as for any dead worker.

use super::dispatch::{Batch, Shared, WorkerBook};
use super::lock;
use crate::Error;
use std::collections::VecDeque;
use std::sync::Weak;
use std::time::Duration;

/// Queues `batches` by priority: behind every batch of the same or a higher level.
pub(super) fn enqueue_ranked(queue: &mut VecDeque<Batch>, batches: Vec<Batch>) {
    for batch in batches {
        enqueue_one(queue, batch);
    }
}

/// Queues one batch by priority, as [`enqueue_ranked`] does.
pub(super) fn enqueue_one(queue: &mut VecDeque<Batch>, batch: Batch) {
    // With every call at one level (the common case) it goes to the back.
    if queue.back().is_none_or(|b| b.priority >= batch.priority) {
        return queue.push_back(batch);
    }
    let at = queue
        .iter()
        .rposition(|b| b.priority >= batch.priority)
        .map_or(0, |i| i + 1);
    queue.insert(at, batch);
}

/// Arms the timer for the frame at the front of `book.in_flight`, if it has
/// a limit and is not armed yet.
pub(super) fn arm_front(shared: &Shared, slot: usize, book: &mut WorkerBook) {
    let Some(front) = book.in_flight.front() else {
        return;
    };
    let (Some(limit), Some(first)) = (front.limit, front.items.first()) else {
        return;
    };
    let id = first.delivery.id();
    if book.armed == Some(id) {
        return;
    }
    book.armed = Some(id);
    let Some(me) = shared.me.get().cloned() else {
        return;
    };
    let pid = book.pid;
    crate::controls::timer::after(limit, move || expire(me, slot, pid, id, limit));
}

fn expire(shared: Weak<Shared>, slot: usize, pid: u32, id: u64, limit: Duration) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let mut st = lock(&shared.state);
    let Some(book) = st.slots[slot].as_mut() else {
        return;
    };
    let still_running = book.pid == pid
        && book
            .in_flight
            .front()
            .and_then(|b| b.items.first())
            .is_some_and(|it| it.delivery.id() == id);
    if still_running && book.timed_out.is_none() {
        book.timed_out = Some(limit);
        let link = book.link.clone();
        drop(st);
        link.wake();
    }
}

/// True when the worker in `slot` overran a call's limit and must be killed
/// (asked by the slot's I/O thread when it is woken).
pub(super) fn overran(shared: &Shared, slot: usize) -> bool {
    lock(&shared.state).slots[slot]
        .as_ref()
        .is_some_and(|b| b.timed_out.is_some())
}

/// The error of the call whose worker was killed for overrunning `limit`.
pub(super) fn timeout_error(limit: Duration, worker: &str) -> Error {
    Error::timeout(format!(
        "the call ran longer than its limit of {limit:?}; {worker} was killed and replaced"
    ))
}

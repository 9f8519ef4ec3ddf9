//! One worker slot's I/O thread: `slot_thread` serves a worker and its
//! replacements, `serve_worker` polls its pipes, `handle_frame` delivers what
//! it sends.

use super::dispatch::{Item, Shared};
use super::outbox::Link;
use super::wire::{decode_frame, done_records, outcome, DoneRecords, Frame, FrameBuf};
use super::{controls, lock, start};
use crate::Error;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Why a worker's pipe stopped.
pub(super) enum Ending {
    /// End of file: the worker exited or died.
    Closed,
    /// It sent something that is not a valid frame; it was killed.
    Malformed(String),
}

/// The I/O thread of one worker slot: serves a worker, and its replacements.
pub(super) fn slot_thread(
    shared: Arc<Shared>,
    slot: usize,
    mut pid: u32,
    mut from_worker: OwnedFd,
) {
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
pub(super) fn serve_worker(
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
pub(super) fn handle_frame(
    shared: &Shared,
    slot: usize,
    pid: u32,
    body: &[u8],
) -> std::result::Result<(), String> {
    let worker = Shared::worker_name(pid);
    // DONE, the frame of every result, is walked in place (no `Vec` of records).
    if let Some(results) = done_records(body).map_err(|e| e.0)? {
        return handle_done(shared, slot, &worker, results);
    }
    match decode_frame(body).map_err(|e| e.0)? {
        Frame::Done { .. } => Err("internal: a DONE frame was not seen as one".into()),
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

/// Delivers a DONE frame's outcomes to the calls of the frame it answers.
fn handle_done(
    shared: &Shared,
    slot: usize,
    worker: &str,
    results: DoneRecords<'_>,
) -> std::result::Result<(), String> {
    let (batch, touched) = {
        let mut st = lock(&shared.state);
        let Some(book) = st.slots[slot].as_mut() else {
            return Err("results from a worker the pool no longer tracks".into());
        };
        let matches = book.in_flight.front().is_some_and(|b| {
            // A map chunk's records all carry the chunk's id.
            let mut ids = results.records().map(|(id, _, _)| id);
            b.items.iter().all(|it| {
                let id = it.delivery.id();
                (0..it.calls()).all(|_| ids.next() == Some(id))
            }) && ids.next().is_none()
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
        let mut outcomes = results
            .records()
            .map(|(_, tag, bytes)| outcome(tag, bytes).map_err(|e| e.into_error(worker)));
        for it in batch.items {
            it.delivery.deliver_each(&mut outcomes);
        }
    }
    Ok(())
}

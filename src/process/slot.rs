//! One worker slot's I/O thread: `slot_thread` serves a worker and its
//! replacements, `serve_worker` polls its pipes, `handle_dones` delivers the
//! results of every DONE frame of one read (and dispatches once for all of
//! them), `handle_frame` the other frames it sends.

use super::dispatch::{Batch, Item, Shared, WorkerBook};
use super::outbox::Link;
use super::wire::{self, decode_frame, outcome, DoneRecords, Frame, FrameBuf};
use super::{cma, controls, lock, spare, start};
use crate::Error;
use std::ops::Range;
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
    // The DONE frames of one read, handled together (scratch, kept).
    let mut dones: Vec<Range<usize>> = Vec::new();
    let mut answered: Vec<Batch> = Vec::new();
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
                    Err(e) => {
                        // What came before it is answered first.
                        let bodies = dones.iter().map(|r| frames.slice(r.clone()));
                        let _ = handle_dones(shared, slot, pid, bodies, &mut answered);
                        return Ending::Malformed(e.0);
                    }
                };
                if wire::is_done(frames.slice(range.clone())) {
                    dones.push(range);
                    continue;
                }
                // Any other frame: the DONE frames before it go first, in order.
                let bodies = dones.iter().map(|r| frames.slice(r.clone()));
                if let Err(why) = handle_dones(shared, slot, pid, bodies, &mut answered) {
                    return Ending::Malformed(why);
                }
                dones.clear();
                let body = frames.slice(range);
                // A large output lent from the worker's memory (see `cma`):
                // read it, then the frame is an ordinary DONE frame.
                let (body, lent) = match cma::split(body) {
                    None => (body, false),
                    Some(Err(why)) => return Ending::Malformed(why),
                    Some(Ok((remote, inner))) if remote.pid != pid || !wire::is_done(inner) => {
                        return Ending::Malformed(format!(
                            "a cross-memory frame that is not its own DONE ({} bytes)",
                            inner.len()
                        ));
                    }
                    Some(Ok((remote, inner))) => match read_lent(shared, slot, link, &remote) {
                        Ok(v) => {
                            spare::set_incoming(Some(v));
                            (inner, true)
                        }
                        // Gone before it was read: its call is lost with it,
                        // as if it had died running it.
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ending::Closed,
                        Err(e) => {
                            return Ending::Malformed(format!(
                                "its result could not be read from its memory: {e}"
                            ))
                        }
                    },
                };
                // A large result arrives in the worker's result region.
                let mapped = match link.results.as_ref().map(|r| r.incoming(body)) {
                    Some(Err(why)) => return Ending::Malformed(why),
                    Some(Ok(m)) => m,
                    None => None,
                };
                let handled = handle_frame(
                    shared,
                    slot,
                    pid,
                    mapped.as_deref().unwrap_or(body),
                    &mut answered,
                );
                // A lent output that no decode took (its future was dropped).
                if lent {
                    drop(spare::set_incoming(None));
                }
                if let Err(why) = handled {
                    return Ending::Malformed(why);
                }
            }
            let bodies = dones.iter().map(|r| frames.slice(r.clone()));
            if let Err(why) = handle_dones(shared, slot, pid, bodies, &mut answered) {
                return Ending::Malformed(why);
            }
            dones.clear();
            // The frames dispatch queued for this worker since the last
            // read, urgent or not, in one `writev` (see `Outbox::urgent`).
            link.flush();
        }
    }
}

/// Checks that a DONE frame answers the frame `book` has at its front, call
/// by call (a map chunk's records all carry the chunk's id), and that every
/// record in it is well formed.
fn answers_front(book: &WorkerBook, body: &[u8]) -> std::result::Result<(), String> {
    let mismatch = || "results that do not match the calls it was given".to_string();
    let done = wire::done_records(body)
        .map_err(|e| e.0)?
        .ok_or_else(|| "a frame that is not a DONE frame".to_string())?;
    let front = book.in_flight.front().ok_or_else(mismatch)?;
    let mut ids = done.records().map(|(id, _, _)| id);
    let answers = front.items.iter().all(|it| {
        let id = it.delivery.id();
        (0..it.calls()).all(|_| ids.next() == Some(id))
    }) && ids.next().is_none();
    if answers {
        Ok(())
    } else {
        Err(mismatch())
    }
}

/// Reads a DONE frame's large output from the worker's memory into the
/// argument buffer of the call it answers (the batch at the front of the
/// worker's book; warm: it held the caller's bytes) when that fits, else
/// into fresh pages, and tells the worker its buffer is free again. The
/// front batch is the running one: if the frame turns out not to answer
/// it, the worker is killed and that call is lost either way.
fn read_lent(
    shared: &Shared,
    slot: usize,
    link: &Link,
    remote: &cma::Remote,
) -> std::io::Result<Vec<u8>> {
    let buffer = lock(&shared.state).slots[slot]
        .as_mut()
        .and_then(|book| book.in_flight.front_mut())
        .and_then(|batch| match &mut batch.items[..] {
            [only] => Arc::get_mut(&mut only.args),
            _ => None,
        })
        .filter(|e| e.body.capacity() >= remote.len && e.body.capacity() / 2 <= remote.len)
        .map(|e| std::mem::take(&mut e.body));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let read = cma::read(remote, buffer.unwrap_or_default(), threads);
    if let Some(r) = &link.results {
        r.mark_read();
    }
    read
}

/// Handles DONE frames from a worker (those of one read, in order): takes
/// the frames they answer from its book, dispatches once for the room they
/// freed, then delivers their results. `answered` is scratch, left empty.
/// On a frame that is malformed or answers the wrong calls, the frames
/// before it are still delivered.
pub(super) fn handle_dones<'a, I>(
    shared: &Shared,
    slot: usize,
    pid: u32,
    bodies: I,
    answered: &mut Vec<Batch>,
) -> std::result::Result<(), String>
where
    I: Iterator<Item = &'a [u8]> + Clone,
{
    if bodies.clone().next().is_none() {
        return Ok(());
    }
    let mut failure = None;
    let touched = {
        let mut st = lock(&shared.state);
        let st = &mut *st;
        let calls_wait = !st.queue.is_empty();
        let Some(book) = st.slots[slot].as_mut() else {
            return Err("results from a worker the pool no longer tracks".into());
        };
        for body in bodies.clone() {
            if let Err(why) = answers_front(book, body) {
                failure = Some(why);
                break;
            }
            answered.extend(book.take_flight(0));
            book.earn(calls_wait);
        }
        controls::arm_front(shared, slot, book);
        shared.dispatch(st)
    };
    for link in touched {
        link.kick();
    }
    for (batch, body) in answered.drain(..).zip(bodies) {
        // Checked by `answers_front`: every record is well formed.
        let done = DoneRecords::accepted(body);
        // The worker's name only for an error.
        let mut outcomes = done.records().map(|(_, tag, bytes)| {
            outcome(tag, bytes).map_err(|e| e.into_error(&Shared::worker_name(pid)))
        });
        for it in batch.items {
            it.delivery.deliver_each(&mut outcomes);
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Handles one frame from a worker.
pub(super) fn handle_frame(
    shared: &Shared,
    slot: usize,
    pid: u32,
    body: &[u8],
    answered: &mut Vec<Batch>,
) -> std::result::Result<(), String> {
    if wire::is_done(body) {
        return handle_dones(shared, slot, pid, std::iter::once(body), answered);
    }
    let worker = Shared::worker_name(pid);
    match decode_frame(body).map_err(|e| e.0)? {
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
                        Some(at) => back.extend(book.take_flight(at)),
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
        Frame::Done { .. } | Frame::Task { .. } | Frame::Init { .. } | Frame::Steal => {
            Err("a frame only a pool may send".into())
        }
    }
}

//! A worker's spare large byte buffer: the buffer of a large `Vec<u8>`
//! output, kept once its bytes have been sent, to decode the next large
//! `Vec<u8>` argument into.
//!
//! A fresh 64 MiB allocation is fresh pages: the kernel zeroes each one as
//! the decode first touches it, which cost more than the copy itself (the
//! profile in BENCHMARKS.md, "Shared memory for large frames"). A task that
//! echoes or transforms a byte vector hands its output buffer back to the
//! worker, and the next call of the same size decodes into those warm pages.
//!
//! Only a process that serves calls turns this on ([`enable`], in the
//! worker); anywhere else [`take`] is a plain allocation and [`keep`] a
//! plain drop. One buffer is kept, of [`MIN`] to [`MAX`] bytes.
//!
//! In a worker, a large `Vec<u8>` output is also not encoded into the reply
//! buffer: [`encode_output`] sets it aside and the DONE frame carries it as
//! a piece of its own (`wire::FrameWriter`), copied once into the result
//! region; then it becomes the spare.

use crate::ship::bytes_of;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Smaller buffers are not kept (their pages are cheap to fault).
const MIN: usize = 1 << 20;

/// Larger buffers are not kept (bounds the memory an idle worker holds).
const MAX: usize = 256 << 20;

static ON: AtomicBool = AtomicBool::new(false);
static SPARE: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// Turns the spare buffer on in this process (a worker, before serving).
pub(crate) fn enable() {
    ON.store(true, Ordering::Relaxed);
}

fn slot() -> std::sync::MutexGuard<'static, Option<Vec<u8>>> {
    SPARE.lock().unwrap_or_else(|p| p.into_inner())
}

/// An empty buffer with room for `len` bytes: the spare one when it fits
/// (and is not more than twice too large), else a new allocation.
pub(crate) fn take(len: usize) -> Vec<u8> {
    if len >= MIN && ON.load(Ordering::Relaxed) {
        let mut spare = slot();
        if spare
            .as_ref()
            .is_some_and(|v| v.capacity() >= len && v.capacity() / 2 <= len)
        {
            if let Some(mut v) = spare.take() {
                v.clear();
                return v;
            }
        }
    }
    let mut v = Vec::new();
    crate::ship::reserve_large(&mut v, len);
    v
}

/// Bodies at least this large are copied by several threads when they go
/// into fresh pages (faulting and zeroing them is most of the cost, and
/// runs in parallel).
const PARALLEL_AT: usize = 16 << 20;

/// Each thread of a parallel copy copies at least this much.
const PER_THREAD: usize = 8 << 20;

/// A `Vec` holding a copy of `body`: in a worker, in the spare buffer when
/// it fits; a large body into fresh pages is copied by up to 4 threads.
pub(crate) fn copied(body: &[u8]) -> Vec<u8> {
    let mut v = take(body.len());
    if body.len() < PARALLEL_AT || ON.load(Ordering::Relaxed) {
        // A worker's buffer is warm (and a forked worker must not start std
        // threads: see `worker::spawn_bare`).
        v.extend_from_slice(body);
        return v;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let to = v.spare_capacity_mut()[..body.len()].as_mut_ptr() as usize;
    let _: Result<(), std::convert::Infallible> = in_parts(body.len(), threads, |r| {
        // SAFETY: `r` lies inside `body` and inside `v`'s spare capacity,
        // and `in_parts` hands out each range once (they do not overlap).
        unsafe {
            std::ptr::copy_nonoverlapping(
                body[r.clone()].as_ptr(),
                (to + r.start) as *mut u8,
                r.len(),
            )
        };
        Ok(())
    });
    // SAFETY: every part of the first `body.len()` spare bytes was written
    // (`in_parts` returns once every range ran).
    unsafe { v.set_len(body.len()) };
    v
}

/// Runs `part` over the ranges of `0..len` split between up to `threads`
/// threads (at most 4, each with at least [`PER_THREAD`] bytes): this one
/// and short-lived helpers. Each range is taken by whoever gets to it
/// first, so a helper that cannot start, or starts late, only costs time.
/// Returns once every range ran: the first error, if any.
pub(crate) fn in_parts<E: Send>(
    len: usize,
    threads: usize,
    part: impl Fn(std::ops::Range<usize>) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let n = threads.clamp(1, 4).min(len / PER_THREAD).max(1);
    if n == 1 {
        // No scope at all: a forked worker must not start std threads.
        return part(0..len);
    }
    let size = len.div_ceil(n);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: Mutex<Option<E>> = Mutex::new(None);
    let run = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            return;
        }
        let range = i * size..((i + 1) * size).min(len);
        if let Err(e) = part(range) {
            failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..n {
            let _ = std::thread::Builder::new()
                .name("fanout-copy".into())
                .spawn_scoped(s, run);
        }
        run();
    });
    failed
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .map_or(Ok(()), Err)
}

/// Drops `value`, keeping its buffer as the spare if it is a large
/// `Vec<u8>` (alone or as a one-element tuple) and the spare is on.
pub(crate) fn keep<T: 'static>(value: T) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    if let Ok(v) = bytes_of(value) {
        if (MIN..=MAX).contains(&v.capacity()) {
            *slot() = Some(v);
        }
    }
}

thread_local! {
    /// Set aside by [`encode_output`] and taken by the frame writer, on the
    /// thread that runs the call.
    static TAIL: std::cell::Cell<Option<Vec<u8>>> = const { std::cell::Cell::new(None) };
}

/// Appends a task's encoded output to `out` (what `ship::encode` writes).
/// In a worker, a large `Vec<u8>` output is not copied: only its length
/// prefix is appended and the vector is set aside for [`take_tail`], so
/// that its bytes are copied once, straight into the frame's destination
/// (the result region, or the pipe), right after the prefix.
pub(crate) fn encode_output<T: serde::Serialize + 'static>(
    output: T,
    out: &mut Vec<u8>,
) -> Result<(), crate::Error> {
    if !ON.load(Ordering::Relaxed) {
        return crate::ship::encode(&output, out);
    }
    match bytes_of(output) {
        Ok(v) if v.len() >= MIN => {
            crate::ship::put_varint(out, v.len() as u64);
            TAIL.set(Some(v));
            Ok(())
        }
        Ok(v) => crate::ship::encode(&v, out),
        Err(Some(other)) => crate::ship::encode(&other, out),
        Err(None) => Ok(()),
    }
}

/// Sets a tail as [`encode_output`] does (for the frame writer's tests).
#[cfg(test)]
pub(crate) fn set_tail(v: Vec<u8>) {
    TAIL.set(Some(v));
}

/// The output [`encode_output`] set aside, if any (its bytes follow what
/// it appended).
pub(crate) fn take_tail() -> Option<Vec<u8>> {
    TAIL.take()
}

thread_local! {
    /// A large byte vector read from the other process's memory for the
    /// frame being handled (`cma`): the record that stands for it holds
    /// only its length prefix, and its decode takes it ([`take_incoming`]).
    static INCOMING: std::cell::Cell<Option<Vec<u8>>> = const { std::cell::Cell::new(None) };
}

/// Sets (or clears) the vector read for the frame being handled on this
/// thread; returns the one it replaces, if a decode did not take it.
pub(crate) fn set_incoming(v: Option<Vec<u8>>) -> Option<Vec<u8>> {
    INCOMING.replace(v)
}

/// The vector read for this frame, if it is `len` bytes long (a decode
/// whose record holds only a length prefix).
pub(crate) fn take_incoming(len: u64) -> Option<Vec<u8>> {
    let v = INCOMING.take()?;
    if v.len() as u64 == len {
        Some(v)
    } else {
        INCOMING.set(Some(v));
        None
    }
}

/// The whole encoding of a record's bytes: `bytes` itself, or when they
/// are only the length prefix of the vector read for this frame, a copy of
/// prefix and vector (for a future that keeps its encoded result for
/// dependents).
pub(crate) fn whole(bytes: &[u8]) -> std::sync::Arc<[u8]> {
    let prefix_only = crate::ship::get_varint(bytes).filter(|&(_, at)| at == bytes.len());
    if let Some((len, _)) = prefix_only {
        if let Some(v) = INCOMING.take() {
            let whole = (v.len() as u64 == len).then(|| [bytes, &v[..]].concat().into());
            INCOMING.set(Some(v));
            if let Some(w) = whole {
                return w;
            }
        }
    }
    bytes.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the spare is process-wide state.
    #[test]
    fn kept_buffers_tails_and_parallel_copies() {
        // Off (as in a pool): plain allocations, plain encoding.
        let mut out = Vec::new();
        encode_output(vec![3u8; 2 * MIN], &mut out).unwrap();
        assert_eq!(out.len(), 4 + 2 * MIN, "a 4-byte varint and the bytes");
        assert!(take_tail().is_none());
        let body: Vec<u8> = (0..PARALLEL_AT + 12345).map(|i| (i % 253) as u8).collect();
        assert!(copied(&body) == body, "a parallel copy");

        enable();
        let v = vec![7u8; 2 * MIN];
        let ptr = v.as_ptr();
        keep(v);
        // Too small a request leaves the spare alone.
        let small = take(MIN / 2);
        assert_ne!(small.as_ptr(), ptr);
        let again = take(2 * MIN - 1);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty() && again.capacity() >= 2 * MIN);
        // Taken: the next one is new.
        let other = take(2 * MIN - 1);
        assert_ne!(other.as_ptr(), ptr);
        // Other types, and small vectors, are just dropped.
        keep(5u32);
        keep(vec![1u8; 10]);
        assert!(slot().is_none());
        keep((vec![1u8; MIN],));
        assert!(slot().is_some());

        // A large output is set aside after its length prefix; others are encoded.
        let mut out = Vec::new();
        encode_output((vec![9u8; MIN],), &mut out).unwrap();
        assert_eq!(out.len(), 3, "just the varint length");
        assert_eq!(take_tail().map(|v| v.len()), Some(MIN));
        encode_output(vec![9u8; 10], &mut out).unwrap();
        encode_output(7u64, &mut out).unwrap();
        assert_eq!(out.len(), 3 + 11 + 1);
        assert!(take_tail().is_none());
    }
}

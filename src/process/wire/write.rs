//! Writing frames: task frames built in place, results appended record by
//! record, and the buffer that splits a byte stream back into frames.

use super::*;
use crate::ship::{Callee, Encoded};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

/// Builds frames into one growing buffer.
pub(crate) struct FrameWriter {
    buf: Vec<u8>,
    start: usize,
    count_at: Option<usize>,
    count: u32,
    /// The most a frame may grow to through [`FrameWriter::outcome`]; an
    /// outcome that would pass it becomes a `Codec` error of its own item.
    limit: usize,
    /// Large outputs that follow `buf[at..]` in the frame, each copied
    /// once to where the frame goes (see `spare::encode_output`).
    tails: Vec<(usize, Vec<u8>)>,
    /// Where the length of the last outcome written is (see [`Spliced::detached`]).
    last_len_at: usize,
}

/// A frame as [`FrameWriter::into_parts`] leaves it: the buffer, with
/// large outputs spliced in at their offsets.
pub(crate) struct Spliced {
    pub(crate) buf: Vec<u8>,
    pub(crate) tails: Vec<(usize, Vec<u8>)>,
    last_len_at: usize,
}

impl Spliced {
    /// The frame's bytes, in order, as contiguous pieces.
    pub(crate) fn pieces(&self) -> impl Iterator<Item = &[u8]> + Clone {
        let ends = self.tails.iter().map(|(at, _)| *at).chain([self.buf.len()]);
        let starts = std::iter::once(0).chain(self.tails.iter().map(|(at, _)| *at));
        let heads = starts.zip(ends).map(|(a, b)| &self.buf[a..b]);
        let tails = self.tails.iter().map(|(_, v)| Some(&v[..])).chain([None]);
        heads
            .zip(tails)
            .flat_map(|(h, t)| std::iter::once(h).chain(t))
            .filter(|p| !p.is_empty())
    }

    /// True if the frame has no bytes.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.tails.is_empty()
    }

    /// When the frame's only large output is its last bytes: the frame
    /// without them (lengths patched, so the output's record holds only its
    /// length prefix) and the output, for a CMA frame (see `cma`).
    pub(crate) fn detached(&self) -> Option<(Vec<u8>, &[u8])> {
        let [(at, tail)] = &self.tails[..] else {
            return None;
        };
        if *at != self.buf.len() || self.buf.len() < self.last_len_at + 4 {
            return None;
        }
        let mut inline = self.buf.clone();
        let less = |field: &mut [u8]| {
            let n = u32::from_le_bytes(field[..4].try_into().unwrap_or_default());
            let n = n.checked_sub(tail.len() as u32)?;
            field[..4].copy_from_slice(&n.to_le_bytes());
            Some(())
        };
        less(&mut inline[..4])?;
        less(&mut inline[self.last_len_at..])?;
        Some((inline, tail))
    }
}

/// Room kept below [`MAX_FRAME`] for the error that replaces an oversized result.
const ERROR_ROOM: usize = 64 << 10;

impl FrameWriter {
    pub(crate) fn new(buf: Vec<u8>) -> Self {
        FrameWriter {
            buf,
            start: 0,
            count_at: None,
            count: 0,
            limit: MAX_FRAME - ERROR_ROOM,
            tails: Vec::new(),
            last_len_at: 0,
        }
    }

    /// Bytes of large outputs spliced in at or after `at`.
    fn tail_bytes_from(&self, at: usize) -> usize {
        self.tails
            .iter()
            .filter(|(p, _)| *p >= at)
            .map(|(_, v)| v.len())
            .sum()
    }

    /// A writer whose DONE frames stay within `limit` bytes (for tests).
    #[cfg(test)]
    pub(super) fn with_limit(buf: Vec<u8>, limit: usize) -> Self {
        FrameWriter {
            limit,
            ..FrameWriter::new(buf)
        }
    }

    fn begin(&mut self, kind: u8) {
        self.start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0, kind]);
    }

    /// Starts a DONE frame; add outcomes with [`FrameWriter::outcome`].
    pub(crate) fn begin_done(&mut self) {
        self.begin(DONE);
        self.begin_count();
    }

    fn begin_count(&mut self) {
        self.count_at = Some(self.buf.len());
        self.count = 0;
        self.buf.extend_from_slice(&[0; 4]);
    }

    /// Adds one outcome to a DONE frame; `fill` appends the output bytes
    /// directly (so large results are written once) or reports an error.
    pub(crate) fn outcome(
        &mut self,
        id: u64,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>,
    ) {
        self.count += 1;
        self.buf.extend_from_slice(&id.to_le_bytes());
        let tag_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0, 0]);
        let body_at = self.buf.len();
        // (A tail left by a call outside any outcome, an initializer's, is
        // not this item's.)
        if let Some(stale) = crate::process::spare::take_tail() {
            crate::process::spare::keep(stale);
        }
        let filled = fill(&mut self.buf);
        // A large output set aside by the trampoline follows what it wrote.
        let tail = crate::process::spare::take_tail();
        let tail_len = tail.as_ref().map_or(0, Vec::len);
        match (&filled, tail) {
            (Ok(()), Some(v)) => self.tails.push((self.buf.len(), v)),
            (Err(_), Some(v)) => crate::process::spare::keep(v),
            (_, None) => {}
        }
        let size = self.buf.len() + self.tail_bytes_from(self.start) - self.start;
        let result = match filled {
            // A result that would push the frame past the limit fails alone:
            // the frame stays decodable, no length can wrap a `u32`, and the
            // other items of a chunk keep their results.
            Ok(()) if size > self.limit => Err(WireError::Codec {
                type_name: "result".into(),
                message: format!(
                    "the encoded result takes {} bytes, more than a frame carries ({} bytes); \
                     return less, or write large data to a file and return its path",
                    self.buf.len() - body_at + tail_len,
                    self.limit
                ),
            }),
            other => other,
        };
        if let Err(e) = result {
            if self.tails.last().is_some_and(|(at, _)| *at >= body_at) {
                if let Some((_, v)) = self.tails.pop() {
                    crate::process::spare::keep(v);
                }
            }
            self.buf.truncate(body_at);
            self.buf[tag_at] = 1;
            // Encoding a WireError into a Vec cannot fail.
            let _ = postcard::to_io(&e, &mut self.buf);
        }
        let len = (self.buf.len() - body_at + self.tail_bytes_from(body_at)) as u32;
        self.buf[tag_at + 1..tag_at + 5].copy_from_slice(&len.to_le_bytes());
        self.last_len_at = tag_at + 1;
    }

    /// Writes a whole INIT frame.
    pub(crate) fn init(&mut self, build_id: &BuildId, callee: &Callee, args: &[u8]) {
        self.begin(INIT);
        self.buf.extend_from_slice(build_id);
        self.buf.extend_from_slice(&callee.trampoline.to_le_bytes());
        self.put_bytes(callee.captures());
        self.put_bytes(args);
        self.end();
    }

    /// Writes a whole STEAL frame.
    pub(crate) fn steal(&mut self) {
        self.begin(STEAL);
        self.end();
    }

    /// Writes a whole RETURNED frame.
    pub(crate) fn returned(&mut self, frames: &[u64]) {
        self.begin(RETURNED);
        self.buf
            .extend_from_slice(&(frames.len() as u32).to_le_bytes());
        for id in frames {
            self.buf.extend_from_slice(&id.to_le_bytes());
        }
        self.end();
    }

    /// Writes a whole INIT_FAILED frame.
    pub(crate) fn init_failed(&mut self, error: &WireError) {
        self.begin(INIT_FAILED);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let _ = postcard::to_io(error, &mut self.buf);
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.end();
    }

    /// Writes a whole INIT_OK frame.
    pub(crate) fn init_ok(&mut self) {
        self.begin(INIT_OK);
        self.end();
    }

    fn put_bytes(&mut self, bytes: &[u8]) {
        self.buf
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(bytes);
    }

    /// Finishes the frame being built (patches its count and length).
    pub(crate) fn end(&mut self) {
        if let Some(at) = self.count_at.take() {
            self.buf[at..at + 4].copy_from_slice(&self.count.to_le_bytes());
        }
        let len = (self.buf.len() - self.start - 4 + self.tail_bytes_from(self.start)) as u32;
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// The frames written (for writers that never splice: see [`Self::into_parts`]).
    pub(crate) fn into_inner(self) -> Vec<u8> {
        debug_assert!(self.tails.is_empty(), "spliced frames need into_parts");
        self.buf
    }

    /// The frames written, with the large outputs spliced into them.
    pub(crate) fn into_parts(self) -> Spliced {
        Spliced {
            buf: self.buf,
            tails: self.tails,
            last_len_at: self.last_len_at,
        }
    }
}

/// A contiguous piece of outgoing bytes: frame headers the pool owns, or the
/// encoded arguments of a call, shared with the call's in-flight record.
pub(crate) enum Piece {
    Own(Vec<u8>),
    Head(Arc<Encoded>),
    Body(Arc<Encoded>),
}

impl Piece {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Piece::Own(v) => v,
            Piece::Head(e) => &e.head,
            Piece::Body(e) => &e.body,
        }
    }
}

/// Arguments at least this large are written from their own buffer, not copied.
pub(super) const SHARE_AT: usize = 64 * 1024;

/// Lays out a TASK frame as pieces ready for `writev`. Each item is
/// `(call id, records, arguments)`: with `records == 0` the arguments of one
/// call; otherwise a map chunk's `records` records, already laid out.
pub(crate) fn task_frame(
    build_id: &BuildId,
    callee: &Callee,
    items: &[(u64, u32, Arc<Encoded>)],
) -> Vec<Piece> {
    let mut pieces = VecDeque::new();
    task_frame_into(build_id, callee, items, Vec::new(), &mut pieces);
    pieces.into()
}

/// [`task_frame`], appending the pieces to `out` and starting with the
/// (empty) buffer `cur`, so that a reused buffer saves the allocation.
pub(crate) fn task_frame_into(
    build_id: &BuildId,
    callee: &Callee,
    items: &[(u64, u32, Arc<Encoded>)],
    mut cur: Vec<u8>,
    pieces: &mut VecDeque<Piece>,
) {
    let captures = callee.captures();
    let record_len = |records: u32, e: &Encoded| {
        if records == 0 {
            12 + e.len()
        } else {
            e.len()
        }
    };
    let body_len = 1
        + 16
        + 8
        + 4
        + captures.len()
        + 4
        + items
            .iter()
            .map(|(_, r, e)| record_len(*r, e))
            .sum::<usize>();
    let count: usize = items.iter().map(|(_, r, _)| (*r as usize).max(1)).sum();
    let inline: usize = items
        .iter()
        .map(|(_, r, e)| record_len(*r, e))
        .filter(|&n| n < SHARE_AT)
        .sum();
    let small = if captures.len() < SHARE_AT {
        captures.len()
    } else {
        0
    };
    cur.clear();
    cur.reserve(37 + small + inline);
    cur.extend_from_slice(&(body_len as u32).to_le_bytes());
    cur.push(TASK);
    cur.extend_from_slice(build_id);
    cur.extend_from_slice(&callee.trampoline.to_le_bytes());
    cur.extend_from_slice(&(captures.len() as u32).to_le_bytes());
    if captures.len() < SHARE_AT {
        cur.extend_from_slice(captures);
    } else {
        pieces.push_back(Piece::Own(std::mem::take(&mut cur)));
        pieces.push_back(Piece::Head(callee.captures.clone()));
    }
    cur.extend_from_slice(&(count as u32).to_le_bytes());
    for (id, records, args) in items {
        if *records > 0 {
            // A map chunk: its records are written as they are.
            if args.len() < SHARE_AT {
                cur.extend_from_slice(&args.head);
            } else {
                pieces.push_back(Piece::Own(std::mem::take(&mut cur)));
                pieces.push_back(Piece::Head(args.clone()));
            }
            continue;
        }
        cur.extend_from_slice(&id.to_le_bytes());
        cur.extend_from_slice(&(args.len() as u32).to_le_bytes());
        if args.len() < SHARE_AT {
            cur.extend_from_slice(&args.head);
            cur.extend_from_slice(&args.body);
        } else {
            pieces.push_back(Piece::Own(std::mem::take(&mut cur)));
            pieces.push_back(Piece::Head(args.clone()));
            if !args.body.is_empty() {
                pieces.push_back(Piece::Body(args.clone()));
            }
        }
    }
    if !cur.is_empty() {
        pieces.push_back(Piece::Own(cur));
    }
}

/// Appends one TASK record (`id:u64 len:u32 args[len]`) to a map chunk's
/// records; `fill` appends the encoded arguments. On error nothing stays.
pub(crate) fn push_record<E>(
    records: &mut Vec<u8>,
    id: u64,
    fill: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<usize, E> {
    let at = records.len();
    let mut header = [0u8; 12];
    header[..8].copy_from_slice(&id.to_le_bytes());
    records.extend_from_slice(&header);
    if let Err(e) = fill(records) {
        records.truncate(at);
        return Err(e);
    }
    let len = records.len() - at - 12;
    records[at + 8..at + 12].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(len)
}

/// Accumulates bytes read from a pipe and splits them into frames.
pub(crate) struct FrameBuf {
    buf: Vec<u8>,
    start: usize,
}

impl FrameBuf {
    pub(crate) fn new() -> Self {
        FrameBuf {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// Reads once from `fd` into the buffer; `Ok(0)` at end of file.
    pub(crate) fn read_from(&mut self, fd: libc::c_int) -> std::io::Result<usize> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.capacity() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // Make room for the whole pending frame when its length is known.
        let want = match self.pending_len() {
            Some(n) => (n + 4)
                .saturating_sub(self.buf.len() - self.start)
                .max(64 * 1024),
            None => 64 * 1024,
        };
        crate::ship::reserve_large(&mut self.buf, want);
        let spare = self.buf.capacity() - self.buf.len();
        let len = self.buf.len();
        // SAFETY: we read at most `spare` bytes into the vector's spare
        // capacity and only extend `len` by what `read` reported.
        let n = unsafe {
            libc::read(
                fd,
                self.buf.as_mut_ptr().add(len) as *mut libc::c_void,
                spare,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `read` initialised the first `n` spare bytes.
        unsafe { self.buf.set_len(len + n as usize) };
        Ok(n as usize)
    }

    fn pending_len(&self) -> Option<usize> {
        let b = self.buf.get(self.start..self.start + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// The byte range of the next complete frame body, if one is buffered.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Range<usize>>, FrameError> {
        let Some(len) = self.pending_len() else {
            return Ok(None);
        };
        if len > MAX_FRAME {
            return Err(bad(format!(
                "frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"
            )));
        }
        if len == 0 {
            return Err(bad("empty frame"));
        }
        let body = self.start + 4;
        if self.buf.len() - body < len {
            return Ok(None);
        }
        self.start = body + len;
        Ok(Some(body..body + len))
    }

    /// Takes a frame body out as an owned buffer and the body's offset in
    /// it: a large frame that is all the buffer holds is handed over whole
    /// (no copy); anything else is copied.
    pub(crate) fn take_frame(&mut self, range: Range<usize>) -> (Vec<u8>, usize) {
        if range.end == self.buf.len() && range.len() >= 64 * 1024 {
            self.start = 0;
            (
                std::mem::replace(&mut self.buf, Vec::with_capacity(64 * 1024)),
                range.start,
            )
        } else {
            (self.buf[range].to_vec(), 0)
        }
    }

    pub(crate) fn slice(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// True when bytes of an incomplete frame are buffered.
    pub(crate) fn has_partial(&self) -> bool {
        self.start < self.buf.len()
    }
}

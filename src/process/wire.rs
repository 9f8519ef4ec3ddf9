//! Frames between a pool and its worker processes.
//!
//! Every frame is `len: u32 LE` followed by `len` bytes: a kind byte and the
//! body. Bodies are hand-laid (fixed-width little-endian integers and
//! length-prefixed byte strings); the per-item arguments and results inside
//! them are postcard. Decoding treats every byte as untrusted: lengths are
//! bounded by [`MAX_FRAME`] and by the bytes actually present, and every
//! failure is a [`FrameError`], never a panic.
//!
//! ```text
//! pool → worker   TASK  build_id[16] trampoline:u64 clen:u32 captures[clen]
//!                       n:u32 { id:u64 len:u32 args[len] }*n
//!                 INIT  build_id[16] trampoline:u64 clen:u32 captures[clen] len:u32 args[len]
//! worker → pool   DONE  n:u32 { id:u64 tag:u8 len:u32 bytes[len] }*n   tag 0 = output, 1 = WireError
//!                 INIT_FAILED  len:u32 WireError[len]
//! pool → worker   STEAL          (hand back the frames you have not started)
//! worker → pool   RETURNED  n:u32 { first call id:u64 }*n   (the frames handed back)
//!                 INIT_OK      (empty: the initializer succeeded)
//! either way      SHM  (a large frame's body in shared memory; see `shm.rs`)
//!                 CMA  (a frame whose one large byte vector stays in the sender's
//!                       memory, read by the receiver; see `cma.rs`)
//! ```

use crate::ship::{BuildId, Callee, Encoded, WireError};
use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// The largest frame either side accepts (1 GiB).
pub const MAX_FRAME: usize = 1 << 30;

const TASK: u8 = 1;
const INIT: u8 = 2;
const DONE: u8 = 10;
const INIT_FAILED: u8 = 11;
const STEAL: u8 = 3;
const RETURNED: u8 = 13;
const INIT_OK: u8 = 12;

/// A decoded frame, borrowing its byte strings from the frame buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Run `items` with the trampoline.
    Task {
        /// Sender's build id.
        build_id: BuildId,
        /// Trampoline offset.
        trampoline: u64,
        /// Encoded captures, once for every item (empty for a fn item).
        captures: &'a [u8],
        /// `(call id, encoded arguments)`.
        items: Vec<(u64, &'a [u8])>,
    },
    /// Run the initializer before any task.
    Init {
        /// Sender's build id.
        build_id: BuildId,
        /// Trampoline offset.
        trampoline: u64,
        /// Encoded captures (empty for a fn item).
        captures: &'a [u8],
        /// Encoded arguments.
        args: &'a [u8],
    },
    /// Outcomes of one task frame, in its order.
    Done {
        /// `(call id, encoded output or error)`.
        results: Vec<(u64, Result<&'a [u8], WireError>)>,
    },
    /// Hand back every frame not yet started.
    Steal,
    /// Frames handed back, each named by its first call id.
    Returned {
        /// First call id of each returned frame.
        frames: Vec<u64>,
    },
    /// The initializer failed; the worker exits.
    InitFailed {
        /// What went wrong.
        error: WireError,
    },
    /// The initializer succeeded (lets the pool tell a worker that its
    /// initializer killed from one that a call killed).
    InitOk,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: impl Into<String>) -> FrameError {
    FrameError(what.into())
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FrameError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| bad(format!("truncated frame: {what} needs {n} bytes")))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, FrameError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, FrameError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, FrameError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self, what: &str) -> Result<&'a [u8], FrameError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    fn build_id(&mut self) -> Result<BuildId, FrameError> {
        let mut id = BuildId::default();
        id.copy_from_slice(self.take(16, "build id")?);
        Ok(id)
    }
    /// A count of records that each take at least `min_record` bytes, checked
    /// against the bytes left so a hostile count cannot make us allocate.
    fn count(&mut self, min_record: usize) -> Result<usize, FrameError> {
        let n = self.u32("count")? as usize;
        if n.saturating_mul(min_record) > self.bytes.len() - self.at {
            return Err(bad(format!("frame claims {n} records but is too short")));
        }
        Ok(n)
    }
    /// One `{ id tag len bytes }` record of a DONE frame.
    fn done_record(&mut self) -> Result<DoneRecord<'a>, FrameError> {
        let id = self.u64("call id")?;
        let tag = self.u8("outcome tag")?;
        let bytes = self.bytes("outcome")?;
        let outcome = match tag {
            0 => Ok(bytes),
            1 => Err(decode_wire_error(bytes)?),
            t => return Err(bad(format!("unknown outcome tag {t}"))),
        };
        Ok((id, outcome))
    }
    fn finish(&self) -> Result<(), FrameError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(bad(format!(
                "{} trailing bytes after the frame body",
                self.bytes.len() - self.at
            )))
        }
    }
}

/// Decodes one frame body (the bytes after the length prefix).
pub fn decode_frame(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    let mut c = Cursor { bytes: body, at: 0 };
    let frame = match c.u8("kind")? {
        TASK => {
            let build_id = c.build_id()?;
            let trampoline = c.u64("trampoline")?;
            let captures = c.bytes("captures")?;
            let n = c.count(12)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let id = c.u64("call id")?;
                items.push((id, c.bytes("arguments")?));
            }
            Frame::Task {
                build_id,
                trampoline,
                captures,
                items,
            }
        }
        INIT => Frame::Init {
            build_id: c.build_id()?,
            trampoline: c.u64("trampoline")?,
            captures: c.bytes("captures")?,
            args: c.bytes("arguments")?,
        },
        DONE => {
            let n = c.count(13)?;
            let mut results = Vec::with_capacity(n);
            for _ in 0..n {
                results.push(c.done_record()?);
            }
            Frame::Done { results }
        }
        STEAL => Frame::Steal,
        RETURNED => {
            let n = c.count(8)?;
            let mut frames = Vec::with_capacity(n);
            for _ in 0..n {
                frames.push(c.u64("frame id")?);
            }
            Frame::Returned { frames }
        }
        INIT_FAILED => Frame::InitFailed {
            error: decode_wire_error(c.bytes("error")?)?,
        },
        INIT_OK => Frame::InitOk,
        k => return Err(bad(format!("unknown frame kind {k}"))),
    };
    c.finish()?;
    Ok(frame)
}

/// A DONE frame's records, checked once and then walked without building a
/// `Vec` (the I/O thread's path; [`decode_frame`] gives the same records).
#[derive(Clone, Copy)]
pub(crate) struct DoneRecords<'a> {
    records: &'a [u8],
    n: usize,
}

/// The records of `body` if it is a DONE frame, checked as [`decode_frame`]
/// checks them; `Ok(None)` for any other kind of frame.
pub(crate) fn done_records(body: &[u8]) -> Result<Option<DoneRecords<'_>>, FrameError> {
    if !is_done(body) {
        return Ok(None);
    }
    let mut c = Cursor { bytes: body, at: 1 };
    let n = c.count(13)?;
    let start = c.at;
    for _ in 0..n {
        // An error outcome is a well-formed record too.
        let _ = c.done_record()?;
    }
    c.finish()?;
    Ok(Some(DoneRecords {
        records: &body[start..],
        n,
    }))
}

impl<'a> DoneRecords<'a> {
    /// The records of a body that [`done_records`] has accepted, without
    /// checking them again (a body it did not accept walks short, never
    /// out of bounds).
    pub(crate) fn accepted(body: &'a [u8]) -> DoneRecords<'a> {
        let n = body
            .get(1..5)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        DoneRecords {
            records: body.get(5..).unwrap_or_default(),
            n,
        }
    }

    /// `(call id, tag, bytes)` of each record, in order; see [`outcome`].
    pub(crate) fn records(&self) -> DoneIter<'a> {
        DoneIter {
            bytes: self.records,
            left: self.n,
        }
    }
}

/// Panics unless [`decode_frame`] and the I/O thread's in-place reader agree
/// on `body`: the same bodies accepted as DONE frames, the same records in
/// the same order, and the unchecked walk of an accepted body
/// ([`DoneRecords::accepted`]) giving them again. For the fuzz target
/// `frame_decoder`; crate-private otherwise.
///
/// ```
/// fanout::__wire::assert_done_readers_agree(&[]);
/// ```
#[doc(hidden)]
pub fn assert_done_readers_agree(body: &[u8]) {
    fn walked(r: DoneRecords<'_>) -> Vec<DoneRecord<'_>> {
        r.records()
            .map(|(id, tag, bytes)| (id, outcome(tag, bytes)))
            .collect()
    }
    match (done_records(body), decode_frame(body)) {
        (Ok(Some(fast)), Ok(Frame::Done { results })) => {
            assert!(walked(fast) == results, "the DONE readers disagree");
            assert!(
                walked(DoneRecords::accepted(body)) == results,
                "the unchecked walk of an accepted DONE frame disagrees"
            );
        }
        (Ok(Some(_)), other) => panic!("in place: a DONE frame; decode_frame: {other:?}"),
        (Ok(None) | Err(_), Ok(Frame::Done { .. })) => {
            panic!("decode_frame accepted a DONE frame the in-place reader refused")
        }
        (Ok(None), _) | (Err(_), _) => {}
    }
}

/// The records of a checked DONE frame (see [`DoneRecords::records`]).
pub(crate) struct DoneIter<'a> {
    bytes: &'a [u8],
    left: usize,
}

impl<'a> Iterator for DoneIter<'a> {
    type Item = (u64, u8, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // Checked by `done_records`; a short record just ends the walk.
        self.left = self.left.checked_sub(1)?;
        let (head, rest) = self.bytes.split_at_checked(13)?;
        let id = u64::from_le_bytes(head[..8].try_into().ok()?);
        let len = u32::from_le_bytes(head[9..13].try_into().ok()?) as usize;
        let (bytes, rest) = rest.split_at_checked(len)?;
        self.bytes = rest;
        Some((id, head[8], bytes))
    }
}

/// A DONE record's outcome from its tag and bytes (as [`decode_frame`] gives it).
#[inline]
pub(crate) fn outcome(tag: u8, bytes: &[u8]) -> Result<&[u8], WireError> {
    if tag == 0 {
        return Ok(bytes);
    }
    Err(
        decode_wire_error(bytes).unwrap_or_else(|e| WireError::Codec {
            type_name: "frame".into(),
            message: e.0,
        }),
    )
}

fn decode_wire_error(bytes: &[u8]) -> Result<WireError, FrameError> {
    postcard::from_bytes(bytes).map_err(|e| bad(format!("malformed error record: {e}")))
}

/// One outcome of a DONE frame: the call id and its output bytes or error.
pub(crate) type DoneRecord<'a> = (u64, Result<&'a [u8], WireError>);

/// True if a frame body is a DONE frame (results; see [`done_records`]).
pub(crate) fn is_done(body: &[u8]) -> bool {
    body.first() == Some(&DONE)
}

/// True if a frame body is a STEAL request.
pub(crate) fn is_steal(body: &[u8]) -> bool {
    body == [STEAL]
}

/// The first call id of a TASK frame body (how RETURNED names frames).
pub(crate) fn task_first_id(body: &[u8]) -> Option<u64> {
    if let Some(Ok((_, inner))) = super::cma::split(body) {
        return task_first_id(inner);
    }
    if let Some(first) = super::shm::task_first_id(body) {
        return Some(first);
    }
    match decode_frame(body) {
        Ok(Frame::Task { items, .. }) => items.first().map(|(id, _)| *id),
        _ => None,
    }
}

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
    fn with_limit(buf: Vec<u8>, limit: usize) -> Self {
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
        if let Some(stale) = super::spare::take_tail() {
            super::spare::keep(stale);
        }
        let filled = fill(&mut self.buf);
        // A large output set aside by the trampoline follows what it wrote.
        let tail = super::spare::take_tail();
        let tail_len = tail.as_ref().map_or(0, Vec::len);
        match (&filled, tail) {
            (Ok(()), Some(v)) => self.tails.push((self.buf.len(), v)),
            (Err(_), Some(v)) => super::spare::keep(v),
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
                    super::spare::keep(v);
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
const SHARE_AT: usize = 64 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn join(pieces: &[Piece]) -> Vec<u8> {
        pieces
            .iter()
            .flat_map(|p| p.bytes().iter().copied())
            .collect()
    }

    fn body(buf: &[u8]) -> &[u8] {
        let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        &buf[4..]
    }

    #[test]
    fn task_round_trip() {
        let big = vec![9u8; SHARE_AT + 1];
        let items = vec![
            (
                1,
                0,
                Arc::new(Encoded {
                    head: b"abc".to_vec(),
                    body: Vec::new(),
                }),
            ),
            (2, 0, Arc::new(Encoded::default())),
            (
                3,
                0,
                Arc::new(Encoded {
                    head: vec![1],
                    body: big.clone(),
                }),
            ),
        ];
        let buf = join(&task_frame(&[7; 16], &Callee::plain(0x1234), &items));
        let mut third = vec![1];
        third.extend_from_slice(&big);
        assert_eq!(
            decode_frame(body(&buf)).unwrap(),
            Frame::Task {
                build_id: [7; 16],
                trampoline: 0x1234,
                captures: &[],
                items: vec![(1, &b"abc"[..]), (2, &b""[..]), (3, &third[..])]
            }
        );
        // Captures, small (inline) and large (a piece of their own), once per frame.
        for captures in [b"xyz".to_vec(), vec![5u8; SHARE_AT + 3]] {
            let callee = Callee {
                trampoline: 9,
                captures: Arc::new(Encoded {
                    head: captures.clone(),
                    body: Vec::new(),
                }),
            };
            let buf = join(&task_frame(&[7; 16], &callee, &items[..2]));
            assert_eq!(
                decode_frame(body(&buf)).unwrap(),
                Frame::Task {
                    build_id: [7; 16],
                    trampoline: 9,
                    captures: &captures,
                    items: vec![(1, &b"abc"[..]), (2, &b""[..])]
                }
            );
        }
    }

    #[test]
    fn a_chunk_is_its_records_between_single_calls() {
        let mut records = Vec::new();
        for args in [&b"x"[..], &b""[..], &b"yz"[..]] {
            let n = push_record(&mut records, 8, |out: &mut Vec<u8>| {
                out.extend_from_slice(args);
                Ok::<(), ()>(())
            });
            assert_eq!(n, Ok(args.len()));
        }
        // A failed record leaves nothing behind.
        assert_eq!(
            push_record(&mut records, 8, |out: &mut Vec<u8>| {
                out.push(1);
                Err(())
            }),
            Err(())
        );
        let one = |head: &[u8]| {
            Arc::new(Encoded {
                head: head.to_vec(),
                body: Vec::new(),
            })
        };
        let items = vec![(1, 0, one(b"a")), (8, 3, one(&records)), (9, 0, one(b"b"))];
        let buf = join(&task_frame(&[1; 16], &Callee::plain(5), &items));
        assert_eq!(
            decode_frame(body(&buf)).unwrap(),
            Frame::Task {
                build_id: [1; 16],
                trampoline: 5,
                captures: &[],
                items: vec![
                    (1, &b"a"[..]),
                    (8, &b"x"[..]),
                    (8, &b""[..]),
                    (8, &b"yz"[..]),
                    (9, &b"b"[..])
                ]
            }
        );
    }

    #[test]
    fn a_result_over_the_frame_limit_fails_only_its_own_item() {
        let mut w = FrameWriter::with_limit(Vec::new(), 400);
        w.begin_done();
        w.outcome(1, |out| {
            out.extend_from_slice(b"small");
            Ok(())
        });
        w.outcome(2, |out| {
            out.extend_from_slice(&[7u8; 1000]);
            Ok(())
        });
        w.outcome(3, |out| {
            out.extend_from_slice(b"also small");
            Ok(())
        });
        w.end();
        let buf = w.into_inner();
        assert!(buf.len() < 800, "the oversized body was dropped");
        let Frame::Done { results } = decode_frame(body(&buf)).unwrap() else {
            panic!("expected a DONE frame");
        };
        assert_eq!(results[0], (1, Ok(&b"small"[..])));
        match &results[1] {
            (2, Err(WireError::Codec { message, .. })) => {
                assert!(message.contains("1000 bytes"), "{message}")
            }
            other => panic!("expected a Codec error for item 2, got {other:?}"),
        }
        assert_eq!(results[2], (3, Ok(&b"also small"[..])));
    }

    #[test]
    fn a_large_output_is_spliced_in_and_bounded_like_the_rest() {
        let big: Vec<u8> = (0..3000).map(|i| i as u8).collect();
        let mut w = FrameWriter::new(Vec::new());
        w.begin_done();
        w.outcome(1, |out| {
            out.extend_from_slice(b"small");
            Ok(())
        });
        w.outcome(2, |out| {
            out.extend_from_slice(b"pp");
            crate::process::spare::set_tail(big.clone());
            Ok(())
        });
        w.outcome(3, |out| {
            out.extend_from_slice(b"after");
            Ok(())
        });
        w.end();
        let spliced = w.into_parts();
        assert_eq!(spliced.tails.len(), 1);
        let buf: Vec<u8> = spliced.pieces().flatten().copied().collect();
        let mut second = b"pp".to_vec();
        second.extend_from_slice(&big);
        assert_eq!(
            decode_frame(body(&buf)).unwrap(),
            Frame::Done {
                results: vec![
                    (1, Ok(&b"small"[..])),
                    (2, Ok(&second[..])),
                    (3, Ok(&b"after"[..]))
                ]
            }
        );
        // Not the frame's last bytes: it cannot be detached (for `cma`).
        assert!(spliced.detached().is_none());
        // The last output's tail detaches: lengths lose its bytes, and its
        // record keeps only what came before it.
        let mut w = FrameWriter::new(Vec::new());
        w.begin_done();
        w.outcome(6, |out| {
            out.extend_from_slice(b"first");
            Ok(())
        });
        w.outcome(7, |out| {
            out.extend_from_slice(b"pp");
            crate::process::spare::set_tail(big.clone());
            Ok(())
        });
        w.end();
        let spliced = w.into_parts();
        let (inline, tail) = spliced.detached().expect("a last tail detaches");
        assert_eq!(tail, &big[..]);
        assert_eq!(
            decode_frame(body(&inline)).unwrap(),
            Frame::Done {
                results: vec![(6, Ok(&b"first"[..])), (7, Ok(&b"pp"[..]))]
            }
        );
        // A tail set outside an outcome is not taken by the next one.
        let mut w = FrameWriter::new(Vec::new());
        w.begin_done();
        crate::process::spare::set_tail(big.clone());
        w.outcome(5, |out| {
            out.push(1);
            Ok(())
        });
        w.end();
        assert!(w.into_parts().tails.is_empty());
        // Over the limit, the spliced output fails its own item and is dropped.
        let mut w = FrameWriter::with_limit(Vec::new(), 400);
        w.begin_done();
        w.outcome(4, |out| {
            out.push(1);
            crate::process::spare::set_tail(big.clone());
            Ok(())
        });
        w.end();
        let spliced = w.into_parts();
        assert!(spliced.tails.is_empty());
        let buf: Vec<u8> = spliced.pieces().flatten().copied().collect();
        let Frame::Done { results } = decode_frame(body(&buf)).unwrap() else {
            panic!("expected DONE");
        };
        assert!(
            matches!(&results[0], (4, Err(WireError::Codec { message, .. })) if message.contains("3001 bytes"))
        );
    }

    #[test]
    fn done_round_trip_with_error() {
        let mut w = FrameWriter::new(Vec::new());
        w.begin_done();
        w.outcome(5, |out| {
            out.extend_from_slice(b"ok");
            Ok(())
        });
        w.outcome(6, |out| {
            out.extend_from_slice(b"partial output is discarded");
            Err(WireError::Refused {
                message: "no".into(),
            })
        });
        w.end();
        let buf = w.into_inner();
        assert_eq!(
            decode_frame(body(&buf)).unwrap(),
            Frame::Done {
                results: vec![
                    (5, Ok(&b"ok"[..])),
                    (
                        6,
                        Err(WireError::Refused {
                            message: "no".into()
                        })
                    )
                ]
            }
        );
    }

    /// A DONE frame of a result `b"ok"` (call 5), a refusal (call 6) and,
    /// with `third`, an empty result (call 7).
    fn done_frame(third: bool) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new());
        w.begin_done();
        w.outcome(5, |out| {
            out.extend_from_slice(b"ok");
            Ok(())
        });
        w.outcome(6, |_| {
            Err(WireError::Refused {
                message: "no".into(),
            })
        });
        if third {
            w.outcome(7, |_| Ok(()));
        }
        w.end();
        w.into_inner()
    }

    #[test]
    fn done_records_match_decode_frame() {
        let buf = done_frame(false);
        let Frame::Done { results } = decode_frame(body(&buf)).unwrap() else {
            panic!("expected DONE");
        };
        let done = done_records(body(&buf)).unwrap().unwrap();
        let walked: Vec<_> = done
            .records()
            .map(|(id, tag, bytes)| (id, outcome(tag, bytes)))
            .collect();
        assert_eq!(walked, results);
        assert!(done_records(&[STEAL]).unwrap().is_none());
        // The same checks as `decode_frame`.
        assert!(done_records(&[DONE, 255, 255, 255, 255, 0]).is_err());
        assert!(done_records(&body(&buf)[..body(&buf).len() - 1]).is_err());
        let mut long = body(&buf).to_vec();
        long.push(0);
        assert!(done_records(&long).is_err());
        let mut bad_tag = body(&buf).to_vec();
        bad_tag[1 + 4 + 8] = 7;
        assert!(done_records(&bad_tag).is_err());
        // An accepted body walks the same records again, unchecked.
        let again: Vec<_> = DoneRecords::accepted(body(&buf)).records().collect();
        assert_eq!(again, done.records().collect::<Vec<_>>());
    }

    /// The fuzz target's property on every truncation and every single-byte
    /// change of a DONE frame (each byte set to a few values).
    #[test]
    fn done_readers_agree_on_damaged_frames() {
        let buf = done_frame(true);
        let good = body(&buf);
        for len in 0..=good.len() {
            assert_done_readers_agree(&good[..len]);
        }
        for at in 0..good.len() {
            for value in [0, 1, 2, 7, 0x7f, 0x80, 0xff] {
                let mut damaged = good.to_vec();
                damaged[at] = value;
                assert_done_readers_agree(&damaged);
            }
        }
    }

    #[test]
    fn steal_and_returned_round_trip() {
        let mut w = FrameWriter::new(Vec::new());
        w.steal();
        let buf = w.into_inner();
        assert!(is_steal(body(&buf)));
        assert_eq!(decode_frame(body(&buf)).unwrap(), Frame::Steal);
        let mut w = FrameWriter::new(Vec::new());
        w.returned(&[7, 9]);
        let buf = w.into_inner();
        assert_eq!(
            decode_frame(body(&buf)).unwrap(),
            Frame::Returned { frames: vec![7, 9] }
        );
        assert!(decode_frame(&[RETURNED, 9, 0, 0, 0, 1]).is_err());
        let items = vec![(42, 0, Arc::new(Encoded::default()))];
        assert_eq!(
            task_first_id(body(&join(&task_frame(
                &[0; 16],
                &Callee::plain(1),
                &items
            )))),
            Some(42)
        );
    }

    #[test]
    fn hostile_frames_are_errors() {
        assert!(decode_frame(&[]).is_err());
        assert!(decode_frame(&[99]).is_err());
        // DONE claiming 4 billion records in a short frame.
        assert!(decode_frame(&[DONE, 255, 255, 255, 255, 0]).is_err());
        // TASK with a truncated item.
        let items = vec![(
            1,
            0,
            Arc::new(Encoded {
                head: b"abcdef".to_vec(),
                body: Vec::new(),
            }),
        )];
        let buf = join(&task_frame(&[0; 16], &Callee::plain(1), &items));
        assert!(decode_frame(&body(&buf)[..body(&buf).len() - 2]).is_err());
        // Trailing garbage.
        let mut long = body(&buf).to_vec();
        long.push(0);
        assert!(decode_frame(&long).is_err());
    }
}

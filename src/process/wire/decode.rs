//! Reading frames: every byte untrusted, every failure a [`FrameError`].

use super::*;

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
    if let Some(Ok((_, inner))) = crate::process::cma::split(body) {
        return task_first_id(inner);
    }
    if let Some(first) = crate::process::shm::task_first_id(body) {
        return Some(first);
    }
    match decode_frame(body) {
        Ok(Frame::Task { items, .. }) => items.first().map(|(id, _)| *id),
        _ => None,
    }
}

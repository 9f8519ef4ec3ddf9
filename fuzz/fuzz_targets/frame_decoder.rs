//! Fuzzes the decoder of frames between a process pool and its workers.
//!
//! Every byte a worker sends is untrusted: `decode_frame` must return a
//! `FrameError` for malformed input and never panic, allocate without bound
//! or read out of range. The input is also split the way the pool splits its
//! read buffer (a `u32` little-endian length, then that many bytes) and every
//! complete frame is decoded, so corpus entries can hold several frames.
//! The in-place reader of DONE frames the pool's I/O thread uses must agree
//! with `decode_frame` on every input.
#![no_main]

use fanout::__wire::{assert_done_readers_agree, decode_frame, Frame, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fn check(body: &[u8]) {
    // The I/O thread reads DONE frames in place; it must agree with the decoder.
    assert_done_readers_agree(body);
    match decode_frame(body) {
        Ok(Frame::Task { items, .. }) => {
            // Each item needs at least 12 bytes of the body.
            assert!(items.len() * 12 <= body.len());
            for (_, args) in items {
                assert!(args.len() <= body.len());
            }
        }
        Ok(Frame::Done { results }) => {
            assert!(results.len() * 13 <= body.len());
        }
        Ok(Frame::Init { args, .. }) => assert!(args.len() <= body.len()),
        Ok(Frame::InitFailed { error }) => {
            let _ = format!("{error:?}");
        }
        Ok(Frame::InitOk) => assert_eq!(body.len(), 1),
        // Frame kinds added later: decoding without a panic is the property.
        #[allow(unreachable_patterns)]
        Ok(other) => {
            let _ = format!("{other:?}");
        }
        Err(e) => {
            // Messages are built from the input; they must stay printable.
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The whole input as one frame body.
    check(data);
    // The input as a stream of length-prefixed frames, split as FrameBuf does.
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len == 0 || len > MAX_FRAME || rest.len() - 4 < len {
            break;
        }
        check(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
});

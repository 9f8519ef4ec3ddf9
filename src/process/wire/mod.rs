//! Frames between a pool and its worker processes.
//!
//! Every frame is `len: u32 LE` followed by `len` bytes: a kind byte and the
//! body. Bodies are hand-laid (fixed-width little-endian integers and
//! length-prefixed byte strings); the per-item arguments and results inside
//! them are postcard. Decoding treats every byte as untrusted: lengths are
//! bounded by [`MAX_FRAME`] and by the bytes actually present, and every
//! failure is a [`FrameError`], never a panic. Reading is in `decode.rs`,
//! writing in `write.rs`.
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

use crate::ship::{BuildId, WireError};
use std::fmt;

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

mod decode;
mod write;

pub use decode::*;
pub(crate) use write::*;

#[cfg(test)]
mod tests;

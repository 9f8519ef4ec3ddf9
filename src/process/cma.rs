//! Large byte vectors copied straight from one process's memory into the
//! other's (cross-memory attach, `process_vm_readv`): one copy each way.
//!
//! A shared-memory region (`shm`) costs two copies per direction: the
//! sender's into the region, the receiver's out of it into the `Vec` that
//! its code owns. When a frame's only large part is one `Vec<u8>` (a call's
//! argument, a call's output), the receiver can instead read those bytes
//! from the sender's buffer with one system call, straight into its own
//! `Vec`, the way MPI moves large messages between ranks on one host. The
//! pipe then carries a CMA frame:
//!
//! ```text
//! CMA  pid:u32 addr:u64 len:u64  inner frame body (its length prefix left off)
//! ```
//!
//! The inner frame is the frame as it would have been sent, without the
//! vector's bytes: the record that holds the vector holds only its length
//! prefix (`ship::encode_owned`'s head), and [`super::spare`] hands the
//! vector that was read to the decode of that record.
//!
//! Who keeps the bytes alive while the other side reads them:
//!
//! * **Calls** (pool → worker): the call's encoded arguments stay with its
//!   batch while it is in flight (they are needed to send it again if it
//!   comes back unread or its worker dies); the worker reads them before it
//!   runs the call, so before its DONE frame ends the batch. Then the
//!   batch's argument buffer, warm, becomes the call's result buffer.
//! * **Results** (worker → pool): the worker sets the "not yet read" flag
//!   of its result region (`shm::Outgoing::lend`), sends the frame, and
//!   waits (a futex on the flag) until the pool has read the bytes and
//!   cleared it. Only then does it touch the buffer again or run anything,
//!   so a call that kills the worker next cannot take a finished result
//!   with it, as bytes left in a pipe or a region survive their writer.
//!
//! Reading another process's memory needs ptrace access to it: the same
//! user, a dumpable target, and Yama's `ptrace_scope` at 0 (any process) —
//! or at 1 for a parent reading its child. [`allowed`] checks those once per
//! process (and that no seccomp filter refuses the call); when they fail, or
//! `FANOUT_CROSS_MEMORY=0` is set, large frames go through `shm` as before.
//! A read that fails anyway (the sender died) is handled as a lost worker.

use std::io;
use std::sync::OnceLock;

/// The frame kind of a CMA frame (distinct from `wire`'s kinds and `shm`'s).
const CMA: u8 = 22;

/// Bytes of a CMA frame body before its inner frame.
const HEAD: usize = 1 + 4 + 8 + 8;

/// A vector in another process's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remote {
    pub(crate) pid: u32,
    pub(crate) addr: u64,
    pub(crate) len: usize,
}

/// Who reads whose memory.
#[derive(Clone, Copy)]
pub(crate) enum Reader {
    /// A pool reading its workers (its children).
    Parent,
    /// A worker reading its pool (its parent).
    Child,
}

/// Whether `reader` may read this process's memory (checked once): a
/// worker asks it for its pool ([`Reader::Parent`]) before it lends an
/// output, a pool for its workers ([`Reader::Child`]) before it lends
/// arguments.
pub(crate) fn allowed(reader: Reader) -> bool {
    static PARENT: OnceLock<bool> = OnceLock::new();
    static CHILD: OnceLock<bool> = OnceLock::new();
    let (cell, most) = match reader {
        Reader::Parent => (&PARENT, 1),
        Reader::Child => (&CHILD, 0),
    };
    *cell.get_or_init(|| {
        std::env::var("FANOUT_CROSS_MEMORY").map_or(true, |v| v != "0")
            && yama_scope() <= most
            && super::shm::shareable()
            && probe()
    })
}

/// Yama's `ptrace_scope` (0 when the module is absent).
fn yama_scope() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether `process_vm_readv` works at all here (no seccomp filter refuses
/// it, the kernel has it): one read of this process's own memory.
fn probe() -> bool {
    let from = [0x5au8; 8];
    let mut to = [0u8; 8];
    let local = libc::iovec {
        iov_base: to.as_mut_ptr() as *mut libc::c_void,
        iov_len: to.len(),
    };
    let remote = libc::iovec {
        iov_base: from.as_ptr() as *mut libc::c_void,
        iov_len: from.len(),
    };
    // SAFETY: both iovecs describe live local buffers of 8 bytes.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == 8 && to == from
}

/// The CMA frame (length prefix included) naming `tail` (this process's
/// bytes) and carrying `inner` (a whole frame as pieces, length prefix
/// first, whose body does not hold them).
pub(crate) fn frame<'a>(tail: &[u8], inner: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let len = HEAD
        + inner
            .clone()
            .map(<[u8]>::len)
            .sum::<usize>()
            .saturating_sub(4);
    let body = super::shm::body_of(inner);
    let mut f = Vec::with_capacity(4 + len);
    f.extend_from_slice(&(len as u32).to_le_bytes());
    f.push(CMA);
    f.extend_from_slice(&std::process::id().to_le_bytes());
    f.extend_from_slice(&(tail.as_ptr() as u64).to_le_bytes());
    f.extend_from_slice(&(tail.len() as u64).to_le_bytes());
    body.for_each(|p| f.extend_from_slice(p));
    f
}

/// If `body` is a CMA frame: the vector it names and its inner frame body.
/// `None`: an ordinary frame.
pub(crate) fn split(body: &[u8]) -> Option<Result<(Remote, &[u8]), String>> {
    if body.first() != Some(&CMA) {
        return None;
    }
    if body.len() < HEAD + 1 {
        return Some(Err(format!(
            "a cross-memory frame of {} bytes (at least {} expected)",
            body.len(),
            HEAD + 1
        )));
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&body[i..i + 8]);
        u64::from_le_bytes(a)
    };
    let pid = u32::from_le_bytes([body[1], body[2], body[3], body[4]]);
    let len = u64_at(13);
    if len > super::wire::MAX_FRAME as u64 || len == 0 {
        return Some(Err(format!(
            "a cross-memory frame naming {len} bytes (1 to {} allowed)",
            super::wire::MAX_FRAME
        )));
    }
    let remote = Remote {
        pid,
        addr: u64_at(5),
        len: len as usize,
    };
    Some(Ok((remote, &body[HEAD..])))
}

/// Reads `remote` into `into` (emptied first; reserved to fit), split over
/// up to `threads` threads (`spare::in_parts`; a pool's, where fresh pages
/// fault in parallel; a worker reads with one: a forked one must not start
/// std threads).
pub(crate) fn read(remote: &Remote, mut into: Vec<u8>, threads: usize) -> io::Result<Vec<u8>> {
    into.clear();
    if into.capacity() < remote.len {
        crate::ship::reserve_large(&mut into, remote.len);
    }
    let dest = into.spare_capacity_mut()[..remote.len].as_mut_ptr() as usize;
    let result = super::spare::in_parts(remote.len, threads, |r| {
        // SAFETY: `dest + r` lies inside `into`'s spare capacity, and
        // `in_parts` hands out each range once.
        unsafe {
            read_part(
                remote.pid,
                remote.addr + r.start as u64,
                (dest + r.start) as *mut u8,
                r.len(),
            )
        }
    });
    result?;
    // SAFETY: every byte of the first `remote.len` was written by the kernel
    // (each part returned `Ok` only once all of its bytes were read).
    unsafe { into.set_len(remote.len) };
    Ok(into)
}

/// Reads `n` bytes at `addr` of process `pid` into `to`, looping over
/// partial reads.
///
/// # Safety
/// `to` must be valid for writes of `n` bytes.
unsafe fn read_part(pid: u32, mut addr: u64, mut to: *mut u8, mut n: usize) -> io::Result<()> {
    while n > 0 {
        let local = libc::iovec {
            iov_base: to as *mut libc::c_void,
            iov_len: n,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: n,
        };
        // SAFETY: `local` is valid for `n` bytes (the caller's promise); the
        // kernel checks `remote` against the other process's mappings.
        let got = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the other process's buffer ended early",
            ));
        }
        let got = got as usize;
        n -= got;
        addr += got as u64;
        // SAFETY: still inside the caller's `n` bytes.
        to = unsafe { to.add(got) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_malformed_ones_are_errors() {
        let tail = vec![9u8; 3 << 20];
        let inner = [5u32.to_le_bytes().as_slice(), &[10, 1, 2, 3, 4]].concat();
        let f = frame(&tail, [&inner[..]].into_iter());
        let body = &f[4..];
        assert_eq!(
            u32::from_le_bytes(f[..4].try_into().unwrap()) as usize,
            body.len()
        );
        let (remote, got) = split(body).unwrap().unwrap();
        assert_eq!(got, &[10, 1, 2, 3, 4]);
        assert_eq!(remote.pid, std::process::id());
        assert_eq!(remote.len, tail.len());
        assert_eq!(remote.addr, tail.as_ptr() as u64);
        assert!(split(&[1, 2, 3]).is_none(), "not a CMA frame");
        assert!(split(&body[..HEAD]).unwrap().is_err(), "no inner frame");
        let mut huge = body.to_vec();
        huge[13..21].copy_from_slice(&(2u64 << 30).to_le_bytes());
        assert!(split(&huge).unwrap().is_err(), "more than a frame");
        let mut empty = body.to_vec();
        empty[13..21].copy_from_slice(&0u64.to_le_bytes());
        assert!(split(&empty).unwrap().is_err(), "nothing to read");
    }

    #[test]
    fn reads_own_memory_whole_and_split_and_fails_cleanly() {
        if !probe() {
            return; // a seccomp filter refuses it here: nothing to test
        }
        let src: Vec<u8> = (0..(20 << 20)).map(|i| (i % 251) as u8).collect();
        let remote = Remote {
            pid: std::process::id(),
            addr: src.as_ptr() as u64,
            len: src.len(),
        };
        for threads in [1, 2, 4] {
            let got = read(&remote, Vec::new(), threads).unwrap();
            assert!(got == src, "{threads} threads");
        }
        // Into a buffer that is already large enough: the same buffer.
        let buf = Vec::with_capacity(src.len());
        let ptr = buf.as_ptr();
        let got = read(&remote, buf, 2).unwrap();
        assert_eq!(got.as_ptr(), ptr);
        // An unmapped address is an error, not a crash.
        let bad = Remote { addr: 8, ..remote };
        assert!(read(&bad, Vec::new(), 2).is_err());
    }
}

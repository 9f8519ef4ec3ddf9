//! The outbox: the pool's end of one worker's call pipe (`Link`) and the
//! frames queued on it, written without blocking in one `writev`.

use super::wire::Piece;
use super::{lock, shm};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

/// The pool's end of one worker's call pipe, with the frames waiting to go out.
pub(super) struct Link {
    pub(super) outbox: Mutex<Outbox>,
    /// Wakes the slot's I/O thread (eventfd).
    pub(super) wake: OwnedFd,
    /// The region the worker puts large results in (see `shm`).
    pub(super) results: Option<shm::Results>,
}

pub(super) struct Outbox {
    pub(super) frames: VecDeque<Piece>,
    /// Bytes of the front frame already written.
    pub(super) offset: usize,
    pub(super) close_when_empty: bool,
    /// Only the slot's I/O thread closes it (it polls on the raw number).
    pub(super) fd: Option<OwnedFd>,
}

pub(super) enum Flush {
    Done,
    Blocked,
}

impl Link {
    pub(super) fn new(to_worker: OwnedFd) -> std::io::Result<Link> {
        // SAFETY: plain eventfd creation.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Link {
            outbox: Mutex::new(Outbox {
                frames: VecDeque::new(),
                offset: 0,
                close_when_empty: false,
                fd: Some(to_worker),
            }),
            // SAFETY: eventfd succeeded; we own the descriptor.
            wake: unsafe { OwnedFd::from_raw_fd(efd) },
            results: shm::Results::new(),
        })
    }

    /// Writes queued frames without blocking.
    pub(super) fn flush(&self) -> Flush {
        let mut ob = lock(&self.outbox);
        loop {
            if ob.frames.is_empty() {
                return Flush::Done;
            }
            let Some(fd) = ob.fd.as_ref().map(AsRawFd::as_raw_fd) else {
                ob.frames.clear();
                return Flush::Done;
            };
            let iov: Vec<libc::iovec> = ob
                .frames
                .iter()
                .take(64)
                .enumerate()
                .map(|(i, f)| {
                    let f = f.bytes();
                    let part = if i == 0 { &f[ob.offset..] } else { f };
                    libc::iovec {
                        iov_base: part.as_ptr() as *mut libc::c_void,
                        iov_len: part.len(),
                    }
                })
                .collect();
            // SAFETY: every iovec points into a frame owned by `ob`, which the
            // lock keeps alive and unchanged during the call.
            let n = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                match err.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => return Flush::Blocked,
                    // The worker is gone; its I/O thread will see EOF and
                    // account for the calls.
                    _ => {
                        ob.frames.clear();
                        ob.offset = 0;
                        return Flush::Done;
                    }
                }
            }
            let mut n = n as usize;
            while n > 0 {
                let left = ob.frames[0].bytes().len() - ob.offset;
                if n >= left {
                    n -= left;
                    ob.frames.pop_front();
                    ob.offset = 0;
                } else {
                    ob.offset += n;
                    n = 0;
                }
            }
        }
    }

    pub(super) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    /// Sends what is queued; wakes the I/O thread when it must finish the job.
    pub(super) fn kick(&self) {
        let blocked = matches!(self.flush(), Flush::Blocked);
        if blocked || lock(&self.outbox).close_when_empty {
            self.wake();
        }
    }
}

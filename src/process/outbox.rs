//! The outbox: the pool's end of one worker's call pipe (`Link`) and the
//! frames queued on it, written without blocking in one `writev`.

use super::wire::Piece;
use super::{lock, shm};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// Frames at most this many go out in one `writev`.
const IOV_MAX: usize = 64;
/// Written frame buffers kept for the next frames' headers (see [`Outbox::scratch`]).
const SPARES: usize = 64;
/// Buffers larger than this are freed, not kept.
const SPARE_CAP: usize = 64 << 10;

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
    /// Buffers of frames already written, empty, for the next frames.
    spare: Vec<Vec<u8>>,
    /// A queued frame must go out now. When clear, the queued frames are
    /// for a worker that has others to run first: they may wait for its
    /// I/O thread, which flushes after every read of the worker's results,
    /// so that one `writev` carries the frames of many calls.
    pub(super) urgent: bool,
}

impl Outbox {
    /// An empty buffer for a frame's own bytes: one of a frame written
    /// before when there is one, so a steady stream of calls allocates none.
    pub(super) fn scratch(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Drops the front frame (written), keeping its buffer for [`Outbox::scratch`].
    fn pop_written(&mut self) {
        if let Some(Piece::Own(mut v)) = self.frames.pop_front() {
            if v.capacity() <= SPARE_CAP && self.spare.len() < SPARES {
                v.clear();
                self.spare.push(v);
            }
        }
    }
}

/// The links that [`Shared::dispatch`](super::dispatch::Shared::dispatch)
/// queued frames on, to kick once the state lock is released; the first
/// few are kept inline, so a dispatch allocates nothing.
#[derive(Default)]
pub(super) struct Touched {
    first: [Option<Arc<Link>>; 4],
    more: Vec<Arc<Link>>,
}

impl Touched {
    /// Adds `link` unless it is in already.
    pub(super) fn add(&mut self, link: &Arc<Link>) {
        let mut seen = self.first.iter().flatten().chain(&self.more);
        if seen.any(|l| Arc::ptr_eq(l, link)) {
            return;
        }
        match self.first.iter_mut().find(|l| l.is_none()) {
            Some(free) => *free = Some(link.clone()),
            None => self.more.push(link.clone()),
        }
    }
}

impl IntoIterator for Touched {
    type Item = Arc<Link>;
    type IntoIter = std::iter::Chain<
        std::iter::Flatten<std::array::IntoIter<Option<Arc<Link>>, 4>>,
        std::vec::IntoIter<Arc<Link>>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().flatten().chain(self.more)
    }
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
                spare: Vec::new(),
                urgent: false,
            }),
            // SAFETY: eventfd succeeded; we own the descriptor.
            wake: unsafe { OwnedFd::from_raw_fd(efd) },
            results: shm::Results::new(),
        })
    }

    /// Writes queued frames without blocking.
    pub(super) fn flush(&self) -> Flush {
        Self::flush_locked(&mut lock(&self.outbox))
    }

    fn flush_locked(ob: &mut Outbox) -> Flush {
        loop {
            if ob.frames.is_empty() {
                ob.urgent = false;
                return Flush::Done;
            }
            let Some(fd) = ob.fd.as_ref().map(AsRawFd::as_raw_fd) else {
                ob.frames.clear();
                return Flush::Done;
            };
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; IOV_MAX];
            let mut count = 0;
            for (i, f) in ob.frames.iter().take(IOV_MAX).enumerate() {
                let f = f.bytes();
                let part = if i == 0 { &f[ob.offset..] } else { f };
                iov[i] = libc::iovec {
                    iov_base: part.as_ptr() as *mut libc::c_void,
                    iov_len: part.len(),
                };
                count = i + 1;
            }
            // SAFETY: the first `count` iovecs point into frames owned by
            // `ob`, which the lock keeps alive and unchanged during the call.
            let n = unsafe { libc::writev(fd, iov.as_ptr(), count as libc::c_int) };
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
                    ob.pop_written();
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

    /// Sends what is queued if it is urgent; wakes the I/O thread when it
    /// must finish the job.
    pub(super) fn kick(&self) {
        let mut ob = lock(&self.outbox);
        if !ob.urgent && !ob.close_when_empty {
            return;
        }
        let blocked = matches!(Self::flush_locked(&mut ob), Flush::Blocked);
        let closing = ob.close_when_empty;
        drop(ob);
        if blocked || closing {
            self.wake();
        }
    }
}

//! Large frames through shared memory instead of the pipes.
//!
//! A frame whose body is at least [`SHM_AT`] bytes is not written into the
//! pipe. Its sender copies the body once into a *region* — a `memfd` of the
//! pool's, kept mapped and reused, so its pages are already faulted in from
//! the last large frame — and writes a small SHM frame in its place:
//!
//! ```text
//! SHM  pid:u32 fd:i32 len:u64 task:u8 first_id:u64
//! ```
//!
//! naming the process that owns the region, the region's descriptor number
//! in it, the body's length, and for a TASK frame its first call id (so a
//! STEAL can hand it back unread). The body is read in place (decoded
//! straight from the mapping: the one copy a payload makes in each
//! direction is the sender's copy into the region). Regions are sealed
//! against shrinking, so a mapping checked against the region's size cannot
//! fault, and are not inherited by forked workers (`MADV_DONTFORK`).
//!
//! Who owns what, and why nothing leaks when a worker dies:
//!
//! * **Calls** (pool → worker): the pool lends a region from its [`Cache`]
//!   to a batch of calls when the batch is submitted ([`offload`]); the
//!   batch holds it ([`Lent`]) until its results arrive, the worker dies, or
//!   the batch is cancelled, and then it goes back to the cache (at most
//!   [`KEEP`] regions are kept; the rest are closed). The worker opens
//!   `/proc/<pool>/fd/<fd>` and maps it for the one frame ([`map_incoming`]);
//!   that mapping ends with the frame, or with the worker.
//! * **Results** (worker → pool): the pool makes one region per worker
//!   ([`Results`]) and offers it in the worker's first frame (OFFER, same
//!   layout as SHM); the worker maps it for its life ([`Outgoing`]) and may
//!   grow it. A flag in the region's first bytes says the pool has not yet
//!   read the last result put there; while it is set, and for results over
//!   256 MiB, the worker uses the pipe. The pool reads from its own
//!   mapping, so a result the worker sent just before it died is still
//!   read, like bytes left in a pipe. The region goes with the worker's
//!   bookkeeping when it is replaced.
//!
//! Workers must be allowed to open the pool's descriptors through `/proc`
//! (same user, pool not made undumpable). A pool that is not dumpable
//! (setuid, or `prctl(PR_SET_DUMPABLE, 0)`) keeps all frames in the pipes.
//! A worker that still cannot map a call's region exits with code 10 and
//! its call fails with `WorkerLost`; one that cannot map its result region
//! sends its results through the pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Frame bodies at least this large travel through shared memory.
pub(crate) const SHM_AT: usize = 1 << 20;

/// Regions a pool keeps for reuse; more are closed when returned.
pub(crate) const KEEP: usize = 4;

/// Regions larger than this are closed rather than kept (bounds idle memory).
const KEEP_MAX: usize = 256 << 20;

/// The frame kind of an SHM frame (distinct from every kind in `wire`).
const SHM: u8 = 20;

/// The frame kind that offers a worker its result region.
const OFFER: u8 = 21;

/// Bytes at the start of a region before the body (the "not yet read" flag).
const HEADER: usize = 64;

/// SHM frame body length.
const SHM_BODY: usize = 1 + 4 + 4 + 8 + 1 + 8;

/// Why a worker exits when it cannot map a call's region.
pub(crate) const EXIT_UNMAPPABLE: i32 = 10;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Whether other processes of our user may open our descriptors through
/// `/proc`, or read our memory (`cma`): not when this process is not dumpable.
pub(crate) fn shareable() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    // SAFETY: PR_GET_DUMPABLE only reads a flag of this process.
    *OK.get_or_init(|| unsafe { libc::prctl(libc::PR_GET_DUMPABLE) } == 1)
}

fn round_up(n: usize) -> usize {
    const STEP: usize = 2 << 20;
    n.div_ceil(STEP) * STEP
}

/// A pool's memfd, mapped read-write, sealed against shrinking.
pub(crate) struct Region {
    fd: OwnedFd,
    ptr: *mut u8,
    /// Mapped size in bytes, header included (the file may be larger).
    cap: usize,
    /// The owning process and the region's descriptor number there.
    owner: (u32, RawFd),
}

// SAFETY: a Region is a descriptor plus a private mapping of it; nothing
// about it is tied to the thread that created it.
unsafe impl Send for Region {}

impl Region {
    fn new(body: usize) -> io::Result<Region> {
        let name = c"fanout-shm";
        // SAFETY: plain memfd creation with a NUL-terminated name.
        let fd = cvt(unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        })?;
        // SAFETY: memfd_create succeeded; the descriptor is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let owner = (std::process::id(), fd.as_raw_fd());
        let mut r = Region {
            fd,
            ptr: std::ptr::null_mut(),
            cap: 0,
            owner,
        };
        r.grow(body)?;
        // SAFETY: fcntl on our own memfd. With the seal the region can grow
        // but never shrink, so a receiver that checked its size can read it.
        cvt(unsafe {
            libc::fcntl(
                r.fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL,
            )
        })?;
        Ok(r)
    }

    /// Makes room for a body of `body` bytes (remapping if it grows).
    fn grow(&mut self, body: usize) -> io::Result<()> {
        let want = round_up(HEADER + body);
        if want <= self.cap {
            return Ok(());
        }
        if want > file_size(self.fd.as_raw_fd())? {
            // SAFETY: growing a memfd we hold open read-write.
            cvt(unsafe { libc::ftruncate(self.fd.as_raw_fd(), want as libc::off_t) })?;
        }
        self.remap(want)
    }

    /// Maps `len` bytes of the file (which must hold them) in place of the old mapping.
    fn remap(&mut self, len: usize) -> io::Result<()> {
        let ptr = map(self.fd.as_raw_fd(), len, 0)?;
        // A worker forked later must not inherit the mapping (it would keep
        // the region's memory alive, and see calls that are not its own).
        // SAFETY: advice on the mapping we just made.
        unsafe { libc::madvise(ptr as *mut libc::c_void, len, libc::MADV_DONTFORK) };
        self.unmap();
        self.ptr = ptr;
        self.cap = len;
        Ok(())
    }

    fn unmap(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: unmapping the mapping this region made.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.cap) };
            self.ptr = std::ptr::null_mut();
        }
    }

    fn unread(&self) -> &AtomicU32 {
        // SAFETY: the mapping is at least HEADER bytes, page-aligned, and the
        // flag is only ever accessed atomically, from either process.
        unsafe { &*(self.ptr as *const AtomicU32) }
    }

    /// Copies `parts` (in order) into the body; they must fit.
    fn fill<'a>(&mut self, parts: impl IntoIterator<Item = &'a [u8]>) -> usize {
        let mut at = HEADER;
        for p in parts {
            assert!(at + p.len() <= self.cap, "region too small for its body");
            // SAFETY: the destination range lies inside our mapping (checked
            // above) and cannot overlap `p`, which is not in the region.
            unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), self.ptr.add(at), p.len()) };
            at += p.len();
        }
        at - HEADER
    }

    /// The SHM frame (length prefix included) that stands for `len` body bytes.
    fn frame(&self, len: usize, first_id: Option<u64>) -> Vec<u8> {
        self.frame_of(SHM, len, first_id)
    }

    fn frame_of(&self, kind: u8, len: usize, first_id: Option<u64>) -> Vec<u8> {
        let mut f = Vec::with_capacity(4 + SHM_BODY);
        f.extend_from_slice(&(SHM_BODY as u32).to_le_bytes());
        f.push(kind);
        f.extend_from_slice(&self.owner.0.to_le_bytes());
        f.extend_from_slice(&self.owner.1.to_le_bytes());
        f.extend_from_slice(&(len as u64).to_le_bytes());
        f.push(first_id.is_some() as u8);
        f.extend_from_slice(&first_id.unwrap_or(0).to_le_bytes());
        f
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.unmap();
    }
}

fn file_size(fd: RawFd) -> io::Result<usize> {
    // SAFETY: fstat of a descriptor we hold, into a local struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st.st_size as usize)
}

/// Opens another process's region through `/proc` and checks its seals.
fn open_region(pid: u32, fd: RawFd) -> Result<OwnedFd, String> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let c_path = format!("{path}\0");
    // SAFETY: opening a NUL-terminated path.
    let raw = unsafe {
        libc::open(
            c_path.as_ptr() as *const libc::c_char,
            libc::O_RDWR | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(format!("could not open shared memory {path}: {e}"));
    }
    // SAFETY: `open` succeeded; the descriptor is ours.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: fcntl on our own descriptor.
    let seals = unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
        return Err(format!(
            "shared memory {path} is not sealed against shrinking"
        ));
    }
    Ok(owned)
}

fn map(fd: RawFd, len: usize, extra: libc::c_int) -> io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping of a descriptor we hold; the kernel
    // picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | extra,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p as *mut u8)
    }
}

/// A pool's idle call regions.
#[derive(Default)]
pub(crate) struct Cache {
    free: Mutex<Vec<Region>>,
}

impl Cache {
    fn take(&self) -> Option<Region> {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn give(&self, r: Region) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < KEEP && r.cap <= round_up(HEADER + KEEP_MAX) {
            free.push(r);
        }
    }
}

/// A call region lent to one batch; goes back to its cache when dropped.
pub(crate) struct Lent {
    region: Option<Region>,
    home: Weak<Cache>,
    frame: Vec<u8>,
}

impl Lent {
    /// The small SHM frame to write into the pipe instead of the batch's frame.
    pub(crate) fn frame(&self) -> Vec<u8> {
        self.frame.clone()
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let (Some(r), Some(home)) = (self.region.take(), self.home.upgrade()) {
            home.give(r);
        }
    }
}

/// When `frame` (a whole frame as pieces, length prefix first) has a body of
/// at least [`SHM_AT`] bytes: copies the body into a region from `cache` and
/// returns it, lent. `None` for smaller frames, or when no region can be
/// had (the frame then goes through the pipe as usual).
pub(crate) fn offload<'a>(
    cache: &Arc<Cache>,
    frame: impl Iterator<Item = &'a [u8]> + Clone,
    first_id: u64,
) -> Option<Lent> {
    let total: usize = frame.clone().map(<[u8]>::len).sum();
    let body = total.checked_sub(4)?;
    if body < SHM_AT || !shareable() {
        return None;
    }
    let mut region = match cache.take() {
        Some(mut r) => r.grow(body).ok().map(|()| r),
        None => Region::new(body).ok(),
    }?;
    let len = region.fill(body_of(frame));
    let frame = region.frame(len, Some(first_id));
    Some(Lent {
        region: Some(region),
        home: Arc::downgrade(cache),
        frame,
    })
}

/// The body of a frame given as pieces (length prefix first): the pieces
/// without the first 4 bytes.
pub(crate) fn body_of<'a>(frame: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    let mut skip = 4;
    frame.map(move |p| {
        let n = skip.min(p.len());
        skip -= n;
        &p[n..]
    })
}

/// A worker's end of its result region (offered by the pool).
#[derive(Default)]
pub(crate) struct Outgoing {
    region: Option<Region>,
}

impl Outgoing {
    /// If `body` is the pool's OFFER frame: maps the region it offers
    /// (process `pool`'s) and returns true. A region that cannot be mapped
    /// is ignored: results then go through the pipe.
    pub(crate) fn adopt(&mut self, body: &[u8], pool: u32) -> bool {
        let Some(Ok(r)) = parse_kind(body, OFFER) else {
            return body.first() == Some(&OFFER);
        };
        if r.pid != pool {
            return true;
        }
        let adopted = open_region(r.pid, r.fd).ok().and_then(|fd| {
            let size = file_size(fd.as_raw_fd()).ok()?;
            let mut region = Region {
                fd,
                ptr: std::ptr::null_mut(),
                cap: 0,
                owner: (r.pid, r.fd),
            };
            region.remap(size.max(HEADER)).ok()?;
            Some(region)
        });
        self.region = adopted;
        true
    }

    /// Marks a result about to be lent from this process's memory as not yet
    /// read, if the pool has read the last one (the pool clears the flag
    /// with [`Results::mark_read`]). False when it has not, or with no
    /// region: the result must not be lent.
    pub(crate) fn try_lend(&self) -> bool {
        self.region.as_ref().is_some_and(|r| {
            r.unread()
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    /// Waits (up to `limit`) for the pool to read a lent result; true if it did.
    pub(crate) fn wait_read(&self, limit: std::time::Duration) -> bool {
        let Some(r) = &self.region else {
            return false;
        };
        let start = std::time::Instant::now();
        let flag = r.unread();
        while flag.load(Ordering::Acquire) != 0 {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return false;
            }
            // Woken by `Results::mark_read`; the timeout bounds a lost wake.
            let wait = left.min(std::time::Duration::from_millis(10));
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: wait.as_nanos() as libc::c_long,
            };
            // SAFETY: FUTEX_WAIT on a u32 of a shared mapping we hold; it
            // returns at once unless the word is still 1.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    flag.as_ptr(),
                    libc::FUTEX_WAIT,
                    1u32,
                    &ts as *const libc::timespec,
                )
            };
        }
        true
    }

    /// When `frame` (a whole frame as pieces, length prefix first) is large
    /// and the pool has read the last result put in the region: copies its
    /// body into the region and returns the SHM frame to write instead.
    /// `None`: write `frame`.
    pub(crate) fn offload<'a>(
        &mut self,
        frame: impl Iterator<Item = &'a [u8]> + Clone,
    ) -> Option<Vec<u8>> {
        let body = frame
            .clone()
            .map(<[u8]>::len)
            .sum::<usize>()
            .checked_sub(4)?;
        if !(SHM_AT..=KEEP_MAX).contains(&body) {
            return None;
        }
        let r = self.region.as_mut()?;
        if r.unread().load(Ordering::Acquire) != 0 {
            return None;
        }
        r.grow(body).ok()?;
        let len = r.fill(body_of(frame));
        r.unread().store(1, Ordering::Release);
        Some(r.frame(len, None))
    }
}

/// The pool's result region for one worker.
pub(crate) struct Results {
    region: Mutex<Region>,
}

impl Results {
    /// A fresh region (sparse until used), or `None` when others could not
    /// open it (results then go through the pipe).
    pub(crate) fn new() -> Option<Results> {
        if !shareable() {
            return None;
        }
        Some(Results {
            region: Mutex::new(Region::new(0).ok()?),
        })
    }

    /// The OFFER frame that hands the region to the worker (sent first).
    pub(crate) fn offer(&self) -> Vec<u8> {
        let r = self.region.lock().unwrap_or_else(|p| p.into_inner());
        r.frame_of(OFFER, 0, None)
    }

    /// Tells the worker that a result it lent from its memory has been read.
    pub(crate) fn mark_read(&self) {
        let r = self.region.lock().unwrap_or_else(|p| p.into_inner());
        let flag = r.unread();
        flag.store(0, Ordering::Release);
        // SAFETY: FUTEX_WAKE on a u32 of a shared mapping we hold (the worker
        // may wait on it in `Outgoing::wait_read`).
        unsafe { libc::syscall(libc::SYS_futex, flag.as_ptr(), libc::FUTEX_WAKE, 1) };
    }

    /// If `body` (from the worker) is an SHM frame: the result body it
    /// stands for, read from this region. `Ok(None)`: an ordinary frame.
    pub(crate) fn incoming(&self, body: &[u8]) -> Result<Option<ResultBody<'_>>, String> {
        let Some(r) = parse(body) else {
            return Ok(None);
        };
        let r = r?;
        let mut region = self.region.lock().unwrap_or_else(|p| p.into_inner());
        if (r.pid, r.fd) != region.owner {
            return Err(format!(
                "a shared-memory frame naming fd {} of process {}, not its result region",
                r.fd, r.pid
            ));
        }
        let need = HEADER + r.len;
        if need > region.cap {
            // The worker grew the region: map all of it.
            let size = file_size(region.fd.as_raw_fd()).map_err(|e| e.to_string())?;
            if size < need {
                return Err(format!(
                    "shared memory holds {size} bytes, the frame claims {need}"
                ));
            }
            region.remap(size).map_err(|e| e.to_string())?;
        }
        Ok(Some(ResultBody { region, len: r.len }))
    }
}

/// A result body in a worker's result region; marks it read when dropped.
pub(crate) struct ResultBody<'a> {
    region: std::sync::MutexGuard<'a, Region>,
    len: usize,
}

impl std::ops::Deref for ResultBody<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `incoming` checked that the mapping covers HEADER + len
        // bytes of a file that cannot shrink.
        unsafe { std::slice::from_raw_parts(self.region.ptr.add(HEADER), self.len) }
    }
}

impl Drop for ResultBody<'_> {
    fn drop(&mut self) {
        self.region.unread().store(0, Ordering::Release);
    }
}

/// Another process's region, mapped for reading one frame body.
pub(crate) struct Mapped {
    ptr: *mut u8,
    map_len: usize,
    len: usize,
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping covers HEADER + len bytes of a region that
        // cannot shrink (sealed), so every byte is backed and readable.
        unsafe { std::slice::from_raw_parts(self.ptr.add(HEADER), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping `map_incoming` made.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.map_len) };
    }
}

struct Reference {
    pid: u32,
    fd: i32,
    len: usize,
    first_id: Option<u64>,
}

fn parse(body: &[u8]) -> Option<Result<Reference, String>> {
    parse_kind(body, SHM)
}

fn parse_kind(body: &[u8], kind: u8) -> Option<Result<Reference, String>> {
    if body.first() != Some(&kind) {
        return None;
    }
    if body.len() != SHM_BODY {
        return Some(Err(format!(
            "a shared-memory frame of {} bytes (expected {SHM_BODY})",
            body.len()
        )));
    }
    let u32_at = |i: usize| u32::from_le_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&body[i..i + 8]);
        u64::from_le_bytes(a)
    };
    let len = u64_at(9);
    if len > super::wire::MAX_FRAME as u64 {
        return Some(Err(format!(
            "a shared-memory frame of {len} bytes exceeds the frame limit"
        )));
    }
    Some(Ok(Reference {
        pid: u32_at(1),
        fd: u32_at(5) as i32,
        len: len as usize,
        first_id: (body[17] != 0).then(|| u64_at(18)),
    }))
}

/// The first call id of an SHM frame that stands for a TASK frame.
pub(crate) fn task_first_id(body: &[u8]) -> Option<u64> {
    parse(body)?.ok()?.first_id
}

/// If `body` is an SHM frame naming a region of process `from` (a call
/// frame, in a worker): maps the body it stands for. `Ok(None)`: an
/// ordinary frame, use `body` itself.
pub(crate) fn map_incoming(body: &[u8], from: u32) -> Result<Option<Mapped>, String> {
    let Some(r) = parse(body) else {
        return Ok(None);
    };
    let r = r?;
    if r.pid != from {
        return Err(format!(
            "a shared-memory frame naming process {} (expected {from})",
            r.pid
        ));
    }
    let fd = open_region(r.pid, r.fd)?;
    let size = file_size(fd.as_raw_fd()).map_err(|e| e.to_string())?;
    let map_len = HEADER + r.len;
    if size < map_len {
        return Err(format!(
            "shared memory holds {size} bytes, the frame claims {map_len}"
        ));
    }
    let ptr = map(fd.as_raw_fd(), map_len, libc::MAP_POPULATE)
        .map_err(|e| format!("could not map shared memory: {e}"))?;
    Ok(Some(Mapped {
        ptr,
        map_len,
        len: r.len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn small_frames_stay_in_the_pipe() {
        let cache = Arc::new(Cache::default());
        let f = whole(&[1; 100]);
        assert!(offload(&cache, [&f[..]].into_iter(), 1).is_none());
        assert!(Outgoing::default().offload([&f[..]].into_iter()).is_none());
        assert!(map_incoming(&[1, 2, 3], 1).unwrap().is_none());
    }

    #[test]
    fn a_lent_region_round_trips_and_returns_to_its_cache() {
        let cache = Arc::new(Cache::default());
        let body: Vec<u8> = (0..SHM_AT + 5).map(|i| i as u8).collect();
        let f = whole(&body);
        // Split at an awkward place: inside the length prefix.
        let lent = offload(&cache, [&f[..2], &f[2..]].into_iter(), 42).expect("offloaded");
        let shm = lent.frame();
        assert_eq!(shm.len(), 4 + SHM_BODY);
        assert_eq!(task_first_id(&shm[4..]), Some(42));
        let mapped = map_incoming(&shm[4..], std::process::id())
            .unwrap()
            .expect("an SHM frame");
        assert!(mapped[..] == body[..]);
        drop(mapped);
        assert!(map_incoming(&shm[4..], std::process::id() + 1).is_err());
        drop(lent);
        assert_eq!(cache.free.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_result_region_is_offered_grown_and_not_reused_while_unread() {
        let results = Results::new().expect("a result region");
        let mut out = Outgoing::default();
        let f = whole(&vec![7u8; SHM_AT]);
        assert!(
            out.offload([&f[..]].into_iter()).is_none(),
            "no region adopted yet"
        );
        assert!(!out.adopt(&f[4..], std::process::id()), "not an offer");
        let offer = results.offer();
        assert!(out.adopt(&offer[4..], std::process::id()));
        let shm = out.offload([&f[..]].into_iter()).expect("offloaded");
        assert_eq!(task_first_id(&shm[4..]), None);
        {
            let body = results.incoming(&shm[4..]).unwrap().expect("an SHM frame");
            assert!(body[..] == f[4..]);
            assert!(out.offload([&f[..]].into_iter()).is_none(), "still unread");
        }
        // Larger than the region: the worker grows it, the pool remaps.
        let big: Vec<u8> = (0..5 * SHM_AT).map(|i| (i % 251) as u8).collect();
        let big = whole(&big);
        let shm = out
            .offload([&big[..2], &big[2..9], &big[9..]].into_iter())
            .expect("read, so free again");
        let body = results.incoming(&shm[4..]).unwrap().unwrap();
        assert!(body[..] == big[4..]);
        drop(body);
        // A call region's reference is not this worker's result region.
        let cache = Arc::new(Cache::default());
        let lent = offload(&cache, [&big[..]].into_iter(), 1).unwrap();
        assert!(results.incoming(&lent.frame()[4..]).is_err());
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(map_incoming(&[SHM, 1, 2], 1).is_err());
        let mut bogus = vec![SHM];
        bogus.extend_from_slice(&std::process::id().to_le_bytes());
        bogus.extend_from_slice(&9999i32.to_le_bytes());
        bogus.extend_from_slice(&100u64.to_le_bytes());
        bogus.push(0);
        bogus.extend_from_slice(&0u64.to_le_bytes());
        assert!(map_incoming(&bogus, std::process::id()).is_err());
        // A descriptor that is not a sealed memfd (stdin, or /dev/null).
        bogus[5..9].copy_from_slice(&0i32.to_le_bytes());
        assert!(map_incoming(&bogus, std::process::id()).is_err());
    }
}

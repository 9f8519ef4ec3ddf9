//! Results workers push straight to this client (see `cluster/push.rs`):
//! the listener, the connections, and who reads them.
//!
//! A connection must first say [`push::HELLO`] and the client's token;
//! then each frame names a task of this client and carries its sealed
//! envelope. An envelope that opens completes its future as its event
//! would (the event, in the pushed-events stream, is then only trimmed);
//! one that does not is dropped, and the event decides. Anything malformed
//! closes the connection. Nothing here fails a future.
//!
//! **Who reads.** A thread that blocks on one of this client's futures
//! reads the connections itself while it waits (the *driver*, see
//! `future/helpers.rs`): the worker's write then wakes the waiting thread
//! directly, one wake-up fewer per round trip than through a thread of
//! ours. One driver at a time; other waiters sleep on their futures as
//! usual. While a driver reads, the push thread only accepts connections
//! (it is *parked*), so a push wakes one thread, not two; it takes the
//! connections back when the driver leaves (told through `resume` when
//! tasks are still in flight) or [`PARKED_MS`] later. The waited-for
//! future wakes its driver (`driver_wake`, a hook on the future) when it
//! becomes done by any other path (its event, the courier, a cancel), so
//! the driver never sleeps on past its future.

use super::super::push::{self, Parsed};
use super::*;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicBool;

/// How long one `poll` of the push thread waits before it checks for shutdown.
const POLL_MS: i32 = 200;

/// How long the push thread stays off the connections while a driver
/// reads them, before it looks again.
const PARKED_MS: i32 = 5;

/// The most push connections a client keeps open (one per worker process).
const MAX_CONNS: usize = 4096;

/// What bytes a connection may buffer: a batch of whole frames at most.
const MAX_BUFFER: usize = 1 << 20;

/// A client's listener for pushed results, and what workers need to reach
/// it (written to `Keys::push` with its liveness).
pub(super) struct Listener {
    pub(super) socket: TcpListener,
    pub(super) addr: SocketAddr,
    pub(super) token: String,
}

/// Binds a listener on the address through which this host reaches the
/// Redis at `url` (where its workers reach it too): loopback for a Redis on
/// loopback or a Unix socket. `None` for a TLS URL (results would cross the
/// network in the clear) or when nothing can be bound: results then come
/// by the event stream only.
pub(super) fn listen(url: &str) -> Option<Listener> {
    let info = redis::Client::open(url).ok()?;
    let ip = match info.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, port) => local_ip_towards(host, *port)?,
        redis::ConnectionAddr::Unix(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => return None,
    };
    let socket = TcpListener::bind((ip, 0)).ok()?;
    socket.set_nonblocking(true).ok()?;
    let addr = socket.local_addr().ok()?;
    let token = ship::hex(&protocol::random_bytes::<16>().ok()?);
    debug_assert_eq!(token.len(), push::TOKEN_LEN);
    Some(Listener {
        socket,
        addr,
        token,
    })
}

/// This host's address on the route to `host:port` (no packet is sent: a
/// UDP socket's `connect` only picks the route).
fn local_ip_towards(host: &str, port: u16) -> Option<IpAddr> {
    use std::net::ToSocketAddrs;
    let target = (host, port).to_socket_addrs().ok()?.next()?;
    if target.ip().is_loopback() {
        return Some(target.ip());
    }
    let any: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(target).ok()?;
    Some(probe.local_addr().ok()?.ip())
}

/// One worker's connection.
struct Pusher {
    stream: TcpStream,
    buf: Vec<u8>,
    greeted: bool,
}

/// The connections and who reads them (see the module docs).
pub(super) struct Pushed {
    conns: Mutex<Vec<Pusher>>,
    hello: Vec<u8>,
    /// A thread waiting on a future reads the connections.
    driving: AtomicBool,
    /// Wakes the push thread to take the connections back.
    resume: OwnedFd,
    /// Wakes the driver: its future is done (by whatever path).
    driver_wake: Arc<OwnedFd>,
    /// `driver_wake` was signalled and not cleared since.
    signalled: Arc<AtomicBool>,
    /// Signals `driver_wake`; one waker, so a future waited on again
    /// recognises it (`Waker::will_wake`).
    waker: std::task::Waker,
}

/// A non-blocking eventfd.
fn eventfd() -> Option<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to an eventfd we own; a
    // full counter (EAGAIN) means it is signalled already.
    let _ = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
}

fn clear(fd: &OwnedFd) {
    let mut buf = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a live buffer from an eventfd we own.
    let _ = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Polls `fds` for up to `ms` milliseconds; how many are ready.
fn poll(fds: &mut [libc::pollfd], ms: i32) -> i32 {
    // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }
}

impl Pushed {
    pub(super) fn new(token: &str) -> Option<Pushed> {
        let mut hello = push::HELLO.to_vec();
        hello.extend_from_slice(token.as_bytes());
        let driver_wake = Arc::new(eventfd()?);
        let signalled = Arc::new(AtomicBool::new(false));
        Some(Pushed {
            conns: Mutex::new(Vec::new()),
            hello,
            driving: AtomicBool::new(false),
            resume: eventfd()?,
            waker: std::task::Waker::from(Arc::new(Wake {
                fd: driver_wake.clone(),
                signalled: signalled.clone(),
            })),
            driver_wake,
            signalled,
        })
    }

    /// Reads every connection of `ready` (raw descriptors poll found
    /// readable), dropping those that must go; the whole frames' tasks and
    /// envelopes that are ours.
    fn read_ready(&self, shared: &Shared, ready: &[RawFd]) -> Vec<(u64, String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 16 << 10];
        let mut conns = lock(&self.conns);
        conns.retain_mut(|c| {
            !ready.contains(&c.stream.as_raw_fd())
                || read_pushed(shared, c, &self.hello, &mut chunk, &mut out)
        });
        out
    }

    /// Clears `driver_wake` if it was signalled (a signal racing this is
    /// cleared when the driver's poll sees it).
    fn clear_wake(&self) {
        if self.signalled.swap(false, Ordering::SeqCst) {
            clear(&self.driver_wake);
        }
    }

    fn conn_fds(&self) -> Vec<libc::pollfd> {
        lock(&self.conns)
            .iter()
            .map(|c| pollfd(c.stream.as_raw_fd()))
            .collect()
    }
}

impl Shared {
    /// The push thread: accepts workers' connections, and reads them while
    /// no driver does.
    pub(super) fn push_loop(self: Arc<Self>, listener: TcpListener) {
        let Some(p) = self.pushed.as_ref() else {
            return;
        };
        loop {
            if lock(&self.state).loop_done {
                return;
            }
            let parked = p.driving.load(Ordering::SeqCst);
            let mut fds = vec![pollfd(listener.as_raw_fd()), pollfd(p.resume.as_raw_fd())];
            if !parked {
                fds.extend(p.conn_fds());
            }
            if poll(&mut fds, if parked { PARKED_MS } else { POLL_MS }) <= 0 {
                continue;
            }
            if fds[1].revents != 0 {
                clear(&p.resume);
            }
            if fds[0].revents != 0 {
                while let Ok((stream, _)) = listener.accept() {
                    let mut conns = lock(&p.conns);
                    if conns.len() >= MAX_CONNS
                        || stream.set_nonblocking(true).is_err()
                        || stream.set_nodelay(true).is_err()
                    {
                        continue;
                    }
                    conns.push(Pusher {
                        stream,
                        buf: Vec::new(),
                        greeted: false,
                    });
                }
            }
            let ready: Vec<RawFd> = fds[2..]
                .iter()
                .filter(|f| f.revents != 0)
                .map(|f| f.fd)
                .collect();
            if !ready.is_empty() {
                let delivered = p.read_ready(&self, &ready);
                if !delivered.is_empty() {
                    self.deliver_pushed(delivered);
                }
            }
        }
    }

    /// Completes the futures of pushed results whose envelopes open and
    /// whose tasks are still in flight.
    fn deliver_pushed(&self, pushed: Vec<(u64, String, Vec<u8>)>) {
        let secret = self.cfg.secret.as_bytes();
        let opened: Vec<(u64, Outcome)> = pushed
            .into_iter()
            .filter_map(|(seq, task, envelope)| {
                Outcome::open(secret, &task, &envelope)
                    .ok()
                    .map(|o| (seq, o))
            })
            .collect();
        let mut outcomes = Vec::with_capacity(opened.len());
        let idle = {
            let mut st = lock(&self.state);
            for (seq, outcome) in opened {
                if let Some(inflight) = st.inflight.remove(&seq) {
                    outcomes.push((inflight, Ok(outcome)));
                }
            }
            st.inflight.is_empty() && st.closing
        };
        self.complete(outcomes, idle);
    }
}

impl crate::future::helpers::Helper for Shared {
    /// Drives the push connections on the waiting thread (see the module
    /// docs) until `done()`, the deadline, or a delivery that did not
    /// complete the waited-for future.
    fn help(
        &self,
        done: &dyn Fn() -> bool,
        on_done: &crate::future::helpers::OnDone<'_>,
        deadline: Option<Instant>,
    ) {
        let Some(p) = self.pushed.as_ref() else {
            return;
        };
        if self.on_own_thread()
            || p.driving
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
        p.clear_wake();
        if !on_done(p.waker.clone()) {
            p.driving.store(false, Ordering::SeqCst);
            return;
        }
        loop {
            if done() {
                break;
            }
            let ms = match deadline {
                None => POLL_MS,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    left.as_millis().clamp(1, POLL_MS as u128) as i32
                }
            };
            let mut fds = vec![pollfd(p.driver_wake.as_raw_fd())];
            fds.extend(p.conn_fds());
            if fds.len() == 1 {
                break;
            }
            if poll(&mut fds, ms) <= 0 {
                continue;
            }
            if fds[0].revents != 0 {
                // Done without us (or the waker of an earlier wait: look again).
                p.signalled.store(false, Ordering::SeqCst);
                clear(&p.driver_wake);
                continue;
            }
            let ready: Vec<RawFd> = fds[1..]
                .iter()
                .filter(|f| f.revents != 0)
                .map(|f| f.fd)
                .collect();
            let delivered = p.read_ready(self, &ready);
            if !delivered.is_empty() {
                DELIVERING.with(|d| d.set(true));
                self.deliver_pushed(delivered);
                DELIVERING.with(|d| d.set(false));
                if !done() {
                    // Ours may be on the courier, which wakes the future's
                    // own sleepers: be one.
                    break;
                }
            }
        }
        p.driving.store(false, Ordering::SeqCst);
        if !lock(&self.state).inflight.is_empty() {
            signal(&p.resume);
        }
    }
}

thread_local! {
    /// This thread is a driver delivering what it read: a future it
    /// completes needs no signal to wake it (it looks at once).
    static DELIVERING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Signals the driver's eventfd: how a future wakes its driver. `signalled`
/// tells the driver whether there is anything to clear.
struct Wake {
    fd: Arc<OwnedFd>,
    signalled: Arc<AtomicBool>,
}

impl Wake {
    fn fire(&self) {
        if DELIVERING.with(|d| d.get()) {
            return;
        }
        self.signalled.store(true, Ordering::SeqCst);
        signal(&self.fd);
    }
}

impl std::task::Wake for Wake {
    fn wake(self: Arc<Self>) {
        self.fire();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.fire();
    }
}

/// Reads what `c` has sent, collecting its whole frames' tasks and
/// envelopes into `out`; false when the connection must go (closed,
/// failed, or not speaking the push protocol).
fn read_pushed(
    shared: &Shared,
    c: &mut Pusher,
    hello: &[u8],
    chunk: &mut [u8],
    out: &mut Vec<(u64, String, Vec<u8>)>,
) -> bool {
    let mut open = true;
    loop {
        match c.stream.read(chunk) {
            Ok(0) => {
                open = false;
                break;
            }
            Ok(n) => {
                c.buf.extend_from_slice(&chunk[..n]);
                if c.buf.len() > MAX_BUFFER {
                    return false;
                }
                if n < chunk.len() {
                    // Most likely all there was: the next poll tells (a
                    // read to hear "would block" costs a syscall a push).
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => {
                open = false;
                break;
            }
        }
    }
    let mut at = 0;
    if !c.greeted {
        let have = c.buf.len().min(hello.len());
        if c.buf[..have] != hello[..have] {
            return false;
        }
        if have < hello.len() {
            return open;
        }
        c.greeted = true;
        at = hello.len();
    }
    loop {
        match push::parse(&c.buf[at..]) {
            Parsed::Frame {
                task,
                envelope,
                used,
            } => {
                if let Some(seq) = shared.own_seq(task) {
                    out.push((seq, task.to_string(), envelope.to_vec()));
                }
                at += used;
            }
            Parsed::More => break,
            Parsed::Bad => return false,
        }
    }
    c.buf.drain(..at);
    open
}

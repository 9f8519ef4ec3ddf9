//! The push thread: completes futures from results workers push straight
//! to this client (see `cluster/push.rs`), ahead of their events.
//!
//! One thread polls the listener and every worker's connection. A
//! connection must first say [`push::HELLO`] and the client's token; then
//! each frame names a task of this client and carries its sealed envelope.
//! An envelope that opens completes its future as its event would (the
//! event, when it comes, finds nothing in flight and is only trimmed); one
//! that does not is dropped, and the event decides. Anything malformed
//! closes the connection. Nothing here fails a future.

use super::super::push::{self, Parsed};
use super::*;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// How long one `poll` waits before the thread checks for shutdown.
const POLL_MS: i32 = 200;

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

impl Shared {
    pub(super) fn push_loop(self: Arc<Self>, listener: TcpListener, token: String) {
        let mut hello = push::HELLO.to_vec();
        hello.extend_from_slice(token.as_bytes());
        let mut conns: Vec<Pusher> = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if lock(&self.state).loop_done {
                return;
            }
            let mut fds = Vec::with_capacity(conns.len() + 1);
            fds.push(libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            fds.extend(conns.iter().map(|c| libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
            // SAFETY: `fds` is a live array of `fds.len()` pollfd structs
            // whose descriptors belong to `listener` and `conns`.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
            if n <= 0 {
                continue;
            }
            if fds[0].revents != 0 {
                while let Ok((stream, _)) = listener.accept() {
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
            let mut delivered = Vec::new();
            let mut keep = vec![true; conns.len()];
            for (i, c) in conns.iter_mut().enumerate() {
                // Connections accepted just now were not polled.
                if fds.get(i + 1).is_none_or(|f| f.revents == 0) {
                    continue;
                }
                keep[i] = self.read_pushed(c, &hello, &mut chunk, &mut delivered);
            }
            let mut keep = keep.into_iter().chain(std::iter::repeat(true));
            conns.retain(|_| keep.next().unwrap_or(true));
            if !delivered.is_empty() {
                self.deliver_pushed(delivered);
            }
        }
    }

    /// Reads what `c` has sent, collecting its whole frames' tasks and
    /// envelopes into `out`; false when the connection must go (closed,
    /// failed, or not speaking the push protocol).
    fn read_pushed(
        &self,
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
                    if let Some(seq) = self.own_seq(task) {
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

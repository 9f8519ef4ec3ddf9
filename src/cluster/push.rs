//! Results pushed from a worker straight to its client.
//!
//! A round trip through Redis Streams makes four hops (client → Redis →
//! worker → Redis → client), and on a 2-core VM each hop that wakes a
//! sleeping process costs more than any command (BENCHMARKS.md, eighth and
//! tenth rounds). So a client listens on a TCP port and advertises it in
//! its push key (`Keys::push`: address, token, signed as its liveness is);
//! a worker that sends a plain finish (see `plain.rs`) first writes the
//! same sealed envelopes to that client's socket, then sends the finish
//! to Redis as before, except that the "done" events of what it pushed go
//! to the client's pushed-events stream (`Keys::pushed_events`) instead of
//! its event stream: the client's event loop, blocked on the latter, is
//! not woken for a result it already has. It reads the pushed events every
//! 100 ms while tasks are in flight, delivers any whose push it never got
//! (it delivers each task once, whichever way comes first) and trims them.
//! So the events in Redis stay the record that nothing is lost by: a push
//! that fails, blocks or is never read costs at most that much latency.
//!
//! * **Who may push.** The first bytes on a connection are [`HELLO`] and
//!   the client's token, which only a reader of the namespace's keys
//!   knows; envelopes are sealed under the cluster secret, and the client
//!   drops (rather than fails) a pushed envelope that does not open.
//! * **Never a stall.** The worker's socket is non-blocking and its writes
//!   `MSG_NOSIGNAL`: a write that would block, or fails, closes the
//!   connection (the client drops the partial frame) and the worker stops
//!   pushing to that client for [`RETRY_AFTER`]. Finding the address and
//!   connecting happen on a thread of their own, once per client; until a
//!   connection is up, results go by the stream only.
//!
//! Frames after the hello: `[u16 LE task id length][task id][u32 LE
//! envelope length][envelope]`.

use super::batch::Finished;
use super::protocol::{self, Keys};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first bytes a worker sends on a push connection, then the token.
pub(super) const HELLO: &[u8] = b"fanout-push-v1 ";

/// The length of a client's push token (hex).
pub(super) const TOKEN_LEN: usize = 32;

/// The longest task id a frame may carry.
pub(super) const MAX_TASK: usize = 256;

/// The largest envelope a frame may carry (the plain finishes' limit).
pub(super) const MAX_ENVELOPE: usize = super::plain::INLINE_RESULT;

/// How long a worker waits before trying a client again whose push
/// address was missing, unreachable or whose connection failed.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(10);

/// How long a worker tries to connect to a client's push address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The most clients a worker keeps push state for.
const MAX_PEERS: usize = 256;

/// Appends the frame of `task`'s `envelope` to `out`.
pub(super) fn frame(out: &mut Vec<u8>, task: &str, envelope: &[u8]) {
    out.extend_from_slice(&(task.len() as u16).to_le_bytes());
    out.extend_from_slice(task.as_bytes());
    out.extend_from_slice(&(envelope.len() as u32).to_le_bytes());
    out.extend_from_slice(envelope);
}

/// What [`parse`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed<'a> {
    /// A whole frame, and how many bytes it took.
    Frame {
        task: &'a str,
        envelope: &'a [u8],
        used: usize,
    },
    /// Not a whole frame yet.
    More,
    /// Not a frame: the connection must go.
    Bad,
}

/// Parses one frame from the start of `buf`.
pub(super) fn parse(buf: &[u8]) -> Parsed<'_> {
    let Some(len) = buf.get(..2) else {
        return Parsed::More;
    };
    let task_len = u16::from_le_bytes([len[0], len[1]]) as usize;
    if task_len == 0 || task_len > MAX_TASK {
        return Parsed::Bad;
    }
    let Some(env_len) = buf.get(2 + task_len..6 + task_len) else {
        return Parsed::More;
    };
    let env_len = u32::from_le_bytes(env_len.try_into().expect("4 bytes")) as usize;
    if env_len == 0 || env_len > MAX_ENVELOPE {
        return Parsed::Bad;
    }
    let used = 6 + task_len + env_len;
    if buf.len() < used {
        return Parsed::More;
    }
    let Ok(task) = std::str::from_utf8(&buf[2..2 + task_len]) else {
        return Parsed::Bad;
    };
    Parsed::Frame {
        task,
        envelope: &buf[6 + task_len..used],
        used,
    }
}

/// A worker's push state for one client.
enum Peer {
    /// Looking up its address or connecting.
    Pending,
    /// Connected; when it last pushed.
    Ready(TcpStream, Instant),
    /// Do not try before then.
    Off(Instant),
}

impl Peer {
    /// Worth keeping: not a lapsed `Off`, not a connection its client
    /// has closed (it reads as end of file: the client is gone).
    fn live(&self, now: Instant) -> bool {
        match self {
            Peer::Pending => true,
            Peer::Off(until) => now < *until,
            Peer::Ready(stream, _) => {
                let mut b = [0u8; 1];
                // SAFETY: peeks at most one byte into a live buffer from the
                // socket `stream` owns, without blocking.
                let n = unsafe {
                    libc::recv(
                        stream.as_raw_fd(),
                        b.as_mut_ptr().cast(),
                        1,
                        libc::MSG_PEEK | libc::MSG_DONTWAIT,
                    )
                };
                n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
            }
        }
    }
}

/// What a worker needs to find a client's push address.
#[derive(Clone)]
pub(super) struct Lookup {
    pub(super) url: String,
    pub(super) keys: Keys,
    pub(super) secret: String,
    pub(super) namespace: String,
}

/// A worker's push connections, by client.
pub(super) struct Pusher {
    lookup: Lookup,
    peers: Arc<Mutex<HashMap<String, Peer>>>,
}

impl Pusher {
    pub(super) fn new(lookup: Lookup) -> Pusher {
        Pusher {
            lookup,
            peers: Arc::default(),
        }
    }

    /// Pushes the envelopes of `batch` (finishes of `client`'s tasks that
    /// go plain) to `client`, if a connection to it is up; starts one if
    /// none is. Never blocks on the client. True when every byte went
    /// into the socket (their events then go to `Keys::pushed_events`).
    pub(super) fn push(&self, client: &str, batch: &[Finished]) -> bool {
        let mut peers = lock(&self.peers);
        match peers.get_mut(client) {
            Some(Peer::Ready(stream, used)) => {
                *used = Instant::now();
                let mut out = Vec::with_capacity(batch.iter().map(|f| f.envelope.len() + 64).sum());
                for f in batch {
                    frame(&mut out, &f.task, &f.envelope);
                }
                if !send_all_now(stream, &out) {
                    log::debug!("push connection to client {client} failed; using the stream");
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    peers.insert(client.to_string(), Peer::Off(Instant::now() + RETRY_AFTER));
                    return false;
                }
                return true;
            }
            Some(Peer::Pending) => {}
            Some(Peer::Off(until)) if Instant::now() < *until => {}
            _ => {
                // A new client: forget those that are gone, and when still
                // full, the connection that pushed least recently.
                let now = Instant::now();
                peers.retain(|_, p| p.live(now));
                if peers.len() >= MAX_PEERS {
                    let oldest = peers
                        .iter()
                        .filter_map(|(c, p)| match p {
                            Peer::Ready(_, used) => Some((*used, c.clone())),
                            _ => None,
                        })
                        .min();
                    match oldest {
                        Some((_, c)) => {
                            peers.remove(&c);
                        }
                        None => return false,
                    }
                }
                peers.insert(client.to_string(), Peer::Pending);
                drop(peers);
                self.connect_later(client);
            }
        }
        false
    }

    /// Finds `client`'s push address and connects, on a thread of its own.
    fn connect_later(&self, client: &str) {
        let peers = self.peers.clone();
        let lookup = self.lookup.clone();
        let client = client.to_string();
        let spawned = std::thread::Builder::new()
            .name("fanout-cluster-push".into())
            .spawn({
                let client = client.clone();
                let peers = peers.clone();
                move || {
                    let peer = match connect(&lookup, &client) {
                        Ok(stream) => Peer::Ready(stream, Instant::now()),
                        Err(e) => {
                            log::debug!("no push connection to client {client}: {e}");
                            Peer::Off(Instant::now() + RETRY_AFTER)
                        }
                    };
                    lock(&peers).insert(client, peer);
                }
            });
        if spawned.is_err() {
            lock(&peers).insert(client, Peer::Off(Instant::now() + RETRY_AFTER));
        }
    }
}

/// Reads `client`'s push value, checks it, connects and says hello.
fn connect(lookup: &Lookup, client: &str) -> Result<TcpStream, String> {
    let redis = redis::Client::open(lookup.url.as_str()).map_err(|e| e.to_string())?;
    let mut conn = redis
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(lookup.keys.push(client))
        .query(&mut conn)
        .map_err(|e| e.to_string())?;
    let value = value.ok_or("the client advertises no push address")?;
    let (addr, token) =
        protocol::push_target(lookup.secret.as_bytes(), &lookup.namespace, client, &value)
            .ok_or("the client's push address is not signed with this cluster's secret")?;
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let setup = |s: &mut TcpStream| -> std::io::Result<()> {
        s.set_nodelay(true)?;
        s.set_write_timeout(Some(CONNECT_TIMEOUT))?;
        let mut hello = HELLO.to_vec();
        hello.extend_from_slice(token.as_bytes());
        s.write_all(&hello)?;
        s.set_nonblocking(true)
    };
    setup(&mut stream).map_err(|e| format!("greeting {addr}: {e}"))?;
    Ok(stream)
}

/// Writes all of `bytes` to the non-blocking `stream` at once, or fails
/// (a full socket buffer is a failure: the caller must not wait).
fn send_all_now(stream: &TcpStream, mut bytes: &[u8]) -> bool {
    let fd = stream.as_raw_fd();
    while !bytes.is_empty() {
        // SAFETY: `fd` is the open socket `stream` owns, and `bytes` is a
        // live buffer of `bytes.len()` bytes.
        let n = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_its_client_closed_is_not_kept() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (client_side, _) = listener.accept().unwrap();
        let now = Instant::now();
        let peer = Peer::Ready(stream, now);
        assert!(peer.live(now), "open and silent: kept");
        drop(client_side);
        let deadline = Instant::now() + Duration::from_secs(5);
        while peer.live(Instant::now()) {
            assert!(
                Instant::now() < deadline,
                "a closed connection still looks live"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(Peer::Pending.live(now));
        assert!(Peer::Off(now + Duration::from_secs(1)).live(now));
        assert!(!Peer::Off(now).live(now));
    }

    #[test]
    fn frames_parse_back_and_bad_ones_are_refused() {
        let mut buf = Vec::new();
        frame(&mut buf, "abc.1", b"envelope");
        frame(&mut buf, "abc.2", b"e2");
        let Parsed::Frame {
            task,
            envelope,
            used,
        } = parse(&buf)
        else {
            panic!("a whole frame");
        };
        assert_eq!((task, envelope), ("abc.1", &b"envelope"[..]));
        assert!(matches!(
            parse(&buf[used..]),
            Parsed::Frame { task: "abc.2", .. }
        ));
        for cut in 0..used {
            assert_eq!(parse(&buf[..cut]), Parsed::More, "cut at {cut}");
        }
        assert_eq!(parse(&[0, 0, 1, 2]), Parsed::Bad, "empty task id");
        let mut long = Vec::new();
        frame(&mut long, &"x".repeat(MAX_TASK + 1), b"e");
        assert_eq!(parse(&long), Parsed::Bad);
        let mut big = Vec::new();
        frame(&mut big, "t.1", &vec![0; MAX_ENVELOPE + 1]);
        assert_eq!(parse(&big), Parsed::Bad);
        let mut bad_utf8 = Vec::new();
        frame(&mut bad_utf8, "t.1", b"e");
        bad_utf8[2] = 0xff;
        assert_eq!(parse(&bad_utf8), Parsed::Bad);
    }
}

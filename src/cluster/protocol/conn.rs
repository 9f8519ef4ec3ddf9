//! Connections: one Redis connection with its scripts, retries with
//! backoff, and how an error is classified.

use super::*;
use crate::Error;
use std::time::Instant;

/// How a Redis error should be handled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Connection-level or transient: reconnect, back off, try again.
    Retry,
    /// The server lost its scripts (restart, `SCRIPT FLUSH`): load them, try again.
    NoScript,
    /// The consumer group is missing (server restarted without persistence).
    NoGroup,
    /// Anything else (auth, permissions, wrong type): give up.
    Fatal,
}

pub(crate) fn classify(e: &redis::RedisError) -> Failure {
    use redis::{ErrorKind, RetryMethod, ServerErrorKind};
    let text = e.to_string();
    if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) || text.contains("NOSCRIPT") {
        return Failure::NoScript;
    }
    if e.code() == Some("NOGROUP") || text.contains("NOGROUP") {
        return Failure::NoGroup;
    }
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || text.contains("LOADING")
        || matches!(
            e.retry_method(),
            RetryMethod::Reconnect
                | RetryMethod::ReconnectFromInitialConnections
                | RetryMethod::WaitAndRetry
        )
    {
        return Failure::Retry;
    }
    Failure::Fatal
}

/// A URL with its password blanked, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Makes the stream `key` exist, empty (an `XADD` trimmed to nothing, so
/// it holds no entry): how a client makes its event streams, which workers
/// add to only while they exist (`NOMKSTREAM`).
pub(crate) fn empty_stream(key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key).arg("MAXLEN").arg(0).arg("*").arg("k").arg("i");
    cmd
}

/// The error for a Redis failure.
pub(crate) fn backend(what: &str, url: &str, e: &redis::RedisError) -> Error {
    Error::Backend {
        message: format!("{what} at {}: {e}", redact(url)),
    }
}

/// One connection to Redis that reconnects on demand, loads the scripts on
/// every new connection and makes sure the stream and group exist.
pub(crate) struct Conn {
    client: redis::Client,
    url: String,
    queue: String,
    con: Option<redis::Connection>,
    read_timeout: Duration,
    pub(crate) scripts: std::sync::Arc<Scripts>,
}

/// How long connecting may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Conn {
    pub(crate) fn new(
        url: &str,
        keys: &Keys,
        scripts: std::sync::Arc<Scripts>,
        read_timeout: Duration,
    ) -> Result<Conn, Error> {
        let client = redis::Client::open(url).map_err(|e| Error::Backend {
            message: format!("the Redis URL {} is not usable: {e}", redact(url)),
        })?;
        Ok(Conn {
            client,
            url: url.to_string(),
            queue: keys.queue(),
            con: None,
            read_timeout,
            scripts,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The live connection, connecting (and preparing the server) if needed.
    pub(crate) fn get(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.con.is_none() {
            let mut con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
            con.set_read_timeout(Some(self.read_timeout))?;
            con.set_write_timeout(Some(self.read_timeout))?;
            self.scripts.load(&mut con)?;
            ensure_group(&mut con, &self.queue)?;
            self.con = Some(con);
        }
        match self.con.as_mut() {
            Some(c) => Ok(c),
            None => Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::NotConnected,
            ))),
        }
    }

    /// Forgets the connection (the next call reconnects).
    pub(crate) fn reset(&mut self) {
        self.con = None;
    }

    /// Runs `cmd` once; a failure drops the connection unless it is a plain
    /// server error.
    pub(crate) fn query(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        let out = self.get().and_then(|c| cmd.query::<redis::Value>(c));
        self.after(out)
    }

    /// Runs a pipeline once (see [`Conn::query`]).
    pub(crate) fn query_pipe(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        let out = self.get().and_then(|c| pipe.query::<Vec<redis::Value>>(c));
        self.after(out)
    }

    /// Runs the `n` commands of `pipe` once, returning each command's reply
    /// as its own result (ignored commands included), so that one command's
    /// server error (such as `NOSCRIPT`) loses no other's reply. An error
    /// reading or writing drops the connection and fails the whole call.
    pub(crate) fn query_pipe_each(
        &mut self,
        pipe: &redis::Pipeline,
        n: usize,
    ) -> redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> {
        let packed = pipe.get_packed_pipeline();
        let out = self.get().and_then(|c| {
            c.send_packed_command(&packed)?;
            (0..n)
                .map(|_| c.recv_response().map(|v| v.extract_error()))
                .collect::<redis::RedisResult<Vec<_>>>()
        });
        let out = self.after(out)?;
        for e in out.iter().filter_map(|r| r.as_ref().err()) {
            if classify(e) != Failure::Fatal {
                // NOSCRIPT or NOGROUP: the next call reconnects and repairs.
                self.reset();
            }
        }
        Ok(out)
    }

    fn after<T>(&mut self, out: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &out {
            match classify(e) {
                Failure::Retry | Failure::NoScript | Failure::NoGroup => self.reset(),
                Failure::Fatal => {}
            }
        }
        out
    }

    /// Runs `cmd`, retrying transient failures with backoff until `deadline`
    /// (forever when `None`) or until `give_up()` says so.
    pub(crate) fn query_retry(
        &mut self,
        cmd: &redis::Cmd,
        deadline: Option<Instant>,
        give_up: &dyn Fn() -> bool,
    ) -> redis::RedisResult<redis::Value> {
        let mut backoff = Backoff::new();
        loop {
            match self.query(cmd) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if classify(&e) == Failure::Fatal
                        || deadline.is_some_and(|d| Instant::now() >= d)
                        || give_up()
                    {
                        return Err(e);
                    }
                    log::debug!("redis at {}: {e}; retrying", redact(&self.url));
                    backoff.sleep(deadline);
                }
            }
        }
    }
}

/// The (major, minor) version in an `INFO server` reply ((0, 0) when it
/// names none).
pub(crate) fn server_version(info: &str) -> (u32, u32) {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Redis's default limit on one value (`proto-max-bulk-len`).
pub(crate) const DEFAULT_BULK_LIMIT: u64 = 512 << 20;

/// The server's limit on one value (`CONFIG GET proto-max-bulk-len`); the
/// default when the server does not say (`CONFIG` renamed or forbidden).
pub(crate) fn bulk_limit(conn: &mut Conn) -> u64 {
    conn.query(redis::cmd("CONFIG").arg("GET").arg("proto-max-bulk-len"))
        .ok()
        .and_then(|v| match &v {
            redis::Value::Map(kv) => kv.first().and_then(|(_, v)| int(v)),
            other => array(other).and_then(|a| a.get(1)).and_then(int),
        })
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_BULK_LIMIT)
}

/// Creates the task stream and its consumer group if missing.
pub(crate) fn ensure_group(con: &mut redis::Connection, queue: &str) -> redis::RedisResult<()> {
    let out = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(queue)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query::<redis::Value>(con);
    match out {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Exponential backoff from 5 ms to 500 ms.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(5),
        }
    }

    /// Sleeps for the next interval, never past `deadline`.
    pub(crate) fn sleep(&mut self, deadline: Option<Instant>) {
        let mut d = self.next;
        if let Some(deadline) = deadline {
            d = d.min(deadline.saturating_duration_since(Instant::now()));
        }
        std::thread::sleep(d);
        self.next = (self.next * 2).min(Duration::from_millis(500));
    }
}

/// Random bytes from the operating system's random source (`getrandom`);
/// an error if it fails, never a guessable fallback (these bytes become
/// secrets and the client ids that name keys).
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| Error::Broken {
        reason: format!("the operating system's random source failed: {e}"),
    })?;
    Ok(buf)
}

/// This host's name.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes a NUL-terminated name of at most `len` bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

//! A real `redis-server` per test, on a free loopback port, stopped by pid.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Panics (failing the test) when redis-server is missing: never pass silently.
pub fn redis_server_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!(
            "redis-server is not installed, and the cluster tests need a real one: install it \
             with `apt-get install redis-server` (Debian/Ubuntu) and run the tests again"
        ),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "fanout-{tag}-{}-{n}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Redis {
    pub port: u16,
    pub bind: String,
    pub dir: TempDir,
    child: Option<Child>,
    appendonly: bool,
    /// Prefix to run redis-server under (e.g. `ip netns exec NS`).
    wrapper: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(false)
    }

    pub fn start_with(appendonly: bool) -> Redis {
        Redis::start_full("127.0.0.1", appendonly, Vec::new())
    }

    pub fn start_full(bind: &str, appendonly: bool, wrapper: Vec<String>) -> Redis {
        let mut r = Redis {
            port: free_port(),
            bind: bind.to_string(),
            dir: TempDir::new("redis"),
            child: None,
            appendonly,
            wrapper,
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let bin = redis_server_binary();
        let mut cmd = if self.wrapper.is_empty() {
            Command::new(&bin)
        } else {
            let mut c = Command::new(&self.wrapper[0]);
            c.args(&self.wrapper[1..]).arg(&bin);
            c
        };
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg(&self.bind)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if self.appendonly { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg("always")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--protected-mode")
            .arg("no")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        self.child = Some(cmd.spawn().expect("start redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://{}:{}/0", self.bind, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to test redis")
    }

    /// Stops the server gracefully (SIGTERM, by pid) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the redis-server we started.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Every key of a namespace.
    pub fn keys(&self, namespace: &str) -> Vec<String> {
        let mut c = self.conn();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{namespace}}}*"))
            .query(&mut c)
            .unwrap();
        keys.sort();
        keys
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The keys matching `pattern` (`KEYS`).
pub fn keys_like(con: &mut redis::Connection, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS").arg(pattern).query(con).unwrap()
}

/// The length of `stream` (`XLEN`).
pub fn xlen(con: &mut redis::Connection, stream: &str) -> u64 {
    redis::cmd("XLEN").arg(stream).query(con).unwrap()
}

/// A cluster with one local worker (concurrency 1, a 5 s lease) in namespace `ns`.
pub fn one_worker(redis: &Redis, ns: &str) -> fanout::Cluster {
    fanout::Cluster::builder(&redis.url())
        .namespace(ns)
        .local_workers(1)
        .lease(Duration::from_secs(5))
        .secret("test-secret")
        .build()
        .expect("cluster")
}

// (A test that also includes `graph_support` loads this file twice.)
#[allow(clippy::duplicate_mod)]
#[path = "../process_util/mod.rs"]
mod process_util;
/// Waits until a condition holds or a timeout passes (one helper for all tests).
pub use process_util::eventually;

/// Logs one execution of item `i` to the file `log` (one `O_APPEND` write
/// per line, so lines of concurrent workers never interleave), works for
/// `ms`, returns `2 * i`.
pub fn logged(log: String, i: u64, ms: u64) -> u64 {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)
    {
        let _ = f.write_all(format!("{i}\n").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(ms));
    2 * i
}

/// The items `logged` has logged to `log`, in the order they ran.
pub fn executions(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A two-worker cluster in `namespace` on `redis`, `n` calls of `logged`
/// (each `ms` long) in flight, and Redis restarted once at least `first` of
/// them have run. Returns the cluster, the futures (item `i` at index `i`)
/// and the log's directory and path.
pub fn restart_mid_run(
    redis: &mut Redis,
    namespace: &str,
    n: u64,
    ms: u64,
    first: usize,
) -> (fanout::Cluster, Vec<fanout::Future<u64>>, TempDir, PathBuf) {
    use fanout::Executor;
    let dir = TempDir::new(namespace);
    let log = dir.path().join("executions");
    let logs = log.to_string_lossy().into_owned();
    let c = fanout::Cluster::builder(&redis.url())
        .namespace(namespace)
        .local_workers(2)
        .lease(Duration::from_secs(2))
        .build()
        .unwrap();
    let fs: Vec<_> = (0..n)
        .map(|i| c.submit(logged, (logs.clone(), i, ms)).unwrap())
        .collect();
    assert!(eventually(Duration::from_secs(30), || executions(&log)
        .len()
        >= first));
    let old_pid = redis.pid();
    redis.restart();
    assert_ne!(redis.pid(), old_pid);
    (c, fs, dir, log)
}

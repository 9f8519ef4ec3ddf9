//! A private `redis-server` for the cluster benchmarks and the examples
//! (`tour`, `divisibility` include this file too): started on a free
//! loopback port with persistence off, stopped by its pid on drop.
#![allow(dead_code)] // each includer uses its own part of it

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `redis-server` on `PATH`, if any.
pub fn find_redis() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|p| p.join("redis-server"))
        .find(|p| p.is_file())
}

/// A running server of ours.
pub struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts `bin` and waits until it accepts connections; panics if it cannot.
    pub fn start(bin: &Path) -> Redis {
        Redis::spawn(bin).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The `redis-server` on `PATH`, started; `None` when there is none or it
    /// does not come up (the examples then skip their cluster part).
    pub fn try_start() -> Option<Redis> {
        Redis::spawn(&find_redis()?).ok()
    }

    fn spawn(bin: &Path) -> Result<Redis, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port: {e}"))?;
        let dir = std::env::temp_dir().join(format!("fanout-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("temp dir: {e}"))?;
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        // From here on, dropping `r` stops the server.
        let r = Redis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(r)
    }

    /// Its URL for `Cluster::builder`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SAFETY: signalling the redis-server this bench started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

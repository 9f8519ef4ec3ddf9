//! The supervisor of local worker processes.

use super::*;

impl Shared {
    // -----------------------------------------------------------------------
    // Local workers.

    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        lock(&self.workers)
            .iter()
            .flatten()
            .map(|w| w.child.id())
            .collect()
    }

    fn spawn_worker(&self) -> std::io::Result<LocalWorker> {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.env(crate::cluster::worker::URL_ENV, &self.cfg.url)
            .env(crate::cluster::worker::NAMESPACE_ENV, &self.cfg.namespace)
            .env(crate::cluster::worker::SECRET_ENV, &self.cfg.secret)
            .env(crate::cluster::worker::CONCURRENCY_ENV, "1")
            .env(
                crate::cluster::worker::LEASE_ENV,
                self.cfg.lease.as_millis().to_string(),
            )
            .env(
                crate::cluster::worker::PARENT_ENV,
                std::process::id().to_string(),
            )
            .env(
                crate::cluster::worker::RESOURCES_ENV,
                &self.cfg.local_worker_resources,
            )
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                // Drain and exit if this (supervisor) thread's process dies.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(LocalWorker {
            child,
            started: Instant::now(),
        })
    }

    pub(super) fn supervise(self: Arc<Self>) {
        let n = self.cfg.local_workers;
        let host = protocol::hostname();
        let mut control = Conn::new(
            &self.cfg.url,
            &self.cfg.keys,
            self.scripts.clone(),
            Duration::from_secs(2),
        )
        .ok();
        let mut died_keys: Vec<String> = Vec::new();
        let mut respawn_at: Vec<Option<Instant>> = vec![Some(Instant::now()); n];
        lock(&self.workers).resize_with(n, || None);
        loop {
            let stopping = lock(&self.state).loop_done;
            if stopping {
                break;
            }
            let now = Instant::now();
            for (slot, due) in respawn_at.iter_mut().enumerate() {
                // Reap a dead worker.
                let exited = {
                    let mut ws = lock(&self.workers);
                    match ws[slot].as_mut().map(|w| w.child.try_wait()) {
                        Some(Ok(Some(status))) => ws[slot].take().map(|w| (w, status)),
                        _ => None,
                    }
                };
                if let Some((w, status)) = exited {
                    let how = describe(status);
                    let pid = w.child.id();
                    log::warn!("cluster worker {host}:{pid} {how}; starting a replacement");
                    if let Some(c) = control.as_mut() {
                        let key = self.cfg.keys.died(&format!("{host}:{pid}"));
                        let _ = c.query(redis::cmd("SET").arg(&key).arg(&how).arg("EX").arg(3600));
                        died_keys.push(key);
                    }
                    // Crash loops back off.
                    let quick = w.started.elapsed() < Duration::from_secs(1);
                    *due = Some(now + Duration::from_millis(if quick { 500 } else { 0 }));
                }
                if due.is_some_and(|d| now >= d) {
                    match self.spawn_worker() {
                        Ok(w) => {
                            lock(&self.workers)[slot] = Some(w);
                            *due = None;
                        }
                        Err(e) => {
                            log::error!("could not start a local cluster worker: {e}");
                            *due = Some(now + Duration::from_secs(1));
                        }
                    }
                }
            }
            let mut st = lock(&self.state);
            if !st.workers_started {
                st.workers_started = true;
                self.finished.notify_all();
            }
            if st.loop_done {
                break;
            }
            let _ = self
                .finished
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner());
        }
        // Stop: SIGTERM drains (running tasks finish, nothing new is read).
        let mut workers: Vec<LocalWorker> = lock(&self.workers)
            .iter_mut()
            .flat_map(Option::take)
            .collect();
        for w in &workers {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(w.child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10) + self.cfg.lease;
        for w in &mut workers {
            loop {
                match w.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        log::warn!(
                            "cluster worker {} did not drain in time; killing it",
                            w.child.id()
                        );
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        if let Some(c) = control.as_mut() {
            if !died_keys.is_empty() {
                let mut del = redis::cmd("DEL");
                for k in &died_keys {
                    del.arg(k);
                }
                let _ = c.query(&del);
            }
        }
        self.finished.notify_all();
    }
}

/// Human-readable exit status.
pub(crate) fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exited with code {code}")
    } else if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGKILL => "SIGKILL",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGABRT => "SIGABRT",
            libc::SIGTERM => "SIGTERM",
            libc::SIGBUS => "SIGBUS",
            libc::SIGFPE => "SIGFPE",
            libc::SIGILL => "SIGILL",
            libc::SIGINT => "SIGINT",
            _ => "signal",
        };
        format!("was killed by signal {sig} ({name})")
    } else {
        "ended".into()
    }
}

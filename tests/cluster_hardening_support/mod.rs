//! A watchdog for the cluster hardening tests: a regression must fail, not
//! hang. Even a wait the test does not control (a `Drop` that shuts a
//! cluster down) is bounded: past the limit the process reports which test
//! was stuck and aborts.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Aborts the process unless dropped within `limit`.
pub struct Watchdog(Arc<AtomicBool>);

pub fn watchdog(test: &'static str, limit: Duration) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{test}: still running after {limit:?}; aborting (a hang is a failure)");
        std::process::abort();
    });
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

//! What waking a sleeping thread costs on this machine, with nothing of
//! fanout in it: two threads ping-pong one byte over a socket pair (as a
//! pool's caller and I/O thread, or a cluster client and Redis, hand a call
//! back and forth), 5 000 round trips with a short pause every 50 so the
//! CPUs can go idle; then the same while a third thread spins, so that one
//! vCPU never halts. The difference is the cost of waking an idle vCPU,
//! paid once per hop of a round trip (see BENCHMARKS.md, "Wake-ups").
//!
//! ```text
//! cargo run --release --example wake_latency
//! ```

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// p50 and p99 of one-byte round trips, in µs.
fn round_trips(with_spinner: bool) -> std::io::Result<(f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = with_spinner.then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    });
    let (mut near, mut far) = UnixStream::pair()?;
    let echo = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while far.read_exact(&mut byte).is_ok() && byte[0] != 0 {
            if far.write_all(&byte).is_err() {
                break;
            }
        }
    });
    let mut micros = Vec::with_capacity(5000);
    let mut byte = [1u8; 1];
    for i in 0..5000 {
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        let start = Instant::now();
        near.write_all(&[1])?;
        near.read_exact(&mut byte)?;
        micros.push(start.elapsed().as_secs_f64() * 1e6);
    }
    near.write_all(&[0])?;
    let _ = echo.join();
    stop.store(true, Ordering::Relaxed);
    if let Some(spinner) = spinner {
        let _ = spinner.join();
    }
    micros.sort_by(f64::total_cmp);
    Ok((micros[micros.len() / 2], micros[micros.len() * 99 / 100]))
}

fn main() -> std::io::Result<()> {
    for _ in 0..3 {
        let (p50, p99) = round_trips(false)?;
        let (s50, s99) = round_trips(true)?;
        println!(
            "idle CPUs: p50 {p50:.1} µs, p99 {p99:.1} µs | one thread spinning: p50 {s50:.1} µs, p99 {s99:.1} µs"
        );
    }
    Ok(())
}

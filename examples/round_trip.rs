//! Round-trip latency of one `submit(add, (i, 1))` then `.result()` on an
//! idle cluster of 2 local workers (as `benches/cluster.rs`'s "round trip"
//! row), in `rounds` rounds of `n` samples, and the one-submit-per-task
//! throughput of `tasks` submits and the median rate of `maps` maps of
//! `tasks` items in chunks of 100; for quick A/B runs on a busy machine.
//!
//! ```text
//! redis-server --port 6399 --save '' --appendonly no &
//! cargo run --release --example round_trip -- redis://127.0.0.1:6399/0 2000 5 10000 9
//! ```

use fanout::{Cluster, Executor};
use std::time::{Duration, Instant};

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn add1(a: u64) -> u64 {
    a + 1
}

fn main() -> fanout::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let tasks: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    // Maps of `tasks` items in chunks of 100 per round (0: none), as the bench's map row.
    let maps: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(0);
    let cluster = Cluster::builder(&url)
        .namespace(format!("rt{}", std::process::id()))
        .local_workers(2)
        .build()?;
    for f in (0..400)
        .map(|i| cluster.submit(add, (i, 1)))
        .collect::<Vec<_>>()
    {
        f?.result()?;
    }
    for _ in 0..rounds {
        let mut lat: Vec<Duration> = Vec::with_capacity(n);
        for i in 0..(n + n / 10) as u64 {
            let t = Instant::now();
            let r = cluster.submit(add, (i, 1))?.result()?;
            let d = t.elapsed();
            assert_eq!(r, i + 1);
            if i as usize >= n / 10 {
                lat.push(d);
            }
        }
        lat.sort();
        let pct =
            |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
        let mut line = format!("p50={:.0} p99={:.0}", pct(0.5), pct(0.99));
        if tasks > 0 {
            let t = Instant::now();
            let fs = (0..tasks)
                .map(|i| cluster.submit(add, (i, 1)))
                .collect::<fanout::Result<Vec<_>>>()?;
            let total: u64 = fs.into_iter().map(|f| f.result().unwrap()).sum();
            assert_eq!(total, tasks * (tasks - 1) / 2 + tasks);
            line += &format!(" tps={:.0}", tasks as f64 / t.elapsed().as_secs_f64());
        }
        if tasks > 0 && maps > 0 {
            let mut rates = Vec::with_capacity(maps);
            for _ in 0..maps {
                let t = Instant::now();
                let total: u64 = cluster
                    .map_with(add1, 0..tasks, fanout::MapOptions::default().chunksize(100))?
                    .map(Result::unwrap)
                    .sum();
                assert_eq!(total, tasks * (tasks - 1) / 2 + tasks);
                rates.push(tasks as f64 / t.elapsed().as_secs_f64());
            }
            rates.sort_by(f64::total_cmp);
            line += &format!(" map={:.0}", rates[rates.len() / 2]);
        }
        println!("{line}");
    }
    cluster.shutdown(true, false);
    Ok(())
}

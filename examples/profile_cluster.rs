//! A small driver for counting the Redis commands a `Cluster` sends per
//! task: N one-submit calls of `add(i, 1)` on 2 local workers, then every
//! result. Point it at a running redis-server and watch that server with
//! `redis-cli MONITOR` (a client's own commands show as `[0 127.0.0.1:port]`,
//! commands run inside a script as `[0 lua]`), or compare
//! `INFO commandstats` before and after.
//!
//! ```text
//! redis-server --port 6399 --save '' --appendonly no &
//! redis-cli -p 6399 MONITOR > monitor.txt &
//! cargo run --release --example profile_cluster -- redis://127.0.0.1:6399/0 1000
//! ```
//!
//! See BENCHMARKS.md ("Profiles per call") for the counts.

use fanout::{Cluster, Executor};

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn main() -> fanout::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let cluster = Cluster::builder(&url)
        .namespace(format!("profile{}", std::process::id()))
        .local_workers(2)
        .build()?;
    // Warm up: both workers up and serving.
    for f in (0..20)
        .map(|i| cluster.submit(add, (i, 1)))
        .collect::<Vec<_>>()
    {
        f?.result()?;
    }
    eprintln!("warm; timed part starts");
    let fs = (0..n)
        .map(|i| cluster.submit(add, (i, 1)))
        .collect::<fanout::Result<Vec<_>>>()?;
    let total: u64 = fs.into_iter().map(|f| f.result().unwrap()).sum();
    eprintln!("done; timed part ends");
    println!("cluster submit {n}: {total}");
    cluster.shutdown(true, false);
    Ok(())
}

//! Task-graph benchmark: 40 × (a producer of 1 MiB → a consumer that takes
//! the producer's future as its argument), on fanout's `Cluster` (a private
//! `redis-server`, 2 local workers) and `ProcessPool(2)`, against Dask
//! distributed's `LocalCluster` (2 processes × 1 thread, futures as
//! arguments, `pure=False`), measured in the same run.
//!
//! ```text
//! cargo bench --bench graph                      # full run, markdown table on stdout
//! cargo bench --bench graph -- --repeats 5       # more repeats
//! FANOUT_BENCH_QUICK=1 cargo bench --bench graph # smoke run (also `cargo test --benches`)
//! ```
//!
//! A round submits the 80 calls and gathers the 40 consumers' results (a few
//! bytes each); the figure is the round's wall time, median over the repeats.
//! Dask runs through `benches/py/dask_graph.py` (needs
//! `pip install dask distributed`). The quick run uses 5 pairs and skips Dask.

use fanout::{gather, Cluster, Executor, ProcessPool};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/harness.rs"]
mod harness;
use harness::Args;
#[path = "common/redis.rs"]
mod redis_server;
use redis_server::{find_redis, Redis};

const MIB: usize = 1 << 20;

fn produce(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; MIB]
}

fn consume(b: Vec<u8>) -> u64 {
    b.len() as u64 + u64::from(b[0])
}

struct Config {
    quick: bool,
    repeats: usize,
    pairs: u64,
}

impl Config {
    fn from_env() -> Config {
        let Args { quick, repeats, .. } = Args::from_env(5);
        Config {
            quick,
            repeats,
            pairs: if quick { 5 } else { 40 },
        }
    }
}

/// One round on `ex`: every pair submitted, the consumers gathered.
fn round(ex: &impl Executor, pairs: u64) -> Duration {
    let t = Instant::now();
    let consumers: Vec<_> = (0..pairs)
        .map(|i| {
            let p = ex.submit(produce, (i,)).expect("submit producer");
            ex.call(consume)
                .submit((p.arg(),))
                .expect("submit consumer")
        })
        .collect();
    let total: u64 = gather(consumers).expect("gather").into_iter().sum();
    let elapsed = t.elapsed();
    let want: u64 = (0..pairs).map(|i| MIB as u64 + i % 251).sum();
    assert_eq!(total, want);
    elapsed
}

fn rounds(ex: &impl Executor, cfg: &Config) -> Vec<f64> {
    round(ex, 4); // warm up: both workers up and serving
    (0..cfg.repeats)
        .map(|_| round(ex, cfg.pairs).as_secs_f64())
        .collect()
}

fn run_dask(cfg: &Config) -> Result<(Vec<f64>, String), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/py/dask_graph.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(cfg.pairs.to_string())
        .arg(cfg.repeats.to_string())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| {
        format!(
            "dask_graph.py printed no result (is dask installed? `pip install dask distributed`): {}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        )
    })?;
    let seconds = line
        .split("\"seconds\": [")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .map(|list| {
            list.split(',')
                .filter_map(|v| v.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let version = line
        .split("\"version\": \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("?")
        .to_string();
    Ok((seconds, version))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let cfg = Config::from_env();
    eprintln!(
        "graph bench: {} × (1 MiB producer → consumer), {} repeat(s), load average {}",
        cfg.pairs,
        cfg.repeats,
        load_average()
    );
    let mut rows: Vec<(String, f64)> = Vec::new();

    let pool = ProcessPool::new(2).expect("process pool");
    let s = rounds(&pool, &cfg);
    eprintln!("  ProcessPool(2): {s:?}");
    rows.push(("fanout ProcessPool(2)".into(), median(s)));
    drop(pool);

    match find_redis() {
        Some(bin) => {
            let redis = Redis::start(&bin);
            let cluster = Cluster::builder(&redis.url())
                .namespace("graphbench")
                .local_workers(2)
                .build()
                .expect("cluster");
            let s = rounds(&cluster, &cfg);
            eprintln!("  Cluster(2 local workers): {s:?}");
            rows.push(("fanout Cluster (2 local workers)".into(), median(s)));
            drop(cluster);
            drop(redis);
        }
        None if cfg.quick => eprintln!("  Cluster skipped: redis-server not found"),
        None => panic!("the graph bench needs redis-server: apt-get install redis-server"),
    }

    let mut dask_note = None;
    if cfg.quick {
        dask_note = Some("skipped in the quick (smoke) run".to_string());
    } else {
        match run_dask(&cfg) {
            Ok((s, v)) => {
                eprintln!("  Dask {v}: {s:?}");
                rows.push((
                    format!("Dask LocalCluster {v} (2 procs × 1 thread)"),
                    median(s),
                ));
            }
            Err(e) => dask_note = Some(e),
        }
    }
    let dask = rows
        .iter()
        .find(|(n, _)| n.starts_with("Dask"))
        .map(|(_, s)| *s);
    println!(
        "\n| {} × (1 MiB producer → consumer of its future) | wall time per round | vs Dask |",
        cfg.pairs
    );
    println!("|---|---:|---:|");
    for (name, s) in &rows {
        let vs = match dask {
            Some(d) if !name.starts_with("Dask") => format!("**{:.1}×** faster", d / s),
            _ => String::from("—"),
        };
        println!("| {name} | {:.1} ms | {vs} |", s * 1e3);
    }
    println!(
        "\n{} repeat(s), medians; load average at the end {}",
        cfg.repeats,
        load_average()
    );
    if let Some(e) = dask_note {
        println!("Dask was not measured: {e}");
    }
}

//! Cluster benchmark: fanout's `Cluster` (Redis Streams, 2 local workers)
//! against Dask distributed's `LocalCluster` (2 worker processes, 1 thread
//! each) and a local Ray instance (2 CPUs), measured in the same run.
//!
//! ```text
//! cargo bench --bench cluster                      # full run, markdown table on stdout
//! cargo bench --bench cluster -- --repeats 5       # more repeats
//! FANOUT_BENCH_QUICK=1 cargo bench --bench cluster # smoke run (also `--test`, `cargo test --benches`)
//! ```
//!
//! Workloads:
//!
//! * **throughput** — submit 10,000 trivial tasks (`add(i, 1)`) one `submit` at a
//!   time, then collect every result; tasks/s.
//! * **map** — `map_with(add1, 0..10_000, chunksize 100)` (Dask: `client.map`); tasks/s.
//! * **latency** — one submit → result round trip on an idle cluster, repeated; p50, p99.
//!
//! The bench starts its own `redis-server` (save off, appendonly off) on a free
//! loopback port and stops it by pid. Dask runs through `benches/py/dask_bench.py`
//! (needs `pip install "dask[distributed]"`), Ray through `benches/py/ray_bench.py`
//! (needs `pip install ray`). Each repeat runs fanout, then Dask, then Ray;
//! figures are medians over the repeats. The quick (smoke) run measures fanout
//! only, on 300 tasks.

use fanout::{Cluster, Executor, MapOptions};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/harness.rs"]
mod harness;
use harness::Args;
#[path = "common/redis.rs"]
mod redis_server;
use redis_server::{find_redis, Redis};

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn add1(a: u64) -> u64 {
    a + 1
}

struct Config {
    quick: bool,
    repeats: usize,
    tasks: u64,
    latency_samples: usize,
}

impl Config {
    fn from_env() -> Config {
        let Args { quick, repeats, .. } = Args::from_env(3);
        Config {
            quick,
            repeats,
            tasks: if quick { 300 } else { 10_000 },
            latency_samples: if quick { 50 } else { 2_000 },
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    submit_tps: f64,
    map_tps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e6
}

fn run_fanout(url: &str, cfg: &Config, round: usize) -> Sample {
    let cluster = Cluster::builder(url)
        .namespace(format!("bench{round}"))
        .local_workers(2)
        .build()
        .expect("cluster");
    // Warm up: both workers up and serving.
    let warm: u64 = cluster
        .map(add1, 0..400u64)
        .unwrap()
        .map(Result::unwrap)
        .sum();
    assert_eq!(warm, 400 * 401 / 2);
    let n = cfg.tasks;

    let t = Instant::now();
    let fs: Vec<_> = (0..n)
        .map(|i| cluster.submit(add, (i, 1)).unwrap())
        .collect();
    let total: u64 = fs.into_iter().map(|f| f.result().unwrap()).sum();
    let submit_s = t.elapsed().as_secs_f64();
    assert_eq!(total, n * (n - 1) / 2 + n);

    let t = Instant::now();
    let total: u64 = cluster
        .map_with(add1, 0..n, MapOptions::default().chunksize(100))
        .unwrap()
        .map(Result::unwrap)
        .sum();
    let map_s = t.elapsed().as_secs_f64();
    assert_eq!(total, n * (n - 1) / 2 + n);

    let warmup = cfg.latency_samples / 10;
    let mut lat = Vec::with_capacity(cfg.latency_samples);
    for i in 0..(cfg.latency_samples + warmup) as u64 {
        let t = Instant::now();
        let r = cluster.submit(add, (i, 1)).unwrap().result().unwrap();
        let d = t.elapsed();
        assert_eq!(r, i + 1);
        if i as usize >= warmup {
            lat.push(d);
        }
    }
    lat.sort();
    cluster.shutdown(true, false);
    Sample {
        submit_tps: n as f64 / submit_s,
        map_tps: n as f64 / map_s,
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
    }
}

/// A Python peer: its script under `benches/py/` and how to install it.
struct Peer {
    name: &'static str,
    script: &'static str,
    install: &'static str,
}

const PEERS: [Peer; 2] = [
    Peer {
        name: "Dask LocalCluster",
        script: "dask_bench.py",
        install: "pip install \"dask[distributed]\"",
    },
    Peer {
        name: "Ray local",
        script: "ray_bench.py",
        install: "pip install ray",
    },
];

fn run_peer(peer: &Peer, cfg: &Config) -> Result<(Sample, String), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/py")
        .join(peer.script);
    let samples = if cfg.quick { 20 } else { 1_000 };
    let out = Command::new("python3")
        .arg(&script)
        .arg(cfg.tasks.to_string())
        .arg(samples.to_string())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| {
            format!(
                "{} printed no result (is it installed? `{}`): {}",
                peer.script,
                peer.install,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )
        })?;
    let num = |key: &str| -> f64 {
        line.split(&format!("\"{key}\": "))
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let version = line
        .split("\"version\": \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("?")
        .to_string();
    Ok((
        Sample {
            submit_tps: num("submit_tps"),
            map_tps: num("map_tps"),
            p50_us: num("p50_us"),
            p99_us: num("p99_us"),
        },
        version,
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn summarize(samples: &[Sample]) -> Sample {
    Sample {
        submit_tps: median(samples.iter().map(|s| s.submit_tps).collect()),
        map_tps: median(samples.iter().map(|s| s.map_tps).collect()),
        p50_us: median(samples.iter().map(|s| s.p50_us).collect()),
        p99_us: median(samples.iter().map(|s| s.p99_us).collect()),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let cfg = Config::from_env();
    let Some(bin) = find_redis() else {
        if cfg.quick {
            eprintln!("cluster bench: redis-server not found; skipping the smoke run (install it with `apt-get install redis-server`)");
            return;
        }
        panic!(
            "the cluster bench needs redis-server: install it with `apt-get install redis-server`"
        );
    };
    let redis = Redis::start(&bin);
    let url = redis.url();
    eprintln!(
        "cluster bench: {} tasks, {} latency samples, {} repeat(s), load average {}",
        cfg.tasks,
        cfg.latency_samples,
        cfg.repeats,
        load_average()
    );
    let mut ours = Vec::new();
    let mut peers: Vec<Vec<Sample>> = PEERS.iter().map(|_| Vec::new()).collect();
    let mut versions: Vec<String> = PEERS.iter().map(|_| "not run".to_string()).collect();
    let mut errors: Vec<Option<String>> = PEERS.iter().map(|_| None).collect();
    for round in 0..cfg.repeats {
        let s = run_fanout(&url, &cfg, round);
        eprintln!("  fanout round {round}: {s:?}");
        ours.push(s);
        for (k, peer) in PEERS.iter().enumerate() {
            if cfg.quick {
                // Starting a Dask or Ray cluster alone takes seconds: not in the smoke run.
                errors[k] = Some("skipped in the quick (smoke) run".into());
                continue;
            }
            match run_peer(peer, &cfg) {
                Ok((s, v)) => {
                    eprintln!("  {} round {round}: {s:?}", peer.name);
                    peers[k].push(s);
                    versions[k] = v;
                }
                Err(e) => {
                    eprintln!("  {}: {e}", peer.name);
                    errors[k] = Some(e);
                }
            }
        }
    }
    let f = summarize(&ours);
    let p: Vec<Sample> = peers.iter().map(|v| summarize(v)).collect();
    let mut header = format!(
        "\n| workload ({} tasks, 2 workers) | fanout Cluster |",
        cfg.tasks
    );
    let mut rule = String::from("|---|---:|");
    for (k, peer) in PEERS.iter().enumerate() {
        header += &format!(" {} {} |", peer.name, versions[k]);
        rule += "---:|";
    }
    for peer in &PEERS {
        header += &format!(" fanout ÷ {} |", peer.name);
        rule += "---:|";
    }
    println!("{header}\n{rule}");
    type Pick = fn(&Sample) -> f64;
    let rows: [(&str, Pick, bool); 4] = [
        (
            "throughput, one submit per task (tasks/s)",
            |s| s.submit_tps,
            true,
        ),
        (
            "map, chunksize 100 / client.map / tasks of 100 (tasks/s)",
            |s| s.map_tps,
            true,
        ),
        ("round trip p50 (µs)", |s| s.p50_us, false),
        ("round trip p99 (µs)", |s| s.p99_us, false),
    ];
    for (label, pick, higher_is_better) in rows {
        let mut line = format!("| {label} | {:.0} |", pick(&f));
        for s in &p {
            line += &format!(" {:.0} |", pick(s));
        }
        for s in &p {
            // Always "how many times better fanout is".
            let ratio = if higher_is_better {
                pick(&f) / pick(s)
            } else {
                pick(s) / pick(&f)
            };
            line += &format!(" **{ratio:.1}×** |");
        }
        println!("{line}");
    }
    println!(
        "\n{} repeat(s), medians; load average at start {}",
        cfg.repeats,
        load_average()
    );
    for (k, peer) in PEERS.iter().enumerate() {
        if let Some(e) = &errors[k] {
            println!("{} was not measured: {e}", peer.name);
        }
    }
    drop(redis);
}

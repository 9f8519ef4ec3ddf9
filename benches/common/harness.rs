//! The measuring and reporting half of the pool benchmarks (thread pool,
//! process pool): peers run interleaved for a number of repeats, reduced to
//! medians, printed as markdown tables with fanout's ratio over each peer,
//! then checked against the goals. Each bench keeps only its workloads.
#![allow(dead_code)] // each bench uses its own part of it

use std::hint::black_box;
use std::time::{Duration, Instant};

/// What the harness needs of a bench's configuration: its command line.
pub trait Bench {
    fn args(&self) -> &Args;
}

/// The command line of a bench: `--repeats N`, filters (a row runs when its
/// `workload/peer` contains one), and whether this is a quick smoke run
/// (`cargo test --benches`, `FANOUT_BENCH_QUICK=1`, or started by cargo
/// without `--bench`).
pub struct Args {
    pub quick: bool,
    pub repeats: usize,
    pub filters: Vec<String>,
}

impl Args {
    /// Reads the command line; `repeats` is the default for a full run.
    pub fn from_env(repeats: usize) -> Args {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let bench_flag = args.iter().any(|a| a == "--bench");
        let test_flag = args.iter().any(|a| a == "--test");
        let started_by_cargo = std::env::var_os("CARGO_MANIFEST_DIR").is_some();
        let quick = test_flag
            || std::env::var_os("FANOUT_BENCH_QUICK").is_some()
            || (!bench_flag && started_by_cargo);
        let mut repeats = if quick { 1 } else { repeats };
        let mut filters = Vec::new();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "--repeats" => {
                    repeats = rest
                        .next()
                        .and_then(|r| r.parse().ok())
                        .filter(|&r| r > 0)
                        .expect("--repeats needs a positive number");
                }
                a if a.starts_with('-') => {} // --bench, --test and cargo's other flags
                a => filters.push(a.to_string()),
            }
        }
        Args {
            quick,
            repeats,
            filters,
        }
    }

    /// Whether the row `workload/peer` was asked for.
    pub fn selected(&self, id: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| id.contains(f.as_str()))
    }
}

/// One repeat of one peer.
pub enum Sample {
    /// Wall time for `size` tasks, items or bytes.
    Elapsed(Duration),
    /// Sorted per-round-trip times in nanoseconds.
    RoundTrips(Vec<u64>),
}

/// A peer of one workload.
pub struct Peer<C> {
    pub name: &'static str,
    /// How many tasks/items/samples/bytes one repeat uses (for the table).
    pub size: fn(&C) -> u64,
    pub run: fn(&C) -> Option<Sample>,
}

/// One peer's result over all repeats.
pub struct Row {
    pub name: &'static str,
    pub size: u64,
    /// Median over repeats: a rate (per second), or p50 in µs for latency.
    pub median: Option<f64>,
    /// Median p99 in µs (latency only).
    pub median_p99: Option<f64>,
    pub spread: Option<(f64, f64)>,
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

pub fn percentile_us(sorted_ns: &[u64], pct: f64) -> f64 {
    let idx =
        ((sorted_ns.len() as f64 * pct / 100.0).ceil() as usize).clamp(1, sorted_ns.len()) - 1;
    sorted_ns[idx] as f64 / 1_000.0
}

/// Times `samples` round trips after `warmup` untimed ones; sorted nanoseconds.
pub fn round_trips(
    warmup: usize,
    samples: usize,
    mut round_trip: impl FnMut(u64) -> u64,
) -> Vec<u64> {
    for i in 0..warmup {
        black_box(round_trip(i as u64));
    }
    let mut ns = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        black_box(round_trip(i as u64));
        ns.push(start.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();
    ns
}

/// Runs every selected peer `repeats` times, interleaved (the order rotates
/// so no peer always runs first), and reduces to medians; `show` formats a
/// rate for the progress lines.
pub fn measure<C: Bench>(
    cfg: &C,
    workload: &str,
    peers: &[Peer<C>],
    show: fn(f64) -> String,
) -> Vec<Row> {
    let selected: Vec<&Peer<C>> = peers
        .iter()
        .filter(|p| cfg.args().selected(&format!("{workload}/{}", p.name)))
        .collect();
    let mut firsts: Vec<Vec<f64>> = vec![Vec::new(); selected.len()];
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); selected.len()];
    for rep in 0..cfg.args().repeats {
        for k in 0..selected.len() {
            let i = (k + rep) % selected.len();
            let peer = selected[i];
            let size = (peer.size)(cfg);
            match (peer.run)(cfg) {
                Some(Sample::Elapsed(d)) => {
                    let rate = size as f64 / d.as_secs_f64();
                    eprintln!(
                        "  {workload}/{}: repeat {rep}: {} ({:.1} ms)",
                        peer.name,
                        show(rate),
                        d.as_secs_f64() * 1e3
                    );
                    firsts[i].push(rate);
                }
                Some(Sample::RoundTrips(ns)) => {
                    let (p50, p99) = (percentile_us(&ns, 50.0), percentile_us(&ns, 99.0));
                    eprintln!(
                        "  {workload}/{}: repeat {rep}: p50 {p50:.1} µs, p99 {p99:.1} µs",
                        peer.name
                    );
                    firsts[i].push(p50);
                    seconds[i].push(p99);
                }
                None => eprintln!("  {workload}/{}: repeat {rep}: unavailable", peer.name),
            }
        }
    }
    selected
        .iter()
        .enumerate()
        .map(|(i, peer)| {
            let spread = firsts[i]
                .iter()
                .copied()
                .fold(None, |acc: Option<(f64, f64)>, v| {
                    Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
                });
            Row {
                name: peer.name,
                size: (peer.size)(cfg),
                median: median(&mut firsts[i]),
                median_p99: median(&mut seconds[i]),
                spread,
            }
        })
        .collect()
}

/// The 1-minute load average (the machine is shared; this says how much).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// The text after `"key":` in a flat JSON object (enough for our own output).
pub fn json_value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":");
    let at = json.find(&pattern)? + pattern.len();
    Some(json[at..].trim_start())
}

pub fn json_number(json: &str, key: &str) -> Option<f64> {
    let value = json_value(json, key)?;
    let end = value.find([',', '}']).unwrap_or(value.len());
    value[..end].trim().parse().ok()
}

pub fn json_array<T: std::str::FromStr>(json: &str, key: &str) -> Option<Vec<T>> {
    let value = json_value(json, key)?.strip_prefix('[')?;
    let body = &value[..value.find(']')?];
    body.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().ok())
        .collect()
}

pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('_');
        }
        out.push(c);
    }
    out
}

pub fn fmt_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M/s", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} k/s", rate / 1e3)
    } else {
        format!("{rate:.0} /s")
    }
}

pub fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}×")
    } else if r >= 0.1 {
        format!("{r:.2}×")
    } else {
        format!("{r:.4}×")
    }
}

/// fanout's row (every bench names its fanout peer "fanout …").
pub fn fanout_row(rows: &[Row]) -> Option<&Row> {
    rows.iter().find(|r| r.name.starts_with("fanout"))
}

/// Prints a rate table; returns fanout's speed ratio over each peer.
pub fn print_rate_table(
    title: &str,
    unit: &str,
    rows: &[Row],
    show: fn(f64) -> String,
    size: fn(u64) -> String,
) -> Vec<(&'static str, f64)> {
    println!("### {title}\n");
    println!("| peer | {unit} per repeat | median | min – max | fanout ÷ peer |");
    println!("|---|---:|---:|---:|---:|");
    let base = fanout_row(rows).and_then(|r| r.median);
    let mut ratios = Vec::new();
    for row in rows {
        let (rate, spread) = match (row.median, row.spread) {
            (Some(m), Some((lo, hi))) => (show(m), format!("{} – {}", show(lo), show(hi))),
            _ => ("n/a".into(), "n/a".into()),
        };
        let ratio = match (base, row.median) {
            (Some(b), Some(m)) => {
                ratios.push((row.name, b / m));
                fmt_ratio(b / m)
            }
            _ => "n/a".into(),
        };
        println!(
            "| {} | {} | {rate} | {spread} | {ratio} |",
            row.name,
            size(row.size)
        );
    }
    println!();
    ratios
}

/// Prints the latency table; returns peer p50 ÷ fanout p50 for each peer.
pub fn print_latency_table(rows: &[Row]) -> Vec<(&'static str, f64)> {
    println!("### (b) Latency: one submit → result round trip on an idle pool\n");
    println!(
        "| peer | samples per repeat | p50 µs | p99 µs | p50 min – max | peer p50 ÷ fanout p50 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let base = fanout_row(rows).and_then(|r| r.median);
    let mut ratios = Vec::new();
    for row in rows {
        let show = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.1}"));
        let spread = row
            .spread
            .map_or("n/a".into(), |(lo, hi)| format!("{lo:.1} – {hi:.1}"));
        let ratio = match (base, row.median) {
            (Some(b), Some(m)) => {
                ratios.push((row.name, m / b));
                fmt_ratio(m / b)
            }
            _ => "n/a".into(),
        };
        println!(
            "| {} | {} | {} | {} | {spread} | {ratio} |",
            row.name,
            fmt_count(row.size),
            show(row.median),
            show(row.median_p99)
        );
    }
    println!();
    ratios
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// fanout ÷ `peer` from a table's ratios, if the peer ran.
pub fn ratio_of(ratios: &[(&'static str, f64)], peer: &str) -> Option<f64> {
    ratios
        .iter()
        .find(|(name, _)| *name == peer)
        .map(|(_, r)| *r)
}

/// Prints whether fanout's ratio over `peer` reaches `target`.
pub fn goal_ratio(what: &str, ratios: &[(&'static str, f64)], peer: &str, target: f64) {
    match ratio_of(ratios, peer) {
        Some(r) => println!(
            "- {what}: {r:.2}× (goal ≥ {target}×) — {}",
            verdict(r >= target)
        ),
        None => println!("- {what}: not measured in this run"),
    }
}

/// Prints whether a measured value meets its goal.
pub fn goal_value(
    what: &str,
    value: Option<f64>,
    shown: String,
    ok: impl Fn(f64) -> bool,
    target: &str,
) {
    match value {
        Some(v) => println!("- {what}: {shown} (goal {target}) — {}", verdict(ok(v))),
        None => println!("- {what}: not measured in this run"),
    }
}

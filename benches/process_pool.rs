//! Process-pool benchmarks: fanout's `ProcessPool` against its peers, all with 2 workers.
//!
//! ```text
//! cargo bench --bench process_pool                       # everything, markdown tables on stdout
//! cargo bench --bench process_pool -- latency            # only rows whose "workload/peer" contains "latency"
//! cargo bench --bench process_pool -- --repeats 9 echo   # more repeats
//! FANOUT_BENCH_QUICK=1 cargo bench --bench process_pool  # smoke run (also: `--test`, or `cargo test --benches`)
//! ```
//!
//! Workloads (see BENCHMARKS.md for the numbers and how to read them):
//!
//! * **(a) throughput** — submit N trivial tasks (`add(i, 1)`), then collect every result.
//! * **(b) latency** — one submit → result round trip on an idle pool, repeated; p50 and p99.
//! * **(c) map** — `map_with(square, 0..N, chunksize 100)` and consume every result.
//! * **(d) echo** — a 64 MiB `Vec<u8>` sent to a worker and returned (`echo(v) -> v`);
//!   GB/s = 64 MiB ÷ round-trip time.
//!
//! Peers: fanout `ProcessPool` (spawn start method), `procspawn::Pool`, for
//! (d) also the same bytes through `cat` over two pipes, and
//! Python's `ProcessPoolExecutor` (fork and forkserver contexts) and loky's
//! reusable executor, run through `benches/py/process_pool.py`. Every peer
//! runs in the same process run, interleaved (each repeat rotates the order),
//! and every figure is the median over the repeats; ratios compare peers from
//! the same run. Pools are built fresh for every repeat and warmed up (every
//! worker running tasks) before the clock starts.
//!
//! Cargo runs this binary with `--bench` under `cargo bench` and with no
//! argument under `cargo test --benches`; without `--bench`, a run started by
//! cargo is a smoke test (tiny sizes, one repeat, no Python but one call, well
//! under 3 s). Run directly (no cargo) with no arguments it does everything.

use fanout::{Executor, MapOptions, ProcessPool};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/harness.rs"]
mod harness;
use harness::*;

const WORKERS: usize = 2;
const CHUNKSIZE: usize = 100;

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn square(x: u64) -> u64 {
    x * x
}

fn echo(v: Vec<u8>) -> Vec<u8> {
    v
}

/// Sum of `add(i, 1)` for `i` in `0..n`.
fn expected_add_sum(n: u64) -> u64 {
    n * (n - 1) / 2 + n
}

/// Sum of `square(i)` for `i` in `0..n`.
fn expected_square_sum(n: u64) -> u64 {
    (n - 1) * n * (2 * n - 1) / 6
}

// procspawn's pool takes `fn(A) -> R` with one argument.
fn add_pair((a, b): (u64, u64)) -> u64 {
    add(a, b)
}

fn square_chunk(xs: Vec<u64>) -> Vec<u64> {
    xs.into_iter().map(square).collect()
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

struct Config {
    /// The command line (repeats, filters, a quick smoke run).
    args: Args,
    throughput_tasks: u64,
    throughput_tasks_procspawn: u64,
    throughput_tasks_python: u64,
    latency_samples: usize,
    latency_warmup: usize,
    latency_samples_procspawn: usize,
    latency_samples_python: usize,
    map_items: u64,
    map_items_procspawn: u64,
    map_items_python: u64,
    echo_bytes: usize,
    /// Timed rounds per Python invocation (one repeat = their median), each
    /// after one untimed round, like the Rust peers.
    echo_rounds_python: usize,
}

impl Config {
    fn from_env() -> Config {
        let args = Args::from_env(5);
        if args.quick {
            Config {
                args,
                throughput_tasks: 500,
                throughput_tasks_procspawn: 100,
                throughput_tasks_python: 100,
                latency_samples: 200,
                latency_warmup: 20,
                latency_samples_procspawn: 50,
                latency_samples_python: 50,
                map_items: 10_000,
                map_items_procspawn: 1_000,
                map_items_python: 1_000,
                echo_bytes: 64 << 10,
                echo_rounds_python: 1,
            }
        } else {
            Config {
                args,
                throughput_tasks: 20_000,
                throughput_tasks_procspawn: 20_000,
                throughput_tasks_python: 3_000,
                latency_samples: 5_000,
                latency_warmup: 500,
                latency_samples_procspawn: 2_000,
                latency_samples_python: 1_000,
                map_items: 1_000_000,
                map_items_procspawn: 1_000_000,
                map_items_python: 100_000,
                echo_bytes: 64 << 20,
                echo_rounds_python: 1,
            }
        }
    }
}

impl Bench for Config {
    fn args(&self) -> &Args {
        &self.args
    }
}

// ---------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------

/// The payload for (d): every byte value, repeated.
fn echo_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

// ---------------------------------------------------------------------------
// Peers: pools
// ---------------------------------------------------------------------------

/// A fresh fanout pool with both workers started and running tasks.
fn fanout_pool() -> ProcessPool {
    let pool = ProcessPool::new(WORKERS).expect("fanout process pool");
    let fs: Vec<_> = (0..200)
        .map(|i| pool.submit(add, (i, 1)).unwrap())
        .collect();
    for f in fs {
        f.result().unwrap();
    }
    pool
}

/// A fresh procspawn pool with both workers started and running tasks.
fn procspawn_pool() -> Option<procspawn::Pool> {
    let pool = match procspawn::Pool::new(WORKERS) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("  procspawn pool failed to start: {e}");
            return None;
        }
    };
    let hs: Vec<_> = (0..20).map(|i| pool.spawn((i, 1), add_pair)).collect();
    for h in hs {
        h.join().ok()?;
    }
    Some(pool)
}

// ---------------------------------------------------------------------------
// (a) throughput
// ---------------------------------------------------------------------------

fn throughput_fanout(cfg: &Config) -> Option<Sample> {
    let n = cfg.throughput_tasks;
    let pool = fanout_pool();
    let start = Instant::now();
    let fs: Vec<_> = (0..n).map(|i| pool.submit(add, (i, 1)).unwrap()).collect();
    let total: u64 = fs.into_iter().map(|f| f.result().unwrap()).sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_add_sum(n));
    Some(Sample::Elapsed(elapsed))
}

/// Calls procspawn may have outstanding at once: every pending call holds
/// about four descriptors (two IPC channels), so 20k at once would exhaust
/// the usual 20k-descriptor limit. The oldest call is joined before a new one
/// is spawned past this window; with 2 workers the queue never runs dry.
const PROCSPAWN_WINDOW: usize = 1024;

/// Spawns `calls` in order through a window of [`PROCSPAWN_WINDOW`]
/// outstanding handles; folds the results in order.
fn procspawn_windowed<A, R, T>(
    pool: &procspawn::Pool,
    calls: impl Iterator<Item = A>,
    f: fn(A) -> R,
    mut fold: impl FnMut(R) -> T,
) -> Vec<T>
where
    A: serde::Serialize + serde::de::DeserializeOwned,
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let mut pending = std::collections::VecDeque::with_capacity(PROCSPAWN_WINDOW);
    let mut out = Vec::new();
    for args in calls {
        if pending.len() == PROCSPAWN_WINDOW {
            let h: procspawn::JoinHandle<R> = pending.pop_front().unwrap();
            out.push(fold(h.join().unwrap()));
        }
        pending.push_back(pool.spawn(args, f));
    }
    out.extend(pending.into_iter().map(|h| fold(h.join().unwrap())));
    out
}

fn throughput_procspawn(cfg: &Config) -> Option<Sample> {
    let n = cfg.throughput_tasks_procspawn;
    let pool = procspawn_pool()?;
    let start = Instant::now();
    let total: u64 = procspawn_windowed(&pool, (0..n).map(|i| (i, 1)), add_pair, |r| r)
        .into_iter()
        .sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_add_sum(n));
    pool.shutdown();
    Some(Sample::Elapsed(elapsed))
}

fn throughput_python(cfg: &Config, executor: &str) -> Option<Sample> {
    let out = python(
        executor,
        &["throughput", &cfg.throughput_tasks_python.to_string()],
    )?;
    json_number(&out, "seconds").map(|s| Sample::Elapsed(Duration::from_secs_f64(s)))
}

// ---------------------------------------------------------------------------
// (b) latency
// ---------------------------------------------------------------------------

fn latency_fanout(cfg: &Config) -> Option<Sample> {
    let pool = fanout_pool();
    Some(Sample::RoundTrips(round_trips(
        cfg.latency_warmup,
        cfg.latency_samples,
        |i| pool.submit(add, (i, 1)).unwrap().result().unwrap(),
    )))
}

fn latency_procspawn(cfg: &Config) -> Option<Sample> {
    let pool = procspawn_pool()?;
    let ns = round_trips(cfg.latency_warmup / 5, cfg.latency_samples_procspawn, |i| {
        pool.spawn((i, 1), add_pair).join().unwrap()
    });
    pool.shutdown();
    Some(Sample::RoundTrips(ns))
}

fn latency_python(cfg: &Config, executor: &str) -> Option<Sample> {
    let out = python(
        executor,
        &[
            "latency",
            &cfg.latency_samples_python.to_string(),
            &(cfg.latency_warmup / 5).to_string(),
        ],
    )?;
    json_array::<u64>(&out, "samples_ns").map(|mut ns| {
        ns.sort_unstable();
        Sample::RoundTrips(ns)
    })
}

// ---------------------------------------------------------------------------
// (c) map, chunksize 100
// ---------------------------------------------------------------------------

fn map_fanout(cfg: &Config) -> Option<Sample> {
    let n = cfg.map_items;
    let pool = fanout_pool();
    let start = Instant::now();
    let total: u64 = pool
        .map_with(square, 0..n, MapOptions::default().chunksize(CHUNKSIZE))
        .unwrap()
        .map(|r| r.unwrap())
        .sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_square_sum(n));
    Some(Sample::Elapsed(elapsed))
}

/// procspawn has no `map`: one `spawn` per chunk of 100 items, joined in
/// order (through the same window as throughput).
fn map_procspawn(cfg: &Config) -> Option<Sample> {
    let n = cfg.map_items_procspawn;
    let pool = procspawn_pool()?;
    let start = Instant::now();
    let chunks = (0..n)
        .step_by(CHUNKSIZE)
        .map(|lo| (lo..n.min(lo + CHUNKSIZE as u64)).collect::<Vec<u64>>());
    let total: u64 = procspawn_windowed(&pool, chunks, square_chunk, |squares| {
        squares.iter().sum::<u64>()
    })
    .into_iter()
    .sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_square_sum(n));
    pool.shutdown();
    Some(Sample::Elapsed(elapsed))
}

fn map_python(cfg: &Config, executor: &str) -> Option<Sample> {
    let out = python(
        executor,
        &[
            "map",
            &cfg.map_items_python.to_string(),
            &CHUNKSIZE.to_string(),
        ],
    )?;
    json_number(&out, "seconds").map(|s| Sample::Elapsed(Duration::from_secs_f64(s)))
}

// ---------------------------------------------------------------------------
// (d) 64 MiB echo
// ---------------------------------------------------------------------------

/// One repeat = one timed round trip, after one untimed round trip of the
/// same size on the same (fresh) pool.
fn echo_fanout(cfg: &Config) -> Option<Sample> {
    let payload = echo_payload(cfg.echo_bytes);
    let pool = fanout_pool();
    let back = pool
        .submit(echo, (payload.clone(),))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(back.len(), payload.len());
    drop(back);
    let sent = payload.clone();
    let start = Instant::now();
    let back = pool.submit(echo, (sent,)).unwrap().result().unwrap();
    let elapsed = start.elapsed();
    assert!(back == payload);
    Some(Sample::Elapsed(elapsed))
}

fn echo_procspawn(cfg: &Config) -> Option<Sample> {
    let payload = echo_payload(cfg.echo_bytes);
    let pool = procspawn_pool()?;
    let back = pool.spawn(payload.clone(), echo).join().unwrap();
    assert_eq!(back.len(), payload.len());
    drop(back);
    let sent = payload.clone();
    let start = Instant::now();
    let back = pool.spawn(sent, echo).join().unwrap();
    let elapsed = start.elapsed();
    assert!(back == payload);
    pool.shutdown();
    Some(Sample::Elapsed(elapsed))
}

/// The same bytes through `cat` over two pipes (this process → `cat` →
/// this process), the floor a pipe-based design can reach: a writer thread
/// feeds `cat`'s stdin while this thread reads its stdout into a fresh
/// `Vec` of the full size. One repeat = one timed pass after one untimed.
fn echo_cat(cfg: &Config) -> Option<Sample> {
    use std::io::{Read, Write};
    let payload = echo_payload(cfg.echo_bytes);
    let once = |payload: &Vec<u8>| -> Option<(Duration, Vec<u8>)> {
        let mut child = Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take()?;
        let mut stdout = child.stdout.take()?;
        let sent = payload.clone();
        let start = Instant::now();
        let writer = std::thread::spawn(move || stdin.write_all(&sent).is_ok());
        let mut back = Vec::with_capacity(payload.len());
        stdout.read_to_end(&mut back).ok()?;
        let elapsed = start.elapsed();
        let wrote = writer.join().unwrap_or(false);
        let _ = child.wait();
        wrote.then_some((elapsed, back))
    };
    once(&payload)?;
    let (elapsed, back) = once(&payload)?;
    assert!(back == payload);
    Some(Sample::Elapsed(elapsed))
}

/// One repeat = the median of the script's timed rounds (one process start each).
fn echo_python(cfg: &Config, executor: &str) -> Option<Sample> {
    let out = python(
        executor,
        &[
            "echo",
            &(cfg.echo_bytes >> 10).to_string(),
            &cfg.echo_rounds_python.to_string(),
        ],
    )?;
    let mut seconds: Vec<f64> = json_array::<f64>(&out, "seconds")?;
    median(&mut seconds).map(|s| Sample::Elapsed(Duration::from_secs_f64(s)))
}

// ---------------------------------------------------------------------------
// Python
// ---------------------------------------------------------------------------

/// Runs benches/py/process_pool.py with `executor` and `args`; its one JSON
/// line, or `None` (with a note on stderr) when python3, the script or loky
/// is missing or fails.
fn python(executor: &str, args: &[&str]) -> Option<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/py/process_pool.py");
    let output = match Command::new("python3")
        .arg(&script)
        .arg(executor)
        .args(args)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("  python3 not runnable ({e}); skipping the Python peer");
            return None;
        }
    };
    if !output.status.success() {
        eprintln!(
            "  {} {executor} {args:?} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return None;
    }
    String::from_utf8(output.stdout)
        .ok()?
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(str::to_owned)
}

fn command_version(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!text.is_empty()).then_some(text)
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
}

fn fmt_gbps(bytes_per_s: f64) -> String {
    format!("{:.2} GB/s", bytes_per_s / 1e9)
}

const FANOUT: &str = "fanout ProcessPool";
const PROCSPAWN: &str = "procspawn Pool";
const PY_FORK: &str = "Python ProcessPoolExecutor (fork)";
const PY_FORKSERVER: &str = "Python ProcessPoolExecutor (forkserver)";
const LOKY: &str = "loky reusable executor";
const CAT: &str = "cat over two pipes";

/// The three Python peers for one workload; in a quick run only the fork
/// executor, and only for throughput (it checks that the script runs).
fn python_peers(
    cfg: &Config,
    workload: &str,
    size: fn(&Config) -> u64,
    runs: [fn(&Config) -> Option<Sample>; 3],
) -> Vec<Peer<Config>> {
    let names = [PY_FORK, PY_FORKSERVER, LOKY];
    names
        .into_iter()
        .zip(runs)
        .filter(|(name, _)| !cfg.args.quick || (workload == "throughput" && *name == PY_FORK))
        .map(|(name, run)| Peer { name, size, run })
        .collect()
}

fn main() {
    // Must come first: a procspawn child re-enters `main` and is captured here.
    // (fanout's workers never reach `main`: they are captured before it.)
    procspawn::init();

    let cfg = Config::from_env();
    if cfg!(debug_assertions) && !cfg.args.quick {
        eprintln!("warning: this is a debug build; numbers are meaningless (use `cargo bench`)");
    }
    let started = Instant::now();
    println!(
        "## Process pool ({} workers, medians of {} repeat{}{})\n",
        WORKERS,
        cfg.args.repeats,
        if cfg.args.repeats == 1 { "" } else { "s" },
        if cfg.args.quick {
            ", QUICK smoke run: sizes are tiny, numbers mean nothing"
        } else {
            ""
        }
    );
    let python_version =
        command_version("python3", &["--version"]).unwrap_or_else(|| "python3 not found".into());
    let loky_version = command_version("python3", &["-c", "import loky; print(loky.__version__)"])
        .map_or_else(|| "not installed".into(), |v| format!("loky {v}"));
    println!(
        "python: {python_version}, {loky_version}; load average at start: {}\n",
        load_average()
    );

    let mut throughput_peers: Vec<Peer<Config>> = vec![
        Peer {
            name: FANOUT,
            size: |c| c.throughput_tasks,
            run: throughput_fanout,
        },
        Peer {
            name: PROCSPAWN,
            size: |c| c.throughput_tasks_procspawn,
            run: throughput_procspawn,
        },
    ];
    throughput_peers.extend(python_peers(
        &cfg,
        "throughput",
        |c| c.throughput_tasks_python,
        [
            |c| throughput_python(c, "fork"),
            |c| throughput_python(c, "forkserver"),
            |c| throughput_python(c, "loky"),
        ],
    ));
    let throughput = measure(&cfg, "throughput", &throughput_peers, fmt_rate);

    let mut latency_peers: Vec<Peer<Config>> = vec![
        Peer {
            name: FANOUT,
            size: |c| c.latency_samples as u64,
            run: latency_fanout,
        },
        Peer {
            name: PROCSPAWN,
            size: |c| c.latency_samples_procspawn as u64,
            run: latency_procspawn,
        },
    ];
    latency_peers.extend(python_peers(
        &cfg,
        "latency",
        |c| c.latency_samples_python as u64,
        [
            |c| latency_python(c, "fork"),
            |c| latency_python(c, "forkserver"),
            |c| latency_python(c, "loky"),
        ],
    ));
    let latency = measure(&cfg, "latency", &latency_peers, fmt_rate);

    let mut map_peers: Vec<Peer<Config>> = vec![
        Peer {
            name: FANOUT,
            size: |c| c.map_items,
            run: map_fanout,
        },
        Peer {
            name: PROCSPAWN,
            size: |c| c.map_items_procspawn,
            run: map_procspawn,
        },
    ];
    map_peers.extend(python_peers(
        &cfg,
        "map",
        |c| c.map_items_python,
        [
            |c| map_python(c, "fork"),
            |c| map_python(c, "forkserver"),
            |c| map_python(c, "loky"),
        ],
    ));
    let map = measure(&cfg, "map", &map_peers, fmt_rate);

    let mut echo_peers: Vec<Peer<Config>> = vec![
        Peer {
            name: FANOUT,
            size: |c| c.echo_bytes as u64,
            run: echo_fanout,
        },
        Peer {
            name: PROCSPAWN,
            size: |c| c.echo_bytes as u64,
            run: echo_procspawn,
        },
        Peer {
            name: CAT,
            size: |c| c.echo_bytes as u64,
            run: echo_cat,
        },
    ];
    echo_peers.extend(python_peers(
        &cfg,
        "echo",
        |c| c.echo_bytes as u64,
        [
            |c| echo_python(c, "fork"),
            |c| echo_python(c, "forkserver"),
            |c| echo_python(c, "loky"),
        ],
    ));
    let echo = measure(&cfg, "echo", &echo_peers, fmt_gbps);

    let r_throughput = print_rate_table(
        "(a) Throughput: submit N trivial tasks, then collect all",
        "tasks",
        &throughput,
        fmt_rate,
        fmt_count,
    );
    if !latency.is_empty() {
        print_latency_table(&latency);
    }
    let r_map = print_rate_table(
        "(c) map(square, 0..N) with chunksize 100, consume all",
        "items",
        &map,
        fmt_rate,
        fmt_count,
    );
    let r_echo = print_rate_table(
        &format!(
            "(d) {} `Vec<u8>` echoed through a worker (one round trip)",
            fmt_bytes(cfg.echo_bytes as u64)
        ),
        "bytes",
        &echo,
        fmt_gbps,
        fmt_bytes,
    );

    println!("### Goals\n");
    if cfg.args.quick {
        println!(
            "(not evaluated: this is a smoke run; {:.1} s)",
            started.elapsed().as_secs_f64()
        );
        return;
    }
    goal_ratio(
        "(a) throughput vs Python ProcessPoolExecutor (fork)",
        &r_throughput,
        PY_FORK,
        20.0,
    );
    goal_ratio(
        "(a) throughput vs Python ProcessPoolExecutor (forkserver)",
        &r_throughput,
        PY_FORKSERVER,
        20.0,
    );
    goal_ratio("(a) throughput vs procspawn", &r_throughput, PROCSPAWN, 5.0);
    let p50 = fanout_row(&latency).and_then(|r| r.median);
    goal_value(
        "(b) fanout p50 round trip",
        p50,
        p50.map_or_else(String::new, |v| format!("{v:.1} µs")),
        |v| v <= 50.0,
        "≤ 50 µs",
    );
    goal_ratio(
        "(c) map vs Python ProcessPoolExecutor (fork)",
        &r_map,
        PY_FORK,
        10.0,
    );
    goal_ratio(
        "(c) map vs Python ProcessPoolExecutor (forkserver)",
        &r_map,
        PY_FORKSERVER,
        10.0,
    );
    let gbps = fanout_row(&echo).and_then(|r| r.median).map(|b| b / 1e9);
    goal_value(
        "(d) fanout echo (GB/s = bytes ÷ round-trip time)",
        gbps,
        gbps.map_or_else(String::new, |v| format!("{v:.2} GB/s")),
        |v| v >= 1.0,
        "≥ 1 GB/s",
    );
    goal_ratio(
        "(d) echo vs the same bytes through `cat`",
        &r_echo,
        CAT,
        2.0,
    );
    println!(
        "\n(total bench time {:.1} s; load average at end: {})",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

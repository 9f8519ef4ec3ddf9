//! Thread-pool benchmarks: fanout's `ThreadPool` against its peers, all with 2 workers.
//!
//! ```text
//! cargo bench --bench thread_pool                      # everything, markdown tables on stdout
//! cargo bench --bench thread_pool -- latency           # only rows whose "workload/peer" contains "latency"
//! cargo bench --bench thread_pool -- --repeats 9 map   # more repeats
//! FANOUT_BENCH_QUICK=1 cargo bench --bench thread_pool # smoke run (also: `--test`, or `cargo test --benches`)
//! ```
//!
//! Workloads (see BENCHMARKS.md for the numbers and how to read them):
//!
//! * **throughput** — submit N trivial tasks (`add(i, 1)`), then collect every result.
//! * **latency** — one submit → result round trip on an idle pool, repeated; p50 and p99.
//! * **map** — `map(square, 0..N)` and consume every result (and fanout's
//!   `map_with(chunksize 100)`: one job per 100 items).
//!
//! Every peer runs in the same process run, interleaved (each repeat rotates the
//! order), and every figure is the median over the repeats; ratios compare
//! peers from the same run. Pools are built and warmed up before the clock starts.
//!
//! Cargo runs this binary with `--bench` under `cargo bench` and with no
//! argument under `cargo test --benches`; without `--bench`, a run started by
//! cargo is a smoke test (tiny sizes, one repeat, well under 2 s).

use fanout::{Executor, ThreadPool};
use rayon::prelude::*;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "common/harness.rs"]
mod harness;
#[path = "common/minimal_pool.rs"]
mod minimal_pool;
#[path = "common/one_call.rs"]
mod one_call;
#[path = "common/spsc_pool.rs"]
mod spsc_pool;
use harness::*;

const WORKERS: usize = 2;

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn square(x: u64) -> u64 {
    x * x
}

/// Sum of `add(i, 1)` for `i` in `0..n`.
fn expected_add_sum(n: u64) -> u64 {
    n * (n - 1) / 2 + n
}

/// Sum of `square(i)` for `i` in `0..n`.
fn expected_square_sum(n: u64) -> u64 {
    (n - 1) * n * (2 * n - 1) / 6
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

struct Config {
    /// The command line (repeats, filters, a quick smoke run).
    args: Args,
    throughput_tasks: u64,
    /// For the slow peers (a thread per task, Python).
    throughput_tasks_slow: u64,
    latency_samples: usize,
    latency_warmup: usize,
    latency_samples_slow: usize,
    map_items: u64,
    map_items_python: u64,
}

impl Config {
    fn from_env() -> Config {
        let args = Args::from_env(7);
        if args.quick {
            Config {
                args,
                throughput_tasks: 1_000,
                throughput_tasks_slow: 100,
                latency_samples: 100,
                latency_warmup: 10,
                latency_samples_slow: 20,
                map_items: 2_000,
                map_items_python: 200,
            }
        } else {
            Config {
                args,
                throughput_tasks: 200_000,
                throughput_tasks_slow: 20_000,
                latency_samples: 20_000,
                latency_warmup: 2_000,
                latency_samples_slow: 2_000,
                map_items: 1_000_000,
                map_items_python: 50_000,
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

// ---------------------------------------------------------------------------
// Peers: pools
// ---------------------------------------------------------------------------

fn fanout_pool() -> ThreadPool {
    let pool = ThreadPool::new(WORKERS).expect("fanout pool");
    for f in (0..100)
        .map(|i| pool.submit(add, (i, 1)).unwrap())
        .collect::<Vec<_>>()
    {
        f.result().unwrap();
    }
    pool
}

fn rayon_pool() -> rayon::ThreadPool {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .expect("rayon pool");
    for rx in (0..100).map(|i| rayon_submit(&pool, i)).collect::<Vec<_>>() {
        rx.recv().unwrap();
    }
    pool
}

fn rayon_submit(pool: &rayon::ThreadPool, i: u64) -> oneshot::Receiver<u64> {
    let (tx, rx) = oneshot::channel();
    pool.spawn(move || {
        let _ = tx.send(add(i, 1));
    });
    rx
}

fn threadpool_pool() -> threadpool::ThreadPool {
    let pool = threadpool::ThreadPool::new(WORKERS);
    for rx in (0..100)
        .map(|i| threadpool_submit(&pool, i))
        .collect::<Vec<_>>()
    {
        rx.recv().unwrap();
    }
    pool
}

fn threadpool_submit(pool: &threadpool::ThreadPool, i: u64) -> oneshot::Receiver<u64> {
    let (tx, rx) = oneshot::channel();
    pool.execute(move || {
        let _ = tx.send(add(i, 1));
    });
    rx
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .max_blocking_threads(WORKERS)
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let hs: Vec<_> = (0..100u64)
            .map(|i| tokio::task::spawn_blocking(move || add(i, 1)))
            .collect();
        for h in hs {
            h.await.unwrap();
        }
    });
    rt
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

/// The ceiling (see `common/minimal_pool.rs`): not a library, the least a
/// pool with waitable results can do.
fn throughput_minimal(cfg: &Config) -> Option<Sample> {
    let n = cfg.throughput_tasks;
    let pool = minimal_pool::MinimalPool::new(WORKERS);
    for h in (0..100)
        .map(|i| pool.submit(move || add(i, 1)))
        .collect::<Vec<_>>()
    {
        h.result(&pool);
    }
    let start = Instant::now();
    let hs: Vec<_> = (0..n).map(|i| pool.submit(move || add(i, 1))).collect();
    let total: u64 = hs.into_iter().map(|h| h.result(&pool)).sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_add_sum(n));
    Some(Sample::Elapsed(elapsed))
}

/// The second ceiling (see `common/spsc_pool.rs`): rings of one producer
/// and one consumer, calls dealt to workers in turn.
fn throughput_spsc(cfg: &Config) -> Option<Sample> {
    let n = cfg.throughput_tasks;
    let pool = spsc_pool::SpscPool::new(WORKERS);
    for h in (0..100)
        .map(|i| pool.submit(move || add(i, 1)))
        .collect::<Vec<_>>()
    {
        h.result();
    }
    let start = Instant::now();
    let hs: Vec<_> = (0..n).map(|i| pool.submit(move || add(i, 1))).collect();
    let total: u64 = hs.into_iter().map(|h| h.result()).sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_add_sum(n));
    Some(Sample::Elapsed(elapsed))
}

fn throughput_rayon(cfg: &Config) -> Option<Sample> {
    let n = cfg.throughput_tasks;
    let pool = rayon_pool();
    let start = Instant::now();
    let rxs: Vec<_> = (0..n).map(|i| rayon_submit(&pool, i)).collect();
    let total: u64 = rxs.into_iter().map(|rx| rx.recv().unwrap()).sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_add_sum(n));
    Some(Sample::Elapsed(elapsed))
}

fn throughput_threadpool(cfg: &Config) -> Option<Sample> {
    let n = cfg.throughput_tasks;
    let pool = threadpool_pool();
    let start = Instant::now();
    let rxs: Vec<_> = (0..n).map(|i| threadpool_submit(&pool, i)).collect();
    let total: u64 = rxs.into_iter().map(|rx| rx.recv().unwrap()).sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_add_sum(n));
    pool.join();
    Some(Sample::Elapsed(elapsed))
}

fn throughput_threadpool_shared(cfg: &Config) -> Option<Sample> {
    let n = cfg.throughput_tasks;
    let pool = threadpool_pool();
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        pool.execute(move || {
            let _ = tx.send(add(i, 1));
        });
    }
    drop(tx);
    let total: u64 = rx.iter().take(n as usize).sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_add_sum(n));
    pool.join();
    Some(Sample::Elapsed(elapsed))
}

fn throughput_tokio(cfg: &Config) -> Option<Sample> {
    let n = cfg.throughput_tasks;
    let rt = tokio_runtime();
    let start = Instant::now();
    let total = rt.block_on(async {
        let hs: Vec<_> = (0..n)
            .map(|i| tokio::task::spawn_blocking(move || add(i, 1)))
            .collect();
        let mut total = 0;
        for h in hs {
            total += h.await.unwrap();
        }
        total
    });
    let elapsed = start.elapsed();
    assert_eq!(total, expected_add_sum(n));
    Some(Sample::Elapsed(elapsed))
}

fn throughput_std_thread(cfg: &Config) -> Option<Sample> {
    let n = cfg.throughput_tasks_slow;
    let start = Instant::now();
    let hs: Vec<_> = (0..n)
        .map(|i| std::thread::spawn(move || add(i, 1)))
        .collect();
    let total: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_add_sum(n));
    Some(Sample::Elapsed(elapsed))
}

fn throughput_python(cfg: &Config) -> Option<Sample> {
    let out = python(cfg, &["throughput", &cfg.throughput_tasks_slow.to_string()])?;
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

fn latency_rayon(cfg: &Config) -> Option<Sample> {
    let pool = rayon_pool();
    Some(Sample::RoundTrips(round_trips(
        cfg.latency_warmup,
        cfg.latency_samples,
        |i| rayon_submit(&pool, i).recv().unwrap(),
    )))
}

fn latency_threadpool(cfg: &Config) -> Option<Sample> {
    let pool = threadpool_pool();
    let ns = round_trips(cfg.latency_warmup, cfg.latency_samples, |i| {
        threadpool_submit(&pool, i).recv().unwrap()
    });
    pool.join();
    Some(Sample::RoundTrips(ns))
}

/// Measured from inside the runtime: one `block_on` on the main thread runs
/// the whole loop, and each sample is `spawn_blocking(..).await`.
fn latency_tokio(cfg: &Config) -> Option<Sample> {
    let rt = tokio_runtime();
    let (warmup, samples) = (cfg.latency_warmup, cfg.latency_samples);
    let ns = rt.block_on(async move {
        for i in 0..warmup as u64 {
            black_box(
                tokio::task::spawn_blocking(move || add(i, 1))
                    .await
                    .unwrap(),
            );
        }
        let mut ns = Vec::with_capacity(samples);
        for i in 0..samples as u64 {
            let start = Instant::now();
            black_box(
                tokio::task::spawn_blocking(move || add(i, 1))
                    .await
                    .unwrap(),
            );
            ns.push(start.elapsed().as_nanos() as u64);
        }
        ns
    });
    let mut ns = ns;
    ns.sort_unstable();
    Some(Sample::RoundTrips(ns))
}

/// Like [`latency_tokio`], but `block_on` per round trip from the main thread
/// (what a synchronous caller of tokio would write).
fn latency_tokio_block_on(cfg: &Config) -> Option<Sample> {
    let rt = tokio_runtime();
    Some(Sample::RoundTrips(round_trips(
        cfg.latency_warmup,
        cfg.latency_samples,
        |i| rt.block_on(rt.spawn_blocking(move || add(i, 1))).unwrap(),
    )))
}

fn latency_std_thread(cfg: &Config) -> Option<Sample> {
    Some(Sample::RoundTrips(round_trips(
        cfg.latency_warmup / 10,
        cfg.latency_samples_slow,
        |i| std::thread::spawn(move || add(i, 1)).join().unwrap(),
    )))
}

fn latency_python(cfg: &Config) -> Option<Sample> {
    let out = python(
        cfg,
        &[
            "latency",
            &cfg.latency_samples.to_string(),
            &cfg.latency_warmup.to_string(),
        ],
    )?;
    json_array::<u64>(&out, "samples_ns").map(|mut ns| {
        ns.sort_unstable();
        Sample::RoundTrips(ns)
    })
}

// ---------------------------------------------------------------------------
// (c) map
// ---------------------------------------------------------------------------

fn map_fanout(cfg: &Config) -> Option<Sample> {
    let n = cfg.map_items;
    let pool = fanout_pool();
    let start = Instant::now();
    let total: u64 = pool.map(square, 0..n).unwrap().map(|r| r.unwrap()).sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_square_sum(n));
    Some(Sample::Elapsed(elapsed))
}

/// `map_with(chunksize 100)`: one job and one completion per 100 items.
fn map_fanout_chunked(cfg: &Config) -> Option<Sample> {
    let n = cfg.map_items;
    let pool = fanout_pool();
    let start = Instant::now();
    let total: u64 = pool
        .map_with(square, 0..n, fanout::MapOptions::default().chunksize(100))
        .unwrap()
        .map(|r| r.unwrap())
        .sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_square_sum(n));
    Some(Sample::Elapsed(elapsed))
}

fn map_rayon(cfg: &Config) -> Option<Sample> {
    let n = cfg.map_items;
    let pool = rayon_pool();
    let start = Instant::now();
    let out: Vec<u64> = pool.install(|| (0..n).into_par_iter().map(square).collect());
    let total: u64 = out.iter().sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_square_sum(n));
    Some(Sample::Elapsed(elapsed))
}

/// The per-item analog of fanout's map: one rayon spawn and one oneshot per item.
fn map_rayon_spawn(cfg: &Config) -> Option<Sample> {
    let n = cfg.map_items;
    let pool = rayon_pool();
    let start = Instant::now();
    let rxs: Vec<_> = (0..n)
        .map(|i| {
            let (tx, rx) = oneshot::channel();
            pool.spawn(move || {
                let _ = tx.send(square(i));
            });
            rx
        })
        .collect();
    let total: u64 = rxs.into_iter().map(|rx| rx.recv().unwrap()).sum();
    let elapsed = start.elapsed();
    assert_eq!(total, expected_square_sum(n));
    Some(Sample::Elapsed(elapsed))
}

fn map_python(cfg: &Config) -> Option<Sample> {
    let out = python(cfg, &["map", &cfg.map_items_python.to_string()])?;
    json_number(&out, "seconds").map(|s| Sample::Elapsed(Duration::from_secs_f64(s)))
}

// ---------------------------------------------------------------------------
// Python
// ---------------------------------------------------------------------------

/// The Python peer's JSON line for `args` (`[workload, sizes...]`), or `None`
/// (with a note on stderr) when python3 is missing or the script fails.
///
/// In a quick run, one `smoke` invocation runs all three workloads (a Python
/// start costs more than the whole smoke test otherwise) and each peer picks
/// its line from it.
fn python(cfg: &Config, args: &[&str]) -> Option<String> {
    if !cfg.args.quick {
        return run_python(args);
    }
    static SMOKE: OnceLock<Option<String>> = OnceLock::new();
    let all = SMOKE.get_or_init(|| {
        run_python_lines(&[
            "smoke",
            &cfg.throughput_tasks_slow.to_string(),
            &cfg.latency_samples.to_string(),
            &cfg.latency_warmup.to_string(),
            &cfg.map_items_python.to_string(),
        ])
    });
    let tag = format!("\"workload\": \"{}\"", args[0]);
    all.as_deref()?
        .lines()
        .find(|l| l.contains(&tag))
        .map(str::to_owned)
}

/// Runs the script once; its last JSON line.
fn run_python(args: &[&str]) -> Option<String> {
    run_python_lines(args)?
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(str::to_owned)
}

/// Runs the script once; all of its stdout.
fn run_python_lines(args: &[&str]) -> Option<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/py/thread_pool.py");
    let output = match Command::new(python_executable())
        .arg(&script)
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
            "  {} {args:?} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

/// The interpreter behind `python3`, resolved once: `python3` may be a shim
/// (pyenv) that costs a shell script per start.
fn python_executable() -> &'static str {
    static EXE: OnceLock<String> = OnceLock::new();
    EXE.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "python3".into())
    })
}

fn python_version() -> Option<String> {
    let out = Command::new(python_executable())
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!text.is_empty()).then_some(text)
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

const FANOUT: &str = "fanout ThreadPool";
const RAYON: &str = "rayon spawn + oneshot";
const THREADPOOL: &str = "threadpool + oneshot";
const THREADPOOL_SHARED: &str = "threadpool + shared mpsc";
const MINIMAL: &str = "minimal pool (a ceiling, not a library)";
const SPSC: &str = "spsc rings (a second ceiling)";
const TOKIO: &str = "tokio spawn_blocking (in runtime)";
const TOKIO_BLOCK_ON: &str = "tokio spawn_blocking (block_on each)";
const STD_THREAD: &str = "std::thread::spawn + join";
const PYTHON: &str = "Python ThreadPoolExecutor";

fn main() {
    let cfg = Config::from_env();
    if cfg!(debug_assertions) && !cfg.args.quick {
        eprintln!("warning: this is a debug build; numbers are meaningless (use `cargo bench`)");
    }
    let started = Instant::now();
    println!(
        "## Thread pool ({} workers, medians of {} repeat{}{})\n",
        WORKERS,
        cfg.args.repeats,
        if cfg.args.repeats == 1 { "" } else { "s" },
        if cfg.args.quick {
            ", QUICK smoke run: sizes are tiny, numbers mean nothing"
        } else {
            ""
        }
    );
    println!(
        "python: {}; 1-min load average at start: {}\n",
        python_version().unwrap_or_else(|| "not found".into()),
        load_average()
    );

    let throughput = measure(
        &cfg,
        "throughput",
        &[
            Peer {
                name: FANOUT,
                size: |c| c.throughput_tasks,
                run: throughput_fanout,
            },
            Peer {
                name: RAYON,
                size: |c| c.throughput_tasks,
                run: throughput_rayon,
            },
            Peer {
                name: THREADPOOL,
                size: |c| c.throughput_tasks,
                run: throughput_threadpool,
            },
            Peer {
                name: THREADPOOL_SHARED,
                size: |c| c.throughput_tasks,
                run: throughput_threadpool_shared,
            },
            Peer {
                name: MINIMAL,
                size: |c| c.throughput_tasks,
                run: throughput_minimal,
            },
            Peer {
                name: SPSC,
                size: |c| c.throughput_tasks,
                run: throughput_spsc,
            },
            Peer {
                name: TOKIO,
                size: |c| c.throughput_tasks,
                run: throughput_tokio,
            },
            Peer {
                name: STD_THREAD,
                size: |c| c.throughput_tasks_slow,
                run: throughput_std_thread,
            },
            Peer {
                name: PYTHON,
                size: |c| c.throughput_tasks_slow,
                run: throughput_python,
            },
        ],
        fmt_rate,
    );
    let latency = measure(
        &cfg,
        "latency",
        &[
            Peer {
                name: FANOUT,
                size: |c| c.latency_samples as u64,
                run: latency_fanout,
            },
            Peer {
                name: RAYON,
                size: |c| c.latency_samples as u64,
                run: latency_rayon,
            },
            Peer {
                name: THREADPOOL,
                size: |c| c.latency_samples as u64,
                run: latency_threadpool,
            },
            Peer {
                name: TOKIO,
                size: |c| c.latency_samples as u64,
                run: latency_tokio,
            },
            Peer {
                name: TOKIO_BLOCK_ON,
                size: |c| c.latency_samples as u64,
                run: latency_tokio_block_on,
            },
            Peer {
                name: STD_THREAD,
                size: |c| c.latency_samples_slow as u64,
                run: latency_std_thread,
            },
            Peer {
                name: PYTHON,
                size: |c| c.latency_samples as u64,
                run: latency_python,
            },
        ],
        fmt_rate,
    );
    let map = measure(
        &cfg,
        "map",
        &[
            Peer {
                name: FANOUT,
                size: |c| c.map_items,
                run: map_fanout,
            },
            Peer {
                name: "fanout map_with(chunksize 100)",
                size: |c| c.map_items,
                run: map_fanout_chunked,
            },
            Peer {
                name: "rayon par_iter().map().collect()",
                size: |c| c.map_items,
                run: map_rayon,
            },
            Peer {
                name: "rayon spawn + oneshot per item",
                size: |c| c.map_items,
                run: map_rayon_spawn,
            },
            Peer {
                name: PYTHON,
                size: |c| c.map_items_python,
                run: map_python,
            },
        ],
        fmt_rate,
    );

    let mut throughput_ratios = Vec::new();
    let mut latency_ratios = Vec::new();
    if !throughput.is_empty() {
        throughput_ratios = print_rate_table(
            "(a) Throughput: submit N trivial tasks, then collect every result",
            "tasks",
            &throughput,
            fmt_rate,
            fmt_count,
        );
    }
    if !latency.is_empty() {
        latency_ratios = print_latency_table(&latency);
    }
    if !map.is_empty() {
        print_rate_table(
            "(c) map(square, 0..N), every result consumed",
            "items",
            &map,
            fmt_rate,
            fmt_count,
        );
    }

    println!("### Goals\n");
    // The speed issue: keep ≥ 1.5× the best of rayon, threadpool and tokio,
    // and ≥ 3× threadpool.
    for peer in [RAYON, THREADPOOL, TOKIO] {
        goal_ratio(
            &format!("(a) fanout ÷ {peer} throughput"),
            &throughput_ratios,
            peer,
            1.5,
        );
    }
    goal_ratio(
        "(a) fanout ÷ threadpool throughput",
        &throughput_ratios,
        THREADPOOL,
        3.0,
    );
    goal_ratio(
        "(a) fanout ÷ Python throughput",
        &throughput_ratios,
        PYTHON,
        30.0,
    );
    goal_ratio("(b) tokio p50 ÷ fanout p50", &latency_ratios, TOKIO, 1.0);
    if let (Some(vs_threadpool), Some(vs_minimal)) = (
        ratio_of(&throughput_ratios, THREADPOOL),
        ratio_of(&throughput_ratios, MINIMAL),
    ) {
        // fanout ÷ threadpool over fanout ÷ minimal: minimal ÷ threadpool.
        let ceiling = vs_threadpool / vs_minimal;
        println!(
            "- (a) the ceiling: {MINIMAL} ÷ threadpool {ceiling:.2}×; fanout reaches {:.0} % \
             of it; the 3× goal is {:.2}× the ceiling",
            vs_minimal * 100.0,
            3.0 / ceiling
        );
    }
    println!("\n1-min load average at end: {}\n", load_average());
    eprintln!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
}

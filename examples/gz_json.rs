//! "15,000 gzipped JSON files by next week": reading on threads, parsing on
//! processes, progress as futures complete.
//!
//! The story (PUG Berlin talk on `concurrent.futures`): three months of
//! tweets in 15,000+ gzipped JSON files on cloud storage, to be polished and
//! loaded by next week, and a sequential script that would take ~15 days.
//! The recipe: threads for the I/O, processes for the CPU work, both behind
//! the same executor interface.
//!
//! Here, at laptop scale:
//!
//! 1. generate 2,000 gzipped JSON-lines files of 50 synthetic tweets each
//!    (id, user, text, hashtags, retweets, timestamp) in a temporary
//!    directory (removed at the end);
//! 2. **fetch** each file on a `ThreadPool(8)`: read and gunzip it. The files
//!    sit in the page cache, so to stand in for cloud storage each fetch also
//!    waits a simulated 2 ms round trip (`FETCH_LATENCY`), which is what makes
//!    threads pay off for I/O;
//! 3. **parse and aggregate** each file on a `ProcessPool(2)`: the
//!    decompressed bytes travel as a `Vec<u8>`, `serde_json` parses them, and
//!    the worker returns per-file aggregates (tweets by hashtag, by user, the
//!    most retweeted);
//! 4. merge the aggregates, print progress (files done / total) as the parse
//!    futures complete, and compare with the same work done sequentially.
//!
//! The two stages form a pipeline: each file's parse is submitted the moment
//! its fetch completes, so decompressed data never piles up.
//!
//! Run it with `cargo run --release --example gz_json` (under 10 s).

use fanout::{as_completed, wait, Executor, Future, ProcessPool, ReturnWhen, ThreadPool};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FILES: usize = 2_000;
const TWEETS_PER_FILE: usize = 50;
/// Stands in for one object-storage round trip per file.
const FETCH_LATENCY: Duration = Duration::from_millis(2);
/// How many of the most retweeted tweets each file (and the total) keeps.
const TOP: usize = 3;

#[derive(Debug, Serialize, Deserialize)]
struct Tweet {
    id: u64,
    user: String,
    text: String,
    hashtags: Vec<String>,
    retweets: u32,
    timestamp: u64,
}

/// What one file boils down to; small next to the file itself.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Summary {
    files: u64,
    tweets: u64,
    json_bytes: u64,
    by_hashtag: BTreeMap<String, u64>,
    by_user: BTreeMap<String, u64>,
    /// (retweets, id, user), most retweeted first.
    top_retweeted: Vec<(u32, u64, String)>,
}

impl Summary {
    fn merge(&mut self, other: Summary) {
        self.files += other.files;
        self.tweets += other.tweets;
        self.json_bytes += other.json_bytes;
        for (tag, n) in other.by_hashtag {
            *self.by_hashtag.entry(tag).or_default() += n;
        }
        for (user, n) in other.by_user {
            *self.by_user.entry(user).or_default() += n;
        }
        self.top_retweeted.extend(other.top_retweeted);
        self.top_retweeted.sort_unstable_by(|a, b| b.cmp(a));
        self.top_retweeted.truncate(TOP);
    }
}

// ---- the two tasks ----------------------------------------------------------

/// Stage 1, on threads: fetch one file and gunzip it.
fn fetch(path: String) -> Vec<u8> {
    std::thread::sleep(FETCH_LATENCY);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let mut json = Vec::new();
    GzDecoder::new(file)
        .read_to_end(&mut json)
        .unwrap_or_else(|e| panic!("gunzip {path}: {e}"));
    json
}

/// Stage 2, on processes: parse one file's JSON lines and aggregate them.
fn summarize(json: Vec<u8>) -> Summary {
    let mut s = Summary {
        files: 1,
        json_bytes: json.len() as u64,
        ..Summary::default()
    };
    for line in json.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let tweet: Tweet = serde_json::from_slice(line).expect("a well-formed tweet");
        s.tweets += 1;
        for tag in tweet.hashtags {
            *s.by_hashtag.entry(tag).or_default() += 1;
        }
        s.top_retweeted
            .push((tweet.retweets, tweet.id, tweet.user.clone()));
        *s.by_user.entry(tweet.user).or_default() += 1;
    }
    s.top_retweeted.sort_unstable_by(|a, b| b.cmp(a));
    s.top_retweeted.truncate(TOP);
    s
}

// ---- synthetic data ---------------------------------------------------------

/// xorshift64*: deterministic data without a `rand` dependency.
struct XorShift(u64);

impl XorShift {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// An index in `0..n`, small ones far more likely (a rough Zipf).
    fn skewed(&mut self, n: usize) -> usize {
        ((n as f64) * self.uniform().powi(2)) as usize
    }
}

const HASHTAGS: &[&str] = &[
    "rustlang",
    "python",
    "dask",
    "concurrency",
    "bigdata",
    "berlin",
    "pydata",
    "futures",
    "async",
    "threads",
    "multiprocessing",
    "gil",
    "cloud",
    "datascience",
    "ml",
    "opensource",
    "linux",
    "devops",
    "jupyter",
    "pandas",
    "numpy",
    "spark",
    "kafka",
    "redis",
];
const WORDS: &[&str] = &[
    "just", "shipped", "a", "the", "new", "release", "of", "parallel", "code", "today", "why",
    "is", "my", "job", "so", "slow", "finally", "works", "on", "cluster", "thread", "pool",
    "process", "queue", "deadline", "next", "week", "files", "tweets", "gzip", "json",
];

fn write_file(dir: &Path, index: usize) -> std::io::Result<PathBuf> {
    let mut rng = XorShift(0x5EED_0000 + index as u64 * 7919);
    let path = dir.join(format!("tweets-{index:05}.jsonl.gz"));
    let file = std::fs::File::create(&path)?;
    let mut json = Vec::with_capacity(TWEETS_PER_FILE * 256);
    for k in 0..TWEETS_PER_FILE {
        let hashtags: Vec<String> = (0..rng.next_u64() % 4)
            .map(|_| HASHTAGS[rng.skewed(HASHTAGS.len())].to_string())
            .collect();
        let mut text: Vec<&str> = (0..6 + rng.next_u64() % 12)
            .map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize])
            .collect();
        let tags: Vec<String> = hashtags.iter().map(|t| format!("#{t}")).collect();
        text.extend(tags.iter().map(String::as_str));
        let tweet = Tweet {
            id: (index * TWEETS_PER_FILE + k) as u64,
            user: format!("user{:04}", rng.skewed(2_000)),
            text: text.join(" "),
            hashtags,
            retweets: (rng.uniform() * 10.0).exp() as u32 - 1,
            // Three months from 2017-07-01, one file per ~65 minutes.
            timestamp: 1_498_867_200 + (index * 3_900 + k * 78) as u64,
        };
        serde_json::to_writer(&mut json, &tweet)?;
        json.push(b'\n');
    }
    let mut out = GzEncoder::new(file, Compression::fast());
    out.write_all(&json)?;
    out.finish()?;
    Ok(path)
}

/// Prints "files done / total" each time another tenth completes.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
}

impl Progress {
    fn tick(&mut self) {
        self.done += 1;
        if self.done * 10 / self.total != (self.done - 1) * 10 / self.total {
            println!(
                "  {:>5} / {} files parsed ({:>3}%) after {:.2?}",
                self.done,
                self.total,
                self.done * 100 / self.total,
                self.started.elapsed()
            );
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // ---- 1. the data ---------------------------------------------------------
    let dir = tempfile::Builder::new()
        .prefix("fanout-gz-json-")
        .tempdir()?;
    let t = Instant::now();
    let io = ThreadPool::new(8)?;
    let root = dir.path().to_path_buf();
    let writes: Vec<Future<std::io::Result<PathBuf>>> = (0..FILES)
        .map(|i| {
            let root = root.clone();
            io.spawn(move || write_file(&root, i))
        })
        .collect::<fanout::Result<_>>()?;
    let mut paths = Vec::with_capacity(FILES);
    for f in writes {
        paths.push(f.result()??.to_string_lossy().into_owned());
    }
    let gz_bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "generated {FILES} files x {TWEETS_PER_FILE} tweets ({:.1} MB gzipped) in {} in {:.2?}",
        gz_bytes as f64 / 1e6,
        dir.path().display(),
        t.elapsed()
    );

    // ---- 2. sequential: one file after another ----------------------------
    let t = Instant::now();
    let mut sequential = Summary::default();
    let (mut fetching, mut parsing) = (Duration::ZERO, Duration::ZERO);
    for p in &paths {
        let t = Instant::now();
        let json = fetch(p.clone());
        fetching += t.elapsed();
        let t = Instant::now();
        sequential.merge(summarize(json));
        parsing += t.elapsed();
    }
    let seq_time = t.elapsed();
    println!(
        "\nsequential: {FILES} files in {seq_time:.2?} ({:.0} files/s): fetching {fetching:.2?} \
         (of which {:.2?} simulated latency), parsing {parsing:.2?}",
        FILES as f64 / seq_time.as_secs_f64(),
        FETCH_LATENCY * FILES as u32,
    );

    // ---- 3. parallel: fetch on threads, parse on processes -----------------
    let cpu = ProcessPool::new(2)?;
    // Start-up is not the part we are measuring: let both workers come up.
    cpu.map(summarize, vec![Vec::new(); 2])?.for_each(drop);

    println!("\nparallel: fetch on ThreadPool(8), parse on ProcessPool(2)");
    let t = Instant::now();
    let mut progress = Progress {
        total: FILES,
        done: 0,
        started: t,
    };
    let fetches: Vec<Future<Vec<u8>>> = paths
        .iter()
        .map(|p| io.submit(fetch, (p.clone(),)))
        .collect::<fanout::Result<_>>()?;
    let mut total = Summary::default();
    let mut parsing: Vec<Future<Summary>> = Vec::new();
    for fetched in as_completed(fetches, None) {
        // Stage 1 → stage 2: hand each file to a worker process as soon as
        // it has been fetched.
        let json = fetched?.result()?;
        parsing.push(cpu.submit(summarize, (json,))?);
        // Collect the parses that finished meanwhile, without blocking.
        let done = wait(parsing, Some(Duration::ZERO), ReturnWhen::AllCompleted);
        parsing = done.not_done;
        for f in done.done {
            total.merge(f.result()?);
            progress.tick();
        }
    }
    for f in as_completed(parsing, None) {
        total.merge(f?.result()?);
        progress.tick();
    }
    let par_time = t.elapsed();
    println!(
        "parallel:   {FILES} files in {par_time:.2?} ({:.0} files/s), {:.1}x faster",
        FILES as f64 / par_time.as_secs_f64(),
        seq_time.as_secs_f64() / par_time.as_secs_f64()
    );
    cpu.shutdown(true, false);
    io.shutdown(true, false);
    assert_eq!(total, sequential, "the pipeline and the loop disagree");

    // ---- 4. what came out --------------------------------------------------
    println!(
        "\n{} tweets, {:.1} MB of JSON; same aggregates both ways",
        total.tweets,
        total.json_bytes as f64 / 1e6
    );
    let mut tags: Vec<_> = total.by_hashtag.iter().collect();
    tags.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let tags: Vec<String> = tags
        .iter()
        .take(5)
        .map(|(t, n)| format!("#{t} {n}"))
        .collect();
    println!("top hashtags: {}", tags.join(", "));
    let mut users: Vec<_> = total.by_user.iter().collect();
    users.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let users: Vec<String> = users
        .iter()
        .take(5)
        .map(|(u, n)| format!("{u} {n}"))
        .collect();
    println!(
        "most active:  {} ({} users)",
        users.join(", "),
        total.by_user.len()
    );
    for (retweets, id, user) in &total.top_retweeted {
        println!("most retweeted: tweet {id} by {user}, {retweets} retweets");
    }

    let per_file_seq = seq_time.as_secs_f64() / FILES as f64;
    let per_file_par = par_time.as_secs_f64() / FILES as f64;
    println!(
        "\nat these rates 15,000 files take {:.0} s one by one, {:.0} s in parallel",
        per_file_seq * 15_000.0,
        per_file_par * 15_000.0
    );

    let path = dir.path().to_path_buf();
    dir.close()?;
    println!(
        "removed {} ({})",
        path.display(),
        if path.exists() {
            "still there!"
        } else {
            "gone"
        }
    );
    Ok(())
}

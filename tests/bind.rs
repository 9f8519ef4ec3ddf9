//! `fanout::bind`: closures that capture, on every backend — the thread
//! pool, the process pool (both start methods), the cluster (a real
//! redis-server) and `AnyExecutor` — through one generic function each.
//! Also: captures travel once per chunk, and a worker refuses a frame whose
//! trampoline offset is forged.

mod cluster_support;

use cluster_support::Redis;
use fanout::{
    bind, AnyExecutor, Cluster, Error, Executor, Map, MapOptions, ProcessPool, StartMethod,
    ThreadPool,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long any result may take before the test fails instead of hanging.
const T: Duration = Duration::from_secs(60);

fn collect<R>(m: Map<R>) -> Vec<Result<R, Error>> {
    m.collect()
}

fn values<R: std::fmt::Debug>(m: Map<R>) -> Vec<R> {
    collect(m)
        .into_iter()
        .map(|r| r.expect("map item"))
        .collect()
}

fn opts() -> MapOptions {
    MapOptions::default().timeout(T)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Greeting {
    prefix: String,
    times: usize,
}

fn greet(g: &Greeting, name: String) -> String {
    format!("{}{name}", g.prefix.repeat(g.times))
}

/// The same generic function, run on every backend below.
fn scale_all<E: Executor>(ex: &E, k: u64, xs: Vec<u64>) -> Vec<u64> {
    values(
        ex.map_with(bind(k, |k: &u64, x: u64| x * k), xs, opts())
            .expect("map"),
    )
}

/// Everything `bind` must do, on any executor.
fn exercise<E: Executor>(ex: &E, backend: &str) {
    // A scalar capture.
    let k = 3u64;
    let f = ex.submit(bind(k, |k: &u64, x: u64| x * k), (5,)).unwrap();
    assert_eq!(f.result_timeout(T), Ok(15), "{backend}: scalar");

    // Through call(..).submit, as any task.
    let f = ex
        .call(bind(k, |k: &u64, x: u64, y: u64| x * k + y))
        .submit((5u64, 1u64))
        .unwrap();
    assert_eq!(f.result_timeout(T), Ok(16), "{backend}: call().submit");

    // A Vec capture used by a map, a chunked map_with and a lazy one.
    let table: Vec<u64> = (0..50).map(|i| i * i).collect();
    let lookup = bind(table.clone(), |t: &Vec<u64>, i: usize| t[i] + 1);
    let want: Vec<u64> = table.iter().map(|v| v + 1).collect();
    let got = values(ex.map_with(lookup.clone(), 0..50, opts()).unwrap());
    assert_eq!(got, want, "{backend}: map");
    let got = values(
        ex.map_with(lookup.clone(), 0..50, opts().chunksize(7))
            .unwrap(),
    );
    assert_eq!(got, want, "{backend}: map_with chunksize");
    let got = values(
        ex.map_with(lookup, 0..50, opts().chunksize(4).buffersize(5))
            .unwrap(),
    );
    assert_eq!(got, want, "{backend}: map_with chunksize + buffersize");

    // A struct with a String, and a fn item as the function.
    let g = Greeting {
        prefix: "hey ".into(),
        times: 2,
    };
    let f = ex.submit(bind(g, greet), ("ann".to_string(),)).unwrap();
    assert_eq!(
        f.result_timeout(T).as_deref(),
        Ok("hey hey ann"),
        "{backend}: struct"
    );

    // No further arguments, and several (starmap).
    let f = ex
        .submit(bind("four".to_string(), |s: &String| s.len()), ())
        .unwrap();
    assert_eq!(f.result_timeout(T), Ok(4), "{backend}: no arguments");
    let base = 100i64;
    let got = values(
        ex.starmap(
            bind(base, |b: &i64, x: i64, y: i64| b + x * y),
            [(1, 2), (3, 4)],
        )
        .unwrap(),
    );
    assert_eq!(got, [102, 112], "{backend}: starmap");

    // A bound function that panics is that call's Panicked, nothing more.
    let f = ex
        .submit(
            bind(7u32, |k: &u32, x: u32| {
                if x == 0 {
                    panic!("zero with k = {k}")
                }
                k / x
            }),
            (0,),
        )
        .unwrap();
    match f.result_timeout(T) {
        Err(Error::Panicked { message, .. }) => {
            assert!(message.contains("zero with k = 7"), "{backend}: {message}")
        }
        other => panic!("{backend}: expected Panicked, got {other:?}"),
    }

    // The macro writes the bind from a capture list.
    let (scale, names) = (2u64, vec!["a".to_string(), "bb".to_string()]);
    let task = fanout::closure!([scale, names] |i: usize| names[i].len() as u64 * scale);
    let got = values(ex.map_with(task, [1, 0], opts().chunksize(2)).unwrap());
    assert_eq!(got, [4, 2], "{backend}: closure!");

    // The same generic function.
    assert_eq!(
        scale_all(ex, 10, vec![1, 2, 3]),
        [10, 20, 30],
        "{backend}: generic"
    );
}

/// A capture that counts its serializations in this process, and whose
/// deserialized copies each carry a fresh id (0 for the original).
#[derive(Debug, Clone)]
struct Counted {
    data: Vec<u32>,
    copy: u64,
    /// Counts serializations of this value and its clones (not shipped:
    /// a deserialized copy starts a counter of its own).
    serialized: std::sync::Arc<AtomicU64>,
}

static COPIES: AtomicU64 = AtomicU64::new(0);

impl Serialize for Counted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialized.fetch_add(1, Ordering::SeqCst);
        self.data.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Counted {
            data: Vec::deserialize(d)?,
            copy: COPIES.fetch_add(1, Ordering::SeqCst) + 1,
            serialized: Default::default(),
        })
    }
}

/// Which copy of the captures (process, copy id) served each item.
fn which_copy(c: &Counted, i: usize) -> (u32, u64, u32) {
    (std::process::id(), c.copy, c.data[i])
}

/// Runs a 12-item map in chunks of 4 and checks what travelled: the
/// captures are serialized once for the whole map, and each chunk's items
/// share one decoded copy (3 chunks → 3 copies); on the thread pool nothing
/// is serialized and every call sees the original.
fn captures_once_per_chunk<E: Executor>(ex: &E, backend: &str, in_place: bool) {
    let c = Counted {
        data: (100..112).collect(),
        copy: 0,
        serialized: Default::default(),
    };
    let counter = c.serialized.clone();
    let out = values(
        ex.map_with(bind(c, which_copy), 0..12, opts().chunksize(4))
            .unwrap(),
    );
    let serialized = counter.load(Ordering::SeqCst);
    let data: Vec<u32> = out.iter().map(|o| o.2).collect();
    assert_eq!(data, (100..112).collect::<Vec<_>>(), "{backend}");
    if in_place {
        assert_eq!(serialized, 0, "{backend}: threads serialize nothing");
        assert!(out.iter().all(|o| o.1 == 0), "{backend}: {out:?}");
        return;
    }
    assert_eq!(serialized, 1, "{backend}: captures encoded once per map");
    for chunk in out.chunks(4) {
        assert!(chunk.iter().all(|o| (o.0, o.1) == (chunk[0].0, chunk[0].1)));
        assert_ne!(chunk[0].0, std::process::id(), "{backend}: ran remotely");
        assert_ne!(chunk[0].1, 0, "{backend}: a decoded copy");
    }
    let mut copies: Vec<(u32, u64)> = out.iter().map(|o| (o.0, o.1)).collect();
    copies.dedup();
    assert_eq!(copies.len(), 3, "{backend}: one copy per chunk: {out:?}");
    // Without chunking, every call carries (and decodes) its own copy.
    let c = Counted {
        data: vec![1, 2, 3],
        copy: 0,
        serialized: Default::default(),
    };
    let out = values(ex.map_with(bind(c, which_copy), 0..3, opts()).unwrap());
    let mut copies: Vec<(u32, u64)> = out.iter().map(|o| (o.0, o.1)).collect();
    copies.sort();
    copies.dedup();
    assert_eq!(copies.len(), 3, "{backend}: {out:?}");
}

/// Captures that serialize fine but fail to deserialize in the worker.
#[derive(Debug, Clone)]
struct Undecodable;

impl Serialize for Undecodable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for Undecodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("this capture never decodes"))
    }
}

/// Undecodable captures fail each item of a chunk with `Codec`, and the
/// executor serves the next call.
fn undecodable_captures<E: Executor>(ex: &E, backend: &str) {
    let out = collect(
        ex.map_with(
            bind(Undecodable, |_: &Undecodable, x: u8| x),
            0..3,
            opts().chunksize(3),
        )
        .unwrap(),
    );
    assert_eq!(out.len(), 3);
    for r in out {
        match r {
            // (postcard does not keep a custom error's text; the type is named.)
            Err(Error::Codec { type_name, .. }) => {
                assert!(type_name.contains("Undecodable"), "{backend}: {type_name}")
            }
            other => panic!("{backend}: expected Codec, got {other:?}"),
        }
    }
    assert_eq!(scale_all(ex, 2, vec![4]), [8], "{backend}: still serving");
}

#[test]
fn thread_pool() {
    let pool = ThreadPool::new(3).unwrap();
    exercise(&pool, "thread");
    captures_once_per_chunk(&pool, "thread", true);
    // Threads call in place: the captures are never decoded, so even an
    // undecodable capture works.
    let f = pool
        .submit(bind(Undecodable, |_: &Undecodable, x: u8| x + 1), (1,))
        .unwrap();
    assert_eq!(f.result_timeout(T), Ok(2));
}

#[test]
fn process_pool_spawn_and_fork() {
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let pool = ProcessPool::builder()
            .workers(2)
            .start_method(method)
            .build()
            .unwrap();
        let backend = format!("process {method:?}");
        exercise(&pool, &backend);
        undecodable_captures(&pool, &backend);
        drop(pool);
        // One worker, so the copies' ids count frames in one process.
        let pool = ProcessPool::builder()
            .workers(1)
            .start_method(method)
            .build()
            .unwrap();
        captures_once_per_chunk(&pool, &backend, false);
    }
}

#[test]
fn process_pool_initializer_takes_a_bind() {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    fn seen() -> u64 {
        SEEN.load(Ordering::SeqCst)
    }
    let pool = ProcessPool::builder()
        .workers(1)
        .initializer(
            bind(41u64, |k: &u64, x: u64| SEEN.store(k + x, Ordering::SeqCst)),
            (1,),
        )
        .build()
        .unwrap();
    assert_eq!(pool.submit(seen, ()).unwrap().result_timeout(T), Ok(42));
}

fn cluster(redis: &Redis, ns: &str, workers: usize) -> Cluster {
    Cluster::builder(&redis.url())
        .namespace(ns)
        .local_workers(workers)
        .secret("bind-test-secret")
        .build()
        .expect("cluster")
}

#[test]
fn cluster_backend() {
    let redis = Redis::start();
    let c = cluster(&redis, "bind", 2);
    exercise(&c, "cluster");
    undecodable_captures(&c, "cluster");
    drop(c);
    let c = cluster(&redis, "bind-once", 1);
    captures_once_per_chunk(&c, "cluster", false);
}

#[test]
fn any_executor_from_url() {
    let redis = Redis::start();
    let urls = [
        "thread://2".to_string(),
        "process://2".to_string(),
        format!("{}?namespace=bind-any&workers=1", redis.url()),
    ];
    for url in urls {
        let ex = AnyExecutor::from_url(&url).unwrap();
        assert_eq!(scale_all(&ex, 7, vec![1, 2]), [7, 14], "{url}");
    }
}

// ---- a frame with a forged trampoline offset, piped into a worker by hand ----

fn square(x: u64) -> u64 {
    x * x
}

/// A worker process of this binary, started the way the pool spawns one,
/// with its two pipes held by the test.
struct HandWorker {
    child: std::process::Child,
    to: Option<std::fs::File>,
    from: std::fs::File,
}

impl HandWorker {
    fn start() -> HandWorker {
        use std::os::fd::FromRawFd;
        use std::os::unix::process::CommandExt;
        let (mut call, mut result) = ([0; 2], [0; 2]);
        // SAFETY: each array has room for the two descriptors pipe writes.
        unsafe {
            assert_eq!(libc::pipe(call.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(result.as_mut_ptr()), 0);
        }
        let (r, w) = (call[0], result[1]);
        let mut cmd = std::process::Command::new("/proc/self/exe");
        cmd.env("FANOUT_PROCESS_WORKER", format!("{r},{w}"))
            .stdin(std::process::Stdio::null());
        let (ours_w, ours_r) = (call[1], result[0]);
        // SAFETY: only close(), async-signal-safe, on the test's ends.
        unsafe {
            cmd.pre_exec(move || {
                libc::close(ours_w);
                libc::close(ours_r);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn a worker");
        // SAFETY: descriptors from pipe() above; each is owned once.
        unsafe {
            libc::close(r);
            libc::close(w);
            HandWorker {
                child,
                to: Some(std::fs::File::from_raw_fd(ours_w)),
                from: std::fs::File::from_raw_fd(ours_r),
            }
        }
    }

    /// Sends one TASK frame (one item) and returns the DONE frame's body.
    fn call(&mut self, build_id: &[u8; 16], offset: u64, captures: &[u8], args: &[u8]) -> Vec<u8> {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let mut body = vec![1u8];
        body.extend_from_slice(build_id);
        body.extend_from_slice(&offset.to_le_bytes());
        body.extend_from_slice(&(captures.len() as u32).to_le_bytes());
        body.extend_from_slice(captures);
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&7u64.to_le_bytes());
        body.extend_from_slice(&(args.len() as u32).to_le_bytes());
        body.extend_from_slice(args);
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.to
            .as_mut()
            .expect("open")
            .write_all(&frame)
            .expect("write frame");
        let deadline = Instant::now() + T;
        let mut got = Vec::new();
        loop {
            if got.len() >= 4 {
                let len = u32::from_le_bytes(got[..4].try_into().unwrap()) as usize;
                if got.len() >= 4 + len {
                    return got[4..4 + len].to_vec();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no reply from the worker within {T:?}");
            let mut pfd = libc::pollfd {
                fd: self.from.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            if ready <= 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            let n = self.from.read(&mut buf).expect("read reply");
            assert!(
                n > 0,
                "the worker died instead of answering: {:?}",
                self.child.try_wait()
            );
            got.extend_from_slice(&buf[..n]);
        }
    }
}

impl Drop for HandWorker {
    fn drop(&mut self) {
        // Closing its call pipe makes the worker exit; bounded wait, then kill by pid.
        drop(self.to.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn refusal(body: &[u8]) -> String {
    match fanout::__wire::decode_frame(body).expect("a DONE frame") {
        fanout::__wire::Frame::Done { results } => {
            assert_eq!(results.len(), 1);
            assert_eq!(results[0].0, 7);
            format!("{:?}", results[0].1.as_ref().expect_err("a refusal"))
        }
        other => panic!("expected DONE, got {other:?}"),
    }
}

#[test]
fn forged_trampoline_offsets_are_refused_by_a_worker() {
    let (build_id, offset, none) = fanout::__frame_parts::<_, (u64,)>(&square).unwrap();
    let (_, bound_offset, captures) =
        fanout::__frame_parts::<_, (usize,)>(&bind(vec![5u64, 6], |v: &Vec<u64>, i: usize| v[i]))
            .unwrap();
    let args = [3u8]; // postcard of (3u64,) and of (3usize,)
    let mut w = HandWorker::start();
    // The real offsets run.
    let ok = |body: Vec<u8>| match fanout::__wire::decode_frame(&body).unwrap() {
        fanout::__wire::Frame::Done { results } => {
            let (id, outcome) = results.into_iter().next().expect("one result");
            assert_eq!(id, 7);
            outcome.expect("the real trampoline runs").to_vec()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(ok(w.call(&build_id, offset, &none, &args)), [9]);
    // Offsets near a real entry, into the middle of one, at the
    // functions nearby, and far away: refused, and the worker lives on.
    for forged in [
        offset.wrapping_add(1),
        offset.wrapping_add(2),
        offset.wrapping_add(8),
        offset.wrapping_add(16),
        offset.wrapping_sub(8),
        bound_offset.wrapping_add(1),
        0,
        1,
        u64::MAX,
        1 << 40,
    ] {
        let why = refusal(&w.call(&build_id, forged, &none, &args));
        assert!(
            why.contains("Refused") && why.contains("does not name a trampoline"),
            "offset {forged:#x}: {why}"
        );
    }
    // A bound trampoline with its captures still runs after all that.
    assert_eq!(ok(w.call(&build_id, bound_offset, &captures, &[1])), [6]);
    // A real bound entry with captures that do not decode: a Codec error.
    let why = refusal(&w.call(&build_id, bound_offset, &[0xff; 3], &[1]));
    assert!(why.contains("Codec"), "{why}");
}

/// What the remote backends' compile-time check admits besides fn items
/// and non-capturing closures, exactly as documented (`src/ship.rs`,
/// `assert_shippable`): a closure whose captures are all zero-sized `Copy`
/// values. The worker makes them from nothing, which for a zero-sized type
/// is the same value a copy would be.
#[test]
fn zero_sized_captures_are_admitted_as_documented() {
    #[derive(Clone, Copy)]
    struct Unit;
    impl Unit {
        fn twice(self, x: u64) -> u64 {
            2 * x
        }
    }
    let unit = Unit;
    let marker = std::marker::PhantomData::<String>;
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let f = pool
        .submit(
            move |x: u64| {
                let _ = marker;
                unit.twice(x)
            },
            (21,),
        )
        .unwrap();
    assert_eq!(f.result_timeout(T), Ok(42));
}

/// A chunk's task record in Redis holds the captures once, not once per
/// item: with no worker to take it, the record of a 4-item chunk whose
/// captures are 20 KB is a little over 20 KB.
#[test]
fn cluster_record_carries_captures_once() {
    let redis = Redis::start();
    let c = cluster(&redis, "bind-record", 0);
    let table: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    let task = bind(table.clone(), |t: &Vec<u8>, i: usize| t[i]);
    let m = c.map_with(task, 0..4usize, opts().chunksize(4)).unwrap();
    let records = || -> Vec<String> {
        redis
            .keys("bind-record")
            .into_iter()
            .filter(|k| k.starts_with("{bind-record}:t:"))
            .collect()
    };
    assert!(
        cluster_support::eventually(Duration::from_secs(10), || !records().is_empty()),
        "no task record reached Redis"
    );
    let keys = records();
    assert_eq!(keys.len(), 1, "one record per chunk: {keys:?}");
    let mut con = redis.conn();
    let blob: Vec<u8> = redis::cmd("HGET")
        .arg(&keys[0])
        .arg("a")
        .query(&mut con)
        .unwrap();
    // captures: 4-byte length + postcard (varint length + bytes); then 4
    // items of 4-byte length + one varint byte each.
    let captures = postcard::to_allocvec(&table).unwrap();
    assert_eq!(blob.len(), 4 + captures.len() + 4 * (4 + 1));
    assert_eq!(&blob[4..4 + captures.len()], &captures[..]);
    drop(m);
    c.shutdown(true, true);
}

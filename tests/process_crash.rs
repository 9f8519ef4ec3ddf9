//! ProcessPool crash isolation and hostile input: a worker that dies, or that
//! writes garbage into its result pipe, fails only the call it was running;
//! everything else completes and the pool keeps its size.

mod process_util;

use fanout::{Error, Executor, MapOptions, StartMethod, Task};
use process_util::*;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Runs `crash` amid 50 normal calls on a pool of 2 and checks that only the
/// crash fails, with a status naming `needle`, and that the dead worker is
/// replaced.
fn isolate<F: Task<(), Output = u32>>(method: StartMethod, crash: F, needle: &str) {
    let pool = pool(method, 2);
    let before = pool.worker_pids();
    assert_eq!(before.len(), 2);
    let normal = |i: u64| pool.submit(nap_echo, (i,)).unwrap();
    let first: Vec<_> = (0..25).map(normal).collect();
    let bad = pool.submit(crash.clone(), ()).unwrap();
    let second: Vec<_> = (25..50).map(normal).collect();
    expect_worker_lost(bad.result_timeout(T), needle);
    for (i, f) in first.into_iter().chain(second).enumerate() {
        assert_eq!(
            f.result_timeout(T),
            Ok(i as u64),
            "{method:?} {needle}: call {i}"
        );
    }
    let after = pool.worker_pids();
    assert_eq!(after.len(), 2, "{method:?} {needle}: {after:?}");
    assert!(
        after.iter().any(|p| !before.contains(p)),
        "{method:?} {needle}: a replacement worker ({before:?} → {after:?})"
    );
    // Later calls work, on both workers.
    let got: Vec<u64> = pool
        .map(square, 0..100u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    // A second crash is handled the same way.
    expect_worker_lost(pool.submit(crash, ()).unwrap().result_timeout(T), needle);
    assert_eq!(pool.submit(add, (2, 3)).unwrap().result_timeout(T), Ok(5));
}

#[test]
fn abort_fails_only_its_own_future() {
    let _watchdog = watchdog("abort_fails_only_its_own_future", Duration::from_secs(120));
    for method in METHODS {
        isolate(method, abort_now, "SIGABRT");
    }
}

#[test]
fn segfault_fails_only_its_own_future() {
    let _watchdog = watchdog(
        "segfault_fails_only_its_own_future",
        Duration::from_secs(120),
    );
    for method in METHODS {
        isolate(method, segfault, "SIGSEGV");
    }
}

#[test]
fn exit_fails_only_its_own_future() {
    let _watchdog = watchdog("exit_fails_only_its_own_future", Duration::from_secs(120));
    for method in METHODS {
        isolate(method, exit3, "exited with code 3");
    }
}

#[test]
fn self_sigkill_fails_only_its_own_future() {
    let _watchdog = watchdog(
        "self_sigkill_fails_only_its_own_future",
        Duration::from_secs(120),
    );
    for method in METHODS {
        isolate(method, sigkill_self, "SIGKILL");
    }
}

#[test]
fn crash_inside_a_map_chunk_fails_that_chunk_only() {
    let _watchdog = watchdog(
        "crash_inside_a_map_chunk_fails_that_chunk_only",
        Duration::from_secs(120),
    );
    fn maybe_crash(x: u64) -> u64 {
        if x == 137 {
            std::process::abort();
        }
        x
    }
    for method in METHODS {
        let pool = pool(method, 2);
        let opts = MapOptions::default().chunksize(10).timeout(T);
        let out: Vec<_> = pool
            .map_with(maybe_crash, 0..300u64, opts)
            .unwrap()
            .collect();
        for (x, r) in out.into_iter().enumerate() {
            if (130..140).contains(&x) {
                expect_worker_lost(r, "SIGABRT");
            } else {
                assert_eq!(r, Ok(x as u64));
            }
        }
        assert_eq!(pool.worker_pids().len(), 2);
    }
}

#[test]
fn killing_a_busy_worker_from_outside() {
    let _watchdog = watchdog(
        "killing_a_busy_worker_from_outside",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let [worker] = pool.worker_pids()[..] else {
            panic!()
        };
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let long = pool
            .submit(touch_after, (started.to_str().unwrap().to_string(), 0))
            .unwrap();
        assert!(long.result_timeout(T).is_ok());
        let long = pool.submit(sleep_ms, (20_000,)).unwrap();
        // Queued behind it: handed ahead to the same worker, or waiting.
        let behind: Vec<_> = (0..6u64)
            .map(|i| pool.submit(square, (i,)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        // SAFETY: killing our own worker process.
        assert_eq!(unsafe { libc::kill(worker as i32, libc::SIGKILL) }, 0);
        expect_worker_lost(long.result_timeout(T), "SIGKILL");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        // The calls that had not started run on the replacement.
        for (i, f) in behind.into_iter().enumerate() {
            assert_eq!(f.result_timeout(T), Ok((i * i) as u64), "{method:?}");
        }
        let now = pool.worker_pids();
        assert_eq!(now.len(), 1);
        assert_ne!(now[0], worker);
        assert!(eventually(Duration::from_secs(5), || process_gone(worker)));
    }
}

/// A task that spawns a long-lived grandchild and then dies: the grandchild
/// must not keep the pool from noticing (it must not inherit the pipes).
fn spawn_grandchild_then_abort() -> u32 {
    let child = std::process::Command::new("sleep")
        .arg("30")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(
        std::env::temp_dir().join(format!("fanout-grandchild-{}", std::process::id())),
        child.id().to_string(),
    )
    .unwrap();
    std::process::abort()
}

#[test]
fn a_grandchild_holding_no_pipe_does_not_delay_crash_detection() {
    let _watchdog = watchdog(
        "a_grandchild_holding_no_pipe_does_not_delay_crash_detection",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let [worker] = pool.worker_pids()[..] else {
            panic!()
        };
        let t0 = Instant::now();
        let r = pool
            .submit(spawn_grandchild_then_abort, ())
            .unwrap()
            .result_timeout(Duration::from_secs(10));
        let elapsed = t0.elapsed();
        let marker = std::env::temp_dir().join(format!("fanout-grandchild-{worker}"));
        if let Ok(gc) = std::fs::read_to_string(&marker) {
            // SAFETY: ending the grandchild we caused.
            unsafe { libc::kill(gc.trim().parse().unwrap(), libc::SIGKILL) };
            let _ = std::fs::remove_file(&marker);
        }
        expect_worker_lost(r, "SIGABRT");
        assert!(elapsed < Duration::from_secs(5), "{method:?}: {elapsed:?}");
        assert_eq!(pool.submit(add, (1, 1)).unwrap().result_timeout(T), Ok(2));
    }
}

// ---- garbage on the result pipe ------------------------------------------------

/// How a task corrupts the pool's view of its worker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Garbage {
    /// A well-sized frame of an unknown kind, then the task returns normally.
    UnknownKind,
    /// Text: its first four bytes read as a length over the 1 GiB limit.
    Text,
    /// A DONE frame answering calls the worker was never given.
    WrongIds,
    /// A length header promising 1000 bytes, 10 bytes, then `_exit(0)`.
    TruncatedThenExit,
    /// A length header of 4 GiB − 1.
    HugeLength,
    /// An empty frame (length 0).
    Empty,
    /// A cross-memory frame (kind 22) that wraps no DONE frame.
    CrossMemoryNotDone,
    /// A cross-memory frame naming another process's memory.
    CrossMemoryForeignPid,
}

/// A cross-memory frame naming `len` bytes at `addr` of `pid` around `inner`.
fn cross_memory_frame(pid: u32, addr: u64, len: u64, inner: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 4];
    f.push(22);
    f.extend_from_slice(&pid.to_le_bytes());
    f.extend_from_slice(&addr.to_le_bytes());
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(inner);
    let n = (f.len() - 4) as u32;
    f[..4].copy_from_slice(&n.to_le_bytes());
    f
}

fn write_garbage(kind: Garbage) -> u32 {
    let fd = result_pipe_fd().expect("the worker's result pipe");
    match kind {
        Garbage::UnknownKind => write_raw(fd, &[5, 0, 0, 0, 0xEE, 1, 2, 3, 4]),
        Garbage::Text => write_raw(fd, b"garbage! garbage! garbage!"),
        Garbage::WrongIds => {
            let mut f = vec![0u8; 4];
            f.push(10); // DONE
            f.extend_from_slice(&1u32.to_le_bytes());
            f.extend_from_slice(&u64::MAX.to_le_bytes());
            f.push(0);
            f.extend_from_slice(&1u32.to_le_bytes());
            f.push(0);
            let len = (f.len() - 4) as u32;
            f[..4].copy_from_slice(&len.to_le_bytes());
            write_raw(fd, &f)
        }
        Garbage::TruncatedThenExit => {
            write_raw(fd, &1000u32.to_le_bytes());
            write_raw(fd, &[10; 10]);
            // SAFETY: ending this worker abruptly is the point.
            unsafe { libc::_exit(0) }
        }
        Garbage::HugeLength => write_raw(fd, &u32::MAX.to_le_bytes()),
        Garbage::Empty => write_raw(fd, &0u32.to_le_bytes()),
        Garbage::CrossMemoryNotDone => {
            let data = vec![1u8; 2 << 20];
            let f = cross_memory_frame(std::process::id(), data.as_ptr() as u64, 2 << 20, &[12]);
            write_raw(fd, &f)
        }
        Garbage::CrossMemoryForeignPid => {
            let done = [10, 0, 0, 0, 0];
            write_raw(fd, &cross_memory_frame(1, 4096, 2 << 20, &done))
        }
    }
    7
}

#[test]
fn garbage_on_the_result_pipe_loses_nothing_else() {
    let _watchdog = watchdog(
        "garbage_on_the_result_pipe_loses_nothing_else",
        Duration::from_secs(120),
    );
    let kinds = [
        Garbage::UnknownKind,
        Garbage::Text,
        Garbage::WrongIds,
        Garbage::TruncatedThenExit,
        Garbage::HugeLength,
        Garbage::Empty,
        Garbage::CrossMemoryNotDone,
        Garbage::CrossMemoryForeignPid,
    ];
    for method in METHODS {
        let pool = pool(method, 2);
        for kind in kinds {
            let before = pool.worker_pids();
            let normal = |i: u64| pool.submit(nap_echo, (i,)).unwrap();
            let first: Vec<_> = (0..10).map(normal).collect();
            let bad = pool.submit(write_garbage, (kind,)).unwrap();
            let second: Vec<_> = (10..20).map(normal).collect();
            match bad.result_timeout(T) {
                Err(Error::Codec { type_name, message }) => {
                    assert_eq!(type_name, "frame", "{message}");
                    assert!(message.contains("malformed frame"), "{message}");
                }
                Err(Error::WorkerLost { .. }) => {}
                other => panic!("{method:?} {kind:?}: expected Codec or WorkerLost, got {other:?}"),
            }
            for (i, f) in first.into_iter().chain(second).enumerate() {
                assert_eq!(f.result_timeout(T), Ok(i as u64), "{method:?} {kind:?}");
            }
            let after = pool.worker_pids();
            assert_eq!(after.len(), 2, "{method:?} {kind:?}");
            assert!(
                after.iter().any(|p| !before.contains(p)),
                "{method:?} {kind:?}: the corrupt worker was replaced"
            );
        }
        assert_eq!(pool.submit(add, (1, 2)).unwrap().result_timeout(T), Ok(3));
    }
}

// ---- payloads that fail to (de)serialize ----------------------------------------

/// Serializes to an error (or, for `PanicSer`, panics) when `bad` is set.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Touchy {
    value: u32,
    fail_ser: bool,
    panic_ser: bool,
    fail_de: bool,
}

impl Touchy {
    fn ok(value: u32) -> Touchy {
        Touchy {
            value,
            fail_ser: false,
            panic_ser: false,
            fail_de: false,
        }
    }
}

impl Serialize for Touchy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.fail_ser {
            return Err(serde::ser::Error::custom("Touchy refuses to serialize"));
        }
        if self.panic_ser {
            panic!("Touchy panics while serializing");
        }
        (self.value, self.fail_de).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Touchy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (value, fail_de) = <(u32, bool)>::deserialize(d)?;
        if fail_de {
            return Err(serde::de::Error::custom("Touchy refuses to deserialize"));
        }
        Ok(Touchy::ok(value))
    }
}

/// Encodes fine; panics when decoded.
#[derive(Debug, Serialize)]
struct PanicsOnDecode;

impl<'de> Deserialize<'de> for PanicsOnDecode {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("PanicsOnDecode")
    }
}

fn touchy_echo(t: Touchy) -> u32 {
    t.value
}

fn make_touchy(value: u32, fail_ser: bool, panic_ser: bool, fail_de: bool) -> (u32, Touchy) {
    (
        std::process::id(),
        Touchy {
            value,
            fail_ser,
            panic_ser,
            fail_de,
        },
    )
}

/// postcard reports a failing impl's custom error as just "Serde
/// Serialization Error" / "Serde Deserialization Error" (the impl's own text
/// is lost), so `msg_part` is one of those words; the type names the culprit.
fn expect_codec<T: std::fmt::Debug>(r: fanout::Result<T>, type_part: &str, msg_part: &str) {
    match &r {
        Err(Error::Codec { type_name, message }) => {
            assert!(type_name.contains(type_part), "{type_name} / {message}");
            assert!(message.contains(msg_part), "{type_name} / {message}");
        }
        other => panic!("expected Codec({type_part}, {msg_part}), got {other:?}"),
    }
}

#[test]
fn unserializable_arguments_fail_only_their_future() {
    let _watchdog = watchdog(
        "unserializable_arguments_fail_only_their_future",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 2);
        let before = pool.worker_pids();
        let mut fs = Vec::new();
        for i in 0..20u32 {
            let mut t = Touchy::ok(i);
            t.fail_ser = i % 5 == 3;
            fs.push((i, pool.submit(touchy_echo, (t,)).unwrap()));
        }
        for (i, f) in fs {
            let r = f.result_timeout(T);
            if i % 5 == 3 {
                expect_codec(r, "Touchy", "Serializ");
            } else {
                assert_eq!(r, Ok(i));
            }
        }
        // Per item in a map, with chunks too.
        let items: Vec<Touchy> = (0..50u32)
            .map(|i| Touchy {
                fail_ser: i % 7 == 0,
                ..Touchy::ok(i)
            })
            .collect();
        for chunk in [1, 8] {
            let opts = MapOptions::default().chunksize(chunk).timeout(T);
            let out: Vec<_> = pool
                .map_with(touchy_echo, items.clone(), opts)
                .unwrap()
                .collect();
            for (i, r) in out.into_iter().enumerate() {
                if i % 7 == 0 {
                    expect_codec(r, "Touchy", "Serializ");
                } else {
                    assert_eq!(r, Ok(i as u32));
                }
            }
        }
        // Arguments the worker cannot decode: an error from the worker.
        let t = Touchy {
            fail_de: true,
            ..Touchy::ok(1)
        };
        expect_codec(
            pool.submit(touchy_echo, (t,)).unwrap().result_timeout(T),
            "Touchy",
            "Deserializ",
        );
        assert_eq!(pool.worker_pids(), before, "{method:?}: no worker was lost");
    }
}

#[test]
fn unserializable_results_fail_only_their_future() {
    let _watchdog = watchdog(
        "unserializable_results_fail_only_their_future",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let [worker] = pool.worker_pids()[..] else {
            panic!()
        };
        // Fails to serialize in the worker.
        expect_codec(
            pool.submit(make_touchy, (1, true, false, false))
                .unwrap()
                .result_timeout(T),
            "Touchy",
            "Serializ",
        );
        // Serializes in the worker, fails to deserialize in the pool.
        expect_codec(
            pool.submit(make_touchy, (2, false, false, true))
                .unwrap()
                .result_timeout(T),
            "Touchy",
            "Deserializ",
        );
        let (p, t) = pool
            .submit(make_touchy, (3, false, false, false))
            .unwrap()
            .result_timeout(T)
            .unwrap();
        assert_eq!(
            (p, t),
            (worker, Touchy::ok(3)),
            "{method:?}: worker survived"
        );
        assert_eq!(pool.worker_pids(), [worker]);
    }
}

#[test]
fn a_result_that_panics_while_serializing_is_a_panic() {
    let _watchdog = watchdog(
        "a_result_that_panics_while_serializing_is_a_panic",
        Duration::from_secs(120),
    );
    for method in METHODS {
        let pool = pool(method, 1);
        let [worker] = pool.worker_pids()[..] else {
            panic!()
        };
        let r = pool
            .submit(make_touchy, (1, false, true, false))
            .unwrap()
            .result_timeout(T);
        match &r {
            Err(Error::Panicked { message, .. }) => {
                assert!(message.contains("panics while serializing"), "{message}")
            }
            other => panic!("{method:?}: expected Panicked, got {other:?}"),
        }
        // The same for arguments that panic while the worker decodes them.
        let r = pool
            .submit(|_: PanicsOnDecode| 1u8, (PanicsOnDecode,))
            .unwrap()
            .result_timeout(T);
        assert!(
            matches!(&r, Err(Error::Panicked { message, .. }) if message == "PanicsOnDecode"),
            "{method:?}: {r:?}"
        );
        // The worker survives, as for any panicking task.
        assert_eq!(pool.submit(pid, ()).unwrap().result_timeout(T), Ok(worker));
        let got: HashSet<u32> = pool.worker_pids().into_iter().collect();
        assert_eq!(got, HashSet::from([worker]));
    }
}

/// Fork while another thread of the pool's process holds the stdout and
/// stderr locks: the child inherits them held by a thread it does not have.
/// The worker must still serve and, above all, exit when the pool closes it
/// (its exit path must not wait for those locks), or shutdown hangs.
#[test]
fn forking_while_another_thread_holds_stdout_and_stderr() {
    let _watchdog = watchdog(
        "forking_while_another_thread_holds_stdout_and_stderr",
        Duration::from_secs(60),
    );
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let out = std::io::stdout().lock();
        let err = std::io::stderr().lock();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(30));
        drop((out, err));
    });
    held_rx.recv().unwrap();
    let pool = std::thread::spawn(|| process_util::pool(StartMethod::Fork, 1));
    // The pool is built on another thread: with the locks held it may wait for them.
    std::thread::sleep(Duration::from_millis(300));
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let pool = pool.join().unwrap();
    assert_eq!(pool.submit(add, (2, 2)).unwrap().result_timeout(T), Ok(4));
    let pids = pool.worker_pids();
    let t0 = Instant::now();
    drop(pool);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(pids.iter().all(|&p| process_gone(p)));
}

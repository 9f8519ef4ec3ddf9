//! Helpers of the large-frame tests (`speed_shm`, `speed_cross_memory`):
//! byte-vector tasks, payloads, and the process's shared-memory regions.

use super::{expect_worker_lost, T};
use fanout::{Executor, MapOptions, ProcessPool, StartMethod};

/// Frame bodies at least this large leave the pipe (`shm::SHM_AT`).
pub const SHM_AT: usize = 1 << 20;
/// How a shared-memory region shows in `/proc/<pid>/fd` and `maps`.
pub const NAME: &str = "memfd:fanout-shm";

pub fn echo(v: Vec<u8>) -> Vec<u8> {
    v
}

pub fn len_of(v: Vec<u8>) -> usize {
    v.len()
}

pub fn make(n: usize, seed: u8) -> Vec<u8> {
    payload(n, seed)
}

/// Kills its worker at once.
pub fn die() -> usize {
    // SAFETY: signalling ourselves.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    0
}

/// Kills its worker once it holds a (large) argument.
pub fn die_holding(v: Vec<u8>) -> usize {
    if v.len() > 1 {
        // SAFETY: signalling ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    v.len()
}

pub fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Mappings of shared-memory regions in `pid`.
pub fn region_maps(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| m.lines().filter(|l| l.contains(NAME)).count())
        .unwrap_or(0)
}

pub fn me() -> u32 {
    std::process::id()
}

/// For each size: `echo` (`times` times: the later ones find warm
/// buffers), `len_of` (argument only) and `make` (result only), checked.
pub fn round_trips(pool: &ProcessPool, method: StartMethod, sizes: &[usize], times: usize) {
    for (i, &n) in sizes.iter().enumerate() {
        let v = payload(n, i as u8);
        for _ in 0..times {
            let back = pool.submit(echo, (v.clone(),)).unwrap().result_timeout(T);
            assert!(back.as_ref() == Ok(&v), "{method:?}: echo of {n} bytes");
        }
        assert_eq!(pool.submit(len_of, (v,)).unwrap().result_timeout(T), Ok(n));
        let made = pool
            .submit(make, (n, 9))
            .unwrap()
            .result_timeout(T)
            .unwrap();
        assert!(made == payload(n, 9), "{method:?}: result of {n} bytes");
    }
}

/// `rounds` times: a large result and then a call that kills the worker,
/// both with the (one) worker at once. It sends the result, then dies in
/// the second call, likely before the pool has read the first: the result
/// still arrives, and the second call is lost with its worker.
pub fn results_outlive_their_worker(pool: &ProcessPool, method: StartMethod, rounds: u8) {
    for i in 0..rounds {
        let big = pool.submit(make, (3 * SHM_AT, i)).unwrap();
        let death = pool.submit(die, ()).unwrap();
        assert!(
            big.result_timeout(T).unwrap() == payload(3 * SHM_AT, i),
            "{method:?}"
        );
        expect_worker_lost(death.result_timeout(T), "SIGKILL");
    }
}

/// One `map_with` chunk of `n` items of `size` bytes each (one large frame
/// when `n * size` is 1 MiB or more, but no lone vector), checked.
pub fn chunk_of_items(pool: &ProcessPool, n: u8, size: usize) {
    let items: Vec<Vec<u8>> = (0..n).map(|i| payload(size, i)).collect();
    let lens: Vec<usize> = pool
        .map_with(len_of, items, MapOptions::default().chunksize(4))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(lens, vec![size; n as usize]);
}

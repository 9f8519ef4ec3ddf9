use fanout::{Error, Executor, ProcessPool, StartMethod};
use std::time::Duration;

fn add(a: u64, b: u64) -> u64 {
    a + b
}
fn pid() -> u32 {
    std::process::id()
}
fn boom(msg: String) -> u32 {
    panic!("{msg}")
}
fn segv() -> u32 {
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut act) };
    eprintln!("SIGSEGV handler in worker: {:#x}", act.sa_sigaction);
    unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
    0
}

#[test]
fn smoke_spawn_and_fork() {
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let pool = ProcessPool::builder()
            .workers(2)
            .start_method(method)
            .build()
            .unwrap();
        let f = pool.submit(add, (1, 2)).unwrap();
        assert_eq!(f.result_timeout(Duration::from_secs(10)), Ok(3));
        let p = pool.submit(pid, ()).unwrap().result().unwrap();
        assert_ne!(p, std::process::id());
        let e = pool.submit(boom, ("kaput".to_string(),)).unwrap().result();
        assert!(
            matches!(&e, Err(Error::Panicked { message, .. }) if message == "kaput"),
            "{e:?}"
        );
        let e = pool.submit(segv, ()).unwrap().result();
        assert!(
            matches!(&e, Err(Error::WorkerLost { status, .. }) if status.contains("SIGSEGV")),
            "{e:?}"
        );
        let sum: u64 = pool
            .map(|x: u64| x * 2, 0..1000)
            .unwrap()
            .map(Result::unwrap)
            .sum();
        assert_eq!(sum, 999_000);
        assert_eq!(pool.worker_pids().len(), 2);
    }
}

//! `AnyExecutor`: URLs and the environment pick the backend; bad URLs say what was expected.

mod cluster_support;

use cluster_support::Redis;
use fanout::{AnyExecutor, Error, Executor};

fn triple(x: u64) -> u64 {
    3 * x
}

fn run_workload(ex: &AnyExecutor) -> u64 {
    ex.map(triple, 0..100).unwrap().map(Result::unwrap).sum()
}

#[test]
fn urls_select_backends() {
    for (url, kind) in [
        ("thread://2", "thread"),
        ("thread://", "thread"),
        ("process://2", "process"),
        ("process://1?start=fork", "process"),
        ("process://1?start=spawn&max_tasks_per_child=10", "process"),
    ] {
        let ex = AnyExecutor::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(ex.kind(), kind, "{url}");
        assert_eq!(run_workload(&ex), 14850, "{url}");
        ex.shutdown(true, false);
        assert!(matches!(ex.submit(triple, (1,)), Err(Error::Shutdown)));
    }
}

#[test]
fn malformed_urls_explain_what_was_expected() {
    for url in [
        "",
        "thread",
        "thread://two",
        "thread://0",
        "thread://2?x=1",
        "process://0",
        "process://2?start=vfork",
        "process://2?bogus",
        "process://2?max_tasks_per_child=lots",
        "ftp://example.org",
    ] {
        match AnyExecutor::from_url(url) {
            Err(Error::InvalidArgument { message }) => {
                assert!(
                    message.contains("expected") || message.contains("at least 1"),
                    "{url}: message should say what is expected: {message}"
                );
            }
            other => panic!("{url}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[test]
fn from_env_reads_fanout_executor() {
    // One test touches the variable, so no other test in this binary races it.
    std::env::set_var("FANOUT_EXECUTOR", "process://1");
    let ex = AnyExecutor::from_env().unwrap();
    assert_eq!(ex.kind(), "process");
    drop(ex);
    std::env::set_var("FANOUT_EXECUTOR", "nonsense");
    assert!(matches!(
        AnyExecutor::from_env(),
        Err(Error::InvalidArgument { .. })
    ));
    std::env::remove_var("FANOUT_EXECUTOR");
    assert_eq!(AnyExecutor::from_env().unwrap().kind(), "thread");
}

#[test]
fn redis_url_selects_a_cluster_with_local_workers() {
    let redis = Redis::start();
    let url = format!("{}?namespace=any-exec&workers=2", redis.url());
    let ex = AnyExecutor::from_url(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(ex.kind(), "cluster");
    assert_eq!(run_workload(&ex), 14850);
    if let AnyExecutor::Cluster(c) = &ex {
        assert_eq!(c.worker_pids().len(), 2);
    }
    ex.shutdown(true, false);
    for bad in [
        format!("{}?workers=many", redis.url()),
        format!("{}?namespace=", redis.url()),
    ] {
        assert!(
            matches!(
                AnyExecutor::from_url(&bad),
                Err(Error::InvalidArgument { .. })
            ),
            "{bad}"
        );
    }
}

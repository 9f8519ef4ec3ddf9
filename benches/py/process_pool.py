"""Python peers for benches/process_pool.rs, all with 2 worker processes.

Invoked by the Rust bench as

    python3 benches/py/process_pool.py EXECUTOR throughput N
    python3 benches/py/process_pool.py EXECUTOR latency N WARMUP
    python3 benches/py/process_pool.py EXECUTOR map N CHUNKSIZE
    python3 benches/py/process_pool.py EXECUTOR echo KIB ROUNDS

where EXECUTOR is one of

    fork        concurrent.futures.ProcessPoolExecutor, mp_context "fork"
    forkserver  concurrent.futures.ProcessPoolExecutor, mp_context "forkserver"
    loky        loky.get_reusable_executor(max_workers=2)

It runs one measurement (the Rust side repeats and takes medians) and prints
one JSON line on stdout:

    {"workload": "throughput", "n": N, "seconds": S}
    {"workload": "latency", "n": N, "samples_ns": [...]}       (sorted)
    {"workload": "map", "n": N, "seconds": S}
    {"workload": "echo", "bytes": B, "seconds": [S, ...]}      (one per round)

The executor is created and warmed up (every worker started and running
tasks) before the clock starts, as on the Rust side. A missing module (loky)
exits with status 3 and a message on stderr.
"""

import json
import multiprocessing
import sys
import time

import timing

WORKERS = 2


def add(a, b):
    return a + b


def square(x):
    return x * x


def echo(v):
    return v


def make_executor(kind):
    if kind in ("fork", "forkserver"):
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context(kind)
        return ProcessPoolExecutor(max_workers=WORKERS, mp_context=ctx)
    if kind == "loky":
        try:
            import loky
        except ImportError as e:
            print(f"loky is not installed ({e}); pip install loky", file=sys.stderr)
            sys.exit(3)
        return loky.get_reusable_executor(max_workers=WORKERS)
    raise SystemExit(f"unknown executor {kind!r}")


def warm_up(pool):
    # Enough tasks, in flight together, that every worker has started and run some.
    for f in [pool.submit(add, i, 1) for i in range(200)]:
        f.result()


def throughput(pool, n):
    seconds = timing.throughput(
        lambda i: pool.submit(add, i, 1), lambda fs: [f.result() for f in fs], n
    )
    return {"workload": "throughput", "n": n, "seconds": seconds}


def latency(pool, n, warmup):
    samples = timing.round_trips_ns(lambda i: pool.submit(add, i, 1).result(), n, warmup)
    return {"workload": "latency", "n": n, "samples_ns": samples}


def map_(pool, n, chunksize):
    start = time.perf_counter()
    total = 0
    for r in pool.map(square, range(n), chunksize=chunksize):
        total += r
    seconds = time.perf_counter() - start
    assert total == (n - 1) * n * (2 * n - 1) // 6, total
    return {"workload": "map", "n": n, "seconds": seconds}


def echo_(pool, kib, rounds):
    payload = bytes(range(256)) * (kib * 4)
    assert len(payload) == kib << 10
    # One untimed round so both sides have touched buffers of this size.
    assert len(pool.submit(echo, payload).result()) == len(payload)
    seconds = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        back = pool.submit(echo, payload).result()
        seconds.append(time.perf_counter() - t0)
        assert len(back) == len(payload) and back[-1] == payload[-1]
        del back
    return {"workload": "echo", "bytes": len(payload), "seconds": seconds}


def main(argv):
    kind, workload, n = argv[1], argv[2], int(argv[3])
    pool = make_executor(kind)
    warm_up(pool)
    if workload == "throughput":
        out = throughput(pool, n)
    elif workload == "latency":
        out = latency(pool, n, int(argv[4]) if len(argv) > 4 else n // 10)
    elif workload == "map":
        out = map_(pool, n, int(argv[4]) if len(argv) > 4 else 100)
    elif workload == "echo":
        out = echo_(pool, n, int(argv[4]) if len(argv) > 4 else 3)
    else:
        raise SystemExit(f"unknown workload {workload!r}")
    pool.shutdown(wait=True)
    out["executor"] = kind
    out["python"] = sys.version.split()[0]
    if kind == "loky":
        import loky

        out["loky"] = loky.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)

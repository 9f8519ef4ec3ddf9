"""Python peer for benches/thread_pool.rs: ThreadPoolExecutor(max_workers=2).

Invoked by the Rust bench as

    python3 benches/py/thread_pool.py throughput N
    python3 benches/py/thread_pool.py latency N WARMUP
    python3 benches/py/thread_pool.py map N
    python3 benches/py/thread_pool.py smoke N_THROUGHPUT N_LATENCY WARMUP N_MAP

It runs one measurement (the Rust side repeats and takes medians) and prints
one JSON line on stdout:

    {"workload": "throughput", "n": N, "seconds": S}
    {"workload": "latency", "n": N, "samples_ns": [...]}     (sorted)
    {"workload": "map", "n": N, "seconds": S}

`smoke` (the bench's quick mode) runs all three in one process and prints
three lines. The pool is created and warmed up before the clock starts, as on the Rust side.
"""

import json
import sys
import time

import timing
from concurrent.futures import ThreadPoolExecutor

WORKERS = 2


def add(a, b):
    return a + b


def square(x):
    return x * x


def warm_up(pool):
    for f in [pool.submit(add, i, 1) for i in range(100)]:
        f.result()


def throughput(pool, n):
    seconds = timing.throughput(
        lambda i: pool.submit(add, i, 1), lambda fs: [f.result() for f in fs], n
    )
    return {"workload": "throughput", "n": n, "seconds": seconds}


def latency(pool, n, warmup):
    samples = timing.round_trips_ns(lambda i: pool.submit(add, i, 1).result(), n, warmup)
    return {"workload": "latency", "n": n, "samples_ns": samples}


def map_(pool, n):
    start = time.perf_counter()
    total = 0
    for r in pool.map(square, range(n)):
        total += r
    seconds = time.perf_counter() - start
    assert total == (n - 1) * n * (2 * n - 1) // 6, total
    return {"workload": "map", "n": n, "seconds": seconds}


def main(argv):
    workload, n = argv[1], int(argv[2])
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        warm_up(pool)
        if workload == "throughput":
            outs = [throughput(pool, n)]
        elif workload == "latency":
            outs = [latency(pool, n, int(argv[3]) if len(argv) > 3 else n // 10)]
        elif workload == "map":
            outs = [map_(pool, n)]
        elif workload == "smoke":
            outs = [
                throughput(pool, n),
                latency(pool, int(argv[3]), int(argv[4])),
                map_(pool, int(argv[5])),
            ]
        else:
            raise SystemExit(f"unknown workload {workload!r}")
    for out in outs:
        out["python"] = sys.version.split()[0]
        print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)

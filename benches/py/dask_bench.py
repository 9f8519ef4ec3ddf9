"""Dask distributed peer for benches/cluster.rs.

Runs a LocalCluster with 2 worker processes of 1 thread each (processes=True)
and prints one JSON line:

  {"submit_tps": ..., "map_tps": ..., "p50_us": ..., "p99_us": ..., "version": ...}

* submit_tps: `client.submit(add, i, 1, pure=False)` for every i, then `client.gather`.
* map_tps:    `client.map(add, range(n), [1] * n, pure=False)`, then `client.gather`.
* p50/p99_us: one `client.submit(add, i, 1, pure=False).result()` round trip at a time.

Usage: python3 dask_bench.py TASKS LATENCY_SAMPLES
"""

import json
import logging
import sys
import time
import warnings

import timing


def add(a, b):
    return a + b


def main():
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    import dask
    from dask.distributed import Client

    with timing.quiet_local_cluster() as cluster, Client(cluster) as client:
        # Warm up: both workers have run tasks.
        client.gather(client.map(add, range(200), [1] * 200, pure=False))

        submit_s = timing.throughput(
            lambda i: client.submit(add, i, 1, pure=False), client.gather, tasks
        )

        t = time.perf_counter()
        fs = client.map(add, range(tasks), [1] * tasks, pure=False)
        total = sum(client.gather(fs))
        map_s = time.perf_counter() - t
        assert total == timing.sum_of_add(tasks)
        del fs

        lat = timing.round_trips_ns(
            lambda i: client.submit(add, i, 1, pure=False).result(), samples, samples // 10
        )
        p50, p99 = timing.p50_p99_us(lat)
        print(
            json.dumps(
                {
                    "submit_tps": tasks / submit_s,
                    "map_tps": tasks / map_s,
                    "p50_us": p50,
                    "p99_us": p99,
                    "version": dask.__version__,
                }
            )
        )


if __name__ == "__main__":
    main()

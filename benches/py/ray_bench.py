"""Ray peer for benches/cluster.rs.

Starts a local Ray instance with 2 CPUs (so 2 worker processes run tasks at
once, like fanout's 2 local workers) and prints one JSON line:

  {"submit_tps": ..., "map_tps": ..., "p50_us": ..., "p99_us": ..., "version": ...}

* submit_tps: `add.remote(i, 1)` for every i, then one `ray.get` of all refs.
* map_tps:    Ray has no `map`; the same items in tasks of 100
              (`add_chunk.remote(items)`), as fanout's `map_with(chunksize 100)`.
* p50/p99_us: one `ray.get(add.remote(i, 1))` round trip at a time.

Usage: python3 ray_bench.py TASKS LATENCY_SAMPLES
"""

import json
import logging
import os
import sys
import time
import warnings

import timing


def main():
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    warnings.simplefilter("ignore")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )

    @ray.remote
    def add(a, b):
        return a + b

    @ray.remote
    def add_chunk(items):
        return [a + 1 for a in items]

    try:
        # Warm up: both worker processes have run tasks.
        ray.get([add.remote(i, 1) for i in range(400)])

        submit_s = timing.throughput(lambda i: add.remote(i, 1), ray.get, tasks)

        t = time.perf_counter()
        chunks = [list(range(s, min(s + 100, tasks))) for s in range(0, tasks, 100)]
        refs = [add_chunk.remote(c) for c in chunks]
        total = sum(sum(r) for r in ray.get(refs))
        map_s = time.perf_counter() - t
        assert total == timing.sum_of_add(tasks)
        del refs

        lat = timing.round_trips_ns(
            lambda i: ray.get(add.remote(i, 1)), samples, samples // 10
        )
        p50, p99 = timing.p50_p99_us(lat)
        print(
            json.dumps(
                {
                    "submit_tps": tasks / submit_s,
                    "map_tps": tasks / map_s,
                    "p50_us": p50,
                    "p99_us": p99,
                    "version": ray.__version__,
                }
            ),
            flush=True,
        )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

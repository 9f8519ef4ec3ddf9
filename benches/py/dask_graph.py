"""Dask distributed peer for benches/graph.rs.

A LocalCluster with 2 worker processes of 1 thread each. One round: PAIRS
producers of 1 MiB each, each consumed by a consumer that takes the producer's
future as its argument (the value moves worker to worker, not through the
client); the client gathers only the consumers' small results. Prints one
JSON line: {"seconds": [...], "version": ...}

Usage: python3 dask_graph.py PAIRS REPEATS
"""

import json
import logging
import sys
import time
import warnings

import timing

MIB = 1 << 20


def produce(i):
    return bytes([i % 251]) * MIB


def consume(b):
    return len(b) + b[0]


def main():
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    import dask
    from dask.distributed import Client

    with timing.quiet_local_cluster() as cluster, Client(cluster) as client:
        # Warm up: both workers have run tasks.
        client.gather([client.submit(consume, client.submit(produce, i, pure=False), pure=False) for i in range(4)])
        seconds = []
        for _ in range(repeats):
            t = time.perf_counter()
            fs = []
            for i in range(pairs):
                p = client.submit(produce, i, pure=False)
                fs.append(client.submit(consume, p, pure=False))
            total = sum(client.gather(fs))
            seconds.append(time.perf_counter() - t)
            assert total == sum(MIB + i % 251 for i in range(pairs))
            del fs, p
        print(json.dumps({"seconds": seconds, "version": dask.__version__}))


if __name__ == "__main__":
    main()

"""Timing loops shared by the Python peers of the benches.

Each peer passes its own way of making a call, so the same loop times
`concurrent.futures`, loky, Dask and Ray. The task functions stay in the
peer scripts (workers must import them by their module there).
"""

import time


def sum_of_add(n):
    """What `add(i, 1)` summed over `range(n)` gives."""
    return n * (n - 1) // 2 + n


def throughput(submit, gather, n):
    """Seconds to `submit(i)` for every i in range(n) (each `add(i, 1)`) and
    then `gather` every result; checks the sum."""
    start = time.perf_counter()
    handles = [submit(i) for i in range(n)]
    total = sum(gather(handles))
    seconds = time.perf_counter() - start
    assert total == sum_of_add(n), total
    return seconds


def round_trips_ns(round_trip, n, warmup):
    """Sorted nanoseconds of `n` calls of `round_trip(i)` after `warmup` untimed ones."""
    clock = time.perf_counter_ns
    for i in range(warmup):
        round_trip(i)
    samples = []
    for i in range(n):
        t0 = clock()
        round_trip(i)
        samples.append(clock() - t0)
    samples.sort()
    return samples


def p50_p99_us(sorted_ns):
    """The median and 99th percentile of sorted nanoseconds, in µs."""
    n = len(sorted_ns)
    return sorted_ns[n // 2] / 1e3, sorted_ns[min(n - 1, int(n * 0.99))] / 1e3


def quiet_local_cluster():
    """Dask's LocalCluster as both Dask peers use it: 2 worker processes of
    1 thread each, no dashboard, no logs."""
    import logging

    from dask.distributed import LocalCluster

    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    )

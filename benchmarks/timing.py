"""Timing helper shared by the benchmark scripts."""
import time


def best_ms(fn, repeats, sync):
    """Best of `repeats` runs of fn() in ms, after one untimed warm-up run (compilation, caches); `sync()` waits
    for the device. The minimum is the figure least disturbed by other load on a shared machine."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best * 1e3

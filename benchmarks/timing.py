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


def best_ms_interleaved(fn_a, fn_b, repeats_a, repeats_b, sync):
    """(best ms of fn_a, best ms of fn_b), timed alternately (a, b, a, b, ...; the cheaper one repeated more when
    repeats_a > repeats_b), so that bursts of load from other jobs on a shared machine hit both sides alike."""
    for fn in (fn_a, fn_b):
        fn()
        sync()
    best = [float("inf"), float("inf")]
    for r in range(max(repeats_a, repeats_b)):
        for k, (fn, reps) in enumerate(((fn_a, repeats_a), (fn_b, repeats_b))):
            if r < reps:
                t = time.perf_counter()
                fn()
                sync()
                best[k] = min(best[k], time.perf_counter() - t)
    return best[0] * 1e3, best[1] * 1e3

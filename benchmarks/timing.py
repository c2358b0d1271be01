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
    repeats_a > repeats_b), so that bursts of load from other jobs on a shared machine hit both sides alike.

    After each run of fn_b (the pure-PyTorch reference), fn_a runs once untimed before it is timed: torch's
    OpenMP workers spin for a few ms after a parallel torch op, and on a small machine they compete with the
    Taichi kernels that follow (a rasterize right after a parallel torch op took 2.7-3.7 ms instead of 1.3 ms
    on the 2-core machine, docs/performance.md). Each side is timed in the steady state of its own calls; fn_a
    leaves nothing spinning behind (Taichi's workers sleep as soon as a kernel ends)."""
    for fn in (fn_a, fn_b):
        fn()
        sync()
    best = [float("inf"), float("inf")]
    for r in range(max(repeats_a, repeats_b)):
        for k, (fn, reps) in enumerate(((fn_a, repeats_a), (fn_b, repeats_b))):
            if r < reps:
                if k == 0 and r > 0 and r - 1 < repeats_b:  # fn_b ran just before: let its workers settle
                    fn()
                    sync()
                t = time.perf_counter()
                fn()
                sync()
                best[k] = min(best[k], time.perf_counter() - t)
    return best[0] * 1e3, best[1] * 1e3

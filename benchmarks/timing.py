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


SETTLE_MS = 20.0


def _settle(fn, sync, settle_ms):
    """Run fn untimed until settle_ms have passed (at least once)."""
    end = time.perf_counter() + settle_ms * 1e-3
    while True:
        fn()
        sync()
        if time.perf_counter() >= end:
            return


def best_ms_interleaved(fn_a, fn_b, repeats_a, repeats_b, sync, settle_ms=SETTLE_MS):
    """(best ms of fn_a, best ms of fn_b), timed alternately (a, b, a, b, ...; the cheaper one repeated more when
    repeats_a > repeats_b), so that bursts of load from other jobs on a shared machine hit both sides alike.

    Each side is timed in its own steady state, as in a loop of its own calls: whenever the other side ran in
    between, the function first runs untimed for `settle_ms` (at least once). After its last parallel op torch's
    OpenMP workers spin for about 10 ms, and on a small machine they compete with whatever runs next (measured
    on the 2-core machine: mofa_tk's B = 1 rasterize right after the reference took 2.7 ms median, 1.2 ms by
    the 9th call); the reference in turn would start with cold caches and sleeping
    workers after mofa_tk's runs. What a mixed pipeline pays for this contention is described in
    docs/architecture.md."""
    for fn in (fn_a, fn_b):
        fn()
        sync()
    best = [float("inf"), float("inf")]
    last = None
    for r in range(max(repeats_a, repeats_b)):
        for k, (fn, reps) in enumerate(((fn_a, repeats_a), (fn_b, repeats_b))):
            if r < reps:
                if last is not None and last != k:  # the other side ran since: reach this side's steady state
                    _settle(fn, sync, settle_ms)
                t = time.perf_counter()
                fn()
                sync()
                best[k] = min(best[k], time.perf_counter() - t)
                last = k
    return best[0] * 1e3, best[1] * 1e3

"""How the kernels' loops walk pixels and batch items.

Per-pixel loops (`row_run`, `flat_run`) take runs of consecutive pixels of one row (or of one item's flat pixels)
of one batch item, batch item outermost; loops with the batch innermost (per vertex or per triangle) loop over
`items(B, single)`, which compiles to no loop at all for B = 1.

A loop iteration handles one run of `run` pixels (`n_runs` = ceil(W / run) runs per row): one integer division
pair per run instead of per pixel, and fewer iterations, each of which costs Taichi's CPU backend a call.
Batch item outermost keeps each thread on whole images (Taichi 1.7 cuts a CPU loop into one contiguous chunk per
thread), so each thread's gradient copy and caches hold fewer vertices. GPU backends use runs of one pixel, one
pixel per thread (mofa_tk/ops/raster.py `pixel_runs`). The interpolate backward keeps its batch-innermost loop,
where runs were no faster. Figures: docs/performance.md.
"""
import taichi as ti


@ti.func
def row_run(r, run, n_runs, H, W):
    """(b, i, j0, j1): batch item b, row i and columns [j0, j1) of the r-th run, r in [0, B H n_runs)."""
    per_item = H * n_runs
    b = r // per_item
    rr = r - b * per_item
    i = rr // n_runs
    j0 = (rr - i * n_runs) * run
    return b, i, j0, ti.min(j0 + run, W)


@ti.func
def flat_run(r, run, n_runs, N):
    """(b, q0, q1): batch item b and its flat pixels [q0, q1) of the r-th run, r in [0, B n_runs), for items of N
    pixels cut into n_runs = ceil(N / run) runs."""
    b = r // n_runs
    q0 = (r - b * n_runs) * run
    return b, q0, ti.min(q0 + run, N)


@ti.func
def items(B, single: ti.template()):
    """Number of batch items for a batch loop `for b in range(items(B, single))`: the constant 1 when single
    (B == 1, a template argument), so the compiler drops the loop (about 10% faster for B = 1)."""
    n = B
    if ti.static(single):
        n = 1
    return n

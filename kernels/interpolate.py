"""Barycentric interpolation of vertex attributes at rasterized pixels, and its adjoint.

attr has a leading dimension of 1 (shared by the batch) or B. Pixels with triangle id 0 get zeros.
Arrays are flat (1-D) views of contiguous tensors, as in kernels/raster.py: attr[a, v, ch] at (a V + v) C + ch,
rast[p, :] at 4 p and out[p, ch] at C p + ch for the flat pixel index p = (b H + i) W + j. The channel loops are
unrolled at compile time when CS = C > 0 (one compiled kernel per small C); CS = 0 loops over C at run time.
"""
import taichi as ti

from .runs import flat_run, items
from .scatter import add, scatter_base

nd = ti.types.ndarray
MAX_STATIC_C = 4  # channel counts up to this are unrolled (CS = C)


@ti.func
def _corners(rast: ti.template(), tris: ti.template(), p):
    """(triangle id + 1, u, v, vertex indices) at flat pixel p; tid 0 for background."""
    tid = ti.cast(rast[4 * p + 3], ti.i32)
    u, v = rast[4 * p], rast[4 * p + 1]
    v0, v1, v2 = 0, 0, 0
    if tid > 0:
        v0, v1, v2 = tris[3 * (tid - 1)], tris[3 * (tid - 1) + 1], tris[3 * (tid - 1) + 2]
    return tid, u, v, v0, v1, v2


@ti.kernel
def interpolate_fwd(attr: nd(dtype=ti.f32, ndim=1),                   # (1 or B, V, C) f32 vertex attributes
                    rast: nd(dtype=ti.f32, ndim=1),                   # (B H W 4) f32 from rasterize
                    tris: nd(dtype=ti.i32, ndim=1),                   # (T 3) i32
                    out: nd(dtype=ti.f32, ndim=1),                    # (B H W C) f32 output
                    B: ti.i32,                                        # batch size
                    HW: ti.i32,                                       # pixels per item, H W
                    V: ti.i32,                                        # vertices per item
                    C: ti.i32,                                        # channels
                    shared: ti.i32,                                   # 1 when attr's batch is 1 (shared)
                    run: ti.i32,                                      # pixels per loop iteration (kernels/runs.py)
                    n_runs: ti.i32,                                   # runs per row (or per item)
                    CS: ti.template()):                               # C when the channel loops are unrolled, else 0
    """Loops over runs of `run` pixels of one batch item (n_runs = ceil(H W / run) per item, kernels/runs.py)."""
    for r in range(B * n_runs):
        b, q0, q1 = flat_run(r, run, n_runs, HW)
        ba = 0 if shared else b
        for q in range(q0, q1):
            p = b * HW + q
            tid, u, v, v0, v1, v2 = _corners(rast, tris, p)
            o0, o1, o2 = (ba * V + v0) * C, (ba * V + v1) * C, (ba * V + v2) * C
            w0 = 1.0 - u - v
            if ti.static(CS > 0):
                for ch in ti.static(range(CS)):
                    val = 0.0
                    if tid > 0:
                        val = w0 * attr[o0 + ch] + u * attr[o1 + ch] + v * attr[o2 + ch]
                    out[C * p + ch] = val
            else:
                if tid > 0:
                    for ch in range(C):
                        out[C * p + ch] = w0 * attr[o0 + ch] + u * attr[o1 + ch] + v * attr[o2 + ch]
                else:
                    for ch in range(C):
                        out[C * p + ch] = 0.0


@ti.func
def _channel_bwd(attr: ti.template(), grad_out: ti.template(), grad_attr: ti.template(), io, a0i, a1i, a2i, base,
                 w0, u, v, want_attr, scatter: ti.template()):
    """One channel of one pixel's adjoint (output element io, attribute elements a0i..a2i): adds the barycentric
    weights times grad_out into grad_attr (when want_attr) and returns grad_out * d out / d (u, v)."""
    g = grad_out[io]
    a0 = attr[a0i]
    if want_attr != 0:
        add(grad_attr, base + a0i, w0 * g, scatter)
        add(grad_attr, base + a1i, u * g, scatter)
        add(grad_attr, base + a2i, v * g, scatter)
    return g * (attr[a1i] - a0), g * (attr[a2i] - a0)


@ti.kernel
def interpolate_bwd(attr: nd(dtype=ti.f32, ndim=1),                   # (1 or B, V, C) f32
                    rast: nd(dtype=ti.f32, ndim=1),                   # (B H W 4) f32
                    tris: nd(dtype=ti.i32, ndim=1),                   # (T 3) i32
                    grad_out: nd(dtype=ti.f32, ndim=1),               # (B H W C) f32 d loss / d out
                    grad_attr: nd(dtype=ti.f32, ndim=1),              # (copies, 1 or B, V, C) f32, zero on entry
                    grad_rast: nd(dtype=ti.f32, ndim=1),              # (B H W 4) f32 output d loss / d rast
                    B: ti.i32,                                        # batch size
                    HW: ti.i32,                                       # pixels per item, H W
                    V: ti.i32,                                        # vertices per item
                    C: ti.i32,                                        # channels
                    shared: ti.i32,                                   # 1 when attr's batch is 1 (shared)
                    want_attr: ti.i32,                                # 1 when attr needs a gradient
                    CS: ti.template(),                                # C when the channel loops are unrolled, else 0
                    scatter: ti.template(),                           # ATOMIC or COPIES (kernels/scatter.py)
                    single: ti.template()):                           # B == 1: batch loops compiled away
    """grad_attr (zero on entry; one copy of (A V C) per CPU thread for scatter = COPIES, see
    kernels/scatter.py) += bary * grad_out; grad_rast[..., 0:2] = d out / d (u, v), [..., 2:4] = 0.
    single (B == 1): the batch loop compiled away (kernels/runs.py `items`)."""
    for q in range(HW):  # not in runs (kernels/runs.py): measured no faster here
        for b in range(items(B, single)):  # batch innermost: no integer div/mod per element
            p = b * HW + q
            tid, u, v, v0, v1, v2 = _corners(rast, tris, p)
            gu, gv = 0.0, 0.0
            if tid > 0:
                ba = 0 if shared else b
                o0, o1, o2 = (ba * V + v0) * C, (ba * V + v1) * C, (ba * V + v2) * C
                w0 = 1.0 - u - v
                base = scatter_base((1 if shared else B) * V * C, scatter)
                if ti.static(CS > 0):
                    for ch in ti.static(range(CS)):
                        du, dv = _channel_bwd(attr, grad_out, grad_attr, C * p + ch, o0 + ch, o1 + ch, o2 + ch, base,
                                              w0, u, v, want_attr, scatter)
                        gu += du
                        gv += dv
                else:
                    for ch in range(C):
                        du, dv = _channel_bwd(attr, grad_out, grad_attr, C * p + ch, o0 + ch, o1 + ch, o2 + ch, base,
                                              w0, u, v, want_attr, scatter)
                        gu += du
                        gv += dv
            grad_rast[4 * p], grad_rast[4 * p + 1], grad_rast[4 * p + 2], grad_rast[4 * p + 3] = gu, gv, 0.0, 0.0

"""Texture sampling (nearest / bilinear, wrap / clamp / zero boundaries), and its adjoint.

Conventions (nvdiffrast's): tex is (1 or B, TH, TW, C); uv (B, H, W, 2) with u along the texture's width and v
along its rows (memory order), (0, 0) the outer corner of texel (0, 0) and (1, 1) that of texel (TH-1, TW-1), so
texel (i, j) has its centre at ((j + 0.5) / TW, (i + 0.5) / TH). Bilinear filtering weighs the four texels
around x = u TW - 0.5, y = v TH - 0.5; nearest takes texel (floor(v TH), floor(u TW)).
Boundaries: wrap (the texture repeats), clamp (indices clamped to the edge texels), zero (texels outside read 0).

Arrays are flat (1-D) views of contiguous tensors: tex[a, i, j, c] at ((a TH + i) TW + j) C + c, uv[p, :] at 2 p
and out[p, c] at C p + c for the flat pixel index p. FILTER and BOUNDARY are template arguments (one compiled
kernel per combination); the forward's channel loop is unrolled for C <= MAX_STATIC_C (template CS = C).
"""
import taichi as ti

from .runs import flat_run
from .scatter import add, scatter_base

nd = ti.types.ndarray
NEAREST, LINEAR = 0, 1
WRAP, CLAMP, ZERO = 0, 1, 2
MAX_STATIC_C = 4  # channel counts up to this are unrolled in the forward (CS = C)


@ti.func
def _index(i, n, boundary: ti.template()):
    """(index into [0, n), 1.0 if the texel counts else 0.0) for texel coordinate i along an axis of n texels."""
    k, ok = i, 1.0
    if ti.static(boundary == WRAP):
        if k < 0:
            k += n
        if k >= n:
            k -= n
    elif ti.static(boundary == CLAMP):
        k = ti.min(ti.max(i, 0), n - 1)
    else:
        if i < 0 or i >= n:
            k, ok = 0, 0.0
    return k, ok


@ti.func
def _taps(u, v, TH, TW, filt: ti.template(), boundary: ti.template()):
    """The texels a sample reads: rows i0, i1, columns j0, j1, their validity (0 / 1 per row and column), and
    the bilinear fractions (fx, fy); nearest uses (i0, j0) only."""
    i0, i1, j0, j1 = 0, 0, 0, 0
    ri0, ri1, cj0, cj1 = 0.0, 0.0, 0.0, 0.0
    fx, fy = 0.0, 0.0
    # reduce the coordinates first, so texel indices stay small for any finite uv: the fractional part under
    # wrap (derivative 1), and [-1, 2] otherwise (beyond it every tap is outside, or the same edge texel)
    uu, vv = u, v
    if ti.static(boundary == WRAP):
        uu, vv = u - ti.floor(u), v - ti.floor(v)
    else:
        uu, vv = ti.min(ti.max(u, -1.0), 2.0), ti.min(ti.max(v, -1.0), 2.0)
    if ti.static(filt == NEAREST):
        i0, ri0 = _index(ti.cast(ti.floor(vv * TH), ti.i32), TH, boundary)
        j0, cj0 = _index(ti.cast(ti.floor(uu * TW), ti.i32), TW, boundary)
    else:
        x = uu * TW - 0.5
        y = vv * TH - 0.5
        xf, yf = ti.floor(x), ti.floor(y)
        fx, fy = x - xf, y - yf
        xi, yi = ti.cast(xf, ti.i32), ti.cast(yf, ti.i32)
        i0, ri0 = _index(yi, TH, boundary)
        i1, ri1 = _index(yi + 1, TH, boundary)
        j0, cj0 = _index(xi, TW, boundary)
        j1, cj1 = _index(xi + 1, TW, boundary)
    return i0, i1, j0, j1, ri0, ri1, cj0, cj1, fx, fy


@ti.func
def _bilinear(base, i0, i1, j0, j1, ri0, ri1, cj0, cj1, fx, fy, TW, C):
    """Weights (w00, w01, w10, w11) of the four taps (0 for taps outside under the zero boundary) and their
    flat offsets (o00, o01, o10, o11) into tex; rows i0 / i1 of item row offset `base`, columns j0 / j1."""
    w00 = (1.0 - fx) * (1.0 - fy) * ri0 * cj0
    w01 = fx * (1.0 - fy) * ri0 * cj1
    w10 = (1.0 - fx) * fy * ri1 * cj0
    w11 = fx * fy * ri1 * cj1
    o00, o01 = ((base + i0) * TW + j0) * C, ((base + i0) * TW + j1) * C
    o10, o11 = ((base + i1) * TW + j0) * C, ((base + i1) * TW + j1) * C
    return w00, w01, w10, w11, o00, o01, o10, o11


@ti.kernel
def texture_fwd(tex: nd(dtype=ti.f32, ndim=1),                 # (1 or B, TH, TW, C) f32
                uv: nd(dtype=ti.f32, ndim=1),                  # (B, H, W, 2) f32
                out: nd(dtype=ti.f32, ndim=1),                 # (B, H, W, C) f32 output
                B: ti.i32,                                     # batch size
                HW: ti.i32,                                    # samples per item, H W
                TH: ti.i32, TW: ti.i32, C: ti.i32,             # texture rows, columns, channels
                shared: ti.i32,                                # 1 when tex's batch is 1 (shared)
                run: ti.i32, n_runs: ti.i32,                   # pixel runs (kernels/runs.py)
                filt: ti.template(), boundary: ti.template(),
                CS: ti.template()):                            # C when the channel loops are unrolled, else 0
    for r in range(B * n_runs):
        b, q0, q1 = flat_run(r, run, n_runs, HW)
        ba = 0 if shared else b
        for q in range(q0, q1):
            p = b * HW + q
            u, v = uv[2 * p], uv[2 * p + 1]
            i0, i1, j0, j1, ri0, ri1, cj0, cj1, fx, fy = _taps(u, v, TH, TW, filt, boundary)
            base = ba * TH
            if ti.static(filt == NEAREST):
                w = ri0 * cj0
                o = ((base + i0) * TW + j0) * C
                if ti.static(CS > 0):
                    for c in ti.static(range(CS)):
                        out[C * p + c] = w * tex[o + c]
                else:
                    for c in range(C):
                        out[C * p + c] = w * tex[o + c]
            else:
                w00, w01, w10, w11, o00, o01, o10, o11 = _bilinear(base, i0, i1, j0, j1, ri0, ri1, cj0, cj1,
                                                                   fx, fy, TW, C)
                if ti.static(CS > 0):
                    for c in ti.static(range(CS)):
                        out[C * p + c] = (w00 * tex[o00 + c] + w01 * tex[o01 + c] + w10 * tex[o10 + c]
                                          + w11 * tex[o11 + c])
                else:
                    for c in range(C):
                        out[C * p + c] = (w00 * tex[o00 + c] + w01 * tex[o01 + c] + w10 * tex[o10 + c]
                                          + w11 * tex[o11 + c])


@ti.kernel
def texture_bwd(tex: nd(dtype=ti.f32, ndim=1),                 # (1 or B, TH, TW, C) f32
                uv: nd(dtype=ti.f32, ndim=1),                  # (B, H, W, 2) f32
                grad_out: nd(dtype=ti.f32, ndim=1),            # (B, H, W, C) f32 d loss / d out
                grad_tex: nd(dtype=ti.f32, ndim=1),            # (copies, 1 or B, TH, TW, C) f32, zero on entry
                grad_uv: nd(dtype=ti.f32, ndim=1),             # (B, H, W, 2) f32 output
                B: ti.i32, HW: ti.i32, TH: ti.i32, TW: ti.i32, C: ti.i32, shared: ti.i32,
                want_tex: ti.i32,                              # 1 when tex needs a gradient
                run: ti.i32, n_runs: ti.i32,
                filt: ti.template(), boundary: ti.template(),
                scatter: ti.template()):                       # ATOMIC or COPIES (kernels/scatter.py)
    """grad_tex += weights * grad_out (per-thread copies or atomics); grad_uv = grad_out . d out / d uv (zero for
    nearest filtering, which is piecewise constant)."""
    for r in range(B * n_runs):
        b, q0, q1 = flat_run(r, run, n_runs, HW)
        ba = 0 if shared else b
        gbase = scatter_base((1 if shared else B) * TH * TW * C, scatter)
        for q in range(q0, q1):
            p = b * HW + q
            u, v = uv[2 * p], uv[2 * p + 1]
            i0, i1, j0, j1, ri0, ri1, cj0, cj1, fx, fy = _taps(u, v, TH, TW, filt, boundary)
            base = ba * TH
            gu, gv = 0.0, 0.0
            if ti.static(filt == NEAREST):
                w = ri0 * cj0
                o = ((base + i0) * TW + j0) * C
                if want_tex != 0 and w != 0.0:
                    for c in range(C):
                        add(grad_tex, gbase + o + c, w * grad_out[C * p + c], scatter)
            else:
                w00, w01, w10, w11, o00, o01, o10, o11 = _bilinear(base, i0, i1, j0, j1, ri0, ri1, cj0, cj1,
                                                                   fx, fy, TW, C)
                for c in range(C):
                    g = grad_out[C * p + c]
                    # the taps' values as read (0 outside under the zero boundary)
                    t00, t01 = tex[o00 + c] * ri0 * cj0, tex[o01 + c] * ri0 * cj1
                    t10, t11 = tex[o10 + c] * ri1 * cj0, tex[o11 + c] * ri1 * cj1
                    gu += g * ((1.0 - fy) * (t01 - t00) + fy * (t11 - t10))
                    gv += g * ((1.0 - fx) * (t10 - t00) + fx * (t11 - t01))
                    if want_tex != 0:
                        add(grad_tex, gbase + o00 + c, w00 * g, scatter)
                        add(grad_tex, gbase + o01 + c, w01 * g, scatter)
                        add(grad_tex, gbase + o10 + c, w10 * g, scatter)
                        add(grad_tex, gbase + o11 + c, w11 * g, scatter)
            grad_uv[2 * p] = gu * TW
            grad_uv[2 * p + 1] = gv * TH


@ti.func
def _sample_level(mip: ti.template(), off, TH, TW, C, c, u, v, boundary: ti.template()):
    """Bilinear sample of channel c of one mip level stored at flat offset `off` (TH x TW texels)."""
    i0, i1, j0, j1, ri0, ri1, cj0, cj1, fx, fy = _taps(u, v, TH, TW, LINEAR, boundary)
    w00, w01, w10, w11, o00, o01, o10, o11 = _bilinear(0, i0, i1, j0, j1, ri0, ri1, cj0, cj1, fx, fy, TW, C)
    return (w00 * mip[off + o00 + c] + w01 * mip[off + o01 + c] + w10 * mip[off + o10 + c]
            + w11 * mip[off + o11 + c])


@ti.func
def _level_pair(lam, L, trilinear: ti.template()):
    """(level l0, level l1, weight t of l1) for mip level lam in [0, L - 1]: the two levels around it
    (trilinear) or the nearest one (t = 0)."""
    l0 = ti.cast(ti.floor(lam), ti.i32)
    t = lam - l0
    if ti.static(not trilinear):
        l0 = ti.cast(ti.floor(lam + 0.5), ti.i32)
        t = 0.0
    l0 = ti.min(ti.max(l0, 0), L - 1)
    l1 = ti.min(l0 + 1, L - 1)
    return l0, l1, t


@ti.kernel
def texture_mip_fwd(mip: nd(dtype=ti.f32, ndim=1),             # (1 or B, total) f32: the levels, each (THk, TWk, C)
                    levels: nd(dtype=ti.i32, ndim=1),          # (L, 3) i32: offset in an item, THk, TWk
                    uv: nd(dtype=ti.f32, ndim=1),              # (B, H, W, 2) f32
                    lam: nd(dtype=ti.f32, ndim=1),             # (B, H, W) f32 mip level in [0, L - 1]
                    out: nd(dtype=ti.f32, ndim=1),             # (B, H, W, C) f32 output
                    B: ti.i32, HW: ti.i32, L: ti.i32, C: ti.i32, total: ti.i32, shared: ti.i32,
                    run: ti.i32, n_runs: ti.i32,
                    trilinear: ti.template(), boundary: ti.template()):
    """Bilinear samples of the mip level(s) around lam, blended linearly between levels (trilinear) or from the
    nearest level."""
    for r in range(B * n_runs):
        b, q0, q1 = flat_run(r, run, n_runs, HW)
        item = (0 if shared else b) * total
        for q in range(q0, q1):
            p = b * HW + q
            u, v = uv[2 * p], uv[2 * p + 1]
            l0, l1, t = _level_pair(lam[p], L, trilinear)
            for c in range(C):
                s0 = _sample_level(mip, item + levels[3 * l0], levels[3 * l0 + 1], levels[3 * l0 + 2], C, c, u, v,
                                   boundary)
                val = s0
                if t > 0.0:
                    s1 = _sample_level(mip, item + levels[3 * l1], levels[3 * l1 + 1], levels[3 * l1 + 2], C, c, u,
                                       v, boundary)
                    val = (1.0 - t) * s0 + t * s1
                out[C * p + c] = val


@ti.func
def _level_bwd(mip: ti.template(), grad_mip: ti.template(), gbase, off, TH, TW, C, u, v, p, scale,
               grad_out: ti.template(), want_mip, boundary: ti.template(), scatter: ti.template()):
    """Adjoint of `scale` x (bilinear sample of one level) for every channel at pixel p: scatters into grad_mip
    and returns (d / d u, d / d v) summed over channels, and the samples' dot product with grad_out."""
    i0, i1, j0, j1, ri0, ri1, cj0, cj1, fx, fy = _taps(u, v, TH, TW, LINEAR, boundary)
    w00, w01, w10, w11, o00, o01, o10, o11 = _bilinear(0, i0, i1, j0, j1, ri0, ri1, cj0, cj1, fx, fy, TW, C)
    gu, gv, gs = 0.0, 0.0, 0.0
    for c in range(C):
        g = grad_out[C * p + c]
        t00, t01 = mip[off + o00 + c] * ri0 * cj0, mip[off + o01 + c] * ri0 * cj1
        t10, t11 = mip[off + o10 + c] * ri1 * cj0, mip[off + o11 + c] * ri1 * cj1
        gu += g * ((1.0 - fy) * (t01 - t00) + fy * (t11 - t10))
        gv += g * ((1.0 - fx) * (t10 - t00) + fx * (t11 - t01))
        gs += g * ((1.0 - fx) * (1.0 - fy) * t00 + fx * (1.0 - fy) * t01 + (1.0 - fx) * fy * t10 + fx * fy * t11)
        if want_mip != 0:
            sg = scale * g
            add(grad_mip, gbase + off + o00 + c, w00 * sg, scatter)
            add(grad_mip, gbase + off + o01 + c, w01 * sg, scatter)
            add(grad_mip, gbase + off + o10 + c, w10 * sg, scatter)
            add(grad_mip, gbase + off + o11 + c, w11 * sg, scatter)
    return scale * gu * TW, scale * gv * TH, gs


@ti.kernel
def texture_mip_bwd(mip: nd(dtype=ti.f32, ndim=1), levels: nd(dtype=ti.i32, ndim=1),
                    uv: nd(dtype=ti.f32, ndim=1), lam: nd(dtype=ti.f32, ndim=1),
                    grad_out: nd(dtype=ti.f32, ndim=1),          # (B, H, W, C) f32
                    grad_mip: nd(dtype=ti.f32, ndim=1),          # (copies, 1 or B, total) f32, zero on entry
                    grad_uv: nd(dtype=ti.f32, ndim=1),           # (B, H, W, 2) f32 output
                    grad_lam: nd(dtype=ti.f32, ndim=1),          # (B, H, W) f32 output
                    B: ti.i32, HW: ti.i32, L: ti.i32, C: ti.i32, total: ti.i32, shared: ti.i32, want_mip: ti.i32,
                    run: ti.i32, n_runs: ti.i32,
                    trilinear: ti.template(), boundary: ti.template(), scatter: ti.template()):
    """grad_mip += the sampling weights x grad_out; grad_uv; grad_lam = grad_out . (sample l1 - sample l0) for
    trilinear filtering between two levels (0 for the nearest level, and where lam sits on the last level)."""
    for r in range(B * n_runs):
        b, q0, q1 = flat_run(r, run, n_runs, HW)
        item = (0 if shared else b) * total
        gbase = scatter_base((1 if shared else B) * total, scatter)
        for q in range(q0, q1):
            p = b * HW + q
            u, v = uv[2 * p], uv[2 * p + 1]
            l0, l1, t = _level_pair(lam[p], L, trilinear)
            gu, gv, s0 = _level_bwd(mip, grad_mip, gbase, item + levels[3 * l0], levels[3 * l0 + 1],
                                    levels[3 * l0 + 2], C, u, v, p, 1.0 - t, grad_out, want_mip, boundary, scatter)
            gl = 0.0
            if ti.static(trilinear):
                if l1 != l0:
                    gu1, gv1, s1 = _level_bwd(mip, grad_mip, gbase, item + levels[3 * l1], levels[3 * l1 + 1],
                                              levels[3 * l1 + 2], C, u, v, p, t, grad_out, want_mip, boundary,
                                              scatter)
                    gu += gu1
                    gv += gv1
                    gl = s1 - s0
            grad_uv[2 * p] = gu
            grad_uv[2 * p + 1] = gv
            grad_lam[p] = gl

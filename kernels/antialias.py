"""Silhouette-edge antialiasing with gradients to vertex positions (after nvdiffrast's method).

For every pair of horizontally or vertically adjacent pixels whose triangle ids differ, we look for a
silhouette edge between the two pixel centres: for a triangle F covering one pixel centre Pf, the edge of F
through which the segment Pf -> Po leaves F. It is a silhouette when F has no neighbour across that edge, or
the neighbour faces the other way (front/back). When both pixels' triangles offer one, the nearer triangle's
wins. With the crossing at fraction t along Pf -> Po (t in [0, 1], in pixel units):
  - t > 0.5: F covers the part t - 0.5 of the other pixel:  out[o] += (t - 0.5) (c[f] - c[o])
  - t < 0.5: F misses the part 0.5 - t of its own pixel:    out[f] += (0.5 - t) (c[o] - c[f])
The blend weight depends on the edge's screen position, so the backward pass gives gradients to the two edge
vertices (through t) as well as to the colours. Forward gathers per pixel (no atomics, deterministic); the
backward scatters per pixel pair.
"""
import taichi as ti

nd = ti.types.ndarray


@ti.func
def _load(pos: ti.template(), b, vi):
    return ti.Vector([pos[b, vi, 0], pos[b, vi, 1], pos[b, vi, 2], pos[b, vi, 3]])


@ti.func
def _screen(p, H, W):
    return ti.Vector([(p[0] / p[3] + 1.0) * 0.5 * W, (p[1] / p[3] + 1.0) * 0.5 * H])


@ti.func
def _edge(A, Bv, P):
    return (Bv[0] - A[0]) * (P[1] - A[1]) - (Bv[1] - A[1]) * (P[0] - A[0])


@ti.func
def _exit_silhouette(pos: ti.template(), tris: ti.template(), nbr: ti.template(), b, t, Pf, Po, H, W, vertical):
    """Silhouette edge of triangle t through which segment Pf -> Po leaves it.

    Like nvdiffrast, an edge is handled by horizontal pixel pairs when it is more vertical than horizontal and
    by vertical pairs otherwise (`vertical` = 1 for a vertical pair), so no edge is counted twice.

    Returns (found, k, tcross, ef, eo): edge k = (tris[t, k], tris[t, (k + 1) % 3]), crossing fraction, and
    the raw edge-function values at Pf and Po.
    """
    found, kk, tbest, efb, eob, edx, edy = 0, -1, 2.0, 0.0, 0.0, 0.0, 0.0
    p0 = _load(pos, b, tris[t, 0])
    p1 = _load(pos, b, tris[t, 1])
    p2 = _load(pos, b, tris[t, 2])
    if p0[3] > 0.0 and p1[3] > 0.0 and p2[3] > 0.0:
        q = [_screen(p0, H, W), _screen(p1, H, W), _screen(p2, H, W)]
        area = _edge(q[0], q[1], q[2])
        if area != 0.0:
            sig = 1.0 if area > 0.0 else -1.0
            for k in ti.static(range(3)):
                ef = _edge(q[k], q[(k + 1) % 3], Pf)
                eo = _edge(q[k], q[(k + 1) % 3], Po)
                if ef * sig >= 0.0 and eo * sig < 0.0:
                    tc = ef / (ef - eo)
                    if tc < tbest:
                        tbest, kk, efb, eob = tc, k, ef, eo
                        edx = q[(k + 1) % 3][0] - q[k][0]
                        edy = q[(k + 1) % 3][1] - q[k][1]
            steep = ti.abs(edy) >= ti.abs(edx)
            if kk >= 0 and steep == (vertical == 0):
                nb = nbr[t, kk]
                silhouette = True
                if nb >= 0:
                    n0 = _load(pos, b, tris[nb, 0])
                    n1 = _load(pos, b, tris[nb, 1])
                    n2 = _load(pos, b, tris[nb, 2])
                    if n0[3] > 0.0 and n1[3] > 0.0 and n2[3] > 0.0:
                        area_nb = _edge(_screen(n0, H, W), _screen(n1, H, W), _screen(n2, H, W))
                        silhouette = area_nb * area <= 0.0
                if silhouette:
                    found = 1
    return found, kk, tbest, efb, eob


@ti.func
def _pair(pos: ti.template(), tris: ti.template(), nbr: ti.template(), rast: ti.template(), b, i0, j0, i1, j1, H, W):
    """Analyse the pixel pair (i0, j0) -> (i1, j1) (pixel 1 right of or below pixel 0).

    Returns (target, alpha, f_is_1, tri, k, ef, eo): target 0 = none, 1 = pixel 0, 2 = pixel 1 receives
    alpha * (colour of the other pixel - its own colour); F = tri covers pixel f (0 or 1) through edge k.
    """
    target, alpha, f_is_1, tri, kk, ef, eo = 0, 0.0, 0, -1, -1, 0.0, 0.0
    id0 = ti.cast(rast[b, i0, j0, 3], ti.i32)
    id1 = ti.cast(rast[b, i1, j1, 3], ti.i32)
    if id0 != id1:
        P0 = ti.Vector([j0 + 0.5, i0 + 0.5])
        P1 = ti.Vector([j1 + 0.5, i1 + 0.5])
        vertical = 1 if i1 != i0 else 0
        f0, k0, t0, ef0, eo0 = 0, -1, 2.0, 0.0, 0.0
        f1, k1, t1, ef1, eo1 = 0, -1, 2.0, 0.0, 0.0
        if id0 > 0:
            f0, k0, t0, ef0, eo0 = _exit_silhouette(pos, tris, nbr, b, id0 - 1, P0, P1, H, W, vertical)
        if id1 > 0:
            f1, k1, t1, ef1, eo1 = _exit_silhouette(pos, tris, nbr, b, id1 - 1, P1, P0, H, W, vertical)
        use0 = f0 == 1 and (f1 == 0 or rast[b, i0, j0, 2] <= rast[b, i1, j1, 2])
        use1 = f1 == 1 and not use0
        tc = 0.5
        if use0:
            f_is_1, tri, kk, tc, ef, eo = 0, id0 - 1, k0, t0, ef0, eo0
        if use1:
            f_is_1, tri, kk, tc, ef, eo = 1, id1 - 1, k1, t1, ef1, eo1
        if use0 or use1:
            if tc > 0.5:  # F spills into the other pixel
                target = 2 if f_is_1 == 0 else 1
                alpha = tc - 0.5
            else:  # F's own pixel is partly uncovered
                target = 1 if f_is_1 == 0 else 2
                alpha = 0.5 - tc
    return target, alpha, f_is_1, tri, kk, ef, eo


@ti.kernel
def antialias_fwd(color: nd(dtype=ti.f32, ndim=4), rast: nd(dtype=ti.f32, ndim=4), pos: nd(dtype=ti.f32, ndim=3),
                  tris: nd(dtype=ti.i32, ndim=2), nbr: nd(dtype=ti.i32, ndim=2), out: nd(dtype=ti.f32, ndim=4)):
    H, W, C = color.shape[1], color.shape[2], color.shape[3]
    for b, i, j in ti.ndrange(color.shape[0], H, W):
        for ch in range(C):
            out[b, i, j, ch] = color[b, i, j, ch]
        for d in ti.static(range(4)):
            # d: 0 left, 1 right, 2 up, 3 down; me = index of this pixel inside the canonical pair
            di = ti.static((0, 0, -1, 1)[d])
            dj = ti.static((-1, 1, 0, 0)[d])
            me = ti.static((2, 1, 2, 1)[d])
            ni, nj = i + di, j + dj
            if 0 <= ni < H and 0 <= nj < W:
                target, alpha, f_is_1, tri, kk, ef, eo = 0, 0.0, 0, -1, -1, 0.0, 0.0
                if ti.static(me == 1):
                    target, alpha, f_is_1, tri, kk, ef, eo = _pair(pos, tris, nbr, rast, b, i, j, ni, nj, H, W)
                else:
                    target, alpha, f_is_1, tri, kk, ef, eo = _pair(pos, tris, nbr, rast, b, ni, nj, i, j, H, W)
                if target == me:
                    for ch in range(C):
                        out[b, i, j, ch] += alpha * (color[b, ni, nj, ch] - color[b, i, j, ch])


@ti.kernel
def antialias_bwd(color: nd(dtype=ti.f32, ndim=4), rast: nd(dtype=ti.f32, ndim=4), pos: nd(dtype=ti.f32, ndim=3),
                  tris: nd(dtype=ti.i32, ndim=2), nbr: nd(dtype=ti.i32, ndim=2), grad_out: nd(dtype=ti.f32, ndim=4),
                  grad_color: nd(dtype=ti.f32, ndim=4), grad_pos: nd(dtype=ti.f32, ndim=3)):
    """grad_color must start as a copy of grad_out; grad_pos must start at zero."""
    H, W, C = color.shape[1], color.shape[2], color.shape[3]
    for b, i, j, d in ti.ndrange(color.shape[0], H, W, 2):
        i1 = i + (1 if d == 1 else 0)
        j1 = j + (1 if d == 0 else 0)
        if i1 < H and j1 < W:
            target, alpha, f_is_1, tri, kk, ef, eo = _pair(pos, tris, nbr, rast, b, i, j, i1, j1, H, W)
            if target != 0:
                ti_, tj, si, sj = i, j, i1, j1  # target pixel and source (other) pixel
                if target == 2:
                    ti_, tj, si, sj = i1, j1, i, j
                g_alpha = 0.0
                for ch in range(C):
                    g = grad_out[b, ti_, tj, ch]
                    g_alpha += g * (color[b, si, sj, ch] - color[b, ti_, tj, ch])
                    ti.atomic_add(grad_color[b, si, sj, ch], alpha * g)
                    ti.atomic_add(grad_color[b, ti_, tj, ch], -alpha * g)
                # alpha = t - 0.5 when the target is the pixel F does not cover, else 0.5 - t
                target_is_f = (target == 2) == (f_is_1 == 1)
                g_t = -g_alpha if target_is_f else g_alpha
                Pf = ti.Vector([j + 0.5, i + 0.5])
                Po = ti.Vector([j1 + 0.5, i1 + 0.5])
                if f_is_1 == 1:
                    Pf, Po = Po, Pf
                den = ef - eo
                dt_def = -eo / (den * den)
                dt_deo = ef / (den * den)
                va = tris[tri, kk]
                vb = tris[tri, (kk + 1) % 3]
                pa = _load(pos, b, va)
                pb = _load(pos, b, vb)
                A = _screen(pa, H, W)
                Bv = _screen(pb, H, W)
                gAx = g_t * (dt_def * (Bv[1] - Pf[1]) + dt_deo * (Bv[1] - Po[1]))
                gAy = g_t * (dt_def * (Pf[0] - Bv[0]) + dt_deo * (Po[0] - Bv[0]))
                gBx = g_t * (dt_def * (Pf[1] - A[1]) + dt_deo * (Po[1] - A[1]))
                gBy = g_t * (dt_def * (A[0] - Pf[0]) + dt_deo * (A[0] - Po[0]))
                # screen X = (x / w + 1) W / 2, Y = (y / w + 1) H / 2
                for which in ti.static(range(2)):
                    p = pa if which == 0 else pb
                    v = va if which == 0 else vb
                    gX = gAx if which == 0 else gBx
                    gY = gAy if which == 0 else gBy
                    sx = 0.5 * W / p[3]
                    sy = 0.5 * H / p[3]
                    ti.atomic_add(grad_pos[b, v, 0], gX * sx)
                    ti.atomic_add(grad_pos[b, v, 1], gY * sy)
                    ti.atomic_add(grad_pos[b, v, 3], -(gX * sx * p[0] + gY * sy * p[1]) / p[3])

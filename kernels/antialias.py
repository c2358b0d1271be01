"""Silhouette-edge antialiasing with gradients to vertex positions (after nvdiffrast's method).

For every pair of horizontally or vertically adjacent pixels whose triangle ids differ, we look for a
silhouette edge between the two pixel centres: for a triangle F covering one pixel centre Pf, the edge of F
through which the segment Pf -> Po leaves F. It is a silhouette when F has no neighbour across that edge, or
the neighbour faces the other way (front/back). Like nvdiffrast, an edge is handled by horizontal pairs when
it is more vertical than horizontal and by vertical pairs otherwise, so no edge is counted twice. When both
pixels' triangles offer a silhouette, the nearer one's wins. With the crossing at fraction t along Pf -> Po
(t in [0, 1], pixel units):
  - t > 0.5: F covers the part t - 0.5 of the other pixel:  out[o] += (t - 0.5) (c[f] - c[o])
  - t < 0.5: F misses the part 0.5 - t of its own pixel:    out[f] += (0.5 - t) (c[o] - c[f])
The blend weight depends on the edge's screen position, so the backward pass gives gradients to the two edge
vertices (through t) as well as to the colours.

One forward launch, five sequential loops: per-vertex screen positions, per-triangle facing, per-triangle
silhouette-edge mask (edge k is a silhouette when the triangle faces the camera or away from it and its
neighbour across k is missing or faces the other way; a pixel pair whose triangles have no silhouette edge,
i.e. almost every pair inside a mesh, is then dismissed with two loads), one analysis per pixel pair (stored
as a code + weight, reused by the backward), and a per-pixel gather of the pair contributions
(deterministic, no atomics).
"""
import taichi as ti

nd = ti.types.ndarray


@ti.func
def _edge(A, Bv, P):
    return (Bv[0] - A[0]) * (P[1] - A[1]) - (Bv[1] - A[1]) * (P[0] - A[0])


@ti.func
def _scr(screen: ti.template(), b, v):
    return ti.Vector([screen[b, v, 0], screen[b, v, 1]])


@ti.func
def _exit_silhouette(screen: ti.template(), facing: ti.template(), tris: ti.template(), silmask: ti.template(),
                     b, t, Pf, Po, vertical):
    """Silhouette edge k = (tris[t, k], tris[t, (k + 1) % 3]) of triangle t through which Pf -> Po leaves it.

    Returns (found, k, tcross). Triangles without a silhouette edge (silmask 0: almost all of a mesh's
    interior) return at once.
    """
    found, kk, tbest = 0, -1, 2.0
    mask = silmask[b, t]
    if mask != 0:
        sig = facing[b, t]
        q = [_scr(screen, b, tris[t, 0]), _scr(screen, b, tris[t, 1]), _scr(screen, b, tris[t, 2])]
        edx, edy = 0.0, 0.0
        for k in ti.static(range(3)):
            ef = _edge(q[k], q[(k + 1) % 3], Pf)
            eo = _edge(q[k], q[(k + 1) % 3], Po)
            if ef * sig >= 0.0 and eo * sig < 0.0:
                tc = ef / (ef - eo)
                if tc < tbest:
                    tbest, kk = tc, k
                    edx = q[(k + 1) % 3][0] - q[k][0]
                    edy = q[(k + 1) % 3][1] - q[k][1]
        steep = ti.abs(edy) >= ti.abs(edx)
        if kk >= 0 and steep == (vertical == 0):
            if (mask >> kk) & 1:
                found = 1
    return found, kk, tbest


@ti.kernel
def antialias_fwd(color: nd(dtype=ti.f32, ndim=4), rast: nd(dtype=ti.f32, ndim=4), pos: nd(dtype=ti.f32, ndim=3),
                  tris: nd(dtype=ti.i32, ndim=2), nbr: nd(dtype=ti.i32, ndim=2),
                  screen: nd(dtype=ti.f32, ndim=3), facing: nd(dtype=ti.i32, ndim=2), silmask: nd(dtype=ti.i32, ndim=2),
                  pair_code: nd(dtype=ti.i32, ndim=4), pair_alpha: nd(dtype=ti.f32, ndim=4),
                  out: nd(dtype=ti.f32, ndim=4)):
    """pair_code[b, i, j, d] for the pair (i, j) -> right (d = 0) or below (d = 1) neighbour:
    0 = no blend, else target (1: pixel (i, j), 2: the neighbour) + 4 * edge k + 16 * (F covers the neighbour)."""
    B, H, W, C = color.shape[0], color.shape[1], color.shape[2], color.shape[3]
    for v in range(pos.shape[1]):
        for b in range(B):  # batch innermost: no integer div/mod per element
            w = pos[b, v, 3]
            if w > 0.0:
                screen[b, v, 0] = (pos[b, v, 0] / w + 1.0) * 0.5 * W
                screen[b, v, 1] = (pos[b, v, 1] / w + 1.0) * 0.5 * H
            else:
                screen[b, v, 0] = 0.0
                screen[b, v, 1] = 0.0
    for t in range(tris.shape[0]):
        for b in range(B):  # batch innermost: no integer div/mod per element
            v0, v1, v2 = tris[t, 0], tris[t, 1], tris[t, 2]
            f = 0
            if pos[b, v0, 3] > 0.0 and pos[b, v1, 3] > 0.0 and pos[b, v2, 3] > 0.0:
                area = _edge(_scr(screen, b, v0), _scr(screen, b, v1), _scr(screen, b, v2))
                f = 1 if area > 0.0 else (-1 if area < 0.0 else 0)
            facing[b, t] = f
    for t in range(tris.shape[0]):
        for b in range(B):  # batch innermost: no integer div/mod per element
            m = 0
            sig = facing[b, t]
            if sig != 0:
                for k in ti.static(range(3)):
                    nb = nbr[t, k]
                    if nb < 0:
                        m |= 1 << k
                    elif facing[b, nb] * sig <= 0:
                        m |= 1 << k
            silmask[b, t] = m
    for i, j in ti.ndrange(H, W):
        for b in range(B):  # batch innermost: no integer div/mod per element
            for d in ti.static(range(2)):
                i1 = i + d
                j1 = j + 1 - d
                code, alpha = 0, 0.0
                if i1 < H and j1 < W:
                    id0 = ti.cast(rast[b, i, j, 3], ti.i32)
                    id1 = ti.cast(rast[b, i1, j1, 3], ti.i32)
                    if id0 != id1:
                        P0 = ti.Vector([j + 0.5, i + 0.5])
                        P1 = ti.Vector([j1 + 0.5, i1 + 0.5])
                        f0, k0, t0 = 0, -1, 2.0
                        f1, k1, t1 = 0, -1, 2.0
                        if id0 > 0:
                            f0, k0, t0 = _exit_silhouette(screen, facing, tris, silmask, b, id0 - 1, P0, P1, d)
                        if id1 > 0:
                            f1, k1, t1 = _exit_silhouette(screen, facing, tris, silmask, b, id1 - 1, P1, P0, d)
                        use0 = f0 == 1 and (f1 == 0 or rast[b, i, j, 2] <= rast[b, i1, j1, 2])
                        use1 = f1 == 1 and not use0
                        if use0 or use1:
                            f_is_1, kk, tc = 0, k0, t0
                            if use1:
                                f_is_1, kk, tc = 1, k1, t1
                            target = 0
                            if tc > 0.5:  # F spills into the other pixel
                                target = 2 - f_is_1
                                alpha = tc - 0.5
                            else:  # F's own pixel is partly uncovered
                                target = 1 + f_is_1
                                alpha = 0.5 - tc
                            code = target + 4 * kk + 16 * f_is_1
                pair_code[b, i, j, d] = code
                pair_alpha[b, i, j, d] = alpha
    for i, j in ti.ndrange(H, W):
        for b in range(B):  # batch innermost: no integer div/mod per element
            for ch in range(C):
                out[b, i, j, ch] = color[b, i, j, ch]
            for n in ti.static(range(4)):
                # n: 0 right pair, 1 lower pair (this pixel is pixel 0), 2 left pair, 3 upper pair (this is pixel 1)
                pi = ti.static((0, 0, 0, -1)[n]) + i
                pj = ti.static((0, 0, -1, 0)[n]) + j
                d = ti.static((0, 1, 0, 1)[n])
                me = ti.static((1, 1, 2, 2)[n])
                oi = i + ti.static((0, 1, 0, -1)[n])
                oj = j + ti.static((1, 0, -1, 0)[n])
                if 0 <= oi < H and 0 <= oj < W:
                    if pair_code[b, pi, pj, d] & 3 == me:
                        a = pair_alpha[b, pi, pj, d]
                        for ch in range(C):
                            out[b, i, j, ch] += a * (color[b, oi, oj, ch] - color[b, i, j, ch])


@ti.kernel
def antialias_bwd(color: nd(dtype=ti.f32, ndim=4), rast: nd(dtype=ti.f32, ndim=4), pos: nd(dtype=ti.f32, ndim=3),
                  tris: nd(dtype=ti.i32, ndim=2), screen: nd(dtype=ti.f32, ndim=3),
                  pair_code: nd(dtype=ti.i32, ndim=4), pair_alpha: nd(dtype=ti.f32, ndim=4),
                  grad_out: nd(dtype=ti.f32, ndim=4), grad_color: nd(dtype=ti.f32, ndim=4),
                  grad_pos: nd(dtype=ti.f32, ndim=3)):
    """grad_color must start as a copy of grad_out; grad_pos must start at zero."""
    H, W, C = color.shape[1], color.shape[2], color.shape[3]
    for i, j in ti.ndrange(H, W):
        for b in range(color.shape[0]):  # batch innermost: no integer div/mod per element
            for d in ti.static(range(2)):
                code = pair_code[b, i, j, d]
                if code != 0:
                    target = code & 3
                    kk = (code >> 2) & 3
                    f_is_1 = code >> 4
                    alpha = pair_alpha[b, i, j, d]
                    i1 = i + d
                    j1 = j + 1 - d
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
                    fi, fj = i, j
                    if f_is_1 == 1:
                        Pf, Po = Po, Pf
                        fi, fj = i1, j1
                    tri = ti.cast(rast[b, fi, fj, 3], ti.i32) - 1
                    va = tris[tri, kk]
                    vb = tris[tri, (kk + 1) % 3]
                    A = _scr(screen, b, va)
                    Bv = _scr(screen, b, vb)
                    ef = _edge(A, Bv, Pf)
                    eo = _edge(A, Bv, Po)
                    den = ef - eo
                    dt_def = -eo / (den * den)
                    dt_deo = ef / (den * den)
                    # d e(P) / d A = (By - Py, Px - Bx),  d e(P) / d B = (Py - Ay, Ax - Px)
                    gAx = g_t * (dt_def * (Bv[1] - Pf[1]) + dt_deo * (Bv[1] - Po[1]))
                    gAy = g_t * (dt_def * (Pf[0] - Bv[0]) + dt_deo * (Po[0] - Bv[0]))
                    gBx = g_t * (dt_def * (Pf[1] - A[1]) + dt_deo * (Po[1] - A[1]))
                    gBy = g_t * (dt_def * (A[0] - Pf[0]) + dt_deo * (A[0] - Po[0]))
                    # screen X = (x / w + 1) W / 2, Y = (y / w + 1) H / 2
                    for which in ti.static(range(2)):
                        v = va if which == 0 else vb
                        gX = gAx if which == 0 else gBx
                        gY = gAy if which == 0 else gBy
                        w = pos[b, v, 3]
                        sx = 0.5 * W / w
                        sy = 0.5 * H / w
                        ti.atomic_add(grad_pos[b, v, 0], gX * sx)
                        ti.atomic_add(grad_pos[b, v, 1], gY * sy)
                        ti.atomic_add(grad_pos[b, v, 3], -(gX * sx * pos[b, v, 0] + gY * sy * pos[b, v, 1]) / w)

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

One forward launch, four sequential loops (each parallel loop costs a thread-pool wake-up, tens of us on a
small VM): per-triangle facing (the sign of det[(x, y, w)_k], no division), per-triangle silhouette-edge mask (edge k is a silhouette when the triangle faces the camera or away from it and its
neighbour across k is missing or faces the other way; a pixel pair whose triangles have no silhouette edge,
i.e. almost every pair inside a mesh, is then dismissed with two loads), one analysis per pixel pair (stored
as a code + weight, reused by the backward), and a per-pixel gather of the pair contributions
(deterministic, no atomics) into `out`, which starts as a copy of `color`.

Arrays are flat (1-D) views of contiguous tensors, as in kernels/raster.py: for the flat pixel index
p = (b H + i) W + j, color/out[p, ch] at C p + ch, rast[p, :] at 4 p, pair_code/pair_alpha[p, d] at 2 p + d;
facing/silmask[b, t] at b T + t, pos[b, v, :] at 4 (b V + v), tris/nbr[t, :] at 3 t. Screen positions of
edge vertices are computed where needed (only for pixel pairs at silhouettes). Channel loops are unrolled when CS = C > 0 (see kernels/interpolate.py).
"""
import taichi as ti

from .runs import items, row_run

nd = ti.types.ndarray
# Note: `x[i] += y` on an array is an atomic add in Taichi; the gathers below write `x[i] = x[i] + y` (each
# element has one writer).


@ti.func
def _edge(A, Bv, P):
    return (Bv[0] - A[0]) * (P[1] - A[1]) - (Bv[1] - A[1]) * (P[0] - A[0])


@ti.func
def _scr(pos: ti.template(), V, b, v, H, W):
    """Screen position (pixel units, pixel (i, j) centred at (j + 0.5, i + 0.5)) of vertex v of item b; (0, 0)
    for w <= 0 (such vertices only belong to triangles whose facing is 0, never used for blending)."""
    o = 4 * (b * V + v)
    w = pos[o + 3]
    sx, sy = 0.0, 0.0
    if w > 0.0:
        sx = (pos[o] / w + 1.0) * 0.5 * W
        sy = (pos[o + 1] / w + 1.0) * 0.5 * H
    return ti.Vector([sx, sy])


@ti.func
def _exit_silhouette(pos: ti.template(), facing: ti.template(), tris: ti.template(), silmask: ti.template(),
                     V, T, H, W, b, t, Pf, Po, vertical):
    """Silhouette edge k = (tris[t, k], tris[t, (k + 1) % 3]) of triangle t through which Pf -> Po leaves it.

    Returns (found, k, tcross). Triangles without a silhouette edge (silmask 0: almost all of a mesh's
    interior) return at once.
    """
    found, kk, tbest = 0, -1, 2.0
    mask = silmask[b * T + t]
    if mask != 0:
        sig = facing[b * T + t]
        q = [_scr(pos, V, b, tris[3 * t], H, W), _scr(pos, V, b, tris[3 * t + 1], H, W),
             _scr(pos, V, b, tris[3 * t + 2], H, W)]
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


@ti.func
def _touching(pair_code: ti.template(), p, i, j, W):
    """Codes of the four pixel pairs touching flat pixel p = (i, j): n = 0 right, 1 lower (p is the pair's
    pixel 0), 2 left, 3 upper (p is pixel 1); 0 where there is no pair (pairs leaving the image are stored as 0)."""
    codes = ti.Vector([pair_code[2 * p], pair_code[2 * p + 1], 0, 0])
    if j > 0:
        codes[2] = pair_code[2 * (p - 1)]
    if i > 0:
        codes[3] = pair_code[2 * (p - W) + 1]
    return codes


@ti.func
def _pair_slot(n: ti.template(), p, W):
    """(flat index of pair n's slot in pair_code/pair_alpha, the other pixel of the pair, p's role 1 or 2)."""
    po = p + ti.static((1, 0, -1, 0)[n]) + W * ti.static((0, 1, 0, -1)[n])
    p0 = p if ti.static(n < 2) else po
    return 2 * p0 + ti.static((0, 1, 0, 1)[n]), po, ti.static((1, 1, 2, 2)[n])


@ti.kernel
def antialias_fwd(color: nd(dtype=ti.f32, ndim=1),                    # (B H W C) f32 shaded image
                  rast: nd(dtype=ti.f32, ndim=1),                     # (B H W 4) f32
                  pos: nd(dtype=ti.f32, ndim=1),                      # (B V 4) f32 clip space
                  tris: nd(dtype=ti.i32, ndim=1),                     # (T 3) i32
                  nbr: nd(dtype=ti.i32, ndim=1),                      # (T 3) i32 edge neighbours (-1: none)
                  facing: nd(dtype=ti.i32, ndim=1),                   # (B T) i32 scratch: front/back
                  silmask: nd(dtype=ti.i32, ndim=1),                  # (B T) i32 scratch: silhouette edges
                  pair_code: nd(dtype=ti.i32, ndim=1),                # (B H W 2) i32 output: blend per pixel pair
                  pair_alpha: nd(dtype=ti.f32, ndim=1),               # (B H W 2) f32 output: edge crossing t
                  out: nd(dtype=ti.f32, ndim=1),                      # (B H W C) f32, a copy of color on entry
                  B: ti.i32,                                          # batch size
                  V: ti.i32,                                          # vertices per item
                  T: ti.i32,                                          # triangles
                  H: ti.i32,                                          # image height, pixels
                  W: ti.i32,                                          # image width, pixels
                  C: ti.i32,                                          # channels
                  run: ti.i32,                                        # pixels per loop iteration (kernels/runs.py)
                  n_runs: ti.i32,                                     # runs per row (or per item)
                  CS: ti.template(),                                  # C when the channel loops are unrolled, else 0
                  single: ti.template()):                             # B == 1: batch loops compiled away
    """pair_code[b, i, j, d] for the pair (i, j) -> right (d = 0) or below (d = 1) neighbour:
    0 = no blend, else target (1: pixel (i, j), 2: the neighbour) + 4 * edge k + 16 * (F covers the neighbour).
    out must start as a copy of color. single (B == 1): batch loops compiled away (kernels/runs.py `items`)."""
    for t in range(T):
        v0, v1, v2 = tris[3 * t], tris[3 * t + 1], tris[3 * t + 2]
        for b in range(items(B, single)):  # batch innermost: no integer div/mod per element
            p0 = ti.Vector([pos[4 * (b * V + v0)], pos[4 * (b * V + v0) + 1], pos[4 * (b * V + v0) + 3]])
            p1 = ti.Vector([pos[4 * (b * V + v1)], pos[4 * (b * V + v1) + 1], pos[4 * (b * V + v1) + 3]])
            p2 = ti.Vector([pos[4 * (b * V + v2)], pos[4 * (b * V + v2) + 1], pos[4 * (b * V + v2) + 3]])
            f = 0
            if p0[2] > 0.0 and p1[2] > 0.0 and p2[2] > 0.0:
                # the screen-space signed area is det[(x, y, w)_k] / (w0 w1 w2) times a positive constant
                det = p0.dot(p1.cross(p2))
                f = 1 if det > 0.0 else (-1 if det < 0.0 else 0)
            facing[b * T + t] = f
    for t in range(T):
        n0, n1, n2 = nbr[3 * t], nbr[3 * t + 1], nbr[3 * t + 2]
        for b in range(items(B, single)):  # batch innermost: no integer div/mod per element
            m = 0
            sig = facing[b * T + t]
            if sig != 0:
                for k in ti.static(range(3)):
                    nb = n0 if k == 0 else (n1 if k == 1 else n2)
                    if nb < 0:
                        m |= 1 << k
                    elif facing[b * T + nb] * sig <= 0:
                        m |= 1 << k
            silmask[b * T + t] = m
    for r in range(B * H * n_runs):  # runs of pixels (kernels/runs.py)
        b, i, j0, j1 = row_run(r, run, n_runs, H, W)
        for j in range(j0, j1):
            p = (b * H + i) * W + j
            id0 = ti.cast(rast[4 * p + 3], ti.i32)
            for d in ti.static(range(2)):
                i1 = i + d
                j1 = j + 1 - d
                code, alpha = 0, 0.0
                if i1 < H and j1 < W:
                    p1 = p + (W if d == 1 else 1)
                    id1 = ti.cast(rast[4 * p1 + 3], ti.i32)
                    if id0 != id1:
                        P0 = ti.Vector([j + 0.5, i + 0.5])
                        P1 = ti.Vector([j1 + 0.5, i1 + 0.5])
                        f0, k0, t0 = 0, -1, 2.0
                        f1, k1, t1 = 0, -1, 2.0
                        if id0 > 0:
                            f0, k0, t0 = _exit_silhouette(pos, facing, tris, silmask, V, T, H, W, b, id0 - 1, P0, P1, d)
                        if id1 > 0:
                            f1, k1, t1 = _exit_silhouette(pos, facing, tris, silmask, V, T, H, W, b, id1 - 1, P1, P0, d)
                        use0 = f0 == 1 and (f1 == 0 or rast[4 * p + 2] <= rast[4 * p1 + 2])
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
                pair_code[2 * p + d] = code
                pair_alpha[2 * p + d] = alpha
    for r in range(B * H * n_runs):
        b, i, j0, j1 = row_run(r, run, n_runs, H, W)
        for j in range(j0, j1):
            p = (b * H + i) * W + j
            codes = _touching(pair_code, p, i, j, W)
            if codes.any():
                for n in ti.static(range(4)):
                    slot, po, me = _pair_slot(n, p, W)
                    if codes[n] & 3 == me:  # the pair blends the other pixel's colour into p
                        a = pair_alpha[slot]
                        if ti.static(CS > 0):
                            for ch in ti.static(range(CS)):
                                out[C * p + ch] = out[C * p + ch] + a * (color[C * po + ch] - color[C * p + ch])
                        else:
                            for ch in range(C):
                                out[C * p + ch] = out[C * p + ch] + a * (color[C * po + ch] - color[C * p + ch])


@ti.kernel
def antialias_bwd(color: nd(dtype=ti.f32, ndim=1),                    # (B H W C) f32
                  rast: nd(dtype=ti.f32, ndim=1),                     # (B H W 4) f32
                  pos: nd(dtype=ti.f32, ndim=1),                      # (B V 4) f32
                  tris: nd(dtype=ti.i32, ndim=1),                     # (T 3) i32
                  pair_code: nd(dtype=ti.i32, ndim=1),                # (B H W 2) i32 from the forward
                  pair_alpha: nd(dtype=ti.f32, ndim=1),               # (B H W 2) f32 from the forward
                  grad_out: nd(dtype=ti.f32, ndim=1),                 # (B H W C) f32 d loss / d out
                  grad_color: nd(dtype=ti.f32, ndim=1),               # (B H W C) f32, a copy of grad_out on entry
                  grad_pos: nd(dtype=ti.f32, ndim=1),                 # (B V 4) f32, zero on entry
                  B: ti.i32,                                          # batch size
                  V: ti.i32,                                          # vertices per item
                  H: ti.i32,                                          # image height, pixels
                  W: ti.i32,                                          # image width, pixels
                  C: ti.i32,                                          # channels
                  run: ti.i32,                                        # pixels per loop iteration (kernels/runs.py)
                  n_runs: ti.i32):                                    # runs per row (or per item)
    """grad_color must start as a copy of grad_out (the pairs touching each pixel are gathered into it:
    deterministic); grad_pos must start at zero (the two edge vertices of each blending pair are scattered with
    atomics)."""
    for r in range(B * H * n_runs):  # runs of pixels (kernels/runs.py)
        b, i, j0, j1 = row_run(r, run, n_runs, H, W)
        for j in range(j0, j1):
            p = (b * H + i) * W + j
            # d colour: out[target] = c[target] + alpha (c[source] - c[target])
            codes = _touching(pair_code, p, i, j, W)
            if codes.any():  # almost never: only next to silhouette edges
                for n in ti.static(range(4)):
                    if codes[n] != 0:
                        slot, po, me = _pair_slot(n, p, W)
                        alpha = pair_alpha[slot]
                        if codes[n] & 3 == me:  # p is the target
                            for ch in range(C):
                                grad_color[C * p + ch] = grad_color[C * p + ch] - alpha * grad_out[C * p + ch]
                        else:  # p is the source
                            for ch in range(C):
                                grad_color[C * p + ch] = grad_color[C * p + ch] + alpha * grad_out[C * po + ch]
                # d positions, once per pair: from the pairs whose pixel 0 is p
                for d in ti.static(range(2)):
                    code = codes[d]
                    if code != 0:
                        target = code & 3
                        kk = (code >> 2) & 3
                        f_is_1 = code >> 4
                        i1 = i + d
                        j1 = j + 1 - d
                        p1 = p + (W if d == 1 else 1)
                        pt, ps = p, p1  # target pixel and source (other) pixel
                        if target == 2:
                            pt, ps = p1, p
                        g_alpha = 0.0
                        for ch in range(C):
                            g_alpha += grad_out[C * pt + ch] * (color[C * ps + ch] - color[C * pt + ch])
                        # alpha = t - 0.5 when the target is the pixel F does not cover, else 0.5 - t
                        target_is_f = (target == 2) == (f_is_1 == 1)
                        g_t = -g_alpha if target_is_f else g_alpha
                        Pf = ti.Vector([j + 0.5, i + 0.5])
                        Po = ti.Vector([j1 + 0.5, i1 + 0.5])
                        pf = p
                        if f_is_1 == 1:
                            Pf, Po = Po, Pf
                            pf = p1
                        tri = ti.cast(rast[4 * pf + 3], ti.i32) - 1
                        va = tris[3 * tri + kk]
                        vb = tris[3 * tri + (kk + 1) % 3]
                        A = _scr(pos, V, b, va, H, W)
                        Bv = _scr(pos, V, b, vb, H, W)
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
                            o = 4 * (b * V + v)
                            w = pos[o + 3]
                            sx = 0.5 * W / w
                            sy = 0.5 * H / w
                            ti.atomic_add(grad_pos[o], gX * sx)
                            ti.atomic_add(grad_pos[o + 1], gY * sy)
                            ti.atomic_add(grad_pos[o + 3], -(gX * sx * pos[o] + gY * sy * pos[o + 1]) / w)

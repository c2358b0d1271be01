"""Z-buffered triangle rasterization in homogeneous clip space, and its adjoint.

Forward (no pass is differentiated), normally one launch of `raster_pass` whose parallel loops run in turn:
  0. per (batch, vertex): the pixel position and z/w of every vertex in front of the camera, computed once
     instead of once per triangle corner (`_project_vertex`), and a count of vertices holding NaN or Inf
     (the caller's input check: one flag here instead of a reduction over pos_clip in torch).
  1. per (batch, triangle) (`_raster_triangle`): the triangle's pixel bounding box; boxes of at most SMALL_MAX
     pixels (almost every triangle of a face mesh) are scanned at once, keeping the nearest surface per pixel
     with an atomic min on a key. Larger boxes are appended to a short list (slot from an atomic counter) with
     their number of TILE x TILE tiles; the caller then numbers the tiles by a prefix sum of those counts
     (torch.cumsum) and `raster_big` scans one tile per thread (found by binary search), so huge triangles are
     spread over many threads.
  2. per pixel (`_resolve_run`): recomputes the perspective-correct barycentrics of the winning triangle and
     writes rast = (u, v, z/w, id + 1) or zeros; it also resets the key buffers to their sentinel, so they
     never need a separate clear. `raster_pass` runs it only when no triangle was large; otherwise the caller
     launches `resolve` after `raster_big`.
The key, by backend:
  - cpu / cuda, mode PACKED: one int64 per pixel, (float bits of z/w + 2) << 32 | triangle id, with a 64-bit
    atomic_min: nearest depth wins, exact depth ties go to the lowest id. One scan.
  - vulkan, modes DEPTH then ID: a float32 atomic_min of z/w, then a second scan where triangles whose depth
    equals the stored minimum (bit-exact: the same code computes it) atomic_min their id, held as a float32.
    Integer atomics inside loops with run-time bounds miscompile on Taichi 1.7's Vulkan backend with lavapipe
    (the loop stops after two iterations); float atomics are emitted differently and are correct there.
Both give the same rast (tests/test_raster.py runs on every backend).

Coverage tests. A triangle whose three vertices are in front of the camera (w > 0) is tested in screen space
with 2-D edge functions of its projected vertices, and its depth z/w interpolated affinely in screen space
(`_cover2d`). A triangle reaching w <= 0 is tested in homogeneous clip space (`_cover`), which needs no
clipping; both tests accept the same pixels (up to rounding at edges). The resolve pass always computes the
perspective-correct barycentrics of the winner in homogeneous form.

Homogeneous test (Olano & Greer's homogeneous rasterization): for a pixel sample (sx, sy)
in NDC, the clip-space point P = sum_k b_k V_k of the triangle's plane that lies on the sample's view ray
satisfies sum_k b_k (x_k - sx w_k) = 0, sum_k b_k (y_k - sy w_k) = 0, sum_k b_k = 1, so
b = n / sum(n) with n = a x c, a_k = x_k - sx w_k, c_k = y_k - sy w_k. The pixel is covered when all b_k >= 0
(P inside the triangle), P.w > 0 (in front of the camera) and -1 <= P.z / P.w <= 1 (between near and far).
These b_k are the perspective-correct barycentrics; rast stores u = b_1, v = b_2. The coverage test needs no
division: b_k >= 0 for all k  <=>  every n_k is zero or has the sign of sum(n); P.w > 0  <=>  n.w has that sign
too; and z/w = (n.z) / (n.w). Only the resolve pass normalises n.

Scalar arguments: B, V, T (batch size, vertex and triangle counts), H, W (image size) and sx = 1 / W, sy = 1 / H.
Memory layout: every array argument is a flat (1-D) view of a contiguous tensor and the kernels compute the
offsets themselves (pos[b, v, c] at (b V + v) 4 + c, rast[b, i, j, c] at ((b H + i) W + j) 4 + c, ...).
Taichi's multi-dimensional ndarray indexing re-derives the strides at every access; flat indexing made these
memory-bound kernels about twice as fast on the CPU.
"""
import taichi as ti

from .runs import items, row_run
from .scatter import add, scatter_base

nd = ti.types.ndarray
KEY_EMPTY = 3.0e38  # split mode: no depth / no triangle yet (larger than any depth or triangle id)
KEY_EMPTY_I64 = (1 << 63) - 1  # packed mode: no triangle yet
MAX_TRIANGLES = 1 << 24  # triangle ids are exact in float32 (rast channel 3) below this
MAX_BIG = (1 << 24) - 1  # large triangles per call: Vulkan counts them with float atomics, exact below 2^24
SMALL_MAX = 4096  # triangles whose pixel bounding box is at most this many pixels are scanned by one thread
TILE = 16  # larger ones are cut into TILE x TILE tiles, one thread each: this bounds the serial work of a
           # thread (Vulkan/lavapipe stops loops of more than ~65k iterations per invocation) and spreads
           # large triangles over many threads
PACKED, DEPTH, ID = 0, 1, 2  # key-update modes (see module docstring)
BBOX_SLACK = 1e-3  # pixels the bounding box is widened by, so that rounding in the projection of the vertices
                   # cannot leave out a pixel centre that the coverage test accepts
PEEL_EPS = 2e-5  # depth peeling: a surface counts as behind the previous layer when its z/w exceeds it by more
#                 (the resolve pass recomputes the winner's z/w in another form than the scan, so equal surfaces
#                 may differ by float32 rounding; nearer surfaces than this merge with the layer in front)
PROJ_LIMIT = 1e6  # projected coordinates (pixels; |z/w|) beyond this use the homogeneous test (no overflow in the
                  # 2-D edge functions)


@ti.func
def _load(pos: ti.template(), V, b, v):
    """Clip-space position of vertex v of batch item b from the flat (B V 4) array."""
    o = (b * V + v) * 4
    return ti.Vector([pos[o], pos[o + 1], pos[o + 2], pos[o + 3]])


@ti.func
def _tri(tris: ti.template(), t):
    return tris[3 * t], tris[3 * t + 1], tris[3 * t + 2]


@ti.func
def _sample_ndc(i, j, H, W, sx, sy):
    """NDC of pixel (i, j)'s centre, (2 (j + 0.5) / W - 1, 2 (i + 0.5) / H - 1) = ((2 j + 1 - W) / W, ...), with
    sx = 1 / W, sy = 1 / H (the integer numerator is exact)."""
    return ti.Vector([ti.cast(2 * j + 1 - W, ti.f32) * sx, ti.cast(2 * i + 1 - H, ti.f32) * sy])


@ti.func
def _bary(p0, p1, p2, s):
    """Unnormalised perspective-correct barycentrics n (b = n / sum(n)), their sum, and the a, c vectors."""
    a = ti.Vector([p0[0] - s[0] * p0[3], p1[0] - s[0] * p1[3], p2[0] - s[0] * p2[3]])
    c = ti.Vector([p0[1] - s[1] * p0[3], p1[1] - s[1] * p1[3], p2[1] - s[1] * p2[3]])
    n = a.cross(c)
    return n, n.sum(), a, c


@ti.func
def _bbox_behind(p0, p1, p2, H, W):
    """Pixel box of a triangle that reaches w <= 0 (behind the camera) or projects beyond PROJ_LIMIT (both rare):
    empty when all three vertices lie outside the same frustum plane, else the whole image."""
    i0, i1, j0, j1 = 0, H - 1, 0, W - 1
    for ax in ti.static(range(3)):
        if p0[ax] > p0[3] and p1[ax] > p1[3] and p2[ax] > p2[3]:
            i0 = H
        if p0[ax] < -p0[3] and p1[ax] < -p1[3] and p2[ax] < -p2[3]:
            i0 = H
    return i0, i1, j0, j1


@ti.func
def _bbox2d(q0, q1, q2, H, W):
    """Pixel box [i0, i1] x [j0, j1] of a projected triangle (q = pixel x, pixel y, ...); empty if off-image."""
    # clamp in float first so far off-screen coordinates cannot overflow the int cast
    j0 = ti.max(0, ti.cast(ti.ceil(ti.max(ti.min(q0[0], q1[0], q2[0]) - BBOX_SLACK, -1.0)), ti.i32))
    j1 = ti.min(W - 1, ti.cast(ti.floor(ti.min(ti.max(q0[0], q1[0], q2[0]) + BBOX_SLACK, W * 1.0)), ti.i32))
    i0 = ti.max(0, ti.cast(ti.ceil(ti.max(ti.min(q0[1], q1[1], q2[1]) - BBOX_SLACK, -1.0)), ti.i32))
    i1 = ti.min(H - 1, ti.cast(ti.floor(ti.min(ti.max(q0[1], q1[1], q2[1]) + BBOX_SLACK, H * 1.0)), ti.i32))
    return i0, i1, j0, j1


@ti.func
def _area2d(q0, q1, q2):
    return (q1[0] - q0[0]) * (q2[1] - q0[1]) - (q2[0] - q0[0]) * (q1[1] - q0[1])


@ti.func
def _cover2d(q0, q1, q2, i, j):
    """(covered, depth z/w) of pixel (i, j) for a triangle in front of the camera, from its projected vertices:
    2-D edge functions e_k (proportional to the screen-space barycentrics) and z/w, which is affine in screen
    space. For w > 0 this is the same test as the homogeneous one, with less arithmetic per pixel."""
    px, py = ti.cast(j, ti.f32), ti.cast(i, ti.f32)
    e2 = (q1[0] - q0[0]) * (py - q0[1]) - (q1[1] - q0[1]) * (px - q0[0])  # edge v0 -> v1: weight of v2
    e0 = (q2[0] - q1[0]) * (py - q1[1]) - (q2[1] - q1[1]) * (px - q1[0])  # edge v1 -> v2: weight of v0
    e1 = (q0[0] - q2[0]) * (py - q2[1]) - (q0[1] - q2[1]) * (px - q2[0])  # edge v2 -> v0: weight of v1
    area = e0 + e1 + e2
    if area < 0.0:
        e0, e1, e2, area = -e0, -e1, -e2, -area
    covered = False
    depth = 0.0
    if area > 0.0 and e0 >= 0.0 and e1 >= 0.0 and e2 >= 0.0:
        depth = (e0 * q0[2] + e1 * q1[2] + e2 * q2[2]) / area
        if depth >= -1.0 and depth <= 1.0:
            covered = True
    return covered, depth


@ti.func
def _cover(p0, p1, p2, s):
    """(covered, depth z/w) for sample s. No division but the depth's."""
    n, tot, a, c = _bary(p0, p1, p2, s)
    if tot < 0.0:  # make sum(n) positive: then b_k >= 0 <=> n_k >= 0, and w > 0 <=> n.w > 0
        n, tot = -n, -tot
    covered = False
    depth = 0.0
    if tot > 0.0 and n[0] >= 0.0 and n[1] >= 0.0 and n[2] >= 0.0:
        nw = n[0] * p0[3] + n[1] * p1[3] + n[2] * p2[3]
        if nw > 0.0:
            depth = (n[0] * p0[2] + n[1] * p1[2] + n[2] * p2[2]) / nw
            if depth >= -1.0 and depth <= 1.0:
                covered = True
    return covered, depth


@ti.func
def _update(o, t, depth, key_a: ti.template(), key_b: ti.template(), floor: ti.template(), mode: ti.template(),
            peel: ti.template()):
    """Offer (depth, triangle t) to the key of flat pixel o. A plain read first skips the atomic when the stored
    key is already nearer (it can only decrease, so a stale read merely costs an unneeded atomic). With peel,
    only depths beyond floor[o] + PEEL_EPS take part (depth peeling: the nearest surface behind the previous
    layer's); every pass of a mode applies the same test, so Vulkan's two scans agree."""
    take = True
    if ti.static(peel):
        take = depth > floor[o] + PEEL_EPS
    if take:
        if ti.static(mode == PACKED):
            # (depth + 2) is a positive float, so its bits order like the value: the high word orders by depth,
            # the low word by triangle id (lowest id wins exact ties).
            key = (ti.cast(ti.bit_cast(depth + 2.0, ti.i32), ti.i64) << 32) | ti.cast(t, ti.i64)
            if key < key_a[o]:
                ti.atomic_min(key_a[o], key)
        elif ti.static(mode == DEPTH):
            if depth < key_a[o]:
                ti.atomic_min(key_a[o], depth)
        else:  # ID: only where this triangle's depth equals the stored minimum (same code, bit-exact)
            if depth == key_a[o]:
                ti.atomic_min(key_b[o], ti.cast(t, ti.f32))


@ti.func
def _setup(pos: ti.template(), proj: ti.template(), V, b, v0, v1, v2, H, W, cull_sign):
    """Load triangle (v0, v1, v2) of batch item b and find its pixel box [i0, i1] x [j0, j1].

    Returns (front, q0, q1, q2, p0, p1, p2, i0, i1, j0, j1). front: all three vertices are in front of the
    camera and projected by `_project_vertex`: the q are used. Otherwise the clip-space p are loaded and the
    homogeneous test is used. Culling (cull_sign != 0) drops triangles in front of the camera whose screen area
    has that sign; triangles reaching w <= 0 are never culled.
    """
    q0, q1, q2 = _load(proj, V, b, v0), _load(proj, V, b, v1), _load(proj, V, b, v2)
    zero = ti.Vector([0.0, 0.0, 0.0, 0.0])
    p0, p1, p2 = zero, zero, zero
    i0, i1, j0, j1 = H, -1, 0, -1
    front = q0[3] > 0.0 and q1[3] > 0.0 and q2[3] > 0.0
    if front:
        if cull_sign == 0 or _area2d(q0, q1, q2) * cull_sign < 0.0:
            i0, i1, j0, j1 = _bbox2d(q0, q1, q2, H, W)
    else:
        p0, p1, p2 = _load(pos, V, b, v0), _load(pos, V, b, v1), _load(pos, V, b, v2)
        keep = True
        if cull_sign != 0 and p0[3] > 0.0 and p1[3] > 0.0 and p2[3] > 0.0:
            # in front but projected beyond PROJ_LIMIT: the screen area has the sign of det[(x, y, w)_k]
            xyw0 = ti.Vector([p0[0], p0[1], p0[3]])
            xyw1 = ti.Vector([p1[0], p1[1], p1[3]])
            xyw2 = ti.Vector([p2[0], p2[1], p2[3]])
            keep = xyw0.dot(xyw1.cross(xyw2)) * cull_sign < 0.0
        if keep:
            i0, i1, j0, j1 = _bbox_behind(p0, p1, p2, H, W)
    return front, q0, q1, q2, p0, p1, p2, i0, i1, j0, j1


@ti.func
def _cover_at(front, q0, q1, q2, p0, p1, p2, i, j, H, W, sx, sy):
    """(covered, depth z/w) of pixel (i, j): the 2-D test for front triangles, else the homogeneous one."""
    covered, depth = False, 0.0
    if front:
        covered, depth = _cover2d(q0, q1, q2, i, j)
    else:
        covered, depth = _cover(p0, p1, p2, _sample_ndc(i, j, H, W, sx, sy))
    return covered, depth


@ti.func
def _scan(front, q0, q1, q2, p0, p1, p2, b, t, i0, i1, j0, j1, H, W, sx, sy, key_a: ti.template(),
          key_b: ti.template(), floor: ti.template(), mode: ti.template(), peel: ti.template()):
    if i0 == i1 and j0 == j1:  # the common case for dense meshes: one pixel centre in the box
        covered, depth = _cover_at(front, q0, q1, q2, p0, p1, p2, i0, j0, H, W, sx, sy)
        if covered:
            _update((b * H + i0) * W + j0, t, depth, key_a, key_b, floor, mode, peel)
    else:
        for i in range(i0, i1 + 1):
            row = (b * H + i) * W
            for j in range(j0, j1 + 1):
                covered, depth = _cover_at(front, q0, q1, q2, p0, p1, p2, i, j, H, W, sx, sy)
                if covered:
                    _update(row + j, t, depth, key_a, key_b, floor, mode, peel)


@ti.func
def _project_vertex(pos: ti.template(), proj: ti.template(), o, H, W):
    """proj[o:o + 4] = (pixel x, pixel y, z/w, 1) of the vertex at pos[o:o + 4] if it is in front of the camera
    (pixel (i, j)'s centre is at (j, i)), or zeros with a 0 flag for w <= 0 or a projection beyond PROJ_LIMIT
    pixels (those triangles use the homogeneous test). Returns 1 when one of its four values is NaN or +-Inf,
    else 0; the test reads the exponent bits, which fast-math code generation cannot optimise away as it may
    `x != x`."""
    x, y, z, w = pos[o], pos[o + 1], pos[o + 2], pos[o + 3]
    bad = 0
    for val in ti.static((x, y, z, w)):
        if (ti.bit_cast(val, ti.i32) & 0x7F800000) == 0x7F800000:  # exponent all ones: NaN or Inf
            bad = 1
    X, Y, Z, ok = 0.0, 0.0, 0.0, 0.0
    if w > 0.0:
        r = 1.0 / w
        X = (x * r + 1.0) * 0.5 * W - 0.5
        Y = (y * r + 1.0) * 0.5 * H - 0.5
        Z = z * r
        if ti.abs(X) < PROJ_LIMIT and ti.abs(Y) < PROJ_LIMIT and ti.abs(Z) < PROJ_LIMIT:
            ok = 1.0
    proj[o], proj[o + 1], proj[o + 2], proj[o + 3] = X, Y, Z, ok
    return bad


@ti.func
def _raster_triangle(pos: ti.template(), proj: ti.template(), big: ti.template(), big_tiles: ti.template(),
                     status: ti.template(), V, T, H, W, sx, sy, cull_sign, key_a: ti.template(), key_b: ti.template(),
                     floor: ti.template(), b, t, v0, v1, v2, mode: ti.template(), peel: ti.template()):
    """Triangle t = (v0, v1, v2) of batch item b: scanned at once when its bounding box has at most SMALL_MAX
    pixels. Otherwise it is appended to the list of large triangles (modes PACKED and DEPTH; mode ID reuses
    DEPTH's list): slot s = status[0]++, big[5 s:5 s + 5] = (k = b T + t, i0, i1, j0, j1), big_tiles[s] = its
    number of TILE x TILE tiles."""
    front, q0, q1, q2, p0, p1, p2, i0, i1, j0, j1 = _setup(pos, proj, V, b, v0, v1, v2, H, W, cull_sign)
    if i1 >= i0 and j1 >= j0:
        if (i1 - i0 + 1) * (j1 - j0 + 1) <= SMALL_MAX:
            _scan(front, q0, q1, q2, p0, p1, p2, b, t, i0, i1, j0, j1, H, W, sx, sy, key_a, key_b, floor, mode,
                  peel)
        elif ti.static(mode != ID):
            s = ti.cast(ti.atomic_add(status[0], 1), ti.i32)
            big[5 * s], big[5 * s + 1], big[5 * s + 2] = b * T + t, i0, i1
            big[5 * s + 3], big[5 * s + 4] = j0, j1
            big_tiles[s] = ((i1 - i0) // TILE + 1) * ((j1 - j0) // TILE + 1)


@ti.kernel
def raster_pass(pos: nd(dtype=ti.f32, ndim=1),                        # (B V 4) f32 clip-space positions, flat
                proj: nd(dtype=ti.f32, ndim=1),                       # (B V 4) f32 scratch: pixel x, y, z/w, flag
                tris: nd(dtype=ti.i32, ndim=1),                       # (T 3) i32 vertex indices, flat
                big: nd(dtype=ti.i32, ndim=1),                        # (B T 5) i32 scratch: large triangles' slots
                big_tiles: nd(dtype=ti.i32, ndim=1),                  # (B T) i32 scratch: tiles per large triangle
                status: nd(ndim=1),                                   # (2,) large triangles, bad vertices
                rast: nd(dtype=ti.f32, ndim=1),                       # (B H W 4) f32 output (u, v, z/w, id + 1), flat
                B: ti.i32,                                            # batch size
                V: ti.i32,                                            # vertices per item
                T: ti.i32,                                            # triangles
                H: ti.i32,                                            # image height, pixels
                W: ti.i32,                                            # image width, pixels
                sx: ti.f32,                                           # 1 / W
                sy: ti.f32,                                           # 1 / H
                cull_sign: ti.i32,                                    # 1: drop triangles clockwise in the image
                run: ti.i32,                                          # pixels per loop iteration (kernels/runs.py)
                n_runs: ti.i32,                                       # runs per row (or per item)
                key_a: nd(ndim=1),                                    # (B H W) key buffer (sentinel on entry)
                key_b: nd(ndim=1),                                    # (B H W) id buffer on Vulkan (= key_a on cpu/cuda)
                floor: nd(dtype=ti.f32, ndim=1),                      # (B H W) f32 depth floor (peel), else (1,)
                mode: ti.template(),                                  # key mode: PACKED, DEPTH or ID
                project: ti.template(),                               # run the projection loop
                resolve_after: ti.template(),                         # run the resolve loop
                single: ti.template(),                                # B == 1: batch loops compiled away
                peel: ti.template()):                                 # keep only depths beyond floor
    """One launch for the whole forward when no triangle is large (one thread-pool round trip per loop, but one
    kernel call instead of three). Its parallel loops run one after another:
      1. (project) every vertex projected into proj; status[1] counts vertices with a NaN or Inf value;
      2. per (triangle, batch item): `_raster_triangle` in key mode `mode`, skipped entirely (loop of length
         zero) when status[1] > 0, so the key buffers stay clean for the caller's error;
      3. (resolve_after) the resolve of every pixel (see `resolve`), only when no triangle was large
         (status[0] == 0) and no value bad: otherwise the caller scans the large triangles with `raster_big`
         and then launches `resolve`.
    status (2,) = (number of large triangles, number of bad vertices), zero on entry: int32 on cpu / cuda,
    float32 on Vulkan, where float atomics in loops are reliable (exact to 2^24, checked by the caller).
    single (B == 1): the batch loops compiled away (kernels/runs.py `items`)."""
    if ti.static(project):
        for v in range(V):
            for b in range(items(B, single)):  # batch innermost: no integer div/mod per element
                if _project_vertex(pos, proj, 4 * (b * V + v), H, W):
                    ti.atomic_add(status[1], 1)
    for t in range(T * ti.cast(status[1] == 0, ti.i32)):  # batch loop inside: triangle indices loaded once
        v0, v1, v2 = _tri(tris, t)
        for b in range(items(B, single)):
            _raster_triangle(pos, proj, big, big_tiles, status, V, T, H, W, sx, sy, cull_sign, key_a, key_b, floor,
                             b, t, v0, v1, v2, mode, peel)
    if ti.static(resolve_after):
        for r in range(B * H * n_runs * ti.cast(status[0] == 0 and status[1] == 0, ti.i32)):
            _resolve_run(pos, tris, key_a, key_b, rast, V, H, W, sx, sy, r, run, n_runs, mode)


@ti.func
def _task(task, tile_end: ti.template(), big: ti.template()):
    """Map a flat task index to (triangle slot k = b T + t, pixel range) by binary search in the inclusive prefix
    sum of the large triangles' tile counts."""
    lo, hi = 0, tile_end.shape[0] - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if tile_end[mid] > task:
            hi = mid
        else:
            lo = mid + 1
    s = lo
    first = tile_end[s - 1] if s > 0 else 0
    tile = task - first
    k, i0, i1, j0, j1 = big[5 * s], big[5 * s + 1], big[5 * s + 2], big[5 * s + 3], big[5 * s + 4]
    tiles_x = (j1 - j0) // TILE + 1
    ti0 = i0 + (tile // tiles_x) * TILE
    tj0 = j0 + (tile % tiles_x) * TILE
    return k, ti0, ti.min(i1, ti0 + TILE - 1), tj0, ti.min(j1, tj0 + TILE - 1)


@ti.kernel
def raster_big(pos: nd(dtype=ti.f32, ndim=1),                         # (B V 4) f32 clip-space positions
               proj: nd(dtype=ti.f32, ndim=1),                        # (B V 4) f32 projected vertices
               tris: nd(dtype=ti.i32, ndim=1),                        # (T 3) i32
               big: nd(dtype=ti.i32, ndim=1),                         # (n, 5) i32 large triangles' slots
               tile_end: nd(dtype=ti.i32, ndim=1),                    # (n,) i32 inclusive prefix sum of tiles
               n_tasks: ti.i32,                                       # total tiles
               V: ti.i32,                                             # vertices per item
               T: ti.i32,                                             # triangles
               H: ti.i32,                                             # image height, pixels
               W: ti.i32,                                             # image width, pixels
               sx: ti.f32,                                            # 1 / W
               sy: ti.f32,                                            # 1 / H
               key_a: nd(ndim=1),                                     # (B H W) key buffer
               key_b: nd(ndim=1),                                     # (B H W) id buffer on Vulkan
               floor: nd(dtype=ti.f32, ndim=1),                       # (B H W) f32 depth floor (peel), else (1,)
               mode: ti.template(),                                   # key mode: PACKED, DEPTH or ID
               peel: ti.template()):                                  # keep only depths beyond floor
    """One task per TILE x TILE tile of a large triangle's bounding box."""
    for task in range(n_tasks):
        k, i0, i1, j0, j1 = _task(task, tile_end, big)
        b, t = k // T, k % T
        v0, v1, v2 = _tri(tris, t)
        front, q0, q1, q2, p0, p1, p2, bi0, bi1, bj0, bj1 = _setup(pos, proj, V, b, v0, v1, v2, H, W, 0)
        _scan(front, q0, q1, q2, p0, p1, p2, b, t, i0, i1, j0, j1, H, W, sx, sy, key_a, key_b, floor, mode, peel)


@ti.func
def _write(pos: ti.template(), tris: ti.template(), rast: ti.template(), V, b, i, j, o, t, H, W, sx, sy):
    """rast[o:o + 4] = (u, v, z/w, t + 1) for the winning triangle t at pixel (i, j), zeros when t < 0."""
    u, v, d, tid = 0.0, 0.0, 0.0, 0.0
    if t >= 0:
        v0, v1, v2 = _tri(tris, t)
        p0 = _load(pos, V, b, v0)
        p1 = _load(pos, V, b, v1)
        p2 = _load(pos, V, b, v2)
        # the winner covers the pixel: no coverage test, and no sign fix (n / sum(n) and (n . z) / (n . w) do
        # not depend on the sign of n). Branch-free, this made the B = 8 resolve about a quarter faster on the CPU.
        n, tot, a, c = _bary(p0, p1, p2, _sample_ndc(i, j, H, W, sx, sy))
        nz = n[0] * p0[2] + n[1] * p1[2] + n[2] * p2[2]
        nw = n[0] * p0[3] + n[1] * p1[3] + n[2] * p2[3]
        r = 1.0 / tot
        u, v, d, tid = n[1] * r, n[2] * r, nz / nw, ti.cast(t + 1, ti.f32)
    rast[o], rast[o + 1], rast[o + 2], rast[o + 3] = u, v, d, tid


@ti.func
def _take_winner(p, key_a: ti.template(), key_b: ti.template(), mode: ti.template()):
    """The triangle that won flat pixel p (-1 for none), read from the key(s) that `_update` wrote (mode PACKED:
    the packed key_a; else the id in key_b), which are reset to their empty sentinel."""
    t = -1
    if ti.static(mode == PACKED):
        k = key_a[p]
        if k != ti.i64(KEY_EMPTY_I64):
            t = ti.cast(k & ti.i64(0xFFFFFFFF), ti.i32)
        key_a[p] = ti.i64(KEY_EMPTY_I64)
    else:
        tk = key_b[p]
        if tk < KEY_EMPTY:
            t = ti.cast(tk, ti.i32)
        key_a[p] = KEY_EMPTY
        key_b[p] = KEY_EMPTY
    return t


@ti.func
def _resolve_run(pos: ti.template(), tris: ti.template(), key_a: ti.template(), key_b: ti.template(),
                 rast: ti.template(), V, H, W, sx, sy, r, run, n_runs, mode: ti.template()):
    """Resolve the r-th run of pixels (kernels/runs.py `row_run`)."""
    b, i, j0, j1 = row_run(r, run, n_runs, H, W)
    for j in range(j0, j1):
        p = (b * H + i) * W + j
        t = _take_winner(p, key_a, key_b, mode)
        _write(pos, tris, rast, V, b, i, j, 4 * p, t, H, W, sx, sy)


@ti.kernel
def resolve(pos: nd(dtype=ti.f32, ndim=1),                            # (B V 4) f32 clip-space positions
            tris: nd(dtype=ti.i32, ndim=1),                           # (T 3) i32
            key_a: nd(ndim=1),                                        # (B H W) key buffer (reset here)
            key_b: nd(ndim=1),                                        # (B H W) id buffer on Vulkan
            rast: nd(dtype=ti.f32, ndim=1),                           # (B H W 4) f32 output
            B: ti.i32,                                                # batch size
            V: ti.i32,                                                # vertices per item
            H: ti.i32,                                                # image height, pixels
            W: ti.i32,                                                # image width, pixels
            sx: ti.f32,                                               # 1 / W
            sy: ti.f32,                                               # 1 / H
            run: ti.i32,                                              # pixels per loop iteration (kernels/runs.py)
            n_runs: ti.i32,                                           # runs per row (or per item)
            mode: ti.template()):                                     # key mode: PACKED, DEPTH or ID
    """Per pixel: barycentrics of the winner in the key buffers (mode PACKED, or the split modes' ID), which are
    reset for the next call. Loops over runs of `run` pixels of a row (n_runs per row, kernels/runs.py). Used
    after `raster_big`; without large triangles `raster_pass` resolves in the same launch."""
    for r in range(B * H * n_runs):
        _resolve_run(pos, tris, key_a, key_b, rast, V, H, W, sx, sy, r, run, n_runs, mode)


@ti.func
def _rast_grad(pos: ti.template(), tris: ti.template(), grad_rast: ti.template(), V, b, i, j, o, t, H, W, sx, sy):
    """Vertex indices and d loss / d (x, y, z, w) of triangle t's three vertices from pixel (i, j) (rast offset o).

    With n = a x c, b = n / sum(n), depth = (n . z) / (n . w):
      dL/dn_k = (g_b[k] - g_b . b) / sum(n) + g_d (z_k - depth w_k) / (n . w)
      dL/da = c x dL/dn,  dL/dc = dL/dn x a,  a_k = x_k - sx w_k,  c_k = y_k - sy w_k.
    """
    v0, v1, v2 = _tri(tris, t)
    p0 = _load(pos, V, b, v0)
    p1 = _load(pos, V, b, v1)
    p2 = _load(pos, V, b, v2)
    s = _sample_ndc(i, j, H, W, sx, sy)
    n, tot, a, c = _bary(p0, p1, p2, s)
    r_tot = 1.0 / tot
    zs = ti.Vector([p0[2], p1[2], p2[2]])
    ws = ti.Vector([p0[3], p1[3], p2[3]])
    r_nw = 1.0 / n.dot(ws)
    depth = n.dot(zs) * r_nw
    gb = ti.Vector([0.0, grad_rast[o], grad_rast[o + 1]])
    gd = grad_rast[o + 2]
    gn = (gb - gb.dot(n * r_tot)) * r_tot + (gd * r_nw) * (zs - depth * ws)
    ga = c.cross(gn)
    gc = gn.cross(a)
    gz = (gd * r_nw) * n
    gw = -s[0] * ga - s[1] * gc - (gd * depth * r_nw) * n
    return ti.Vector([v0, v1, v2]), ga, gc, gz, gw


@ti.kernel
def rast_bwd(pos: nd(dtype=ti.f32, ndim=1),                           # (B V 4) f32 clip-space positions
             tris: nd(dtype=ti.i32, ndim=1),                          # (T 3) i32
             rast: nd(dtype=ti.f32, ndim=1),                          # (B H W 4) f32 forward output
             grad_rast: nd(dtype=ti.f32, ndim=1),                     # (B H W 4) f32 d loss / d rast
             grad_pos: nd(dtype=ti.f32, ndim=1),                      # (copies B V 4) f32, zero on entry, added to
             B: ti.i32,                                               # batch size
             V: ti.i32,                                               # vertices per item
             H: ti.i32,                                               # image height, pixels
             W: ti.i32,                                               # image width, pixels
             sx: ti.f32,                                              # 1 / W
             sy: ti.f32,                                              # 1 / H
             run: ti.i32,                                             # pixels per loop iteration (kernels/runs.py)
             n_runs: ti.i32,                                          # runs per row (or per item)
             scatter: ti.template()):                                 # ATOMIC or COPIES (kernels/scatter.py)
    """Add d loss / d pos from d loss / d (u, v, z/w) of every covered pixel into grad_pos (zero on entry):
    (B V 4) for ATOMIC, one such copy per CPU thread for COPIES (see kernels/scatter.py). Runs of pixels as in
    `resolve`."""
    for r in range(B * H * n_runs):
        b, i, j0, j1 = row_run(r, run, n_runs, H, W)
        for j in range(j0, j1):
            o = 4 * ((b * H + i) * W + j)
            tid = ti.cast(rast[o + 3], ti.i32)
            if tid > 0:
                vs, ga, gc, gz, gw = _rast_grad(pos, tris, grad_rast, V, b, i, j, o, tid - 1, H, W, sx, sy)
                base = scatter_base(B * V * 4, scatter)
                for k in ti.static(range(3)):
                    q = base + (b * V + vs[k]) * 4
                    add(grad_pos, q, ga[k], scatter)
                    add(grad_pos, q + 1, gc[k], scatter)
                    add(grad_pos, q + 2, gz[k], scatter)
                    add(grad_pos, q + 3, gw[k], scatter)

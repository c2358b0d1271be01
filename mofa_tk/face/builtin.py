"""A deterministic, procedurally generated morphable face model that ships with mofa_tk.

`builtin_model()` needs no download and no data from any real face model: every array is computed
here, from fixed formulas and fixed NumPy seeds, so it is identical on every call and every machine.
It exists so that examples, tests and benchmarks can run without a licensed model; for real work load a
real model with `mofa_tk.load_model`.

Construction
------------
* Base surface: a sheet swept by horizontal arcs. Row ``v`` is the arc
  ``(A sin t, y, zf - D c (1 + k c) / (1 + k))`` with ``c = 1 - cos t``, where ``y(v)`` and ``zf(y)`` follow
  a smooth mid-sagittal profile (forehead, face, chin) and the half width ``A``, side depth ``D`` and front
  flatness ``k`` vary smoothly with height. The parameters ``(u, v)`` are arc lengths (across each row and
  along the profile), so a regular grid in ``(u, v)`` gives nearly square cells. The grid is trimmed to a
  rounded outline in ``(t, y)`` that runs from the upper forehead to just under the chin and sideways to
  t = 83 deg (in front of the ears), like the front region of the Basel Face Model; each grid cell is split
  along its shorter diagonal. Mean face: about 145 mm wide, 194 mm from forehead to chin, nose tip at
  z ~ 99 mm, origin near the middle of the head (the sides of the mask reach z ~ -20 mm).
* Facial features are smooth (Gaussian and curve-distance) bumps and grooves added to the base surface:
  brow ridges and glabella, eye sockets with eyeballs, lid margins and lid creases, nose bridge, tip, alae
  and nostrils, cheekbones and cheeks, nasolabial folds, lips with a mouth line, mentolabial fold, chin.
* The mouth line is a grid row. Between the mouth corners it is a zero-width slit: its vertices exist
  twice (one copy for the upper lip, one for the lower lip) at the same position, so the mesh stays one
  connected, consistently wound manifold sheet (a disk with one slit-shaped hole) and expressions
  (e.g. ``jaw_open``) can part the lips.
* Mean albedo (linear RGB in [0, 1]): skin, pinker cheeks, red lips, dark brows, painted eyes (sclera,
  iris, pupil, lash line) and dark nostrils, averaged over each vertex's grid cell (anti-aliased).
* ``resolution="default"`` uses a 1.95 mm grid (11,129 vertices, 21,716 triangles); ``resolution="bfm"``
  uses a 1.087 mm grid whose outline threshold is chosen by bisection, plus at most a few boundary
  half-cells, so that the mesh has exactly 35,709 vertices (the size of the BFM front face used by
  Deep3DFaceRecon / MoFA-style code) and about 70k triangles.

Components (all bases (V, 3, K), columns orthonormal in the flattened 3V space: Gram-Schmidt in the order
listed, so the semantic components come first and keep their meaning)
---------------------------------------------------------------------------------------------------------
Standard deviations follow the convention of PCA models such as BFM/SFM: ``std[k]`` is the L2 norm, over
all 3V coordinates, of the displacement (mm) or colour change produced by one unit of coefficient, so
``basis * std`` at one unit gives RMS per-vertex changes of ``std / sqrt(V)`` (std grows with V). The
largest per-vertex change of one unit is in ``meta["shape_peak_mm"]``, ``meta["expr_peak_mm"]`` and
``meta["albedo_peak"]``.

* shape, K_id = 80: 20 semantic components (``meta["shape_names"]``: face width/height/depth, nose size,
  bridge height, nose width/length, jaw width, cheekbones, eye spacing/depth, lip fullness, mouth width,
  chin protrusion, forehead slope, brow ridge, chin length, eye size/height, cheek fullness) peaking at
  1-4 mm per unit, followed by 60 padding components ``shape_smooth_<k>``: smooth random deformation
  fields (Gaussian radial basis functions 45 to 15 mm wide, alternately mirror-symmetric and
  antisymmetric, fixed seed) whose RMS per-vertex displacement decays from 1.0 mm to 0.12 mm.
* expression, K_exp = 64: 20 semantic components (``meta["expr_names"]``: jaw open, smile, frown, brow
  raise/lower, pucker, eye close, lip press, mouth left/right, asymmetric smile/brow raise/eye close
  (positive = stronger on the subject's left, +x), cheek puff, nose wrinkle, jaw left/right and forward,
  upper lip raise, lower lip depress, mouth stretch, squint; one unit is a moderate expression, about
  2.5 units a full one, e.g. eyes fully closed), followed by 44 padding components ``expr_local_<k>``:
  random local deformations (Gaussian bumps 6-14 mm wide around mouth, eyes, brows, cheeks, nose and
  chin; symmetric, antisymmetric or one-sided; some on one lip only), sorted by decreasing std.
* albedo, K_alb = 80: 10 semantic components (``meta["albedo_names"]``: skin tone (+ = darker), redness,
  yellowness, lip colour, brow darkness, cheek colour, beard shadow, under-eye darkness, iris colour,
  forehead tone), followed by 70 padding components ``albedo_smooth_<k>``: smooth random colour fields
  (mostly luminance, proportional to the mean albedo) whose RMS decays from 0.02 to 0.003.

The model is mirror symmetric about x = 0 (up to the few half-cells added to hit the exact "bfm" count).
Landmarks: the iBUG-68 layout, point 0 at the subject's right (negative x), see `builtin_model`.
"""
from __future__ import annotations

import functools

import numpy as np

from .builtin_mesh import (EYE_X, EYE_Y, RESOLUTIONS, SKIN, X_MOUTH, Y_MOUTH, albedo_painting, brow_curve, eye_lids,
                           gauss_bump, gauss_pair, landmark_vertices, lip_borders, mean_mesh, sigmoid, smoothstep,
                           vertex_normals_np)
from .model import FaceModel

#: Components per block: identity, expression, albedo.
K_ID, K_EXP, K_ALB = 80, 64, 80


def builtin_model(resolution: str = "default") -> FaceModel:
    """The built-in procedural morphable face model (no download, deterministic; see the module docstring).

    resolution: "default" (11,129 vertices, 21,716 triangles) or "bfm" (exactly 35,709 vertices, the
        vertex count of the BFM front face, and about 70k triangles; for benchmarks).

    Returns a cached `FaceModel` (treat it as immutable; `.to(device)` / `.truncate()` make copies):
        mean_shape (V, 3) float32 mm: x to the subject's left, y up, z out of the face, origin near the
            middle of the head, nose tip at z ~ 99 mm;
        shape_basis (V, 3, 80), shape_std (80,) mm; expr_basis (V, 3, 64), expr_std (64,) mm: orthonormal
            columns, std = L2 norm (over all 3V coordinates) of the one-unit displacement;
        albedo_mean (V, 3) float32 linear RGB in [0, 1]; albedo_basis (V, 3, 80), albedo_std (80,);
        triangles (T, 3) int32, counter-clockwise seen from +z;
        landmarks (68,) int64 iBUG-68 vertex indices: 0-16 jaw from the subject's right (-x) to left,
            17-21 right brow, 22-26 left brow, 27-30 nose bridge to tip, 31-35 nostril base, 36-41 right
            eye, 42-47 left eye, 48-59 outer lip, 60-67 inner lip (61-63 on the upper-lip copy of the mouth
            line, 65-67 on the lower-lip copy);
        meta: component names ("shape_names", "expr_names", "albedo_names") and peak per-vertex effects.
    Raises ValueError for an unknown resolution.
    """
    if not isinstance(resolution, str) or resolution not in RESOLUTIONS:
        raise ValueError(f"builtin_model: resolution must be one of {list(RESOLUTIONS)}, got {resolution!r}")
    return _build(resolution)


# ============================================================================ components
def _orthonormalise(fields):
    """fields (V, 3, K) -> Q (V, 3, K): Gram-Schmidt in column order, done as Cholesky QR
    (Q = M R^-1 with R upper triangular with positive diagonal: the same Q as Householder QR).

    With unit-norm columns whose Cholesky diagonal stays above 0.01 (condition number below ~10^3), one
    pass leaves |Q^T Q - I| ~ 1e-12; a second pass runs for worse-conditioned inputs."""
    V, _, K = fields.shape
    M = fields.reshape(V * 3, K)
    norms = np.linalg.norm(M, axis=0)
    if not np.all(norms > 0):
        raise RuntimeError("builtin_model: a component field is zero")
    Q = M / norms
    L = np.linalg.cholesky(Q.T @ Q)
    if np.diag(L).min() < 1e-3:
        raise RuntimeError("builtin_model: component fields are (nearly) linearly dependent")
    Q = Q @ np.linalg.inv(L).T
    if np.diag(L).min() < 1e-2:
        Q = Q @ np.linalg.inv(np.linalg.cholesky(Q.T @ Q)).T
    return Q.reshape(V, 3, K)


def _rbf_matrix(xy, sigma):
    """Gaussian RBFs (V, nx * ny) of width sigma on a lattice (spacing 1.1 sigma) symmetric about x = 0,
    and the column permutation that mirrors the lattice (x -> -x)."""
    spacing = 1.1 * sigma
    nx = 2 * int(np.ceil(80.0 / spacing)) + 1
    ny = 2 * int(np.ceil(105.0 / spacing)) + 1
    gx = (np.arange(nx) - nx // 2) * spacing
    gy = (np.arange(ny) - ny // 2) * spacing
    Gx = np.exp(-0.5 * ((xy[:, 0:1] - gx) / sigma) ** 2)
    Gy = np.exp(-0.5 * ((xy[:, 1:2] - gy) / sigma) ** 2)
    Phi = (Gx[:, :, None] * Gy[:, None, :]).reshape(len(xy), nx * ny)
    mirror = (np.arange(nx)[::-1][:, None] * ny + np.arange(ny)[None, :]).ravel()
    return Phi, mirror


def _smooth_random_fields(xy, n, seed, sigmas, kind):
    """n smooth random fields (V, 3, n); alternately mirror-symmetric and antisymmetric about x = 0.

    Field k is a random combination of Gaussian RBFs of width sigmas[k] (mm).
    kind "shape": 3D displacements (z weighted more); kind "albedo": colour changes (mostly luminance).
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((xy.shape[0], 3, n))
    for sigma in sorted(set(float(v) for v in sigmas), reverse=True):
        ks = [k for k in range(n) if float(sigmas[k]) == sigma]
        Phi, mirror = _rbf_matrix(xy, sigma)
        C = Phi.shape[1]
        Ws = []
        for k in ks:
            if kind == "shape":
                W = rng.standard_normal((C, 3)) * np.array([0.7, 0.7, 1.0])
                Wm = W[mirror] * np.array([-1.0, 1.0, 1.0])   # mirrored field: f(-x), x component negated
            else:
                W = rng.standard_normal((C, 1)) * np.array([1.0, 0.75, 0.6]) + 0.15 * rng.standard_normal((C, 3))
                Wm = W[mirror]
            Ws.append(0.5 * (W + (1.0 if k % 2 == 0 else -1.0) * Wm))
        F = Phi @ np.concatenate(Ws, axis=1)                 # (V, 3 * len(ks))
        out[:, :, ks] = F.reshape(len(xy), len(ks), 3).transpose(0, 2, 1)
    return out


def _normalise_rms(fields, rms):
    """Scale each field (V, 3, K) to per-vertex RMS magnitude rms[k]."""
    cur = np.sqrt((fields ** 2).sum(axis=1).mean(axis=0))
    return fields * (np.asarray(rms) / np.maximum(cur, 1e-300))


def _shape_fields(P):
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    ax, sx = np.abs(x), np.tanh(x / 3.0)
    V = len(x)
    zero = np.zeros(V)

    def vec(a, b, c):
        return np.stack([a + zero, b + zero, c + zero], 1)

    F, names = [], []

    def add(name, f):
        names.append(name)
        F.append(f)

    add("face_width", vec(0.045 * x, 0, 0))
    add("face_height", vec(0, 0.035 * y, 0))
    add("face_depth", vec(0, 0, 0.035 * z))
    wn = gauss_bump(x, y, 0, 2, 12, 18)
    add("nose_size", wn[:, None] * 0.13 * (P - np.array([0.0, 0.0, 75.0])))
    add("nose_bridge_height", vec(0, 0, 2.6 * gauss_bump(x, y, 0, 12, 6, 13)))
    add("nose_width", vec(0.2 * x * gauss_pair(x, y, 12, -14, 10, 9), 0, 0))
    wt = gauss_bump(x, y, 0, -10, 9, 7)
    add("nose_length", vec(0, -2.5 * wt, 1.5 * wt))
    wj = smoothstep(-25, -72, y) * (1 - 0.6 * smoothstep(-78, -95, y))
    add("jaw_width", vec(0.07 * x * wj, 0, -0.02 * ax * wj))
    wc = gauss_pair(x, y, 50, 8, 12, 10)
    add("cheekbones", vec(2.0 * sx * wc, 0.5 * wc, 2.5 * wc))
    we = gauss_pair(x, y, EYE_X, EYE_Y, 14, 10)
    add("eye_spacing", vec(2.5 * sx * we, 0, 0))
    add("eye_depth", vec(0, 0, -2.5 * gauss_pair(x, y, EYE_X, EYE_Y + 1, 12, 9)))
    wl = gauss_bump(x, y, 0, Y_MOUTH + 3.5, 16, 3.5) + gauss_bump(x, y, 0, Y_MOUTH - 4.5, 15, 4.5)
    add("lip_fullness", vec(0, 0.8 * gauss_bump(x, y, 0, Y_MOUTH + 5, 16, 3) - 0.8 * gauss_bump(x, y, 0, Y_MOUTH - 6, 15, 4), 2.2 * wl))
    add("mouth_width", vec(0.12 * x * gauss_bump(x, y, 0, Y_MOUTH, 28, 10), 0, 0))
    add("chin_protrusion", vec(0, 0, 4.0 * gauss_bump(x, y, 0, -76, 18, 12)))
    add("forehead_slope", vec(0, 0, -4.0 * np.clip((y - 45) / 55, 0, None) ** 2))
    add("brow_ridge", vec(0, 0, 2.5 * gauss_pair(x, y, 27, 45, 16, 6) + 2.0 * gauss_bump(x, y, 0, 41, 10, 7)))
    add("chin_length", vec(0, -4.0 * smoothstep(-48, -85, y), 0))
    wr, wlft = gauss_bump(x, y, -EYE_X, EYE_Y, 13, 9), gauss_bump(x, y, EYE_X, EYE_Y, 13, 9)
    add("eye_size", np.stack([0.13 * (wr * (x + EYE_X) + wlft * (x - EYE_X)), 0.13 * (wr + wlft) * (y - EYE_Y), zero], 1))
    add("eye_height", vec(0, 2.5 * gauss_pair(x, y, EYE_X, EYE_Y + 2, 16, 12), 0))
    wf = gauss_pair(x, y, 38, -22, 16, 16)
    add("cheek_fullness", vec(1.5 * sx * wf, 0, 3.0 * wf))
    sem = np.stack(F, 2)
    n_rand = K_ID - sem.shape[2]
    sigmas = np.array([45.0, 32.0, 22.0, 15.0])[np.arange(n_rand) * 4 // n_rand]
    rnd = _smooth_random_fields(P[:, :2], n_rand, 1234, sigmas, "shape")
    rms = 1.0 * (0.12 / 1.0) ** (np.arange(n_rand) / (n_rand - 1))
    rnd = _normalise_rms(rnd, rms)
    names += [f"shape_smooth_{k}" for k in range(sem.shape[2], K_ID)]
    return np.concatenate([sem, rnd], 2), names


def _jaw_weight(x, y, lip_side):
    """1 on what moves with the jaw (below the mouth line), 0 above; sharp inside the mouth."""
    s = 0.35 + 9.0 * smoothstep(X_MOUTH - 3, X_MOUTH + 12, np.abs(x))
    w = sigmoid((Y_MOUTH - y) / s)
    w = np.where(lip_side == -1, 1.0, np.where(lip_side == 1, 0.0, w))
    return w * (1 - 0.6 * smoothstep(40, 70, np.abs(x)))


def _eye_close_field(x, y):
    """Upper lid down to the lower lid (both eyes), one unit ~ 40% closed."""
    ax = np.abs(x)
    t, yc, up, lo = eye_lids(ax)
    H = np.maximum(up - lo, 0.0)
    win = 1 - smoothstep(0.7, 1.25, np.abs(t))
    frac = np.clip((y - lo) / np.maximum(H, 1e-6), 0, 1)        # 0 at the lower lid, 1 at the upper lid
    above = np.exp(-0.5 * (np.maximum(y - up, 0) / 5.0) ** 2)     # skin above the upper lid follows, fading
    below = (y >= lo)
    dy = -0.4 * H * frac * above * win * below
    dz = 0.6 * frac * above * win * below * np.sin(np.pi * np.clip(frac, 0, 1)) ** 0.5
    return dy, dz


def _expr_fields(P, lip_side):
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    ax, sx = np.abs(x), np.tanh(x / 3.0)
    V = len(x)
    zero = np.zeros(V)

    def vec(a, b, c):
        return np.stack([a + zero, b + zero, c + zero], 1)

    F, names = [], []

    def add(name, f):
        names.append(name)
        F.append(f)

    wj = _jaw_weight(x, y, lip_side)
    phi, hy, hz, fwd = 0.08, 10.0, -10.0, 3.4
    jaw_open = np.stack([zero, -phi * (z - hz) * wj, (phi * (y - hy) + fwd) * wj], 1)
    add("jaw_open", jaw_open)
    wc = gauss_pair(x, y, X_MOUTH, Y_MOUTH, 7, 6)
    wch = gauss_pair(x, y, 36, -16, 12, 12)
    smile = vec(2.8 * sx * wc, 3.4 * wc + 1.8 * wch + 1.0 * gauss_pair(x, y, EYE_X, EYE_Y - 4, 10, 3.5), -1.8 * wc + 1.6 * wch)
    add("smile", smile)
    add("mouth_frown", vec(0.5 * sx * wc, -3.0 * wc + 1.0 * gauss_bump(x, y, 0, -70, 12, 10), -0.5 * wc + 0.8 * gauss_bump(x, y, 0, -70, 12, 10)))
    wb = gauss_pair(x, y, 28, 48, 24, 12)
    brow_raise = vec(0, 4.0 * wb + 1.2 * gauss_pair(x, y, EYE_X, EYE_Y + 9, 14, 4), 0.5 * wb)
    add("brow_raise", brow_raise)
    wbl = gauss_pair(x, y, 17, 45, 11, 7)
    add("brow_lower", vec(-2.0 * sx * wbl, -2.5 * wbl - 1.0 * gauss_pair(x, y, 35, 46, 12, 6), 1.0 * wbl))
    wp = gauss_bump(x, y, 0, Y_MOUTH - 1, 16, 9)
    add("lip_pucker", vec(-0.25 * x * wp, 0, 5.0 * wp))
    ecy, ecz = _eye_close_field(x, y)
    add("eye_close", vec(0, ecy, ecz))
    up_w = 1 - _jaw_weight(x, y, lip_side) / np.maximum(1 - 0.6 * smoothstep(40, 70, ax), 1e-9)
    wlp = gauss_bump(x, y, 0, Y_MOUTH, 18, 6)
    add("lip_press", vec(0, -1.0 * wlp * up_w + 1.0 * wlp * (1 - up_w), -2.0 * wlp))
    add("mouth_left_right", vec(3.5 * gauss_bump(x, y, 0, Y_MOUTH, 22, 12), 0, 0))
    add("smile_asymmetric", smile * np.tanh(x / 6.0)[:, None])
    add("brow_raise_asymmetric", brow_raise * np.tanh(x / 10.0)[:, None])
    add("eye_close_asymmetric", vec(0, ecy, ecz) * np.tanh(x / 5.0)[:, None])
    wpf = gauss_pair(x, y, 38, -32, 14, 14)
    add("cheek_puff", vec(2.5 * sx * wpf, 0, 3.0 * wpf + 0.8 * wp))
    wnw = gauss_pair(x, y, 12, -5, 8, 12)
    add("nose_wrinkle", vec(0, 2.5 * wnw + 0.8 * gauss_bump(x, y, 0, Y_MOUTH + 6, 14, 5) * up_w, 0.5 * wnw))
    add("jaw_left_right", vec(3.0 * wj, 0, 0))
    add("jaw_forward", vec(0, 0, 3.0 * wj))
    wul = gauss_bump(x, y, 0, Y_MOUTH + 4, 16, 6) * up_w
    add("upper_lip_raise", vec(0, 2.5 * wul, 1.0 * wul))
    wll = gauss_bump(x, y, 0, Y_MOUTH - 5, 15, 6) * (1 - up_w)
    add("lower_lip_depress", vec(0, -2.5 * wll, 0.5 * wll))
    add("mouth_stretch", vec(3.5 * sx * wc, -0.5 * wc, -1.5 * wc))
    wsq = gauss_pair(x, y, EYE_X, EYE_Y - 4.5, 12, 4)
    add("eye_squint", vec(0, 1.8 * wsq + 0.6 * wch, 0.5 * wsq))
    sem = np.stack(F, 2)

    # random local deformations
    n_rand = K_EXP - sem.shape[2]
    rng = np.random.default_rng(4321)
    regions = np.array([[0, -41], [18, -41], [26, -37], [10, -47], [0, -52], [30, -18], [40, -28], [31, 33],
                        [20, 46], [40, 45], [0, 55], [12, -8], [0, -72], [31, 20], [48, 10], [25, -60]], float)
    rnd = np.zeros((V, 3, n_rand))
    peaks = 2.4 * (0.5 / 2.4) ** (np.arange(n_rand) / (n_rand - 1))
    for k in range(n_rand):
        c = regions[k % len(regions)] + rng.normal(0, 3.0, 2)
        sig = rng.uniform(6, 14)
        d = rng.standard_normal(3) * np.array([0.7, 1.0, 0.8])
        d /= np.linalg.norm(d)
        mode = k % 3                        # 0 symmetric, 1 antisymmetric, 2 one-sided
        b = gauss_bump(x, y, c[0], c[1], sig, sig)
        bm = gauss_bump(-x, y, c[0], c[1], sig, sig)
        dm = d * np.array([-1.0, 1.0, 1.0])
        if mode == 0:
            f = b[:, None] * d + bm[:, None] * dm
        elif mode == 1:
            f = b[:, None] * d - bm[:, None] * dm
        else:
            f = b[:, None] * d
        if abs(c[1] - Y_MOUTH) < 12 and rng.random() < 0.5:   # some act on one lip only
            f = f * (up_w if rng.random() < 0.5 else 1 - up_w)[:, None]
        pk = np.sqrt((f ** 2).sum(1)).max()
        rnd[:, :, k] = f * (peaks[k] / max(pk, 1e-12))
    rnd = rnd[:, :, np.argsort(-np.linalg.norm(rnd.reshape(V * 3, n_rand), axis=0), kind="stable")]
    names += [f"expr_local_{k}" for k in range(sem.shape[2], K_EXP)]
    return np.concatenate([sem, rnd], 2), names


def _albedo_fields(P, alb_mean):
    x, y = P[:, 0], P[:, 1]
    ax = np.abs(x)
    F, names = [], []

    def add(name, f):
        names.append(name)
        F.append(f)

    ub, lb = lip_borders(x)
    lip = smoothstep(-0.6, 0.6, ub - y) * smoothstep(-0.6, 0.6, y - lb) * (1 - smoothstep(X_MOUTH - 1.5, X_MOUTH + 0.5, ax))
    yb, th, win = brow_curve(ax)
    brow = win * (1 - smoothstep(th - 0.8, th + 0.8, np.abs(y - yb)))
    t, yc, up, lo = eye_lids(ax)
    opening = smoothstep(-0.35, 0.35, y - lo) * smoothstep(-0.35, 0.35, up - y) * (np.abs(t) < 1)
    rel = alb_mean / SKIN                              # global colour changes act multiplicatively
    add("skin_tone", -0.2 * alb_mean)
    add("redness", rel * np.array([0.022, -0.008, -0.005]))
    add("yellowness", rel * np.array([0.01, 0.012, -0.018]))
    add("lip_colour", lip[:, None] * np.array([0.035, -0.02, -0.01]))
    add("brow_darkness", -brow[:, None] * np.array([0.06, 0.045, 0.035]))
    add("cheek_colour", gauss_pair(x, y, 42, -6, 14, 12)[:, None] * np.array([0.045, -0.02, -0.008]))
    beard = smoothstep(-25, -55, y - 0.15 * ax) * (1 - smoothstep(45, 68, ax))
    beard = np.clip(beard + 0.8 * gauss_bump(x, y, 0, Y_MOUTH + 9, 20, 5), 0, 1) * (1 - lip)
    add("beard_shadow", -beard[:, None] * np.array([0.05, 0.045, 0.035]))
    add("under_eye_darkness", -gauss_pair(x, y, EYE_X + 2, EYE_Y - 6, 11, 4)[:, None] * np.array([0.05, 0.055, 0.04]) * (1 - opening)[:, None])
    rr = np.hypot(ax - EYE_X, y - (EYE_Y + 0.4))
    iris = (1 - smoothstep(5.0, 5.8, rr)) * opening
    add("iris_colour", iris[:, None] * np.array([0.10, 0.09, 0.06]))
    add("forehead_tone", smoothstep(20, 100, y)[:, None] * rel * np.array([0.03, 0.025, 0.02]))
    sem = np.stack(F, 2)
    n_rand = K_ALB - sem.shape[2]
    sigmas = np.array([48.0, 34.0, 24.0, 18.0])[np.arange(n_rand) * 4 // n_rand]
    rnd = _smooth_random_fields(P[:, :2], n_rand, 777, sigmas, "albedo")
    rnd = rnd * (alb_mean / SKIN)[:, :, None]        # multiplicative: dark brows/irises change less
    rms = 0.02 * (0.003 / 0.02) ** (np.arange(n_rand) / (n_rand - 1))
    rnd = _normalise_rms(rnd, rms)
    names += [f"albedo_smooth_{k}" for k in range(sem.shape[2], K_ALB)]
    return np.concatenate([sem, rnd], 2), names


def _finish_basis(fields):
    """Orthonormal basis (V, 3, K), std (K,) = L2 norm of each designed field (so every component keeps
    its designed size along its orthogonalised direction), and the peak per-vertex change of one unit."""
    V = fields.shape[0]
    basis = _orthonormalise(fields)
    std = np.linalg.norm(fields.reshape(V * 3, -1), axis=0)
    peak = np.sqrt(((basis * std) ** 2).sum(axis=1)).max(axis=0)
    return basis, std, peak


# ============================================================================ assembly
@functools.lru_cache(maxsize=None)
def _build(resolution: str) -> FaceModel:
    m = mean_mesh(resolution)
    P, tris, lip_side = m["P"], m["tris"], m["lip_side"]
    normals = vertex_normals_np(P, tris)
    # albedo pre-filtered over each vertex's neighbourhood (3 x 3 samples over one grid cell) so that
    # small painted details (iris, lash line, lip border) do not alias into blocks at coarse resolutions
    o = (np.arange(3) - 1.0) * m["h"] / 3.0
    alb = np.mean([albedo_painting(P[:, 0] + ox, P[:, 1] + oy, P[:, 2]) for ox in o for oy in o], axis=0)
    lms = landmark_vertices(P, normals, lip_side, m["mouth_row"])

    sf, snames = _shape_fields(P)
    ef, enames = _expr_fields(P, lip_side)
    af, anames = _albedo_fields(P, alb)
    sb, ss, sp = _finish_basis(sf)
    eb, es, ep = _finish_basis(ef)
    ab, as_, ap = _finish_basis(af)
    meta = {
        "shape_names": snames, "expr_names": enames, "albedo_names": anames,
        "shape_peak_mm": sp.tolist(), "expr_peak_mm": ep.tolist(), "albedo_peak": ap.tolist(),
        "grid_step_mm": m["h"], "generator": "mofa_tk.face.builtin",
    }
    return FaceModel(
        mean_shape=P.astype(np.float32), shape_basis=sb.astype(np.float32), shape_std=ss.astype(np.float32),
        expr_basis=eb.astype(np.float32), expr_std=es.astype(np.float32),
        albedo_mean=alb.astype(np.float32), albedo_basis=ab.astype(np.float32), albedo_std=as_.astype(np.float32),
        triangles=tris.astype(np.int32), landmarks=lms.astype(np.int64),
        name=f"mofa_tk builtin ({resolution})", source=f"builtin:{resolution}", meta=meta)

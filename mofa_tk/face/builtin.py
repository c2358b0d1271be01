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

from .model import FaceModel

BFM_VERTEX_COUNT = 35709
_RESOLUTIONS = ("default", "bfm")
_GRID_STEP = {"default": 1.95, "bfm": 1.087}
_K_ID, _K_EXP, _K_ALB = 80, 64, 80

# Landmark geometry of the mean face (mm).
_Y_MOUTH = -41.0         # mouth line height: the grid row v = 0
_X_MOUTH = 24.5          # mouth corners at x = +-_X_MOUTH
# Eye opening: centre x, corner-line height, half width, upper/lower lid heights above/below that line.
_EYE_X, _EYE_Y, _EYE_HW, _EYE_UP, _EYE_LO = 31.0, 26.0, 13.5, 4.7, 3.5
_Y_TOP, _Y_BOT = 103.0, -93.0   # outline top (upper forehead) and bottom (under the chin)


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
    if not isinstance(resolution, str) or resolution not in _RESOLUTIONS:
        raise ValueError(f"builtin_model: resolution must be one of {list(_RESOLUTIONS)}, got {resolution!r}")
    return _build(resolution)


# ============================================================================ small helpers
def _hermite(t, knots, values):
    """C1 piecewise-cubic interpolation through (knots, values) with central-difference slopes."""
    knots = np.asarray(knots, np.float64)
    values = np.asarray(values, np.float64)
    m = np.gradient(values, knots)
    t = np.clip(np.asarray(t, np.float64), knots[0], knots[-1])
    k = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, len(knots) - 2)
    h = knots[k + 1] - knots[k]
    s = (t - knots[k]) / h
    s2, s3 = s * s, s * s * s
    return ((2 * s3 - 3 * s2 + 1) * values[k] + (s3 - 2 * s2 + s) * h * m[k]
            + (-2 * s3 + 3 * s2) * values[k + 1] + (s3 - s2) * h * m[k + 1])


def _g(x, y, cx, cy, sx, sy):
    """Anisotropic Gaussian bump exp(-((x-cx)/sx)^2/2 - ((y-cy)/sy)^2/2)."""
    return np.exp(-0.5 * ((x - cx) / sx) ** 2 - 0.5 * ((y - cy) / sy) ** 2)


def _gs(x, y, cx, cy, sx, sy):
    """Mirror-symmetric pair of Gaussian bumps at (+-cx, cy): smooth across x = 0."""
    return _g(x, y, cx, cy, sx, sy) + _g(x, y, -cx, cy, sx, sy)


def _smoothstep(e0, e1, t):
    s = np.clip((np.asarray(t, np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return s * s * (3 - 2 * s)


def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


# Base surface as functions of height y: front depth zf (mid-sagittal profile, before features),
# half width A, depth D lost between the midline and the side (t = 90 deg), flatness k of the front.
_PROF_Y = np.array([-104, -97, -90, -83, -74, -62, -50, -41, -30, -18, -6, 8, 26, 45, 60, 75, 90, 103, 114], float)
_PROF_Z = np.array([26, 40, 52, 61, 67, 69, 71, 73, 75, 76, 76, 75, 74, 75, 72, 66, 56, 44, 32], float)
_WID_Y = np.array([-104, -94, -86, -78, -68, -56, -44, -30, -12, 8, 26, 45, 65, 85, 103, 114], float)
_WID_A = np.array([10, 22, 34, 45, 53, 59, 63, 66, 69, 72, 73, 72, 69, 64, 56, 50], float)
_WID_D = np.array([8, 18, 30, 48, 68, 82, 90, 95, 100, 106, 110, 108, 104, 96, 86, 80], float)
_WID_K = np.array([0, 0, 0, 0, 0, 0.0, 0.0, 0.05, 0.15, 0.25, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3], float)


_SKIN = np.array([0.60, 0.38, 0.29])   # mean skin reflectance, linear RGB


def _eye_lids(ax):
    """Eye opening for |x| = ax: (t, corner-line y, upper lid y, lower lid y); t in [-1, 1] inside."""
    t = (ax - _EYE_X) / _EYE_HW
    tc = np.clip(t, -1.0, 1.0)
    yc = _EYE_Y + 0.8 * tc                         # outer corner slightly higher (canthal tilt)
    base = np.sqrt(np.clip(1.0 - tc * tc, 0.0, 1.0))
    up = yc + _EYE_UP * base * (1.0 - 0.2 * tc)     # highest a little towards the nose
    lo = yc - _EYE_LO * base * (1.0 + 0.2 * tc)     # lowest a little outwards
    return t, yc, up, lo


def _lip_borders(x):
    """Vermilion borders: (upper border y, lower border y) for x."""
    xu = np.clip(np.abs(x) / _X_MOUTH, 0, 1)
    up = _Y_MOUTH + 6.3 * (1 - xu * xu) ** 0.6 - 1.4 * np.exp(-0.5 * (x / 2.6) ** 2) \
        + 0.7 * np.exp(-0.5 * ((np.abs(x) - 6.0) / 3.0) ** 2)
    lo = _Y_MOUTH - 8.3 * (1 - xu * xu) ** 0.65
    return up, lo


def _brow_curve(ax):
    """Eyebrow centre line y, half thickness and horizontal window for |x| = ax."""
    s = np.clip((ax - 11.0) / 42.0, 0, 1)
    yb = 43.0 + 6.0 * np.sin(np.pi * s ** 0.75) * (1 - 0.3 * s) - 2.0 * s
    th = 3.3 - 1.8 * s
    win = _smoothstep(10.0, 13.5, ax) * (1 - _smoothstep(50.0, 55.0, ax))
    return yb, th, win


# ============================================================================ geometry
def _base_grid(h):
    """Regular (u, v) grid of step h mapped onto the base surface. Row index 0 is the mouth line.

    Returns rows, cols, base positions X, Y, Z (rows x cols), the outline value rho (<= 1 inside).
    """
    yd = np.linspace(_PROF_Y[0], _PROF_Y[-1], 4001)
    zd = _hermite(yd, _PROF_Y, _PROF_Z)
    seg = np.hypot(np.diff(yd), np.diff(zd))
    sd = np.concatenate([[0.0], np.cumsum(seg)])
    sd -= np.interp(_Y_MOUTH, yd, sd)
    j0 = int(np.ceil(np.interp(_Y_BOT - 4, yd, sd) / h))
    j1 = int(np.floor(np.interp(_Y_TOP + 4, yd, sd) / h))
    rows = np.arange(j0, j1 + 1)
    y = np.interp(rows * h, sd, yd)
    y[rows == 0] = _Y_MOUTH
    zf = _hermite(y, _PROF_Y, _PROF_Z)
    A = _hermite(y, _WID_Y, _WID_A)[:, None]
    D = _hermite(y, _WID_Y, _WID_D)[:, None]
    K = _hermite(y, _WID_Y, _WID_K)[:, None]

    def row_curve(t):
        c = 1 - np.cos(t)
        return A * np.sin(t), -D * c * (1 + K * c) / (1 + K)

    # arc length across each row, then invert it at the grid columns
    td = np.linspace(0.0, 1.6, 1601)
    cx, cz = row_curve(td[None, :])
    st = np.concatenate([np.zeros((len(rows), 1)), np.cumsum(np.hypot(np.diff(cx, axis=1), np.diff(cz, axis=1)), axis=1)], axis=1)
    imax = int(np.ceil(st[:, -1].max() / h))
    cols = np.arange(-imax, imax + 1)
    theta = np.empty((len(rows), len(cols)))
    for r in range(len(rows)):
        theta[r] = np.interp(np.abs(cols) * h, st[r], td, right=np.inf)
    # columns past the end of a short row get distinct angles beyond the outline (never kept)
    theta = np.where(np.isinf(theta), 1.6 + 1e-3 * np.abs(cols)[None, :], theta) * np.sign(cols)
    X, dZ = row_curve(theta)
    Y = np.broadcast_to(y[:, None], theta.shape).copy()
    Z = zf[:, None] + dZ
    # outline: rounded in (t, y); the sides reach t = 83 deg (just in front of the ears)
    y_up, y_lo = 25.0, -70.0
    top = np.clip((Y - y_up) / (_Y_TOP - y_up), 0, None)
    bot = np.clip((y_lo - Y) / (y_lo - _Y_BOT), 0, None)
    m = 2.4
    rho = ((np.abs(theta) / 1.45) ** m + top ** m + bot ** 6) ** (1 / m)
    return rows, cols, X, Y, Z, rho


def _features(X, Y, Z):
    """Displacement (dx, dy, dz) in mm of the facial features, evaluated at base positions."""
    x, y = X, Y
    ax = np.abs(x)
    dz = np.zeros_like(x)
    dx = np.zeros_like(x)
    dy = np.zeros_like(x)
    # ---- forehead, brows, temples
    dz += 4.0 * _gs(x, y, 27, 45, 15, 6.0)             # brow ridges
    dz += 2.5 * _g(x, y, 0, 41, 10, 7)                 # glabella
    dz -= 3.0 * _gs(x, y, 63, 40, 8, 14)               # temple hollows
    # ---- eyes
    t, yc, up, lo = _eye_lids(ax)
    win = _smoothstep(-1.2, -0.85, t) * (1 - _smoothstep(0.85, 1.2, t))
    dz -= 13.0 * _gs(x, y, 29.5, 29, 13, 10)           # orbit (eye socket)
    r2 = (ax - _EYE_X) ** 2 + ((y - _EYE_Y - 0.5) / 0.9) ** 2
    dz += 6.0 * np.exp(-r2 / (2 * 7.0 ** 2))           # eyeball under the lids
    dz += 1.2 * np.exp(-r2 / (2 * 4.5 ** 2))           # cornea
    dz += 1.5 * win * np.exp(-0.5 * ((y - up) / 0.9) ** 2)   # upper lid margin
    dz += 0.8 * win * np.exp(-0.5 * ((y - lo) / 0.9) ** 2)   # lower lid margin
    dz -= 1.0 * _smoothstep(-0.6, 0.6, y - lo) * _smoothstep(-0.6, 0.6, up - y) * win
    crease = up + 3.8 + 1.2 * np.clip(1 - t * t, 0, 1)
    dz -= 1.8 * win * np.exp(-0.5 * ((y - crease) / 1.3) ** 2)            # upper lid crease
    dz -= 1.0 * win * np.exp(-0.5 * ((y - (lo - 5.0)) / 1.8) ** 2)         # lower lid groove
    dz -= 2.0 * _gs(x, y, 17.5, 27, 3.5, 4)                               # inner eye corner hollow
    # ---- nose
    hn = _hermite(y, [-22.5, -20, -16, -12, -8, -4, 2, 9, 16, 22, 28, 34],
                  [0.0, 3.5, 12.5, 18.5, 20.0, 19.5, 17.0, 13.0, 8.8, 5.0, 2.0, 0.0])
    wn = _hermite(y, [-22, -16, -9, -2, 8, 18, 30], [6.0, 8.0, 7.6, 5.4, 4.3, 4.6, 7.0])
    dz += hn * np.exp(-0.5 * (x / wn) ** 2)
    dz += 2.5 * _g(x, y, 0, -8.5, 6.0, 4.5)            # tip lobule
    dz += 5.5 * _gs(x, y, 13.0, -13.8, 4.3, 4.8)       # alae
    ra = np.hypot(ax - 13.5, (y + 14.0) * 1.1)
    dz -= 2.5 * np.exp(-0.5 * ((ra - 7.0) / 1.3) ** 2) * _smoothstep(-2, 2, ax - 13.5 + 0.8 * (y + 14)) * _smoothstep(-20, -15, y)  # alar crease
    dz -= 3.2 * _gs(x, y, 6.5, -18.7, 3.0, 1.6)        # nostrils
    dz -= 1.5 * _g(x, y, 0, 27, 11, 5)                 # nasion dip
    # ---- cheeks
    dz += 6.0 * _gs(x, y, 51, 8, 13, 9)                # cheekbones
    dz += 5.0 * _gs(x, y, 38, -16, 15, 14)             # cheeks
    dz -= 2.0 * _gs(x, y, 52, -25, 9, 14)              # hollow under the cheekbone
    # nasolabial fold: groove from above the ala down past the mouth corner
    p0, p1 = np.array([17.5, -14.0]), np.array([31.0, -48.0])
    d = p1 - p0
    s = np.clip(((ax - p0[0]) * d[0] + (y - p0[1]) * d[1]) / (d @ d), 0, 1)
    dist = np.hypot(ax - (p0[0] + s * d[0]), y - (p0[1] + s * d[1]))
    fold = np.sin(np.pi * s) ** 0.7
    dz -= 1.2 * np.exp(-0.5 * (dist / 2.5) ** 2) * fold
    # ---- mouth
    dz += 2.5 * _g(x, y, 0, _Y_MOUTH, 17, 11)          # mouth region over the teeth
    ub, lb = _lip_borders(x)
    mw = 1 - _smoothstep(_X_MOUTH - 4, _X_MOUTH + 1, ax)
    hu = np.maximum(ub - _Y_MOUTH, 2.0)
    hl = np.maximum(_Y_MOUTH - lb, 2.0)
    dz += 2.6 * mw * np.exp(-0.5 * ((y - _Y_MOUTH - 0.5 * hu) / (0.45 * hu)) ** 2)   # upper lip
    dz += 3.6 * mw * (1 - 0.4 * (x / _X_MOUTH) ** 2) * np.exp(-0.5 * ((y - _Y_MOUTH + 0.5 * hl) / (0.45 * hl)) ** 2)  # lower lip
    dz -= 1.0 * mw * np.exp(-0.5 * ((y - lb + 1.5) / 1.5) ** 2)          # shadow line under the lower lip
    dz -= 2.4 * mw * np.exp(-0.5 * ((y - _Y_MOUTH) / 1.2) ** 2)          # lips roll in at the mouth line
    dz += 0.6 * np.exp(-0.5 * ((y - ub) / 0.8) ** 2) * mw                # vermilion border ridge
    dz -= 1.8 * _gs(x, y, _X_MOUTH + 0.5, _Y_MOUTH, 2.5, 2.5)            # mouth corners
    dz += 0.6 * _gs(x, y, 4.5, -28, 2.2, 5.0) - 0.6 * _g(x, y, 0, -28, 2.5, 5.0)   # philtrum
    dz -= 2.6 * _g(x, y, 0, -57, 15, 3.8)              # mentolabial fold
    dz += 4.5 * _g(x, y, 0, -73, 17, 9.0)              # chin
    dz += 1.2 * _gs(x, y, 20, -78, 9, 7)               # chin sides
    dy += 0.8 * mw * np.exp(-0.5 * ((y - _Y_MOUTH) / 4.0) ** 2) * (ax / _X_MOUTH) ** 2  # corners curve up
    return dx, dy, dz


def _albedo(X, Y, Z):
    """Mean albedo (V, 3), linear RGB."""
    x, y = X, Y
    ax = np.abs(x)
    alb = np.broadcast_to(_SKIN, x.shape + (3,)).copy()
    alb *= (1 + 0.04 * _smoothstep(30, 90, y))[..., None]                   # forehead a bit lighter
    alb += _gs(x, y, 42, -6, 14, 12)[..., None] * np.array([0.05, -0.025, -0.012])   # cheeks
    alb += _g(x, y, 0, -9, 7, 6)[..., None] * np.array([0.03, -0.012, -0.008])      # nose tip
    # lips
    ub, lb = _lip_borders(x)
    lip = _smoothstep(-0.6, 0.6, ub - y) * _smoothstep(-0.6, 0.6, y - lb) * (1 - _smoothstep(_X_MOUTH - 1.5, _X_MOUTH + 0.5, ax))
    alb = alb * (1 - lip[..., None]) + lip[..., None] * np.array([0.47, 0.17, 0.15])
    alb *= (1 - 0.35 * np.exp(-0.5 * ((y - _Y_MOUTH) / 0.8) ** 2) * (ax < _X_MOUTH + 1))[..., None]
    # brows
    yb, th, win = _brow_curve(ax)
    brow = 0.88 * win * (1 - _smoothstep(th - 0.8, th + 0.8, np.abs(y - yb)))
    alb = alb * (1 - brow[..., None]) + brow[..., None] * np.array([0.07, 0.045, 0.032])
    # eyes: sclera, iris, pupil, lash line
    t, yc, up, lo = _eye_lids(ax)
    opening = _smoothstep(-0.35, 0.35, y - lo) * _smoothstep(-0.35, 0.35, up - y) * (np.abs(t) < 1.0)
    rr = np.hypot(ax - _EYE_X, y - (_EYE_Y + 0.4))
    iris = 1 - _smoothstep(5.0, 5.8, rr)
    pupil = 1 - _smoothstep(2.0, 2.6, rr)
    eye = np.array([0.72, 0.66, 0.62]) * (1 - iris[..., None]) + np.array([0.16, 0.085, 0.045]) * iris[..., None]
    eye = eye * (1 - pupil[..., None]) + np.array([0.01, 0.01, 0.012]) * pupil[..., None]
    eye = eye * (1 - 0.25 * _smoothstep(-0.5, 1.0, np.abs(t) - 0.55))[..., None]   # corners a bit darker
    alb = alb * (1 - opening[..., None]) + eye * opening[..., None]
    lash = np.exp(-0.5 * ((y - up - 0.3) / 0.55) ** 2) * (np.abs(t) < 1.05) * (1 - 0.5 * np.clip(-t, 0, 1))
    lash = np.clip(1.2 * lash, 0, 0.92)
    alb = alb * (1 - lash[..., None]) + 0.02 * lash[..., None]
    lid = _gs(x, y, _EYE_X, _EYE_Y + 7, 12, 4) * (1 - opening)
    alb += lid[..., None] * np.array([-0.04, -0.05, -0.035])
    alb += (_gs(x, y, _EYE_X + 2, _EYE_Y - 7, 11, 3.5) * (1 - opening))[..., None] * np.array([-0.03, -0.035, -0.02])
    # nostrils
    nos = np.clip(1.3 * _gs(x, y, 6.0, -19.3, 2.6, 1.5), 0, 1)
    alb = alb * (1 - 0.8 * nos[..., None])
    return np.clip(alb, 0.0, 1.0)


def _mean_mesh(resolution):
    """Mean shape, triangles, slit bookkeeping and helper arrays for one resolution."""
    h = _GRID_STEP[resolution]
    rows, cols, X0, Y0, Z0, rho = _base_grid(h)
    nr, nc = X0.shape
    dx, dy, dz = _features(X0, Y0, Z0)
    P = np.stack([X0 + dx, Y0 + dy, Z0 + dz], axis=-1)
    r0 = int(np.nonzero(rows == 0)[0][0])
    slit = np.abs(X0[r0]) < _X_MOUTH          # mouth-line columns that are doubled (corners stay shared)
    n_slit = int(slit.sum())
    gid = np.arange(nr * nc).reshape(nr, nc)

    def cell_mask(keep):
        return keep[:-1, :-1] & keep[1:, :-1] & keep[1:, 1:] & keep[:-1, 1:]

    def used_vertices(cells):
        u = np.zeros((nr, nc), bool)
        u[:-1, :-1] |= cells
        u[1:, :-1] |= cells
        u[1:, 1:] |= cells
        u[:-1, 1:] |= cells
        return u

    if resolution == "bfm":
        target = BFM_VERTEX_COUNT - n_slit
        order = np.sort(rho.ravel())
        lo_i, hi_i = 0, len(order) - 1
        while lo_i < hi_i:                     # largest threshold whose mesh has <= target vertices
            mid = (lo_i + hi_i + 1) // 2
            if used_vertices(cell_mask(rho <= order[mid])).sum() <= target:
                lo_i = mid
            else:
                hi_i = mid - 1
        cells = cell_mask(rho <= order[lo_i])
    else:
        target = None
        cells = cell_mask(rho <= 1.0)
    used = used_vertices(cells)

    # triangles of the kept cells, split along the shorter 3D diagonal
    ci, cj = np.nonzero(cells)                 # ci: row (y up), cj: column (x right)
    a, b, c, d = gid[ci, cj], gid[ci, cj + 1], gid[ci + 1, cj + 1], gid[ci + 1, cj]
    Pf = P.reshape(-1, 3)
    la, lb = np.linalg.norm(Pf[a] - Pf[c], axis=1), np.linalg.norm(Pf[b] - Pf[d], axis=1)
    diag_ac = (la < lb - 1e-9) | ((np.abs(la - lb) <= 1e-9) & ((ci + cj) % 2 == 0))   # ties: fixed pattern
    tris = np.concatenate([
        np.stack([a, b, c], 1)[diag_ac], np.stack([a, c, d], 1)[diag_ac],
        np.stack([a, b, d], 1)[~diag_ac], np.stack([b, c, d], 1)[~diag_ac]])

    # exact vertex count: add boundary half-cells ("ears"), each adding exactly one new vertex
    if target is not None:
        deficit = target - int(used.sum())
        if deficit < 0 or deficit > 50:
            raise RuntimeError(f"builtin_model: cannot reach {BFM_VERTEX_COUNT} vertices (deficit {deficit})")
        ears = []
        touched = np.zeros((nr, nc), bool)
        cand_i, cand_j = np.nonzero(~cells)
        rho_c = np.maximum.reduce([rho[cand_i, cand_j], rho[cand_i + 1, cand_j],
                                   rho[cand_i + 1, cand_j + 1], rho[cand_i, cand_j + 1]])
        for k in np.argsort(rho_c, kind="stable"):
            if len(ears) == deficit:
                break
            i, j = int(cand_i[k]), int(cand_j[k])
            corners = [(i, j), (i, j + 1), (i + 1, j + 1), (i + 1, j)]   # CCW in (x, y)
            inn = [bool(used[p]) for p in corners]
            if sum(inn) != 2 or any(touched[p] for p in corners):
                continue
            q = [n for n in range(4) if inn[n] and inn[(n + 1) % 4]]
            if len(q) != 1:
                continue
            n = q[0]
            ni, nj = ((i - 1, j), (i, j + 1), (i + 1, j), (i, j - 1))[n]   # cell across the edge n -> n+1
            if not (0 <= ni < nr - 1 and 0 <= nj < nc - 1 and cells[ni, nj]):
                continue                               # attach only along an existing boundary edge
            pa, pb = corners[n], corners[(n + 1) % 4]
            opts = [corners[(n + 2) % 4], corners[(n + 3) % 4]]
            pc = min(opts, key=lambda p: rho[p])
            ears.append((gid[pa], gid[pb], gid[pc]))   # CCW: a->b is CCW along the cell, c after them
            for p in corners:
                touched[p] = True
            used[pc] = True
        if len(ears) != deficit:
            raise RuntimeError("builtin_model: could not add boundary cells to reach the exact vertex count")
        if ears:
            tris = np.concatenate([tris, np.array(ears, np.int64)])

    # doubled mouth line: cells below the mouth row use the lower-lip copies
    slit_ids = gid[r0][slit]
    lower_new = nr * nc + np.arange(n_slit)
    remap_lower = np.arange(nr * nc + n_slit)
    remap_lower[slit_ids] = lower_new
    cell_row = np.concatenate([ci[diag_ac], ci[diag_ac], ci[~diag_ac], ci[~diag_ac]])
    below = np.zeros(len(tris), bool)
    below[:len(cell_row)] = cell_row == r0 - 1
    tris[below] = remap_lower[tris[below]]

    # compact to the used vertices
    P_all = np.concatenate([Pf, Pf[slit_ids]])
    lip_side = np.zeros(len(P_all), np.int8)    # +1 upper-lip copy, -1 lower-lip copy, 0 elsewhere
    lip_side[slit_ids] = 1
    lip_side[lower_new] = -1
    keep = np.zeros(len(P_all), bool)
    keep[np.unique(tris)] = True
    new_index = np.cumsum(keep) - 1
    tris = new_index[tris]
    mouth_row = np.zeros(len(P_all), bool)
    mouth_row[gid[r0]] = True
    mouth_row[lower_new] = True
    return dict(P=P_all[keep], tris=tris.astype(np.int64), lip_side=lip_side[keep], mouth_row=mouth_row[keep], h=h)


def _vertex_normals(P, tris):
    fn = np.cross(P[tris[:, 1]] - P[tris[:, 0]], P[tris[:, 2]] - P[tris[:, 0]])
    n = np.zeros_like(P)
    for k in range(3):
        np.add.at(n, tris[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


# ============================================================================ landmarks
def _landmark_targets():
    """iBUG-68 target positions (x, y) in mm, and a tag: 0 any vertex, 1 upper-lip copy, -1 lower-lip copy,
    2 mouth-line vertex."""
    pts = np.zeros((68, 2))
    tag = np.zeros(68, int)
    jaw_r = np.array([[-71.5, 18], [-70.5, 0], [-68, -18], [-64, -35], [-57.5, -51], [-48.5, -65], [-37, -76],
                      [-21, -84.5]])
    pts[0:8] = jaw_r
    pts[8] = [0, -89]
    pts[9:17] = jaw_r[::-1] * [-1, 1]
    bx = np.array([51.0, 43.0, 34.0, 25.0, 16.0])
    yb, _, _ = _brow_curve(bx)
    pts[17:22] = np.stack([-bx, yb], 1)
    pts[22:27] = pts[17:22][::-1] * [-1, 1]
    pts[27:31] = [[0, 26], [0, 14], [0, 2], [0, -8]]
    pts[31:36] = [[-12, -17.5], [-6, -19.5], [0, -20.5], [6, -19.5], [12, -17.5]]
    # eyes: outer corner, two upper-lid points, inner corner, two lower-lid points (right eye: x < 0)
    ex = np.array([_EYE_X + _EYE_HW, _EYE_X + 5, _EYE_X - 5, _EYE_X - _EYE_HW, _EYE_X - 5, _EYE_X + 5])
    t, yc, up, lo = _eye_lids(ex)
    ey = np.array([yc[0], up[1], up[2], yc[3], lo[4], lo[5]])
    pts[36:42] = np.stack([-ex, ey], 1)
    left = np.stack([ex, ey], 1)[[3, 2, 1, 0, 5, 4]]
    pts[42:48] = left
    # outer lip: 48 right corner, 49-53 upper border, 54 left corner, 55-59 lower border
    xs_up = np.array([-16.0, -7.0, 0.0, 7.0, 16.0])
    ub, _ = _lip_borders(xs_up)
    xs_lo = np.array([16.0, 7.0, 0.0, -7.0, -16.0])
    _, lb = _lip_borders(xs_lo)
    pts[48] = [-_X_MOUTH - 2.0, _Y_MOUTH]
    pts[49:54] = np.stack([xs_up, ub], 1)
    pts[54] = [_X_MOUTH + 2.0, _Y_MOUTH]
    pts[55:60] = np.stack([xs_lo, lb], 1)
    pts[60] = [-_X_MOUTH, _Y_MOUTH]
    pts[61:64] = [[-8, _Y_MOUTH], [0, _Y_MOUTH], [8, _Y_MOUTH]]
    pts[64] = [_X_MOUTH, _Y_MOUTH]
    pts[65:68] = [[8, _Y_MOUTH], [0, _Y_MOUTH], [-8, _Y_MOUTH]]
    tag[[48, 54]] = 2
    tag[[60, 64]] = 2
    tag[61:64] = 1
    tag[65:68] = -1
    return pts, tag


def _landmarks(P, normals, lip_side, mouth_row):
    pts, tag = _landmark_targets()
    front = normals[:, 2] > 0.2
    out = np.zeros(68, np.int64)
    for k in range(68):
        if tag[k] == 1:
            ok = lip_side == 1
        elif tag[k] == -1:
            ok = lip_side == -1
        elif tag[k] == 2:
            ok = mouth_row & (lip_side == 0)
        else:
            ok = front & (lip_side >= 0)
        d2 = (P[:, 0] - pts[k, 0]) ** 2 + (P[:, 1] - pts[k, 1]) ** 2
        d2 = np.where(ok, d2, np.inf)
        out[k] = int(np.argmin(d2))
    # outer mouth corners: the next mouth-line vertex outside the inner corners 60 / 64
    for outer, inner, side in ((48, 60, -1.0), (54, 64, 1.0)):
        ok = mouth_row & (lip_side == 0) & (side * P[:, 0] > side * P[out[inner], 0] + 1e-6)
        out[outer] = int(np.argmin(np.where(ok, np.abs(P[:, 0] - P[out[inner], 0]), np.inf)))
    return out


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
    wn = _g(x, y, 0, 2, 12, 18)
    add("nose_size", wn[:, None] * 0.13 * (P - np.array([0.0, 0.0, 75.0])))
    add("nose_bridge_height", vec(0, 0, 2.6 * _g(x, y, 0, 12, 6, 13)))
    add("nose_width", vec(0.2 * x * _gs(x, y, 12, -14, 10, 9), 0, 0))
    wt = _g(x, y, 0, -10, 9, 7)
    add("nose_length", vec(0, -2.5 * wt, 1.5 * wt))
    wj = _smoothstep(-25, -72, y) * (1 - 0.6 * _smoothstep(-78, -95, y))
    add("jaw_width", vec(0.07 * x * wj, 0, -0.02 * ax * wj))
    wc = _gs(x, y, 50, 8, 12, 10)
    add("cheekbones", vec(2.0 * sx * wc, 0.5 * wc, 2.5 * wc))
    we = _gs(x, y, _EYE_X, _EYE_Y, 14, 10)
    add("eye_spacing", vec(2.5 * sx * we, 0, 0))
    add("eye_depth", vec(0, 0, -2.5 * _gs(x, y, _EYE_X, _EYE_Y + 1, 12, 9)))
    wl = _g(x, y, 0, _Y_MOUTH + 3.5, 16, 3.5) + _g(x, y, 0, _Y_MOUTH - 4.5, 15, 4.5)
    add("lip_fullness", vec(0, 0.8 * _g(x, y, 0, _Y_MOUTH + 5, 16, 3) - 0.8 * _g(x, y, 0, _Y_MOUTH - 6, 15, 4), 2.2 * wl))
    add("mouth_width", vec(0.12 * x * _g(x, y, 0, _Y_MOUTH, 28, 10), 0, 0))
    add("chin_protrusion", vec(0, 0, 4.0 * _g(x, y, 0, -76, 18, 12)))
    add("forehead_slope", vec(0, 0, -4.0 * np.clip((y - 45) / 55, 0, None) ** 2))
    add("brow_ridge", vec(0, 0, 2.5 * _gs(x, y, 27, 45, 16, 6) + 2.0 * _g(x, y, 0, 41, 10, 7)))
    add("chin_length", vec(0, -4.0 * _smoothstep(-48, -85, y), 0))
    wr, wlft = _g(x, y, -_EYE_X, _EYE_Y, 13, 9), _g(x, y, _EYE_X, _EYE_Y, 13, 9)
    add("eye_size", np.stack([0.13 * (wr * (x + _EYE_X) + wlft * (x - _EYE_X)), 0.13 * (wr + wlft) * (y - _EYE_Y), zero], 1))
    add("eye_height", vec(0, 2.5 * _gs(x, y, _EYE_X, _EYE_Y + 2, 16, 12), 0))
    wf = _gs(x, y, 38, -22, 16, 16)
    add("cheek_fullness", vec(1.5 * sx * wf, 0, 3.0 * wf))
    sem = np.stack(F, 2)
    n_rand = _K_ID - sem.shape[2]
    sigmas = np.array([45.0, 32.0, 22.0, 15.0])[np.arange(n_rand) * 4 // n_rand]
    rnd = _smooth_random_fields(P[:, :2], n_rand, 1234, sigmas, "shape")
    rms = 1.0 * (0.12 / 1.0) ** (np.arange(n_rand) / (n_rand - 1))
    rnd = _normalise_rms(rnd, rms)
    names += [f"shape_smooth_{k}" for k in range(sem.shape[2], _K_ID)]
    return np.concatenate([sem, rnd], 2), names


def _jaw_weight(x, y, lip_side):
    """1 on what moves with the jaw (below the mouth line), 0 above; sharp inside the mouth."""
    s = 0.35 + 9.0 * _smoothstep(_X_MOUTH - 3, _X_MOUTH + 12, np.abs(x))
    w = _sigmoid((_Y_MOUTH - y) / s)
    w = np.where(lip_side == -1, 1.0, np.where(lip_side == 1, 0.0, w))
    return w * (1 - 0.6 * _smoothstep(40, 70, np.abs(x)))


def _eye_close_field(x, y):
    """Upper lid down to the lower lid (both eyes), one unit ~ 40% closed."""
    ax = np.abs(x)
    t, yc, up, lo = _eye_lids(ax)
    H = np.maximum(up - lo, 0.0)
    win = 1 - _smoothstep(0.7, 1.25, np.abs(t))
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
    wc = _gs(x, y, _X_MOUTH, _Y_MOUTH, 7, 6)
    wch = _gs(x, y, 36, -16, 12, 12)
    smile = vec(2.8 * sx * wc, 3.4 * wc + 1.8 * wch + 1.0 * _gs(x, y, _EYE_X, _EYE_Y - 4, 10, 3.5), -1.8 * wc + 1.6 * wch)
    add("smile", smile)
    add("mouth_frown", vec(0.5 * sx * wc, -3.0 * wc + 1.0 * _g(x, y, 0, -70, 12, 10), -0.5 * wc + 0.8 * _g(x, y, 0, -70, 12, 10)))
    wb = _gs(x, y, 28, 48, 24, 12)
    brow_raise = vec(0, 4.0 * wb + 1.2 * _gs(x, y, _EYE_X, _EYE_Y + 9, 14, 4), 0.5 * wb)
    add("brow_raise", brow_raise)
    wbl = _gs(x, y, 17, 45, 11, 7)
    add("brow_lower", vec(-2.0 * sx * wbl, -2.5 * wbl - 1.0 * _gs(x, y, 35, 46, 12, 6), 1.0 * wbl))
    wp = _g(x, y, 0, _Y_MOUTH - 1, 16, 9)
    add("lip_pucker", vec(-0.25 * x * wp, 0, 5.0 * wp))
    ecy, ecz = _eye_close_field(x, y)
    add("eye_close", vec(0, ecy, ecz))
    up_w = 1 - _jaw_weight(x, y, lip_side) / np.maximum(1 - 0.6 * _smoothstep(40, 70, ax), 1e-9)
    wlp = _g(x, y, 0, _Y_MOUTH, 18, 6)
    add("lip_press", vec(0, -1.0 * wlp * up_w + 1.0 * wlp * (1 - up_w), -2.0 * wlp))
    add("mouth_left_right", vec(3.5 * _g(x, y, 0, _Y_MOUTH, 22, 12), 0, 0))
    add("smile_asymmetric", smile * np.tanh(x / 6.0)[:, None])
    add("brow_raise_asymmetric", brow_raise * np.tanh(x / 10.0)[:, None])
    add("eye_close_asymmetric", vec(0, ecy, ecz) * np.tanh(x / 5.0)[:, None])
    wpf = _gs(x, y, 38, -32, 14, 14)
    add("cheek_puff", vec(2.5 * sx * wpf, 0, 3.0 * wpf + 0.8 * wp))
    wnw = _gs(x, y, 12, -5, 8, 12)
    add("nose_wrinkle", vec(0, 2.5 * wnw + 0.8 * _g(x, y, 0, _Y_MOUTH + 6, 14, 5) * up_w, 0.5 * wnw))
    add("jaw_left_right", vec(3.0 * wj, 0, 0))
    add("jaw_forward", vec(0, 0, 3.0 * wj))
    wul = _g(x, y, 0, _Y_MOUTH + 4, 16, 6) * up_w
    add("upper_lip_raise", vec(0, 2.5 * wul, 1.0 * wul))
    wll = _g(x, y, 0, _Y_MOUTH - 5, 15, 6) * (1 - up_w)
    add("lower_lip_depress", vec(0, -2.5 * wll, 0.5 * wll))
    add("mouth_stretch", vec(3.5 * sx * wc, -0.5 * wc, -1.5 * wc))
    wsq = _gs(x, y, _EYE_X, _EYE_Y - 4.5, 12, 4)
    add("eye_squint", vec(0, 1.8 * wsq + 0.6 * wch, 0.5 * wsq))
    sem = np.stack(F, 2)

    # random local deformations
    n_rand = _K_EXP - sem.shape[2]
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
        b = _g(x, y, c[0], c[1], sig, sig)
        bm = _g(-x, y, c[0], c[1], sig, sig)
        dm = d * np.array([-1.0, 1.0, 1.0])
        if mode == 0:
            f = b[:, None] * d + bm[:, None] * dm
        elif mode == 1:
            f = b[:, None] * d - bm[:, None] * dm
        else:
            f = b[:, None] * d
        if abs(c[1] - _Y_MOUTH) < 12 and rng.random() < 0.5:   # some act on one lip only
            f = f * (up_w if rng.random() < 0.5 else 1 - up_w)[:, None]
        pk = np.sqrt((f ** 2).sum(1)).max()
        rnd[:, :, k] = f * (peaks[k] / max(pk, 1e-12))
    rnd = rnd[:, :, np.argsort(-np.linalg.norm(rnd.reshape(V * 3, n_rand), axis=0), kind="stable")]
    names += [f"expr_local_{k}" for k in range(sem.shape[2], _K_EXP)]
    return np.concatenate([sem, rnd], 2), names


def _albedo_fields(P, alb_mean):
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    ax = np.abs(x)
    V = len(x)
    F, names = [], []

    def add(name, f):
        names.append(name)
        F.append(f)

    ub, lb = _lip_borders(x)
    lip = _smoothstep(-0.6, 0.6, ub - y) * _smoothstep(-0.6, 0.6, y - lb) * (1 - _smoothstep(_X_MOUTH - 1.5, _X_MOUTH + 0.5, ax))
    yb, th, win = _brow_curve(ax)
    brow = win * (1 - _smoothstep(th - 0.8, th + 0.8, np.abs(y - yb)))
    t, yc, up, lo = _eye_lids(ax)
    opening = _smoothstep(-0.35, 0.35, y - lo) * _smoothstep(-0.35, 0.35, up - y) * (np.abs(t) < 1)
    rel = alb_mean / _SKIN                              # global colour changes act multiplicatively
    add("skin_tone", -0.2 * alb_mean)
    add("redness", rel * np.array([0.022, -0.008, -0.005]))
    add("yellowness", rel * np.array([0.01, 0.012, -0.018]))
    add("lip_colour", lip[:, None] * np.array([0.035, -0.02, -0.01]))
    add("brow_darkness", -brow[:, None] * np.array([0.06, 0.045, 0.035]))
    add("cheek_colour", _gs(x, y, 42, -6, 14, 12)[:, None] * np.array([0.045, -0.02, -0.008]))
    beard = _smoothstep(-25, -55, y - 0.15 * ax) * (1 - _smoothstep(45, 68, ax))
    beard = np.clip(beard + 0.8 * _g(x, y, 0, _Y_MOUTH + 9, 20, 5), 0, 1) * (1 - lip)
    add("beard_shadow", -beard[:, None] * np.array([0.05, 0.045, 0.035]))
    add("under_eye_darkness", -_gs(x, y, _EYE_X + 2, _EYE_Y - 6, 11, 4)[:, None] * np.array([0.05, 0.055, 0.04]) * (1 - opening)[:, None])
    rr = np.hypot(ax - _EYE_X, y - (_EYE_Y + 0.4))
    iris = (1 - _smoothstep(5.0, 5.8, rr)) * opening
    add("iris_colour", iris[:, None] * np.array([0.10, 0.09, 0.06]))
    add("forehead_tone", _smoothstep(20, 100, y)[:, None] * rel * np.array([0.03, 0.025, 0.02]))
    sem = np.stack(F, 2)
    n_rand = _K_ALB - sem.shape[2]
    sigmas = np.array([48.0, 34.0, 24.0, 18.0])[np.arange(n_rand) * 4 // n_rand]
    rnd = _smooth_random_fields(P[:, :2], n_rand, 777, sigmas, "albedo")
    rnd = rnd * (alb_mean / _SKIN)[:, :, None]        # multiplicative: dark brows/irises change less
    rms = 0.02 * (0.003 / 0.02) ** (np.arange(n_rand) / (n_rand - 1))
    rnd = _normalise_rms(rnd, rms)
    names += [f"albedo_smooth_{k}" for k in range(sem.shape[2], _K_ALB)]
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
    m = _mean_mesh(resolution)
    P, tris, lip_side = m["P"], m["tris"], m["lip_side"]
    normals = _vertex_normals(P, tris)
    # albedo pre-filtered over each vertex's neighbourhood (3 x 3 samples over one grid cell) so that
    # small painted details (iris, lash line, lip border) do not alias into blocks at coarse resolutions
    o = (np.arange(3) - 1.0) * m["h"] / 3.0
    alb = np.mean([_albedo(P[:, 0] + ox, P[:, 1] + oy, P[:, 2]) for ox in o for oy in o], axis=0)
    lms = _landmarks(P, normals, lip_side, m["mouth_row"])

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

"""The built-in model's mean face: a smooth procedural surface (feature shapes as sums of Gaussians and
splines), its grid mesh with a split mouth line, its albedo painting and its iBUG-68 landmark vertices
(`mofa_tk.face.builtin` builds the model on it; the design is described there)."""
from __future__ import annotations

import numpy as np

BFM_VERTEX_COUNT = 35709
RESOLUTIONS = ("default", "bfm")
_GRID_STEP = {"default": 1.95, "bfm": 1.087}

# Landmark geometry of the mean face (mm).
Y_MOUTH = -41.0         # mouth line height: the grid row v = 0
X_MOUTH = 24.5          # mouth corners at x = +-X_MOUTH
# Eye opening: centre x, corner-line height, half width, upper/lower lid heights above/below that line.
EYE_X, EYE_Y, _EYE_HW, _EYE_UP, _EYE_LO = 31.0, 26.0, 13.5, 4.7, 3.5
_Y_TOP, _Y_BOT = 103.0, -93.0   # outline top (upper forehead) and bottom (under the chin)


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


def gauss_bump(x, y, cx, cy, sx, sy):
    """Anisotropic Gaussian bump exp(-((x-cx)/sx)^2/2 - ((y-cy)/sy)^2/2)."""
    return np.exp(-0.5 * ((x - cx) / sx) ** 2 - 0.5 * ((y - cy) / sy) ** 2)


def gauss_pair(x, y, cx, cy, sx, sy):
    """Mirror-symmetric pair of Gaussian bumps at (+-cx, cy): smooth across x = 0."""
    return gauss_bump(x, y, cx, cy, sx, sy) + gauss_bump(x, y, -cx, cy, sx, sy)


def smoothstep(e0, e1, t):
    s = np.clip((np.asarray(t, np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return s * s * (3 - 2 * s)


def sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


# Base surface as functions of height y: front depth zf (mid-sagittal profile, before features),
# half width A, depth D lost between the midline and the side (t = 90 deg), flatness k of the front.
_PROF_Y = np.array([-104, -97, -90, -83, -74, -62, -50, -41, -30, -18, -6, 8, 26, 45, 60, 75, 90, 103, 114], float)
_PROF_Z = np.array([26, 40, 52, 61, 67, 69, 71, 73, 75, 76, 76, 75, 74, 75, 72, 66, 56, 44, 32], float)
_WID_Y = np.array([-104, -94, -86, -78, -68, -56, -44, -30, -12, 8, 26, 45, 65, 85, 103, 114], float)
_WID_A = np.array([10, 22, 34, 45, 53, 59, 63, 66, 69, 72, 73, 72, 69, 64, 56, 50], float)
_WID_D = np.array([8, 18, 30, 48, 68, 82, 90, 95, 100, 106, 110, 108, 104, 96, 86, 80], float)
_WID_K = np.array([0, 0, 0, 0, 0, 0.0, 0.0, 0.05, 0.15, 0.25, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3], float)


SKIN = np.array([0.60, 0.38, 0.29])   # mean skin reflectance, linear RGB


def eye_lids(ax):
    """Eye opening for |x| = ax: (t, corner-line y, upper lid y, lower lid y); t in [-1, 1] inside."""
    t = (ax - EYE_X) / _EYE_HW
    tc = np.clip(t, -1.0, 1.0)
    yc = EYE_Y + 0.8 * tc                         # outer corner slightly higher (canthal tilt)
    base = np.sqrt(np.clip(1.0 - tc * tc, 0.0, 1.0))
    up = yc + _EYE_UP * base * (1.0 - 0.2 * tc)     # highest a little towards the nose
    lo = yc - _EYE_LO * base * (1.0 + 0.2 * tc)     # lowest a little outwards
    return t, yc, up, lo


def lip_borders(x):
    """Vermilion borders: (upper border y, lower border y) for x."""
    xu = np.clip(np.abs(x) / X_MOUTH, 0, 1)
    up = Y_MOUTH + 6.3 * (1 - xu * xu) ** 0.6 - 1.4 * np.exp(-0.5 * (x / 2.6) ** 2) \
        + 0.7 * np.exp(-0.5 * ((np.abs(x) - 6.0) / 3.0) ** 2)
    lo = Y_MOUTH - 8.3 * (1 - xu * xu) ** 0.65
    return up, lo


def brow_curve(ax):
    """Eyebrow centre line y, half thickness and horizontal window for |x| = ax."""
    s = np.clip((ax - 11.0) / 42.0, 0, 1)
    yb = 43.0 + 6.0 * np.sin(np.pi * s ** 0.75) * (1 - 0.3 * s) - 2.0 * s
    th = 3.3 - 1.8 * s
    win = smoothstep(10.0, 13.5, ax) * (1 - smoothstep(50.0, 55.0, ax))
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
    sd -= np.interp(Y_MOUTH, yd, sd)
    j0 = int(np.ceil(np.interp(_Y_BOT - 4, yd, sd) / h))
    j1 = int(np.floor(np.interp(_Y_TOP + 4, yd, sd) / h))
    rows = np.arange(j0, j1 + 1)
    y = np.interp(rows * h, sd, yd)
    y[rows == 0] = Y_MOUTH
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
    dz += 4.0 * gauss_pair(x, y, 27, 45, 15, 6.0)             # brow ridges
    dz += 2.5 * gauss_bump(x, y, 0, 41, 10, 7)                 # glabella
    dz -= 3.0 * gauss_pair(x, y, 63, 40, 8, 14)               # temple hollows
    # ---- eyes
    t, yc, up, lo = eye_lids(ax)
    win = smoothstep(-1.2, -0.85, t) * (1 - smoothstep(0.85, 1.2, t))
    dz -= 13.0 * gauss_pair(x, y, 29.5, 29, 13, 10)           # orbit (eye socket)
    r2 = (ax - EYE_X) ** 2 + ((y - EYE_Y - 0.5) / 0.9) ** 2
    dz += 6.0 * np.exp(-r2 / (2 * 7.0 ** 2))           # eyeball under the lids
    dz += 1.2 * np.exp(-r2 / (2 * 4.5 ** 2))           # cornea
    dz += 1.5 * win * np.exp(-0.5 * ((y - up) / 0.9) ** 2)   # upper lid margin
    dz += 0.8 * win * np.exp(-0.5 * ((y - lo) / 0.9) ** 2)   # lower lid margin
    dz -= 1.0 * smoothstep(-0.6, 0.6, y - lo) * smoothstep(-0.6, 0.6, up - y) * win
    crease = up + 3.8 + 1.2 * np.clip(1 - t * t, 0, 1)
    dz -= 1.8 * win * np.exp(-0.5 * ((y - crease) / 1.3) ** 2)            # upper lid crease
    dz -= 1.0 * win * np.exp(-0.5 * ((y - (lo - 5.0)) / 1.8) ** 2)         # lower lid groove
    dz -= 2.0 * gauss_pair(x, y, 17.5, 27, 3.5, 4)                               # inner eye corner hollow
    # ---- nose
    hn = _hermite(y, [-22.5, -20, -16, -12, -8, -4, 2, 9, 16, 22, 28, 34],
                  [0.0, 3.5, 12.5, 18.5, 20.0, 19.5, 17.0, 13.0, 8.8, 5.0, 2.0, 0.0])
    wn = _hermite(y, [-22, -16, -9, -2, 8, 18, 30], [6.0, 8.0, 7.6, 5.4, 4.3, 4.6, 7.0])
    dz += hn * np.exp(-0.5 * (x / wn) ** 2)
    dz += 2.5 * gauss_bump(x, y, 0, -8.5, 6.0, 4.5)            # tip lobule
    dz += 5.5 * gauss_pair(x, y, 13.0, -13.8, 4.3, 4.8)       # alae
    ra = np.hypot(ax - 13.5, (y + 14.0) * 1.1)
    dz -= 2.5 * np.exp(-0.5 * ((ra - 7.0) / 1.3) ** 2) * smoothstep(-2, 2, ax - 13.5 + 0.8 * (y + 14)) * smoothstep(-20, -15, y)  # alar crease
    dz -= 3.2 * gauss_pair(x, y, 6.5, -18.7, 3.0, 1.6)        # nostrils
    dz -= 1.5 * gauss_bump(x, y, 0, 27, 11, 5)                 # nasion dip
    # ---- cheeks
    dz += 6.0 * gauss_pair(x, y, 51, 8, 13, 9)                # cheekbones
    dz += 5.0 * gauss_pair(x, y, 38, -16, 15, 14)             # cheeks
    dz -= 2.0 * gauss_pair(x, y, 52, -25, 9, 14)              # hollow under the cheekbone
    # nasolabial fold: groove from above the ala down past the mouth corner
    p0, p1 = np.array([17.5, -14.0]), np.array([31.0, -48.0])
    d = p1 - p0
    s = np.clip(((ax - p0[0]) * d[0] + (y - p0[1]) * d[1]) / (d @ d), 0, 1)
    dist = np.hypot(ax - (p0[0] + s * d[0]), y - (p0[1] + s * d[1]))
    fold = np.sin(np.pi * s) ** 0.7
    dz -= 1.2 * np.exp(-0.5 * (dist / 2.5) ** 2) * fold
    # ---- mouth
    dz += 2.5 * gauss_bump(x, y, 0, Y_MOUTH, 17, 11)          # mouth region over the teeth
    ub, lb = lip_borders(x)
    mw = 1 - smoothstep(X_MOUTH - 4, X_MOUTH + 1, ax)
    hu = np.maximum(ub - Y_MOUTH, 2.0)
    hl = np.maximum(Y_MOUTH - lb, 2.0)
    dz += 2.6 * mw * np.exp(-0.5 * ((y - Y_MOUTH - 0.5 * hu) / (0.45 * hu)) ** 2)   # upper lip
    dz += 3.6 * mw * (1 - 0.4 * (x / X_MOUTH) ** 2) * np.exp(-0.5 * ((y - Y_MOUTH + 0.5 * hl) / (0.45 * hl)) ** 2)  # lower lip
    dz -= 1.0 * mw * np.exp(-0.5 * ((y - lb + 1.5) / 1.5) ** 2)          # shadow line under the lower lip
    dz -= 2.4 * mw * np.exp(-0.5 * ((y - Y_MOUTH) / 1.2) ** 2)          # lips roll in at the mouth line
    dz += 0.6 * np.exp(-0.5 * ((y - ub) / 0.8) ** 2) * mw                # vermilion border ridge
    dz -= 1.8 * gauss_pair(x, y, X_MOUTH + 0.5, Y_MOUTH, 2.5, 2.5)            # mouth corners
    dz += 0.6 * gauss_pair(x, y, 4.5, -28, 2.2, 5.0) - 0.6 * gauss_bump(x, y, 0, -28, 2.5, 5.0)   # philtrum
    dz -= 2.6 * gauss_bump(x, y, 0, -57, 15, 3.8)              # mentolabial fold
    dz += 4.5 * gauss_bump(x, y, 0, -73, 17, 9.0)              # chin
    dz += 1.2 * gauss_pair(x, y, 20, -78, 9, 7)               # chin sides
    dy += 0.8 * mw * np.exp(-0.5 * ((y - Y_MOUTH) / 4.0) ** 2) * (ax / X_MOUTH) ** 2  # corners curve up
    return dx, dy, dz


def albedo_painting(X, Y, Z):
    """Mean albedo (V, 3), linear RGB."""
    x, y = X, Y
    ax = np.abs(x)
    alb = np.broadcast_to(SKIN, x.shape + (3,)).copy()
    alb *= (1 + 0.04 * smoothstep(30, 90, y))[..., None]                   # forehead a bit lighter
    alb += gauss_pair(x, y, 42, -6, 14, 12)[..., None] * np.array([0.05, -0.025, -0.012])   # cheeks
    alb += gauss_bump(x, y, 0, -9, 7, 6)[..., None] * np.array([0.03, -0.012, -0.008])      # nose tip
    # lips
    ub, lb = lip_borders(x)
    lip = smoothstep(-0.6, 0.6, ub - y) * smoothstep(-0.6, 0.6, y - lb) * (1 - smoothstep(X_MOUTH - 1.5, X_MOUTH + 0.5, ax))
    alb = alb * (1 - lip[..., None]) + lip[..., None] * np.array([0.47, 0.17, 0.15])
    alb *= (1 - 0.35 * np.exp(-0.5 * ((y - Y_MOUTH) / 0.8) ** 2) * (ax < X_MOUTH + 1))[..., None]
    # brows
    yb, th, win = brow_curve(ax)
    brow = 0.88 * win * (1 - smoothstep(th - 0.8, th + 0.8, np.abs(y - yb)))
    alb = alb * (1 - brow[..., None]) + brow[..., None] * np.array([0.07, 0.045, 0.032])
    # eyes: sclera, iris, pupil, lash line
    t, yc, up, lo = eye_lids(ax)
    opening = smoothstep(-0.35, 0.35, y - lo) * smoothstep(-0.35, 0.35, up - y) * (np.abs(t) < 1.0)
    rr = np.hypot(ax - EYE_X, y - (EYE_Y + 0.4))
    iris = 1 - smoothstep(5.0, 5.8, rr)
    pupil = 1 - smoothstep(2.0, 2.6, rr)
    eye = np.array([0.72, 0.66, 0.62]) * (1 - iris[..., None]) + np.array([0.16, 0.085, 0.045]) * iris[..., None]
    eye = eye * (1 - pupil[..., None]) + np.array([0.01, 0.01, 0.012]) * pupil[..., None]
    eye = eye * (1 - 0.25 * smoothstep(-0.5, 1.0, np.abs(t) - 0.55))[..., None]   # corners a bit darker
    alb = alb * (1 - opening[..., None]) + eye * opening[..., None]
    lash = np.exp(-0.5 * ((y - up - 0.3) / 0.55) ** 2) * (np.abs(t) < 1.05) * (1 - 0.5 * np.clip(-t, 0, 1))
    lash = np.clip(1.2 * lash, 0, 0.92)
    alb = alb * (1 - lash[..., None]) + 0.02 * lash[..., None]
    lid = gauss_pair(x, y, EYE_X, EYE_Y + 7, 12, 4) * (1 - opening)
    alb += lid[..., None] * np.array([-0.04, -0.05, -0.035])
    alb += (gauss_pair(x, y, EYE_X + 2, EYE_Y - 7, 11, 3.5) * (1 - opening))[..., None] * np.array([-0.03, -0.035, -0.02])
    # nostrils
    nos = np.clip(1.3 * gauss_pair(x, y, 6.0, -19.3, 2.6, 1.5), 0, 1)
    alb = alb * (1 - 0.8 * nos[..., None])
    return np.clip(alb, 0.0, 1.0)


def mean_mesh(resolution):
    """Mean shape, triangles, slit bookkeeping and helper arrays for one resolution."""
    h = _GRID_STEP[resolution]
    rows, cols, X0, Y0, Z0, rho = _base_grid(h)
    nr, nc = X0.shape
    dx, dy, dz = _features(X0, Y0, Z0)
    P = np.stack([X0 + dx, Y0 + dy, Z0 + dz], axis=-1)
    r0 = int(np.nonzero(rows == 0)[0][0])
    slit = np.abs(X0[r0]) < X_MOUTH          # mouth-line columns that are doubled (corners stay shared)
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


def vertex_normals_np(P, tris):
    """(V, 3) float64 unit area-weighted vertex normals of a NumPy mesh, used while the model is built (before any
    Taichi backend exists); `mofa_tk.vertex_normals` is the op."""
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
    yb, _, _ = brow_curve(bx)
    pts[17:22] = np.stack([-bx, yb], 1)
    pts[22:27] = pts[17:22][::-1] * [-1, 1]
    pts[27:31] = [[0, 26], [0, 14], [0, 2], [0, -8]]
    pts[31:36] = [[-12, -17.5], [-6, -19.5], [0, -20.5], [6, -19.5], [12, -17.5]]
    # eyes: outer corner, two upper-lid points, inner corner, two lower-lid points (right eye: x < 0)
    ex = np.array([EYE_X + _EYE_HW, EYE_X + 5, EYE_X - 5, EYE_X - _EYE_HW, EYE_X - 5, EYE_X + 5])
    t, yc, up, lo = eye_lids(ex)
    ey = np.array([yc[0], up[1], up[2], yc[3], lo[4], lo[5]])
    pts[36:42] = np.stack([-ex, ey], 1)
    left = np.stack([ex, ey], 1)[[3, 2, 1, 0, 5, 4]]
    pts[42:48] = left
    # outer lip: 48 right corner, 49-53 upper border, 54 left corner, 55-59 lower border
    xs_up = np.array([-16.0, -7.0, 0.0, 7.0, 16.0])
    ub, _ = lip_borders(xs_up)
    xs_lo = np.array([16.0, 7.0, 0.0, -7.0, -16.0])
    _, lb = lip_borders(xs_lo)
    pts[48] = [-X_MOUTH - 2.0, Y_MOUTH]
    pts[49:54] = np.stack([xs_up, ub], 1)
    pts[54] = [X_MOUTH + 2.0, Y_MOUTH]
    pts[55:60] = np.stack([xs_lo, lb], 1)
    pts[60] = [-X_MOUTH, Y_MOUTH]
    pts[61:64] = [[-8, Y_MOUTH], [0, Y_MOUTH], [8, Y_MOUTH]]
    pts[64] = [X_MOUTH, Y_MOUTH]
    pts[65:68] = [[8, Y_MOUTH], [0, Y_MOUTH], [-8, Y_MOUTH]]
    tag[[48, 54]] = 2
    tag[[60, 64]] = 2
    tag[61:64] = 1
    tag[65:68] = -1
    return pts, tag


def landmark_vertices(P, normals, lip_side, mouth_row):
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



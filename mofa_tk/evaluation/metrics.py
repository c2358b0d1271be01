"""Evaluation metrics for face reconstruction: landmark NME, Procrustes alignment, point-to-point RMSE, depth
correlation. Plain NumPy in float64 (inputs may be NumPy arrays, lists or torch tensors; nothing is
differentiated).

Missing landmarks: a ground-truth point is *missing* when any of its coordinates is NaN or when all of them
equal -1 (the marker used by AFLW-style annotations). Missing points are left out of the mean; a prediction
that is NaN where the ground truth is present is an error (InputError), because silently skipping it would
reward a detector for failing.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError

__all__ = ["landmark_nme", "procrustes_align", "point_to_point_rmse", "depth_correlation", "missing_mask"]

_NORMALIZATIONS = ("inter_ocular", "bbox", "inter_pupil")


def _np(name, x) -> np.ndarray:
    try:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected a numeric array, got {type(x).__name__} ({exc})") from None
    return a


def missing_mask(points) -> np.ndarray:
    """(..., K) bool: True where a point of `points` (..., K, D) is missing (any NaN, or all coordinates -1)."""
    p = _np("points", points)
    return np.isnan(p).any(-1) | (p == -1.0).all(-1)


def landmark_nme(pred, gt, normalization: str = "inter_ocular"):
    """Normalised mean error of 2D (or 3D) landmarks.

    pred, gt: (K, D) or (N, K, D) with D = 2 or 3, same units (pixels). For "inter_ocular" and
        "inter_pupil" K must be 68 (iBUG order); "bbox" accepts any K.
    normalization:
        "inter_ocular" - distance between the outer eye corners gt[36] and gt[45] (300-W convention);
        "inter_pupil"  - distance between the eye centres, mean of gt[36:42] and of gt[42:48];
        "bbox"         - sqrt(w * h) of the axis-aligned box around the present gt points in the first two
                         coordinates (AFLW2000-3D convention).
    Per image: NME = mean over present points of ||pred_k - gt_k|| / d. Missing gt points (see the module
    docstring) are skipped; the normaliser must be computable from present points, else InputError.

    Returns a Python float for (K, D) input, an (N,) float64 array for (N, K, D).
    """
    if normalization not in _NORMALIZATIONS:
        raise InputError(f"normalization: expected one of {_NORMALIZATIONS}, got {normalization!r}")
    p, g = _np("pred", pred), _np("gt", gt)
    single = g.ndim == 2
    if p.shape != g.shape:
        raise InputError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    if g.ndim not in (2, 3) or g.shape[-1] not in (2, 3):
        raise InputError(f"gt: expected shape (K, D) or (N, K, D) with D in (2, 3), got {g.shape}")
    if single:
        p, g = p[None], g[None]
    N, K, _ = g.shape
    if normalization != "bbox" and K != 68:
        raise InputError(f"normalization={normalization!r} needs the 68 iBUG points, got K={K}; use 'bbox'")
    if np.isinf(g).any():
        raise InputError("gt: contains Inf")
    miss = missing_mask(g)
    bad_pred = ~np.isfinite(p).all(-1) & ~miss
    if bad_pred.any():
        n, k = np.argwhere(bad_pred)[0]
        raise InputError(f"pred: {int(bad_pred.sum())} NaN/Inf point(s) where gt is present (first: image {n}, "
                         f"point {k})")
    out = np.empty(N)
    for n in range(N):
        present = ~miss[n]
        if not present.any():
            raise InputError(f"gt[{n}]: every point is missing")
        if normalization == "inter_ocular":
            if miss[n, 36] or miss[n, 45]:
                raise InputError(f"gt[{n}]: outer eye corner 36 or 45 is missing; inter-ocular distance undefined")
            d = np.linalg.norm(g[n, 36] - g[n, 45])
        elif normalization == "inter_pupil":
            le, re = g[n, 36:42][present[36:42]], g[n, 42:48][present[42:48]]
            if len(le) == 0 or len(re) == 0:
                raise InputError(f"gt[{n}]: all points of one eye are missing; inter-pupil distance undefined")
            d = np.linalg.norm(le.mean(0) - re.mean(0))
        else:
            q = g[n, present, :2]
            w, h = q.max(0) - q.min(0)
            d = np.sqrt(w * h)
        if not d > 0:
            raise InputError(f"gt[{n}]: normalising distance ({normalization}) is zero")
        out[n] = np.linalg.norm(p[n, present] - g[n, present], axis=-1).mean() / d
    return float(out[0]) if single else out


def procrustes_align(src, dst, scale: bool = False):
    """Rigid (or similarity) alignment of `src` onto `dst` minimising sum ||s R src_i + t - dst_i||^2.

    src, dst: (V, D) corresponding points (D = 3 for meshes; any D >= 2 works), V >= D, finite.
    scale: False = rigid (s = 1, Kabsch); True = similarity (Umeyama 1991, s > 0 optimal).
    R is always a proper rotation (det R = +1): when the optimal orthogonal matrix would be a reflection,
    the singular direction with the smallest singular value is flipped (Umeyama's correction), which gives
    the best proper rotation instead of mirroring the shape.

    Returns (aligned (V, D) = s * src @ R.T + t, R (D, D), t (D,), s float), all float64.
    """
    X, Y = _np("src", src), _np("dst", dst)
    if X.ndim != 2 or X.shape != Y.shape:
        raise InputError(f"src and dst must both be (V, D) with the same shape, got {X.shape} and {Y.shape}")
    V, D = X.shape
    if D < 2 or V < D:
        raise InputError(f"src: need at least D points of dimension D >= 2, got shape {X.shape}")
    for nm, a in (("src", X), ("dst", Y)):
        if not np.isfinite(a).all():
            raise InputError(f"{nm}: contains {int((~np.isfinite(a)).any(-1).sum())} NaN/Inf point(s)")
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    C = Yc.T @ Xc / V  # cross-covariance (D, D)
    U, S, Vt = np.linalg.svd(C)
    E = np.ones(D)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        E[-1] = -1.0
    R = (U * E) @ Vt
    if scale:
        var_x = (Xc ** 2).sum() / V
        if not var_x > 0:
            raise InputError("src: all points coincide; the similarity scale is undefined")
        s = float((S * E).sum() / var_x)
    else:
        s = 1.0
    t = my - s * R @ mx
    aligned = s * X @ R.T + t
    return aligned, R, t, s


def point_to_point_rmse(pred, gt, align: str | None = "rigid") -> float:
    """Root-mean-square distance between corresponding points, after optional alignment of pred onto gt.

    pred, gt: (V, 3) (or (V, D)) corresponding vertices, same units (mm in, mm out).
    align: "rigid" (rotation + translation), "similarity" (+ uniform scale) or None (no alignment).
    Returns sqrt(mean_i ||pred'_i - gt_i||^2) as a float, in the units of the input.
    """
    if align not in ("rigid", "similarity", None):
        raise InputError(f"align: expected 'rigid', 'similarity' or None, got {align!r}")
    P, G = _np("pred", pred), _np("gt", gt)
    if P.ndim != 2 or P.shape != G.shape:
        raise InputError(f"pred and gt must both be (V, D) with the same shape, got {P.shape} and {G.shape}")
    if align is not None:
        P = procrustes_align(P, G, scale=(align == "similarity"))[0]
    elif not (np.isfinite(P).all() and np.isfinite(G).all()):
        raise InputError("pred/gt: contain NaN/Inf")
    return float(np.sqrt(((P - G) ** 2).sum(-1).mean()))


def depth_correlation(pred_depth, gt_depth, mask=None) -> float:
    """Pearson correlation between two depth maps over the valid pixels.

    pred_depth, gt_depth: (H, W) (any equal shapes) depths; mask: optional bool array of the same shape.
    Valid pixels: mask True (if given) and both depths finite. Needs at least 2 valid pixels and a non-zero
    spread in both maps (else InputError). Returns r in [-1, 1] as a float (invariant to affine changes of
    either depth, so units and offsets do not matter).
    """
    a, b = _np("pred_depth", pred_depth), _np("gt_depth", gt_depth)
    if a.shape != b.shape:
        raise InputError(f"pred_depth and gt_depth must have the same shape, got {a.shape} and {b.shape}")
    valid = np.isfinite(a) & np.isfinite(b)
    if mask is not None:
        m = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask)
        if m.shape != a.shape:
            raise InputError(f"mask: expected shape {a.shape}, got {m.shape}")
        valid &= m.astype(bool)
    n = int(valid.sum())
    if n < 2:
        raise InputError(f"depth_correlation: only {n} valid pixel(s) (mask and finite depths)")
    x, y = a[valid], b[valid]
    x, y = x - x.mean(), y - y.mean()
    sx, sy = np.sqrt((x * x).sum()), np.sqrt((y * y).sum())
    if sx == 0 or sy == 0:
        raise InputError("depth_correlation: a depth map is constant over the valid pixels; correlation undefined")
    return float(np.clip((x * y).sum() / (sx * sy), -1.0, 1.0))

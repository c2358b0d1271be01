"""Landmark metrics of `mofa eval` (2D NME and the 3D landmark error).

Metrics (every landmark array is (68, 2) float pixels of the image FILE, u right, v down, pixel centres
at +0.5; NaN = missing):

* 68-point NME (`nme68`): mean over the evaluated points of ||fitted - annotated|| / d. "inter_ocular":
  d = distance between the annotated outer eye corners 36 and 45 (300-W convention); "bbox": d = sqrt(w h) of
  the box around all present annotated points (AFLW2000-3D convention). The evaluated points are those the
  model has a landmark vertex for (`model_landmark_points`), e.g. 50 of 68 for the Surrey Face Model.
* 5-point NME (`nme5`): eye centres (mean of the corners 36/39 and 42/45, as Deep3DFaceRecon's
  ``extract_5p``), nose tip 30 and mouth corners 48/54 against the 5 annotated points, normalised by the
  distance between the two annotated eye centres.
* 3D landmark error (`landmark_3d_error`): the fitted mesh's landmark vertices (model space, mm) are
  similarity-aligned (Umeyama, proper rotation) onto AFLW2000-3D's ``pt3d_68`` (pixel units, converted to a
  right-handed frame (u, -v, z)); error = mean point distance / 3D distance between the annotated outer eye
  corners 36 and 45.
* Synthetic ground truth (`synthetic_face`, `evaluate_synthetic`): point-to-point RMSE in mm after rigid
  alignment (MoFA's metric) between fitted and true model-space meshes over the model's face region
  (`face_region`).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .metrics import procrustes_align

__all__ = ["INNER49", "five_from_68", "nme68", "nme5", "model_landmark_points", "describe_points", "aflw_gt_3d",
           "landmark_3d_error"]

#: The 49 inner iBUG points (brows, nose, eyes, outer lip, inner lip without its corners 60 and 64): the
#: points every model in docs/evaluation.md has, for a like-for-like NME across models.
INNER49 = tuple(i for i in range(17, 68) if i not in (60, 64))

#: Deep3DFaceRecon's 5 points from 68: (pairs averaged) right-eye corners, left-eye corners, nose tip, mouth
#: corners -- image-left eye first for a frontal face, as in its detections files.
_FIVE = ((36, 39), (42, 45), (30,), (48,), (54,))


def five_from_68(lm68) -> np.ndarray:
    """Deep3DFaceRecon's 5 points from 68 iBUG points.

    lm68: (..., 68, D) array. Returns (..., 5, D) float64: mean of 36 and 39, mean of 42 and 45, point 30,
    point 48, point 54 (NaN propagates).
    """
    a = np.asarray(lm68, np.float64)
    if a.shape[-2] != 68:
        raise InputError(f"lm68: expected (..., 68, D), got {a.shape}")
    return np.stack([a[..., list(ix), :].mean(-2) for ix in _FIVE], axis=-2)


def nme68(pred, gt, points=None, normalization: str = "inter_ocular") -> float:
    """68-point normalised mean error over a subset of the points.

    pred, gt: (68, 2) (or (68, 3)) same pixel units; NaN marks missing points.
    points:   iBUG indices (0-based) to evaluate (default all 68); points where gt is NaN are skipped, a
              selected point with gt present but pred NaN is an InputError (a model without that landmark
              must be left out via `points`, see `model_landmark_points`).
    normalization: "inter_ocular" (||gt[36] - gt[45]||, computed from the full annotation) or "bbox"
              (sqrt(w h) of the box around all present gt points, AFLW2000-3D convention).
    Returns the NME (float, a fraction: 0.05 = 5 % of the normalising distance); NaN if no selected point
    is present.
    """
    P, G = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if P.shape != G.shape or G.ndim != 2 or G.shape[0] != 68:
        raise InputError(f"pred and gt must both be (68, D), got {P.shape} and {G.shape}")
    sel = np.zeros(68, bool)
    sel[list(range(68)) if points is None else list(points)] = True
    present = np.isfinite(G).all(1)
    use = sel & present
    if not use.any():
        return float("nan")
    bad = use & ~np.isfinite(P).all(1)
    if bad.any():
        raise InputError(f"pred: NaN at evaluated point(s) {np.nonzero(bad)[0].tolist()} where gt is present")
    if normalization == "inter_ocular":
        if not (present[36] and present[45]):
            raise InputError("gt: outer eye corner 36 or 45 is missing; inter-ocular distance undefined")
        d = float(np.linalg.norm(G[36] - G[45]))
    elif normalization == "bbox":
        q = G[present, :2]
        w, h = q.max(0) - q.min(0)
        d = float(np.sqrt(w * h))
    else:
        raise InputError(f"normalization: expected 'inter_ocular' or 'bbox', got {normalization!r}")
    if not d > 0:
        raise InputError(f"gt: normalising distance ({normalization}) is zero")
    return float(np.linalg.norm(P[use] - G[use], axis=1).mean() / d)


def nme5(pred68, gt5) -> float:
    """5-point NME: `five_from_68(pred68)` (68, 2) against the annotated 5 points gt5 (5, 2), mean distance
    divided by the distance between the two annotated eye centres (gt5[0], gt5[1]). Pixels in, fraction out."""
    P = five_from_68(pred68)
    G = np.asarray(gt5, np.float64)
    if G.shape != (5, 2):
        raise InputError(f"gt5: expected (5, 2), got {G.shape}")
    if not np.isfinite(P).all():
        raise InputError("pred68: eye corners, nose tip 30 or mouth corners 48/54 are NaN")
    d = float(np.linalg.norm(G[0] - G[1]))
    if not d > 0:
        raise InputError("gt5: the two eye centres coincide")
    return float(np.linalg.norm(P - G, axis=1).mean() / d)


def model_landmark_points(model) -> tuple:
    """The iBUG indices (0-based, sorted) for which `model` has a landmark vertex (model.landmarks >= 0)."""
    lm = np.asarray(model.landmarks.cpu() if hasattr(model.landmarks, "cpu") else model.landmarks)
    return tuple(int(i) for i in np.nonzero(lm >= 0)[0])


def _ranges(idx) -> str:
    idx = sorted(idx)
    out, i = [], 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        out.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ", ".join(out)


def describe_points(points) -> str:
    """Human-readable description of a set of iBUG indices, e.g. 'all 68' or '50 of 68 (0-based iBUG 8, 17-59,
    61-63, 65-67; no 0-7, 9-16, 60, 64)'."""
    pts = sorted(set(int(i) for i in points))
    if len(pts) == 68:
        return "all 68"
    missing = [i for i in range(68) if i not in pts]
    return f"{len(pts)} of 68 (0-based iBUG {_ranges(pts)}; no {_ranges(missing)})"


def aflw_gt_3d(points3d) -> np.ndarray:
    """AFLW2000-3D (u, v, z) landmarks (68, 3) -> a right-handed frame (u, -v, z): x right, y up, z towards
    the viewer, like mofa_tk's model space (the file's frame, v down with z towards the viewer, is
    left-handed, and a proper rotation could not align a model-space shape to it). float64."""
    p = np.asarray(points3d, np.float64)
    if p.shape != (68, 3):
        raise InputError(f"points3d: expected (68, 3), got {p.shape}")
    return p * np.array([1.0, -1.0, 1.0])


def landmark_3d_error(pred3d, gt3d, points=None) -> float:
    """3D landmark error after similarity alignment, normalised by the 3D outer-eye-corner distance.

    pred3d: (68, 3) predicted landmark positions (any units, e.g. model-space mm; NaN where missing).
    gt3d:   (68, 3) ground truth in a right-handed frame (`aflw_gt_3d`), any units (AFLW2000-3D: pixels).
    points: iBUG indices to use (default: every point finite in both); at least 4 are needed.
    The prediction is aligned onto gt3d with `metrics.procrustes_align(scale=True)` (rotation, translation
    and scale estimated on the used points), then error = mean_i ||aligned_i - gt_i|| / ||gt[36] - gt[45]||.
    Returns a float fraction.
    """

    P, G = np.asarray(pred3d, np.float64), np.asarray(gt3d, np.float64)
    if P.shape != (68, 3) or G.shape != (68, 3):
        raise InputError(f"pred3d and gt3d must be (68, 3), got {P.shape} and {G.shape}")
    sel = np.zeros(68, bool)
    sel[list(range(68)) if points is None else list(points)] = True
    use = sel & np.isfinite(P).all(1) & np.isfinite(G).all(1)
    if use.sum() < 4:
        raise InputError(f"landmark_3d_error: only {int(use.sum())} usable point(s); need >= 4")
    if not np.isfinite(G[[36, 45]]).all():
        raise InputError("gt3d: outer eye corner 36 or 45 is missing")
    d = float(np.linalg.norm(G[36] - G[45]))
    aligned = procrustes_align(P[use], G[use], scale=True)[0]
    return float(np.linalg.norm(aligned - G[use], axis=1).mean() / d)

"""Evaluation of single-image fitting: folder scan, annotation readers, per-image metrics, 3D accuracy,
report writer and contact sheet (used by `mofa eval`, see docs/evaluation.md).

Annotation formats read beside a photo ``NAME.ext`` (first match wins, in this order):

===============  ==========================================================  ===============================
format key       file                                                        pixel convention -> mofa_tk
===============  ==========================================================  ===============================
``pts68``        ``NAME.pts``, iBUG/300-W, exactly 68 points                 1-based: u = x - 0.5
``aflw2000_3d``  ``NAME.mat`` with ``pt3d_68`` (3, 68) (AFLW2000-3D): rows   1-based (MATLAB): u = x - 0.5,
                 x, y are the 2D landmarks, z the depth (image pixel units)   v = y - 0.5 (v down, no flip)
``300w_lp``      ``NAME.mat`` with ``pt2d`` (2, 68) (300W-LP)                 1-based (MATLAB): u = x - 0.5
``ljson68``      ``NAME.ljson`` (menpo LJSON), a group of 68 points          points stored (y, x), 0-based
                                                                             integer centres: u = x + 0.5
``five_point``   ``NAME.txt``, ``detections/NAME.txt`` or (flattened names)   0-based integer centres:
                 ``PREFIX__detections__LAST.txt`` for ``PREFIX__LAST.ext``:   u = x + 0.5
                 5 lines ``x y`` = Deep3DFaceRecon's 5 points
===============  ==========================================================  ===============================

Not evaluated (reported as an annotation note): .pts files with another point count (e.g. menpo's 19-point
tongue markup), AFLW's 21-point ``pt2d`` without ``pt3d_68``, dlib XML (its points come from dlib's own
shape predictor, not from a person) and TF_FLAME's 51-point ``*_lmks.npy``.

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

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS", "ANNOTATION_FORMATS", "INNER49", "FACE_RADIUS_MM", "Annotation", "scan_images",
    "read_pts68", "read_annotation_mat", "read_five_point_txt", "read_ljson", "find_annotation",
    "five_from_68", "nme68", "nme5", "model_landmark_points", "describe_points", "landmark_3d_error",
    "aflw_gt_3d", "evaluate_image", "summarize", "overlay_tile", "failure_tile", "contact_sheet",
    "write_report", "face_region", "synthetic_face", "evaluate_synthetic", "summarize_synthetic",
    "load_eval_model", "summary_plot",
]

#: File extensions (lower case) that `scan_images` treats as photos.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")

#: Annotation formats: key -> one-line description (also printed in the report).
ANNOTATION_FORMATS = {
    "pts68": "iBUG/300-W .pts with 68 points, 1-based (u = x - 0.5)",
    "aflw2000_3d": "AFLW2000-3D .mat: pt3d_68 (3, 68); x, y = 2D landmarks, 1-based MATLAB pixels (u = x - 0.5, "
                   "v = y - 0.5, v down); z = depth, for the 3D landmark error",
    "300w_lp": "300W-LP .mat: pt2d (2, 68), 1-based MATLAB pixels (u = x - 0.5)",
    "ljson68": "menpo LJSON (.ljson), a group of 68 points stored (y, x), 0-based (u = x + 0.5)",
    "five_point": "5-point .txt (Deep3DFaceRecon detections: eye centres, nose tip, mouth corners; 'x y' per "
                  "line, 0-based, u = x + 0.5): 5-point NME only",
}

#: Offsets added to annotation coordinates to get mofa_tk pixels (centre of the top-left pixel = 0.5).
_OFFSET_1BASED = -0.5
_OFFSET_0BASED = 0.5

#: The 49 inner iBUG points (brows, nose, eyes, outer lip, inner lip without its corners 60 and 64): the
#: points every model in docs/evaluation.md has, for a like-for-like NME across models.
INNER49 = tuple(i for i in range(17, 68) if i not in (60, 64))

#: Radius (mm) around the nose-tip landmark that bounds the face region of the synthetic 3D metric.
FACE_RADIUS_MM = 95.0

#: Deep3DFaceRecon's 5 points from 68: (pairs averaged) right-eye corners, left-eye corners, nose tip, mouth
#: corners -- image-left eye first for a frontal face, as in its detections files.
_FIVE = ((36, 39), (42, 45), (30,), (48,), (54,))


# ============================================================================================ folder scan
def scan_images(root, recursive: bool = True) -> list:
    """Photos under `root` (a folder, searched recursively unless `recursive` is False, or one image file).

    Returns a sorted list of `Path`s whose suffix (case-insensitive) is in `IMAGE_EXTENSIONS`; hidden files
    and folders (names starting with '.') are skipped. Raises FileNotFoundError when `root` does not exist
    and InputError when it is a file with another extension.
    """
    p = Path(os.fspath(root))
    if not p.exists():
        raise FileNotFoundError(f"image folder not found: {p}")
    if p.is_file():
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"{p}: not a folder and not an image file (extensions {', '.join(IMAGE_EXTENSIONS)})")
        return [p]
    it = p.rglob("*") if recursive else p.glob("*")
    out = []
    for q in it:
        rel = q.relative_to(p).parts
        if any(part.startswith(".") for part in rel):
            continue
        if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(q)
    return sorted(out)


# ============================================================================================ annotations
@dataclass
class Annotation:
    """Landmarks annotated beside a photo, in mofa_tk pixel coordinates of the image file.

    points:   (68, 2) float64 (u, v) pixels for 68-point formats, (5, 2) for "five_point"; NaN = missing
    format:   a key of `ANNOTATION_FORMATS`
    path:     the annotation file
    points3d: (68, 3) float64 for "aflw2000_3d": (u, v, z) with u, v as `points` and z the file's depth
              (pixel units, towards the viewer); None otherwise
    """

    points: np.ndarray
    format: str
    path: Path
    points3d: np.ndarray | None = None

    @property
    def n_points(self) -> int:
        """68 or 5."""
        return int(self.points.shape[0])


def _bad(path, msg):
    raise InputError(f"annotation {str(path)!r}: {msg}")


def read_pts68(path) -> Annotation:
    """Read an iBUG .pts file with exactly 68 points (1-based; `landmarks.read_landmarks` applies -0.5).

    Returns an Annotation with points (68, 2) float64. Raises FileNotFoundError / InputError (naming the
    file: malformed, or another point count such as menpo's 19-point tongue markup).
    """
    from ..landmarks import read_landmarks

    pts = read_landmarks(path, n_points=None)
    if pts.shape[0] != 68:
        _bad(path, f"{pts.shape[0]} points; only the 68-point iBUG markup is evaluated")
    return Annotation(points=pts.astype(np.float64), format="pts68", path=Path(path))


def _missing_to_nan(p: np.ndarray) -> np.ndarray:
    p = np.array(p, np.float64, copy=True)
    p[(p[:, :2] == -1).all(1)] = np.nan  # AFLW-style "-1, -1" = not annotated
    return p


def read_annotation_mat(path) -> Annotation:
    """Read an AFLW2000-3D (``pt3d_68`` (3, 68)) or 300W-LP (``pt2d`` (2, 68)) MATLAB .mat annotation.

    Both come from the same MATLAB pipeline (Zhu et al., 3DDFA) and are taken as 1-based pixels:
    u = x - 0.5, v = y - 0.5 (v points down; no vertical flip). For AFLW2000-3D, ``points3d`` holds
    (u, v, z) with z unchanged. Points equal to (-1, -1) are missing (NaN).
    Raises FileNotFoundError, or InputError naming the file when it is not a readable .mat or holds neither key
    with 68 points (AFLW's 21-point pt2d alone is refused with that reason).
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"annotation file not found: {p}")
    import scipy.io

    try:
        mat = scipy.io.loadmat(p)
    except Exception as exc:  # scipy raises several types for non-.mat / v7.3 files
        _bad(p, f"not a readable MATLAB v5 .mat file ({type(exc).__name__}: {exc})")
    if "pt3d_68" in mat:
        a = np.asarray(mat["pt3d_68"], np.float64)
        if a.shape == (68, 3):
            a = a.T
        if a.shape != (3, 68):
            _bad(p, f"pt3d_68 has shape {a.shape}, expected (3, 68)")
        if not np.isfinite(a).all():
            _bad(p, "pt3d_68 contains NaN/Inf")
        p3 = a.T.copy()
        p3[:, :2] += _OFFSET_1BASED
        return Annotation(points=p3[:, :2].copy(), format="aflw2000_3d", path=p, points3d=p3)
    if "pt2d" in mat:
        a = np.asarray(mat["pt2d"], np.float64)
        if a.shape == (68, 2):
            a = a.T
        if a.shape == (2, 68):
            pts = _missing_to_nan(a.T)
            if np.isinf(pts).any():
                _bad(p, "pt2d contains Inf")
            return Annotation(points=pts + _OFFSET_1BASED, format="300w_lp", path=p)
        _bad(p, f"pt2d has shape {a.shape} (AFLW's 21-point markup?) and there is no pt3d_68; only 68-point "
                f"annotations are evaluated")
    keys = sorted(k for k in mat if not k.startswith("__"))
    _bad(p, f"no pt3d_68 or pt2d landmarks (keys: {keys})")


def read_five_point_txt(path) -> Annotation:
    """Read a 5-point landmark .txt (Deep3DFaceRecon detections): 5 lines of 'x y' (0-based pixels).

    Order: eye centre on the image left (the subject's right eye of a frontal face), the other eye centre,
    nose tip, mouth corner on the image left, the other mouth corner. Returns points (5, 2) float64 with
    u = x + 0.5. Raises FileNotFoundError / InputError naming the file.
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"annotation file not found: {p}")
    try:
        rows = [ln.split() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        a = np.array(rows, dtype=np.float64)
    except (UnicodeDecodeError, ValueError) as exc:
        _bad(p, f"not a text file of 'x y' lines ({exc})")
    if a.shape != (5, 2):
        _bad(p, f"expected 5 lines of 'x y' (5-point landmarks), got an array of shape {a.shape}")
    if not np.isfinite(a).all():
        _bad(p, "contains NaN/Inf")
    return Annotation(points=a + _OFFSET_0BASED, format="five_point", path=p)


def read_ljson(path) -> Annotation:
    """Read a menpo LJSON file (v1-v3): the first landmark group with 68 points.

    LJSON stores 2D points as (y, x) = (row, column) with integer pixel centres (menpo's convention);
    returns points (68, 2) float64 (u = x + 0.5, v = y + 0.5), null entries -> NaN. Raises
    FileNotFoundError / InputError naming the file.
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"annotation file not found: {p}")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _bad(p, f"not valid JSON ({exc})")
    groups = []
    if isinstance(d, dict) and isinstance(d.get("groups"), dict):
        groups = [g.get("landmarks", {}).get("points") for g in d["groups"].values() if isinstance(g, dict)]
    elif isinstance(d, dict) and isinstance(d.get("landmarks"), dict):
        groups = [d["landmarks"].get("points")]
    for pts in groups:
        if isinstance(pts, list) and len(pts) == 68:
            a = np.array([[np.nan, np.nan] if q is None or None in q else q for q in pts], dtype=np.float64)
            if a.shape != (68, 2):
                _bad(p, f"the 68-point group is not 2D (shape {a.shape})")
            return Annotation(points=a[:, ::-1] + _OFFSET_0BASED, format="ljson68", path=p)
    _bad(p, f"no landmark group of 68 points (group sizes: {[len(g) if isinstance(g, list) else None for g in groups]})")


def _five_point_candidates(image: Path) -> list:
    stem = image.stem
    c = [image.with_suffix(".txt"), image.parent / "detections" / f"{stem}.txt"]
    if "__" in stem:
        prefix, last = stem.rsplit("__", 1)
        c.append(image.parent / f"{prefix}__detections__{last}.txt")
    return c


def find_annotation(image) -> tuple:
    """The annotation beside photo `image`: (Annotation or None, note or None).

    Looks for NAME.pts, NAME.mat, NAME.ljson, then the 5-point .txt names (see the module docstring), and
    returns the first one that reads. `note` explains a file that exists but could not be used (its reader's
    error message), so a report can list it; (None, None) when nothing is there.
    """
    p = Path(os.fspath(image))
    notes = []
    candidates = [(p.with_suffix(".pts"), read_pts68), (p.with_suffix(".mat"), read_annotation_mat),
                  (p.with_suffix(".ljson"), read_ljson)]
    candidates += [(q, read_five_point_txt) for q in _five_point_candidates(p)]
    for q, reader in candidates:
        if q.is_file():
            try:
                return reader(q), None
            except (InputError, OSError) as exc:
                notes.append(" ".join(str(exc).split()))
    return None, ("; ".join(notes) if notes else None)


# ============================================================================================ 2D metrics
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


# ============================================================================================ 3D metrics
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
    from .metrics import procrustes_align

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


# ============================================================================================ models
def load_eval_model(spec: str):
    """'builtin' -> `builtin_model()`, else `load_model(spec)` (a model file or ICT FaceXModel folder).
    Returns (tag, FaceModel) with tag = 'builtin' or the file's stem / folder name (used in file names)."""
    if spec == "builtin":
        from ..face.builtin import builtin_model

        return "builtin", builtin_model()
    from ..io.models import load_model

    p = Path(os.fspath(spec))
    model = load_model(p)
    tag = p.stem if p.is_file() else p.name
    tag = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in tag) or "model"
    return tag, model


def _albedo_note(model) -> str:
    if model.k_alb > 0:
        return f"{model.k_alb}-component reflectance model"
    a = model.albedo_mean.detach().cpu().numpy()
    if np.ptp(a) < 1e-6:
        return (f"no reflectance model: constant grey albedo {float(a.reshape(-1)[0]):.2f}; the photometric stage "
                f"fits pose, shape, expression and SH illumination")
    return "no reflectance model: fixed per-vertex albedo; the photometric stage fits illumination"


# ============================================================================================ per image
def _nan_list(a):
    if a is None:
        return None
    return np.asarray(a, np.float64).tolist()


def evaluate_image(fit_fn, image, model, points, *, annotation=None, landmarks=None, detected=None,
                   scale: float = 1.0, fit_kwargs=None) -> dict:
    """Fit one photo with one model and measure it; never raises (except KeyboardInterrupt).

    fit_fn:     `mofa_tk.fitting.pipeline.fit` (passed in so that a caller can time / replace it)
    image:      (H, W, 3) float32 working image in [0, 1] (`io.load_image(...).rgb`)
    model:      FaceModel; points = `model_landmark_points(model)`
    annotation: Annotation or None (file pixels)
    landmarks:  (68, 2) landmarks the fit starts from, in WORKING pixels (detected or annotated)
    detected:   (68, 2) detected landmarks in FILE pixels (for the detector's own NME), or None
    scale:      working pixels per file pixel (`LoadedImage.scale`)
    fit_kwargs: extra keyword arguments of `fit` (iters, size, optimizer, ...)

    Returns a dict: status ("ok" | "failed"), reason, fit_time (s), nme / nme_inner / nme_bbox /
    nme_detector / nme_detector_inner / nme5 / nme5_detector (fractions, NaN when not applicable), err3d / err3d_mean_face
    (AFLW2000-3D only), landmarks_fit (68, 2 list, file pixels), and "result" (the FitResult, for tiles;
    drop it before serialising).
    """
    row = {"status": "failed", "reason": None, "fit_time": float("nan"), "nme": float("nan"),
           "nme_inner": float("nan"), "nme_bbox": float("nan"), "nme_detector": float("nan"),
           "nme_detector_inner": float("nan"),
           "nme5": float("nan"), "nme5_detector": float("nan"), "err3d": float("nan"),
           "err3d_mean_face": float("nan"), "err3d_inner": float("nan"), "err3d_inner_mean_face": float("nan"),
           "landmarks_fit": None, "result": None}
    try:
        res = fit_fn(image, model, landmarks=landmarks, progress=False, **(fit_kwargs or {}))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded, never fatal: the run goes on with the next photo
        row["reason"] = f"fit failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        return row
    row["status"], row["result"] = "ok", res
    row["fit_time"] = float(res.timings.get("total", float("nan")))
    fitted = np.asarray(res.landmarks, np.float64) / scale
    row["landmarks_fit"] = fitted
    if annotation is None:
        return row
    inner = [i for i in INNER49 if i in set(points)]
    try:
        if annotation.n_points == 68:
            gt = annotation.points
            row["nme"] = nme68(fitted, gt, points)
            row["nme_inner"] = nme68(fitted, gt, inner)
            row["nme_bbox"] = nme68(fitted, gt, points, "bbox")
            if detected is not None:
                row["nme_detector"] = nme68(detected, gt, points)
                row["nme_detector_inner"] = nme68(detected, gt, inner)
            if annotation.points3d is not None:
                gt3 = aflw_gt_3d(annotation.points3d)
                lm_idx = np.asarray(model.landmarks.cpu()).astype(np.int64)
                for key, verts in (("err3d", res.verts_model), ("err3d_mean_face", model.mean_shape)):
                    v = np.asarray(verts.detach().cpu(), np.float64)
                    pred3 = np.full((68, 3), np.nan)
                    pred3[list(points)] = v[lm_idx[list(points)]]
                    row[key] = landmark_3d_error(pred3, gt3, points)
                    row[key.replace("err3d", "err3d_inner")] = landmark_3d_error(pred3, gt3, inner)
        if annotation.n_points == 5 or annotation.n_points == 68:
            gt5 = annotation.points if annotation.n_points == 5 else five_from_68(annotation.points)
            if np.isfinite(gt5).all():
                row["nme5"] = nme5(fitted, gt5)
                if detected is not None:
                    row["nme5_detector"] = nme5(detected, gt5)
    except InputError as exc:
        row["reason"] = f"metric not computed: {' '.join(str(exc).split())}"
    return row


# ============================================================================================ summaries
def _stats(values) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return {"n": 0, "mean": float("nan"), "median": float("nan")}
    return {"n": int(len(v)), "mean": float(v.mean()), "median": float(np.median(v))}


def summarize(rows: list) -> dict:
    """Aggregate per-image rows of one model (dicts with the keys `evaluate_image` returns plus "status",
    "reason", "annotation_format").

    Returns {"images", "fitted", "failed", "skipped", "failures" {reason class: count}, "fit_time" stats,
    and for each of nme, nme_inner, nme_bbox, nme_detector, nme5, nme5_detector, err3d, err3d_mean_face,
    err3d_inner, err3d_inner_mean_face:
    {"n", "mean", "median"}} plus "by_format" {format: {"images", "fitted", "nme", "nme_detector", ...}}.
    """
    out = {"images": len(rows), "fitted": sum(r["status"] == "ok" for r in rows),
           "failed": sum(r["status"] == "failed" for r in rows),
           "skipped": sum(r["status"] == "skipped" for r in rows)}
    fails = {}
    for r in rows:
        if r["status"] != "ok":
            key = _reason_class(r.get("reason") or "")
            fails[key] = fails.get(key, 0) + 1
    out["failures"] = fails
    ok = [r for r in rows if r["status"] == "ok"]
    out["fit_time"] = _stats(r["fit_time"] for r in ok)
    keys = ("nme", "nme_inner", "nme_bbox", "nme_detector", "nme_detector_inner", "nme5", "nme5_detector", "err3d",
            "err3d_mean_face",
            "err3d_inner", "err3d_inner_mean_face")
    for k in keys:
        out[k] = _stats(r.get(k) for r in ok)
    by = {}
    for fmt in sorted({r.get("annotation_format") or "none" for r in rows}):
        sub = [r for r in rows if (r.get("annotation_format") or "none") == fmt]
        subok = [r for r in sub if r["status"] == "ok"]
        by[fmt] = {"images": len(sub), "fitted": len(subok)}
        for k in keys:
            by[fmt][k] = _stats(r.get(k) for r in subok)
    out["by_format"] = by
    return out


def _reason_class(reason: str) -> str:
    r = reason.lower()
    if "no face found" in r:
        return "no face found"
    if "unreadable image" in r or "not an image" in r or "cannot read image" in r:
        return "unreadable image"
    if "no 68-point annotation" in r:
        return "no 68-point annotation to fit from"
    if r.startswith("fit failed"):
        return "fit error"
    return reason.split(":")[0] if reason else "unknown"


# ============================================================================================ tiles
def _resize(img: np.ndarray, hw) -> np.ndarray:
    """(h, w, 3) float32 [0, 1] resized (PIL, area-like 'box' downscaling, bilinear upscaling)."""
    from PIL import Image

    u8 = np.clip(np.rint(np.asarray(img, np.float64) * 255), 0, 255).astype(np.uint8)
    im = Image.fromarray(u8)
    H, W = int(hw[0]), int(hw[1])
    down = H * W < u8.shape[0] * u8.shape[1]
    im = im.resize((max(W, 1), max(H, 1)), Image.Resampling.BOX if down else Image.Resampling.BILINEAR)
    return np.asarray(im, np.float32) / 255.0


def _square_box(points, H, W, margin=0.35):
    p = np.asarray(points, np.float64)
    p = p[np.isfinite(p).all(1)]
    if not len(p):
        return 0, 0, W, H
    lo, hi = p.min(0), p.max(0)
    c = (lo + hi) / 2
    half = max((hi - lo).max() * (0.5 + margin), 8.0)
    return (int(max(math.floor(c[0] - half), 0)), int(max(math.floor(c[1] - half), 0)),
            int(min(math.ceil(c[0] + half), W)), int(min(math.ceil(c[1] + half), H)))


def _fit_in_square(img: np.ndarray, size: int) -> tuple:
    h, w = img.shape[:2]
    k = size / max(h, w)
    nh, nw = max(1, round(h * k)), max(1, round(w * k))
    out = np.zeros((size, size, 3), np.float32)
    oy, ox = (size - nh) // 2, (size - nw) // 2
    out[oy:oy + nh, ox:ox + nw] = _resize(img, (nh, nw))
    return out, k, ox, oy


def overlay_tile(res, photo: np.ndarray, size: int = 192, alpha: float = 0.7, draw_target: bool = True) -> np.ndarray:
    """Contact-sheet tile: the fitted render blended over the photo, cut to the face and resized.

    res:    FitResult; photo: (H, W, 3) float32 [0, 1] working image the fit used.
    draw_target: draw the landmarks the fit started from (`res.target_landmarks`) as green dots; the fitted
            landmarks (`res.landmarks`) are always drawn, in red.
    Returns (size, size, 3) float32 in [0, 1]. The render is made at most 1024 px on its long side.
    """
    render, mask = res.render_original(max_side=1024)
    H, W = photo.shape[:2]
    h, w = render.shape[:2]
    k = w / W
    small = photo if (h, w) == (H, W) else _resize(photo, (h, w))
    m = alpha * mask[..., None]
    blend = np.clip(small * (1 - m) + render * m, 0, 1)
    pts = np.asarray(res.target_landmarks, np.float64) * k
    u0, v0, u1, v1 = _square_box(pts, h, w)
    crop = blend[v0:v1, u0:u1]
    tile, kk, ox, oy = _fit_in_square(crop, size)
    dots = []
    if draw_target:
        dots.append((np.asarray(res.target_landmarks, np.float64), (0.1, 1.0, 0.2)))
    dots.append((np.asarray(res.landmarks, np.float64), (1.0, 0.15, 0.1)))
    r = max(1.0, size / 160)
    for pts_, col in dots:
        q = (pts_ * k - (u0, v0)) * kk + (ox, oy)
        for u, v in q[np.isfinite(q).all(1)]:
            i0, i1 = int(max(v - r, 0)), int(min(v + r + 1, size))
            j0, j1 = int(max(u - r, 0)), int(min(u + r + 1, size))
            if i0 < i1 and j0 < j1:
                tile[i0:i1, j0:j1] = col
    return tile


def failure_tile(photo: np.ndarray | None, size: int = 192) -> np.ndarray:
    """Tile for a failed image: the darkened photo (or black when unreadable) with a red border and cross.
    Returns (size, size, 3) float32."""
    if photo is None:
        tile = np.zeros((size, size, 3), np.float32)
    else:
        tile = _fit_in_square(np.asarray(photo, np.float32), size)[0] * 0.45
    b = max(2, size // 64)
    red = np.array([0.9, 0.1, 0.1], np.float32)
    tile[:b], tile[-b:], tile[:, :b], tile[:, -b:] = red, red, red, red
    t = np.arange(size)
    for d in range(-b // 2, b // 2 + 1):
        j = np.clip(t + d, 0, size - 1)
        tile[t, j] = red
        tile[t, size - 1 - j] = red
    return tile


def contact_sheet(tiles: list, captions: list, path, columns: int = 10, title: str | None = None) -> Path:
    """Write a grid of tiles with a caption under each as a PNG.

    tiles: list of (s, s, 3) float32 [0, 1] (same s); captions: list of str (same length); columns: tiles
    per row; title: optional line at the top. Returns the written path. Captions use PIL's default font.
    """
    from PIL import Image, ImageDraw, ImageFont

    if len(tiles) != len(captions):
        raise InputError(f"tiles and captions must have the same length, got {len(tiles)} and {len(captions)}")
    if not tiles:
        raise InputError("contact_sheet: no tiles")
    s = tiles[0].shape[0]
    cols = max(1, min(int(columns), len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    cap_h, top = 16, (22 if title else 0)
    sheet = Image.new("RGB", (cols * s, top + rows * (s + cap_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0), font=font)
    for n, (t, c) in enumerate(zip(tiles, captions)):
        i, j = divmod(n, cols)
        x, y = j * s, top + i * (s + cap_h)
        sheet.paste(Image.fromarray(np.clip(np.rint(t * 255), 0, 255).astype(np.uint8)), (x, y))
        draw.text((x + 2, y + s + 2), str(c)[: max(8, s // 6)], fill=(0, 0, 0), font=font)
    p = Path(path)
    sheet.save(p)
    return p


# ============================================================================================ report
def _pct(x, digits=2, missing="–") -> str:
    return missing if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}"


def _sec(x) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.1f}"


def write_report(run: dict, out_dir) -> dict:
    """Write report.md and results.json for an evaluation run into `out_dir` (created if needed).

    run: {"meta": {command, date, version, backend, landmarks_mode, fit options, folder, ...},
          "models": [{"tag", "name", "source", "points" (iBUG indices), "albedo", "rows" [per-image dicts
          with "index", "image", "annotation_format", "annotation_note", "status", "reason" and the metric
          keys of `evaluate_image`], "contact_sheet" (file name or None)}],
          "synthetic": optional {"models": [{"tag", "name", "rows", "summary", "face_vertices", ...}], ...}}
    NME values are fractions in the JSON and percentages in the Markdown. Returns {"report": Path,
    "json": Path}.
    """
    from ..io.images import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = run.get("meta", {})
    L = ["# mofa_tk evaluation report", ""]
    if meta.get("command"):
        L += ["Command:", "", "```", meta["command"], "```", ""]
    info = [f"{k}: {meta[k]}" for k in ("date", "mofa_tk", "backend", "torch_threads", "cpu_count", "folder",
                                        "landmarks_mode", "fit_options",
                                        "images_found", "limit") if k in meta]
    L += [f"- {x}" for x in info] + [""]
    models = run.get("models", [])
    if models:
        L += ["## Summary (2D landmarks)", "",
              "NME in % of the annotated outer-eye-corner distance (68-point) or of the eye-centre distance "
              "(5-point); `det` = the detector's landmarks (the fit's input in detect mode) on the same points; "
              "`inner49` = iBUG 17-67 without 60/64, the points every model has; time = fit time per image "
              "(landmark detection excluded).", "",
              "| model | images | fitted | failed (reasons) | NME68 mean / median | NME68 inner49 mean | "
              "NME68 det mean | NME5 mean / median | NME5 det mean | fit time mean s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for m in models:
            s = m["summary"]
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(s["failures"].items())) or "–"
            L.append(f"| {m['tag']} | {s['images']} | {s['fitted']} | {s['failed'] + s['skipped']} ({reasons}) | "
                     f"{_pct(s['nme']['mean'])} / {_pct(s['nme']['median'])} (n={s['nme']['n']}) | "
                     f"{_pct(s['nme_inner']['mean'])} | {_pct(s['nme_detector']['mean'])} | "
                     f"{_pct(s['nme5']['mean'])} / {_pct(s['nme5']['median'])} (n={s['nme5']['n']}) | "
                     f"{_pct(s['nme5_detector']['mean'])} | {_sec(s['fit_time']['mean'])} |")
        L += ["", "Landmarks evaluated and albedo per model:", ""]
        for m in models:
            L.append(f"- **{m['tag']}** ({m['name']}): {describe_points(m['points'])}; {m['albedo']}")
        L += ["", "## By annotation format", "",
              "| model | format | images | fitted | NME68 mean / median | NME68 bbox mean | NME68 det mean | "
              "NME5 mean | 3D err mean (fit / mean face) |", "|---|---|---|---|---|---|---|---|---|"]
        for m in models:
            for fmt, b in m["summary"]["by_format"].items():
                L.append(f"| {m['tag']} | {fmt} | {b['images']} | {b['fitted']} | {_pct(b['nme']['mean'])} / "
                         f"{_pct(b['nme']['median'])} | {_pct(b['nme_bbox']['mean'])} | "
                         f"{_pct(b['nme_detector']['mean'])} | {_pct(b['nme5']['mean'])} | "
                         f"{_pct(b['err3d']['mean'])} / {_pct(b['err3d_mean_face']['mean'])} |")
        L += ["", "Formats: " + "; ".join(f"`{k}` = {v}" for k, v in ANNOTATION_FORMATS.items()) + ".", ""]
        if any(m["summary"]["err3d"]["n"] for m in models):
            L += ["## 3D landmarks (AFLW2000-3D pt3d_68)", "",
                  "Fitted mesh's landmark vertices vs pt3d_68 after similarity alignment, mean error in % of the "
                  "3D outer-eye-corner distance; baseline = the model's mean face (zero code). 'model points' = "
                  "every landmark the model has (alignment and error on those); 'inner49' = iBUG 17-67 without "
                  "60/64 (alignment and error on those, the same points for every model).", "",
                  "| model | images | model points: fit mean / median | mean face mean / median | "
                  "inner49: fit mean / median | mean face mean / median |", "|---|---|---|---|---|---|"]
            for m in models:
                s = m["summary"]
                L.append(f"| {m['tag']} | {s['err3d']['n']} | {_pct(s['err3d']['mean'])} / "
                         f"{_pct(s['err3d']['median'])} | {_pct(s['err3d_mean_face']['mean'])} / "
                         f"{_pct(s['err3d_mean_face']['median'])} | {_pct(s['err3d_inner']['mean'])} / "
                         f"{_pct(s['err3d_inner']['median'])} | {_pct(s['err3d_inner_mean_face']['mean'])} / "
                         f"{_pct(s['err3d_inner_mean_face']['median'])} |")
            L.append("")
        for m in models:
            L += [f"## Per image: {m['tag']}", ""]
            if m.get("contact_sheet"):
                L += [f"Contact sheet: `{m['contact_sheet']}` (tile numbers = # below).", ""]
            L += ["| # | image | annotation | status | NME68 | NME68 det | NME5 | 3D err (mean face) | fit s |",
                  "|---|---|---|---|---|---|---|---|---|"]
            for r in m["rows"]:
                status = "ok" if r["status"] == "ok" else f"{r['status']}: {r.get('reason') or ''}"
                if r["status"] == "ok" and r.get("reason"):
                    status += f" ({r['reason']})"
                ann = r.get("annotation_format") or "–"
                if r.get("annotation_note"):
                    ann += f" (note: {r['annotation_note']})"
                e3 = "–" if not np.isfinite(r.get("err3d", np.nan)) else \
                    f"{_pct(r['err3d'])} ({_pct(r['err3d_mean_face'])})"
                L.append(f"| {r['index']} | {r['image']} | {ann.replace('|', '/')} | {status.replace('|', '/')} | "
                         f"{_pct(r.get('nme'))} | {_pct(r.get('nme_detector'))} | {_pct(r.get('nme5'))} | {e3} | "
                         f"{_sec(r.get('fit_time'))} |")
            L.append("")
    syn = run.get("synthetic")
    if syn:
        L += ["## Synthetic ground truth (3D)", "", syn.get("description", ""), "",
              "| model | samples | fitted | RMSE fit mean / median mm | RMSE mean face mean / median mm | "
              "RMSE all vertices fit / mean face mm | landmark stage only mm | fit time s |",
              "|---|---|---|---|---|---|---|---|"]
        for m in syn["models"]:
            s = m["summary"]
            L.append(f"| {m['tag']} | {s['samples']} | {s['fitted']} | {s['rmse']['mean']:.2f} / "
                     f"{s['rmse']['median']:.2f} | {s['rmse_mean_face']['mean']:.2f} / "
                     f"{s['rmse_mean_face']['median']:.2f} | {s['rmse_all']['mean']:.2f} / "
                     f"{s['rmse_all_mean_face']['mean']:.2f} | "
                     f"{s['rmse_landmarks_only']['mean']:.2f} | {_sec(s['fit_time']['mean'])} |")
        L += ["", "Face region per model: " + "; ".join(
            f"{m['tag']}: {m['face_vertices']} of {m['n_vertices']} vertices" for m in syn["models"]), ""]
    report = out / "report.md"
    report.write_text("\n".join(L) + "\n", encoding="utf-8")
    js = out / "results.json"
    clean = {"meta": meta,
             "models": [{k: v for k, v in m.items()} for m in models],
             "synthetic": syn}
    for m in clean["models"]:
        m["rows"] = [{k: v for k, v in r.items() if k != "result"} for r in m["rows"]]
    write_json(js, clean)
    return {"report": report, "json": js}


# ============================================================================================ synthetic
def face_region(model, radius_mm: float = FACE_RADIUS_MM, image_size: int = 512):
    """(V,) bool mask of the model's face region: vertices of the mean face that a frontal camera sees
    (`FaceDecoder` visibility of the zero code) within `radius_mm` of the nose-tip landmark (iBUG 30; the
    most forward visible vertex when the model has no such landmark). Excludes the back of the head, the
    mouth interior and eyeball backs of full-head models (ICT-FaceKit)."""
    import torch

    from ..face.decoder import FaceDecoder

    dec = FaceDecoder(model, image_size=image_size)
    with torch.no_grad():
        out = dec(dec.code.zeros(1))
    vis = out["visibility"][0].cpu().numpy()
    ms = model.mean_shape.detach().cpu().numpy().astype(np.float64)
    lm = np.asarray(model.landmarks.cpu())
    if lm[30] >= 0:
        tip = ms[lm[30]]
    else:
        tip = ms[vis][np.argmax(ms[vis, 2])]
    return vis & (np.linalg.norm(ms - tip, axis=1) <= radius_mm)


@dataclass
class SyntheticFace:
    """A rendered synthetic face with its ground truth.

    image: (S, S, 3) float32 [0, 1]; landmarks: (68, 2) float32 pixels (true projection + noise; NaN where the
    model has no landmark); verts_model: (V, 3) float32 mm (true shape + expression); code: (N,) float32 true
    code; focal (fx, fy) and principal (cx, cy) pixels of the camera that rendered it.
    """

    image: np.ndarray
    landmarks: np.ndarray
    verts_model: np.ndarray
    code: np.ndarray
    focal: tuple
    principal: tuple
    params: dict = field(default_factory=dict)


def synthetic_face(model, rng: np.random.Generator, *, image_size: int = 320, landmark_noise_px: float = 1.0,
                   max_yaw_deg: float = 35.0, image_noise: float = 0.01) -> SyntheticFace:
    """Sample a random face of `model` and render it with `FaceDecoder` over a noisy background.

    Sampling (coefficients in the model's std units): identity ~ N(0, 1) clipped to [-2.5, 2.5]; expression:
    for blendshape models (``model.meta['expression_names']``: SFM, ICT) 1-3 random blendshapes with weights
    U(0.2, 0.7), else N(0, 0.5); reflectance ~ N(0, 1) when the model has one; yaw U(+-max_yaw_deg), pitch
    U(+-15 deg), roll U(+-10 deg); translation x, y ~ N(0, 10) mm, z U(-80, 80) mm; SH illumination: ambient 1
    plus band-0 N(0, 0.1) (+ N(0, 0.05) per channel), band-1 N(0, 0.3), band-2 N(0, 0.1). Background: smooth
    random colours (8 x 8 grid upsampled) + pixel noise; Gaussian noise of std `image_noise` on the whole
    image. Landmarks: the decoder's projected landmark vertices + N(0, landmark_noise_px) per coordinate.
    """
    import torch
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    from ..face.decoder import FaceDecoder

    S = int(image_size)
    dec = FaceDecoder(model, image_size=S)
    layout = dec.code
    blocks = {k: torch.zeros(1, n) for k, n in layout.sizes.items()}
    yaw = rng.uniform(-max_yaw_deg, max_yaw_deg)
    pitch = rng.uniform(-15, 15)
    roll = rng.uniform(-10, 10)
    rv = Rotation.from_euler("YXZ", [yaw, pitch, roll], degrees=True).as_rotvec()
    blocks["rotation"][0] = torch.tensor(rv, dtype=torch.float32)
    blocks["translation"][0] = torch.tensor([rng.normal(0, 10), rng.normal(0, 10), rng.uniform(-80, 80)],
                                            dtype=torch.float32)
    if model.k_id:
        blocks["shape"][0] = torch.tensor(np.clip(rng.normal(0, 1, model.k_id), -2.5, 2.5), dtype=torch.float32)
    meta = getattr(model, "meta", None) or {}
    if model.k_exp:
        if meta.get("expression_names"):
            e = np.zeros(model.k_exp)
            idx = rng.choice(model.k_exp, size=min(model.k_exp, int(rng.integers(1, 4))), replace=False)
            e[idx] = rng.uniform(0.2, 0.7, len(idx))
        else:
            e = rng.normal(0, 0.5, model.k_exp)
        blocks["expression"][0] = torch.tensor(e, dtype=torch.float32)
    if model.k_alb:
        blocks["reflectance"][0] = torch.tensor(np.clip(rng.normal(0, 1, model.k_alb), -2.5, 2.5),
                                                dtype=torch.float32)
    sh = np.zeros((3, 9))
    sh[:, 0] = rng.normal(0, 0.1) + rng.normal(0, 0.05, 3)
    sh[:, 1:4] = rng.normal(0, 0.3, 3)[None] + rng.normal(0, 0.03, (3, 3))
    sh[:, 4:9] = rng.normal(0, 0.1, 5)[None] + rng.normal(0, 0.02, (3, 5))
    blocks["illumination"][0] = torch.tensor(sh.reshape(-1), dtype=torch.float32)
    code = layout.join(blocks)
    grid = rng.uniform(0.05, 0.95, (8, 8, 3))
    bg = ndimage.zoom(grid, (S / 8, S / 8, 1), order=1, mode="nearest", grid_mode=True)[:S, :S]
    bg = np.clip(bg + rng.normal(0, 0.04, bg.shape), 0, 1).astype(np.float32)
    with torch.no_grad():
        out = dec(code, background=torch.from_numpy(bg))
    img = out["image"][0].cpu().numpy()
    img = np.clip(img + rng.normal(0, image_noise, img.shape), 0, 1).astype(np.float32)
    lm = out["landmarks2d"][0].cpu().numpy().astype(np.float64)
    lm = (lm + rng.normal(0, landmark_noise_px, lm.shape)).astype(np.float32)
    from ..ops.geometry import morph

    with torch.no_grad():
        verts = morph(model, blocks["shape"], blocks["expression"])[0].cpu().numpy()
    return SyntheticFace(image=img, landmarks=lm, verts_model=verts.astype(np.float32),
                         code=code[0].cpu().numpy(), focal=dec.focal, principal=dec.principal,
                         params={"yaw_deg": yaw, "pitch_deg": pitch, "roll_deg": roll})


def evaluate_synthetic(model, n: int, *, seed: int = 0, fit_fn=None, fit_kwargs=None, image_size: int = 320,
                       landmark_noise_px: float = 1.0, region=None, progress=None) -> list:
    """Fit `n` synthetic faces of `model` (`synthetic_face`, generator seeded with `seed`) with the same model
    and measure 3D accuracy.

    The fit gets the true camera intrinsics (focal, principal) and the noisy landmarks. Per sample: point-to-
    point RMSE (mm) after rigid alignment between fitted and true model-space meshes over `region` (default
    `face_region(model)`), over all vertices, for the mean-face baseline (zero code), and for the fit's
    landmark-stage result (a second fit with 0 photometric iterations). `progress(i)` is called after each
    sample when given. Returns a list of per-sample dicts (rmse, rmse_all, rmse_mean_face, rmse_all_mean_face,
    rmse_landmarks_only, fit_time, status, reason, pose).
    """
    from ..fitting.pipeline import fit as _fit
    from .metrics import point_to_point_rmse

    fit_fn = fit_fn or _fit
    rng = np.random.default_rng(seed)
    region = face_region(model) if region is None else np.asarray(region, bool)
    mean = model.mean_shape.detach().cpu().numpy().astype(np.float64)
    rows = []
    for i in range(int(n)):
        sf = synthetic_face(model, rng, image_size=image_size, landmark_noise_px=landmark_noise_px)
        gt = sf.verts_model.astype(np.float64)
        row = {"sample": i, "status": "failed", "reason": None, "pose": sf.params,
               "rmse_mean_face": point_to_point_rmse(mean[region], gt[region]),
               "rmse_all_mean_face": point_to_point_rmse(mean, gt)}
        kw = dict(fit_kwargs or {})
        try:
            res = fit_fn(sf.image, model, landmarks=sf.landmarks, focal=sf.focal, principal=sf.principal,
                         progress=False, **kw)
            v = res.verts_model.detach().cpu().numpy().astype(np.float64)
            row.update(status="ok", fit_time=float(res.timings["total"]),
                       rmse=point_to_point_rmse(v[region], gt[region]), rmse_all=point_to_point_rmse(v, gt))
            kw0 = dict(kw)
            kw0["iters"] = {"photometric": 0}
            res0 = fit_fn(sf.image, model, landmarks=sf.landmarks, focal=sf.focal, principal=sf.principal,
                          progress=False, **kw0)
            v0 = res0.verts_model.detach().cpu().numpy().astype(np.float64)
            row["rmse_landmarks_only"] = point_to_point_rmse(v0[region], gt[region])
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            row["reason"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        rows.append(row)
        if progress is not None:
            progress(i)
    return rows


def summarize_synthetic(rows: list) -> dict:
    """{"samples", "fitted", and {"n", "mean", "median"} for rmse, rmse_all, rmse_mean_face,
    rmse_all_mean_face, rmse_landmarks_only (mm) and fit_time (s)} of `evaluate_synthetic` rows."""
    ok = [r for r in rows if r["status"] == "ok"]
    out = {"samples": len(rows), "fitted": len(ok)}
    for k in ("rmse", "rmse_all", "rmse_landmarks_only", "fit_time"):
        out[k] = _stats(r.get(k) for r in ok)
    for k in ("rmse_mean_face", "rmse_all_mean_face"):
        out[k] = _stats(r.get(k) for r in ok)  # the same samples as the fit, for a paired comparison
    return out


def summary_plot(run, path) -> Path | None:
    """Plot the summary of an evaluation run (no photos in it) as a PNG; needs matplotlib (else None).

    run: the dict given to `write_report`, or the path of a results.json it wrote.
    Panels, for what the run holds: cumulative distribution of the 68-point NME on the inner 49 points
    (fitted: solid per model; the detector's landmarks, the fits' input in detect mode: dotted); AFLW2000-3D 3D landmark error on the inner49 points (fit vs
    mean face) per model; synthetic point-to-point RMSE (fit, landmark stage only, mean face) per model.
    Returns the written path, or None when matplotlib is missing or there is nothing to plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if isinstance(run, (str, os.PathLike)):
        run = json.loads(Path(run).read_text(encoding="utf-8"))

    def vals(rows, key):
        return np.array([r[key] for r in rows if r.get("status") == "ok" and r.get(key) is not None
                         and np.isfinite(r[key])], np.float64)

    models = run.get("models") or []
    syn = (run.get("synthetic") or {}).get("models") or []
    panels = []
    if any(len(vals(m["rows"], "nme_inner")) for m in models):
        panels.append("nme")
    if any(len(vals(m["rows"], "err3d_inner")) for m in models):
        panels.append("3d")
    if syn:
        panels.append("syn")
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind in zip(axes[0], panels):
        if kind == "nme":
            def cdf(v, **kw):
                v = np.sort(v) * 100
                ax.step(np.r_[0.0, v], np.r_[0.0, np.arange(1, len(v) + 1) / len(v)], where="post", **kw)

            for c, m in zip(colors, models):
                v = vals(m["rows"], "nme_inner")
                if len(v):
                    cdf(v, color=c, label=f"{m['tag']} fit (n={len(v)})")
            d = []
            for r in (models[0]["rows"] if models else []):
                v = r.get("nme_detector_inner")
                if v is None and r.get("landmarks_detected") is not None and r.get("annotation_format") in \
                        ("pts68", "aflw2000_3d", "300w_lp", "ljson68"):  # results.json of an older run
                    v = nme68(np.asarray(r["landmarks_detected"], np.float64),
                              np.asarray(r["landmarks_annotation"], np.float64), INNER49)
                if v is not None and np.isfinite(v):
                    d.append(v)
            d = np.asarray(d)
            if len(d):
                cdf(d, color="k", ls=":", label="detector (the fits' input)")
            ax.set_xlabel("NME, inner 49 points, % of outer-eye-corner distance")
            ax.set_ylabel("fraction of photos with 68-point annotations")
            ax.set_xlim(0, 20)
            ax.set_title("2D landmarks vs annotation")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
        elif kind == "3d":
            tags = [m["tag"] for m in models]
            fit_ = [np.mean(vals(m["rows"], "err3d_inner")) * 100 if len(vals(m["rows"], "err3d_inner")) else np.nan
                    for m in models]
            base = [np.mean(vals(m["rows"], "err3d_inner_mean_face")) * 100
                    if len(vals(m["rows"], "err3d_inner_mean_face")) else np.nan for m in models]
            x = np.arange(len(tags))
            ax.bar(x - 0.2, fit_, 0.4, label="fitted mesh")
            ax.bar(x + 0.2, base, 0.4, label="mean face")
            ax.set_xticks(x, tags, fontsize=8)
            ax.set_ylabel("mean 3D error, % of 3D outer-eye-corner dist.")
            ax.set_title("AFLW2000-3D pt3d_68 (inner 49 points)")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, axis="y")
        else:
            tags = [m["tag"] for m in syn]
            x = np.arange(len(tags))
            for k, (key, lab) in enumerate((("rmse", "fit"), ("rmse_landmarks_only", "landmark stage only"),
                                            ("rmse_mean_face", "mean face"))):
                ax.bar(x + (k - 1) * 0.27, [m["summary"][key]["mean"] for m in syn], 0.27, label=lab)
            ax.set_xticks(x, tags, fontsize=8)
            ax.set_ylabel("point-to-point RMSE, mm (rigid alignment)")
            ax.set_title("synthetic faces, face region")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")

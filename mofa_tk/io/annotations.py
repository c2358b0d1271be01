"""Landmark annotations beside photos, read into mofa_tk pixel coordinates (used by `mofa eval`).

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
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from ..errors import InputError
from ..landmarks import read_landmarks
from .ljson import read_ljson_groups

__all__ = ["ANNOTATION_FORMATS", "Annotation", "read_pts68", "read_annotation_mat", "read_five_point_txt", "read_ljson",
           "find_annotation"]

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
    """Read a menpo LJSON file (v1-v3): the first landmark group with 68 points (in iBUG order: a group whose labels
    store the parts in another order is reordered, `io.ljson`).

    LJSON stores 2D points as (y, x) = (row, column) with integer pixel centres (menpo's convention);
    returns points (68, 2) float64 (u = x + 0.5, v = y + 0.5), null entries -> NaN. Raises
    FileNotFoundError / InputError naming the file.
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"annotation file not found: {p}")
    groups = read_ljson_groups(p)
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

"""Fits of rendered views of a real 3D scan, scored by the scan metric: a check of fitting choices on real
geometry that no choice was tuned on (docs/evaluation.md "Scan renders").

The scan becomes a fixed mesh (`scan_face_model`: no shape, expression or reflectance modes, one skin colour),
rendered like the MediaPipe map's views (`face.mediapipe_map.render_mean_face`: a light from the upper left
front over grey) at each (yaw, pitch); MediaPipe detects the face in each render, each model fits it, and
`evaluation.scan.scan_error` compares the fit and the model's mean face with the scan.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..face.mediapipe_map import render_mean_face
from ..face.model import FaceModel
from ..fitting.pipeline import fit as _fit
from ..landmarks import NoFaceFoundError
from .scan import landmark_positions, scan_error

__all__ = ["SCAN_VIEWS", "scan_face_model", "render_scan_views", "evaluate_scan_views"]

#: Default (yaw, pitch) degrees of the renders.
SCAN_VIEWS = ((0, 0), (-30, 0), (30, 0), (0, -15), (-50, 0))
_SKIN = (0.55, 0.38, 0.30)   # linear RGB reflectance of the untextured scan


def scan_face_model(verts, tris, landmarks) -> FaceModel:
    """A FaceModel of the scan itself: mean shape = the scan centred on its landmarks' mean (mm), no modes.

    Args:
        verts (V, 3), tris (T, 3): the scan in mm, x to the subject's left, y up, z towards the camera;
        landmarks (68, 3): its iBUG landmarks (NaN allowed), same frame.
    Returns:
        FaceModel named "scan" (``meta["centre"]``: the (3,) offset subtracted from the scan).
    """
    v = np.asarray(verts, np.float64)
    centre = np.nanmean(np.asarray(landmarks, np.float64), axis=0)
    n = len(v)
    zeros = torch.zeros(n, 3, 1)
    return FaceModel(mean_shape=torch.tensor(v - centre, dtype=torch.float32), shape_basis=zeros,
                     shape_std=torch.ones(1), expr_basis=zeros.clone(), expr_std=torch.ones(1),
                     albedo_mean=torch.tensor(_SKIN).expand(n, 3).clone(), albedo_basis=torch.zeros(n, 3, 0),
                     albedo_std=torch.zeros(0), triangles=torch.as_tensor(np.asarray(tris), dtype=torch.int32),
                     landmarks=torch.full((68,), -1, dtype=torch.int64), name="scan", meta={"centre": centre})


def render_scan_views(scan_model: FaceModel, views=SCAN_VIEWS, size: int = 512) -> list:
    """(size, size, 3) float32 renders of `scan_model` at each (yaw, pitch) of `views`, degrees."""
    return [render_mean_face(scan_model, float(yaw), float(pitch), size)[0].astype(np.float32)
            for yaw, pitch in views]


def evaluate_scan_views(models, verts, landmarks, images, settings, *, detect, max_points: int = 6000,
                        progress=None) -> list:
    """Fit every render with every model under every setting; scan error of each fit and of the mean face.

    Args:
        models: [(tag, FaceModel)]; verts (V, 3), landmarks (68, 3): the scan's points and landmarks (mm;
            `io.meshes.ibug68_landmarks`).
        images: renders (`render_scan_views`); settings: [(name, dict of `fit` keyword arguments)].
        detect: `landmarks.detect` (passed in: MediaPipe is optional), called as detect(img, return_mesh=True).
        max_points: scan points the metric uses (an even subsample of the scan's vertices, for speed).
        progress: optional callable(str) told about each fit.
    Returns:
        rows: {"model", "setting", "view" (index), "median" (mm), "mean_face" (mm: the model's mean face)}.
    Raises:
        InputError naming the view when MediaPipe finds no face in a render (a scan facing away from +z, or
        too small a crop of the head).
    """
    v = np.asarray(verts, np.float64)
    pts = v[:: max(1, len(v) // max_points)]
    detections = []
    for i, img in enumerate(images):
        try:
            detections.append(detect(img, return_mesh=True))
        except NoFaceFoundError:
            raise InputError(f"scan render {i + 1} of {len(images)}: MediaPipe found no face (is the scan's face "
                             "towards +z, with y up?)") from None
    rows = []
    for tag, model in models:
        tris_m = np.asarray(model.triangles.cpu(), np.int64)
        li = np.asarray(model.landmarks.cpu(), np.int64)
        mean = np.asarray(model.mean_shape.detach().cpu(), np.float64)
        base = scan_error(mean, tris_m, landmark_positions(mean, li), pts, landmarks)["median"]
        for name, kw in settings:
            for i, (img, (lm, mesh)) in enumerate(zip(images, detections)):
                if progress is not None:
                    progress(f"{tag} {name} view {i + 1}/{len(images)}")
                res = _fit(img, model, landmarks=lm, mesh_landmarks=mesh, progress=False, **kw)
                fv = np.asarray(res.verts_model.detach().cpu(), np.float64)
                med = scan_error(fv, tris_m, landmark_positions(fv, li), pts, landmarks)["median"]
                rows.append({"model": tag, "setting": name, "view": i, "median": med, "mean_face": base})
    return rows

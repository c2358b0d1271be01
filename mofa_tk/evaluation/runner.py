"""Evaluating fits photo by photo: the models to evaluate, one photo's row of metrics, and the summary over
rows (used by `mofa eval`, docs/evaluation.md)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..face.builtin import builtin_model
from ..io.models import load_model
from .landmarks import INNER49, aflw_gt_3d, five_from_68, landmark_3d_error, nme5, nme68
from .scan import landmark_positions, scan_error

__all__ = ["load_eval_model", "evaluate_image", "summarize", "stats", "albedo_note"]


def load_eval_model(spec: str):
    """'builtin' -> `builtin_model()`, else `load_model(spec)` (a model file or ICT FaceXModel folder).
    Returns (tag, FaceModel) with tag = 'builtin' or the file's stem / folder name (used in file names)."""
    if spec == "builtin":

        return "builtin", builtin_model()

    p = Path(os.fspath(spec))
    model = load_model(p)
    tag = p.stem if p.is_file() else p.name
    tag = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in tag) or "model"
    return tag, model


def albedo_note(model) -> str:
    if model.k_alb > 0:
        return f"{model.k_alb}-component reflectance model"
    a = model.albedo_mean.detach().cpu().numpy()
    if np.ptp(a) < 1e-6:
        return (f"no reflectance model: constant grey albedo {float(a.reshape(-1)[0]):.2f}; the photometric stage "
                f"fits pose, shape, expression and SH illumination")
    return "no reflectance model: fixed per-vertex albedo; the photometric stage fits illumination"


def _nan_list(a):
    if a is None:
        return None
    return np.asarray(a, np.float64).tolist()


def evaluate_image(fit_fn, image, model, points, *, annotation=None, landmarks=None, detected=None,
                   scale: float = 1.0, fit_kwargs=None, scan=None, mesh=None,
                   scan_protocol: str = "landmarks68") -> dict:
    """Fit one photo with one model and measure it; never raises (except KeyboardInterrupt).

    fit_fn:     `mofa_tk.fitting.pipeline.fit` (passed in so that a caller can time / replace it)
    image:      (H, W, 3) float32 working image in [0, 1] (`io.load_image(...).rgb`)
    model:      FaceModel; points = `model_landmark_points(model)`
    annotation: Annotation or None (file pixels)
    landmarks:  (68, 2) landmarks the fit starts from, in WORKING pixels (detected or annotated)
    detected:   (68, 2) detected landmarks in FILE pixels (for the detector's own NME), or None
    mesh:       (478, 2) or (478, 3) MediaPipe Face Mesh points in WORKING pixels (and relative z) for the fit's
                dense term, or None
    scale:      working pixels per file pixel (`LoadedImage.scale`)
    fit_kwargs: extra keyword arguments of `fit` (iters, size, optimizer, ...)
    scan:       `io.meshes.Scan` of the photo's face, or None: adds the NoW-style scan-to-mesh error
                (`evaluation.scan.scan_error`) of the fit, of the landmark stage and of the mean face:
                scan_median / scan_mean / scan_std (scan units), scan_median_eyes, and the _landmarks and
                _mean_face forms of scan_median
    scan_protocol: `scan_error`'s protocol, "landmarks68" or "now"

    Returns a dict: status ("ok" | "failed"), reason, fit_time (s), nme / nme_inner / nme_bbox /
    nme_detector / nme_detector_inner / nme5 / nme5_detector (fractions, NaN when not applicable), err3d /
    err3d_landmarks (after the landmark stage) / err3d_mean_face, and their _inner forms (AFLW2000-3D only), landmarks_fit (68, 2 list, file pixels), and "result" (the FitResult, for tiles;
    drop it before serialising).
    """
    row = {"status": "failed", "reason": None, "fit_time": float("nan"), "nme": float("nan"),
           "nme_inner": float("nan"), "nme_bbox": float("nan"), "nme_detector": float("nan"),
           "nme_detector_inner": float("nan"),
           "nme5": float("nan"), "nme5_detector": float("nan"), "err3d": float("nan"),
           "err3d_mean_face": float("nan"), "err3d_inner": float("nan"), "err3d_inner_mean_face": float("nan"),
           "err3d_landmarks": float("nan"), "err3d_inner_landmarks": float("nan"),
           "landmarks_fit": None, "result": None, "scan_median": float("nan"), "scan_mean": float("nan"),
           "scan_std": float("nan"), "scan_median_eyes": float("nan"), "scan_median_landmarks": float("nan"),
           "scan_median_mean_face": float("nan")}
    try:
        kw = dict(fit_kwargs or {})
        if mesh is not None:
            kw["mesh_landmarks"] = mesh
        res = fit_fn(image, model, landmarks=landmarks, progress=False, **kw)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded, never fatal: the run goes on with the next photo
        row["reason"] = f"fit failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        return row
    row["status"], row["result"] = "ok", res
    row["fit_time"] = float(res.timings.get("total", float("nan")))
    fitted = np.asarray(res.landmarks, np.float64) / scale
    row["landmarks_fit"] = fitted
    if scan is not None:
        try:
            _scan_rows(row, res, model, scan, scan_protocol)
        except InputError as exc:
            row["reason"] = f"scan metric not computed: {' '.join(str(exc).split())}"
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
                meshes = [("err3d", res.verts_model), ("err3d_mean_face", model.mean_shape)]
                if "landmarks" in res.stage_codes:
                    meshes.append(("err3d_landmarks", res.verts_at("landmarks")))
                for key, verts in meshes:
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


def stats(values) -> dict:
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
    out["fit_time"] = stats(r["fit_time"] for r in ok)
    keys = ("nme", "nme_inner", "nme_bbox", "nme_detector", "nme_detector_inner", "nme5", "nme5_detector", "err3d",
            "err3d_mean_face", "err3d_landmarks", "err3d_inner", "err3d_inner_mean_face", "err3d_inner_landmarks",
            "scan_median", "scan_mean", "scan_std", "scan_median_eyes", "scan_median_landmarks", "scan_median_mean_face")
    for k in keys:
        out[k] = stats(r.get(k) for r in ok)
    by = {}
    for fmt in sorted({r.get("annotation_format") or "none" for r in rows}):
        sub = [r for r in rows if (r.get("annotation_format") or "none") == fmt]
        subok = [r for r in sub if r["status"] == "ok"]
        by[fmt] = {"images": len(sub), "fitted": len(subok)}
        for k in keys:
            by[fmt][k] = stats(r.get(k) for r in subok)
    out["by_format"] = by
    return out


def _scan_rows(row, res, model, scan, protocol: str) -> None:
    """The scan metric of the fit, of the landmark stage and of the mean face, into `row`."""
    tris = np.asarray(model.triangles.cpu(), np.int64)
    lm_idx = np.asarray(model.landmarks.cpu(), np.int64)
    meshes = [("", res.verts_model), ("_mean_face", model.mean_shape)]
    if "landmarks" in res.stage_codes:
        meshes.append(("_landmarks", res.verts_at("landmarks")))
    for suffix, verts in meshes:
        v = np.asarray(verts.detach().cpu(), np.float64)
        out = scan_error(v, tris, landmark_positions(v, lm_idx), scan.verts, scan.landmarks, protocol=protocol)
        row["scan_median" + suffix] = out["median"]
        if not suffix:
            row.update(scan_mean=out["mean"], scan_std=out["std"], scan_median_eyes=out["median_eyes"])


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

"""Synthetic ground truth for `mofa eval --synthetic`: faces rendered from known codes, fitted, and scored by
point-to-point RMSE in mm after rigid alignment over the model's face region."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..face.decoder import FaceDecoder
from ..ops.geometry import morph
from ..fitting.pipeline import fit as _fit
from .metrics import point_to_point_rmse
from .runner import stats

__all__ = ["FACE_RADIUS_MM", "face_region", "SyntheticFace", "synthetic_face", "evaluate_synthetic",
           "summarize_synthetic"]

#: Radius (mm) around the nose-tip landmark that bounds the face region of the synthetic 3D metric.
FACE_RADIUS_MM = 95.0


def face_region(model, radius_mm: float = FACE_RADIUS_MM, image_size: int = 512):
    """(V,) bool mask of the model's face region: vertices of the mean face that a frontal camera sees
    (`FaceDecoder` visibility of the zero code) within `radius_mm` of the nose-tip landmark (iBUG 30; the
    most forward visible vertex when the model has no such landmark). Excludes the back of the head, the
    mouth interior and eyeball backs of full-head models (ICT-FaceKit)."""


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
    `face_region(model)`), over all vertices, for the mean-face baseline (zero code), and for the mesh after the
    fit's landmark stage (`FitResult.verts_at("landmarks")`). `progress(i)` is called after each
    sample when given. Returns a list of per-sample dicts (rmse, rmse_all, rmse_mean_face, rmse_all_mean_face,
    rmse_landmarks_only, fit_time, status, reason, pose).
    """

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
            if "landmarks" in res.stage_codes:
                v0 = res.verts_at("landmarks").cpu().numpy().astype(np.float64)
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
        out[k] = stats(r.get(k) for r in ok)
    for k in ("rmse_mean_face", "rmse_all_mean_face"):
        out[k] = stats(r.get(k) for r in ok)  # the same samples as the fit, for a paired comparison
    return out

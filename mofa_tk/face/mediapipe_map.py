"""Where MediaPipe's 478 Face Mesh points lie on a face model: a fixed vertex per point, built once per model.

MediaPipe's Face Mesh regresses a 3D mesh of fixed topology, so each of its points behaves like a fixed
vertex of a face, on the far side of a turned face too (measured: on the built-in mean face turned 40-55
degrees, its jaw points are 12-16 px from the fixed jaw vertices and 19-29 px from the outline, at 448 px).
That is what makes the dense term of `fit` possible: the fit's vertex for MediaPipe point i is
`MediaPipeMap.vertices[i]`.

No MediaPipe canonical mesh ships in the wheel, so the map is measured on the model itself: the model's mean
face is rendered under a directional light (grey for models without reflectance) at `VIEWS` (yaw and pitch in
degrees), MediaPipe runs on each render, and each detected point is traced back through the rasterizer
(triangle id and barycentrics at its pixel) to a model-space point of the mean face. Per point, the median of
those points over the views that see it away from the outline is snapped to the nearest vertex. The spread of
a point over the views (`spread`, mm) says how consistently MediaPipe places it on this face.

Per-point weights (`weight`) follow MediaPipe's own regions (`REGION_WEIGHTS`): the iris points are left out
(MediaPipe's iris model, not the mesh; the models have no iris), points that no view traced get 0.

`mediapipe_map(model)` caches the map in memory per model and on disk (`cache_dir()`, keyed by a hash of the
mean face, triangles and landmarks), so MediaPipe renders a model once per machine.
"""
from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .model import ModelCache

__all__ = ["MediaPipeMap", "mediapipe_map", "build_mediapipe_map", "render_mean_face", "VIEWS", "REGION_WEIGHTS",
           "cache_dir", "N_POINTS"]

N_POINTS = 478
#: (yaw, pitch) degrees of the renders the map is measured on.
VIEWS = ((0, 0), (-20, 0), (20, 0), (0, -12), (0, 12), (-35, 0), (35, 0))
#: Weight of each MediaPipe region in the dense term (regions of `mediapipe.solutions.face_mesh_connections`;
#: "other" = every remaining point of the 468-point mesh).
REGION_WEIGHTS = {"irises": 0.0, "oval": 1.0, "lips": 1.0, "eyes": 1.0, "brows": 1.0, "nose": 1.0, "other": 1.0}
_SIZE = 512
_VERSION = 1                      # bump when the build procedure changes (old cache files are then ignored)
_MEMO = ModelCache()


@dataclass(frozen=True)
class MediaPipeMap:
    """vertices: (478,) int64 model vertex per MediaPipe point (-1: not traced); weight: (478,) float32 per-point
    weight of the dense term; spread: (478,) float32 mm, median distance of a point's per-view positions
    from their median (NaN where not traced); views: (478,) int32 how many views traced the point."""

    vertices: torch.Tensor
    weight: torch.Tensor
    spread: torch.Tensor
    views: torch.Tensor


def cache_dir() -> Path:
    """Folder of the on-disk cache: $MOFA_TK_CACHE_DIR, else $XDG_CACHE_HOME/mofa_tk, else ~/.cache/mofa_tk."""
    d = os.environ.get("MOFA_TK_CACHE_DIR")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mofa_tk"


def _fingerprint(model) -> str:
    h = hashlib.sha1(f"v{_VERSION}".encode())
    for t in (model.mean_shape, model.triangles, model.landmarks):
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    return h.hexdigest()[:16]


def mediapipe_map(model, *, cache: bool = True) -> MediaPipeMap:
    """The map of `model` (built with `build_mediapipe_map` on first use, then cached in memory and on disk).
    Needs MediaPipe on first use for a model (`landmarks.LandmarkDetectorUnavailableError` otherwise)."""
    m = _MEMO.get(model)
    if m is not None:
        return m
    path = cache_dir() / f"mediapipe_map_{_fingerprint(model)}.npz"
    m = None
    if cache and path.is_file():
        try:
            with np.load(path) as z:
                m = MediaPipeMap(*(torch.from_numpy(z[k]) for k in ("vertices", "weight", "spread", "views")))
        except (OSError, ValueError, KeyError):
            m = None                                            # a damaged cache file is rebuilt
    if m is None:
        m = build_mediapipe_map(model)
        if cache:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
                np.savez(tmp, vertices=m.vertices.numpy(), weight=m.weight.numpy(), spread=m.spread.numpy(),
                         views=m.views.numpy())
                os.replace(tmp, path)
            except OSError:
                pass                                            # no writable cache: rebuilt next time
    if not float(m.weight.sum()) > 0:
        warnings.warn(f"MediaPipe found no face on the renders of {model.name!r}'s mean face (face.mediapipe_map): "
                      "the dense and depth terms do nothing for this model; its fits use the 68 landmarks only",
                      RuntimeWarning, stacklevel=2)
    _MEMO.put(model, m)
    return m


def _regions() -> np.ndarray:
    from mediapipe.python.solutions import face_mesh_connections as fmc

    w = np.full(N_POINTS, REGION_WEIGHTS["other"], np.float32)
    sets = {"oval": fmc.FACEMESH_FACE_OVAL, "lips": fmc.FACEMESH_LIPS,
            "eyes": fmc.FACEMESH_LEFT_EYE | fmc.FACEMESH_RIGHT_EYE,
            "brows": fmc.FACEMESH_LEFT_EYEBROW | fmc.FACEMESH_RIGHT_EYEBROW, "nose": fmc.FACEMESH_NOSE}
    for name, edges in sets.items():
        w[sorted({i for e in edges for i in e})] = REGION_WEIGHTS[name]
    w[468:] = REGION_WEIGHTS["irises"]
    return w


@torch.no_grad()
def render_mean_face(model, yaw: float, pitch: float, size: int = _SIZE):
    """The model's mean face at (yaw, pitch) degrees under a light from the upper left front, over grey.
    Returns (image (size, size, 3) float sRGB-ish in [0, 1], Render)."""
    from .decoder import FaceDecoder

    dec = FaceDecoder(model, image_size=size)
    code = dec.code.zeros(1)
    bl = dec.code.split(code)
    bl["rotation"][0, 0] = math.radians(pitch)
    bl["rotation"][0, 1] = math.radians(yaw)
    sh = bl["illumination"][0].view(3, 9)
    sh[:, 1] += 0.25                                           # y: from above
    sh[:, 2] += 0.3                                            # z: from the front
    sh[:, 3] += 0.15                                           # x: from the side
    out = dec(code, background=torch.full((1, size, size, 3), 0.3))
    img = out["image"][0].clamp(0, 1).numpy() ** (1 / 2.2)
    return img, out


def build_mediapipe_map(model) -> MediaPipeMap:
    """Measure the map of `model` (module docstring): MediaPipe on renders of the mean face at `VIEWS`."""
    from ..landmarks import NoFaceFoundError, detect

    weight = _regions()
    ms = model.mean_shape.detach().cpu().numpy().astype(np.float64)
    tri = model.triangles.detach().cpu().numpy().astype(np.int64)
    hits = [[] for _ in range(N_POINTS)]
    for yaw, pitch in VIEWS:
        img, out = render_mean_face(model, yaw, pitch)
        try:
            _, mesh = detect(img, return_mesh=True)
        except NoFaceFoundError:
            continue
        rast = out["rast"][0].numpy()
        mask = rast[..., 3] > 0
        H, W = mask.shape
        # away from the outline: the whole 5 x 5 neighbourhood is covered
        inner = mask.copy()
        for dv in range(-2, 3):
            for du in range(-2, 3):
                inner &= np.roll(np.roll(mask, dv, 0), du, 1)
        for i in range(N_POINTS):
            u, v = int(math.floor(mesh[i, 0])), int(math.floor(mesh[i, 1]))
            if not (0 <= u < W and 0 <= v < H) or not inner[v, u]:
                continue
            b0, b1, _, tid = rast[v, u]
            t = tri[int(round(tid)) - 1]
            p = b0 * ms[t[0]] + b1 * ms[t[1]] + (1.0 - b0 - b1) * ms[t[2]]
            hits[i].append(p)
    used = np.unique(tri.reshape(-1))
    verts = np.full(N_POINTS, -1, np.int64)
    spread = np.full(N_POINTS, np.nan, np.float32)
    views = np.zeros(N_POINTS, np.int32)
    for i, h in enumerate(hits):
        if not h:
            continue
        h = np.asarray(h)
        med = np.median(h, axis=0)
        verts[i] = used[np.argmin(np.linalg.norm(ms[used] - med, axis=1))]
        spread[i] = float(np.median(np.linalg.norm(h - med, axis=1)))
        views[i] = len(h)
    weight = np.where(verts >= 0, weight, 0.0).astype(np.float32)
    return MediaPipeMap(torch.from_numpy(verts), torch.from_numpy(weight), torch.from_numpy(spread),
                        torch.from_numpy(views))

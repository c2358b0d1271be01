"""Jaw contour (silhouette) landmarks: the 16 jaw points of iBUG-68 (all but the chin, 8) slide along the face.

A person annotating a turned face, and a landmark detector trained on such annotations, puts the jaw points on
the face's outline, which on the side turned away is a different part of the face for every pose; a fixed
vertex per jaw point pulls the fit's cheek outwards to meet it (depth bent to explain an outline). Following
eos's model contours, each jaw point gets a line of candidate vertices, derived once from the mean face:

* the horizontal slab (model space, y up) at the jaw point's height, on its side of the face, from the jaw
  point's own vertex (the frontal outline; for a model without jaw landmarks, the outermost vertex of the slab)
  inwards to 30 % of its distance to the midline (the nose and mouth never enter) and not behind it;
* for the current pose, the jaw point is the candidate whose projection lies furthest outwards along the
  image direction of the model's x axis on that side: the outline of the slab's curve. On the side turned
  towards the camera that is the jaw point's own vertex (everything else on the line lies inwards), on the
  side turned away it slides towards the front as the yaw grows.

`model_contour(model)` builds the lines (cached per model); `Contour.assign` picks the vertices for a pose.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..face.model import ModelCache

__all__ = ["JAW", "Contour", "model_contour", "JAW_HEIGHTS"]

#: iBUG-68 jaw points (0-based) that slide; the chin (8) keeps its vertex.
JAW = tuple(range(0, 8)) + tuple(range(9, 17))
#: Height of each jaw point (0-16) between the chin (0) and the outer eye corners (1) on the built-in model's
#: mean face; used for models that have no jaw landmarks (the Surrey model).
JAW_HEIGHTS = (0.916, 0.766, 0.615, 0.465, 0.333, 0.201, 0.12, 0.04, 0.0, 0.04, 0.12, 0.201, 0.333, 0.465,
               0.615, 0.766, 0.916)
#: Candidates reach inwards to this fraction of the jaw point's distance from the midline.
INNER_LIMIT = 0.3

_CACHE = ModelCache()


@dataclass(frozen=True)
class Contour:
    """Candidate lines of the 16 sliding jaw points of one model.

    landmarks:  (16,) int64 iBUG indices (`JAW`)
    candidates: (16, M) int64 vertex indices, outermost first, padded with -1
    side:       (16,) float32, +1 / -1: the model-space x direction pointing away from the face's midline
    anchors:    (16,) int64 the frontal outline vertex of each line (its first candidate)
    """

    landmarks: torch.Tensor
    candidates: torch.Tensor
    side: torch.Tensor
    anchors: torch.Tensor

    @property
    def vertices(self) -> torch.Tensor:
        """(N,) int64 the distinct candidate vertices (for evaluating only those)."""
        c = self.candidates
        return torch.unique(c[c >= 0])

    def assign(self, points_2d: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """The jaw vertices for a pose.

        points_2d: (16, M, 2) float pixels (u right, v down): the projections of `candidates` (padding rows
                   ignored), e.g. `verts_2d[candidates.clamp(min=0)]`
        R:         (3, 3) model-to-camera rotation
        Returns (16,) int64 vertex indices: per line, the candidate projected furthest along the image
        direction of side * (model x axis).
        """
        axis = R[:, 0].to(points_2d.dtype)                        # model x axis in camera space (x right, y up)
        d = torch.stack([axis[0], -axis[1]])                      # in pixels (v down)
        d = d / d.norm().clamp(min=1e-12)
        score = (points_2d @ d) * self.side.to(points_2d.dtype)[:, None]
        score = torch.where(self.candidates >= 0, score, torch.full_like(score, -float("inf")))
        best = score.argmax(dim=1)
        return self.candidates.gather(1, best[:, None])[:, 0]


def model_contour(model) -> Contour | None:
    """The jaw contour of `model` (cached per model object), or None when the model lacks the chin (8) or
    the outer eye corners (36, 45) that place the lines."""
    c = _CACHE.get(model)
    if c is None:
        c = _build(model)
        _CACHE.put(model, c)
    return c


def _build(model) -> Contour | None:
    lm = model.landmarks.detach().cpu().numpy().astype(np.int64)
    if lm[8] < 0 or lm[36] < 0 or lm[45] < 0:
        return None
    ms = model.mean_shape.detach().cpu().numpy().astype(np.float64)
    tri = model.triangles.detach().cpu().numpy().astype(np.int64)
    used = np.zeros(len(ms), bool)
    used[tri.reshape(-1)] = True                                   # vertices of no triangle are never outline
    edge = np.median(np.linalg.norm(ms[tri[:, 0]] - ms[tri[:, 1]], axis=1))
    slab = max(1.0, 0.75 * float(edge))                           # half thickness, mm
    x_mid = 0.5 * (ms[lm[36], 0] + ms[lm[45], 0])
    y_eye = 0.5 * (ms[lm[36], 1] + ms[lm[45], 1])
    y_chin = ms[lm[8], 1]
    cands, sides, anchors = [], [], []
    for j in JAW:
        s = np.sign(ms[lm[36 if j < 8 else 45], 0] - x_mid)
        y = ms[lm[j], 1] if lm[j] >= 0 else y_chin + JAW_HEIGHTS[j] * (y_eye - y_chin)
        out = s * (ms[:, 0] - x_mid)                               # distance outwards from the midline
        in_slab = used & (np.abs(ms[:, 1] - y) <= slab) & (out > 0)
        if lm[j] >= 0:
            a = int(lm[j])
        else:
            if not in_slab.any():
                return None
            pool = np.flatnonzero(in_slab)
            a = int(pool[np.argmax(out[pool])])
        line = in_slab & (out <= out[a] + slab) & (out >= INNER_LIMIT * out[a]) & (ms[:, 2] >= ms[a, 2] - slab)
        line[a] = True
        idx = np.flatnonzero(line)
        idx = idx[np.argsort(-out[idx], kind="stable")]
        idx = np.concatenate([[a], idx[idx != a]])
        cands.append(idx)
        sides.append(s)
        anchors.append(a)
    M = max(len(c) for c in cands)
    table = np.full((len(JAW), M), -1, np.int64)
    for i, c in enumerate(cands):
        table[i, :len(c)] = c
    return Contour(torch.tensor(JAW, dtype=torch.int64), torch.from_numpy(table),
                   torch.tensor(sides, dtype=torch.float32), torch.tensor(anchors, dtype=torch.int64))

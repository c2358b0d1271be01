"""Sliding jaw (contour) landmarks: `mofa_tk.fitting.contour`.

References: a brute-force silhouette search over every edge of the mesh (an edge is on the outline when one of
its triangles faces the camera and the other faces away), and synthetic faces whose jaw landmarks are placed on
that outline, as an annotator places them, fitted with sliding and with fixed jaw vertices.
"""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

import mofa_tk
from mofa_tk.evaluation import metrics
from mofa_tk.evaluation.synthetic import face_region
from mofa_tk.face.decoder import FaceDecoder
from mofa_tk.fitting import fit
from mofa_tk.fitting.contour import JAW, model_contour




def _pose(dec, yaw, pitch=0.0, shape=None):
    code = dec.code.zeros(1)
    b = dec.code.split(code)
    b["rotation"][0] = torch.tensor(Rotation.from_euler("YXZ", [yaw, pitch, 0.0], degrees=True).as_rotvec(),
                                    dtype=torch.float32)
    if shape is not None:
        b["shape"][0] = torch.as_tensor(shape, dtype=torch.float32)
    return code


def brute_force_outline(model, verts_model, verts_cam, verts_2d, R):
    """Per jaw line: the outline vertex found from the whole mesh, independently of the candidate lines.

    Silhouette edges: every edge of the mesh whose two triangles face opposite ways as seen from the camera
    (camera space, camera at the origin). Per jaw point: among the silhouette-edge vertices in the same slab
    of the model (height, side, in front of the frontal outline vertex, outside 30 % of its distance to the
    midline), the one projected furthest outwards (image direction of the model's x axis on that side).
    Returns (16,) int64 vertex indices (-1 where the slab holds no silhouette edge)."""
    tri = model.triangles.numpy().astype(np.int64)
    x = verts_cam.astype(np.float64)
    n = np.cross(x[tri[:, 1]] - x[tri[:, 0]], x[tri[:, 2]] - x[tri[:, 0]])
    front = (n * x[tri].mean(1)).sum(-1) < 0
    edges = {}
    for f, t in enumerate(tri):
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            edges.setdefault((min(a, b), max(a, b)), []).append(f)
    sil = np.zeros(len(x), bool)
    for (a, b), fs in edges.items():
        if len(fs) == 2 and front[fs[0]] != front[fs[1]]:
            sil[a] = sil[b] = True
    c = model_contour(model)
    ms = verts_model.astype(np.float64)
    lm = model.landmarks.numpy()
    x_mid = 0.5 * (ms[lm[36], 0] + ms[lm[45], 0])
    e = np.median(np.linalg.norm(ms[tri[:, 0]] - ms[tri[:, 1]], axis=1))
    slab = max(1.0, 0.75 * e)
    d = np.array([R[0, 0], -R[1, 0]])
    d /= np.linalg.norm(d)
    out = np.full(len(JAW), -1, np.int64)
    for i, j in enumerate(JAW):
        a = int(c.anchors[i])
        s = float(c.side[i])
        o = s * (ms[:, 0] - x_mid)
        m = sil & (np.abs(ms[:, 1] - ms[a, 1]) <= slab) & (o >= 0.3 * o[a]) & (o <= o[a] + slab) \
            & (ms[:, 2] >= ms[a, 2] - slab)
        if m.any():
            idx = np.flatnonzero(m)
            out[i] = idx[np.argmax(s * (verts_2d[idx] @ d))]
    return out


def test_contour_lines_of_the_builtin_model(model):
    c = model_contour(model)
    assert c.candidates.shape[0] == 16 and torch.equal(c.landmarks, torch.tensor(JAW))
    # the frontal outline vertex of each line is the model's own jaw landmark; sides mirror
    assert torch.equal(c.anchors, model.landmarks[list(JAW)])
    assert torch.equal(c.candidates[:, 0], c.anchors)
    assert (c.side[:8] == -c.side[8:]).all()
    assert int((c.candidates >= 0).sum(1).min()) >= 10


@pytest.mark.parametrize("yaw", [0, 30, -30, 60, -60])
def test_assignment_matches_a_brute_force_silhouette_search(cpu, model, yaw):
    """On the side turned away, the assigned jaw vertex is the outline found by the brute-force search over
    the mesh's silhouette edges, within 1.5 edge lengths (in pixels); frontal, on both sides, and within 2 edge
    lengths of the jaw point's own vertex."""
    rng = np.random.default_rng(yaw + 100)
    dec = FaceDecoder(model, image_size=512)
    code = _pose(dec, yaw, pitch=5.0, shape=rng.uniform(-1, 1, model.k_id))
    with torch.no_grad():
        g = dec.geometry(code)
    c = model_contour(model)
    v2 = g.verts_2d[0]
    got = c.assign(v2[c.candidates.clamp(min=0)], g.rotation[0]).numpy()
    ref = brute_force_outline(model, g.verts[0].numpy(), g.verts_cam[0].numpy(), v2.numpy().astype(np.float64),
                              g.rotation[0].numpy().astype(np.float64))
    v2n = v2.numpy()
    tri = model.triangles.numpy()
    edge_px = np.median(np.linalg.norm(v2n[tri[:, 0]] - v2n[tri[:, 1]], axis=1))
    if yaw == 0:                                   # frontal: every jaw point at (or next to) its own vertex
        a = c.anchors.numpy()
        assert (np.linalg.norm(v2n[got] - v2n[a], axis=1) <= 2.0 * edge_px).all()
        return
    far = np.asarray(c.side) * np.sign(yaw) > 0      # yaw > 0 turns the model's +x side away from the camera
    checked = 0
    for i in np.flatnonzero(far & (ref >= 0)):
        dist = float(np.linalg.norm(v2n[got[i]] - v2n[ref[i]]))
        assert dist <= 2.0 * edge_px, (i, dist, edge_px)
        checked += 1
    assert checked >= 6                                # most far-side lines cross the silhouette
    moved = int((got != c.anchors.numpy()).sum())
    assert moved >= (4 if abs(yaw) == 30 else 6), moved


def _fit_3d(model, region, yaw, seed, contour):
    """Landmark-stage fit of a synthetic face at `yaw` whose jaw landmarks lie on its outline (brute force)."""
    rng = np.random.default_rng(seed)
    dec = FaceDecoder(model, image_size=320)
    code = _pose(dec, yaw, pitch=rng.uniform(-8, 8), shape=np.clip(rng.normal(0, 1, model.k_id), -2, 2))
    with torch.no_grad():
        out = dec(code, background=torch.full((1, 320, 320, 3), 0.4))
    g = out.geometry
    lm = g.landmarks2d[0].numpy().copy()
    ref = brute_force_outline(model, g.verts[0].numpy(), g.verts_cam[0].numpy(),
                              g.verts_2d[0].numpy().astype(np.float64), g.rotation[0].numpy().astype(np.float64))
    for i, j in enumerate(JAW):
        if ref[i] >= 0:
            lm[j] = g.verts_2d[0, ref[i]].numpy()
    res = fit(out["image"][0].numpy(), model, landmarks=lm, progress=False, focal=dec.focal,
              principal=dec.principal, iters={"photometric": 0}, contour=contour)
    return metrics.point_to_point_rmse(res.verts_model.numpy()[region], g.verts[0].numpy()[region], "rigid")


def test_sliding_contour_beats_fixed_jaw_vertices_on_turned_faces(cpu, model):
    """Synthetic faces at 0 / 30 / 60 degrees yaw, jaw landmarks on the outline (as annotated): the face-region
    3D error of the landmark stage with sliding jaw points is below the fixed-vertex fit at 30 and 60 degrees
    and no worse frontally."""
    region = face_region(model)
    errs = {}
    for yaw in (0, 30, 60):
        rows = [(_fit_3d(model, region, s * yaw, 10 + k, True), _fit_3d(model, region, s * yaw, 10 + k, False))
                for k, s in enumerate((1, -1))]
        errs[yaw] = np.mean(rows, axis=0)
    # measured (mm, mean of the two faces, sliding / fixed): 0 deg 3.50 / 3.51, 30 deg 3.18 / 3.34, 60 deg
    # 3.00 / 4.79 (docs/fitting.md)
    assert errs[0][0] <= errs[0][1] * 1.02, errs
    assert errs[30][0] < errs[30][1], errs
    assert errs[60][0] < 0.8 * errs[60][1], errs

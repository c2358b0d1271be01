"""Scan-to-mesh error of a fitted face against a 3D scan, after the NoW benchmark's protocol.

NoW (Sanyal et al., CVPR 2019) aligns the predicted mesh to the scan with a similarity transform estimated from
7 corresponding landmarks (eye corners, nose bottom, mouth corners), refines it by ICP, and reports the distance
from each scan point in the face region to the closest point of the predicted surface: median, mean and
standard deviation. `scan_error` aligns by the 68 iBUG landmarks (those the model has), keeps the landmarks'
scale during ICP (rotation and translation only; NoW's ICP refines the scale too), and takes the scan points
within `radius` of the scan's nose-tip landmark (iBUG 30; NoW centres its crop between the nose bottom and the
inner eye corners). Its figures are therefore close to, not equal to, NoW's. Distances are in the scan's units (mm for
NoW and REALY scans) and also given relative to the scan's outer-eye-corner distance (iBUG 36-45).

Plain NumPy / SciPy in float64. Closest points on the mesh: the triangles around the nearest vertices and
centroids (a k-d tree) are tested exactly (Ericson's closest point on a triangle).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..errors import InputError
from ..io.meshes import NOW7
from ..mesh import vertex_face_adjacency

__all__ = ["closest_points_on_mesh", "vertex_faces", "landmark_positions", "similarity_transform", "now_region", "NOW7",
           "align_to_scan", "scan_error", "SCAN_RADIUS_EYES"]

#: Default face-region radius around the nose tip, in outer-eye-corner distances of the scan (about 100 mm).
SCAN_RADIUS_EYES = 1.1


def _closest_on_triangles(p, a, b, c):
    """Closest points (n, 3) on triangles (a, b, c) (each (n, 3)) to points p (n, 3) (Ericson, RTCD 5.1.5)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    bp = p - b
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    cp = p - c
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    out = np.empty_like(p)
    done = np.zeros(len(p), bool)

    def put(mask, value):
        m = mask & ~done
        out[m] = value[m] if value.ndim == 2 else value
        done[:] |= m

    with np.errstate(divide="ignore", invalid="ignore"):
        put((d1 <= 0) & (d2 <= 0), a)                                                   # vertex a
        put((d3 >= 0) & (d4 <= d3), b)                                                  # vertex b
        put((d6 >= 0) & (d5 <= d6), c)                                                  # vertex c
        put((vc <= 0) & (d1 >= 0) & (d3 <= 0), a + ab * (d1 / (d1 - d3))[:, None])      # edge ab
        put((vb <= 0) & (d2 >= 0) & (d6 <= 0), a + ac * (d2 / (d2 - d6))[:, None])      # edge ac
        put((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0),
            b + (c - b) * ((d4 - d3) / ((d4 - d3) + (d5 - d6)))[:, None])               # edge bc
        denom = 1.0 / (va + vb + vc)
        put(np.ones(len(p), bool), a + ab * (vb * denom)[:, None] + ac * (vc * denom)[:, None])   # inside
    return out


def vertex_faces(tris, n_vertices: int) -> np.ndarray:
    """(V, d) int64: the faces around each vertex (d the largest count), padded with -1 (`Mesh`'s adjacency)."""
    start, corner = vertex_face_adjacency(torch.as_tensor(np.asarray(tris, np.int64)), n_vertices)
    start, faces = start.numpy().astype(np.int64), corner.numpy().astype(np.int64) // 3
    counts = np.diff(start)
    inc = np.full((n_vertices, max(1, int(counts.max(initial=0)))), -1, np.int64)
    rows = np.repeat(np.arange(n_vertices), counts)
    inc[rows, np.arange(len(faces)) - start[rows]] = faces
    return inc


def closest_points_on_mesh(points, verts, tris, k: int = 16, incidence=None):
    """Closest points of a triangle mesh to query points.

    Args:
        points: (n, 3) query points; verts: (V, 3) and tris: (T, 3) the mesh.
        k: candidate triangles per point from the k-d tree of triangle centroids.
        incidence: `vertex_faces(tris, V)`, when the caller has it (the ICP reuses it).
    Returns:
        (distance (n,), closest point (n, 3)) float64.
    """
    p = np.asarray(points, np.float64)
    v = np.asarray(verts, np.float64)
    t = np.asarray(tris, np.int64)
    if not len(t):
        raise InputError("mesh: no triangles")
    inc = vertex_faces(t, len(v)) if incidence is None else incidence
    _, near_tri = cKDTree(v[t].mean(1)).query(p, k=min(k, len(t)))
    near_tri = near_tri.reshape(len(p), -1)
    # and the triangles around the nearest vertices, for large triangles whose centroid is far from the point
    _, near_v = cKDTree(v).query(p, k=min(4, len(v)))
    cand = np.concatenate([near_tri, inc[near_v.reshape(len(p), -1)].reshape(len(p), -1)], 1)
    cand = np.where(cand < 0, near_tri[:, :1], cand)
    n, m = cand.shape
    q = np.repeat(p, m, 0)
    tri = t[cand.reshape(-1)]
    cp = _closest_on_triangles(q, v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]).reshape(n, m, 3)
    d = np.linalg.norm(cp - p[:, None], axis=2)
    best = d.argmin(1)
    return d[np.arange(n), best], cp[np.arange(n), best]


def landmark_positions(verts, indices) -> np.ndarray:
    """(68, 3) positions of landmark vertex `indices` (68,) int (-1: none, NaN row) on `verts` (V, 3)."""
    li = np.asarray(indices, np.int64)
    v = np.asarray(verts, np.float64)
    return np.where((li >= 0)[:, None], v[np.clip(li, 0, None)], np.nan)


def similarity_transform(src, dst, scale: bool = True):
    """(s, R, t) minimising sum |s R src_i + t - dst_i|^2 (Umeyama 1991; a proper rotation, det R = +1).

    Args:
        src, dst: (n, 3) corresponding points, n >= 3 and not collinear; scale: False fixes s = 1.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / max((a * a).sum() / len(src), 1e-300)) if scale else 1.0
    return s, R, md - s * R @ ms


def align_to_scan(verts, tris, landmarks, scan_landmarks, scan_points, iterations: int = 30,
                  icp_scale: bool = False):
    """Align a predicted mesh to a scan: a similarity on the landmarks, then ICP.

    Args:
        verts (V, 3), tris (T, 3): the predicted mesh (any units).
        landmarks (n, 3), scan_landmarks (n, 3): corresponding landmarks on the mesh and on the scan (NaN rows
            are left out; at least 3 are needed).
        scan_points (m, 3): the scan points the rigid ICP fits the mesh to (the face region).
        iterations: ICP steps after the landmark similarity (stops earlier when the mean distance settles).
        icp_scale: False: the ICP moves the mesh rigidly (the landmarks' scale is kept); True: it refines the
            scale too (NoW's ICP).
    Returns:
        (verts aligned to the scan (V, 3), (s, R, t) of the whole transform).
    """
    lm, slm = np.asarray(landmarks, np.float64), np.asarray(scan_landmarks, np.float64)
    ok = np.isfinite(lm).all(1) & np.isfinite(slm).all(1)
    if ok.sum() < 3:
        raise InputError(f"landmarks: {int(ok.sum())} usable correspondences; the alignment needs at least 3")
    s, R, t = similarity_transform(lm[ok], slm[ok])
    v = s * np.asarray(verts, np.float64) @ R.T + t
    inc = vertex_faces(tris, len(v))
    last = np.inf
    for _ in range(iterations):
        d, closest = closest_points_on_mesh(scan_points, v, tris, incidence=inc)
        # update taking the closest surface points onto the scan points, applied to the mesh
        ds, dR, dt = similarity_transform(closest, scan_points, scale=icp_scale)
        v = ds * v @ dR.T + dt
        s, R, t = ds * s, dR @ R, ds * dR @ t + dt
        if last - d.mean() < 1e-6 * max(last, 1e-12):
            break
        last = d.mean()
    return v, (s, R, t)


def now_region(scan_landmarks):
    """NoW's face crop from iBUG landmarks: (centre (3,), radius). The centre lies 0.3 of the way from the nose
    bottom (33) to the midpoint of the inner eye corners (39, 42); the radius is 1.4 x the mean of the outer-eye
    distance (36-45) and that nose length."""
    slm = np.asarray(scan_landmarks, np.float64)
    bridge = (slm[39] + slm[42]) / 2
    centre = slm[33] + 0.3 * (bridge - slm[33])
    return centre, 1.4 * (np.linalg.norm(slm[36] - slm[45]) + np.linalg.norm(bridge - slm[33])) / 2


def scan_error(verts, tris, landmarks, scan_verts, scan_landmarks, radius: float | None = None,
               iterations: int = 30, protocol: str = "landmarks68") -> dict:
    """NoW-style scan-to-mesh error of a predicted face.

    Args:
        verts (V, 3), tris (T, 3): the predicted mesh; landmarks (68, 3): its iBUG landmark positions (NaN for
            those it lacks).
        scan_verts (m, 3): the scan's points; scan_landmarks (68, 3): the scan's iBUG landmarks.
        radius: face region around the scan's nose tip (landmark 30; the nose bottom, 33, when 30 is NaN, as
            in NoW's 7 landmarks), in scan units; default SCAN_RADIUS_EYES times the scan's outer-eye-corner
            distance. Not used by protocol "now".
        protocol: "landmarks68" (the module docstring's) or "now": NoW's own choices: the similarity from the
            7 landmarks NOW7 only, NoW's crop (`now_region`), and an ICP that refines the scale too.
    Returns:
        {"median", "mean", "std" (scan units), "median_eyes", "mean_eyes" (/ outer-eye distance), "points" (in
        the region), "eye_distance", "scale" (of the whole alignment: the landmark similarity's, times the
        ICP's under protocol "now")}.
    """
    if protocol not in ("landmarks68", "now"):
        raise InputError(f"protocol: expected 'landmarks68' or 'now', got {protocol!r}")
    slm = np.asarray(scan_landmarks, np.float64)
    lm = np.asarray(landmarks, np.float64)
    if protocol == "now":
        if slm.shape[0] < 68 or not np.isfinite(slm[list(NOW7)]).all():
            raise InputError(f"scan_landmarks: protocol 'now' needs the 7 iBUG landmarks {NOW7}")
    elif slm.shape[0] < 46 or not np.isfinite(slm[[36, 45]]).all() or \
            not (np.isfinite(slm[30]).all() or np.isfinite(slm[33]).all()):
        raise InputError("scan_landmarks: need the iBUG nose tip (30) or nose bottom (33) and the outer eye "
                         "corners (36, 45)")
    eyes = float(np.linalg.norm(slm[36] - slm[45]))
    if protocol == "now":
        keep = np.full(len(lm), False)
        keep[list(NOW7)] = True
        lm = np.where(keep[:, None], lm, np.nan)
        centre, r = now_region(slm)
    else:
        centre = slm[30] if np.isfinite(slm[30]).all() else slm[33]
        r = SCAN_RADIUS_EYES * eyes if radius is None else float(radius)
    sv = np.asarray(scan_verts, np.float64)
    region = sv[np.linalg.norm(sv - centre, axis=1) <= r]
    if len(region) < 10:
        raise InputError(f"scan: {len(region)} points within {r:.3g} of the face centre; need at least 10")
    aligned, (s, _, _) = align_to_scan(verts, tris, lm, slm, region, iterations, icp_scale=protocol == "now")
    d, _ = closest_points_on_mesh(region, aligned, tris, incidence=vertex_faces(tris, len(aligned)))
    return {"median": float(np.median(d)), "mean": float(d.mean()), "std": float(d.std()),
            "median_eyes": float(np.median(d) / eyes), "mean_eyes": float(d.mean() / eyes),
            "points": int(len(region)), "eye_distance": eyes, "scale": float(s)}

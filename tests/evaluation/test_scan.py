"""The NoW-style scan metric (mofa_tk.evaluation.scan) on hand-built cases with known answers, and the scan
readers (mofa_tk.io.meshes) on files written here."""
import numpy as np
import pytest
import torch

from mofa_tk import InputError
from mofa_tk.evaluation.scan import closest_points_on_mesh, scan_error, similarity_transform
from mofa_tk.io.meshes import read_landmarks_3d, read_mesh
from mofa_tk.rotation import axis_angle_to_matrix


def _grid(n=11, size=10.0):
    x, y = np.meshgrid(np.linspace(-size / 2, size / 2, n), np.linspace(-size / 2, size / 2, n))
    verts = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], 1)
    i = np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None]
    i = i.ravel()
    tris = np.concatenate([np.stack([i, i + 1, i + n + 1], 1), np.stack([i, i + n + 1, i + n], 1)])
    return verts, tris


def _icosphere(r, levels):
    t = (1 + 5 ** 0.5) / 2
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
         (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
         (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
         (8, 6, 7), (9, 8, 1)]
    v = [np.array(p, float) / np.linalg.norm(p) for p in v]
    for _ in range(levels):
        cache, nf = {}, []

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = v[a] + v[b]
                v.append(m / np.linalg.norm(m))
                cache[key] = len(v) - 1
            return cache[key]

        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            nf += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        f = nf
    return np.array(v) * r, np.array(f)


def test_closest_points_on_a_plane():
    verts, tris = _grid()
    rng = np.random.default_rng(0)
    inside = np.column_stack([rng.uniform(-4.9, 4.9, (50, 2)), rng.uniform(-3, 3, 50)])
    d, cp = closest_points_on_mesh(inside, verts, tris)
    np.testing.assert_allclose(d, np.abs(inside[:, 2]), atol=1e-12)
    np.testing.assert_allclose(cp[:, :2], inside[:, :2], atol=1e-12)
    # beyond the border (x > 5): the closest point lies on the edge x = 5
    out = np.column_stack([5 + rng.uniform(0.1, 2, 30), rng.uniform(-4, 4, 30), rng.uniform(-2, 2, 30)])
    d, _ = closest_points_on_mesh(out, verts, tris)
    np.testing.assert_allclose(d, np.hypot(out[:, 0] - 5, out[:, 2]), atol=1e-12)


def test_closest_points_on_a_sphere_and_the_similarity_transform():
    verts, tris = _icosphere(10.0, 4)                         # 2562 vertices; sag < 0.02
    rng = np.random.default_rng(1)
    dirs = rng.normal(size=(200, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    d, _ = closest_points_on_mesh(dirs * 11.0, verts, tris)
    assert (d >= 1.0 - 1e-9).all() and (d <= 1.02).all()     # the mesh lies inside the sphere
    R = axis_angle_to_matrix(torch.tensor([[0.3, -0.5, 0.2]], dtype=torch.float64))[0].numpy()
    src = rng.normal(size=(20, 3))
    s, R2, t = similarity_transform(src, 2.5 * src @ R.T + [1.0, -2.0, 3.0])
    assert s == pytest.approx(2.5) and np.allclose(R2, R) and np.allclose(t, [1.0, -2.0, 3.0])


def _landmarks_on(verts, rng):
    """68 'landmarks': points of the front half-sphere, with 30 at the front, 36 and 45 left and right."""
    lm = verts[rng.choice(np.nonzero(verts[:, 2] > 0.3 * verts[:, 2].max())[0], 68, replace=False)].copy()
    r = np.linalg.norm(verts[0])
    lm[30] = [0, 0, r]
    lm[36] = [-r * np.sin(0.5), 0, r * np.cos(0.5)]
    lm[45] = [r * np.sin(0.5), 0, r * np.cos(0.5)]
    return lm


def test_scan_error_of_a_sphere_one_unit_larger():
    """Scan: a sphere of radius 50; prediction: a sphere of radius 51 with the same landmark positions, moved by
    a random similarity transform. With the whole scan as the region (the rigid ICP then has no reason to move
    the concentric spheres), the alignment undoes the transform and every scan point lies 1 from the predicted
    surface (up to its tessellation). On the default face region (a cap) the ICP slides the larger sphere onto
    the cap, so the error is smaller, never larger."""
    scan, _ = _icosphere(50.0, 4)
    pred, ptris = _icosphere(51.0, 5)
    rng = np.random.default_rng(2)
    lm = _landmarks_on(scan, rng)
    R = axis_angle_to_matrix(torch.tensor([[0.4, 0.1, -0.3]], dtype=torch.float64))[0].numpy()
    s, t = 0.37, np.array([120.0, -40.0, 7.0])
    out = scan_error(s * pred @ R.T + t, ptris, s * lm @ R.T + t, scan, lm, radius=1000.0)
    assert out["median"] == pytest.approx(1.0, abs=0.01) and out["mean"] == pytest.approx(1.0, abs=0.01)
    assert out["std"] < 0.01 and out["scale"] == pytest.approx(1 / s, rel=1e-6)
    assert out["median_eyes"] == pytest.approx(1.0 / out["eye_distance"], rel=0.01)
    assert out["points"] == len(scan)
    cap = scan_error(s * pred @ R.T + t, ptris, s * lm @ R.T + t, scan, lm)
    assert cap["points"] < len(scan) and cap["median"] < out["median"]
    # the same surface as the scan: error 0 (to its tessellation)
    same, stris = _icosphere(50.0, 5)
    assert scan_error(same, stris, lm, scan, lm)["median"] < 0.01
    with pytest.raises(InputError, match="nose tip"):
        scan_error(same, stris, lm, scan, lm[:30])
    # NoW's 7 landmarks (eye corners, nose bottom 33, mouth corners; NaN elsewhere): the same answer
    lm7 = np.full_like(lm, np.nan)
    now7 = [36, 39, 42, 45, 33, 48, 54]
    lm7[now7] = lm[now7]
    out7 = scan_error(s * pred @ R.T + t, ptris, s * lm7 @ R.T + t, scan, lm7, radius=1000.0)
    assert out7["median"] == pytest.approx(1.0, abs=0.01) and out7["scale"] == pytest.approx(1 / s, rel=1e-6)
    lm7[33] = np.nan
    with pytest.raises(InputError, match="nose tip.*nose bottom"):
        scan_error(same, stris, lm7, scan, lm7)


def test_mesh_readers(tmp_path):
    verts, tris = _grid(3)
    obj = tmp_path / "m.obj"
    obj.write_text("".join(f"v {x} {y} {z}\n" for x, y, z in verts) + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in tris))
    v, t = read_mesh(obj)
    np.testing.assert_allclose(v, verts) and np.testing.assert_array_equal(t, tris)
    for fmt in ("binary_little_endian", "ascii"):
        ply = tmp_path / f"m_{fmt}.ply"
        head = (f"ply\nformat {fmt} 1.0\nelement vertex {len(verts)}\nproperty float x\nproperty float y\n"
                f"property float z\nproperty uchar red\nelement face {len(tris)}\nproperty list uchar int vertex_indices\nend_header\n")
        if fmt == "ascii":
            body = "".join(f"{x} {y} {z} 7\n" for x, y, z in verts) + "".join(f"3 {a} {b} {c}\n" for a, b, c in tris)
            ply.write_bytes(head.encode() + body.encode())
        else:
            vrec = np.zeros(len(verts), [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1")])
            vrec["x"], vrec["y"], vrec["z"] = verts.T
            frec = np.zeros(len(tris), [("n", "u1"), ("v", "<i4", (3,))])
            frec["n"], frec["v"] = 3, tris
            ply.write_bytes(head.encode() + vrec.tobytes() + frec.tobytes())
        v, t = read_mesh(ply)
        np.testing.assert_allclose(v, verts, atol=1e-6)
        np.testing.assert_array_equal(t, tris)
    lj = tmp_path / "s.ljson"
    lj.write_text('{"version": 2, "landmarks": {"points": [[1, 2, 3], null, [4, 5, 6]]}}')
    a = read_landmarks_3d(lj)
    assert a.shape == (3, 3) and np.isnan(a[1]).all() and a[2, 1] == 5
    lj.write_text('{"version": 2, "landmarks": {"points": [[1, 2], [3, 4]]}}')
    with pytest.raises(InputError, match="no group of 3D points"):
        read_landmarks_3d(lj)


def test_find_scan_and_the_scan_rows_of_evaluate_image(tmp_path):
    """A scan beside a photo is found with its 3D landmarks; evaluate_image scores a fit against it: the mean
    face's own surface as the scan gives 0 for the mean face, and the fit (another mesh) more."""
    import json


    import mofa_tk
    from mofa_tk import evaluation as ev
    from mofa_tk.io.meshes import find_scan

    model = mofa_tk.builtin_model()
    ms = model.mean_shape.double().numpy()
    tris = model.triangles.numpy()
    photo = tmp_path / "face.jpg"
    photo.write_bytes(b"")
    assert find_scan(photo) == (None, None)
    (tmp_path / "face.obj").write_text("".join(f"v {x} {y} {z}\n" for x, y, z in ms)
                                       + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in tris))
    scan, note = find_scan(photo)
    assert scan is None and "no 3D landmark file" in note
    lm = ms[model.landmarks.numpy()]
    (tmp_path / "face.ljson").write_text(json.dumps({"version": 2, "landmarks": {"points": lm.tolist()}}))
    scan, note = find_scan(photo)
    assert note is None and scan.verts.shape == ms.shape and scan.landmarks.shape == (68, 3)

    bigger = model.mean_shape * 1.0
    bigger[:, 2] *= 1.2                                   # a deeper face

    class _R:
        verts_model = bigger
        timings = {"total": 0.0}
        landmarks = np.zeros((68, 2))
        stage_codes = {"landmarks": None}

        def verts_at(self, stage):
            return model.mean_shape.clone()

    row = ev.evaluate_image(lambda *a, **k: _R(), np.zeros((64, 64, 3), np.float32), model, list(range(68)),
                            scan=scan)
    assert row["scan_median_mean_face"] < 1e-6 and row["scan_median_landmarks"] < 1e-6
    assert row["scan_median"] > 0.1 and row["scan_mean"] >= row["scan_median"] * 0.5
    assert row["scan_median_eyes"] == pytest.approx(row["scan_median"] / np.linalg.norm(lm[36] - lm[45]))
    # the NoW protocol through evaluate_image: same answers for the identical meshes, and the scan_error value
    now = ev.evaluate_image(lambda *a, **k: _R(), np.zeros((64, 64, 3), np.float32), model, list(range(68)),
                            scan=scan, scan_protocol="now")
    assert now["scan_median_mean_face"] < 1e-6
    from mofa_tk.evaluation.scan import landmark_positions, scan_error
    b = bigger.double().numpy()
    ref = scan_error(b, tris, landmark_positions(b, model.landmarks.numpy()), scan.verts, scan.landmarks,
                     protocol="now")
    assert now["scan_median"] == pytest.approx(ref["median"], rel=1e-9) and now["scan_median"] != row["scan_median"]


def test_now_protocol_region_landmarks_and_scale():
    """protocol="now": NoW's crop (centre 0.3 of the way from the nose bottom to the inner-eye midpoint, radius
    1.4 x the mean of the outer-eye distance and that nose length), only the 7 NOW7 landmarks, and an ICP that
    refines the scale: concentric spheres of radius 50 and 51 then meet (error ~0, whole scale 50/51 / s),
    where the 68-landmark protocol keeps them 1 apart."""
    from mofa_tk.evaluation.scan import NOW7, now_region

    slm = np.zeros((68, 3))
    slm[33] = [0, 0, 0]
    slm[39], slm[42] = [-1, 10, 0], [1, 10, 0]
    slm[36], slm[45] = [-20, 10, 0], [20, 10, 0]
    c, r = now_region(slm)
    np.testing.assert_allclose(c, [0, 3, 0])
    assert r == pytest.approx(1.4 * (40 + 10) / 2)

    scan, _ = _icosphere(50.0, 4)
    pred, ptris = _icosphere(51.0, 5)
    rng = np.random.default_rng(3)
    lm = _landmarks_on(scan, rng)
    R = axis_angle_to_matrix(torch.tensor([[0.2, -0.3, 0.1]], dtype=torch.float64))[0].numpy()
    s, t = 2.5, np.array([3.0, 1.0, -9.0])
    moved, mlm = s * pred @ R.T + t, s * lm @ R.T + t
    now = scan_error(moved, ptris, mlm, scan, lm, protocol="now")
    assert now["median"] < 0.05 and now["scale"] == pytest.approx(50 / 51 / s, rel=2e-3)
    cen, rad = now_region(lm)
    assert now["points"] == int((np.linalg.norm(scan - cen, axis=1) <= rad).sum())
    assert scan_error(moved, ptris, mlm, scan, lm, radius=1000.0)["median"] == pytest.approx(1.0, abs=0.01)
    # landmarks other than NOW7 do not enter
    junk = mlm.copy()
    others = np.setdiff1d(np.arange(68), NOW7)
    junk[others] += rng.normal(0, 30, (len(others), 3))
    assert scan_error(moved, ptris, junk, scan, lm, protocol="now")["median"] == pytest.approx(now["median"], abs=1e-6)
    with pytest.raises(InputError, match="protocol"):
        scan_error(moved, ptris, mlm, scan, lm, protocol="NoW")
    lm7 = lm.copy()
    lm7[39] = np.nan
    with pytest.raises(InputError, match="7 iBUG landmarks"):
        scan_error(moved, ptris, mlm, scan, lm7, protocol="now")

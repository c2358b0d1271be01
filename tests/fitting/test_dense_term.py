"""The dense landmark term of `fit` (MediaPipe's mesh points on model vertices), without MediaPipe: the map is
built by hand here (`face.mediapipe_map.MediaPipeMap`), so these tests run everywhere.

References: a NumPy evaluation of the term from the decoder's projected vertices, the Jacobian of the projected
points by autograd (for the closed-form Gauss-Newton matrix), and synthetic faces whose dense points are the
true projections of the mapped vertices.
"""
import numpy as np
import pytest
import torch

import mofa_tk
from mofa_tk.evaluation import metrics
from mofa_tk.evaluation.synthetic import face_region, synthetic_face
from mofa_tk.face.decoder import FaceDecoder
from mofa_tk.face.mediapipe_map import N_POINTS, MediaPipeMap
from mofa_tk.fitting import fit
from mofa_tk.fitting.problem import Problem
from mofa_tk.fitting.stages import dense_gauss_newton




def _map(model, seed=0):
    """A hand-made map: 478 random face-region vertices, a few untraced (-1) and a few of weight 0."""
    rng = np.random.default_rng(seed)
    region = np.flatnonzero(face_region(model))
    v = rng.choice(region, N_POINTS, replace=False)
    v[:5] = -1
    w = rng.uniform(0.5, 2.0, N_POINTS).astype(np.float32)
    w[5:10] = 0.0
    w[:5] = 0.0
    return MediaPipeMap(torch.from_numpy(v.astype(np.int64)), torch.from_numpy(w),
                        torch.zeros(N_POINTS), torch.full((N_POINTS,), 7, dtype=torch.int32))


def _code(dec, rng):
    code = dec.code.zeros(1)
    b = dec.code.split(code)
    b["rotation"][0] = torch.tensor([0.1, -0.35, 0.05])
    b["translation"][0] = torch.tensor([4.0, -3.0, 30.0])
    b["shape"][0] = torch.tensor(rng.uniform(-1, 1, dec.model.k_id), dtype=torch.float32)
    b["expression"][0] = torch.tensor(rng.uniform(-0.5, 0.5, dec.model.k_exp), dtype=torch.float32)
    return code


def test_dense_term_and_its_gauss_newton_matrix(cpu, model):
    rng = np.random.default_rng(1)
    dec = FaceDecoder(model)
    mp = _map(model)
    code = _code(dec, rng)
    with torch.no_grad():
        out = dec(code)
    target = rng.uniform(40, 180, (N_POINTS, 2)).astype(np.float32)
    target[12] = np.nan                                               # a missing detection
    prob = Problem(model, dec, out["image"][0], out["landmarks2d"][0], {}, None, None, dense=(target, mp),
                   dense_weight=2.5)
    # value: NumPy from the decoder's projections
    p = out["verts_2d"][0].numpy().astype(np.float64)[mp.vertices.clamp(min=0).numpy()]
    ok = (mp.vertices.numpy() >= 0) & (mp.weight.numpy() > 0) & np.isfinite(target).all(1)
    w = mp.weight.numpy().astype(np.float64)
    ref = 2.5 * prob.w["landmark"] * (w[ok] * ((p[ok] - target[ok]) ** 2).sum(1)).sum() / ok.sum()
    _, terms = prob.landmark_loss(code)
    assert float(terms["dense"]) == pytest.approx(ref, rel=1e-4)
    _, terms = prob.dense_loss(prob.geometry(code), prob.visibility(prob.geometry(code)))
    assert float(terms["dense"]) == pytest.approx(ref, rel=1e-4)

    # Gauss-Newton matrix: 2 w J^T J / n with J the autograd Jacobian of the projected points w.r.t.
    # (rotation increment, translation, shape, expression), in float64
    blocks = ["rotation", "translation", "shape", "expression"]
    bl = dec.code.split(code.double())
    from mofa_tk.rotation import axis_angle_to_matrix

    R = axis_angle_to_matrix(bl["rotation"])[0]
    H = dense_gauss_newton(prob, R, bl, blocks)
    idx = mp.vertices.clamp(min=0)
    mean, S, E = (t.double() for t in prob.rows(idx))
    cam = dec.camera

    def points(params):
        dw, t, a, e = params[:3], params[3:6], params[6:6 + model.k_id], params[6 + model.k_id:]
        Rw = axis_angle_to_matrix(dw[None])[0] @ R
        v = mean + S @ a + E @ e
        x = (v - dec.center.double()) @ Rw.T + dec.default_translation.double() + t
        return cam.project(x)[torch.from_numpy(ok)].reshape(-1)

    x0 = torch.cat([torch.zeros(3, dtype=torch.float64), bl["translation"][0], bl["shape"][0], bl["expression"][0]])
    J = torch.autograd.functional.jacobian(points, x0).reshape(int(ok.sum()), 2, -1)
    wt = torch.from_numpy(w[ok])
    H_ref = 2.0 * prob.w_dense / ok.sum() * torch.einsum("n,nip,niq->pq", wt, J, J)
    assert torch.allclose(H, H_ref, rtol=1e-6, atol=1e-9 * float(H_ref.abs().max()))


def test_dense_points_improve_a_synthetic_fit(cpu, model, monkeypatch):
    """Synthetic faces whose 478 dense points are the true projections of the mapped vertices (+ 1 px noise):
    the landmark stage with the dense term is closer to the true face than with the 68 points alone."""
    import mofa_tk.fitting.pipeline as pipeline

    region = face_region(model)
    mp = _map(model, seed=3)
    monkeypatch.setattr(pipeline, "mediapipe_map", lambda m: mp)
    rng = np.random.default_rng(7)
    err = {0.0: [], 1.0: []}
    for _ in range(2):
        sf = synthetic_face(model, rng, image_size=256)
        dec = FaceDecoder(model, image_size=256)
        with torch.no_grad():
            g = dec.geometry(torch.from_numpy(sf.code)[None])
        pts = g.verts_2d[0][mp.vertices.clamp(min=0)].numpy() + rng.normal(0, 1.0, (N_POINTS, 2))
        for wd in err:
            res = fit(sf.image, model, landmarks=sf.landmarks, mesh_landmarks=pts, dense_weight=wd,
                      focal=sf.focal, principal=sf.principal, progress=False, iters={"photometric": 0})
            err[wd].append(metrics.point_to_point_rmse(res.verts_model.numpy()[region], sf.verts_model[region]))
    # measured: 68 points 3.10 / 2.70 mm, with the dense term 3.04 / 2.16 mm
    assert np.mean(err[1.0]) < 0.95 * np.mean(err[0.0]), err
    assert all(d <= s + 0.02 for d, s in zip(err[1.0], err[0.0])), err


def test_depth_term_and_its_gauss_newton_matrix(cpu, model):
    """The depth term (MediaPipe's relative z against the dense vertices' centred depths in pixels, up to a
    closed-form scale) against NumPy, and its Gauss-Newton matrix against autograd with the scale and the
    pixels-per-mm factor held fixed."""
    from mofa_tk.fitting.stages import dense_gauss_newton
    from mofa_tk.rotation import axis_angle_to_matrix

    rng = np.random.default_rng(4)
    dec = FaceDecoder(model)
    mp = _map(model, seed=5)
    code = _code(dec, rng)
    with torch.no_grad():
        out = dec(code)
    target = np.concatenate([rng.uniform(40, 180, (N_POINTS, 2)), rng.normal(0, 10, (N_POINTS, 1))], 1)
    target = target.astype(np.float32)
    prob = Problem(model, dec, out["image"][0], out["landmarks2d"][0], {}, None, None, dense=(target, mp),
                   dense_weight=2.0, depth_weight=0.5)
    ok = ((mp.vertices >= 0) & (mp.weight > 0)).numpy()
    Z = out["verts_cam"][0].numpy().astype(np.float64)[mp.vertices.clamp(min=0).numpy(), 2][ok]
    k = dec.focal[0] / (-Z.mean())
    a = target[ok, 2] - target[ok, 2].mean()
    b = k * (Z - Z.mean())
    alpha = max(0.0, -(a * b).sum() / (b * b).sum())
    w = mp.weight.numpy()[ok]
    ref = 0.5 * 2.0 * prob.w["landmark"] * (w * (a + alpha * b) ** 2).sum() / ok.sum()
    _, terms = prob.landmark_loss(code)
    assert float(terms["depth"]) == pytest.approx(ref, rel=1e-4)
    # Gauss-Newton part: H_total - H_dense (no depth) = 2 w_depth / n sum w J^T J, J = alpha k d(Z - mean Z)
    blocks = ["rotation", "translation", "shape", "expression"]
    bl = dec.code.split(code.double())
    R = axis_angle_to_matrix(bl["rotation"])[0]
    H = dense_gauss_newton(prob, R, bl, blocks)
    w_depth, prob.w_depth = prob.w_depth, 0.0
    H0 = dense_gauss_newton(prob, R, bl, blocks)
    prob.w_depth = w_depth
    mean, S, E = (t.double() for t in prob.rows(mp.vertices.clamp(min=0)))

    def depths(params):
        dw, tr, sh, ex = params[:3], params[3:6], params[6:6 + model.k_id], params[6 + model.k_id:]
        Rw = axis_angle_to_matrix(dw[None])[0] @ R
        v = mean + S @ sh + E @ ex
        z = ((v - dec.center.double()) @ Rw.T + dec.default_translation.double() + tr)[:, 2]
        z = z[torch.from_numpy(ok)]
        return alpha * k * (z - z.mean())

    x0 = torch.cat([torch.zeros(3, dtype=torch.float64), bl["translation"][0], bl["shape"][0], bl["expression"][0]])
    J = torch.autograd.functional.jacobian(depths, x0)
    H_ref = 2.0 * prob.w_depth / ok.sum() * torch.einsum("n,np,nq->pq", torch.from_numpy(w).double(), J, J)
    assert torch.allclose(H - H0, H_ref, rtol=1e-4, atol=1e-9 * float(H_ref.abs().max()))
    assert float(H_ref.abs().max()) > 0

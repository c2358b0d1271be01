"""mofa_tk.losses against independent NumPy computations (bilinear sampling, l2,1, landmarks, regulariser),
and the gradient of the bilinear-sampled photometric term w.r.t. positions against finite differences."""
import numpy as np
import pytest
import torch

from helpers import numeric_grad, rel_err
from mofa_tk import InputError
from mofa_tk import losses as L
from mofa_tk.face.code import Code


# ----------------------------------------------------------------------------------------- NumPy references
def np_bilinear(img, pts):
    """img (H, W, C) float64, pts (N, 2) pixels (centres at +0.5); border-clamped bilinear, by hand."""
    H, W = img.shape[:2]
    out = np.zeros((pts.shape[0], img.shape[2]))
    for n, (u, v) in enumerate(pts):
        x = min(max(u - 0.5, 0.0), W - 1.0)
        y = min(max(v - 0.5, 0.0), H - 1.0)
        j0, i0 = int(np.floor(x)), int(np.floor(y))
        j1, i1 = min(j0 + 1, W - 1), min(i0 + 1, H - 1)
        fx, fy = x - j0, y - i0
        out[n] = ((1 - fx) * (1 - fy) * img[i0, j0] + fx * (1 - fy) * img[i0, j1]
                  + (1 - fx) * fy * img[i1, j0] + fx * fy * img[i1, j1])
    return out


def np_vertex_loss(img, pts, cols, vis, robust):
    per = []
    for b in range(img.shape[0]):
        d = np_bilinear(img[b], pts[b]) - cols[b]
        e = np.sqrt((d * d).sum(-1)) if robust else (d * d).sum(-1)
        w = vis[b].astype(np.float64)
        per.append((w * e).sum() / max(w.sum(), 1.0))
    return np.mean(per)


def interior_points(rng, B, N, H, W):
    """Pixel positions whose bilinear cell coordinates are away from the kinks (fractions in [0.15, 0.85])."""
    cell = np.stack([rng.integers(0, W - 1, (B, N)), rng.integers(0, H - 1, (B, N))], -1)
    return cell + 0.5 + rng.uniform(0.15, 0.85, (B, N, 2))


# ----------------------------------------------------------------------------------------- sampling
def test_sample_image_matches_numpy_bilinear():
    rng = np.random.default_rng(0)
    B, H, W, N = 2, 9, 13, 200
    img = rng.uniform(0, 1, (B, H, W, 3))
    # anywhere, including the border half-pixels and outside the image (clamped)
    pts = np.stack([rng.uniform(-2, W + 2, (B, N)), rng.uniform(-2, H + 2, (B, N))], -1)
    pts[:, :4] = [[0.5, 0.5], [W - 0.5, H - 0.5], [3.5, 2.5], [0.0, H]]  # exact centres and corners
    got = L.sample_image(torch.tensor(img, dtype=torch.float32), torch.tensor(pts, dtype=torch.float32)).numpy()
    ref = np.stack([np_bilinear(img[b], pts[b]) for b in range(B)])
    np.testing.assert_allclose(got, ref, atol=2e-6)
    # a pixel centre returns that pixel (up to float32 rounding of the grid normalisation)
    np.testing.assert_allclose(got[:, 2], img[:, 2, 3], atol=1e-6)


def test_sample_image_broadcasts_and_checks():
    img = torch.rand(1, 4, 5, 2)
    pts = torch.rand(3, 7, 2) * 4
    assert L.sample_image(img, pts).shape == (3, 7, 2)
    with pytest.raises(InputError, match="points"):
        L.sample_image(img, torch.rand(3, 7, 3))
    with pytest.raises(InputError, match="image"):
        L.sample_image(torch.rand(4, 5), pts)


# ----------------------------------------------------------------------------------------- dense term
@pytest.mark.parametrize("robust", [False, True])
def test_vertex_photometric_loss_matches_numpy(robust):
    rng = np.random.default_rng(1)
    B, H, W, V = 3, 12, 10, 150
    img = rng.uniform(0, 1, (B, H, W, 3))
    pts = np.stack([rng.uniform(0, W, (B, V)), rng.uniform(0, H, (B, V))], -1)
    cols = rng.uniform(0, 1, (B, V, 3))
    vis = rng.uniform(size=(B, V)) < 0.6
    vis[2] = False  # an image without visible vertices contributes 0
    got = L.vertex_photometric_loss(torch.tensor(img, dtype=torch.float32), torch.tensor(pts, dtype=torch.float32),
                                    torch.tensor(cols, dtype=torch.float32), torch.tensor(vis), robust=robust)
    assert abs(got.item() - np_vertex_loss(img, pts, cols, vis, robust)) < 1e-5
    per = L.vertex_photometric_loss(torch.tensor(img, dtype=torch.float32), torch.tensor(pts, dtype=torch.float32),
                                    torch.tensor(cols, dtype=torch.float32), torch.tensor(vis), robust=robust,
                                    reduction="none")
    assert per.shape == (B,) and per[2].item() == 0.0
    # only the visible vertices count: changing an invisible vertex's colour changes nothing
    cols2 = cols.copy()
    cols2[0, ~vis[0]] += 5.0
    got2 = L.vertex_photometric_loss(torch.tensor(img, dtype=torch.float32), torch.tensor(pts, dtype=torch.float32),
                                     torch.tensor(cols2, dtype=torch.float32), torch.tensor(vis), robust=robust)
    assert abs(got2.item() - got.item()) < 1e-6


@pytest.mark.parametrize("robust", [False, True])
def test_vertex_photometric_gradient_vs_finite_differences(robust):
    """d loss / d positions and d loss / d colours of the bilinear-sampled term vs FD of the NumPy reference."""
    rng = np.random.default_rng(2)
    B, H, W, V = 2, 8, 9, 12
    # a smooth image (so the FD steps see the same bilinear cell) plus noise
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    img = np.stack([0.5 + 0.3 * np.sin(xx / 2.0 + c) * np.cos(yy / 3.0) for c in range(3)], -1)
    img = np.broadcast_to(img, (B, H, W, 3)) + rng.uniform(0, 0.1, (B, H, W, 3))
    pts = interior_points(rng, B, V, H, W)
    cols = rng.uniform(0, 1, (B, V, 3))
    vis = rng.uniform(size=(B, V)) < 0.8
    tp = torch.tensor(pts, dtype=torch.float32, requires_grad=True)
    tc = torch.tensor(cols, dtype=torch.float32, requires_grad=True)
    loss = L.vertex_photometric_loss(torch.tensor(img, dtype=torch.float32), tp, tc, torch.tensor(vis), robust=robust)
    loss.backward()
    g_pts = numeric_grad(lambda p: np_vertex_loss(img, p, cols, vis, robust), pts, eps=1e-5)
    g_cols = numeric_grad(lambda c: np_vertex_loss(img, pts, c, vis, robust), cols, eps=1e-6)
    assert np.abs(g_pts).max() > 1e-3  # the image gradient does reach the positions
    assert rel_err(tp.grad.numpy(), g_pts) < 2e-3
    assert rel_err(tc.grad.numpy(), g_cols) < 1e-4
    assert np.all(tp.grad.numpy()[~vis] == 0)  # invisible vertices get no gradient


def test_vertex_photometric_errors():
    img, pts, cols, vis = torch.rand(1, 4, 4, 3), torch.rand(1, 5, 2), torch.rand(1, 5, 3), torch.ones(1, 5)
    with pytest.raises(InputError, match="vertex_colors"):
        L.vertex_photometric_loss(img, pts, torch.rand(1, 6, 3), vis)
    with pytest.raises(InputError, match="visibility"):
        L.vertex_photometric_loss(img, pts, cols, torch.ones(1, 4))
    with pytest.raises(InputError, match="image"):
        L.vertex_photometric_loss(torch.rand(1, 4, 4, 4), pts, cols, vis)
    with pytest.raises(InputError, match="reduction"):
        L.vertex_photometric_loss(img, pts, cols, vis, reduction="avg")


# ----------------------------------------------------------------------------------------- pixel term
@pytest.mark.parametrize("robust", [False, True])
def test_image_photometric_loss_matches_numpy(robust):
    rng = np.random.default_rng(3)
    B, H, W = 2, 7, 6
    a, b = rng.uniform(0, 1, (B, H, W, 3)), rng.uniform(0, 1, (B, H, W, 3))
    m = rng.uniform(0, 1, (B, H, W, 1)) * (rng.uniform(size=(B, H, W, 1)) < 0.7)
    d = a - b
    e = np.sqrt((d * d).sum(-1)) if robust else (d * d).sum(-1)
    ref = np.mean([(m[i, ..., 0] * e[i]).sum() / max(m[i].sum(), 1.0) for i in range(B)])
    got = L.image_photometric_loss(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32),
                                   torch.tensor(m, dtype=torch.float32), robust=robust)
    assert abs(got.item() - ref) < 1e-5
    # the l2,1 norm is the sum of per-pixel L2 norms: an explicit example
    if robust:
        one = torch.zeros(1, 1, 2, 3)
        two = torch.tensor([[[[3.0, 4.0, 0.0], [0.0, 0.0, 12.0]]]])
        assert abs(L.image_photometric_loss(two, one, torch.ones(1, 1, 2, 1), robust=True,
                                            reduction="sum").item() - (5 + 12) / 2) < 1e-5


def test_image_photometric_gradient_finite_at_zero_residual():
    x = torch.rand(1, 5, 5, 3, requires_grad=True)
    loss = L.image_photometric_loss(x, x.detach().clone(), torch.ones(1, 5, 5, 1), robust=True)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(x.grad).all() and x.grad.abs().max() == 0
    # mask gradient: detached by default, kept on request
    m = torch.full((1, 5, 5, 1), 0.5, requires_grad=True)
    L.image_photometric_loss(x, torch.zeros(1, 5, 5, 3), m).backward()
    assert m.grad is None
    L.image_photometric_loss(x, torch.zeros(1, 5, 5, 3), m, detach_mask=False).backward()
    assert m.grad is not None and m.grad.abs().max() > 0


# ----------------------------------------------------------------------------------------- landmarks
def test_landmark_loss_matches_numpy_and_ignores_missing():
    rng = np.random.default_rng(4)
    B = 3
    p = rng.uniform(0, 224, (B, 68, 2))
    t = p + rng.normal(0, 3, (B, 68, 2))
    p[:, [5, 40]] = np.nan          # landmarks the model lacks (FaceDecoder gives NaN)
    t[1, [7, 8, 9]] = np.nan        # undetected in image 1
    w = L.deep3d_landmark_weights().numpy()
    assert w.sum() == 68 - 11 + 11 * 20
    ok = np.isfinite(p).all(-1) & np.isfinite(t).all(-1)
    d2 = np.where(ok, ((np.nan_to_num(p) - np.nan_to_num(t)) ** 2).sum(-1), 0)
    ref = np.mean((w * d2).sum(1) / ok.sum(1))
    tp = torch.tensor(p, dtype=torch.float32, requires_grad=True)
    got = L.landmark_loss(tp, torch.tensor(t, dtype=torch.float32), torch.tensor(w))
    assert abs(got.item() - ref) / ref < 1e-5
    got.backward()
    g = tp.grad.numpy()
    assert np.isfinite(g).all() and np.all(g[:, [5, 40]] == 0) and np.all(g[1, [7, 8, 9]] == 0)
    # analytic gradient: 2 w (p - t) / n_valid / B
    i, l = 0, 3
    np.testing.assert_allclose(g[i, l], 2 * w[l] * (p[i, l] - t[i, l]) / ok[i].sum() / B, rtol=1e-4)
    # explicit validity mask and default weights
    valid = np.ones(68, bool)
    valid[:17] = False
    got2 = L.landmark_loss(torch.tensor(np.nan_to_num(p), dtype=torch.float32),
                           torch.tensor(np.nan_to_num(t), dtype=torch.float32), valid=torch.tensor(valid))
    d2b = ((np.nan_to_num(p) - np.nan_to_num(t)) ** 2).sum(-1)
    assert abs(got2.item() - np.mean(d2b[:, 17:].mean(1))) / got2.item() < 1e-5


def test_landmark_loss_errors():
    with pytest.raises(InputError, match="target"):
        L.landmark_loss(torch.zeros(1, 68, 2), torch.zeros(1, 67, 2))
    with pytest.raises(InputError, match="weights"):
        L.landmark_loss(torch.zeros(1, 68, 2), torch.zeros(1, 68, 2), torch.ones(60))


# ----------------------------------------------------------------------------------------- regulariser
def test_coefficient_regularizer_matches_numpy():
    rng = np.random.default_rng(5)
    layout = Code(7, 5, 3)
    flat = rng.normal(size=(4, layout.size))
    blocks = layout.split(torch.tensor(flat, dtype=torch.float32))
    s, e, r = flat[:, 6:13], flat[:, 13:18], flat[:, 18:21]
    ref = np.mean(1.0 * (s ** 2).sum(1) + 0.8 * (e ** 2).sum(1) + 1.7e-2 * (r ** 2).sum(1))
    assert abs(L.coefficient_regularizer(blocks).item() - ref) / ref < 1e-5
    w = {"shape": 2.0, "reflectance": 0.5}
    ref2 = (2.0 * (s ** 2).sum(1) + 0.5 * (r ** 2).sum(1))
    got = L.coefficient_regularizer(torch.tensor(flat, dtype=torch.float32), w, code=layout, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref2, rtol=1e-5)
    # gradient: 2 w x
    x = torch.tensor(flat, dtype=torch.float32, requires_grad=True)
    L.coefficient_regularizer(x, w, code=layout, reduction="sum").backward()
    np.testing.assert_allclose(x.grad.numpy()[:, 6:13], 4.0 * s, rtol=1e-5)
    assert np.all(x.grad.numpy()[:, 13:18] == 0)
    # a model without albedo basis: the reflectance block has size 0 and counts 0
    l0 = Code(7, 5, 0)
    b0 = l0.split(torch.ones(2, l0.size))
    assert abs(L.coefficient_regularizer(b0).item() - (7 + 0.8 * 5)) < 1e-5
    with pytest.raises(InputError, match="code="):
        L.coefficient_regularizer(torch.zeros(2, layout.size))
    with pytest.raises(InputError, match="unknown block"):
        L.coefficient_regularizer(blocks, {"shapes": 1.0})

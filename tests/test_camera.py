"""mofa_tk.Camera against float64 NumPy pinhole formulas, finite differences and the to_clip op."""
import numpy as np
import pytest
import torch

import mofa_tk
from mofa_tk import Camera, InputError


def test_pinhole_defaults_and_validation():
    cam = Camera.pinhole(224)
    assert cam.image_size == (224, 224) and cam.focal == (1015.0, 1015.0) and cam.principal == (112.0, 112.0)
    cam = Camera.pinhole((100, 300), near=5, far=50)
    assert cam.focal == (1015.0 * 100 / 224,) * 2 and cam.principal == (150.0, 50.0)
    for kwargs, name in (({"image_size": 0}, "image_size"), ({"image_size": "x"}, "image_size"),
                         ({"focal": -1.0}, "focal"), ({"focal": (1.0, 2.0, 3.0)}, "focal"),
                         ({"principal": (1.0,)}, "principal"), ({"near": 10, "far": 5}, "near/far")):
        with pytest.raises(InputError, match=name):
            Camera.pinhole(**kwargs)


def test_project_and_its_jacobian():
    cam = Camera.pinhole((80, 120), focal=(300.0, 310.0), principal=(61.0, 39.5), near=1.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)) * 20 + [0, 0, -200]
    uv = cam.project(torch.tensor(x)).numpy()
    d = -x[:, 2]
    np.testing.assert_allclose(uv[:, 0], 61.0 + 300.0 * x[:, 0] / d, rtol=1e-12)
    np.testing.assert_allclose(uv[:, 1], 39.5 - 310.0 * x[:, 1] / d, rtol=1e-12)
    J = cam.project_jacobian(torch.tensor(x)).numpy()
    eps = 1e-6
    for k in range(3):
        e = np.zeros(3)
        e[k] = eps
        fd = (cam.project(torch.tensor(x + e)).numpy() - cam.project(torch.tensor(x - e)).numpy()) / (2 * eps)
        np.testing.assert_allclose(J[:, :, k], fd, rtol=1e-6, atol=1e-9)
    # points nearer than `near` (or behind) stay finite
    assert np.isfinite(cam.project(torch.tensor([[0.0, 1.0, 5.0]])).numpy()).all()


def test_clip_matrix_and_depth_round_trip(backend):
    cam = Camera.pinhole((48, 64), focal=200.0, near=20.0, far=2000.0)
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(1, 30, 3)) * 10 + [0, 0, -300], dtype=torch.float32)
    clip = mofa_tk.to_clip(x, cam.focal, cam.principal, cam.image_size, cam.near, cam.far)
    M = cam.clip_matrix()[0].double().numpy()
    xh = np.concatenate([x[0].double().numpy(), np.ones((30, 1))], 1)
    np.testing.assert_allclose(clip[0].double().numpy(), xh @ M.T, rtol=1e-5, atol=1e-3)
    ndc = clip[0, :, :2] / clip[0, :, 3:]
    H, W = cam.image_size
    uv = cam.project(x[0])
    np.testing.assert_allclose(((ndc + 1) / 2 * torch.tensor([W, H])).numpy(), uv.numpy(), rtol=1e-5, atol=1e-3)
    depth = cam.depth_from_ndc((clip[0, :, 2] / clip[0, :, 3]).double())
    np.testing.assert_allclose(depth.numpy(), -x[0, :, 2].double().numpy(), rtol=1e-5)


def test_scaled_and_uncropped_cameras():
    cam = Camera((100, 200), (400.0, 410.0), (99.0, 51.0), 10.0, 1000.0)
    s = cam.scaled(0.5)
    assert s.image_size == (50, 100) and s.focal == (200.0, 205.0) and s.principal == (49.5, 25.5)
    # crop = 2 * original + (-30, -10): the original camera sees the same rays
    orig = cam.uncropped(2.0, (-30.0, -10.0), (300, 400))
    p = torch.tensor([[12.0, -7.0, -500.0]], dtype=torch.float64)
    assert orig.image_size == (300, 400)
    np.testing.assert_allclose(cam.project(p).numpy(), (2.0 * orig.project(p) + torch.tensor([-30.0, -10.0])).numpy(),
                               rtol=1e-12)

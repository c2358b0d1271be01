"""Image-space derivatives (`mofa_tk.ops.derivatives`: nvdiffrast's rast_db and interpolate's out_da) on every
backend: against finite differences of `rasterize` / `interpolate` themselves under sub-pixel shifts of the
image, and their gradients against float64 finite differences (torch.autograd.gradcheck)."""
import numpy as np
import pytest
import torch

import mofa_tk
from mofa_tk.ops.derivatives import interpolate_derivatives, rast_derivatives
from raster_reference import random_soup

H, W = 24, 32
EPS = 0.05   # pixels


def _shifted(pos, dx=0.0, dy=0.0):
    """Positions whose image is the original shifted by (-dx, -dy) pixels: pixel (i, j) of the shifted image
    samples the original image at (j + 0.5 + dx, i + 0.5 + dy)."""
    p = pos.clone()
    p[..., 0] -= 2.0 * dx / W * p[..., 3]
    p[..., 1] -= 2.0 * dy / H * p[..., 3]
    return p


def _scene(seed=0):
    rng = np.random.default_rng(seed)
    pos, tris = random_soup(rng, 2, 6)
    attr = rng.normal(size=(2, pos.shape[1], 3))
    return torch.tensor(pos, dtype=torch.float32), torch.tensor(tris), torch.tensor(attr, dtype=torch.float32)


def test_rast_db_matches_finite_differences(backend):
    pos, tris, attr = _scene()
    rast = mofa_tk.rasterize(pos, tris, (H, W))
    db = rast_derivatives(pos, tris, rast)
    assert db.shape == (2, H, W, 4)
    assert bool((db[rast[..., 3] == 0] == 0).all())
    out = mofa_tk.interpolate(attr, rast, tris)
    da = interpolate_derivatives(attr, rast, tris, db, [0, 2])
    for k, (dx, dy) in enumerate(((EPS, 0.0), (0.0, EPS))):
        rp = mofa_tk.rasterize(_shifted(pos, dx, dy), tris, (H, W))
        rm = mofa_tk.rasterize(_shifted(pos, -dx, -dy), tris, (H, W))
        same = (rp[..., 3] == rast[..., 3]) & (rm[..., 3] == rast[..., 3]) & (rast[..., 3] > 0)
        assert int(same.sum()) > 100
        fd_uv = (rp[..., :2] - rm[..., :2]) / (2 * EPS)                       # (du, dv) along this axis
        got = db[..., [k, 2 + k]]
        err = (got - fd_uv)[same].abs().max()
        assert float(err) < 1e-2 * float(fd_uv[same].abs().max()) + 1e-4, float(err)
        op = mofa_tk.interpolate(attr, rp, tris)
        om = mofa_tk.interpolate(attr, rm, tris)
        fd_a = ((op - om) / (2 * EPS))[..., [0, 2]]
        got_a = da[..., [k, 2 + k]]
        err = (got_a - fd_a)[same].abs().max()
        assert float(err) < 1e-2 * float(fd_a[same].abs().max()) + 1e-4, float(err)


def test_derivative_gradients_match_finite_differences(backend):
    """torch code over rasterize's triangle ids: checked once, on the cpu backend (fast mode: random
    projections of the Jacobian against float64 central differences)."""
    if backend != "cpu":
        pytest.skip("torch code: backend-independent")
    pos, tris, attr = _scene(1)
    rast = mofa_tk.rasterize(pos, tris, (H, W))
    p64 = pos.double().requires_grad_(True)
    a64 = attr.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: rast_derivatives(p, tris, rast), (p64,), eps=1e-6, atol=1e-5,
                                    fast_mode=True)
    db = rast_derivatives(pos.double(), tris, rast).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, d: interpolate_derivatives(a, rast, tris, d, "all"), (a64, db),
                                    eps=1e-6, atol=1e-5, fast_mode=True)


def test_diff_attrs_checks(backend):
    pos, tris, attr = _scene()
    rast = mofa_tk.rasterize(pos, tris, (H, W))
    db = rast_derivatives(pos, tris, rast)
    with pytest.raises(mofa_tk.InputError, match="diff_attrs"):
        interpolate_derivatives(attr, rast, tris, db, [3])
    assert interpolate_derivatives(attr, rast, tris, db, []).shape == (2, H, W, 0)

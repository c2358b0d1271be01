"""`mofa_tk.texture` on every backend: forward against a NumPy brute-force reference (each filter and boundary
mode, coordinates inside and outside [0, 1]), gradients against float64 finite differences of that reference,
batches (per-item and shared textures), and bad input.
"""
import math

import numpy as np
import pytest
import torch

import mofa_tk
from mofa_tk.errors import InputError

FILTERS = ("nearest", "linear")
BOUNDARIES = ("wrap", "clamp", "zero")


def ref_texture(tex, uv, filt, boundary):
    """Brute force in float64: tex (A, TH, TW, C) with A = 1 (shared) or B; uv (B, H, W, 2)."""
    tex = np.asarray(tex, np.float64)
    uv = np.asarray(uv, np.float64)
    A, TH, TW, C = tex.shape
    B, H, W, _ = uv.shape
    out = np.zeros((B, H, W, C))

    def fetch(a, i, j):
        if boundary == "wrap":
            i, j = i % TH, j % TW
        elif boundary == "clamp":
            i, j = min(max(i, 0), TH - 1), min(max(j, 0), TW - 1)
        elif not (0 <= i < TH and 0 <= j < TW):
            return np.zeros(C)
        return tex[a, i, j]

    for b in range(B):
        a = 0 if A == 1 else b
        for y in range(H):
            for x in range(W):
                u, v = uv[b, y, x]
                if filt == "nearest":
                    out[b, y, x] = fetch(a, math.floor(v * TH), math.floor(u * TW))
                else:
                    px, py = u * TW - 0.5, v * TH - 0.5
                    j0, i0 = math.floor(px), math.floor(py)
                    fx, fy = px - j0, py - i0
                    out[b, y, x] = ((1 - fx) * (1 - fy) * fetch(a, i0, j0) + fx * (1 - fy) * fetch(a, i0, j0 + 1)
                                    + (1 - fx) * fy * fetch(a, i0 + 1, j0) + fx * fy * fetch(a, i0 + 1, j0 + 1))
    return out


def _uv(rng, B, H, W, TH, TW, lo=-0.6, hi=1.6, margin=0.05, filt="linear"):
    """Random coordinates in [lo, hi) kept `margin` (in texels) away from the points where the reference
    changes branch (texel edges for nearest, texel centres for linear), so float32 rounding cannot flip one."""
    uv = rng.uniform(lo, hi, (B, H, W, 2))
    for k, n in ((0, TW), (1, TH)):
        t = uv[..., k] * n - (0.0 if filt == "nearest" else 0.5)
        f = t - np.floor(t)
        f = np.clip(f, margin, 1 - margin)
        uv[..., k] = (np.floor(t) + f + (0.0 if filt == "nearest" else 0.5)) / n
    return uv.astype(np.float32)


@pytest.mark.parametrize("filt", FILTERS)
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_forward_matches_numpy(backend, filt, boundary):
    rng = np.random.default_rng(hash((filt, boundary)) % 1000)
    tex = rng.uniform(-1, 1, (2, 5, 7, 3)).astype(np.float32)
    uv = _uv(rng, 2, 6, 9, 5, 7, filt=filt)
    out = mofa_tk.texture(torch.from_numpy(tex), torch.from_numpy(uv), filter_mode=filt, boundary_mode=boundary)
    assert out.shape == (2, 6, 9, 3) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref_texture(tex, uv, filt, boundary), atol=2e-5)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_batch_and_shared_texture(backend, boundary):
    """A (TH, TW, C) or (1, ...) texture is shared by every item; per-item textures give each item its own
    result; both equal calls one item at a time. One texel and one channel work too."""
    rng = np.random.default_rng(5)
    tex = torch.from_numpy(rng.uniform(0, 1, (3, 4, 6, 2)).astype(np.float32))
    uv = torch.from_numpy(_uv(rng, 3, 5, 5, 4, 6))
    full = mofa_tk.texture(tex, uv, boundary_mode=boundary)
    for b in range(3):
        one = mofa_tk.texture(tex[b:b + 1], uv[b:b + 1], boundary_mode=boundary)
        assert torch.allclose(full[b], one[0], atol=1e-6)
    shared = mofa_tk.texture(tex[0], uv, boundary_mode=boundary)
    np.testing.assert_allclose(shared.numpy(), ref_texture(tex[:1].numpy(), uv.numpy(), "linear", boundary),
                               atol=2e-5)
    single = torch.full((1, 1, 1, 1), 0.25)
    out = mofa_tk.texture(single, uv[:, :2, :2], boundary_mode="clamp")
    assert torch.allclose(out, torch.full((3, 2, 2, 1), 0.25))


def _fd(fn, x, eps):
    """Central differences (float64) of scalar fn at x (any shape)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (fn(xp) - fn(xm)) / (2 * eps)
    return g


@pytest.mark.parametrize("filt", FILTERS)
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_gradients_match_finite_differences(backend, filt, boundary):
    rng = np.random.default_rng(11)
    tex = rng.uniform(-1, 1, (2, 3, 4, 2))
    uv = _uv(rng, 2, 3, 3, 3, 4, margin=0.15, filt=filt).astype(np.float64)
    w = rng.normal(size=(2, 3, 3, 2))
    t = torch.tensor(tex, dtype=torch.float32, requires_grad=True)
    u = torch.tensor(uv, dtype=torch.float32, requires_grad=True)
    (mofa_tk.texture(t, u, filter_mode=filt, boundary_mode=boundary) * torch.from_numpy(w).float()).sum().backward()
    g_tex = _fd(lambda x: (ref_texture(x, uv, filt, boundary) * w).sum(), tex, 1e-3)
    g_uv = _fd(lambda x: (ref_texture(tex, x, filt, boundary) * w).sum(), uv, 1e-5)
    np.testing.assert_allclose(t.grad.numpy(), g_tex, atol=1e-4)
    scale = np.abs(g_uv).max() + 1.0
    np.testing.assert_allclose(u.grad.numpy(), g_uv, atol=2e-3 * scale)
    if filt == "linear":
        assert np.abs(g_uv).max() > 0.1                       # the check is not vacuous
    else:
        assert np.abs(u.grad.numpy()).max() == 0.0


def test_shared_texture_gradient_sums_over_the_batch(backend):
    rng = np.random.default_rng(2)
    tex = torch.tensor(rng.uniform(0, 1, (1, 4, 4, 3)), dtype=torch.float32, requires_grad=True)
    uv = torch.from_numpy(_uv(rng, 3, 4, 4, 4, 4))
    mofa_tk.texture(tex, uv).sum().backward()
    parts = []
    for b in range(3):
        t = tex.detach().clone().requires_grad_(True)
        mofa_tk.texture(t, uv[b:b + 1]).sum().backward()
        parts.append(t.grad)
    assert torch.allclose(tex.grad, sum(parts), atol=1e-5)


def test_texture_bad_input(backend):
    tex = torch.zeros(1, 4, 4, 3)
    uv = torch.zeros(1, 2, 2, 2)
    with pytest.raises(InputError, match="filter_mode"):
        mofa_tk.texture(tex, uv, filter_mode="cubic")
    with pytest.raises(InputError, match="boundary_mode"):
        mofa_tk.texture(tex, uv, boundary_mode="mirror")
    with pytest.raises(InputError, match="uv: expected shape"):
        mofa_tk.texture(tex, torch.zeros(1, 2, 2, 3))
    with pytest.raises(InputError, match="tex: batch size"):
        mofa_tk.texture(torch.zeros(2, 4, 4, 3), torch.zeros(3, 2, 2, 2))
    with pytest.raises(InputError, match="uv"):
        mofa_tk.texture(tex, torch.full((1, 2, 2, 2), float("nan")))
    with pytest.raises(InputError, match="at least one texel"):
        mofa_tk.texture(torch.zeros(1, 0, 4, 3), uv)
    # huge but finite coordinates stay exact (reduced before indexing)
    rng = np.random.default_rng(0)
    t = torch.from_numpy(rng.uniform(0, 1, (1, 4, 4, 1)).astype(np.float32))
    far = torch.tensor([[[[10000.25, -1999.375]]]])                 # exact in float32
    near = torch.tensor([[[[0.25, 0.625]]]])
    assert torch.allclose(mofa_tk.texture(t, far), mofa_tk.texture(t, near), atol=1e-5)
    assert torch.allclose(mofa_tk.texture(t, far, boundary_mode="zero"), torch.zeros(1, 1, 1, 1))

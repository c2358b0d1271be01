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


# ------------------------------------------------------------------------------------------------ mipmaps
def ref_pyramid(tex):
    """2 x 2 averages down to 1 x 1 (a side of odd length drops its last texel, a side of 1 stays 1)."""
    levels = [np.asarray(tex, np.float64)]
    while max(levels[-1].shape[1:3]) > 1:
        t = levels[-1]
        kh, kw = min(2, t.shape[1]), min(2, t.shape[2])
        h, w = t.shape[1] // kh, t.shape[2] // kw
        t = t[:, :h * kh, :w * kw].reshape(t.shape[0], h, kh, w, kw, t.shape[3]).mean(axis=(2, 4))
        levels.append(t)
    return levels


def ref_texture_mip(tex, uv, uv_da, bias, filt, boundary):
    mips = ref_pyramid(tex)
    L = len(mips)
    TH, TW = mips[0].shape[1:3]
    uv_da = np.asarray(uv_da, np.float64)
    dx2 = (uv_da[..., 0] * TW) ** 2 + (uv_da[..., 2] * TH) ** 2
    dy2 = (uv_da[..., 1] * TW) ** 2 + (uv_da[..., 3] * TH) ** 2
    lam = 0.5 * np.log2(np.maximum(dx2, dy2)) + (0.0 if bias is None else bias)
    lam = np.clip(lam, 0, L - 1)
    B, H, W = uv.shape[:3]
    out = np.zeros((B, H, W, mips[0].shape[3]))
    for b in range(B):
        a = 0 if mips[0].shape[0] == 1 else b
        for y in range(H):
            for x in range(W):
                one = uv[b:b + 1, y:y + 1, x:x + 1]
                sample = lambda k: ref_texture(mips[k][a:a + 1], one, "linear", boundary)[0, 0, 0]
                if filt == "linear-mipmap-nearest":
                    out[b, y, x] = sample(min(int(math.floor(lam[b, y, x] + 0.5)), L - 1))
                else:
                    l0 = int(math.floor(lam[b, y, x]))
                    t = lam[b, y, x] - l0
                    l1 = min(l0 + 1, L - 1)
                    out[b, y, x] = (1 - t) * sample(l0) + t * sample(l1)
    return out, lam


def _uv_da(rng, B, H, W, TW, lo=-0.5, hi=4.5):
    """Footprints whose mip levels 0.5 log2(...) have fractional parts away from 0 and 0.5 (no branch flips in
    float32), some beyond the last level."""
    lam = np.floor(rng.uniform(lo, hi, (B, H, W))) + rng.choice([0.2, 0.3, 0.7, 0.8], (B, H, W))
    da = np.zeros((B, H, W, 4))
    da[..., 0] = 2.0 ** lam / TW                       # du/dx: footprint 2^lam texels along x
    da[..., 3] = 0.3 * 2.0 ** lam / TW                 # dv/dy: shorter
    da[..., 1] = rng.uniform(-0.1, 0.1, (B, H, W)) * 2.0 ** lam / TW
    return da


@pytest.mark.parametrize("filt", ["linear-mipmap-nearest", "linear-mipmap-linear"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_mipmap_forward_matches_numpy(backend, filt, boundary):
    rng = np.random.default_rng(21)
    tex = rng.uniform(0, 1, (2, 16, 8, 3)).astype(np.float32)       # 5 levels: 16x8, 8x4, 4x2, 2x1, 1x1
    uv = _uv(rng, 2, 4, 5, 16, 8)
    da = _uv_da(rng, 2, 4, 5, 8).astype(np.float32)
    out = mofa_tk.texture(torch.from_numpy(tex), torch.from_numpy(uv), uv_da=torch.from_numpy(da), filter_mode=filt,
                          boundary_mode=boundary)
    ref, lam = ref_texture_mip(tex, uv, da, None, filt, boundary)
    assert lam.min() == 0 and lam.max() == 4 and ((lam > 0) & (lam < 4)).mean() > 0.5   # all kinds of levels
    np.testing.assert_allclose(out.numpy(), ref, atol=3e-5)


def test_mipmap_options(backend):
    """auto = trilinear with uv_da; level 0 everywhere = bilinear; a bias shifts the level; a prebuilt pyramid
    gives the same result; max_mip_level stops the pyramid (and the level) early."""
    rng = np.random.default_rng(4)
    tex = torch.from_numpy(rng.uniform(0, 1, (1, 8, 8, 2)).astype(np.float32))
    uv = torch.from_numpy(_uv(rng, 2, 3, 3, 8, 8))
    da = torch.from_numpy(_uv_da(rng, 2, 3, 3, 8, lo=0.0, hi=2.0).astype(np.float32))
    tri = mofa_tk.texture(tex, uv, uv_da=da, filter_mode="linear-mipmap-linear")
    assert torch.equal(mofa_tk.texture(tex, uv, uv_da=da), tri)
    assert torch.equal(mofa_tk.texture(tex, uv, uv_da=da, mip=mofa_tk.texture_construct_mip(tex)), tri)
    tiny = torch.full_like(da, 1e-4)
    assert torch.allclose(mofa_tk.texture(tex, uv, uv_da=tiny), mofa_tk.texture(tex, uv), atol=1e-6)
    bias = torch.full(uv.shape[:3], 0.5)
    ref, _ = ref_texture_mip(tex.numpy(), uv.numpy(), da.numpy(), bias.numpy(), "linear-mipmap-linear", "wrap")
    np.testing.assert_allclose(mofa_tk.texture(tex, uv, uv_da=da, mip_level_bias=bias).numpy(), ref, atol=3e-5)
    huge = torch.full_like(da, 10.0)
    level1 = ref_pyramid(tex.numpy())[1]
    np.testing.assert_allclose(mofa_tk.texture(tex, uv, uv_da=huge, max_mip_level=1).numpy(),
                               ref_texture(level1, uv.numpy(), "linear", "wrap"), atol=3e-5)
    assert [tuple(m.shape) for m in mofa_tk.texture_construct_mip(torch.zeros(1, 5, 3, 1))] == \
        [(1, 5, 3, 1), (1, 2, 1, 1), (1, 1, 1, 1)]
    with pytest.raises(InputError, match="uv_da: expected shape"):
        mofa_tk.texture(tex, uv, uv_da=da[..., :2])
    with pytest.raises(InputError, match="mip"):
        mofa_tk.texture(tex, uv, uv_da=da, mip=mofa_tk.texture_construct_mip(tex[:, :4]))


@pytest.mark.parametrize("boundary", ["wrap", "clamp"])
def test_mipmap_gradients_match_finite_differences(backend, boundary):
    """Trilinear: d/d tex (through the pyramid), d/d uv and d/d uv_da (through the level) against float64
    central differences of the reference."""
    rng = np.random.default_rng(9)
    tex = rng.uniform(0, 1, (1, 8, 4, 2))
    uv = _uv(rng, 1, 3, 3, 8, 4, margin=0.2).astype(np.float64)
    da = _uv_da(rng, 1, 3, 3, 4, lo=0.0, hi=2.9)
    w = rng.normal(size=(1, 3, 3, 2))
    filt = "linear-mipmap-linear"
    t = torch.tensor(tex, dtype=torch.float32, requires_grad=True)
    u = torch.tensor(uv, dtype=torch.float32, requires_grad=True)
    d = torch.tensor(da, dtype=torch.float32, requires_grad=True)
    (mofa_tk.texture(t, u, uv_da=d, filter_mode=filt, boundary_mode=boundary) * torch.from_numpy(w).float()).sum() \
        .backward()
    f = lambda tx, uu, dd: (ref_texture_mip(tx, uu, dd, None, filt, boundary)[0] * w).sum()
    g_tex = _fd(lambda x: f(x, uv, da), tex, 1e-3)
    g_uv = _fd(lambda x: f(tex, x, da), uv, 1e-5)
    g_da = _fd(lambda x: f(tex, uv, x), da, 1e-6)
    np.testing.assert_allclose(t.grad.numpy(), g_tex, atol=1e-4)
    np.testing.assert_allclose(u.grad.numpy(), g_uv, atol=2e-3 * (np.abs(g_uv).max() + 1))
    np.testing.assert_allclose(d.grad.numpy(), g_da, rtol=2e-3, atol=2e-3 * (np.abs(g_da).max() + 1))
    assert np.abs(g_da).max() > 0.01 and np.abs(g_uv).max() > 0.1


# ------------------------------------------------------------------------------------------------ cube maps
_CUBE = {0: ((0, 0, -1), (0, -1, 0), (1, 0, 0)), 1: ((0, 0, 1), (0, -1, 0), (-1, 0, 0)),
         2: ((1, 0, 0), (0, 0, 1), (0, 1, 0)), 3: ((1, 0, 0), (0, 0, -1), (0, -1, 0)),
         4: ((1, 0, 0), (0, -1, 0), (0, 0, 1)), 5: ((-1, 0, 0), (0, -1, 0), (0, 0, -1))}


def ref_cube_face(d):
    """OpenGL cube-map face and (s, t) of one direction (float64)."""
    a = np.abs(d)
    if a[0] >= a[1] and a[0] >= a[2]:
        f = 0 if d[0] >= 0 else 1
    elif a[1] >= a[2]:
        f = 2 if d[1] >= 0 else 3
    else:
        f = 4 if d[2] >= 0 else 5
    sc, tc, ma = (np.dot(np.array(v, float), d) for v in _CUBE[f])
    return f, (sc / ma + 1) / 2, (tc / ma + 1) / 2


def ref_texture_cube(tex, dirs, uv_da=None, filt="linear"):
    """Each direction sampled bilinearly on its face (clamped half a texel inside it); with uv_da, trilinear
    between the face's own pyramid levels, the level from finite differences of (s, t) along uv_da."""
    tex = np.asarray(tex, np.float64)
    B, H, W = dirs.shape[:3]
    S = tex.shape[2]
    out = np.zeros((B, H, W, tex.shape[4]))
    for b in range(B):
        a = 0 if tex.shape[0] == 1 else b
        for y in range(H):
            for x in range(W):
                d = dirs[b, y, x].astype(np.float64)
                f, s, t = ref_cube_face(d)
                h = 0.5 / S
                uv = np.array([[[[min(max(s, h), 1 - h), min(max(t, h), 1 - h)]]]])
                pyr = ref_pyramid(tex[a:a + 1, f])
                if uv_da is None:
                    out[b, y, x] = ref_texture(pyr[0], uv, "linear", "clamp")[0, 0, 0]
                    continue
                e = 1e-6
                grads = []
                for k in range(2):
                    dd = uv_da[b, y, x, k::2].astype(np.float64)
                    _, s1, t1 = ref_cube_face(d + e * dd)
                    _, s0, t0 = ref_cube_face(d - e * dd)
                    grads.append(((s1 - s0) / (2 * e) * S, (t1 - t0) / (2 * e) * S))
                lam = 0.5 * math.log2(max(grads[0][0] ** 2 + grads[0][1] ** 2, grads[1][0] ** 2 + grads[1][1] ** 2))
                lam = min(max(lam, 0.0), len(pyr) - 1)
                l0 = int(math.floor(lam))
                l1, tt = min(l0 + 1, len(pyr) - 1), lam - l0
                s0 = ref_texture(pyr[l0], uv, "linear", "clamp")[0, 0, 0]
                s1 = ref_texture(pyr[l1], uv, "linear", "clamp")[0, 0, 0]
                out[b, y, x] = (1 - tt) * s0 + tt * s1
    return out


def _dirs(rng, B, H, W, inner=0.35):
    """Random directions whose face coordinates stay within `inner` of the face centre (no edge effects)."""
    out = np.zeros((B, H, W, 3))
    for idx in np.ndindex(B, H, W):
        f = rng.integers(6)
        s, t = rng.uniform(0.5 - inner, 0.5 + inner, 2)
        a_s, a_t, a_m = (np.array(v, float) for v in _CUBE[f])
        out[idx] = a_m + (2 * s - 1) * a_s + (2 * t - 1) * a_t          # s_c / m = 2 s - 1, ...
        out[idx] *= rng.uniform(0.5, 2.0)
    return out.astype(np.float32)


def test_cube_map_forward_and_gradients(backend):
    rng = np.random.default_rng(31)
    tex = rng.uniform(0, 1, (1, 6, 8, 8, 2)).astype(np.float32)
    dirs = _dirs(rng, 2, 3, 4)
    out = mofa_tk.texture(torch.from_numpy(tex), torch.from_numpy(dirs), boundary_mode="cube")
    np.testing.assert_allclose(out.numpy(), ref_texture_cube(tex, dirs), atol=3e-5)
    # gradients w.r.t. the cube map and the directions against float64 finite differences
    w = rng.normal(size=(2, 3, 4, 2))
    t = torch.tensor(tex, requires_grad=True)
    d = torch.tensor(dirs, requires_grad=True)
    (mofa_tk.texture(t, d, boundary_mode="cube") * torch.from_numpy(w).float()).sum().backward()
    g_tex = _fd(lambda x: (ref_texture_cube(x, dirs) * w).sum(), tex.astype(np.float64), 1e-3)
    g_dir = _fd(lambda x: (ref_texture_cube(tex, x) * w).sum(), dirs.astype(np.float64), 1e-5)
    np.testing.assert_allclose(t.grad.numpy(), g_tex, atol=1e-4)
    np.testing.assert_allclose(d.grad.numpy(), g_dir, atol=2e-3 * (np.abs(g_dir).max() + 1))
    assert np.abs(g_dir).max() > 0.05
    # mipmapped: the level from the directions' screen derivatives (uv_da (B, H, W, 6))
    da = (rng.normal(size=(2, 3, 4, 6)) * 10.0 ** rng.uniform(-2.2, -0.8, (2, 3, 4, 1))).astype(np.float32)
    out = mofa_tk.texture(torch.from_numpy(tex), torch.from_numpy(dirs), uv_da=torch.from_numpy(da),
                          boundary_mode="cube")
    np.testing.assert_allclose(out.numpy(), ref_texture_cube(tex, dirs, da), atol=1e-4)
    with pytest.raises(InputError, match="uv: expected shape"):
        mofa_tk.texture(torch.from_numpy(tex), torch.zeros(1, 2, 2, 2), boundary_mode="cube")
    with pytest.raises(InputError, match="zero"):
        mofa_tk.texture(torch.from_numpy(tex), torch.zeros(1, 2, 2, 3), boundary_mode="cube")

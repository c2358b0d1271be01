"""`mofa_tk.dr`, the nvdiffrast-compatible names, on every backend: code written for nvdiffrast.torch runs with
only the import changed, and each function returns what the mofa_tk op it maps to returns (range mode against
per-range calls, pos_gradient_boost against the plain gradient)."""
import numpy as np
import pytest
import torch

import mofa_tk
import mofa_tk.dr as dr
from raster_reference import random_soup


def _scene(seed=0, B=2):
    rng = np.random.default_rng(seed)
    pos, tris = random_soup(rng, B, 8)
    uv = rng.uniform(0, 1, (pos.shape[1], 2))
    tex = rng.uniform(0, 1, (1, 16, 16, 3))
    return (torch.tensor(pos, dtype=torch.float32), torch.tensor(tris, dtype=torch.int32),
            torch.tensor(uv, dtype=torch.float32), torch.tensor(tex, dtype=torch.float32))


def test_nvdiffrast_style_pipeline(backend):
    pos, tri, uv, tex = _scene()
    pos.requires_grad_(True)
    tex.requires_grad_(True)
    glctx = dr.RasterizeCudaContext()
    rast, rast_db = dr.rasterize(glctx, pos, tri, resolution=[32, 48])
    texc, texd = dr.interpolate(uv[None], rast, tri, rast_db=rast_db, diff_attrs="all")
    color = dr.texture(tex, texc, texd, filter_mode="linear-mipmap-linear")
    color = dr.antialias(color, rast, pos, tri)
    color.sum().backward()
    assert rast.shape == (2, 32, 48, 4) and rast_db.shape == (2, 32, 48, 4) and texd.shape == (2, 32, 48, 4)
    assert pos.grad is not None and tex.grad is not None and bool(torch.isfinite(pos.grad).all())
    # the same as the mofa_tk ops
    ref = mofa_tk.rasterize(pos.detach(), tri, (32, 48))
    assert torch.equal(rast.detach(), ref)
    out, out_da = dr.interpolate(uv[None], rast, tri)
    assert torch.equal(out, mofa_tk.interpolate(uv[None], ref, tri)) and out_da.shape == (2, 32, 48, 0)
    _, no_db = dr.rasterize(glctx, pos.detach(), tri, (32, 48), grad_db=False)
    assert no_db.shape == (2, 32, 48, 0)
    assert dr.get_log_level() in (0, 1, 2, 3)
    dr.set_log_level(2)
    assert dr.get_log_level() == 2


def test_range_mode_equals_per_range_calls(backend):
    pos, tri, _, _ = _scene(1, B=1)
    p = pos[0]
    ranges = torch.tensor([[0, 3], [3, 5], [2, 0]], dtype=torch.int32)
    rast, rast_db = dr.rasterize(dr.RasterizeGLContext(), p, tri, (24, 24), ranges=ranges)
    assert rast.shape == (3, 24, 24, 4) and rast_db.shape == (3, 24, 24, 4)
    for n, (first, count) in enumerate(ranges.tolist()):
        if count == 0:
            assert bool((rast[n] == 0).all())
            continue
        ref = mofa_tk.rasterize(p, tri[first:first + count], (24, 24))[0]
        ids = torch.where(ref[..., 3] > 0, ref[..., 3] + first, ref[..., 3])
        assert torch.equal(rast[n, ..., :3], ref[..., :3]) and torch.equal(rast[n, ..., 3], ids)
    # antialias with the shared 2-D pos and a topology "hash"
    color = torch.rand(3, 24, 24, 3)
    h = dr.antialias_construct_topology_hash(tri)
    out = dr.antialias(color, rast, p, tri, topology_hash=h)
    assert torch.allclose(out, mofa_tk.antialias(color, rast, p[None].expand(3, -1, -1).contiguous(), tri))
    with pytest.raises(mofa_tk.InputError, match="ranges"):
        dr.rasterize(None, p, tri, (8, 8), ranges=torch.tensor([[6, 5]]))


def test_pos_gradient_boost_scales_the_position_gradient(backend):
    pos, tri, _, _ = _scene(2)
    rast, _ = dr.rasterize(None, pos, tri, (32, 32), grad_db=False)
    color = torch.rand(2, 32, 32, 3)
    grads = []
    for k in (1.0, 3.0):
        p = pos.clone().requires_grad_(True)
        (dr.antialias(color, rast, p, tri, pos_gradient_boost=k) * color).sum().backward()
        grads.append(p.grad)
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[1], 3.0 * grads[0], rtol=1e-6, atol=1e-7)


def test_unsupported_options_are_refused(backend):
    pos, tri, uv, tex = _scene()
    cube = torch.rand(1, 6, 4, 4, 3)
    assert dr.texture(cube, torch.randn(1, 4, 4, 3), boundary_mode="cube").shape == (1, 4, 4, 3)
    with pytest.raises(mofa_tk.InputError, match="tex: expected shape"):
        dr.texture(tex, torch.rand(1, 4, 4, 3), boundary_mode="cube")
    with pytest.raises(mofa_tk.InputError, match="cube"):
        dr.texture_construct_mip(tex, cube_mode=True)
    rast, _ = dr.rasterize(None, pos, tri, (8, 8))
    with pytest.raises(mofa_tk.InputError, match="rast_db"):
        dr.interpolate(uv[None], rast, tri, diff_attrs="all")
    with pytest.raises(mofa_tk.InputError, match="range mode|instanced"):
        dr.rasterize(None, pos[0], tri, (8, 8))


def test_depth_peeler_returns_the_layers_front_to_back(backend):
    """Overlapping random triangles: layer k of the peeler holds, per pixel, the k-th nearest covering triangle
    of a brute-force NumPy search (ids and z/w), and layers run out where pixels run out of surfaces."""
    from raster_reference import pixel_centres_ndc, tri_screen_bary

    rng = np.random.default_rng(3)
    pos, tris = random_soup(rng, 2, 30)
    H, W = 32, 40
    sx, sy = pixel_centres_ndc(H, W)
    hits = [[[[] for _ in range(W)] for _ in range(H)] for _ in range(2)]
    for b in range(2):
        for t, tri in enumerate(tris):
            p = pos[b, tri]
            lam = tri_screen_bary(p, sx, sy)
            if lam is None:
                continue
            zw = (lam * (p[:, 2] / p[:, 3])[:, None, None]).sum(0)
            inside = (lam >= 0).all(0) & (zw >= -1) & (zw <= 1)
            margin = np.abs(lam).min(0) > 1e-4                       # away from edges (float32 tie-breaks)
            for i, j in zip(*np.nonzero(inside)):
                hits[b][i][j].append((zw[i, j], t + 1, bool(margin[i, j])))
    pos_t = torch.tensor(pos, dtype=torch.float32)
    tri_t = torch.tensor(tris)
    checked = deep = 0
    with dr.DepthPeeler(None, pos_t, tri_t, (H, W)) as peeler:
        for k in range(4):
            rast, rast_db = peeler.rasterize_next_layer()
            assert rast_db.shape == (2, H, W, 4)
            for b in range(2):
                for i in range(H):
                    for j in range(W):
                        layers = sorted(hits[b][i][j])
                        if not all(m for _, _, m in layers):
                            continue
                        if k < len(layers):
                            assert int(rast[b, i, j, 3]) == layers[k][1], (k, b, i, j)
                            assert abs(float(rast[b, i, j, 2]) - layers[k][0]) < 1e-5
                            checked += 1
                            deep += k > 0
                        else:
                            assert float(rast[b, i, j, 3]) == 0.0
    assert checked > 300 and deep > 150, (checked, deep)
    # the first layer is plain rasterize
    with dr.DepthPeeler(None, pos_t, tri_t, (H, W)) as peeler:
        assert torch.equal(peeler.rasterize_next_layer()[0], mofa_tk.rasterize(pos_t, tri_t, (H, W)))

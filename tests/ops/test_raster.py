"""rasterize / interpolate / antialias against brute-force NumPy references and finite differences."""
import numpy as np
import pytest
import torch

import mofa_tk
from helpers import numeric_grad, rel_err
from raster_reference import random_soup, rasterize_ref, rast_values_for_ids


def f32(a):
    return torch.tensor(np.asarray(a), dtype=torch.float32)


@pytest.mark.parametrize("H,W", [(32, 32), (48, 80), (65, 33)])
def test_rasterize_matches_bruteforce(backend, H, W):
    rng = np.random.default_rng(H * 1000 + W)
    pos, tris = random_soup(rng, B=2, T=40)
    pos32 = np.asarray(pos, np.float32)
    rast = mofa_tk.rasterize(f32(pos32), torch.tensor(tris), (H, W)).numpy()
    ref = rasterize_ref(pos32.astype(np.float64), tris, H, W)
    assert rast.shape == (2, H, W, 4)
    same = rast[..., 3] == ref[..., 3]
    assert same.mean() >= 0.999, f"triangle ids agree on {same.mean():.4%} of pixels"
    covered = same & (ref[..., 3] > 0)
    assert covered.sum() > 0.3 * H * W
    np.testing.assert_allclose(rast[covered][:, :3], ref[covered][:, :3], atol=1e-5)
    assert (rast[~(ref[..., 3] > 0) & same] == 0).all()
    # B = 1 against item 1 of B = 2 (the CPU resolves runs of 16 pixels of a row; W = 33 is not a multiple)
    one = mofa_tk.rasterize(f32(pos32[1:]), torch.tensor(tris), (H, W)).numpy()
    np.testing.assert_array_equal(one[0], rast[1])


def test_rasterize_is_deterministic_and_ties_go_to_lowest_id(backend):
    rng = np.random.default_rng(1)
    pos, tris = random_soup(rng, B=1, T=30)
    a = mofa_tk.rasterize(f32(pos), torch.tensor(tris), (40, 40))
    b = mofa_tk.rasterize(f32(pos), torch.tensor(tris), (40, 40))
    assert torch.equal(a, b)
    # identical triangles: every covered pixel must report the lowest id (triangle 1 -> id 2)
    p = f32([[[-0.9, -0.9, 0.1, 1], [0.9, -0.9, 0.1, 1], [0, 0.9, 0.1, 1]]])
    r = mofa_tk.rasterize(p, torch.tensor([[0, 1, 0], [0, 1, 2], [0, 1, 2], [0, 1, 2]]), (16, 16))
    ids = r[..., 3]
    assert (ids > 0).sum() > 50 and set(ids.unique().tolist()) == {0.0, 2.0}


def test_rast_grad_matches_finite_differences(backend):
    rng = np.random.default_rng(2)
    H, W = 24, 28
    pos, tris = random_soup(rng, B=2, T=12, overlap=False)
    pos = pos.astype(np.float32).astype(np.float64)
    pt = torch.tensor(pos, dtype=torch.float32, requires_grad=True)
    rast = mofa_tk.rasterize(pt, torch.tensor(tris), (H, W))
    ids = rast[..., 3].detach().numpy()
    wts = rng.normal(size=(2, H, W, 3))
    (rast[..., :3] * f32(wts)).sum().backward()
    num = numeric_grad(lambda p: (rast_values_for_ids(p, tris, ids, H, W) * wts).sum(), pos, eps=1e-5)
    assert rel_err(pt.grad.numpy(), num) < 1e-3, rel_err(pt.grad.numpy(), num)
    # B = 1 (on the CPU the backward loops over runs of 16 pixels; W = 28 is not a multiple): item 0's gradient
    p1 = pt[:1].detach().requires_grad_(True)
    (mofa_tk.rasterize(p1, torch.tensor(tris), (H, W))[..., :3] * f32(wts[:1])).sum().backward()
    torch.testing.assert_close(p1.grad, pt.grad[:1], rtol=1e-5, atol=1e-6)
    # the z/w channel alone
    pt.grad = None
    rast = mofa_tk.rasterize(pt, torch.tensor(tris), (H, W))
    rast[..., 2].sum().backward()
    num = numeric_grad(lambda p: rast_values_for_ids(p, tris, ids, H, W)[..., 2].sum(), pos, eps=1e-5)
    assert rel_err(pt.grad.numpy(), num) < 1e-3


@pytest.mark.parametrize("C", [3, 5])  # 3: channel loops unrolled at compile time; 5: run-time loops
def test_interpolate_forward_and_grads(backend, C):
    rng = np.random.default_rng(3)
    H, W = 20, 26
    pos, tris = random_soup(rng, B=2, T=10, overlap=False)
    pos = pos.astype(np.float32).astype(np.float64)
    V = pos.shape[1]
    attr = rng.normal(size=(2, V, C))
    pt = torch.tensor(pos, dtype=torch.float32, requires_grad=True)
    at = torch.tensor(attr, dtype=torch.float32, requires_grad=True)
    rast = mofa_tk.rasterize(pt, torch.tensor(tris), (H, W))
    out = mofa_tk.interpolate(at, rast, torch.tensor(tris))
    ids = rast[..., 3].detach().numpy()

    def ref(p, a):
        r = rast_values_for_ids(p, tris, ids, H, W)
        res = np.zeros((2, H, W, a.shape[-1]))
        for b in range(2):
            m = ids[b] > 0
            t = tris[ids[b][m].astype(int) - 1]
            u, v = r[b, m, 0], r[b, m, 1]
            res[b, m] = (1 - u - v)[:, None] * a[b, t[:, 0]] + u[:, None] * a[b, t[:, 1]] + v[:, None] * a[b, t[:, 2]]
        return res

    np.testing.assert_allclose(out.detach().numpy(), ref(pos, attr), atol=2e-5)
    wts = rng.normal(size=out.shape)
    (out * f32(wts)).sum().backward()
    num_a = numeric_grad(lambda a: (ref(pos, a) * wts).sum(), attr)
    num_p = numeric_grad(lambda p: (ref(p, attr) * wts).sum(), pos, eps=1e-5)
    assert rel_err(at.grad.numpy(), num_a) < 1e-4
    assert rel_err(pt.grad.numpy(), num_p) < 1e-3
    # attributes without a gradient (the backward then skips their adjoint): the same position gradient
    p2 = pt.detach().requires_grad_(True)
    out_c = mofa_tk.interpolate(at.detach(), mofa_tk.rasterize(p2, torch.tensor(tris), (H, W)), torch.tensor(tris))
    (out_c * f32(wts)).sum().backward()
    torch.testing.assert_close(p2.grad, pt.grad, rtol=1e-5, atol=1e-6)
    # shared (V, C) attributes broadcast over the batch and accumulate their gradient
    shared = torch.tensor(attr[0], dtype=torch.float32, requires_grad=True)
    out2 = mofa_tk.interpolate(shared, rast.detach(), torch.tensor(tris))
    np.testing.assert_allclose(out2[0].detach().numpy(), out[0].detach().numpy(), atol=1e-6)
    out2.sum().backward()
    assert shared.grad.shape == (V, C)


def _triangle_scene(rng_shift=0.0):
    # one front-facing triangle covering part of the image, at depth w = 2
    p = np.array([[-0.55 + rng_shift, -0.6, 0.0, 1.0], [0.62, -0.41, 0.0, 1.0], [-0.1, 0.7, 0.0, 1.0]])
    return p * 2.0


def _coverage_area_pixels(p, H, W):
    x = (p[:, 0] / p[:, 3] + 1) * W / 2
    y = (p[:, 1] / p[:, 3] + 1) * H / 2
    return 0.5 * abs((x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0]))


def test_antialias_gradient_matches_supersampled_reference(backend):
    """d(sum of antialiased image)/d(vertex) vs the exact coverage-area derivative.

    A white triangle on black: the supersampled (limit: exact) image sum is the triangle's area in pixels,
    whose derivative is analytic. Antialiasing approximates coverage per pixel pair; the error shrinks with
    the edge length in pixels (measured on this scene: <= 11% at 64 px, <= 4% at 128 px, <= 1% at 256 px),
    so at 128 px we allow 5%.
    """
    H, W = 128, 128
    p = _triangle_scene()
    tris = torch.tensor([[0, 1, 2]])
    pt = torch.tensor(p[None], dtype=torch.float32, requires_grad=True)
    rast = mofa_tk.rasterize(pt, tris, (H, W))
    color = (rast[..., 3:4] > 0).float().expand(-1, -1, -1, 3).contiguous()
    out = mofa_tk.antialias(color, rast, pt, tris)
    out[..., 0].sum().backward()
    g = pt.grad.numpy()[0]
    num = numeric_grad(lambda q: _coverage_area_pixels(q, H, W), p)
    for v in range(3):
        for ax in range(2):  # x and y of each (silhouette) vertex
            assert np.sign(g[v, ax]) == np.sign(num[v, ax])
            assert abs(g[v, ax] - num[v, ax]) <= 0.05 * abs(num[v, ax]) + 0.5, (v, ax, g[v, ax], num[v, ax])
    # forward: the antialiased sum is closer to the true area than the aliased one (averaged over shifts)
    err_aa, err_alias = [], []
    for s in np.linspace(0, 0.03, 7):
        q = torch.tensor(_triangle_scene(s)[None], dtype=torch.float32)
        r = mofa_tk.rasterize(q, tris, (H, W))
        c = (r[..., 3:4] > 0).float()
        a = mofa_tk.antialias(c, r, q, tris)
        area = _coverage_area_pixels(_triangle_scene(s), H, W)
        err_aa.append(abs(float(a.sum()) - area))
        err_alias.append(abs(float(c.sum()) - area))
    assert np.mean(err_aa) < 0.5 * np.mean(err_alias)


def test_antialias_leaves_interior_edges_alone_and_color_grad(backend):
    # two triangles sharing an edge (a quad), both front-facing: the shared edge is not a silhouette
    p = f32([[[-0.7, -0.7, 0, 1], [0.7, -0.7, 0, 1], [0.7, 0.7, 0, 1], [-0.7, 0.7, 0, 1]]])
    tris = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast = mofa_tk.rasterize(p, tris, (32, 32))
    color = torch.rand(1, 32, 32, 3)
    color = color * (rast[..., 3:4] > 0)
    out = mofa_tk.antialias(color, rast, p, tris)
    interior = torch.zeros(32, 32, dtype=torch.bool)
    interior[6:26, 6:26] = True
    assert torch.equal(out[0][interior], color[0][interior])
    # colour gradient: antialias is linear in colour, so check against finite differences of itself
    c = color.clone().requires_grad_(True)
    wts = torch.randn_like(color)
    (mofa_tk.antialias(c, rast, p, tris) * wts).sum().backward()
    idx = [(0, 5, 10, 1), (0, 6, 6, 0), (0, 25, 26, 2), (0, 16, 16, 1)]
    for i in idx:
        e = torch.zeros_like(color)
        e[i] = 1e-2
        fd = float(((mofa_tk.antialias(color + e, rast, p, tris) - mofa_tk.antialias(color - e, rast, p, tris)) * wts).sum() / 2e-2)
        assert abs(float(c.grad[i]) - fd) < 1e-3


def test_antialias_follows_in_place_edits_of_the_triangles(backend):
    """The triangle-neighbour table of a triangle tensor is built once and rebuilt after an in-place edit: the
    result always equals a fresh copy's (int64 input included). The quad's shared edge is interior; after the
    edit the faces no longer share it (a silhouette)."""
    p = f32([[[-0.7, -0.7, 0, 1], [0.7, -0.7, 0, 1], [0.7, 0.7, 0, 1], [-0.7, 0.7, 0, 1], [0.0, 0.0, 0, 1]]])
    tris = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int64)
    rast = mofa_tk.rasterize(p, tris, (32, 32))
    color = torch.rand(1, 32, 32, 3) * (rast[..., 3:4] > 0)
    first = mofa_tk.antialias(color, rast, p, tris)
    for _ in range(3):
        assert torch.equal(mofa_tk.antialias(color, rast, p, tris), first)
    assert torch.equal(mofa_tk.antialias(color, rast, p, mofa_tk.Mesh(tris)), first)
    tris[1] = torch.tensor([4, 2, 3])                  # in place: face 1 now spans the centre vertex instead
    rast2 = mofa_tk.rasterize(p, tris, (32, 32))
    color2 = torch.rand(1, 32, 32, 3) * (rast2[..., 3:4] > 0)
    assert torch.equal(mofa_tk.antialias(color2, rast2, p, tris), mofa_tk.antialias(color2, rast2, p, tris.clone()))


def test_views_of_one_buffer_are_different_meshes(backend):
    """Two views of one int32 buffer with the same data pointer, shape, dtype and version but different strides
    (or a different offset) are different triangle lists: each op gives each view its own result, equal to that
    of a contiguous copy, whatever the order of the calls."""
    rng = np.random.default_rng(3)
    pos, tris = random_soup(rng, B=1, T=12)
    V = pos.shape[1]
    big = torch.tensor(rng.integers(0, V, size=(12, 6)), dtype=torch.int32)
    views = {"stride": big[:, 0::2], "first": big[:, :3], "offset": big[:, 3:]}
    p = torch.tensor(pos, dtype=torch.float32)
    attr = torch.tensor(rng.normal(size=(1, V, 2)), dtype=torch.float32)
    for _ in range(2):
        for name, view in views.items():
            ref = view.contiguous()
            rast = mofa_tk.rasterize(p, view, (24, 24))
            assert torch.equal(rast, mofa_tk.rasterize(p, ref, (24, 24))), name
            assert torch.equal(mofa_tk.interpolate(attr, rast, view), mofa_tk.interpolate(attr, rast, ref)), name
            color = torch.rand(1, 24, 24, 2)
            assert torch.equal(mofa_tk.antialias(color, rast, p, view), mofa_tk.antialias(color, rast, p, ref)), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_integer_triangles_are_rejected(backend, dtype):
    """Float triangle lists are refused (not truncated), integer-valued or not, by every op taking triangles."""
    p = f32([[[-0.5, -0.5, 0, 1], [0.5, -0.5, 0, 1], [0.0, 0.5, 0, 1]]])
    for tris in (torch.tensor([[0, 1, 2]], dtype=dtype), torch.tensor([[0, 0.5, 2]], dtype=dtype)):
        with pytest.raises(mofa_tk.InputError, match="tris: expected integer vertex indices"):
            mofa_tk.rasterize(p, tris, (8, 8))
        with pytest.raises(mofa_tk.InputError, match="tris: expected integer vertex indices"):
            mofa_tk.vertex_normals(p[..., :3], tris)
    with pytest.raises(mofa_tk.InputError, match="tris: expected integer vertex indices"):
        mofa_tk.rasterize(p, np.array([[0, 1, 2]], np.float32), (8, 8))


def test_rasterize_without_gradient_skips_autograd_with_the_same_output(backend):
    """Inputs that need no gradient take a direct path (no autograd Function): same rast, no graph."""
    rng = np.random.default_rng(9)
    pos, tris = random_soup(rng, B=2, T=15)
    t = torch.tensor(tris)
    plain = mofa_tk.rasterize(f32(pos), t, (20, 24))
    p = f32(pos).requires_grad_()
    tracked = mofa_tk.rasterize(p, t, (20, 24))
    assert tracked.grad_fn is not None and plain.grad_fn is None and not plain.requires_grad
    assert torch.equal(tracked.detach(), plain)
    with torch.no_grad():
        untracked = mofa_tk.rasterize(p, t, (20, 24))
    assert untracked.grad_fn is None and torch.equal(untracked, plain)


def test_batch_consistency(backend):
    rng = np.random.default_rng(5)
    pos, tris = random_soup(rng, B=5, T=20)
    full = mofa_tk.rasterize(f32(pos), torch.tensor(tris), (30, 30))
    for b in range(5):
        single = mofa_tk.rasterize(f32(pos[b:b + 1]), torch.tensor(tris), (30, 30))
        assert torch.equal(single[0], full[b])
    big = np.repeat(pos[:1], 64, axis=0)
    r64 = mofa_tk.rasterize(f32(big), torch.tensor(tris), (16, 16))
    assert torch.equal(r64, r64[:1].expand(64, -1, -1, -1))


def _ray_cast_ids(verts_cam, tris, f, c, H, W, near):
    """Camera-space ray casting (Moller-Trumbore) reference: nearest hit with depth >= near."""
    ids = np.zeros((H, W))
    best = np.full((H, W), np.inf)
    jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([(jj - c[0]) / f, -(ii - c[1]) / f, -np.ones_like(jj)], -1)  # direction with depth 1
    for t, tri in enumerate(tris):
        v0, v1, v2 = verts_cam[tri]
        e1, e2 = v1 - v0, v2 - v0
        pvec = np.cross(d, e2)
        det = pvec @ e1
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
        tvec = -v0
        u = (pvec @ tvec) * inv
        q = np.cross(tvec, e1)
        v = (q @ np.ones(1) if False else (d * q).sum(-1)) * inv
        depth = (q @ e2) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (depth >= near) & (depth < best)
        best[hit] = depth[hit]
        ids[hit] = t + 1
    return ids


def test_triangles_behind_camera_are_clipped_not_wrapped(backend):
    # a large floor triangle reaching behind the camera, plus one triangle entirely behind it
    verts = np.array([[-300.0, -50, 200], [300, -50, 200], [0, -50, -900],   # crosses z = 0 (camera plane)
                      [-50, 20, 100], [50, 20, 100], [0, 60, 150]])          # entirely behind (z > 0)
    tris = np.array([[0, 2, 1], [3, 4, 5]], np.int32)
    H, W, f, c, near = 40, 50, 40.0, (25.0, 20.0), 10.0
    clip = mofa_tk.to_clip(f32(verts[None]), f, c, (H, W), near=near, far=5000)
    rast = mofa_tk.rasterize(clip, torch.tensor(tris), (H, W)).numpy()[0]
    ref = _ray_cast_ids(verts, tris, f, c, H, W, near)
    assert (ref > 0).sum() > 100
    assert (rast[..., 3] == 2).sum() == 0
    assert (rast[..., 3] == ref).mean() > 0.995
    all_behind = f32([[[0, 0, 0.5, -1], [1, 0, 0.5, -1], [0, 1, 0.5, -1]]])
    assert mofa_tk.rasterize(all_behind, torch.tensor([[0, 1, 2]]), (8, 8)).abs().sum() == 0


def test_degenerate_and_bad_inputs(backend):
    tri = torch.tensor([[0, 1, 2]])
    zero_area = f32([[[0, 0, 0, 1], [0.5, 0.5, 0, 1], [1, 1, 0, 1]]])
    assert mofa_tk.rasterize(zero_area, tri, (16, 16)).abs().sum() == 0
    p = f32([[[-1, -1, 0, 1], [1, -1, 0, 1], [0, 1, 0, 1]]])
    empty = mofa_tk.rasterize(p, torch.zeros(0, 3, dtype=torch.int32), (8, 8))
    assert empty.shape == (1, 8, 8, 4) and empty.abs().sum() == 0
    with pytest.raises(mofa_tk.InputError, match="pos_clip.*NaN"):
        mofa_tk.rasterize(torch.full((1, 3, 4), float("nan")), tri, (8, 8))
    with pytest.raises(mofa_tk.InputError, match="tris"):
        mofa_tk.rasterize(p, torch.tensor([[0, 1, 3]]), (8, 8))
    with pytest.raises(mofa_tk.InputError, match="tris"):
        mofa_tk.rasterize(p, torch.tensor([[0, -1, 2]]), (8, 8))
    with pytest.raises(mofa_tk.InputError, match="resolution"):
        mofa_tk.rasterize(p, tri, (0, 8))
    with pytest.raises(mofa_tk.InputError, match="pos_clip"):
        mofa_tk.rasterize(torch.zeros(1, 3, 3), tri, (8, 8))
    rast = mofa_tk.rasterize(p, tri, (8, 8))
    with pytest.raises(mofa_tk.InputError, match="attr"):
        mofa_tk.interpolate(torch.zeros(3, 2, 5), rast, tri)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_positions_are_found_by_the_kernel(backend, bad):
    """rasterize checks NaN / Inf in its projection loop (no torch reduction): any component, any batch item,
    also of a vertex no triangle uses, with the exact count in the message; the failed call leaves nothing
    behind for the next one (its scan did not run)."""
    rng = np.random.default_rng(3)
    pos = f32(np.concatenate([rng.uniform(-0.9, 0.9, (3, 7, 2)), rng.uniform(0.1, 0.5, (3, 7, 1)),
                              np.ones((3, 7, 1))], -1))
    tris = torch.tensor([[0, 1, 2], [2, 3, 4], [4, 5, 0]], dtype=torch.int32)  # vertex 6 unused
    good = mofa_tk.rasterize(pos, tris, (24, 20))
    for b, v, c in [(0, 0, 0), (2, 4, 3), (1, 6, 2)]:
        p = pos.clone()
        p[b, v, c] = bad
        with pytest.raises(mofa_tk.InputError, match=r"pos_clip: contains 1 NaN/Inf value"):
            mofa_tk.rasterize(p, tris, (24, 20))
        assert torch.equal(mofa_tk.rasterize(pos, tris, (24, 20)), good)
    p = pos.clone()
    p[1, :2] = bad
    with pytest.raises(mofa_tk.InputError, match=r"pos_clip: contains 8 NaN/Inf value"):
        mofa_tk.rasterize(p, tris, (24, 20))
    # finite values whose exponent is large are fine (only an all-ones exponent means NaN / Inf)
    p = pos.clone()
    p[0, 6] = torch.tensor([3.0e38, -3.0e38, 1.0, 1.0])
    assert torch.equal(mofa_tk.rasterize(p, tris, (24, 20)), good)

def test_triangle_checks_are_cached_per_tensor_version(backend):
    p = f32([[[-1, -1, 0, 1], [1, -1, 0, 1], [0, 1, 0, 1]]])
    tri = torch.tensor([[0, 1, 2]])
    assert mofa_tk.rasterize(p, tri, (8, 8))[..., 3].max() == 1
    tri[0, 2] = 5  # an in-place edit after a successful call must be seen
    with pytest.raises(mofa_tk.InputError, match=r"tris: indices must lie in \[0, 3\), got values in \[0, 5\]"):
        mofa_tk.rasterize(p, tri, (8, 8))
    # int64 indices are range-checked before the int32 conversion (2^32 would wrap to 0)
    with pytest.raises(mofa_tk.InputError, match="4294967296"):
        mofa_tk.rasterize(p, torch.tensor([[0, 1, 2 ** 32]]), (8, 8))


def test_large_triangles_are_split_into_tiles(backend, monkeypatch):
    """Triangles whose box exceeds SMALL_MAX pixels go through the list of large triangles and `raster_big`, in
    every batch item; a per-call cap on their number gives a clear error."""
    from mofa_tk.kernels import raster as kraster

    H, W = 300, 340
    rng = np.random.default_rng(7)
    pos, tris = random_soup(rng, B=3, T=40)
    pos32 = np.asarray(pos, np.float32)
    ndc = pos32[..., :2] / pos32[..., 3:]
    span = np.ptp(ndc[:, tris, 0], axis=2) * W / 2 * np.ptp(ndc[:, tris, 1], axis=2) * H / 2
    assert (span > 1.5 * kraster.SMALL_MAX).sum(axis=1).min() >= 3  # several large triangles in every item
    rast = mofa_tk.rasterize(f32(pos32), torch.tensor(tris), (H, W)).numpy()
    ref = rasterize_ref(pos32.astype(np.float64), tris, H, W)
    same = rast[..., 3] == ref[..., 3]
    assert same.mean() >= 0.999
    covered = same & (ref[..., 3] > 0)
    err = np.abs(rast[covered][:, :3] - ref[covered][:, :3])
    # float32 rounding of the homogeneous barycentrics grows with the triangles' extent in pixels: here 12 of
    # 0.5 M values differ by 1e-5 to 4e-5 from the float64 reference (float32's limit, not the tiling's)
    assert (err > 1e-5).mean() < 1e-4 and err.max() < 1e-4, err.max()
    monkeypatch.setattr(kraster, "MAX_BIG", 2)
    with pytest.raises(mofa_tk.InputError, match="at most 2 per call"):
        mofa_tk.rasterize(f32(pos32), torch.tensor(tris), (H, W))


def test_large_resolution_matches_reference(backend):
    H, W = 2048, 2048
    p = np.array([[[-0.9, -0.8, 0.2, 1.0], [0.85, -0.9, 0.2, 1.0], [0.1, 0.95, 0.2, 1.0],
                   [-0.5, -0.5, -0.5, 2.0], [0.5, -0.5, 0.5, 2.0], [0.0, 0.5, 0.0, 2.0]]])
    tris = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    rast = mofa_tk.rasterize(f32(p), torch.tensor(tris), (H, W)).numpy()
    ref = rasterize_ref(p.astype(np.float32).astype(np.float64), tris, H, W)
    assert (rast[..., 3] == ref[..., 3]).mean() > 0.9999


def test_cpu_per_thread_gradient_copies_match_atomics():
    """On the CPU the backward kernels add into one gradient copy per thread (kernels/scatter.py); the sum of the
    copies equals the atomic scatter, and Taichi's thread indices stay below the number of copies."""
    import taichi as ti

    from mofa_tk.kernel_launch import launch
    from mofa_tk.backend import cpu_threads
    from mofa_tk.kernels import raster as kraster
    from mofa_tk.kernels import scatter as kscatter

    mofa_tk.init("cpu")
    rng = np.random.default_rng(7)
    pos, tris = random_soup(rng, B=2, T=60)
    B, V, H, W = 2, pos.shape[1], 40, 56
    p = f32(pos)
    t = torch.tensor(tris, dtype=torch.int32)
    rast = mofa_tk.rasterize(p, t, (H, W))
    g = torch.tensor(rng.normal(size=(B, H, W, 4)), dtype=torch.float32)
    K = cpu_threads()
    atomic = torch.zeros(B * V * 4)
    copies = torch.zeros(K, B * V * 4)
    for out, mode in ((atomic, kscatter.ATOMIC), (copies, kscatter.COPIES)):
        # runs of 3 pixels (W = 56 is not a multiple; the ops use runs of 16 on the CPU)
        launch(kraster.rast_bwd, p.view(-1), t.view(-1), rast.view(-1), g.view(-1), out.view(-1), B, V, H, W, 1 / W,
               1 / H, 3, (W + 2) // 3, mode)
    assert atomic.abs().max() > 0
    torch.testing.assert_close(copies.sum(0), atomic, rtol=1e-5, atol=1e-6)
    # the ops sum the copies with sum_copies (whole-copy adds), for any number of threads
    from mofa_tk.ops.raster import sum_copies
    for n in (1, 2, 5):
        x = torch.tensor(rng.normal(size=(n, 3, 7)), dtype=torch.float32)
        torch.testing.assert_close(sum_copies(x), x.double().sum(0).float(), rtol=1e-6, atol=1e-6)

    @ti.kernel
    def thread_ids(out: ti.types.ndarray(dtype=ti.i32, ndim=1)):
        for i in range(out.shape[0]):
            acc = 0.0
            for k in range(200):  # enough work per item that every worker joins in
                acc += ti.sin(i * 0.01 + k)
            out[i] = ti.global_thread_idx() + ti.cast(acc * 0.0, ti.i32)

    ids = torch.full((200_000,), -1, dtype=torch.int32)
    thread_ids(ids)
    assert int(ids.min()) >= 0 and int(ids.max()) < K


def test_backward_falls_back_to_atomics_when_copies_would_be_large(backend, monkeypatch):
    """Per-thread gradient copies are capped (many CPU threads x a large batch); above the cap the CPU backward
    uses atomics, with the same gradients."""
    import mofa_tk.ops.raster as R

    rng = np.random.default_rng(11)
    pos, tris = random_soup(rng, B=2, T=40)
    attr = torch.tensor(rng.normal(size=(2, pos.shape[1], 3)), dtype=torch.float32)
    t = torch.tensor(tris)

    def grads():
        p = f32(pos).requires_grad_()
        a = attr.clone().requires_grad_()
        rast = mofa_tk.rasterize(p, t, (30, 34))
        (mofa_tk.interpolate(a, rast, t) ** 2).sum().backward()
        return p.grad, a.grad

    gp, ga = grads()
    monkeypatch.setattr(R, "COPIES_MAX_BYTES", 0)
    assert R.scatter_plan(10)[0] == R.kscatter.ATOMIC
    gp0, ga0 = grads()
    assert gp.abs().max() > 0 and ga.abs().max() > 0
    torch.testing.assert_close(gp0, gp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ga0, ga, rtol=1e-5, atol=1e-6)


def test_cull_backfaces_matches_bruteforce_of_the_kept_triangles(backend):
    """cull_backfaces drops the triangles whose NDC signed area is positive (clockwise in the image); the result
    is the brute-force z-buffer of the remaining triangles, with their original ids."""
    rng = np.random.default_rng(5)
    pos, tris = random_soup(rng, B=2, T=40)
    pos32 = np.asarray(pos, np.float32)
    H, W = 36, 44
    rast = mofa_tk.rasterize(f32(pos32), torch.tensor(tris), (H, W), cull_backfaces=True).numpy()
    for b in range(2):
        x, y = pos32[b, :, 0] / pos32[b, :, 3], pos32[b, :, 1] / pos32[b, :, 3]
        t0, t1, t2 = tris[:, 0], tris[:, 1], tris[:, 2]
        area = (x[t1] - x[t0]) * (y[t2] - y[t0]) - (x[t2] - x[t0]) * (y[t1] - y[t0])
        kept = np.nonzero(area < 0)[0]
        assert 5 < kept.size < len(tris) - 5  # both windings occur
        ref = rasterize_ref(pos32[b:b + 1].astype(np.float64), tris[kept], H, W)[0]
        ref_ids = np.where(ref[..., 3] > 0, kept[np.maximum(ref[..., 3].astype(int) - 1, 0)] + 1, 0)
        assert (rast[b, ..., 3] == ref_ids).mean() >= 0.999
        assert rast[b, ..., 3].max() > 0


def test_cull_backfaces_for_a_triangle_projected_far_off_screen(backend):
    """A triangle in front of the camera with a vertex projected beyond the 2-D path's range (w tiny) takes the
    homogeneous path; culling still uses its screen-space winding there."""
    cw = f32([[[-0.5, -0.5, 0.0, 1.0], [0.5, -0.5, 0.0, 1.0], [0.0, 1e-4, 0.0, 1e-9]]])  # NDC area > 0: culled
    ccw = cw[:, [0, 2, 1]]
    tri = torch.tensor([[0, 1, 2]])
    kept = mofa_tk.rasterize(ccw, tri, (32, 32), cull_backfaces=True)
    assert (kept[..., 3] > 0).sum() > 20
    assert torch.equal(kept, mofa_tk.rasterize(ccw, tri, (32, 32)))
    assert mofa_tk.rasterize(cw, tri, (32, 32), cull_backfaces=True).abs().sum() == 0
    assert (mofa_tk.rasterize(cw, tri, (32, 32))[..., 3] > 0).sum() > 20

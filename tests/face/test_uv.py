"""UV layouts and the photo unwrapped into them (`mofa_tk.face.uv`).

Reference: a plane facing a pinhole camera, whose texels map to known photo pixels (NumPy: the plane point of
each texel, its projection, a bilinear sample of the photo); a second plane in front hides part of it.
"""
import numpy as np
import pytest
import torch

import mofa_tk
from mofa_tk.camera import Camera
from mofa_tk.face.uv import generated_uvs, model_uvs, unwrap_photo


@pytest.fixture
def cpu(backend):
    if backend != "cpu":
        pytest.skip("torch over the ops (tested on every backend elsewhere): cpu only")
    return backend


def _grid(x0, x1, y0, y1, z, u0, u1, n=8):
    """A plane at depth z (camera space, facing the camera) with uvs [u0, u1] x [0, 1] (v from the top)."""
    xs, ys = np.linspace(x0, x1, n + 1), np.linspace(y0, y1, n + 1)
    X, Y = np.meshgrid(xs, ys)
    verts = np.stack([X, Y, np.full_like(X, z)], -1).reshape(-1, 3)
    uv = np.stack([u0 + (X - x0) / (x1 - x0) * (u1 - u0), (y1 - Y) / (y1 - y0)], -1).reshape(-1, 2)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return verts, uv, tris


def _bilinear(img, x, y):
    """Photo sample at pixel coordinates (centres at +0.5), clamped at the edges."""
    H, W = img.shape[:2]
    x, y = x - 0.5, y - 0.5
    j0, i0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - j0, y - i0
    cl = lambda a, n: np.clip(a, 0, n - 1)
    g = lambda i, j: img[cl(i, H), cl(j, W)]
    return ((1 - fx) * (1 - fy))[..., None] * g(i0, j0) + (fx * (1 - fy))[..., None] * g(i0, j0 + 1) + \
        ((1 - fx) * fy)[..., None] * g(i0 + 1, j0) + (fx * fy)[..., None] * g(i0 + 1, j0 + 1)


def test_unwrap_a_plane_against_its_projection(cpu):
    rng = np.random.default_rng(0)
    from scipy import ndimage

    photo = np.clip(ndimage.gaussian_filter(rng.uniform(0, 1, (200, 240, 3)), (3, 3, 0)) * 3 - 1, 0, 1)
    cam = Camera.pinhole((200, 240), 1000.0, (120.0, 100.0))
    main_v, main_uv, main_t = _grid(-40, 40, -40, 40, -500.0, 0.0, 0.5)
    occ_v, occ_uv, occ_t = _grid(-10, 30, -10, 20, -400.0, 0.6, 0.9)         # in front, hides part of main
    verts = np.concatenate([main_v, occ_v])
    uvs = np.concatenate([main_uv, occ_uv])
    tris = np.concatenate([main_t, occ_t + len(main_v)])
    fill = np.zeros_like(verts)
    fill[:, 1] = 1.0                                                          # hidden texels: pure green
    S = 128
    tex, vis = unwrap_photo(torch.tensor(verts, dtype=torch.float32), torch.tensor(tris), torch.tensor(uvs),
                            photo, cam, fill=torch.tensor(fill, dtype=torch.float32), size=S)
    tex, vis = tex.numpy(), vis.numpy()
    # texels of the main plane: u = (j + 0.5) / S < 0.5
    i, j = np.meshgrid(np.arange(S), np.arange(S), indexing="ij")
    u, v = (j + 0.5) / S, (i + 0.5) / S
    main = u < 0.5 - 1.0 / S
    X = -40 + u / 0.5 * 80
    Y = 40 - v * 80
    px = 120.0 + 1000.0 * X / 500.0
    py = 100.0 - 1000.0 * Y / 500.0
    hidden = (X / 500 * 400 > -10 + 1) & (X / 500 * 400 < 30 - 1) & (Y / 500 * 400 > -10 + 1) & \
        (Y / 500 * 400 < 20 - 1)                                              # behind the occluder (by its outline)
    shown = main & ~hidden
    near_edge = main & ~hidden & ((np.abs(X / 500 * 400 - np.clip(X / 500 * 400, -10, 30)) < 2)
                                  & (np.abs(Y / 500 * 400 - np.clip(Y / 500 * 400, -10, 20)) < 2))
    ok = shown & ~near_edge
    assert vis[ok].all() and not vis[main & hidden].any()
    ref = _bilinear(photo, px, py)
    np.testing.assert_allclose(tex[ok], ref[ok], atol=2e-3)
    np.testing.assert_allclose(tex[main & hidden], np.broadcast_to([0.0, 1.0, 0.0], tex[main & hidden].shape),
                               atol=1e-5)
    # texels no triangle covers stay 0 (the gap between the two layouts)
    gap = (u > 0.52) & (u < 0.58)
    assert (tex[gap] == 0).all()


def test_model_uvs(cpu):
    model = mofa_tk.builtin_model()
    uv, src = model_uvs(model)
    assert src == "generated" and uv.shape == (model.n_vertices, 2)
    assert float(uv.min()) >= 0 and float(uv.max()) <= 1
    # the layout keeps left / right and up / down: u grows with x, v (rows from the top) falls with y
    ms = model.mean_shape
    assert float(np.corrcoef(uv[:, 0].numpy(), ms[:, 0].numpy())[0, 1]) > 0.9
    assert float(np.corrcoef(uv[:, 1].numpy(), ms[:, 1].numpy())[0, 1]) < -0.99
    own = np.random.default_rng(0).uniform(0, 1, (model.n_vertices, 2))
    class M:                                                                  # a model that brings its own uvs
        n_vertices = model.n_vertices
        meta = {"texture_coordinates": own}
        mean_shape = model.mean_shape
    uv2, src2 = model_uvs(M)
    assert src2 == "model" and np.allclose(uv2.numpy(), own)
    assert torch.equal(generated_uvs(ms), uv)

"""Code layout, FaceDecoder (image formation, parametrisation, visibility) and analysis-by-synthesis checks.

The synthetic model below is a face-like open sheet: an ellipsoidal cap with a tall Gaussian nose ridge and a
sinusoidally textured albedo, with smooth random shape / expression / albedo bases. References are NumPy
(Rodrigues, pinhole projection, Moller-Trumbore ray casting for visibility).
"""
import numpy as np
import pytest
import torch

import mofa_tk
from mofa_tk import InputError
from mofa_tk import losses as L
from mofa_tk.face.code import Code
from mofa_tk.face.decoder import FaceDecoder
from mofa_tk.mesh import boundary_vertices
from mofa_tk.ops.shading import sh_shade
from helpers import np_rodrigues

SIZE = 128  # test image size (focal 580 px: a 150 mm face spans ~87 px)


def synthetic_face(nx=41, ny=51, k_id=6, k_exp=4, k_alb=5, seed=0, nose=30.0):
    rng = np.random.default_rng(seed)
    x = np.linspace(-75, 75, nx)
    y = np.linspace(-95, 95, ny)
    X, Y = np.meshgrid(x, y)
    cap = 50 * np.sqrt(np.clip(1 - (X / 110) ** 2 - (Y / 140) ** 2, 0, None))
    Z = cap + nose * np.exp(-0.5 * ((X / 9) ** 2 + ((Y + 5) / 22) ** 2))
    P = np.stack([X, Y, Z], -1).reshape(-1, 3)
    V = P.shape[0]
    idx = np.arange(V).reshape(ny, nx)
    v00, v10, v11, v01 = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    tris = np.concatenate([np.stack([v00, v10, v11], -1).reshape(-1, 3),       # CCW seen from +z
                           np.stack([v00, v11, v01], -1).reshape(-1, 3)]).astype(np.int32)
    xn, yn = P[:, 0] / 75, P[:, 1] / 95

    def fields(n):
        out = []
        for _ in range(n):
            a, b = rng.uniform(0.5, 2.0, 2)
            ph = rng.uniform(0, 2 * np.pi, 2)
            s = np.cos(a * np.pi * xn + ph[0]) * np.cos(b * np.pi * yn + ph[1])
            d = rng.normal(size=3)
            out.append(s[:, None] * (d / np.linalg.norm(d))[None])
        return np.stack(out, -1) if n else np.zeros((V, 3, 0))

    tex = 0.5 + 0.15 * np.sin(P[:, 0] / 6.0) * np.cos(P[:, 1] / 7.0)
    lm = np.linspace(0, V - 1, 68).astype(np.int64)
    lm[[5, 40]] = -1
    return mofa_tk.FaceModel(
        mean_shape=P, shape_basis=fields(k_id), shape_std=np.full(k_id, 4.0),
        expr_basis=fields(k_exp), expr_std=np.full(k_exp, 3.0),
        albedo_mean=np.stack([tex * 1.1, tex * 0.8, tex * 0.65], -1).clip(0, 1),
        albedo_basis=fields(k_alb), albedo_std=np.full(k_alb, 0.05),
        triangles=tris, landmarks=lm, name="synthetic face")


@pytest.fixture(scope="module")
def face():
    return synthetic_face()


def raycast_visible(P, tris, vertices=None, eps=1e-4):
    """Brute force: vertex i (camera space P, camera at the origin) is unoccluded when no triangle that does not
    contain it crosses the open segment camera -> P[i] (Moller-Trumbore, float64)."""
    vertices = np.arange(P.shape[0]) if vertices is None else np.asarray(vertices)
    A, Bv, Cv = P[tris[:, 0]], P[tris[:, 1]], P[tris[:, 2]]
    e1, e2 = Bv - A, Cv - A
    out = np.ones(len(vertices), bool)
    for s in range(0, len(vertices), 128):
        ids = vertices[s:s + 128]
        D = P[ids]
        pvec = np.cross(D[:, None], e2[None])
        det = (e1[None] * pvec).sum(-1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
        tvec = -A[None]
        u = (tvec * pvec).sum(-1) * inv
        q = np.cross(tvec, e1[None])
        v = (D[:, None] * q).sum(-1) * inv
        t = (e2[None] * q).sum(-1) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0) & (t < 1 - eps)
        own = (tris[None] == ids[:, None, None]).any(-1)
        out[s:s + 128] = ~(hit & ~own).any(1)
    return out


def true_code(dec, B=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    code = dec.code.zeros(B)
    bl = dec.code.split(code)
    bl["rotation"][:] = torch.tensor([0.1, 0.3, 0.05])
    bl["translation"][:] = torch.tensor([5.0, -3.0, 20.0])
    for k in ("shape", "expression", "reflectance"):
        bl[k][:] = torch.randn(bl[k].shape, generator=g) * 0.8
    bl["illumination"][:] = torch.randn(B, 27, generator=g) * 0.1
    return code


PERTURB = {"rotation": 0.05, "translation": 4.0, "shape": 0.5, "expression": 0.5, "reflectance": 0.5,
           "illumination": 0.05}


def perturbed(dec, code, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: v + torch.randn(v.shape, generator=g) * PERTURB[k] for k, v in dec.code.split(code).items()}


def dense_loss(target, out):
    vis = out["visibility"] & ~out["boundary"][None]
    return L.vertex_photometric_loss(target, out["verts_2d"], out["vertex_colors"], vis)


# ============================================================================================= Code
def test_code_layout_split_join_roundtrip(face):
    layout = Code.for_model(face)
    assert list(layout.sizes.items()) == [("rotation", 3), ("translation", 3), ("shape", 6), ("expression", 4),
                                          ("reflectance", 5), ("illumination", 27)]
    assert Code.sizes_for(face) == layout.sizes and layout.size == len(layout) == 48
    assert Code.zeros(3).shape == (3, 257) and Code().size == 257  # MoFA's 80 / 64 / 80 by default
    flat = torch.randn(4, 48)
    blocks = layout.split(flat)
    assert [tuple(v.shape) for v in blocks.values()] == [(4, 3), (4, 3), (4, 6), (4, 4), (4, 5), (4, 27)]
    assert torch.equal(blocks["expression"], flat[:, 12:16]) and torch.equal(blocks["illumination"], flat[:, 21:])
    assert torch.equal(layout.join(blocks), flat)
    # illumination may be given as (B, 9, 3) (ambient_sh's layout): stored channel-major like sh_shade's (B, 27)
    sh93 = torch.randn(4, 9, 3)
    j = layout.join({**blocks, "illumination": sh93})
    assert torch.equal(j[:, 21:30], sh93[:, :, 0]) and torch.equal(j[:, 39:48], sh93[:, :, 2])
    # batch-1 blocks broadcast; gradients flow through split and join
    x = torch.zeros(1, 48, requires_grad=True)
    layout.join({**layout.split(x), "shape": torch.ones(4, 6)}).sum().backward()
    assert x.grad.shape == (1, 48) and x.grad[0, 0] == 4 and x.grad[0, 6] == 0
    # a model without an albedo basis has an empty reflectance block, which join does not require
    l0 = Code(6, 4, 0)
    assert l0.sizes["reflectance"] == 0 and l0.size == 43
    b0 = l0.split(torch.randn(2, 43))
    assert b0["reflectance"].shape == (2, 0)
    assert torch.equal(l0.join({k: v for k, v in b0.items() if k != "reflectance"}), l0.join(b0))


def test_code_errors(face):
    layout = Code.for_model(face)
    with pytest.raises(InputError, match=r"N=48.*rotation 3 \+ translation 3 \+ shape 6.*got 47"):
        layout.split(torch.zeros(2, 47))
    with pytest.raises(InputError, match="code"):
        layout.split(torch.zeros(2, 3, 48))
    blocks = layout.split(torch.zeros(2, 48))
    with pytest.raises(InputError, match="missing block"):
        layout.join({k: v for k, v in blocks.items() if k != "shape"})
    with pytest.raises(InputError, match="unknown block"):
        layout.join({**blocks, "pose": torch.zeros(2, 6)})
    with pytest.raises(InputError, match=r"blocks\['expression'\].*\(B, 4\)"):
        layout.join({**blocks, "expression": torch.zeros(2, 5)})
    with pytest.raises(InputError, match="batch sizes"):
        layout.join({**blocks, "shape": torch.zeros(3, 6)})
    with pytest.raises(InputError, match="k_id"):
        Code(-1)
    with pytest.raises(InputError, match="batch size"):
        Code.zeros(-2)


# ============================================================================================= parametrisation
def test_zero_code_is_mean_face_frontal_centred_in_ambient_light(backend, face):
    dec = FaceDecoder(face, image_size=SIZE)
    out = dec(dec.code.zeros(2))
    P = face.mean_shape.numpy().astype(np.float64)
    center = (P.min(0) + P.max(0)) / 2
    expected = P - center + [0, 0, -1000.0]
    np.testing.assert_allclose(out["verts_cam"][1].numpy(), expected, atol=2e-3)
    # white ambient light of irradiance 1: the shaded colour is the albedo
    np.testing.assert_allclose(out["vertex_colors"][0].numpy(), face.albedo_mean.numpy(), atol=2e-5)
    np.testing.assert_allclose(out["albedo"][0].numpy(), face.albedo_mean.numpy(), atol=1e-6)
    # landmarks: pinhole projection (focal 1015 * 128 / 224, principal at the image centre), NaN where missing
    f = 1015.0 * SIZE / 224
    lm = face.landmarks.numpy()
    X = expected[np.clip(lm, 0, None)]
    uv = np.stack([SIZE / 2 + f * X[:, 0] / -X[:, 2], SIZE / 2 - f * X[:, 1] / -X[:, 2]], -1)
    got = out["landmarks2d"][0].numpy()
    assert np.isnan(got[lm < 0]).all()
    np.testing.assert_allclose(got[lm >= 0], uv[lm >= 0], atol=1e-3)
    np.testing.assert_allclose(out["verts_2d"][0, lm[lm >= 0]].numpy(), uv[lm >= 0], atol=1e-3)
    # centred: the (x-symmetric) face's coverage is centred horizontally, its bounding box vertically
    mask = out["mask"][0, ..., 0].numpy()
    cols = np.nonzero(mask.sum(0) > 0.5)[0]
    rows = np.nonzero(mask.sum(1) > 0.5)[0]
    jj = np.arange(SIZE) + 0.5
    assert abs((mask.sum(0) * jj).sum() / mask.sum() - SIZE / 2) < 0.05
    assert abs((rows[0] + rows[-1] + 1) / 2 - SIZE / 2) <= 1.0
    # 150 mm of face width at ~1000 mm: ~ 150 * 580 / 1000 = 87 px
    assert abs((cols[-1] - cols[0] + 1) - 150 * f / 1000) <= 3
    # frontal: every vertex faces the camera and is visible; normals are the area-weighted ones (NumPy)
    assert bool(out["visibility"].all())
    t = face.triangles.numpy().astype(np.int64)
    fn = np.cross(expected[t[:, 1]] - expected[t[:, 0]], expected[t[:, 2]] - expected[t[:, 0]])
    acc = np.zeros_like(expected)
    for k in range(3):
        np.add.at(acc, t[:, k], fn)
    np.testing.assert_allclose(out["normals"][0].numpy(), acc / np.linalg.norm(acc, axis=1, keepdims=True), atol=1e-4)
    assert out["image"].shape == (2, SIZE, SIZE, 3) and out["mask"].shape == (2, SIZE, SIZE, 1)
    assert out["image"].dtype == torch.float32 and out["rast"].shape == (2, SIZE, SIZE, 4)
    assert out["pos_clip"].shape == (2, face.n_vertices, 4)


def test_pose_translation_illumination_semantics(backend, face):
    dec = FaceDecoder(face, image_size=SIZE, distance=800.0)
    code = dec.code.zeros(1)
    bl = dec.code.split(code)
    r = np.array([0.2, -0.4, 0.1])
    bl["rotation"][:] = torch.tensor(r)
    bl["translation"][:] = torch.tensor([10.0, -5.0, 30.0])
    bl["illumination"][0, 3] = 0.4     # red channel, Y_11 ~ x: brighter to the right
    out = dec(code)
    P = face.mean_shape.numpy().astype(np.float64)
    c = (P.min(0) + P.max(0)) / 2
    expected = (P - c) @ np_rodrigues(r).T + [10.0, -5.0, 30.0 - 800.0]
    np.testing.assert_allclose(out["verts_cam"][0].numpy(), expected, atol=3e-3)
    # SH: ambient (L00 = 2 / sqrt(pi)) plus the block, shading the camera-space normals
    sh = out["sh"][0].numpy()
    assert abs(sh[0] - 2 / np.sqrt(np.pi)) < 1e-6 and abs(sh[3] - 0.4) < 1e-6 and abs(sh[9] - 2 / np.sqrt(np.pi)) < 1e-6
    n = out["normals"][0].numpy()
    red = face.albedo_mean.numpy()[:, 0] * (1 + 0.4 * (2 * np.pi / 3) * 0.488603 * n[:, 0])
    np.testing.assert_allclose(out["vertex_colors"][0, :, 0].numpy(), red, atol=1e-4)
    np.testing.assert_allclose(out["vertex_colors"][0, :, 1].numpy(), face.albedo_mean.numpy()[:, 1], atol=1e-4)
    # dict input gives the same result as the flat code, bit for bit
    out2 = dec(dict(bl))
    assert torch.equal(out2["verts_cam"], out["verts_cam"])
    assert torch.equal(out2["image"], out["image"])


# ============================================================================================= synthesis
def test_same_code_same_image_and_zero_loss_at_truth(backend, face):
    dec = FaceDecoder(face, image_size=SIZE)
    code = true_code(dec)
    a, b = dec(code), dec(code.clone())
    # bit-identical, shaded colours included: no op sums with float atomics
    for k in ("verts_cam", "pos_clip", "rast", "mask", "visibility", "verts_2d", "normals", "vertex_colors", "image"):
        assert torch.equal(a[k], b[k]), k
    target = a["image"].detach()
    assert L.image_photometric_loss(b["image"], target, b["mask"]).item() < 1e-12
    assert L.image_photometric_loss(b["image"], target, b["mask"], robust=True).item() < 1e-6
    assert L.image_photometric_loss(a["image"], target, a["mask"], robust=True).item() == 0.0
    # dense term: the render interpolates the vertex colours, so sampling it at the vertices returns them
    # up to the interpolation between pixel centres (tiny), once the open boundary (whose samples straddle
    # the outline) is left out
    at_truth = dense_loss(target, b).item()
    off = dense_loss(target, dec(perturbed(dec, code))).item()
    assert at_truth < 1e-4 and off > 100 * at_truth
    total, terms = L.mofa_loss(b, target, a["landmarks2d"].detach(), weights={"reg": 0.0, "photo": 1.0})
    assert set(terms) == {"vertex_photo", "photo", "landmark"}
    assert terms["photo"].item() < 1e-6 and terms["landmark"].item() == 0.0
    assert abs(total.item() - sum(v.item() for v in terms.values())) < 1e-6
    _, terms_off = L.mofa_loss(dec(perturbed(dec, code)), target, a["landmarks2d"].detach(),
                               weights={"reg": 0.0, "photo": 1.0})
    for k in ("vertex_photo", "photo", "landmark"):   # robust l2,1 (default): sqrt of the tiny residual
        assert terms_off[k].item() > 10 * terms[k].item() + 1e-3, k
    # batched rendering equals rendering each code alone; a different code changes the picture
    codes = torch.cat([code, dec.code.zeros(1)])
    both = dec(codes)
    assert torch.allclose(both["image"][0], a["image"][0], atol=1e-6)
    assert torch.allclose(both["image"][1], dec(dec.code.zeros(1))["image"][0], atol=1e-6)
    assert (both["image"][1] - both["image"][0]).abs().max() > 0.1


def test_photometric_gradients_reach_every_block(backend, face):
    dec = FaceDecoder(face, image_size=SIZE)
    target = dec(true_code(dec))["image"].detach()
    start = perturbed(dec, true_code(dec))
    params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    out = dec(params)
    loss = dense_loss(target, out) + L.image_photometric_loss(out["image"], target, out["mask"], robust=True)
    loss.backward()
    for k, p in params.items():
        g = p.grad
        assert g is not None and torch.isfinite(g).all(), k
        assert g.norm().item() > 1e-5, f"{k}: zero gradient"
        assert (g != 0).float().mean().item() > 0.5, f"{k}: most components have zero gradient"
    # directional derivatives of the dense term through the whole decoder vs central differences (the dense
    # term is smooth in the code away from visibility changes; the pixel term is not: pixels switch coverage)
    params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    dense_loss(target, dec(params)).backward()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for k, step in (("rotation", 1e-3), ("translation", 1e-2), ("shape", 3e-3), ("expression", 3e-3),
                        ("reflectance", 3e-3), ("illumination", 1e-3)):
            d = torch.randn(params[k].shape, generator=g)

            def f(s):
                return dense_loss(target, dec({kk: (v + s * d if kk == k else v) for kk, v in start.items()})).item()
            fd = (f(step) - f(-step)) / (2 * step)
            an = (params[k].grad * d).sum().item()
            assert abs(fd - an) <= 0.03 * abs(an) + 1e-7, (k, fd, an)


def test_adam_from_perturbed_code_moves_toward_truth(backend, face):
    dec = FaceDecoder(face, image_size=SIZE)
    truth = dec.code.split(true_code(dec))
    tgt = dec(dec.code.join(truth))
    target = tgt["image"].detach()
    start = perturbed(dec, dec.code.join(truth))
    params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    lrs = {"rotation": 0.01, "translation": 1.0, "shape": 0.05, "expression": 0.05, "reflectance": 0.05,
           "illumination": 0.01}
    opt = torch.optim.Adam([{"params": [params[k]], "lr": lrs[k]} for k in params])
    losses = []
    for _ in range(80):
        opt.zero_grad()
        loss = dense_loss(target, dec(params))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = dense_loss(target, dec(params)).item()
    assert final < 0.05 * losses[0]
    ratio = {k: ((params[k].detach() - truth[k]).norm() / (start[k] - truth[k]).norm()).item() for k in truth}
    for k in ("rotation", "shape", "expression", "reflectance"):
        assert ratio[k] < 0.35, ratio
    assert ratio["translation"] < 0.7, ratio
    # the SH coefficients are only observable through the normals the face shows: compare irradiance there
    with torch.no_grad():
        n, ones = tgt["normals"], torch.ones_like(tgt["normals"])
        E = lambda ill: sh_shade(n, ones, dec.ambient_code + ill)  # noqa: E731
        e0 = (E(start["illumination"]) - E(truth["illumination"])).abs().mean()
        e1 = (E(params["illumination"]) - E(truth["illumination"])).abs().mean()
    assert e1 < 0.2 * e0, (e0, e1)


# ============================================================================================= visibility
def test_visibility_profile_view_synthetic(backend, face):
    """Yaw 1.2 rad (69 deg): the cheek 37.5 mm behind the nose on the far side (+x turns away) faces the camera but
    is hidden by the nose; the mirror vertex on the near side is visible. The whole map agrees with ray casting."""
    dec = FaceDecoder(face, image_size=SIZE)
    code = dec.code.zeros(1)
    code[0, 1] = 1.2
    out = dec(code)
    P = face.mean_shape.numpy()
    far = int(np.argmin(((P[:, :2] - [37.5, 0.0]) ** 2).sum(1)))
    near = int(np.argmin(((P[:, :2] - [-37.5, 0.0]) ** 2).sum(1)))
    X = out["verts_cam"][0].double().numpy()
    n = out["normals"][0].double().numpy()
    facing = (n * X).sum(1) < 0
    vis = out["visibility"][0].numpy()
    assert facing[far] and facing[near]
    assert not vis[far] and vis[near]
    ref = raycast_visible(X, face.triangles.numpy().astype(np.int64)) & facing
    assert not ref[far] and ref[near]
    assert (~ref & facing).sum() > 50                  # a real occluded region, not only back faces
    assert (vis != ref).mean() < 0.02, (vis != ref).sum()
    # a vertex outside the image is not visible
    code[0, 3] = 400.0
    out = dec(code)
    u = out["verts_2d"][0, :, 0]
    assert not bool(out["visibility"][0][u >= SIZE].any()) and bool((u >= SIZE).any())


def test_visibility_profile_view_builtin(backend):
    if not hasattr(mofa_tk, "builtin_model"):
        pytest.skip("mofa_tk.builtin_model is not available")
    model = mofa_tk.builtin_model()
    dec = FaceDecoder(model)
    code = dec.code.zeros(1)
    code[0, 1] = 0.8                                        # 46 deg: the nose hides part of the far cheek
    out = dec(code)
    X = out["verts_cam"][0].double().numpy()
    n = out["normals"][0].double().numpy()
    facing = (n * X).sum(1) < 0
    vis = out["visibility"][0].numpy()
    tris = model.triangles.numpy().astype(np.int64)
    hidden = np.nonzero(facing & ~vis)[0]
    assert len(hidden) >= 30
    assert (~raycast_visible(X, tris, hidden)).mean() > 0.9
    # their mirror images on the near cheek (the model is mirror symmetric) are visible
    P = model.mean_shape.numpy()
    mirror = P[hidden] * [-1, 1, 1]
    near = np.array([int(np.argmin(((P - m) ** 2).sum(1))) for m in mirror])
    assert vis[near].mean() > 0.95
    # a random sample of all vertices agrees with ray casting
    sample = np.random.default_rng(0).choice(len(P), 400, replace=False)
    ref = raycast_visible(X, tris, sample) & facing[sample]
    assert (ref == vis[sample]).mean() > 0.97


# ============================================================================================= misc
def test_background_mask_and_boundary(backend, face):
    dec = FaceDecoder(face, image_size=SIZE)
    code = true_code(dec)
    bg = torch.rand(SIZE, SIZE, 3)
    plain, over = dec(code), dec(code, background=bg)
    m = plain["mask"][0, ..., 0]
    outside, inside = m == 0, m == 1
    assert outside.sum() > 1000 and inside.sum() > 1000
    assert torch.allclose(over["image"][0][outside], bg[outside], atol=1e-6)
    assert torch.allclose(over["image"][0][inside], plain["image"][0][inside], atol=1e-6)
    assert torch.all(plain["image"][0][outside] == 0)
    assert torch.equal(over["mask"], plain["mask"])
    # the sheet's outline: 2 (nx + ny) - 4 vertices
    bnd = boundary_vertices(face.triangles, face.n_vertices)
    assert bnd.sum() == 2 * (41 + 51) - 4 and torch.equal(plain["boundary"], bnd)


def test_model_without_albedo_basis(backend, face):
    m0 = synthetic_face(k_alb=0)
    dec = FaceDecoder(m0, image_size=64)
    assert dec.code.sizes["reflectance"] == 0 and dec.code.size == 43
    code = dec.code.zeros(2, requires_grad=True)
    out = dec(code)
    np.testing.assert_allclose(out["vertex_colors"][1].detach().numpy(), m0.albedo_mean.numpy(), atol=2e-5)
    (out["image"].sum() + L.coefficient_regularizer(out["blocks"])).backward()
    assert torch.isfinite(code.grad).all()


def test_module_moves_carry_the_model(face):
    """dec.to() / .cuda() / .share_memory() apply to the model's tensors too, not only to the buffers, so a
    forward does not copy the bases to the kernel device every time; the model keeps its dtypes."""
    dec = FaceDecoder(face, image_size=64)
    assert not dec.model.shape_basis.is_shared()
    dec.share_memory()
    assert all(getattr(dec.model, f).is_shared() for f in ("mean_shape", "shape_basis", "albedo_basis", "triangles"))
    dec.double()
    assert dec.center.dtype == torch.float64
    assert dec.model.shape_basis.dtype == torch.float32 and dec.model.triangles.dtype == torch.int32
    if torch.cuda.is_available():
        dec.cuda()
        assert dec.model.device.type == "cuda" and dec.center.is_cuda


def test_decoder_errors(backend, face):
    dec = FaceDecoder(face, image_size=SIZE)
    with pytest.raises(InputError, match="N=48"):
        dec(torch.zeros(1, 257))
    with pytest.raises(InputError, match="background"):
        dec(dec.code.zeros(1), background=torch.zeros(SIZE, SIZE + 1, 3))
    bad = dec.code.zeros(1)
    bad[0, 7] = float("nan")
    with pytest.raises(InputError, match="code"):
        dec(bad)
    with pytest.raises(InputError, match="image_size"):
        FaceDecoder(face, image_size=(0, 10))
    with pytest.raises(InputError, match="focal"):
        FaceDecoder(face, focal=-3.0)


def test_default_framing_builtin(backend):
    """Default camera (focal 1015 px at 224, 1000 mm): the built-in face is centred and spans ~2/3 of the width."""
    if not hasattr(mofa_tk, "builtin_model"):
        pytest.skip("mofa_tk.builtin_model is not available")
    model = mofa_tk.builtin_model()
    dec = FaceDecoder(model)
    out = dec(dec.code.zeros(1))
    mask = out["mask"][0, ..., 0].numpy()
    cols = np.nonzero(mask.max(0) > 0.5)[0]
    rows = np.nonzero(mask.max(1) > 0.5)[0]
    width = (cols[-1] - cols[0] + 1) / 224
    assert 0.55 < width < 0.75, width
    assert abs((cols[0] + cols[-1] + 1) / 2 - 112) <= 1.5
    assert abs((rows[0] + rows[-1] + 1) / 2 - 112) <= 1.5
    assert bool(out["visibility"].float().mean() > 0.9)


def test_stages_chain_to_forward_and_render_reads_by_name(backend):
    """geometry -> shading -> render gives exactly forward's Render; its fields read by attribute or name, and
    the stage dataclasses are frozen."""
    import dataclasses

    dec = FaceDecoder(mofa_tk.builtin_model(), 64)
    code = dec.code.zeros(2)
    code[:, 0:3] = torch.tensor([0.1, 0.4, -0.05])
    code[:, 6] = 1.5
    with torch.no_grad():
        out = dec(code)
        g = dec.geometry(code)
        s = dec.shading(g)
        r = dec.render(g, s)
    for name in out.keys():
        a, b = getattr(out, name), r[name]
        if isinstance(a, torch.Tensor):
            assert torch.equal(torch.nan_to_num(a.float()), torch.nan_to_num(b.float())), name
    assert out["verts_2d"] is out.geometry.verts_2d and out.vertex_colors is out.shading.vertex_colors
    assert "image" in out and "nonsense" not in out
    with pytest.raises(KeyError):
        out["nonsense"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.verts = None
    # the visibility stage alone agrees with the render's
    with torch.no_grad():
        assert torch.equal(dec.visibility(g), out.visibility)

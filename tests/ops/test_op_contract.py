"""The contract every differentiable op keeps, checked the same way for each op on every backend:

* forward  -- the op (float32 kernels) against an independent float64 NumPy reference, B = 2;
* batch    -- a batch of B = 3 gives, item for item, what each item gives alone;
* gradient -- the op's autograd gradient of sum(w * out) against central finite differences of the float64
              reference, for each differentiable input.

One `OpCase` per op. rasterize and antialias have visibility-dependent outputs (their references and finite
differences need scenes that avoid edge crossings) and are checked in test_raster.py with the same three kinds
of test.
"""
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import mofa_tk
from mofa_tk.ops.shading import SH_BAND_FACTORS, SH_CONSTANTS
from helpers import np_rodrigues
from raster_reference import random_soup

V, T = 12, 10
RNG_SEED = 7


@dataclass
class OpCase:
    """make(rng, B) -> dict of float64 arrays (batched inputs first axis B) plus non-batched constants;
    op(**torch float32 inputs) -> tensor; ref(**float64 arrays) -> array; grads: inputs differentiated."""

    name: str
    make: object
    op: object
    ref: object
    grads: tuple
    batched: tuple        # inputs with a leading batch axis
    fwd_tol: float = 1e-5       # measured <= 2.3e-7 (max error / max |ref|), cpu and vulkan: margin > 40x
    grad_tol: float = 1e-4      # measured <= 1.3e-6 (relative l2 over 24 coordinates): margin > 70x


# ------------------------------------------------------------------------------------------- references
def _tris(rng):
    return rng.integers(0, V, size=(T, 3))


def _model(rng):
    K1, K2 = 4, 3
    f32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return mofa_tk.FaceModel(
        mean_shape=f32(rng.normal(size=(V, 3)) * 50), shape_basis=f32(rng.normal(size=(V, 3, K1))),
        shape_std=f32(rng.uniform(1, 5, K1)), expr_basis=f32(rng.normal(size=(V, 3, K2))),
        expr_std=f32(rng.uniform(1, 3, K2)), albedo_mean=f32(rng.uniform(0.2, 0.8, (V, 3))),
        albedo_basis=f32(rng.normal(size=(V, 3, 2))), albedo_std=f32([0.1, 0.05]),
        triangles=torch.tensor(_tris(rng), dtype=torch.int32), landmarks=torch.full((68,), -1, dtype=torch.int64))


MODEL = _model(np.random.default_rng(RNG_SEED))


def morph_ref(alpha, delta):
    m = {k: getattr(MODEL, k).double().numpy() for k in ("mean_shape", "shape_basis", "shape_std", "expr_basis",
                                                         "expr_std")}
    return (m["mean_shape"][None] + np.einsum("vck,bk->bvc", m["shape_basis"], alpha * m["shape_std"])
            + np.einsum("vck,bk->bvc", m["expr_basis"], delta * m["expr_std"]))


def rigid_ref(verts, rotation, translation):
    R = np.stack([np_rodrigues(r) for r in rotation])
    return np.einsum("bij,bvj->bvi", R, verts) + translation[:, None]


FOCAL, PRINCIPAL, SIZE = (500.0, 520.0), (31.0, 29.0), (60, 64)


def project_ref(verts_cam):
    d = -verts_cam[..., 2]
    return np.stack([PRINCIPAL[0] + FOCAL[0] * verts_cam[..., 0] / d,
                     PRINCIPAL[1] - FOCAL[1] * verts_cam[..., 1] / d], -1)


def to_clip_ref(verts_cam, near=10.0, far=5000.0):
    H, W = SIZE
    uv = project_ref(verts_cam)
    d = -verts_cam[..., 2]
    zc = -(far + near) / (far - near) * verts_cam[..., 2] - 2 * far * near / (far - near)
    return np.stack([(2 * uv[..., 0] / W - 1) * d, (2 * uv[..., 1] / H - 1) * d, zc, d], -1)


def normals_ref(verts, tris):
    f = verts[:, tris]
    fn = np.cross(f[:, :, 1] - f[:, :, 0], f[:, :, 2] - f[:, :, 0])
    acc = np.zeros_like(verts)
    for k in range(3):
        for b in range(len(verts)):
            np.add.at(acc[b], tris[:, k], fn[b])
    n = np.linalg.norm(acc, axis=-1, keepdims=True)
    return np.where(n > 0, acc / np.where(n > 0, n, 1), 0)


def sh_ref(normals, albedo, sh):
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    poly = np.stack([np.ones_like(x), y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], -1)
    band = np.array([SH_BAND_FACTORS[0]] + [SH_BAND_FACTORS[1]] * 3 + [SH_BAND_FACTORS[2]] * 5)
    Y = poly * np.array(SH_CONSTANTS) * band
    return albedo * np.einsum("bnk,bck->bnc", Y, sh.reshape(len(sh), 3, 9))


def interpolate_ref(attr, rast, tris):
    tid = rast[..., 3].astype(np.int64) - 1
    u, v = rast[..., 0], rast[..., 1]
    t = tris[np.maximum(tid, 0)]                                      # (B, H, W, 3)
    b = np.arange(len(attr))[:, None, None]
    out = ((1 - u - v)[..., None] * attr[b, t[..., 0]] + u[..., None] * attr[b, t[..., 1]]
           + v[..., None] * attr[b, t[..., 2]])
    return np.where((tid >= 0)[..., None], out, 0)


# ------------------------------------------------------------------------------------------- cases
def _unit(rng, shape):
    n = rng.normal(size=shape)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def _face_verts(rng, B):
    return rng.normal(size=(B, V, 3)) * 30 + np.array([0.0, 0.0, -400.0])


_SOUP = random_soup(np.random.default_rng(RNG_SEED), B=3, T=8)
_SOUP_RAST = None


def _soup_rast():
    global _SOUP_RAST
    if _SOUP_RAST is None or _SOUP_RAST[0] != mofa_tk.current_backend():
        pos, tris = _SOUP
        rast = mofa_tk.rasterize(torch.tensor(pos, dtype=torch.float32), torch.tensor(tris), (24, 20))
        _SOUP_RAST = (mofa_tk.current_backend(), rast.double().numpy())
    return _SOUP_RAST[1]


CASES = [
    OpCase("morph", lambda rng, B: {"alpha": rng.normal(size=(B, 4)), "delta": rng.normal(size=(B, 3))},
           lambda alpha, delta: mofa_tk.morph(MODEL, alpha, delta), morph_ref, ("alpha", "delta"),
           ("alpha", "delta")),
    OpCase("rigid", lambda rng, B: {"verts": rng.normal(size=(B, V, 3)) * 40, "rotation": rng.normal(size=(B, 3)) * 0.5,
                                    "translation": rng.normal(size=(B, 3)) * 10},
           lambda verts, rotation, translation: mofa_tk.rigid(verts, rotation, translation), rigid_ref,
           ("verts", "rotation", "translation"), ("verts", "rotation", "translation")),
    OpCase("project", lambda rng, B: {"verts_cam": _face_verts(rng, B)},
           lambda verts_cam: mofa_tk.project(verts_cam, FOCAL, PRINCIPAL)[0], project_ref, ("verts_cam",),
           ("verts_cam",)),
    OpCase("to_clip", lambda rng, B: {"verts_cam": _face_verts(rng, B)},
           lambda verts_cam: mofa_tk.to_clip(verts_cam, FOCAL, PRINCIPAL, SIZE, 10.0, 5000.0), to_clip_ref,
           ("verts_cam",), ("verts_cam",)),
    OpCase("vertex_normals", lambda rng, B: {"verts": rng.normal(size=(B, V, 3)) * 20, "tris": _tris(rng)},
           lambda verts, tris: mofa_tk.vertex_normals(verts, tris.to(torch.int64)), normals_ref, ("verts",),
           ("verts",)),
    OpCase("sh_shade", lambda rng, B: {"normals": _unit(rng, (B, V, 3)), "albedo": rng.uniform(0.1, 0.9, (B, V, 3)),
                                       "sh": rng.normal(size=(B, 27)) * 0.3},
           lambda normals, albedo, sh: mofa_tk.sh_shade(normals, albedo, sh), sh_ref, ("normals", "albedo", "sh"),
           ("normals", "albedo", "sh")),
    OpCase("interpolate", lambda rng, B: {"attr": rng.normal(size=(B, _SOUP[0].shape[1], 2)),
                                          "rast": _soup_rast()[:B], "tris": _SOUP[1]},
           lambda attr, rast, tris: mofa_tk.interpolate(attr, rast, tris.to(torch.int32)), interpolate_ref,
           ("attr",), ("attr", "rast")),
]


def _torch(inputs):
    out = {}
    for k, v in inputs.items():
        if np.issubdtype(np.asarray(v).dtype, np.integer):
            out[k] = torch.tensor(v)
        else:
            out[k] = torch.tensor(v, dtype=torch.float32)
    return out


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request):
    return request.param


def test_forward_matches_reference(backend, case):
    inputs = case.make(np.random.default_rng(1), 2)
    got = case.op(**_torch(inputs)).double().numpy()
    ref = case.ref(**{k: np.asarray(v, np.float64) if not np.issubdtype(np.asarray(v).dtype, np.integer) else v
                      for k, v in inputs.items()})
    scale = max(np.abs(ref).max(), 1.0)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() / scale < case.fwd_tol


def test_batch_equals_items(backend, case):
    inputs = case.make(np.random.default_rng(2), 3)
    full = case.op(**_torch(inputs))
    for b in range(3):
        item = {k: (v[b:b + 1] if k in case.batched else v) for k, v in inputs.items()}
        one = case.op(**_torch(item))
        torch.testing.assert_close(one[0], full[b], rtol=1e-5, atol=1e-5)


def test_gradient_matches_finite_differences(backend, case):
    rng = np.random.default_rng(3)
    inputs = case.make(rng, 2)
    t = _torch(inputs)
    for k in case.grads:
        t[k].requires_grad_(True)
    out = case.op(**t)
    w = rng.normal(size=tuple(out.shape))
    (out * torch.tensor(w, dtype=torch.float32)).sum().backward()
    x64 = {k: (np.asarray(v, np.float64) if not np.issubdtype(np.asarray(v).dtype, np.integer) else v)
           for k, v in inputs.items()}

    def f(x):
        return float((case.ref(**x) * w).sum())

    for k in case.grads:
        g = t[k].grad.double().numpy()
        flat = x64[k].reshape(-1)
        picks = rng.choice(flat.size, size=min(flat.size, 24), replace=False)
        fd = np.zeros(len(picks))
        for i, p in enumerate(picks):
            old = flat[p]
            eps = 1e-6 * max(1.0, abs(old))
            flat[p] = old + eps
            fp = f(x64)
            flat[p] = old - eps
            fm = f(x64)
            flat[p] = old
            fd[i] = (fp - fm) / (2 * eps)
        got = g.reshape(-1)[picks]
        err = np.linalg.norm(got - fd) / max(np.linalg.norm(fd), 1e-9)
        assert err < case.grad_tol, (case.name, k, err)

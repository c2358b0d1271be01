"""vertex_normals / sh_shade: geometry of a sphere, analytic and brute-force irradiance, FD gradients, errors.

The references here are independent of mofa_tk's kernels: the real SH basis is rebuilt from associated
Legendre functions (scipy.special.lpmv), irradiance is checked against the closed-form clamped-cosine
convolution of a directional light and against a brute-force quadrature of  E(n) = int L(w) max(0, n.w) dw.
"""
import math

import numpy as np
import pytest
import torch
from scipy.special import lpmv

import mofa_tk
from mofa_tk.ops.shading import ambient_sh, sh_shade, vertex_normals
from helpers import numeric_grad, rel_err


# ------------------------------------------------------------------------------------------ references
def uv_sphere(n_lat, n_lon, radius=1.0):
    """Closed UV sphere: north pole, n_lat - 1 rings of n_lon vertices, south pole; CCW seen from outside."""
    verts = [[0.0, 0.0, radius]]
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * math.pi * j / n_lon
            verts.append([radius * math.sin(th) * math.cos(ph), radius * math.sin(th) * math.sin(ph), radius * math.cos(th)])
    verts.append([0.0, 0.0, -radius])
    S = len(verts) - 1

    def ring(i, j):
        return 1 + (i - 1) * n_lon + (j % n_lon)

    tris = []
    for j in range(n_lon):
        tris.append([0, ring(1, j), ring(1, j + 1)])
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            tris += [[a, c, d], [a, d, b]]
    for j in range(n_lon):
        tris.append([ring(n_lat - 1, j), S, ring(n_lat - 1, j + 1)])
    return np.array(verts, np.float64), np.array(tris, np.int32)


def np_vertex_normals(verts, tris):
    """float64 reference: area-weighted normals, zero for vertices without (non-degenerate) faces."""
    verts = np.asarray(verts, np.float64)
    out = np.zeros_like(verts)
    for b in range(verts.shape[0]):
        x = verts[b]
        f = np.cross(x[tris[:, 1]] - x[tris[:, 0]], x[tris[:, 2]] - x[tris[:, 0]])
        s = np.zeros_like(x)
        for k in range(3):
            np.add.at(s, tris[:, k], f)
        n = np.linalg.norm(s, axis=1, keepdims=True)
        out[b] = np.where(n > 0, s / np.where(n > 0, n, 1), 0)
    return out


def real_sh_legendre(w):
    """Real orthonormal SH (l <= 2, no Condon-Shortley phase) from associated Legendre functions.

    Order (l, m): (0,0) (1,-1) (1,0) (1,1) (2,-2) (2,-1) (2,0) (2,1) (2,2). w: (..., 3) unit vectors.
    """
    w = np.asarray(w, np.float64)
    ct = np.clip(w[..., 2], -1, 1)
    ph = np.arctan2(w[..., 1], w[..., 0])
    out = []
    for l in range(3):
        for m in range(-l, l + 1):
            am = abs(m)
            K = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - am) / math.factorial(l + am))
            P = (-1) ** am * lpmv(am, l, ct)  # lpmv includes the Condon-Shortley phase; remove it
            if m > 0:
                out.append(math.sqrt(2) * K * P * np.cos(m * ph))
            elif m < 0:
                out.append(math.sqrt(2) * K * P * np.sin(am * ph))
            else:
                out.append(K * P)
    return np.stack(out, -1)


A_BAND = np.array([math.pi, 2 * math.pi / 3, math.pi / 4])       # Ramamoorthi & Hanrahan 2001
BAND_OF = np.array([0, 1, 1, 1, 2, 2, 2, 2, 2])


def np_sh_shade(normals, albedo, sh93):
    """float64 reference: albedo * sum_k A_l Y_k(n) L_k with Y written as explicit polynomials."""
    n = np.asarray(normals, np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    pi = math.pi
    Y = np.stack([np.full_like(x, 1 / (2 * math.sqrt(pi))),
                  math.sqrt(3 / (4 * pi)) * y, math.sqrt(3 / (4 * pi)) * z, math.sqrt(3 / (4 * pi)) * x,
                  math.sqrt(15 / (4 * pi)) * x * y, math.sqrt(15 / (4 * pi)) * y * z,
                  math.sqrt(5 / (16 * pi)) * (3 * z * z - 1),
                  math.sqrt(15 / (4 * pi)) * x * z, math.sqrt(15 / (16 * pi)) * (x * x - y * y)], -1)
    E = np.einsum("bik,k,bkc->bic", Y, A_BAND[BAND_OF], np.asarray(sh93, np.float64))
    return np.asarray(albedo, np.float64) * E


def sphere_quadrature(n_t=48, n_p=96):
    """Directions and weights integrating polynomials in w exactly (Gauss-Legendre in cos(theta) x trapezoid in phi)."""
    t, wt = np.polynomial.legendre.leggauss(n_t)
    ph = 2 * math.pi * (np.arange(n_p) + 0.5) / n_p
    T, P = np.meshgrid(t, ph, indexing="ij")
    s = np.sqrt(1 - T * T)
    w = np.stack([s * np.cos(P), s * np.sin(P), T], -1).reshape(-1, 3)
    weights = (wt[:, None] * np.full(n_p, 2 * math.pi / n_p)[None]).reshape(-1)
    return w, weights


def brute_irradiance(L, normals, n_t=64, n_p=128):
    """E(n) = int over the hemisphere around n of L(w) (n.w) dw, by quadrature in a frame aligned with n."""
    t, wt = np.polynomial.legendre.leggauss(n_t)
    t, wt = 0.5 * (t + 1), 0.5 * wt  # cos(angle to n) in [0, 1]
    ph = 2 * math.pi * (np.arange(n_p) + 0.5) / n_p
    out = []
    for n in normals:
        a = np.array([1.0, 0, 0]) if abs(n[0]) < 0.9 else np.array([0, 1.0, 0])
        u = np.cross(n, a)
        u /= np.linalg.norm(u)
        v = np.cross(n, u)
        s = np.sqrt(1 - t * t)
        w = (t[:, None, None] * n + s[:, None, None] * (np.cos(ph)[None, :, None] * u + np.sin(ph)[None, :, None] * v))
        val = L(w.reshape(-1, 3)).reshape(len(t), len(ph), -1)  # (n_t, n_p, 3 channels)
        out.append(np.einsum("tpc,t->c", val, wt * t) * (2 * math.pi / n_p))
    return np.array(out)


def project_env(L):
    """SH coefficients (9, 3) of an RGB environment L(w) -> (M, 3), by quadrature."""
    w, weights = sphere_quadrature(64, 128)
    return np.einsum("mk,m,mc->kc", real_sh_legendre(w), weights, L(w))


def t32(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float32, requires_grad=grad)


# ------------------------------------------------------------------------------------------ basis sanity
def test_reference_basis_is_orthonormal_and_matches_polynomials():
    """The Legendre-built reference basis is orthonormal and equals the documented polynomials."""
    w, weights = sphere_quadrature()
    Y = real_sh_legendre(w)
    np.testing.assert_allclose(np.einsum("mk,m,mj->kj", Y, weights, Y), np.eye(9), atol=1e-12)
    rng = np.random.default_rng(0)
    n = rng.normal(size=(50, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    # np_sh_shade with a one-hot code per k and unit albedo gives A_l * Y_k(n)
    for k in range(9):
        sh = np.zeros((1, 9, 3))
        sh[0, k, :] = 1
        got = np_sh_shade(n[None], np.ones((1, 50, 3)), sh)[0, :, 0] / A_BAND[BAND_OF[k]]
        np.testing.assert_allclose(got, real_sh_legendre(n)[:, k], atol=1e-12)
    # mofa_tk.ops.shading.sh_basis (plain torch helper) agrees too
    from mofa_tk.ops.shading import sh_basis
    np.testing.assert_allclose(sh_basis(torch.tensor(n)).numpy(), real_sh_legendre(n), atol=1e-6)


# ------------------------------------------------------------------------------------------ vertex normals
def test_vertex_normals_sphere_radial(backend):
    """On a UV sphere the area-weighted normals converge to the radial directions: second order in the grid
    step at a fixed latitude; in the first rings around a pole the up/down triangles differ in area, which
    leaves a first-order error there (~0.5 / n_lat rad on ring 1), while the poles are exact by symmetry."""
    errs = {}
    for n_lat in (64, 128):
        v, t = uv_sphere(n_lat, 2 * n_lat, radius=80.0)
        shift = np.array([10.0, -20.0, -500.0])  # translation and scale must not matter
        verts = np.stack([v, v * 0.5 + shift])
        n = vertex_normals(t32(verts), torch.tensor(t)).numpy()
        assert n.shape == verts.shape
        radial = v / np.linalg.norm(v, axis=1, keepdims=True)
        sin_polar = np.linalg.norm(radial[:, :2], axis=1)
        bulk = sin_polar >= math.sin(math.radians(10))  # polar angle in [10, 170] degrees
        for b in range(2):
            nb = n[b].astype(np.float64)
            ang = np.arctan2(np.linalg.norm(np.cross(nb, radial), axis=1), (nb * radial).sum(1))  # well conditioned
            np.testing.assert_allclose(np.linalg.norm(n[b], axis=1), 1, atol=1e-5)
            assert ang[[0, -1]].max() < 1e-6  # poles
            assert ang.max() < 0.6 / n_lat
            errs[n_lat, b] = ang[bulk].max()
        # vs float64 reference on the float32-rounded positions the op receives
        np.testing.assert_allclose(n, np_vertex_normals(verts.astype(np.float32), t), atol=1e-5)
    assert errs[128, 0] < 1e-3 and errs[128, 1] < 1e-3, errs
    assert errs[128, 0] < 0.3 * errs[64, 0], errs  # second-order convergence away from the poles


def test_vertex_normals_ccw_faces_plus_z_and_isolated_vertex(backend):
    verts = t32([[[0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 3, 3]]], grad=True)
    n = vertex_normals(verts, [[0, 1, 2]])
    np.testing.assert_allclose(n.detach().numpy()[0, :3], [[0, 0, 1]] * 3, atol=1e-7)
    np.testing.assert_array_equal(n.detach().numpy()[0, 3], [0, 0, 0])  # isolated vertex: zero, not NaN
    (n * torch.randn(1, 4, 3)).sum().backward()
    assert torch.isfinite(verts.grad).all()
    np.testing.assert_array_equal(verts.grad.numpy()[0, 3], [0, 0, 0])
    # a vertex whose only face is degenerate also gets the zero vector
    deg = vertex_normals(t32([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 2, 2]]), [[0, 1, 2], [3, 3, 3]])
    np.testing.assert_array_equal(deg.numpy()[0, 3], [0, 0, 0])
    # V = 0 and T = 0 edge cases
    assert vertex_normals(torch.zeros(2, 5, 3), torch.zeros(0, 3, dtype=torch.int32)).abs().sum() == 0


def test_vertex_normals_grad(backend):
    v, t = uv_sphere(4, 6, radius=50.0)
    rng = np.random.default_rng(1)
    B = 3
    verts = np.stack([v * rng.uniform(0.8, 1.2, (len(v), 1)) + rng.normal(0, 3, (1, 3)) for _ in range(B)])
    verts = np.concatenate([verts, rng.normal(0, 10, (B, 1, 3))], 1)  # + an isolated vertex
    out = vertex_normals(t32(verts), torch.tensor(t)).numpy()
    np.testing.assert_allclose(out, np_vertex_normals(verts, t), atol=2e-6)
    x = t32(verts, grad=True)
    w = rng.normal(size=verts.shape)
    (vertex_normals(x, torch.tensor(t)) * t32(w)).sum().backward()
    num = numeric_grad(lambda a: float((np_vertex_normals(a, t) * w).sum()), verts)
    assert rel_err(x.grad.numpy(), num) < 1e-4, rel_err(x.grad.numpy(), num)
    # batch element 1 alone gives the same normals as inside the batch
    one = vertex_normals(t32(verts[1:2]), torch.tensor(t)).numpy()
    np.testing.assert_allclose(one[0], out[1], atol=1e-6)


# ------------------------------------------------------------------------------------------ SH shading
def test_sh_shade_directional_light_closed_form(backend):
    """Per channel c a directional light of direction d_c and intensity I_c: L_k = I_c Y_k(d_c). The 9-term
    irradiance is (addition theorem)  E(n) = I/(4pi) sum_l A_l (2l+1) P_l(n.d) = I (1/4 + t/2 + 5/32 (3t^2 - 1))."""
    v, _ = uv_sphere(24, 48)
    normals = v / np.linalg.norm(v, axis=1, keepdims=True)
    rng = np.random.default_rng(2)
    B = 2
    d = rng.normal(size=(B, 3, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    I = rng.uniform(0.5, 2.0, (B, 3))
    sh = np.einsum("bck,bc->bkc", real_sh_legendre(d), I)  # (B, 9, 3)
    albedo = rng.uniform(0.2, 0.9, (B, len(normals), 3))
    nb = np.broadcast_to(normals, (B, len(normals), 3))
    tdot = np.einsum("nj,bcj->bnc", normals, d)
    E = I[:, None, :] * (0.25 + 0.5 * tdot + 5.0 / 32.0 * (3 * tdot ** 2 - 1))
    got = sh_shade(t32(nb), t32(albedo), t32(sh)).numpy()
    np.testing.assert_allclose(got, albedo * E, atol=1e-4)
    # same light through the flat (B, 27) channel-major layout: sh27[:, 9c + k] = sh[:, k, c]
    sh27 = sh.transpose(0, 2, 1).reshape(B, 27)
    np.testing.assert_allclose(sh_shade(t32(nb), t32(albedo), t32(sh27)).numpy(), got, atol=1e-6)
    # vs the exact (not band-limited) clamped cosine I max(0, n.d): off by at most 3/32 I (at n.d = 0), the
    # ~9 % bound of Ramamoorthi & Hanrahan
    dev = np.abs(got / albedo - I[:, None, :] * np.maximum(tdot, 0)) / I[:, None, :]
    assert 0.05 < dev.max() <= 3 / 32 + 1e-4


def test_sh_shade_vs_brute_force_environment(backend):
    """A band-limited (l <= 2) environment is reproduced exactly; a smooth non-band-limited one to 1 %
    of the peak irradiance (measured: 0.32 %)."""
    v, _ = uv_sphere(8, 16)
    normals = v / np.linalg.norm(v, axis=1, keepdims=True)

    def L_poly(w):  # RGB radiance, polynomial of degree 2 in w -> only bands 0..2
        x, y, z = w[:, 0], w[:, 1], w[:, 2]
        return np.stack([0.8 + 0.3 * y + 0.2 * z - 0.25 * x * z + 0.15 * (x * x - y * y),
                         0.6 - 0.2 * x + 0.1 * x * y + 0.2 * z * z,
                         0.5 + 0.4 * z - 0.1 * y * z], -1)

    d = np.array([0.3, 0.6, 0.75])
    d /= np.linalg.norm(d)

    def L_smooth(w):  # a broad "sun" lobe plus a sky gradient: smooth but not band-limited
        lobe = np.exp(3.0 * (w @ d - 1.0))
        sky = 0.2 + 0.1 * w[:, 1]
        return np.stack([lobe + sky, 0.8 * lobe + sky, 0.6 * lobe + 1.2 * sky], -1)

    for L, tol in ((L_poly, 1e-4), (L_smooth, 0.01)):
        sh = project_env(L)[None]
        got = sh_shade(t32(normals[None]), torch.ones(len(normals), 3), t32(sh)).numpy()[0]
        ref = brute_irradiance(L, normals)
        err = np.abs(got - ref).max() / np.abs(ref).max()
        assert err < tol, (L.__name__, err)
    # non-trivial: for the smooth environment the 9-term approximation is not exact
    assert err > 1e-3


def test_deep3dfacerecon_gamma_conversion(backend):
    """docs/lighting.md: Deep3DFaceRecon's gamma (B, 27) maps to our code by L = D * (gamma + init), with
    init = 0.8 on k = 0 and D = (1, -sqrt3, sqrt3, -sqrt3, 2sqrt2, -2sqrt2, 2sqrt2, -2sqrt2, 2sqrt2) per k.
    Their shading, written out from their published constants, must match ours after the conversion."""
    rng = np.random.default_rng(7)
    B, N = 2, 40
    n = rng.normal(size=(B, N, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    albedo = rng.uniform(0, 1, (B, N, 3))
    gamma = rng.normal(0, 0.3, (B, 27))
    pi = math.pi
    a = [pi, 2 * pi / math.sqrt(3), 2 * pi / math.sqrt(8)]
    c = [1 / math.sqrt(4 * pi), math.sqrt(3) / math.sqrt(4 * pi), 3 * math.sqrt(5) / math.sqrt(12 * pi)]
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    Yd = np.stack([a[0] * c[0] * np.ones_like(x), -a[1] * c[1] * y, a[1] * c[1] * z, -a[1] * c[1] * x,
                   a[2] * c[2] * x * y, -a[2] * c[2] * y * z, 0.5 * a[2] * c[2] / math.sqrt(3) * (3 * z * z - 1),
                   -a[2] * c[2] * x * z, 0.5 * a[2] * c[2] * (x * x - y * y)], -1)
    g = gamma.reshape(B, 3, 9) + np.array([0.8] + [0] * 8)  # their (B, 3 channels, 9) layout + init_lit
    theirs = albedo * np.einsum("bnk,bck->bnc", Yd, g)
    r3, r8 = math.sqrt(3), 2 * math.sqrt(2)
    D = np.array([1, -r3, r3, -r3, r8, -r8, r8, -r8, r8])
    ours = sh_shade(t32(n), t32(albedo), t32((g * D).reshape(B, 27))).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_ambient_sh_gives_albedo(backend):
    rng = np.random.default_rng(3)
    n = rng.normal(size=(4, 30, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    albedo = rng.uniform(0, 1, (4, 30, 3))
    np.testing.assert_allclose(sh_shade(t32(n), t32(albedo), ambient_sh(4)).numpy(), albedo, atol=1e-6)
    # uniform radiance L0 has irradiance pi * L0; irradiance 1 -> L0 = 1/pi, projected on Y_00 independently
    L = lambda w: np.full((len(w), 3), 1 / math.pi)
    np.testing.assert_allclose(ambient_sh(1).numpy()[0], project_env(L), atol=1e-9)
    assert np.abs(brute_irradiance(L, n[0, :3]) - 1).max() < 1e-9
    # sh = 0 is darkness; RGB intensity scales the channels
    assert sh_shade(t32(n), t32(albedo), torch.zeros(4, 27)).abs().max() == 0
    got = sh_shade(t32(n), t32(albedo), ambient_sh(4, intensity=(0.5, 1.0, 2.0))).numpy()
    np.testing.assert_allclose(got, albedo * np.array([0.5, 1.0, 2.0]), atol=1e-6)


def test_sh_shade_per_pixel_image_shape(backend):
    rng = np.random.default_rng(4)
    B, H, W = 2, 5, 7
    n = rng.normal(size=(B, H, W, 3))
    albedo = rng.uniform(0, 1, (H, W, 3))
    sh = rng.normal(size=(B, 27))
    img = sh_shade(t32(n), t32(albedo), t32(sh))
    assert img.shape == (B, H, W, 3)
    flat = sh_shade(t32(n.reshape(B, H * W, 3)), t32(albedo.reshape(H * W, 3)), t32(sh))
    np.testing.assert_allclose(img.numpy().reshape(B, H * W, 3), flat.numpy(), atol=1e-6)
    sh93 = sh.reshape(B, 3, 9).transpose(0, 2, 1)
    ref = np_sh_shade(n.reshape(B, -1, 3), np.broadcast_to(albedo.reshape(1, -1, 3), (B, H * W, 3)), sh93)
    np.testing.assert_allclose(flat.numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["b27_batched_albedo", "b93_shared_albedo"])
def test_sh_shade_grad(backend, layout):
    rng = np.random.default_rng(5)
    B, N = 3, 20
    normals = rng.normal(size=(B, N, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    sh93 = rng.normal(size=(B, 9, 3))
    if layout == "b27_batched_albedo":
        albedo = rng.uniform(0.1, 0.9, (B, N, 3))
        sh = sh93.transpose(0, 2, 1).reshape(B, 27)
        to93 = lambda s: s.reshape(B, 3, 9).transpose(0, 2, 1)
        alb_b = lambda a: a
    else:
        albedo = rng.uniform(0.1, 0.9, (N, 3))
        sh = sh93
        to93 = lambda s: s
        alb_b = lambda a: np.broadcast_to(a[None], (B, N, 3))
    inputs = [normals, albedo, sh]
    ref = lambda n, a, s: np_sh_shade(n, alb_b(a), to93(s))
    tin = [t32(a, grad=True) for a in inputs]
    out = sh_shade(*tin)
    np.testing.assert_allclose(out.detach().numpy(), ref(*inputs), rtol=1e-5, atol=1e-5)
    w = rng.normal(size=(B, N, 3))
    (out * t32(w)).sum().backward()
    for i in range(3):
        def f(xi, i=i):
            args = list(inputs)
            args[i] = xi
            return float((ref(*args) * w).sum())
        num = numeric_grad(f, inputs[i])
        assert rel_err(tin[i].grad.numpy(), num) < 1e-4, (i, rel_err(tin[i].grad.numpy(), num))


def test_sh_shade_large_batch_matches_single(backend):
    """All of B in one launch; sh reduction over N spans several chunks (N > 256)."""
    rng = np.random.default_rng(6)
    B, N = 33, 700
    n = rng.normal(size=(B, N, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    a = rng.uniform(0, 1, (B, N, 3))
    sh = rng.normal(size=(B, 9, 3))
    tsh = t32(sh, grad=True)
    out = sh_shade(t32(n), t32(a), tsh)
    w = rng.normal(size=(B, N, 3))
    (out * t32(w)).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), np_sh_shade(n, a, sh), rtol=1e-5, atol=1e-5)
    # d(sum w * out)/d sh[b, k, c] = sum_i w a A_l Y_k(n)  (linear in sh: exact via one-hot references)
    Yk = np.stack([np_sh_shade(n, np.ones_like(a), np.eye(9)[None, :, k:k + 1].repeat(3, 2).repeat(B, 0))[..., 0]
                   for k in range(9)], -1)  # (B, N, 9)
    gref = np.einsum("bnk,bnc->bkc", Yk, w * a)
    assert rel_err(tsh.grad.numpy(), gref) < 1e-5
    b = 17
    one = sh_shade(t32(n[b:b + 1]), t32(a[b:b + 1]), t32(sh[b:b + 1])).numpy()
    np.testing.assert_allclose(one[0], out.detach().numpy()[b], atol=1e-6)


# ------------------------------------------------------------------------------------------ bad inputs
def test_normals_shading_and_pose_are_bitwise_reproducible(backend):
    """Forward and backward of vertex_normals, sh_shade and rigid, repeated on the built-in model (11,129
    vertices, B = 3, the backend's default threads): bit-identical every time, because no kernel on this
    path sums with float atomics (gathers and per-chunk partial sums in a fixed order). The vertex normals
    also match a NumPy scatter-add reference."""
    m = mofa_tk.builtin_model()
    rng = np.random.default_rng(11)
    B = 3
    verts0 = mofa_tk.morph(m, torch.tensor(rng.normal(size=(B, m.k_id)), dtype=torch.float32),
                           torch.tensor(rng.normal(size=(B, m.k_exp)), dtype=torch.float32)).detach()
    rot0 = torch.tensor(rng.normal(0, 0.3, (B, 3)), dtype=torch.float32)
    sh0 = ambient_sh(B) + torch.tensor(rng.normal(0, 0.2, (B, 9, 3)), dtype=torch.float32)
    w = torch.tensor(rng.normal(size=(B, m.n_vertices, 3)), dtype=torch.float32)
    runs = []
    for _ in range(3):
        verts, rot, sh = (x.clone().requires_grad_() for x in (verts0, rot0, sh0))
        cam = mofa_tk.rigid(verts, rot, torch.tensor([[0.0, 0.0, -1000.0]]).expand(B, 3))
        n = vertex_normals(cam, m.triangles)
        col = sh_shade(n, m.albedo_mean[None].expand(B, -1, -1), sh)
        (col * w).sum().backward()
        runs.append([t.detach().clone() for t in (n, col, verts.grad, rot.grad, sh.grad)])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
    # the gathered normals equal a float64 scatter-add of the face cross products
    x = verts0[1].double().numpy()
    t = m.triangles.numpy().astype(np.int64)
    f = np.cross(x[t[:, 1]] - x[t[:, 0]], x[t[:, 2]] - x[t[:, 0]])
    acc = np.zeros_like(x)
    for k in range(3):
        np.add.at(acc, t[:, k], f)
    ref = acc / np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-300)
    got = vertex_normals(verts0[1:2], m.triangles)[0].numpy()
    assert np.abs(got - ref).max() < 1e-5


def test_vertex_normals_follow_in_place_edits_and_views(backend):
    """The CSR adjacency of a triangle tensor (int32 or int64) is rebuilt when the tensor is edited in place, and
    a strided view of a larger buffer is its own mesh: the normals always match those of a fresh copy."""
    rng = np.random.default_rng(5)
    verts = torch.tensor(rng.normal(size=(2, 30, 3)), dtype=torch.float32)
    tris = torch.tensor(rng.integers(0, 30, size=(40, 3)), dtype=torch.int64)
    first = vertex_normals(verts, tris)
    for _ in range(3):
        assert torch.equal(vertex_normals(verts, tris), first)
    tris[:, [1, 2]] = tris[:, [2, 1]].clone()          # flip every face in place
    flipped = vertex_normals(verts, tris)
    assert torch.equal(flipped, vertex_normals(verts, tris.clone()))
    nz = first.norm(dim=-1) > 0
    assert torch.allclose(flipped[nz], -first[nz], atol=1e-6)
    big = torch.tensor(rng.integers(0, 30, size=(40, 6)), dtype=torch.int32)
    for view in (big[:, 0::2], big[:, :3], big[:, 3:], big[:, :3]):
        assert torch.equal(vertex_normals(verts, view), vertex_normals(verts, view.contiguous()))


def test_bad_inputs_raise_clear_errors(backend):
    v, t = uv_sphere(4, 6)
    V = len(v)
    verts = t32(v[None])
    with pytest.raises(mofa_tk.InputError, match="verts"):
        vertex_normals(torch.zeros(1, V, 4), t)
    with pytest.raises(mofa_tk.InputError, match="verts.*NaN"):
        vertex_normals(torch.full((1, V, 3), float("nan")), t)
    with pytest.raises(mofa_tk.InputError, match="tris"):
        vertex_normals(verts, t[:, :2])
    with pytest.raises(mofa_tk.InputError, match=r"tris.*\[0, %d\)" % V):
        vertex_normals(verts, np.where(t == 3, V, t))
    with pytest.raises(mofa_tk.InputError, match="tris"):
        vertex_normals(verts, -np.ones((2, 3), np.int32))
    with pytest.raises(mofa_tk.InputError, match="tris.*integer"):
        vertex_normals(verts, t.astype(np.float32) + 0.5)
    n = torch.nn.functional.normalize(torch.randn(2, 10, 3), dim=-1)
    a = torch.rand(2, 10, 3)
    sh = torch.zeros(2, 27)
    with pytest.raises(mofa_tk.InputError, match="normals"):
        sh_shade(torch.zeros(2, 10, 2), a, sh)
    with pytest.raises(mofa_tk.InputError, match="normals.*NaN"):
        sh_shade(torch.full((2, 10, 3), float("nan")), a, sh)
    with pytest.raises(mofa_tk.InputError, match="albedo"):
        sh_shade(n, torch.rand(2, 11, 3), sh)
    with pytest.raises(mofa_tk.InputError, match="albedo"):
        sh_shade(n, torch.rand(3, 10, 3), sh)
    with pytest.raises(mofa_tk.InputError, match="albedo.*NaN"):
        sh_shade(n, torch.full((10, 3), float("inf")), sh)
    with pytest.raises(mofa_tk.InputError, match="sh"):
        sh_shade(n, a, torch.zeros(2, 26))
    with pytest.raises(mofa_tk.InputError, match="sh"):
        sh_shade(n, a, torch.zeros(2, 3, 9))
    with pytest.raises(mofa_tk.InputError, match="sh.*batch"):
        sh_shade(n, a, torch.zeros(3, 27))
    with pytest.raises(mofa_tk.InputError, match="sh.*NaN"):
        sh_shade(n, a, torch.full((2, 9, 3), float("nan")))

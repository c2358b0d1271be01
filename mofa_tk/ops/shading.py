"""Differentiable shading ops: area-weighted vertex normals and spherical-harmonics (SH) Lambertian shading.

Conventions (full write-up with sources in docs/lighting.md):

* Normals live in camera space (OpenGL frame: x right, y up, z towards the viewer); a triangle wound
  counter-clockwise seen from +z has normal +z.
* `sh` holds, per colour channel, the 9 real SH coefficients L_k of the incident radiance, in the order
  k = 0..8  <->  (l, m) = (0,0) (1,-1) (1,0) (1,1) (2,-2) (2,-1) (2,0) (2,1) (2,2), i.e. the basis
      Y_k(n) = c_k * [1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2]
  with c = (0.282095, 0.488603 x3, 1.092548, 1.092548, 0.315392, 1.092548, 0.546274)
  (no Condon-Shortley phase). The irradiance is the Ramamoorthi-Hanrahan convolution with the clamped
  cosine,  E(n) = sum_k A_l(k) L_k Y_k(n),  A = (pi, 2pi/3, pi/4) for bands 0, 1, 2, and the shaded colour is
      colour = albedo * E(n)    per channel.
* `sh = 0` means no light (black). `ambient_sh(B)` is uniform white light of irradiance 1 (colour = albedo);
  an encoder that regresses lighting should predict an offset to it (Deep3DFaceRecon adds a constant to
  the first coefficient for the same reason).
"""
from __future__ import annotations

import math

import torch

from .. import checks as C
from ..kernel_launch import launch
from ..backend import ensure_init
from ..errors import InputError
from ..kernels import lighting as kl
from ..mesh import as_mesh

__all__ = ["vertex_normals", "sh_shade", "ambient_sh", "sh_basis", "sh_basis_jacobian", "SH_CONSTANTS",
           "SH_BAND_FACTORS"]

#: Normalisation constants c_k of the 9 real SH basis functions (order as in the module docstring).
SH_CONSTANTS = (kl.C0, kl.C1, kl.C1, kl.C1, kl.C2, kl.C2, kl.C20, kl.C2, kl.C22)
#: Clamped-cosine convolution factors A_l (Ramamoorthi & Hanrahan 2001) for bands l = 0, 1, 2.
SH_BAND_FACTORS = (kl.A0, kl.A1, kl.A2)
#: L_00 of uniform radiance whose irradiance is 1:  A0 * L00 * c0 = 1  ->  L00 = 2 / sqrt(pi) = 1.128379.
AMBIENT_L00 = 1.0 / (kl.A0 * kl.C0)


# --------------------------------------------------------------------------------------------- normals
class _VertexNormals(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts, mesh):
        ensure_init()
        vk = C.to_kernel(verts)
        B, V = vk.shape[:2]
        tk = mesh.on(vk.device)
        vf_start, vf_corner = mesh.adjacency(vk.device, V)
        acc = torch.empty(B, V, 3, device=vk.device, dtype=torch.float32)
        out = torch.empty_like(acc)
        if B and V:
            launch(kl.normals_fwd, vk, tk, vf_start, vf_corner, acc, out)
        ctx.save_for_backward(vk, tk, acc, vf_start, vf_corner)
        return C.on_device_of(out, verts)

    @staticmethod
    def backward(ctx, grad_out):
        vk, tk, acc, vf_start, vf_corner = ctx.saved_tensors
        gv = torch.zeros_like(vk)
        if vk.shape[0] and vk.shape[1] and tk.shape[0]:
            g = C.to_kernel(grad_out)
            gacc = torch.empty_like(acc)
            launch(kl.normalize_bwd, acc, g, gacc)
            launch(kl.face_normal_bwd, vk, tk, vf_start, vf_corner, gacc, gv)
        return C.on_device_of(gv, grad_out), None


def vertex_normals(verts, tris) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Args:
        verts: (B, V, 3) or (V, 3) float32 positions (any length unit; mm in mofa_tk), in any frame: the normals
            come out in the same frame.
        tris: (T, 3) integer vertex indices in [0, V) or a `Mesh`, shared by the batch, wound counter-clockwise
            seen from the side the normal should point to.
    Returns:
        (B, V, 3) float32 unit normals n_v = s_v / |s_v|, s_v = sum over the faces incident to v of
        cross(x1 - x0, x2 - x0). Vertices with s_v = 0 (isolated, or only degenerate faces) get the zero vector.
    Gradients: w.r.t. verts (zero at vertices with s_v = 0).

    Example::

        normals = mofa_tk.vertex_normals(verts_cam, model.triangles)
    """
    verts = C.check_device("verts", C.as_tensor("verts", verts))
    if verts.ndim == 2:
        verts = verts[None]
    C.check_shape("verts", verts, "B,V,3")
    C.check_finite("verts", verts)
    mesh = as_mesh(tris, verts.shape[1])
    return _VertexNormals.apply(verts, mesh)


# --------------------------------------------------------------------------------------------- SH shading
def ambient_sh(B: int = 1, intensity=1.0, *, device=None) -> torch.Tensor:
    """SH code of uniform white ambient light.

    Args:
        B: batch size.
        intensity: irradiance, a scalar or 3 values (RGB); default 1.
        device: torch device of the result.
    Returns:
        (B, 9, 3) float32 with only L_00 non-zero (= intensity * 2 / sqrt(pi)), so that
        `sh_shade(n, albedo, ambient_sh(B))` is albedo for every unit normal n. Flat channel-major (B, 27):
        `.transpose(1, 2).reshape(B, 27)`.
    """
    if int(B) < 0:
        raise InputError(f"B: expected a batch size >= 0, got {B}")
    inten = C.as_tensor("intensity", intensity).reshape(-1)
    if inten.numel() not in (1, 3):
        raise InputError(f"intensity: expected a scalar or 3 values (RGB), got {inten.numel()} values")
    sh = torch.zeros(int(B), 9, 3, dtype=torch.float32, device=device)
    sh[:, 0, :] = (inten * AMBIENT_L00).to(sh.device)
    return sh


def sh_basis(normals) -> torch.Tensor:
    """The 9 real SH basis functions Y_k(n) in torch (the order of docs/lighting.md).

    Args:
        normals: (..., 3) float unit vectors.
    Returns:
        (..., 9) float32: c_k * (1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2).
    Gradients: torch autograd. Handy to project environment lighting onto the basis; `sh_shade` is the op.
    """
    n = C.as_tensor("normals", normals)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    one = torch.ones_like(x)
    poly = torch.stack([one, y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], -1)
    return poly * C.constant(SH_CONSTANTS, poly.dtype, poly.device)


def sh_basis_jacobian(normals: torch.Tensor, weights=None) -> torch.Tensor:
    """Derivative of the 9 SH basis functions with respect to the normal, in torch.

    Args:
        normals: (..., 3) float unit vectors.
        weights: optional (9,) factor per basis function (default `SH_CONSTANTS`, i.e. d Y_k / d n; pass
            A_l c_k for the irradiance).
    Returns:
        (..., 9, 3) float: [..., k, j] = weights[k] * d poly_k / d n_j, poly = (1, y, z, x, xy, yz, 3z^2 - 1,
        xz, x^2 - y^2). The normal is treated as a free 3-vector (no projection onto the sphere).
    """
    x, y, z = normals.unbind(-1)
    o, one = torch.zeros_like(x), torch.ones_like(x)
    rows = [(o, o, o), (o, one, o), (o, o, one), (one, o, o), (y, x, o), (o, z, y), (o, o, 6 * z), (z, o, x),
            (2 * x, -2 * y, o)]
    grad = torch.stack([torch.stack(r, -1) for r in rows], -2)
    if weights is None:
        weights = SH_CONSTANTS
    if not isinstance(weights, torch.Tensor):
        weights = C.constant(weights, grad.dtype, grad.device)
    return grad * weights.to(dtype=grad.dtype, device=grad.device)[:, None]


class _SHShade(torch.autograd.Function):
    @staticmethod
    def forward(ctx, normals, albedo, sh):
        ensure_init()
        nk, ak, sk = C.to_kernel(normals), C.to_kernel(albedo), C.to_kernel(sh)
        B, N = nk.shape[:2]
        out = torch.empty(B, N, 3, device=nk.device, dtype=torch.float32)
        if B and N:
            launch(kl.sh_shade_fwd, nk, ak, sk, out)
        ctx.save_for_backward(nk, ak, sk)
        return C.on_device_of(out, normals)

    @staticmethod
    def backward(ctx, grad_out):
        nk, ak, sk = ctx.saved_tensors
        B, N = nk.shape[:2]
        need_n, need_a, need_s = ctx.needs_input_grad
        g = C.to_kernel(grad_out)
        gn = torch.zeros_like(nk)
        ga = torch.zeros(B, N, 3, device=nk.device, dtype=torch.float32)
        gs = torch.zeros_like(sk)
        if B and N:
            if need_n or need_a:
                launch(kl.sh_shade_bwd_points, nk, ak, sk, g, gn, ga)
            if need_s:
                partial = torch.empty(B, (N + kl.CHUNK - 1) // kl.CHUNK, 9, 3, device=nk.device, dtype=torch.float32)
                launch(kl.sh_shade_bwd_sh, nk, ak, g, partial)
                gs = partial.sum(1)
        if ak.shape[0] == 1 and B != 1:
            ga = ga.sum(0, keepdim=True)
        return (C.on_device_of(gn, grad_out) if need_n else None, C.on_device_of(ga, grad_out) if need_a else None,
                C.on_device_of(gs, grad_out) if need_s else None)


def sh_shade(normals, albedo, sh) -> torch.Tensor:
    """Lambertian shading under 3-band (9 coefficient) SH lighting: colour = albedo * E(normal) per channel.

    Args:
        normals: (B, N, 3) float32 unit normals in camera space, per vertex or per pixel ((B, H, W, 3) images
            are accepted too; the result keeps that shape). Used as given (not renormalised); zero normals
            (background pixels) give finite colours.
        albedo: (B, N, 3), or (N, 3) shared by the batch (resp. (B, H, W, 3) or (H, W, 3)), float32 linear RGB.
        sh: (B, 27) float32 channel-major (sh[:, 9 c + k] = L_k of channel c, Deep3DFaceRecon's layout) or
            (B, 9, 3) (DECA's); a batch of 1 is broadcast. sh = 0 is darkness; `ambient_sh(B)` gives the albedo.
    Returns:
        (B, N, 3) (or (B, H, W, 3)) float32 linear colours, unclamped:
        colour[b, i, c] = albedo[b, i, c] * sum_k A_l(k) c_k poly_k(n[b, i]) sh[b, k, c], A = (pi, 2pi/3, pi/4).
    Gradients: w.r.t. normals, albedo and sh (one launch for the batch per input that needs one).

    Example::

        colours = mofa_tk.sh_shade(normals, model.albedo_mean, mofa_tk.ambient_sh(2))
    """
    normals = C.check_device("normals", C.as_tensor("normals", normals))
    if normals.ndim not in (3, 4) or normals.shape[-1] != 3:
        raise InputError(f"normals: expected shape (B, N, 3) or (B, H, W, 3), got {tuple(normals.shape)}")
    out_shape = normals.shape
    B = normals.shape[0]
    point_shape = tuple(normals.shape[1:-1])
    C.check_finite("normals", normals)
    N = math.prod(point_shape)
    n_flat = normals.reshape(B, N, 3)

    albedo = C.check_device("albedo", C.as_tensor("albedo", albedo)).to(normals.device)
    if tuple(albedo.shape) == point_shape + (3,):
        a_flat = albedo.reshape(1, N, 3)
    elif albedo.ndim == normals.ndim and tuple(albedo.shape[1:]) == point_shape + (3,) and albedo.shape[0] in (1, B):
        a_flat = albedo.reshape(albedo.shape[0], N, 3)
    else:
        dims = ", ".join(str(d) for d in point_shape)
        raise InputError(f"albedo: expected shape ({B}, {dims}, 3) or ({dims}, 3) to match normals "
                         f"{tuple(normals.shape)}, got {tuple(albedo.shape)}")
    C.check_finite("albedo", albedo)

    sh = C.check_device("sh", C.as_tensor("sh", sh)).to(normals.device)
    if sh.ndim == 2 and sh.shape[1] == 27:
        sh93 = sh.reshape(sh.shape[0], 3, 9).transpose(1, 2)
    elif sh.ndim == 3 and tuple(sh.shape[1:]) == (9, 3):
        sh93 = sh
    else:
        raise InputError(f"sh: expected shape (B, 27) or (B, 9, 3), got {tuple(sh.shape)}")
    C.check_finite("sh", sh)
    sh93 = C.batch_of("sh", sh93, B)

    out = _SHShade.apply(n_flat, a_flat, sh93)
    return out.reshape(out_shape)

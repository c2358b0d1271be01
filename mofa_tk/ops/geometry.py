"""Differentiable geometry ops: morph (face model), rigid pose, projection, clip-space transform.

Every op is a `torch.autograd.Function` whose forward and backward are Taichi kernels from
`mofa_tk.kernels` (hand-written adjoints; they run on cpu, cuda and vulkan).
"""
from __future__ import annotations

import torch

from .. import checks as C
from ..kernel_launch import launch
from ..backend import ensure_init
from ..camera import clip_matrix, intrinsics
from ..rotation import axis_angle_to_matrix
from ..kernels import morph as kmorph
from ..kernels import pose as kpose


# --------------------------------------------------------------------------------------------- morph
class _LinearCombine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mean, basis1, basis2, coef1, coef2):
        ensure_init()
        B = coef1.shape[0]
        out = torch.empty(B, mean.shape[0], 3, device=mean.device, dtype=torch.float32)
        launch(kmorph.linear_combine_fwd, mean, basis1, C.to_kernel(coef1), basis2, C.to_kernel(coef2), out)
        ctx.save_for_backward(basis1, basis2)
        ctx.B = B
        return out

    @staticmethod
    def backward(ctx, grad_out):
        basis1, basis2 = ctx.saved_tensors
        g = C.to_kernel(grad_out)
        grads = []
        n_chunks = (g.shape[1] + kmorph.CHUNK - 1) // kmorph.CHUNK
        for basis, needs in ((basis1, ctx.needs_input_grad[3]), (basis2, ctx.needs_input_grad[4])):
            if needs:
                if basis.shape[2]:
                    partial = torch.empty(n_chunks, ctx.B, basis.shape[2], device=g.device, dtype=torch.float32)
                    launch(kmorph.linear_combine_bwd, basis, g, partial)
                    grads.append(partial.sum(0))
                else:
                    grads.append(torch.zeros(ctx.B, 0, device=g.device, dtype=torch.float32))
            else:
                grads.append(None)
        return None, None, None, grads[0], grads[1]


def linear_combine(mean, basis1, coef1, basis2=None, coef2=None) -> torch.Tensor:
    """mean (V,3) + basis1 (V,3,K1) @ coef1 (B,K1) [+ basis2 (V,3,K2) @ coef2 (B,K2)] -> (B,V,3) float32.

    Gradients flow to the coefficients only (the model tensors are constants).
    """
    mean_k = C.to_kernel(mean)
    b1 = C.to_kernel(basis1)
    B = coef1.shape[0]
    if basis2 is None:
        b2 = torch.zeros(mean.shape[0], 3, 0, device=mean_k.device)
        coef2 = coef1.new_zeros(B, 0)
    else:
        b2 = C.to_kernel(basis2)
    # coefficients move to the kernel device outside the Function, so autograd returns their gradients on the
    # device they came from (inputs on the CPU are accepted with the cuda backend)
    out = _LinearCombine.apply(mean_k, b1, b2, coef1.to(device=mean_k.device, dtype=torch.float32),
                               coef2.to(device=mean_k.device, dtype=torch.float32))
    return C.on_device_of(out, coef1)


def morph(model, alpha, delta=None) -> torch.Tensor:
    """Face geometry from identity and expression coefficients: mean + S (alpha * std) + E (delta * std).

    Args:
        model: FaceModel (V vertices, K_id shape and K_exp expression components).
        alpha: (B, K_id) or (K_id,) float32, identity coefficients in standard deviations.
        delta: (B, K_exp) float32, expression coefficients in standard deviations (None: neutral).
    Returns:
        verts: (B, V, 3) float32, mm, model space.
    Gradients: w.r.t. alpha and delta (the model's tensors are constants).

    Example::

        verts = mofa_tk.morph(model, torch.zeros(2, model.k_id))        # the mean face, twice
    """
    alpha = C.check_device("alpha", C.as_tensor("alpha", alpha))
    if alpha.ndim == 1:
        alpha = alpha[None]
    sz = C.check_shape("alpha", alpha, "B,K", K=model.k_id)
    B = sz["B"]
    if delta is None:
        delta = alpha.new_zeros(B, model.k_exp)
    delta = C.check_device("delta", C.as_tensor("delta", delta))
    if delta.ndim == 1:
        delta = delta[None]
    C.check_shape("delta", delta, "B,K", B=B, K=model.k_exp)
    C.check_finite("alpha", alpha)
    C.check_finite("delta", delta)
    dev = alpha.device
    std_id = model.shape_std.to(dev)
    std_exp = model.expr_std.to(dev)
    return linear_combine(model.mean_shape, model.shape_basis, alpha * std_id,
                          model.expr_basis, delta * std_exp)


def albedo(model, beta=None) -> torch.Tensor:
    """Per-vertex reflectance from albedo coefficients: albedo_mean + A (beta * albedo_std).

    Args:
        model: FaceModel (K_alb albedo components).
        beta: (B, K_alb) or (K_alb,) float32 in standard deviations; None gives the mean albedo with B = 1.
    Returns:
        (B, V, 3) float32 linear RGB reflectance, nominally in [0, 1] (not clamped).
    Gradients: w.r.t. beta.
    """
    if beta is None:
        return model.albedo_mean[None].clone()
    beta = C.check_device("beta", C.as_tensor("beta", beta))
    if beta.ndim == 1:
        beta = beta[None]
    C.check_shape("beta", beta, "B,K", K=model.k_alb)
    C.check_finite("beta", beta)
    return linear_combine(model.albedo_mean, model.albedo_basis, beta * model.albedo_std.to(beta.device))


# --------------------------------------------------------------------------------------------- rigid / clip
class _Affine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, M, x):
        ensure_init()
        Mk, xk = C.to_kernel(M), C.to_kernel(x)
        out = torch.empty(x.shape[0], x.shape[1], M.shape[1], device=xk.device, dtype=torch.float32)
        launch(kpose.affine_fwd, Mk, xk, out)
        ctx.save_for_backward(Mk, xk)
        return C.on_device_of(out, x)

    @staticmethod
    def backward(ctx, grad_out):
        Mk, xk = ctx.saved_tensors
        g = C.to_kernel(grad_out)
        gx = torch.empty_like(xk)
        n_chunks = max(1, (xk.shape[1] + kpose.CHUNK - 1) // kpose.CHUNK)
        partial = torch.zeros(n_chunks, *Mk.shape, device=xk.device, dtype=torch.float32)
        launch(kpose.affine_bwd, Mk, xk, g, gx, partial)
        return C.on_device_of(partial.sum(0), grad_out), C.on_device_of(gx, grad_out)


def _check_verts(name, verts):
    verts = C.check_device(name, C.as_tensor(name, verts))
    if verts.ndim == 2:
        verts = verts[None]
    C.check_shape(name, verts, "B,V,3")
    C.check_finite(name, verts)
    return verts


def rigid(verts, rotation, translation) -> torch.Tensor:
    """Rigid transform into camera space: R @ v + t.

    Args:
        verts: (B, V, 3) or (V, 3) float32, mm, model space.
        rotation: (B, 3) axis-angle in radians, or (B, 3, 3) rotation matrices (a batch of 1 broadcasts).
        translation: (B, 3) float32, mm.
    Returns:
        (B, V, 3) float32, mm, OpenGL camera space (the camera looks along -z).
    Gradients: w.r.t. verts, rotation and translation.

    Example::

        cam = mofa_tk.rigid(verts, torch.tensor([[0.0, 0.3, 0.0]]), torch.tensor([[0.0, 0.0, -1000.0]]))
    """
    verts = _check_verts("verts", verts)
    B = verts.shape[0]
    rotation = C.check_device("rotation", C.as_tensor("rotation", rotation)).to(verts.device)
    if rotation.ndim == 1:
        rotation = rotation[None]
    if rotation.ndim == 2:
        C.check_shape("rotation", rotation, "B,3")
        C.check_finite("rotation", rotation)
        R = axis_angle_to_matrix(rotation)
    else:
        C.check_shape("rotation", rotation, "B,3,3")
        C.check_finite("rotation", rotation)
        R = rotation
    translation = C.check_device("translation", C.as_tensor("translation", translation)).to(verts.device)
    if translation.ndim == 1:
        translation = translation[None]
    C.check_shape("translation", translation, "B,3")
    C.check_finite("translation", translation)
    R = C.batch_of("rotation", R, B)
    t = C.batch_of("translation", translation, B)
    M = torch.cat([R, t[:, :, None]], dim=2)
    return _Affine.apply(M, verts)


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, intr):
        ensure_init()
        xk, ik = C.to_kernel(x), C.to_kernel(intr)
        B, V = x.shape[:2]
        pix = torch.empty(B, V, 2, device=xk.device)
        depth = torch.empty(B, V, device=xk.device)
        launch(kpose.project_fwd, xk, ik, pix, depth)
        ctx.save_for_backward(xk, ik)
        return C.on_device_of(pix, x), C.on_device_of(depth, x)

    @staticmethod
    def backward(ctx, g_pix, g_depth):
        xk, ik = ctx.saved_tensors
        gp = C.to_kernel(g_pix) if g_pix is not None else torch.zeros(xk.shape[0], xk.shape[1], 2, device=xk.device)
        gd = C.to_kernel(g_depth) if g_depth is not None else torch.zeros(xk.shape[0], xk.shape[1], device=xk.device)
        gx = torch.empty_like(xk)
        launch(kpose.project_bwd, xk, ik, gp, gd, gx)
        return C.on_device_of(gx, g_pix if g_pix is not None else g_depth), None


def project(verts_cam, focal, principal, image_size=None):
    """Pinhole projection of camera-space vertices to pixels (a Taichi kernel; `Camera.project` is the torch form).

    Args:
        verts_cam: (B, V, 3) float32, mm, camera space; visible points have z < 0.
        focal: focal length in pixels: scalar, (B,), (2,) = (fx, fy) or (B, 2).
        principal: principal point (cx, cy) in pixels: (2,) or (B, 2).
        image_size: (H, W), accepted for symmetry with `to_clip` (unused by the projection itself).
    Returns:
        (pixels (B, V, 2) float32, u right, v down, pixel centres at +0.5; depth (B, V) float32, mm, = -z).
    Gradients: w.r.t. verts_cam; the intrinsics are constants. Points with z >= 0 raise InputError.
    """
    verts = _check_verts("verts_cam", verts_cam)
    intr = intrinsics(focal, principal, verts.shape[0], verts.device)
    if verts.numel() and float(verts[..., 2].detach().max()) >= 0:
        raise C.InputError("verts_cam: some vertices have z >= 0 (at or behind the camera, which looks along -z); "
                           "use to_clip + rasterize, which clip them, or move the face in front of the camera")
    return _Project.apply(verts, intr)


def to_clip(verts_cam, focal, principal, image_size, near: float = 10.0, far: float = 10000.0) -> torch.Tensor:
    """Camera-space vertices to nvdiffrast-style homogeneous clip coordinates for `rasterize`.

    Args:
        verts_cam: (B, V, 3) float32, mm, OpenGL camera space.
        focal, principal: pixels, as in `project`.
        image_size: (H, W) of the image to be rasterized.
        near, far: clipping depths, mm (0 < near < far).
    Returns:
        pos_clip: (B, V, 4) float32 with x/w = 2u/W - 1 and y/w = 2v/H - 1 for the pixel (u, v) of `project` (so
        rasterized row i is image row i), z/w from -1 at `near` to +1 at `far`, w = depth.
    Gradients: w.r.t. verts_cam (and focal / principal when they are tensors).

    Example::

        clip = mofa_tk.to_clip(cam, 1015.0, (112.0, 112.0), (224, 224))
    """
    verts = _check_verts("verts_cam", verts_cam)
    if not (0 < near < far):
        raise C.InputError(f"near/far: need 0 < near < far, got near={near}, far={far}")
    M = clip_matrix(focal, principal, image_size, near, far, batch=verts.shape[0], device=verts.device)
    return _Affine.apply(M, verts)

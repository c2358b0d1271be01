"""Differentiable texture sampling with nvdiffrast's conventions: `texture` (nearest and bilinear filtering).

Textures are NHWC like the images: tex (1 or B, TH, TW, C); uv (B, H, W, 2) with u along the texture's width, v
along its rows (the order in memory), (0, 0) the outer corner of the first texel and (1, 1) that of the last, so
that texel (i, j) is centred at ((j + 0.5) / TW, (i + 0.5) / TH) (as torch's `grid_sample` with grid = 2 uv - 1
and align_corners=False). Kernels: kernels/texture.py.
"""
from __future__ import annotations

import torch

from .. import checks as C
from ..backend import ensure_init
from ..kernel_launch import launch, torch_single_threaded
from ..kernels import texture as ktex
from .raster import pixel_runs, scatter_buffer, sum_copies

__all__ = ["texture", "FILTER_MODES", "BOUNDARY_MODES"]

FILTER_MODES = {"nearest": ktex.NEAREST, "linear": ktex.LINEAR}
BOUNDARY_MODES = {"wrap": ktex.WRAP, "clamp": ktex.CLAMP, "zero": ktex.ZERO}


def _dims(tex, uv):
    B, H, W = uv.shape[:3]
    return B, H * W, tex.shape[1], tex.shape[2], tex.shape[3], int(tex.shape[0] == 1)


class _Texture(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tex, uv, filt, boundary):
        ensure_init()
        texk, uvk = C.to_kernel(tex), C.to_kernel(uv)
        B, HW, TH, TW, Ch, shared = _dims(texk, uvk)
        out = torch.empty(*uvk.shape[:3], Ch, device=uvk.device)
        launch(ktex.texture_fwd, texk.view(-1), uvk.view(-1), out.view(-1), B, HW, TH, TW, Ch, shared,
               *pixel_runs(HW), filt, boundary, Ch if Ch <= ktex.MAX_STATIC_C else 0)
        ctx.save_for_backward(texk, uvk)
        ctx.modes = (filt, boundary)
        return C.on_device_of(out, tex)

    @staticmethod
    @torch_single_threaded
    def backward(ctx, grad_out):
        texk, uvk = ctx.saved_tensors
        filt, boundary = ctx.modes
        want_tex = ctx.needs_input_grad[0]
        mode, grad_tex = scatter_buffer(want_tex, texk.shape, texk.device)
        grad_uv = torch.empty_like(uvk)
        B, HW, TH, TW, Ch, shared = _dims(texk, uvk)
        launch(ktex.texture_bwd, texk.view(-1), uvk.view(-1), C.to_kernel(grad_out).view(-1), grad_tex.view(-1),
               grad_uv.view(-1), B, HW, TH, TW, Ch, shared, int(want_tex), *pixel_runs(HW), filt, boundary, mode)
        gt = C.on_device_of(sum_copies(grad_tex), grad_out) if want_tex else None
        return gt, C.on_device_of(grad_uv, grad_out), None, None


@torch_single_threaded
def texture(tex, uv, filter_mode: str = "auto", boundary_mode: str = "wrap") -> torch.Tensor:
    """Sample a texture at texture coordinates (nvdiffrast's `texture` without mipmaps).

    Args:
        tex: (B, TH, TW, C) or (TH, TW, C) float32 texture (a batch of 1 is shared by every item of uv).
        uv: (B, H, W, 2) float32 texture coordinates, (0, 0) and (1, 1) the outer corners of the first and the
            last texel (module docstring); any finite value (outside [0, 1] the boundary mode applies).
        filter_mode: "linear" (bilinear; "auto" is the same here) or "nearest".
        boundary_mode: "wrap" (the texture repeats), "clamp" (the edge texels extend) or "zero" (zeros outside).
    Returns:
        (B, H, W, C) float32 (units of tex).
    Gradients: w.r.t. tex, and w.r.t. uv for linear filtering (nearest is piecewise constant in uv: zero).

    Example::

        uv_img = mofa_tk.interpolate(uvs, rast, tris)
        color = mofa_tk.texture(tex, uv_img, boundary_mode="clamp")
    """
    if filter_mode == "auto":
        filter_mode = "linear"
    if filter_mode not in FILTER_MODES:
        raise C.InputError(f"filter_mode: expected 'auto', 'linear' or 'nearest', got {filter_mode!r}")
    if boundary_mode not in BOUNDARY_MODES:
        raise C.InputError(f"boundary_mode: expected one of {tuple(BOUNDARY_MODES)}, got {boundary_mode!r}")
    tex = C.check_device("tex", C.as_tensor("tex", tex))
    if tex.ndim == 3:
        tex = tex[None]
    C.check_shape("tex", tex, "B,TH,TW,C")
    if tex.shape[1] < 1 or tex.shape[2] < 1:
        raise C.InputError(f"tex: expected at least one texel, got shape {tuple(tex.shape)}")
    C.check_finite("tex", tex)
    uv = C.check_device("uv", C.as_tensor("uv", uv))
    C.check_shape("uv", uv, "B,H,W,2")
    C.check_finite("uv", uv)
    if tex.shape[0] not in (1, uv.shape[0]):
        raise C.InputError(f"tex: batch size {tex.shape[0]} must be 1 or match uv's B={uv.shape[0]}")
    if tex.shape[3] == 0 or uv.shape[1] * uv.shape[2] == 0:
        return tex.new_zeros(*uv.shape[:3], tex.shape[3])
    return _Texture.apply(tex, uv, FILTER_MODES[filter_mode], BOUNDARY_MODES[boundary_mode])

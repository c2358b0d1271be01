"""Differentiable texture sampling with nvdiffrast's conventions: `texture` (nearest, bilinear, and mipmapped
bilinear / trilinear filtering) and `texture_construct_mip`.

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

__all__ = ["texture", "texture_construct_mip", "cube_face_coords", "FILTER_MODES", "MIP_FILTER_MODES",
           "BOUNDARY_MODES"]

FILTER_MODES = {"nearest": ktex.NEAREST, "linear": ktex.LINEAR}
BOUNDARY_MODES = {"wrap": ktex.WRAP, "clamp": ktex.CLAMP, "zero": ktex.ZERO}
#: mipmapped filters: bilinear within the nearest level (False) or trilinear between two levels (True)
MIP_FILTER_MODES = {"linear-mipmap-nearest": False, "linear-mipmap-linear": True}


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


class _TextureMip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mip, uv, lam, levels, C_, trilinear, boundary):
        ensure_init()
        mipk, uvk, lamk = C.to_kernel(mip), C.to_kernel(uv), C.to_kernel(lam)
        levk = levels.to(uvk.device)
        B, H, W = uvk.shape[:3]
        out = torch.empty(B, H, W, C_, device=uvk.device)
        dims = (B, H * W, levels.shape[0], C_, mipk.shape[1], int(mipk.shape[0] == 1))
        launch(ktex.texture_mip_fwd, mipk.view(-1), levk.view(-1), uvk.view(-1), lamk.view(-1), out.view(-1), *dims,
               *pixel_runs(H * W), trilinear, boundary)
        ctx.save_for_backward(mipk, levk, uvk, lamk)
        ctx.cfg = (dims, trilinear, boundary)
        return C.on_device_of(out, uv)

    @staticmethod
    @torch_single_threaded
    def backward(ctx, grad_out):
        mipk, levk, uvk, lamk = ctx.saved_tensors
        dims, trilinear, boundary = ctx.cfg
        want_mip = ctx.needs_input_grad[0]
        mode, grad_mip = scatter_buffer(want_mip, mipk.shape, mipk.device)
        grad_uv, grad_lam = torch.empty_like(uvk), torch.empty_like(lamk)
        launch(ktex.texture_mip_bwd, mipk.view(-1), levk.view(-1), uvk.view(-1), lamk.view(-1),
               C.to_kernel(grad_out).view(-1), grad_mip.view(-1), grad_uv.view(-1), grad_lam.view(-1), *dims,
               int(want_mip), *pixel_runs(dims[1]), trilinear, boundary, mode)
        gm = C.on_device_of(sum_copies(grad_mip), grad_out) if want_mip else None
        return gm, C.on_device_of(grad_uv, grad_out), C.on_device_of(grad_lam, grad_out), None, None, None, None


def texture_construct_mip(tex, max_mip_level: int | None = None) -> list:
    """The mip pyramid of a texture: [tex, level 1, ...], each level the 2 x 2 average of the previous one
    (a side of odd length drops its last texel row / column; a side of 1 stays 1), down to 1 x 1 or
    `max_mip_level` levels below the texture. Differentiable (torch pooling): pass it as `texture(mip=...)`
    to reuse it across calls while the texture is fixed.

    tex: (B, TH, TW, C) or (TH, TW, C) float32. Returns a list of (B, THk, TWk, C) float32 tensors."""
    tex = C.check_device("tex", C.as_tensor("tex", tex))
    if tex.ndim == 3:
        tex = tex[None]
    C.check_shape("tex", tex, "B,TH,TW,C")
    if max_mip_level is not None and (isinstance(max_mip_level, bool) or int(max_mip_level) != max_mip_level
                                      or max_mip_level < 0):
        raise C.InputError(f"max_mip_level: expected an integer >= 0 or None, got {max_mip_level!r}")
    levels = [tex]
    while max(levels[-1].shape[1:3]) > 1 and (max_mip_level is None or len(levels) <= max_mip_level):
        t = levels[-1].permute(0, 3, 1, 2)
        k = (min(2, t.shape[2]), min(2, t.shape[3]))
        levels.append(torch.nn.functional.avg_pool2d(t, k).permute(0, 2, 3, 1).contiguous())
    return levels


def _mip_level(uv_da, bias, TH, TW, L, B, H, W, device):
    """(B, H, W) float32 mip level in [0, L - 1]: log2 of the longer screen-space footprint axis in texels
    (uv_da = (du/dx, du/dy, dv/dx, dv/dy) per pixel), plus `bias`; 0 without either."""
    lam = torch.zeros(B, H, W, device=device)
    if uv_da is not None:
        dx2 = (uv_da[..., 0] * TW) ** 2 + (uv_da[..., 2] * TH) ** 2
        dy2 = (uv_da[..., 1] * TW) ** 2 + (uv_da[..., 3] * TH) ** 2
        lam = 0.5 * torch.log2(torch.maximum(dx2, dy2).clamp(min=1e-30))
    if bias is not None:
        lam = lam + bias
    return lam.clamp(0.0, float(L - 1))


@torch_single_threaded
def texture(tex, uv, uv_da=None, mip_level_bias=None, mip=None, filter_mode: str = "auto",
            boundary_mode: str = "wrap", max_mip_level: int | None = None) -> torch.Tensor:
    """Sample a texture at texture coordinates (nvdiffrast's `texture`).

    Args:
        tex: (B, TH, TW, C) or (TH, TW, C) float32 texture (a batch of 1 is shared by every item of uv).
        uv: (B, H, W, 2) float32 texture coordinates, (0, 0) and (1, 1) the outer corners of the first and the
            last texel (module docstring); any finite value (outside [0, 1] the boundary mode applies).
        uv_da: optional (B, H, W, 4) float32 (du/dx, du/dy, dv/dx, dv/dy) per pixel (screen-space derivatives of
            uv) choosing the mip level: log2 of the longer footprint axis in texels.
        mip_level_bias: optional (B, H, W) float32 added to that level (levels are clamped to [0, last]).
        mip: optional pyramid from `texture_construct_mip(tex)` (reused instead of building it again).
        filter_mode: "nearest", "linear" (bilinear), "linear-mipmap-nearest" (bilinear in the nearest level),
            "linear-mipmap-linear" (trilinear); "auto": trilinear when uv_da or mip_level_bias is given, else
            bilinear.
        boundary_mode: "wrap" (the texture repeats), "clamp" (the edge texels extend), "zero" (zeros outside), or
            "cube": tex is a cube map (B, 6, S, S, C) (faces +x, -x, +y, -y, +z, -z, OpenGL's layout), uv (B, H, W,
            3) are directions and uv_da (B, H, W, 6) = (dx/dX, dx/dY, dy/dX, dy/dY, dz/dX, dz/dY); each face is
            filtered on its own, clamped at its edges (nvdiffrast blends across the edge there).
        max_mip_level: at most this many levels below the texture (default: down to 1 x 1).
    Returns:
        (B, H, W, C) float32 (units of tex).
    Gradients: w.r.t. tex (through the pyramid), uv (linear filters; nearest is piecewise constant in uv: zero),
    and, for trilinear filtering, uv_da and mip_level_bias (through the level).

    Example::

        uv_img = mofa_tk.interpolate(uvs, rast, tris)
        color = mofa_tk.texture(tex, uv_img, boundary_mode="clamp")
    """
    if filter_mode == "auto":
        filter_mode = "linear-mipmap-linear" if (uv_da is not None or mip_level_bias is not None) else "linear"
    if filter_mode not in FILTER_MODES and filter_mode not in MIP_FILTER_MODES:
        raise C.InputError(f"filter_mode: expected 'auto' or one of {tuple(FILTER_MODES) + tuple(MIP_FILTER_MODES)}, "
                           f"got {filter_mode!r}")
    if boundary_mode == "cube":
        return _texture_cube(tex, uv, uv_da, mip_level_bias, mip, filter_mode, max_mip_level)
    if boundary_mode not in BOUNDARY_MODES:
        raise C.InputError(f"boundary_mode: expected one of {tuple(BOUNDARY_MODES) + ('cube',)}, "
                           f"got {boundary_mode!r}")
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
    if filter_mode in FILTER_MODES:
        return _Texture.apply(tex, uv, FILTER_MODES[filter_mode], BOUNDARY_MODES[boundary_mode])
    B, H, W = uv.shape[:3]
    if uv_da is not None:
        uv_da = C.check_device("uv_da", C.as_tensor("uv_da", uv_da))
        C.check_shape("uv_da", uv_da, "B,H,W,4", B=B, H=H, W=W)
        C.check_finite("uv_da", uv_da)
    if mip_level_bias is not None:
        mip_level_bias = C.check_device("mip_level_bias", C.as_tensor("mip_level_bias", mip_level_bias))
        C.check_shape("mip_level_bias", mip_level_bias, "B,H,W", B=B, H=H, W=W)
        C.check_finite("mip_level_bias", mip_level_bias)
    if mip is None:
        mip = texture_construct_mip(tex, max_mip_level)
    else:
        mip = list(mip)
        if not mip or tuple(mip[0].shape) != tuple(tex.shape):
            raise C.InputError(f"mip: expected the list of texture_construct_mip(tex) for tex of shape "
                               f"{tuple(tex.shape)}, got {[tuple(m.shape) for m in mip][:3]}")
        if max_mip_level is not None:
            mip = mip[:max_mip_level + 1]
    L = len(mip)
    lam = _mip_level(uv_da, mip_level_bias, tex.shape[1], tex.shape[2], L, B, H, W, uv.device)
    A, Ch = tex.shape[0], tex.shape[3]
    flat = torch.cat([m.reshape(A, -1) for m in mip], 1)
    sizes = [m.shape[1] * m.shape[2] * Ch for m in mip]
    offsets = [sum(sizes[:k]) for k in range(L)]
    levels = torch.tensor([[offsets[k], mip[k].shape[1], mip[k].shape[2]] for k in range(L)], dtype=torch.int32)
    return _TextureMip.apply(flat, uv, lam, levels, Ch, MIP_FILTER_MODES[filter_mode], BOUNDARY_MODES[boundary_mode])


# ---------------------------------------------------------------------------------------------- cube maps
# Per face (+x, -x, +y, -y, +z, -z; OpenGL): s_c = A_S . d, t_c = A_T . d, major axis m = A_M . d; face coordinates
# s = (s_c / m + 1) / 2 along the face's width, t = (t_c / m + 1) / 2 along its rows.
_A_S = torch.tensor([[0, 0, -1], [0, 0, 1], [1, 0, 0], [1, 0, 0], [1, 0, 0], [-1, 0, 0]], dtype=torch.float32)
_A_T = torch.tensor([[0, -1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1], [0, -1, 0], [0, -1, 0]], dtype=torch.float32)
_A_M = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float32)


def cube_face_coords(d: torch.Tensor):
    """Directions d (..., 3) -> (face (...,) int64, s (...,), t (...,)) of an OpenGL cube map (module table)."""
    ax = d.abs()
    x_major = (ax[..., 0] >= ax[..., 1]) & (ax[..., 0] >= ax[..., 2])
    y_major = ~x_major & (ax[..., 1] >= ax[..., 2])
    face = torch.where(x_major, torch.where(d[..., 0] >= 0, 0, 1),
                       torch.where(y_major, torch.where(d[..., 1] >= 0, 2, 3), torch.where(d[..., 2] >= 0, 4, 5)))
    dev = d.device
    a_s, a_t, a_m = _A_S.to(dev, d.dtype)[face], _A_T.to(dev, d.dtype)[face], _A_M.to(dev, d.dtype)[face]
    m = (a_m * d).sum(-1)
    return face, ((a_s * d).sum(-1) / m + 1) / 2, ((a_t * d).sum(-1) / m + 1) / 2, (a_s, a_t, a_m, m)


def _texture_cube(tex, uv, uv_da, mip_level_bias, mip, filter_mode, max_mip_level):
    """Cube maps on the 2-D sampler: the 6 faces stacked into one (6 S, S) atlas, each direction mapped to its
    face's rows (clamped half a texel inside the face, so bilinear taps stay on it) and its derivatives carried
    to the atlas coordinates; mip levels stop while faces keep an even side (pooling never mixes two faces)."""
    tex = C.check_device("tex", C.as_tensor("tex", tex))
    if tex.ndim == 4:
        tex = tex[None]
    C.check_shape("tex", tex, "B,6,S,S,C")
    C.check_finite("tex", tex)
    uv = C.check_device("uv", C.as_tensor("uv", uv))
    C.check_shape("uv", uv, "B,H,W,3")
    C.check_finite("uv", uv)
    if bool((uv.abs().amax(-1) == 0).any()):
        raise C.InputError("uv: cube-map directions must not be zero")
    if mip is not None:
        raise C.InputError("mip: prebuilt pyramids are not supported for cube maps (the pyramid is built per call)")
    A, S, Ch = tex.shape[0], tex.shape[2], tex.shape[4]
    atlas = tex.reshape(A, 6 * S, S, Ch)
    face, s, t, (a_s, a_t, a_m, m) = cube_face_coords(uv)
    half = 0.5 / S
    s_in, t_in = s.clamp(half, 1 - half), t.clamp(half, 1 - half)
    atlas_uv = torch.stack([s_in, (face.to(uv.dtype) + t_in) / 6], -1).contiguous()
    da = None
    if uv_da is not None:
        uv_da = C.check_device("uv_da", C.as_tensor("uv_da", uv_da))
        C.check_shape("uv_da", uv_da, "B,H,W,6", B=uv.shape[0], H=uv.shape[1], W=uv.shape[2])
        C.check_finite("uv_da", uv_da)
        cols = []
        for k in range(2):                                      # screen X, then Y
            dd = uv_da[..., k::2]                               # (dx, dy, dz) along this screen axis
            dm = (a_m * dd).sum(-1)
            ds = ((a_s * dd).sum(-1) * m - (a_s * uv).sum(-1) * dm) / (2 * m * m)
            dt = ((a_t * dd).sum(-1) * m - (a_t * uv).sum(-1) * dm) / (2 * m * m)
            cols.append((ds, dt / 6))
        da = torch.stack([cols[0][0], cols[1][0], cols[0][1], cols[1][1]], -1).contiguous()
    levels, n = 0, S
    while n % 2 == 0 and n > 1:
        n //= 2
        levels += 1
    cap = levels if max_mip_level is None else min(levels, int(max_mip_level))
    if filter_mode in MIP_FILTER_MODES or (filter_mode == "auto" and (da is not None or mip_level_bias is not None)):
        mode = "linear-mipmap-linear" if filter_mode == "auto" else filter_mode
        return texture(atlas, atlas_uv, uv_da=da, mip_level_bias=mip_level_bias, filter_mode=mode,
                       boundary_mode="clamp", max_mip_level=cap)
    return texture(atlas, atlas_uv, filter_mode="linear" if filter_mode == "auto" else filter_mode,
                   boundary_mode="clamp")

"""Differentiable rasterization ops with nvdiffrast's conventions: rasterize, interpolate, antialias.

Images are NHWC. `rast` is (B, H, W, 4) float32 = (u, v, z/w, triangle_id + 1), zeros where no triangle
covers the pixel centre; u and v are the perspective-correct barycentric weights of the triangle's 2nd and
3rd vertex. Pixel (row i, column j) samples NDC (2 (j + 0.5) / W - 1, 2 (i + 0.5) / H - 1).
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from .. import checks as C
from ..kernel_launch import INT32_MAX, launch, torch_single_threaded
from ..mesh import as_mesh
from ..backend import cpu_threads, current_backend, ensure_init, generation, kernel_device
from ..kernels import antialias as kaa
from ..kernels import interpolate as kinterp
from ..kernels import raster as kraster
from ..kernels import scatter as kscatter

_KEY_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()
_KEY_CACHE_SIZE = 2


def _key_buffers(B, H, W):
    """Flat (B H W,) key buffers in Taichi memory, filled with their empty sentinel: (mode, key_a, key_b).

    cpu/cuda use one packed int64 key per pixel; vulkan uses a float32 depth and a float32 id buffer (see
    kernels/raster.py). The resolve pass restores the sentinel in every pixel it reads, so the buffers are
    reused across calls without a separate clear (and on Vulkan they stay on the device).
    """
    import taichi as ti

    key = (generation(), B, H, W)
    bufs = _KEY_CACHE.pop(key, None)
    if bufs is None:
        if current_backend() == "vulkan":
            a, b = (ti.ndarray(ti.f32, shape=(B * H * W,)) for _ in range(2))
            a.fill(kraster.KEY_EMPTY)
            b.fill(kraster.KEY_EMPTY)
            bufs = ("split", a, b)
        else:
            a = torch.full((B * H * W,), kraster.KEY_EMPTY_I64, dtype=torch.int64, device=kernel_device())
            bufs = ("packed", a, a)
    _KEY_CACHE[key] = bufs
    while len(_KEY_CACHE) > _KEY_CACHE_SIZE:
        _KEY_CACHE.popitem(last=False)
    return bufs


def _raster_forward(posk, trisk, H, W, cull_sign, floor=None):
    """Run the visibility passes and the resolve pass; returns rast (B, H, W, 4). floor: optional (B H W,) float32
    depth floor (z/w) on the kernel device: only surfaces behind it are kept (depth peeling).

    Also the NaN / Inf check of the positions: the projection loop flags them (InputError naming pos_clip), so no
    separate reduction over pos_clip runs on the common path. Usually one launch (`raster_pass`, see
    kernels/raster.py); large triangles add `raster_big` and a separate `resolve`, Vulkan's split keys a second
    `raster_pass` for the id scan.
    """
    B, V, T = posk.shape[0], posk.shape[1], trisk.shape[0]
    rast = torch.empty(B, H, W, 4, device=posk.device, dtype=torch.float32)
    if T == 0 or B == 0 or H * W == 0:  # nothing to scan (and Taichi has no zero-size ndarrays on Vulkan)
        C.check_finite("pos_clip", posk)
        return rast.zero_()
    mode, key_a, key_b = _key_buffers(B, H, W)
    big = torch.empty(B * T * 5, dtype=torch.int32, device=posk.device)  # untouched unless triangles are large
    big_tiles = torch.empty(B * T, dtype=torch.int32, device=posk.device)
    modes = (kraster.PACKED,) if mode == "packed" else (kraster.DEPTH, kraster.ID)
    pos1, tris1, rast1 = posk.view(-1), trisk.view(-1), rast.view(-1)
    # (large triangles, vertices with NaN / Inf): int32 counters, float32 on Vulkan (see raster_pass)
    status = torch.zeros(2, dtype=torch.int32 if mode == "packed" else torch.float32, device=posk.device)
    proj = torch.empty(B * V * 4, device=posk.device)
    run, n_runs = pixel_runs(W)
    peel = floor is not None
    floor = floor.contiguous().view(-1) if peel else torch.zeros(1, device=posk.device)
    try:
        tile_end, n_tasks = None, 0
        for m in modes:
            launch(kraster.raster_pass, pos1, proj, tris1, big, big_tiles, status, rast1, B, V, T, H, W, 1 / W, 1 / H,
                   cull_sign, run, n_runs, key_a, key_b, floor, m, m == modes[0], m == modes[-1], B == 1, peel)
            if tile_end is None:
                n_large, n_bad = (int(x) for x in C.host_read(status, pending=True))
                if n_bad:  # the scan did not run: the key buffers are clean
                    raise C.non_finite_error("pos_clip", posk)
                tile_end, n_tasks = _tile_prefix_sum(big_tiles, n_large) if n_large else (False, 0)
            if n_tasks:
                launch(kraster.raster_big, pos1, proj, tris1, big, tile_end, n_tasks, V, T, H, W, 1 / W, 1 / H,
                       key_a, key_b, floor, m, peel)
        if n_tasks:  # raster_pass left the resolve to this launch
            launch(kraster.resolve, pos1, tris1, key_a, key_b, rast1, B, V, H, W, 1 / W, 1 / H, run, n_runs,
                   modes[-1])
    except Exception:
        _KEY_CACHE.clear()  # buffers may be left dirty
        raise
    return rast


PIXEL_RUN_CPU = 16  # pixels per iteration of the per-pixel loops on the CPU (kernels/runs.py)


def pixel_runs(n):
    """(run, number of runs) for cutting n pixels (a row, or an item's H W pixels) into the runs the per-pixel
    loops take per iteration (kernels/runs.py). Runs of PIXEL_RUN_CPU on the CPU; GPU backends keep one pixel per
    thread, which gives them B H W threads."""
    run = PIXEL_RUN_CPU if current_backend() == "cpu" else 1
    return run, (n + run - 1) // run


def _tile_prefix_sum(big_tiles, n):
    """(inclusive prefix sum of the first n large triangles' tile counts as int32, total number of tiles)."""
    if n > kraster.MAX_BIG:
        raise C.InputError(f"rasterize: {n} triangles with bounding boxes over {kraster.SMALL_MAX} pixels; at most "
                           f"{kraster.MAX_BIG} per call are supported (split the batch)")
    tile_end = torch.cumsum(big_tiles[:n], 0, dtype=torch.int64)
    total = int(C.host_read(tile_end[-1:])[0])
    if total > INT32_MAX:
        raise C.InputError(f"rasterize: the large triangles cover {total} tiles of {kraster.TILE}x{kraster.TILE} "
                           f"pixels, more than the {INT32_MAX} a kernel can index (split the batch)")
    return tile_end.to(torch.int32), total


COPIES_MAX_BYTES = 256 << 20  # per-thread gradient copies beyond this (many threads x a large batch) use atomics
COPIES_MAX_THREADS = 8  # with more CPU threads, zeroing and summing the copies would outweigh the atomics saved


def scatter_plan(grad_numel: int):
    """(mode, number of gradient copies) for a backward kernel that adds pixel adjoints into a vertex gradient of
    `grad_numel` elements (kernels/scatter.py): atomics into one copy on GPUs; on the CPU one copy per thread
    without atomics, unless there are more than COPIES_MAX_THREADS threads or the copies would exceed
    COPIES_MAX_BYTES."""
    if current_backend() != "cpu":
        return kscatter.ATOMIC, 1
    K = cpu_threads()
    if K > COPIES_MAX_THREADS or K * grad_numel * 4 > COPIES_MAX_BYTES:
        return kscatter.ATOMIC, 1
    return kscatter.COPIES, K


def scatter_buffer(want: bool, shape, device):
    """(mode, gradient buffer) for a backward kernel scattering into a gradient of `shape`: the per-thread
    copies (or one copy for atomics) of `scatter_plan`, zeroed; without a gradient wanted, the kernel never
    touches it: one placeholder element."""
    if not want:
        return kscatter.ATOMIC, torch.zeros(1, device=device)
    numel = 1
    for n in shape:
        numel *= int(n)
    mode, n_copies = scatter_plan(numel)
    return mode, torch.zeros(n_copies, *shape, device=device)


def sum_copies(copies):
    """Sum over the leading axis of the per-thread gradient copies (K, ...), as a new tensor of one copy's size.
    Adding whole copies is about 3x faster than torch's strided `sum(0)`."""
    if copies.shape[0] == 1:
        return copies[0]
    out = copies[0] + copies[1]
    for k in range(2, copies.shape[0]):
        out.add_(copies[k])
    return out


def _check_pos(name, pos, finite=True):
    """`pos` as (B, V, 4) float32; NaN / Inf are rejected unless finite=False (rasterize checks in its kernel)."""
    pos = C.check_device(name, C.as_tensor(name, pos))
    if pos.ndim == 2:
        pos = pos[None]
    C.check_shape(name, pos, "B,V,4")
    if finite:
        C.check_finite(name, pos)
    return pos


def _check_rast(rast, B=None):
    rast = C.check_device("rast", C.as_tensor("rast", rast))
    C.check_shape("rast", rast, "B,H,W,4", B=B)
    return rast


# --------------------------------------------------------------------------------------------- rasterize
def _rasterize_on_kernel_device(pos, mesh, H, W, cull_sign, floor=None):
    """(pos and tris as the kernels read them, rast) for checked inputs."""
    ensure_init()
    posk = C.to_kernel(pos)
    trisk = mesh.on(posk.device)
    floork = None if floor is None else C.to_kernel(floor)
    return posk, trisk, _raster_forward(posk, trisk, H, W, cull_sign, floork)


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, mesh, H, W, cull_sign, floor=None):
        posk, trisk, rast = _rasterize_on_kernel_device(pos, mesh, H, W, cull_sign, floor)
        ctx.save_for_backward(posk, trisk, rast)
        return C.on_device_of(rast, pos)

    @staticmethod
    @torch_single_threaded
    def backward(ctx, grad_rast):
        posk, trisk, rast = ctx.saved_tensors
        B, V = posk.shape[:2]
        H, W = rast.shape[1:3]
        mode, n_copies = scatter_plan(posk.numel())
        grad_pos = torch.zeros(n_copies, B, V, 4, device=posk.device)
        if trisk.shape[0]:
            launch(kraster.rast_bwd, posk.view(-1), trisk.view(-1), rast.detach().view(-1),
                   C.to_kernel(grad_rast).view(-1), grad_pos.view(-1), B, V, H, W, 1 / W, 1 / H, *pixel_runs(W),
                   mode)
        grad_pos = sum_copies(grad_pos)
        return C.on_device_of(grad_pos, grad_rast), None, None, None, None, None


@torch_single_threaded
def rasterize_behind(pos_clip, tris, resolution, depth_floor) -> torch.Tensor:
    """`rasterize` keeping, per pixel, the nearest surface whose z/w lies behind `depth_floor` (depth peeling:
    pass the previous layer's rast[..., 2], with +inf where it was empty, to get the next layer).

    Args:
        pos_clip, tris, resolution: as `rasterize`.
        depth_floor: (B, H, W) float32 z/w per pixel; surfaces within kernels.raster.PEEL_EPS of it count as
            the same layer. -inf keeps everything (the first layer).
    Returns:
        rast (B, H, W, 4) as `rasterize`. Gradients: as `rasterize`.
    """
    pos = _check_pos("pos_clip", pos_clip, finite=False)
    mesh = as_mesh(tris, pos.shape[1])
    H, W = C.image_size("resolution", resolution, square=False, max_side=16384)
    floor = C.check_device("depth_floor", C.as_tensor("depth_floor", depth_floor))
    C.check_shape("depth_floor", floor, "B,H,W", B=pos.shape[0], H=H, W=W)
    if bool(torch.isnan(floor).any()):
        raise C.InputError("depth_floor: contains NaN")
    # the kernels compare finite floats: clamp the infinities to values beyond any z/w a surface can have
    floor = floor.clamp(-1e30, 1e30).contiguous()
    if not (pos.requires_grad and torch.is_grad_enabled()):
        return C.on_device_of(_rasterize_on_kernel_device(pos, mesh, H, W, 0, floor)[2], pos)
    return _Rasterize.apply(pos, mesh, H, W, 0, floor)


@torch_single_threaded
def rasterize(pos_clip, tris, resolution, cull_backfaces: bool = False) -> torch.Tensor:
    """Rasterize triangles with a z-buffer (nvdiffrast's `rasterize` contract).

    Args:
        pos_clip: (B, V, 4) or (V, 4) float32 homogeneous clip-space positions, e.g. from `to_clip`.
        tris: (T, 3) int32 / int64 vertex indices (0-based) or a `Mesh`, shared by the batch.
        resolution: (H, W) output size in pixels (each side at most 16384).
        cull_backfaces: drop triangles whose NDC signed area (x right, y along image rows) is positive, i.e.
            that appear clockwise in the output image (with `to_clip`, faces wound counter-clockwise seen from
            the camera are kept).
    Returns:
        rast: (B, H, W, 4) float32 (u, v, z/w, triangle_id + 1), zeros for background; u, v are the
        perspective-correct barycentrics of the 2nd and 3rd vertex. Triangles crossing w <= 0 are handled in
        homogeneous coordinates (no wrap-around); points outside -1 <= z/w <= 1 are clipped; exact depth ties
        go to the lowest triangle id.
    Gradients: d rast[..., :3] / d pos_clip (hand-written adjoint); none through the triangle ids.

    Example::

        rast = mofa_tk.rasterize(clip, model.triangles, (224, 224))
    """
    pos = _check_pos("pos_clip", pos_clip, finite=False)  # NaN / Inf: checked by the first kernel
    mesh = as_mesh(tris, pos.shape[1])
    if mesh.n_triangles > kraster.MAX_TRIANGLES:
        raise C.InputError(f"tris: at most {kraster.MAX_TRIANGLES} triangles are supported, got {mesh.n_triangles}")
    H, W = C.image_size("resolution", resolution, square=False, max_side=16384)
    cull_sign = 1 if cull_backfaces else 0
    if not (pos.requires_grad and torch.is_grad_enabled()):  # nothing to differentiate: no autograd bookkeeping
        return C.on_device_of(_rasterize_on_kernel_device(pos, mesh, H, W, cull_sign)[2], pos)
    return _Rasterize.apply(pos, mesh, H, W, cull_sign)


# --------------------------------------------------------------------------------------------- interpolate
def _static_channels(Ch):
    """The kernels' CS template argument: Ch when small enough to unroll the channel loops, else 0 (run-time loop)."""
    return Ch if Ch <= kinterp.MAX_STATIC_C else 0


def _interp_dims(attr, rast, runs=False):
    """Scalar arguments of the interpolate kernels: B, H W, V, C, shared (attr's batch is 1), then (runs=True, the
    forward) the pixel run length and runs per item, then CS (static C or 0)."""
    B, H, W = rast.shape[:3]
    Ch = attr.shape[2]
    run_args = pixel_runs(H * W) if runs else ()
    return (B, H * W, attr.shape[1], Ch, int(attr.shape[0] == 1), *run_args, _static_channels(Ch))


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, rast, mesh):
        ensure_init()
        attrk, rastk = C.to_kernel(attr), C.to_kernel(rast)
        trisk = mesh.on(rastk.device)
        B, H, W = rast.shape[:3]
        out = torch.empty(B, H, W, attr.shape[2], device=rastk.device)
        launch(kinterp.interpolate_fwd, attrk.view(-1), rastk.view(-1), trisk.view(-1), out.view(-1),
               *_interp_dims(attrk, rastk, runs=True))
        ctx.save_for_backward(attrk, rastk, trisk)
        return C.on_device_of(out, attr)

    @staticmethod
    @torch_single_threaded
    def backward(ctx, grad_out):
        attrk, rastk, trisk = ctx.saved_tensors
        want_attr = ctx.needs_input_grad[0]
        mode, grad_attr = scatter_buffer(want_attr, attrk.shape, attrk.device)
        grad_rast = torch.empty_like(rastk)
        B, HW, V, Ch, shared, cs = _interp_dims(attrk, rastk)
        launch(kinterp.interpolate_bwd, attrk.view(-1), rastk.view(-1), trisk.view(-1),
               C.to_kernel(grad_out).view(-1), grad_attr.view(-1), grad_rast.view(-1), B, HW, V, Ch, shared,
               int(want_attr), cs, mode, B == 1)
        if not want_attr:
            return None, C.on_device_of(grad_rast, grad_out), None
        return C.on_device_of(sum_copies(grad_attr), grad_out), C.on_device_of(grad_rast, grad_out), None


@torch_single_threaded
def interpolate(attr, rast, tris) -> torch.Tensor:
    """Interpolate vertex attributes at every pixel (nvdiffrast's `interpolate`, without derivative outputs).

    Args:
        attr: (B, V, C) or (V, C) float32 per-vertex attributes (any units; a batch of 1 is shared).
        rast: (B, H, W, 4) float32 from `rasterize`.
        tris: (T, 3) integer indices or `Mesh`, the triangles given to `rasterize`.
    Returns:
        (B, H, W, C) float32 (units of attr); zeros at background pixels.
    Gradients: w.r.t. attr and, through the barycentrics in rast, the positions given to `rasterize`.

    Example::

        color = mofa_tk.interpolate(model.albedo_mean, rast, model.triangles)
    """
    attr = C.check_device("attr", C.as_tensor("attr", attr))
    if attr.ndim == 2:
        attr = attr[None]
    C.check_shape("attr", attr, "B,V,C")
    C.check_finite("attr", attr)
    rast = _check_rast(rast)
    if attr.shape[0] not in (1, rast.shape[0]):
        raise C.InputError(f"attr: batch size {attr.shape[0]} must be 1 or match rast's B={rast.shape[0]}")
    mesh = as_mesh(tris, attr.shape[1])
    if attr.shape[2] == 0:
        return attr.new_zeros(*rast.shape[:3], 0)
    return _Interpolate.apply(attr, rast, mesh)


# --------------------------------------------------------------------------------------------- antialias
class _Antialias(torch.autograd.Function):
    @staticmethod
    def forward(ctx, color, rast, pos, mesh):
        ensure_init()
        colork, rastk, posk = C.to_kernel(color), C.to_kernel(rast), C.to_kernel(pos)
        trisk = mesh.on(rastk.device)
        nbr = mesh.neighbours(rastk.device)
        B, H, W = colork.shape[:3]
        dev = colork.device
        V, T, Ch = posk.shape[1], trisk.shape[0], colork.shape[3]
        out = colork.clone()
        facing = torch.empty(B * T, dtype=torch.int32, device=dev)
        silmask = torch.empty(B * T, dtype=torch.int32, device=dev)
        pair_code = torch.empty(B * H * W * 2, dtype=torch.int32, device=dev)
        pair_alpha = torch.empty(B * H * W * 2, device=dev)
        launch(kaa.antialias_fwd, colork.view(-1), rastk.view(-1), posk.view(-1), trisk.view(-1), nbr.view(-1),
               facing, silmask, pair_code, pair_alpha, out.view(-1), B, V, T, H, W, Ch, *pixel_runs(W),
               _static_channels(Ch), B == 1)
        ctx.save_for_backward(colork, rastk, posk, trisk, pair_code, pair_alpha)
        return C.on_device_of(out, color)

    @staticmethod
    @torch_single_threaded
    def backward(ctx, grad_out):
        colork, rastk, posk, trisk, pair_code, pair_alpha = ctx.saved_tensors
        g = C.to_kernel(grad_out)
        grad_color = g.clone()
        grad_pos = torch.zeros_like(posk)
        B, H, W, Ch = colork.shape
        launch(kaa.antialias_bwd, colork.view(-1), rastk.view(-1), posk.view(-1), trisk.view(-1), pair_code,
               pair_alpha, g.view(-1), grad_color.view(-1), grad_pos.view(-1), B, posk.shape[1], H, W, Ch,
               *pixel_runs(W))
        return C.on_device_of(grad_color, grad_out), None, C.on_device_of(grad_pos, grad_out), None


@torch_single_threaded
def antialias(color, rast, pos_clip, tris) -> torch.Tensor:
    """Antialias silhouette edges and give gradients to vertex positions across visibility edges.

    Args:
        color: (B, H, W, C) float32 shaded image, e.g. from `interpolate`.
        rast: (B, H, W, 4) float32 from `rasterize` with the same pos_clip and tris.
        pos_clip: (B, V, 4) float32 clip-space positions given to `rasterize`.
        tris: (T, 3) integer indices or `Mesh`.
    Returns:
        (B, H, W, C) float32: color blended across silhouette edges by the covered fraction of each pixel.
    Gradients: w.r.t. color and pos_clip (the edge position enters the blend weight; docs/rendering.md).

    Example::

        image = mofa_tk.antialias(color, rast, clip, model.triangles)
    """
    color = C.check_device("color", C.as_tensor("color", color))
    C.check_shape("color", color, "B,H,W,C")
    C.check_finite("color", color)
    B, H, W = color.shape[:3]
    rast = _check_rast(rast, B)
    if tuple(rast.shape[1:3]) != (H, W):
        raise C.InputError(f"rast: resolution {tuple(rast.shape[1:3])} does not match color's {(H, W)}")
    pos = _check_pos("pos_clip", pos_clip)
    if pos.shape[0] != B:
        raise C.InputError(f"pos_clip: batch size {pos.shape[0]} does not match color's B={B}")
    mesh = as_mesh(tris, pos.shape[1])
    if mesh.n_triangles == 0 or color.shape[3] == 0:
        return color.clone()
    return _Antialias.apply(color, rast, pos, mesh)

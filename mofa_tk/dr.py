"""nvdiffrast-compatible names: `import mofa_tk.dr as dr` in place of `import nvdiffrast.torch as dr`.

The functions take nvdiffrast's arguments and return what nvdiffrast returns, running mofa_tk's Taichi ops (on
its backend: cpu, vulkan or cuda; `mofa_tk.init` picks it, automatically on first use). The mapping:

| nvdiffrast.torch | here |
|---|---|
| `RasterizeCudaContext(device=None)`, `RasterizeGLContext(...)` | accepted and ignored (no context is needed) |
| `rasterize(glctx, pos, tri, resolution, ranges=None, grad_db=True)` -> `(rast, rast_db)` | `mofa_tk.rasterize` + `ops.derivatives.rast_derivatives` (rast_db has 0 channels when grad_db=False); range mode (2-D pos + `ranges`) rasterizes each range as one batch item |
| `interpolate(attr, rast, tri, rast_db=None, diff_attrs=None)` -> `(out, out_da)` | `mofa_tk.interpolate` + `ops.derivatives.interpolate_derivatives` |
| `texture(tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode, max_mip_level)` | `mofa_tk.texture` (cube maps: each face filtered on its own, clamped at its edges) |
| `texture_construct_mip(tex, max_mip_level=None, cube_mode=False)` | `mofa_tk.texture_construct_mip` (2-D; cube maps build theirs per call) |
| `antialias(color, rast, pos, tri, topology_hash=None, pos_gradient_boost=1.0)` | `mofa_tk.antialias` (a 2-D pos is shared by the batch) |
| `antialias_construct_topology_hash(tri)` | returns the `Mesh` of tri (its edge tables are built once and cached) |
| `DepthPeeler(glctx, pos, tri, resolution, ranges=None, grad_db=True)`, `rasterize_next_layer()` | `ops.raster.rasterize_behind` with the previous layer's depth (instanced mode) |
| `get_log_level()`, `set_log_level(level)` | kept for scripts that call them |

Not provided: filtering across cube-map face edges, prebuilt cube-map pyramids, depth peeling in range mode,
`RasterizeGLContext`'s OpenGL options (ignored).
Differences: rasterize rejects NaN / Inf positions (nvdiffrast renders them as missing triangles) and needs
float32; `rast_db` is computed in torch from the positions (differentiable), not by the rasterizer.
"""
from __future__ import annotations

import torch

from . import checks as C
from .mesh import Mesh
from .ops.derivatives import interpolate_derivatives, rast_derivatives
from .ops.raster import antialias as _antialias
from .ops.raster import interpolate as _interpolate
from .ops.raster import rasterize as _rasterize
from .ops.raster import rasterize_behind as _rasterize_behind
from .ops.texture import texture as _texture
from .ops.texture import texture_construct_mip as _construct_mip

__all__ = ["RasterizeCudaContext", "RasterizeGLContext", "DepthPeeler", "rasterize", "interpolate", "texture",
           "texture_construct_mip", "antialias", "antialias_construct_topology_hash", "get_log_level",
           "set_log_level"]

_LOG_LEVEL = [1]


class RasterizeCudaContext:
    """Accepted for compatibility: mofa_tk needs no rasterizer context (its backend is `mofa_tk.init`'s)."""

    def __init__(self, device=None):
        self.device = device


class RasterizeGLContext(RasterizeCudaContext):
    """Accepted for compatibility (OpenGL options are ignored: mofa_tk uses no OpenGL)."""

    def __init__(self, output_db=True, mode="automatic", device=None):
        super().__init__(device)
        self.output_db = output_db


def get_log_level() -> int:
    return _LOG_LEVEL[0]


def set_log_level(level: int) -> None:
    _LOG_LEVEL[0] = int(level)


def _ranges(ranges, T):
    r = C.as_tensor("ranges", ranges, dtype=torch.int64).cpu()
    if r.ndim != 2 or r.shape[1] != 2:
        raise C.InputError(f"ranges: expected (N, 2) [first triangle, count] rows, got shape {tuple(r.shape)}")
    if bool((r < 0).any()) or bool((r[:, 0] + r[:, 1] > T).any()):
        raise C.InputError(f"ranges: every [first, count] must lie within the {T} triangles")
    return r


def _tri_tensor(tri) -> torch.Tensor:
    """tri (a `Mesh` or (T, 3) indices) as an index tensor."""
    return tri.triangles if isinstance(tri, Mesh) else C.as_tensor("tri", tri, dtype=torch.int64)


def _with_db(rast, pos, tri, grad_db):
    """(rast, rast_db): rast_db from `rast_derivatives` with grad_db, else 0 channels (nvdiffrast's returns)."""
    if not grad_db:
        return rast, rast.new_zeros(*rast.shape[:3], 0)
    return rast, rast_derivatives(pos, _tri_tensor(tri), rast).to(rast.dtype)


def rasterize(glctx, pos, tri, resolution, ranges=None, grad_db=True):
    """nvdiffrast's `rasterize`: (rast (B, H, W, 4), rast_db (B, H, W, 4 or 0)).

    Instanced mode: pos (B, V, 4), tri (T, 3). Range mode: pos (V, 4) and ranges (N, 2) int [first triangle,
    count] on the CPU: item n rasterizes triangles first..first+count-1, and its triangle ids index the whole tri.
    """
    H, W = (int(resolution[0]), int(resolution[1]))
    pos_t = C.as_tensor("pos", pos)
    tri_t = _tri_tensor(tri)
    if ranges is None:
        if pos_t.ndim != 3:
            raise C.InputError(f"pos: instanced mode expects (B, V, 4), got shape {tuple(pos_t.shape)}; a 2-D pos "
                               f"needs ranges")
        rast = _rasterize(pos_t, tri, (H, W))
        pos_db = pos_t
    else:
        if pos_t.ndim != 2:
            raise C.InputError(f"pos: range mode expects (V, 4), got shape {tuple(pos_t.shape)}")
        r = _ranges(ranges, tri_t.shape[0])
        items = []
        for first, count in r.tolist():
            sub = tri_t[first:first + count]
            ra = _rasterize(pos_t, sub, (H, W)) if count else pos_t.new_zeros(1, H, W, 4)
            if count and first:
                ids = torch.where(ra[..., 3:] > 0, ra[..., 3:] + first, ra[..., 3:])
                ra = torch.cat([ra[..., :3], ids], -1)
            items.append(ra)
        rast = torch.cat(items, 0)
        pos_db = pos_t[None]
    return _with_db(rast, pos_db, tri_t, grad_db)


class DepthPeeler:
    """nvdiffrast's depth peeler: `with DepthPeeler(glctx, pos, tri, resolution) as peeler:` then
    `rast, rast_db = peeler.rasterize_next_layer()` returns the nearest layer first, then the surfaces behind it
    (per pixel, the nearest one behind the previous layer's depth), until pixels run out of surfaces (zeros).
    Instanced mode only (pos (B, V, 4)); `ops.raster.rasterize_behind` does the work."""

    def __init__(self, glctx, pos, tri, resolution, ranges=None, grad_db=True):
        if ranges is not None:
            raise C.InputError("DepthPeeler: range mode is not supported by mofa_tk (use instanced pos (B, V, 4))")
        self.pos, self.tri, self.grad_db = pos, tri, grad_db
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.floor = None

    def __enter__(self):
        self.floor = None
        return self

    def __exit__(self, *exc):
        self.floor = None
        return False

    def rasterize_next_layer(self):
        """(rast, rast_db) of the next depth layer."""
        pos_t = C.as_tensor("pos", self.pos)
        if pos_t.ndim != 3:
            raise C.InputError(f"pos: expected (B, V, 4), got shape {tuple(pos_t.shape)}")
        H, W = self.resolution
        if self.floor is None:
            self.floor = torch.full((pos_t.shape[0], H, W), -torch.inf, device=pos_t.device)
        rast = _rasterize_behind(pos_t, self.tri, (H, W), self.floor)
        # the next layer lies behind this one; where this one is empty, nothing is left
        self.floor = torch.where(rast[..., 3] > 0, rast[..., 2].detach(), torch.full_like(rast[..., 2], torch.inf))
        return _with_db(rast, pos_t, self.tri, self.grad_db)


def interpolate(attr, rast, tri, rast_db=None, diff_attrs=None):
    """nvdiffrast's `interpolate`: (out (B, H, W, C), out_da (B, H, W, 2 len(diff_attrs) or 0))."""
    out = _interpolate(attr, rast, tri)
    if diff_attrs is None:
        return out, out.new_zeros(*out.shape[:3], 0)
    if rast_db is None or rast_db.shape[-1] != 4:
        raise C.InputError("interpolate: diff_attrs needs rast_db from rasterize(..., grad_db=True)")
    return out, interpolate_derivatives(attr, rast, tri, rast_db, diff_attrs).to(out.dtype)


def texture(tex, uv, uv_da=None, mip_level_bias=None, mip=None, filter_mode="auto", boundary_mode="wrap",
            max_mip_level=None):
    """nvdiffrast's `texture` (`mofa_tk.texture`; cube maps filtered per face, see its docstring)."""
    return _texture(tex, uv, uv_da=uv_da, mip_level_bias=mip_level_bias, mip=mip, filter_mode=filter_mode,
                    boundary_mode=boundary_mode, max_mip_level=max_mip_level)


def texture_construct_mip(tex, max_mip_level=None, cube_mode=False):
    """nvdiffrast's `texture_construct_mip` (2-D textures): the pyramid to pass as texture(mip=...). Cube maps
    build their pyramid in each `texture` call."""
    if cube_mode:
        raise C.InputError("cube_mode: prebuilt cube-map pyramids are not supported by mofa_tk (texture builds "
                           "the pyramid itself; pass mip=None)")
    return _construct_mip(tex, max_mip_level)


class _Boost(torch.autograd.Function):
    """Identity whose backward scales the gradient (nvdiffrast's pos_gradient_boost)."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.k = k
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.k, None


def antialias(color, rast, pos, tri, topology_hash=None, pos_gradient_boost=1.0):
    """nvdiffrast's `antialias`; a 2-D pos (range mode) is shared by the batch; the gradient reaching pos is
    multiplied by pos_gradient_boost."""
    pos_t = C.as_tensor("pos", pos)
    mesh = topology_hash if isinstance(topology_hash, Mesh) else tri
    if pos_t.ndim == 2:
        pos_t = pos_t[None].expand(rast.shape[0], -1, -1).contiguous()
    if pos_gradient_boost != 1.0:
        pos_t = _Boost.apply(pos_t, float(pos_gradient_boost))
    return _antialias(color, rast, pos_t, mesh)


def antialias_construct_topology_hash(tri) -> Mesh:
    """The `Mesh` of tri (mofa_tk's equivalent of nvdiffrast's topology hash: edge tables built once, cached)."""
    return tri if isinstance(tri, Mesh) else Mesh(tri, name="tri")

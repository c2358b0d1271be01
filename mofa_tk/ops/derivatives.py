"""Image-space derivatives of the rasterized barycentrics and of interpolated attributes (nvdiffrast's `rast_db`
and `diff_attrs` outputs), for mip-level selection in `texture` (uv_da) and other screen-space filters.

Written in torch over the covered pixels (gathers of the winning triangle's clip-space corners), so autograd
carries their gradients back to the positions and attributes on every device. The barycentrics are those of
`rasterize`: at a pixel centre with NDC (x, y) (column j: x = 2 (j + 0.5) / W - 1; row i: y = 2 (i + 0.5) / H -
1), the perspective-correct weights b of corners p_k = (x_k, y_k, z_k, w_k) satisfy sum b_k (x_k - x w_k) = 0,
sum b_k (y_k - y w_k) = 0 and sum b_k = 1, i.e. b = n / sum(n) with n = a x c, a_k = x_k - x w_k,
c_k = y_k - y w_k. Differentiating in x (da/dx = -w, dc/dx = 0) and y (dc/dy = -w) gives db/dx and db/dy in
closed form; times dx/dX = 2 / W and dy/dY = 2 / H they are per pixel of the image.
"""
from __future__ import annotations

import torch

from .. import checks as C
from ..mesh import as_mesh

__all__ = ["rast_derivatives", "interpolate_derivatives"]


def _float(name, x):
    """x as a float tensor, keeping float64 (for float64 gradient checks), else float32."""
    if isinstance(x, torch.Tensor) and x.dtype in (torch.float32, torch.float64):
        return x
    return C.as_tensor(name, x)


def _pixel_ndc(H, W, device, dtype):
    ys = (2.0 * (torch.arange(H, device=device, dtype=dtype) + 0.5) / H - 1.0)
    xs = (2.0 * (torch.arange(W, device=device, dtype=dtype) + 0.5) / W - 1.0)
    return ys, xs


def rast_derivatives(pos_clip, tris, rast) -> torch.Tensor:
    """(du/dX, du/dY, dv/dX, dv/dY) of `rast`'s barycentrics per pixel (nvdiffrast's rast_db).

    Args:
        pos_clip: (B, V, 4) or (V, 4) float clip-space positions given to `rasterize`.
        tris: (T, 3) integer indices or `Mesh`, as given to `rasterize`.
        rast: (B, H, W, 4) float32 output of `rasterize` (only its triangle ids are used).
    Returns:
        (B, H, W, 4) in pos_clip's dtype, per pixel of the image (X right, Y along the rows); zeros at background
        pixels. Gradients: w.r.t. pos_clip (torch autograd).
    """
    pos = C.check_device("pos_clip", _float("pos_clip", pos_clip))
    if pos.ndim == 2:
        pos = pos[None]
    C.check_shape("pos_clip", pos, "B,V,4")
    rast = C.as_tensor("rast", rast)
    C.check_shape("rast", rast, "B,H,W,4")
    B, H, W = rast.shape[:3]
    if pos.shape[0] not in (1, B):
        raise C.InputError(f"pos_clip: batch size {pos.shape[0]} must be 1 or match rast's B={B}")
    mesh = as_mesh(tris, pos.shape[1])
    tri = mesh.triangles.to(pos.device).long()
    tid = rast[..., 3].to(torch.int64)
    cov = tid > 0
    out = pos.new_zeros(B, H, W, 4)
    if not bool(cov.any()):
        return out
    b_idx, i_idx, j_idx = torch.nonzero(cov, as_tuple=True)
    corners = tri[tid[cov] - 1]                                                  # (n, 3)
    pb = pos.expand(B, -1, -1)[b_idx[:, None], corners]                          # (n, 3, 4)
    ys, xs = _pixel_ndc(H, W, pos.device, pos.dtype)
    x, y = xs[j_idx][:, None], ys[i_idx][:, None]
    w = pb[..., 3]
    a = pb[..., 0] - x * w
    c = pb[..., 1] - y * w
    n = torch.linalg.cross(a, c, dim=-1)
    dn_dx = torch.linalg.cross(-w, c, dim=-1)
    dn_dy = torch.linalg.cross(a, -w, dim=-1)
    s = n.sum(-1, keepdim=True)
    db_dx = (dn_dx * s - n * dn_dx.sum(-1, keepdim=True)) / s ** 2 * (2.0 / W)
    db_dy = (dn_dy * s - n * dn_dy.sum(-1, keepdim=True)) / s ** 2 * (2.0 / H)
    vals = torch.stack([db_dx[:, 1], db_dy[:, 1], db_dx[:, 2], db_dy[:, 2]], -1)
    return out.index_put((b_idx, i_idx, j_idx), vals)


def interpolate_derivatives(attr, rast, tris, rast_db, diff_attrs) -> torch.Tensor:
    """Image-space derivatives of interpolated attributes (nvdiffrast's interpolate `out_da`).

    Args:
        attr: (B, V, C) or (V, C) float attributes, as given to `interpolate`.
        rast: (B, H, W, 4) from `rasterize`; rast_db: (B, H, W, 4) from `rast_derivatives`.
        tris: (T, 3) integer indices or `Mesh`.
        diff_attrs: "all" or a sequence of channel indices of attr.
    Returns:
        (B, H, W, 2 len(diff_attrs)): per channel (d/dX, d/dY), zeros at background pixels. Gradients: w.r.t.
        attr and rast_db (torch autograd).
    """
    attr = _float("attr", attr)
    if attr.ndim == 2:
        attr = attr[None]
    C.check_shape("attr", attr, "B,V,C")
    B, H, W = rast.shape[:3]
    C.check_shape("rast_db", rast_db, "B,H,W,4", B=B, H=H, W=W)
    chans = list(range(attr.shape[2])) if (isinstance(diff_attrs, str) and diff_attrs == "all") else \
        [int(k) for k in diff_attrs]
    if any(k < 0 or k >= attr.shape[2] for k in chans):
        raise C.InputError(f"diff_attrs: channel indices must lie in [0, {attr.shape[2]}), got {chans}")
    mesh = as_mesh(tris, attr.shape[1])
    tri = mesh.triangles.to(attr.device).long()
    tid = rast[..., 3].to(torch.int64)
    cov = tid > 0
    out = attr.new_zeros(B, H, W, 2 * len(chans))
    if not chans or not bool(cov.any()):
        return out
    b_idx, i_idx, j_idx = torch.nonzero(cov, as_tuple=True)
    corners = tri[tid[cov] - 1]
    A = attr.expand(B, -1, -1)[b_idx[:, None], corners][..., chans]              # (n, 3, k)
    db = rast_db[b_idx, i_idx, j_idx]                                             # (n, 4)
    d1, d2 = A[:, 1] - A[:, 0], A[:, 2] - A[:, 0]
    dX = d1 * db[:, 0:1] + d2 * db[:, 2:3]
    dY = d1 * db[:, 1:2] + d2 * db[:, 3:4]
    return out.index_put((b_idx, i_idx, j_idx), torch.stack([dX, dY], -1).reshape(len(b_idx), -1))

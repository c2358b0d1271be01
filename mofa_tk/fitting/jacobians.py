"""Closed-form Jacobians for the Gauss-Newton matrices of the fitting stages: of the projected landmarks /
vertices (`geometric_jacobian`) and of the dense photometric residual (`dense_jacobian`)."""
from __future__ import annotations

import torch

from ..ops.shading import SH_CONSTANTS, sh_basis, sh_basis_jacobian
from ..rotation import skew
from .problem import Problem

__all__ = ["geometric_jacobian", "dense_jacobian", "GN_NORMALS"]

#: Include the normals' dependence on shape / expression in the Gauss-Newton matrix.
GN_NORMALS = True


def geometric_jacobian(prob: Problem, R, y, x, idx, blocks):
    """d(pixel)/d(params) (n, 2, P) of vertices `idx` for the parameter blocks `blocks` (a subset of
    rot (left increment), translation, shape, expression), plus the projection Jacobian (n, 2, 3).

    y = R (v - center) (n, 3) (rotated, before translation), x = camera-space positions (n, 3).
    """
    Jp = prob.dec.camera.project_jacobian(x)                                   # (n, 2, 3)
    cols = []
    for b in blocks:
        if b == "rotation":
            cols.append(-skew(y))                                             # (n, 3, 3)
        elif b == "translation":
            cols.append(torch.eye(3, dtype=x.dtype).expand(len(x), 3, 3))
        elif b == "shape":
            cols.append(torch.einsum("ij,njk->nik", R, prob.model.shape_basis[idx].to(x.dtype)
                                     * prob.model.shape_std.to(x.dtype)))
        elif b == "expression":
            cols.append(torch.einsum("ij,njk->nik", R, prob.model.expr_basis[idx].to(x.dtype)
                                     * prob.model.expr_std.to(x.dtype)))
    dx = torch.cat(cols, -1)                                                   # (n, 3, P)
    return Jp @ dx, Jp


def dense_jacobian(prob: Problem, g: dict, R0: torch.Tensor, use: torch.Tensor, blocks, normals: bool = None,
                    dn_model: torch.Tensor | None = None):
    """Closed-form Jacobians of the dense photometric residual at the visible sampled vertices.

    g: `Problem.geometry` output at the current code; R0 (3, 3) its rotation; use (V,) bool vertices that
    may enter (visible, not on the boundary); blocks: the parameter blocks in order (the rotation block is a
    left increment dw, R = exp([dw]x) R0).
    Returns (idx (n,), Jp (n, 2, P) d(pixel position)/d(params), Jc (n, 3, P) d(vertex colour)/d(params),
    sel) in float32, or None when no sampled vertex is usable. The residual's Jacobian is G Jp - Jc with G
    (n, 3, 2) the image gradient at the projections. With `normals` (default `GN_NORMALS`) the colour
    Jacobian includes the normals' dependence on shape and expression (exact for the area-weighted normals),
    from `dn_model` (`Problem.normal_jacobian`, possibly computed at an earlier iterate) when given.
    """
    layout, model = prob.layout, prob.model
    normals = GN_NORMALS if normals is None else normals
    gs = prob.gn_sample()
    sel = use[gs["idx"]]
    idx = gs["idx"][sel]
    n = len(idx)
    if not n:
        return None
    f32 = torch.float32
    R = R0.to(f32)
    geo = [b for b in blocks if b in ("rotation", "translation", "shape", "expression")]
    x = g["verts_cam"][0, idx].detach()
    y = (g["verts"][0, idx].detach() - prob.dec.center) @ R.T
    Jg, _ = geometric_jacobian(prob, R, y, x, idx, geo)                                # (n, 2, Pg)
    nrm = g["normals"][0, idx].detach()
    a = g["albedo"][0, idx].detach()
    Lsh = g["sh"][0].detach().reshape(3, 9)                                            # [c, k]
    band = prob.band
    Yp = sh_basis(nrm) * band                                                          # (n, 9)
    E = Yp @ Lsh.T                                                                     # (n, 3) irradiance
    consts = torch.tensor(SH_CONSTANTS, dtype=f32) * band
    dpoly = sh_basis_jacobian(nrm, consts)                                             # (n, 9, 3)
    adE = a[:, :, None] * torch.einsum("ck,nkj->ncj", Lsh, dpoly)                     # (n, 3, 3) dc/dn
    k_id = layout.sizes["shape"]
    dn = None
    if normals and ("shape" in geo or "expression" in geo):
        if dn_model is None:
            dn_model = prob.normal_jacobian(g["verts"][0].detach())
        dn = torch.einsum("ij,njk->nik", R, dn_model[sel].to(f32))                     # (n, 3, Kid + Kexp)
    zeros2 = lambda k: torch.zeros(n, 2, k, dtype=f32)                                 # noqa: E731
    zeros3 = lambda k: torch.zeros(n, 3, k, dtype=f32)                                 # noqa: E731
    Jp_parts, Jc_parts = [], []
    pg = 0
    for b in blocks:
        nb = layout.sizes[b]
        if b in geo:
            Jp_parts.append(Jg[:, :, pg:pg + nb])
            pg += nb
        else:
            Jp_parts.append(zeros2(nb))
        if b == "rotation":
            Jc_parts.append(adE @ (-skew(nrm)))
        elif b == "shape":
            Jc_parts.append(adE @ dn[:, :, :k_id] if dn is not None else zeros3(nb))
        elif b == "expression":
            Jc_parts.append(adE @ dn[:, :, k_id:] if dn is not None else zeros3(nb))
        elif b == "reflectance":
            Jc_parts.append(E[:, :, None] * (model.albedo_basis[idx] * model.albedo_std))
        elif b == "illumination":
            Jsh = zeros3(27)
            for ch in range(3):
                Jsh[:, ch, 9 * ch:9 * ch + 9] = a[:, ch:ch + 1] * Yp
            Jc_parts.append(Jsh)
        else:
            Jc_parts.append(zeros3(nb))
    return idx, torch.cat(Jp_parts, 2), torch.cat(Jc_parts, 2), sel

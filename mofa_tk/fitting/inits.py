"""Closed-form starting points of the fitting stages: the pose from the landmarks, and the appearance
(illumination and reflectance) from the colours at the visible vertices."""
from __future__ import annotations

import numpy as np
import torch

from .. import losses as L
from ..errors import InputError
from ..ops.shading import sh_basis
from ..rotation import matrix_to_axis_angle
from .problem import Problem

__all__ = ["closed_form_pose", "init_appearance", "INNER_LANDMARKS"]

#: Inner 51 iBUG landmarks (brows, nose, eyes, mouth): the jaw line is left out of the closed-form pose.
INNER_LANDMARKS = np.arange(17, 68)


def closed_form_pose(prob: Problem, code: torch.Tensor) -> torch.Tensor:
    """Weak-perspective pose from the inner landmarks (least-squares affine camera, orthonormalised).

    Returns a copy of `code` with rotation and translation set. Raises InputError with fewer than 6 usable
    landmarks.
    """
    dec = prob.dec
    _, X = prob.landmark_points(code)
    X = X.double()
    x = prob.target[0].double()
    ok = prob.lm_ok.clone()
    inner = torch.zeros_like(ok)
    inner[INNER_LANDMARKS] = True
    use = ok & inner if int((ok & inner).sum()) >= 6 else ok
    if int(use.sum()) < 6:
        raise InputError(f"landmarks: need at least 6 landmarks present both in the target and in the model "
                         f"({int(use.sum())} usable) to estimate the pose")
    Xu, xu = X[use], x[use]
    f = 0.5 * (dec.focal[0] + dec.focal[1])
    # image points in a y-up frame centred on the principal point
    xy = torch.stack([xu[:, 0] - dec.principal[0], dec.principal[1] - xu[:, 1]], -1)
    Xm, xm = Xu.mean(0), xy.mean(0)
    Xc, xc = Xu - Xm, xy - xm
    A = torch.linalg.lstsq(Xc, xc).solution.T               # (2, 3): xc ~ Xc @ A.T
    U, S, Vt = torch.linalg.svd(A, full_matrices=False)
    rows = U @ Vt                                            # orthonormal rows r1, r2
    s = S.mean()
    r3 = torch.linalg.cross(rows[0], rows[1])
    R = torch.stack([rows[0], rows[1], r3])
    D = f / s                                               # depth of the landmark centroid, mm
    c = dec.center.double()
    Rc = R @ (Xm - c)
    T = torch.stack([xm[0] / s - Rc[0], xm[1] / s - Rc[1], -D - Rc[2]])
    out = code.clone()
    bl = prob.layout.split(out)
    bl["rotation"][0] = matrix_to_axis_angle(R)
    bl["translation"][0] = (T - dec.default_translation.double()).float()
    return out


@torch.no_grad()
def init_appearance(prob: Problem, code: torch.Tensor, n_alt: int = 2) -> torch.Tensor:
    """Closed-form illumination and reflectance for the current geometry (regularised linear least squares
    on the visible vertices, squared colour error; 2 alternations)."""
    model, layout = prob.model, prob.layout
    g = prob.geometry(code)
    vis = (prob.visibility(g) & prob.not_boundary[None])[0]
    if int(vis.sum()) < 50:
        return code
    I = L.sample_image(prob.crop, g["verts_2d"][:, vis])[0].double()            # (n, 3)
    n = g["normals"][0, vis].double()
    Y = sh_basis(n).double() * prob.band.double()                                 # (n, 9)
    a_mean = model.albedo_mean[vis].double()
    amb = prob.dec.ambient_code[0].double().reshape(3, 9)
    out = code.clone()
    bl = layout.split(out)
    beta = torch.zeros(model.k_alb, dtype=torch.float64)
    if model.k_alb:
        Bk = model.albedo_basis[vis].double() * model.albedo_std.double()          # (n, 3, K)
    N = len(n)
    # regularisation of the SH offset: the loss has none, so a light ridge (relative to the data term)
    lam_sh = 1e-3 * N
    w_reg = prob.w["reg"] * prob.reg_w.get("reflectance", 0.0)
    photo_scale = prob.w["vertex_photo"] / N
    Lsh = amb.clone()
    for _ in range(n_alt):
        a = a_mean + (Bk @ beta if model.k_alb else 0.0)
        for c in range(3):
            Ac = a[:, c:c + 1] * Y                                                   # (n, 9)
            A = Ac.T @ Ac + lam_sh * torch.eye(9, dtype=torch.float64)
            rhs = Ac.T @ I[:, c] + lam_sh * amb[c]
            Lsh[c] = torch.linalg.solve(A, rhs)
        if not model.k_alb:
            break
        E = Y @ Lsh.T                                                                 # (n, 3) irradiance
        M = (E[:, :, None] * Bk).reshape(3 * N, -1)                                   # (3n, K)
        r = (I - a_mean * E).reshape(-1)
        K = M.shape[1]
        A = photo_scale * (M.T @ M) + w_reg * torch.eye(K, dtype=torch.float64)
        beta = torch.linalg.solve(A, photo_scale * (M.T @ r))
    bl["illumination"][0] = (Lsh - amb).reshape(27).float()
    if model.k_alb:
        bl["reflectance"][0] = beta.float()
    return out

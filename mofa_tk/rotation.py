"""Rotations in torch: axis-angle <-> matrix, and cross-product (skew) matrices.

Example::

    R = axis_angle_to_matrix(torch.tensor([[0.0, 0.3, 0.0]]))   # (1, 3, 3): 0.3 rad about +y (a yaw)
    r = matrix_to_axis_angle(R)                                  # (1, 3) back
"""
from __future__ import annotations

import torch
from scipy.spatial.transform import Rotation

__all__ = ["axis_angle_to_matrix", "matrix_to_axis_angle", "skew"]


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices: (..., 3) -> (..., 3, 3) with skew(v) @ w = cross(v, w)."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(rotation: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle (B, 3) radians -> rotation matrices (B, 3, 3); smooth at zero angle."""
    r = rotation
    theta2 = (r * r).sum(-1, keepdim=True)
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    # sin(t)/t and (1-cos t)/t^2 with Taylor series near zero so gradients stay finite.
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta * theta))
    K = skew(r)
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand_as(K)
    return eye + a[..., None] * K + b[..., None] * (K @ K)


def matrix_to_axis_angle(R) -> torch.Tensor:
    """Axis-angle (B, 3) float32 radians of rotation matrices R (B, 3, 3) (or (3, 3) -> (3,)).

    Inverse of `axis_angle_to_matrix` for angles in [0, pi]; computed in float64 via scipy (no gradient).
    """
    Rt = torch.as_tensor(R).detach().cpu().double()
    single = Rt.ndim == 2
    if single:
        Rt = Rt[None]
    rv = Rotation.from_matrix(Rt.numpy()).as_rotvec()
    out = torch.as_tensor(rv, dtype=torch.float32)
    return out[0] if single else out

"""`Camera`: the pinhole camera every stage projects with, and the clip-space matrix the rasterizer takes.

Conventions (DEVELOPERS.md): OpenGL camera space in mm (x right, y up, the camera looks along -z, depth = -z);
pixels u right, v down, pixel (row i, col j) centred at (j + 0.5, i + 0.5). The clip matrix maps pixel u to
x_ndc = 2 u / W - 1 and v to y_ndc = 2 v / H - 1 (rasterized row i is image row i), and depth `near` .. `far`
to z_ndc = -1 .. +1, with w = depth.

This module holds the torch side of projection once: `Camera.project` (pixels), `Camera.project_jacobian`
(their derivative, for Gauss-Newton), `clip_matrix` / `Camera.clip_matrix` and `Camera.depth_from_ndc`. The
`project` and `to_clip` ops (mofa_tk.ops) run the same mappings as Taichi kernels.

Example::

    cam = Camera.pinhole(224)                       # focal 1015 px, principal point at the centre
    uv = cam.project(torch.tensor([[[0.0, 0.0, -1000.0]]]))   # (1, 1, 2): the image centre, (112, 112)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import checks as C
from .errors import InputError

__all__ = ["Camera", "clip_matrix", "intrinsics", "FOCAL_224"]

#: Deep3DFaceRecon's focal length (pixels) for a 224 x 224 image; `Camera.pinhole` scales it with the size.
FOCAL_224 = 1015.0


def intrinsics(focal, principal, B: int, device) -> torch.Tensor:
    """Per-item pinhole intrinsics.

    Args:
        focal: focal length in pixels: scalar, (B,), (2,) = (fx, fy) or (B, 2); tensors keep their gradient.
        principal: principal point (cx, cy) in pixels: (2,) or (B, 2).
        B: batch size; device: torch device of the result.
    Returns:
        (B, 4) float32 (fx, fy, cx, cy).
    """
    if not isinstance(focal, torch.Tensor) and not isinstance(principal, torch.Tensor):
        # plain numbers (a Camera's, a FaceDecoder's): checked in Python, no read of a device tensor
        fv, pv = _plain("focal", focal), _plain("principal", principal)
        if fv is not None and pv is not None and len(pv) == 2 and len(fv) in (1, 2):
            if not all(math.isfinite(v) and v > 0 for v in fv):
                raise InputError("focal: focal lengths must be finite and > 0 pixels")
            if not all(math.isfinite(v) for v in pv):
                raise InputError(f"principal: expected finite (cx, cy) in pixels, got {principal!r}")
            fx, fy = (fv[0], fv[0]) if len(fv) == 1 else fv
            return C.constant(((fx, fy, pv[0], pv[1]),), device=device).expand(B, 4)
    f = C.as_tensor("focal", focal).to(device)
    if f.ndim == 0:
        f = f.reshape(1, 1).expand(B, 2)
    elif f.ndim == 1:
        f = f[:, None].expand(-1, 2) if f.shape[0] == B and B != 2 else f.reshape(1, -1)
        if f.shape[-1] == 1:
            f = f.expand(-1, 2)
    if f.ndim != 2 or f.shape[-1] != 2:
        raise InputError(f"focal: expected a scalar, (B,), (2,) or (B, 2), got shape "
                         f"{tuple(C.as_tensor('focal', focal).shape)}")
    f = C.batch_of("focal", f, B)
    if not bool((f > 0).all()):
        raise InputError("focal: focal lengths must be > 0 pixels")
    p = C.as_tensor("principal", principal).to(device)
    if p.ndim == 1:
        p = p[None]
    C.check_shape("principal", p, "B,2")
    p = C.batch_of("principal", p, B)
    C.check_finite("focal", f)
    C.check_finite("principal", p)
    return torch.cat([f, p], dim=1)


def _plain(name, value):
    """A number or a flat sequence of numbers as a list of floats, or None for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return [float(v) for v in value]
    return None


def depth_coefficients(near: float, far: float) -> tuple[float, float]:
    """(a, b) of the clip-space depth: z_clip = a z + b with w = -z, so z_ndc = -a + b / depth."""
    return -(far + near) / (far - near), -2 * far * near / (far - near)


def clip_matrix(focal, principal, image_size, near: float = 10.0, far: float = 10000.0, *, batch: int = 1,
                device=None) -> torch.Tensor:
    """Projection matrix from OpenGL camera space to clip space (what `to_clip` applies).

    Args:
        focal, principal: pixels, as in `intrinsics`.
        image_size: (H, W) pixels.
        near, far: clipping depths, mm.
        batch: B; device: torch device.
    Returns:
        (B, 4, 4) float32: x_ndc = 2u/W - 1 and y_ndc = 2v/H - 1 for the pixel (u, v) of `project`; z_ndc runs
        from -1 at depth `near` to +1 at depth `far`; w = depth.
    Gradients: w.r.t. focal and principal when they are tensors.
    """
    H, W = C.image_size("image_size", image_size, square=False)
    intr = intrinsics(focal, principal, batch, device or torch.device("cpu"))
    fx, fy, cx, cy = intr.unbind(1)
    zero = torch.zeros_like(fx)
    one = torch.ones_like(fx)
    a, b = depth_coefficients(near, far)
    rows = [
        torch.stack([2 * fx / W, zero, 1 - 2 * cx / W, zero], -1),
        torch.stack([zero, -2 * fy / H, 1 - 2 * cy / H, zero], -1),
        torch.stack([zero, zero, a * one, b * one], -1),
        torch.stack([zero, zero, -one, zero], -1),
    ]
    return torch.stack(rows, 1)


def _pair(name: str, value, what: str) -> tuple[float, float]:
    v = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if v.numel() == 1:
        v = v.expand(2)
    if v.numel() != 2 or not bool(torch.isfinite(v).all()):
        raise InputError(f"{name}: expected {what}, got {value!r}")
    return float(v[0]), float(v[1])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera with clipping depths.

    Attributes:
        image_size: (H, W) pixels.
        focal: (fx, fy) pixels.
        principal: (cx, cy) pixels.
        near, far: clipping depths, mm (0 < near < far).
    """

    image_size: tuple
    focal: tuple
    principal: tuple
    near: float = 10.0
    far: float = 10000.0

    @classmethod
    def pinhole(cls, image_size=224, focal=None, principal=None, near: float = 10.0,
                far: float = 10000.0) -> "Camera":
        """A validated camera.

        Args:
            image_size: int or (H, W) pixels.
            focal: scalar or (fx, fy) pixels; default FOCAL_224 * min(H, W) / 224.
            principal: (cx, cy) pixels; default the image centre (W / 2, H / 2).
            near, far: clipping depths in mm, 0 < near < far.
        Returns:
            Camera. Raises InputError naming the argument that is wrong.
        """
        H, W = C.image_size("image_size", image_size)
        if focal is None:
            focal = FOCAL_224 * min(H, W) / 224.0
        f = _pair("focal", focal, "a positive scalar or (fx, fy) in pixels")
        if not (f[0] > 0 and f[1] > 0):
            raise InputError(f"focal: expected a positive scalar or (fx, fy) in pixels, got {focal!r}")
        if principal is None:
            principal = (W / 2.0, H / 2.0)
        p = torch.as_tensor(principal, dtype=torch.float32).reshape(-1)
        if p.numel() != 2 or not bool(torch.isfinite(p).all()):
            raise InputError(f"principal: expected (cx, cy) in pixels, got {principal!r}")
        near, far = float(near), float(far)
        if not (0 < near < far and math.isfinite(far)):
            raise InputError(f"near/far: need 0 < near < far, got near={near}, far={far}")
        return cls((H, W), f, (float(p[0]), float(p[1])), near, far)

    # ------------------------------------------------------------------ projection
    def project(self, points_cam: torch.Tensor) -> torch.Tensor:
        """Pinhole projection with the depth clamped at `near`.

        Args:
            points_cam: (..., 3) float, mm, camera space.
        Returns:
            (..., 2) pixels (u right, v down). Points nearer than `near` (or behind the camera) get finite but
            meaningless pixels, so an optimiser moving the head never meets a division by zero.
        Gradients: w.r.t. points_cam (torch autograd).
        """
        depth = (-points_cam[..., 2]).clamp(min=self.near)
        u = self.principal[0] + self.focal[0] * points_cam[..., 0] / depth
        v = self.principal[1] - self.focal[1] * points_cam[..., 1] / depth
        return torch.stack([u, v], -1)

    def project_jacobian(self, points_cam: torch.Tensor) -> torch.Tensor:
        """d(pixel)/d(camera-space point) of `project`.

        Args:
            points_cam: (n, 3) float, mm.
        Returns:
            (n, 2, 3), same dtype, pixels per mm.
        """
        x = points_cam
        fx, fy = self.focal
        D = (-x[:, 2]).clamp(min=self.near)
        zero = torch.zeros_like(D)
        return torch.stack([torch.stack([fx / D, zero, fx * x[:, 0] / D ** 2], -1),
                            torch.stack([zero, -fy / D, -fy * x[:, 1] / D ** 2], -1)], 1)

    def clip_matrix(self, batch: int = 1, device=None) -> torch.Tensor:
        """(B, 4, 4) float32 camera -> clip space matrix of this camera (`clip_matrix`)."""
        return clip_matrix(self.focal, self.principal, self.image_size, self.near, self.far, batch=batch,
                           device=device)

    def depth_from_ndc(self, z_ndc: torch.Tensor) -> torch.Tensor:
        """Depth in mm of NDC depth values (z/w of `rast[..., 2]`): the inverse of the clip matrix's mapping."""
        a, b = depth_coefficients(self.near, self.far)
        return b / (z_ndc + a)

    # ------------------------------------------------------------------ derived cameras
    def scaled(self, k: float) -> "Camera":
        """The same view at k times the resolution: image size round(k (H, W)) (at least 1), focal and principal
        point times k."""
        H, W = self.image_size
        return Camera((max(1, round(H * k)), max(1, round(W * k))), (self.focal[0] * k, self.focal[1] * k),
                      (self.principal[0] * k, self.principal[1] * k), self.near, self.far)

    def uncropped(self, scale: float, offset, image_size) -> "Camera":
        """The camera of the original image, for a crop made as crop = scale * original + offset (no rotation).

        Args:
            scale: crop pixels per original pixel; offset: (ox, oy) crop pixels; image_size: original (H, W).
        Returns:
            Camera with focal f / scale and principal point (c - offset) / scale.
        """
        ox, oy = offset
        return Camera(tuple(int(s) for s in image_size), (self.focal[0] / scale, self.focal[1] / scale),
                      ((self.principal[0] - ox) / scale, (self.principal[1] - oy) / scale), self.near, self.far)

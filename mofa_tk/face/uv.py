"""UV layouts of face models and the photo's colours unwrapped into them (for UV-textured mesh export).

`model_uvs(model)`: the model's own texture coordinates when it has them (the Surrey model's), else a generated
layout: a cylindrical projection of the mean face around the vertical axis through its bounding-box centre
(u = the angle, scaled to the mesh's range; v = the height, top row first). Coordinates follow `texture`: u along
the texture's width, v along its rows from the top.

`unwrap_photo(...)`: each texel of the layout is traced to its surface point (the mesh rasterized in uv space,
`rasterize` + `interpolate` of the camera-space vertices), projected into the photo with the fit's camera, and
takes the photo's colour there (`texture`, bilinear) when that point is visible: facing the camera and not
behind another part of the face (a depth buffer of the mesh in the photo's camera). Texels whose point is hidden
take `fill` colours (e.g. the fit's shaded vertex colours), texels no triangle covers stay 0.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..camera import Camera
from ..errors import InputError
from ..ops.raster import interpolate, rasterize
from ..ops.shading import vertex_normals
from ..ops.texture import texture

__all__ = ["model_uvs", "generated_uvs", "unwrap_photo"]

#: Largest image side of the depth buffer used for the visibility test (pixels).
DEPTH_SIDE = 512
#: A texel is visible when its depth is within this fraction of the depth buffer's value.
DEPTH_TOL = 0.01


def generated_uvs(verts: torch.Tensor) -> torch.Tensor:
    """(V, 2) float32 cylindrical layout of a face mesh (V, 3) (x right, y up, z out of the face)."""
    v = verts.detach().double().cpu()
    lo, hi = v.min(0).values, v.max(0).values
    c = (lo + hi) / 2
    # axis behind the face: the centre moved back by half the depth, so the front spans a moderate angle
    back = c[2] - 0.5 * (hi[2] - lo[2])
    ang = torch.atan2(v[:, 0] - c[0], v[:, 2] - back)
    a_lo, a_hi = float(ang.min()), float(ang.max())
    u = (ang - a_lo) / max(a_hi - a_lo, 1e-9)
    t = 1.0 - (v[:, 1] - lo[1]) / max(float(hi[1] - lo[1]), 1e-9)
    margin = 0.01
    return (torch.stack([u, t], -1) * (1 - 2 * margin) + margin).float()


def model_uvs(model) -> tuple[torch.Tensor, str]:
    """((V, 2) float32 texture coordinates, where they come from: "model" or "generated")."""
    uv = (getattr(model, "meta", None) or {}).get("texture_coordinates")
    if uv is not None:
        uv = torch.as_tensor(np.asarray(uv), dtype=torch.float32)
        if uv.shape == (model.n_vertices, 2) and bool(torch.isfinite(uv).all()):
            return uv, "model"
    return generated_uvs(model.mean_shape), "generated"


@torch.no_grad()
def unwrap_photo(verts_cam, triangles, uvs, photo, camera: Camera, fill=None, size: int = 1024):
    """The photo's colours in a UV layout.

    Args:
        verts_cam: (V, 3) float mm, the fitted mesh in the photo's camera space (OpenGL: looking along -z).
        triangles: (T, 3) integer vertex indices; uvs: (V, 2) in [0, 1] (`model_uvs`).
        photo: (H, W, 3) float in [0, 1]; camera: `Camera` of the photo (pixels of `photo`).
        fill: optional (V, 3) colours for texels whose surface point the photo does not show.
        size: texture side in texels.
    Returns:
        (texture (size, size, 3) float32, visible (size, size) bool: the texels taken from the photo).
    """
    verts_cam = torch.as_tensor(verts_cam, dtype=torch.float32)
    tris = torch.as_tensor(triangles).to(torch.int32)
    uvs = torch.as_tensor(uvs, dtype=torch.float32)
    photo = torch.as_tensor(np.asarray(photo), dtype=torch.float32)
    if photo.ndim != 3 or photo.shape[2] != 3:
        raise InputError(f"photo: expected (H, W, 3), got {tuple(photo.shape)}")
    if uvs.shape != (verts_cam.shape[0], 2):
        raise InputError(f"uvs: expected ({verts_cam.shape[0]}, 2), got {tuple(uvs.shape)}")
    size = int(size)
    # the mesh in uv space: row i of the texture is v = (i + 0.5) / size, as `texture` samples it
    pos_uv = torch.cat([uvs * 2 - 1, torch.zeros_like(uvs[:, :1]), torch.ones_like(uvs[:, :1])], -1)[None]
    rast = rasterize(pos_uv, tris, (size, size))
    covered = rast[0, ..., 3] > 0
    p = interpolate(verts_cam, rast, tris)[0]                                     # (S, S, 3) mm
    n = interpolate(vertex_normals(verts_cam[None], tris), rast, tris)[0]
    pix = camera.project(p)                                                        # photo pixels
    H, W = photo.shape[:2]
    facing = (n * -p).sum(-1) > 0
    # depth buffer of the mesh in the photo's camera, at most DEPTH_SIDE pixels on a side
    k = min(1.0, DEPTH_SIDE / max(H, W))
    cam_s = camera.scaled(k)
    clip = torch.cat([verts_cam, torch.ones_like(verts_cam[:, :1])], -1) @ cam_s.clip_matrix()[0].T
    rimg = rasterize(clip[None].contiguous(), tris, cam_s.image_size)[0]
    hs, ws = cam_s.image_size
    depth_img = torch.where(rimg[..., 3] > 0, cam_s.depth_from_ndc(rimg[..., 2]), torch.full_like(rimg[..., 2], math.inf))
    q = (pix * k).floor().long()
    inside = (q[..., 0] >= 0) & (q[..., 0] < ws) & (q[..., 1] >= 0) & (q[..., 1] < hs)
    qd = depth_img[q[..., 1].clamp(0, hs - 1), q[..., 0].clamp(0, ws - 1)]
    depth = -p[..., 2]
    visible = covered & facing & inside & (depth <= qd * (1 + DEPTH_TOL))
    uv_photo = (pix / torch.tensor([W, H], dtype=torch.float32))[None]
    colours = texture(photo[None], uv_photo.contiguous(), filter_mode="linear", boundary_mode="clamp")[0]
    out = torch.zeros(size, size, 3)
    if fill is not None:
        out = interpolate(torch.as_tensor(fill, dtype=torch.float32), rast, tris)[0]
    out = torch.where(visible[..., None], colours, out)
    out = torch.where(covered[..., None], out, torch.zeros_like(out))
    return out.clamp(0, 1), visible

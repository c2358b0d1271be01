"""`FaceDecoder`: MoFA's model-based decoder, semantic code -> rendered image, landmarks and visibility.

Image formation (docs/decoder.md has the full write-up with pictures):

    blocks   = Code.split(code)                                        (rotation, translation, shape, ...)
    verts    = morph(model, shape, expression)                         (B, V, 3) mm, model space
    R        = axis_angle_to_matrix(rotation)
    verts_cam= R (verts - center) + (0, 0, -distance) + translation     (B, V, 3) mm, OpenGL camera space
    normals  = vertex_normals(verts_cam, tris)                         camera space
    albedo   = model albedo(reflectance)                               (B, V, 3)
    sh       = ambient_sh + illumination                               (B, 27) channel-major
    colours  = sh_shade(normals, albedo, sh)                           per vertex (as MoFA)
    pos_clip = to_clip(verts_cam, focal, principal, (H, W), near, far)
    rast     = rasterize(pos_clip, tris, (H, W))
    image    = antialias(interpolate(colours) over background, rast, pos_clip, tris)

A zero code is thus the model's mean face, frontal, with its bounding-box centre on the optical axis at
`distance` mm from the camera, under white ambient light of irradiance 1 (colour = mean albedo).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

from . import _checks as C
from .code import Code
from .errors import InputError
from .geometry import axis_angle_to_matrix, morph, rigid, to_clip
from .geometry import albedo as albedo_op
from .raster import antialias, interpolate, rasterize
from .shading import ambient_sh, sh_shade, vertex_normals

#: Deep3DFaceRecon's focal length (pixels) for a 224 x 224 image; the default focal scales it with the size.
FOCAL_224 = 1015.0
#: Default distance (mm) from the camera to the face centre: with FOCAL_224 a 150 mm wide face spans
#: about 150 px of a 224 px image (2/3), the framing of Deep3DFaceRecon (focal 1015, camera_d 10 in its
#: decimetre units).
DEFAULT_DISTANCE = 1000.0


def _image_size(image_size):
    if isinstance(image_size, (int,)) and not isinstance(image_size, bool):
        H = W = int(image_size)
    else:
        try:
            H, W = (int(s) for s in image_size)
        except Exception:
            raise InputError(f"image_size: expected an int or (H, W), got {image_size!r}") from None
    if H <= 0 or W <= 0:
        raise InputError(f"image_size: must be positive, got {(H, W)}")
    return H, W


def boundary_vertices(tris, n_vertices: int) -> torch.Tensor:
    """(V,) bool: vertices on an open edge of the mesh (an edge used by exactly one triangle).

    On an open face mesh (BFM's front face, the built-in model) these outline the face; their projected
    colour sample mixes the face with whatever lies beyond it, so `mofa_loss` leaves them out of the dense
    photometric term by default.
    """
    t = torch.as_tensor(tris).long().cpu()
    e = torch.cat([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]).sort(1).values
    edges, counts = torch.unique(e, dim=0, return_counts=True)
    out = torch.zeros(int(n_vertices), dtype=torch.bool)
    out[edges[counts == 1].reshape(-1)] = True
    return out


class FaceDecoder(torch.nn.Module):
    """Differentiable model-based decoder (MoFA): semantic code -> image, mask, landmarks, visibility.

    model:      FaceModel (any sizes; the code layout is `Code.for_model(model)`, see `self.code`)
    image_size: int or (H, W) pixels (default 224)
    focal:      focal length in pixels, scalar or (fx, fy); default 1015 * min(H, W) / 224 (Deep3DFaceRecon)
    distance:   mm from the camera to the face centre for a zero translation (default 1000)
    principal:  principal point (cx, cy) in pixels; default the image centre (W / 2, H / 2)
    center:     (3,) mm, the model-space point put on the optical axis and used as the rotation pivot;
                default the centre of the mean shape's bounding box. Pass (0, 0, 0) to pivot about the
                model's origin.
    near, far:  clipping depths in mm (default distance / 10 and distance * 10)
    visibility_tol: depth tolerance of the visibility test, in pixel footprints (mm covered by one pixel at
                the vertex's depth, depth / focal); default 3 (see `forward`)
    ambient:    irradiance of the built-in ambient light added to the illumination block (default 1)

    `decoder(code, background=None)` returns a dict (see `forward`). All outputs are float32 and
    differentiable w.r.t. the code except `visibility`, `rast` (non-differentiable parts) and `mask`'s
    interior. The same code gives bit-identical outputs run to run (no op sums with float atomics).
    """

    def __init__(self, model, image_size=224, focal=None, distance: float = DEFAULT_DISTANCE, principal=None,
                 center=None, near: float | None = None, far: float | None = None, visibility_tol: float = 3.0,
                 ambient: float = 1.0):
        super().__init__()
        self.model = model
        self.code = Code.for_model(model)
        H, W = _image_size(image_size)
        self.image_size = (H, W)
        if focal is None:
            focal = FOCAL_224 * min(H, W) / 224.0
        f = torch.as_tensor(focal, dtype=torch.float32).reshape(-1)
        if f.numel() == 1:
            f = f.expand(2)
        if f.numel() != 2 or not bool(torch.isfinite(f).all()) or not bool((f > 0).all()):
            raise InputError(f"focal: expected a positive scalar or (fx, fy) in pixels, got {focal!r}")
        self.focal = (float(f[0]), float(f[1]))
        if principal is None:
            principal = (W / 2.0, H / 2.0)
        p = torch.as_tensor(principal, dtype=torch.float32).reshape(-1)
        if p.numel() != 2 or not bool(torch.isfinite(p).all()):
            raise InputError(f"principal: expected (cx, cy) in pixels, got {principal!r}")
        self.principal = (float(p[0]), float(p[1]))
        distance = float(distance)
        if not (distance > 0 and math.isfinite(distance)):
            raise InputError(f"distance: expected a positive number of mm, got {distance!r}")
        self.distance = distance
        self.near = float(near) if near is not None else distance / 10.0
        self.far = float(far) if far is not None else distance * 10.0
        if not (0 < self.near < self.far):
            raise InputError(f"near/far: need 0 < near < far, got near={self.near}, far={self.far}")
        if not (visibility_tol >= 0):
            raise InputError(f"visibility_tol: expected >= 0 (pixel footprints), got {visibility_tol!r}")
        self.visibility_tol = float(visibility_tol)
        if center is None:
            ms = model.mean_shape.detach().float().cpu()
            center = (ms.min(0).values + ms.max(0).values) / 2
        c = torch.as_tensor(center, dtype=torch.float32).reshape(-1)
        if c.numel() != 3 or not bool(torch.isfinite(c).all()):
            raise InputError(f"center: expected (3,) mm, got {center!r}")
        self.register_buffer("center", c.clone())
        amb = ambient_sh(1, ambient).transpose(1, 2).reshape(1, 27)
        self.register_buffer("ambient_code", amb)
        self.register_buffer("default_translation", torch.tensor([0.0, 0.0, -distance]))
        self.register_buffer("triangles", model.triangles.to(torch.int32).cpu().clone())
        lm = model.landmarks.to(torch.int64).cpu()
        self.register_buffer("landmark_index", lm.clone())
        self.register_buffer("landmark_valid", lm >= 0)
        self.register_buffer("boundary", boundary_vertices(self.triangles, model.n_vertices))

    # ------------------------------------------------------------------ helpers
    def extra_repr(self) -> str:
        return (f"model={getattr(self.model, 'name', '?')!r}, image_size={self.image_size}, focal={self.focal}, "
                f"distance={self.distance}, code={self.code}")

    def _blocks(self, code) -> "OrderedDict[str, torch.Tensor]":
        if isinstance(code, dict):
            flat = self.code.join(code)
        else:
            flat = code
        if not isinstance(flat, torch.Tensor):
            flat = C.as_tensor("code", flat)
        blocks = self.code.split(flat)
        if not flat.is_floating_point():
            raise InputError(f"code: expected a float tensor, got dtype {flat.dtype}")
        C.check_finite("code", flat)
        return OrderedDict((k, v.float()) for k, v in blocks.items())

    def camera_transform(self, rotation: torch.Tensor, translation: torch.Tensor):
        """(R (B, 3, 3), t (B, 3)) with verts_cam = R @ v + t for model-space v, i.e.
        R = axis_angle_to_matrix(rotation), t = (0, 0, -distance) + translation - R @ center."""
        R = axis_angle_to_matrix(rotation)
        c = self.center.to(rotation.device)
        t = self.default_translation.to(rotation.device) + translation - R @ c
        return R, t

    def project_points(self, points_cam: torch.Tensor) -> torch.Tensor:
        """Pinhole projection (B, P, 3) mm camera space -> (B, P, 2) pixels (u right, v down, centres at +0.5).

        Same mapping as `mofa_tk.project`, in plain torch and with the depth clamped at `near` so that it
        never raises or divides by zero while an optimiser moves the head (points behind the camera get
        meaningless but finite pixels; they are never visible).
        """
        depth = (-points_cam[..., 2]).clamp(min=self.near)
        u = self.principal[0] + self.focal[0] * points_cam[..., 0] / depth
        v = self.principal[1] - self.focal[1] * points_cam[..., 1] / depth
        return torch.stack([u, v], -1)

    def _depth_from_ndc(self, z_ndc: torch.Tensor) -> torch.Tensor:
        """Invert to_clip's depth mapping: z_ndc = -a + b / depth  ->  depth (mm)."""
        n, f = self.near, self.far
        a = -(f + n) / (f - n)
        b = -2 * f * n / (f - n)
        return b / (z_ndc + a)

    @torch.no_grad()
    def visibility(self, verts_cam: torch.Tensor, normals: torch.Tensor, verts_2d: torch.Tensor,
                   rast: torch.Tensor) -> torch.Tensor:
        """Per-vertex visibility (B, V) bool from the z-buffer.

        A vertex is visible when (1) its projection lies inside the image and its depth exceeds `near`,
        (2) it faces the camera: n . x < 0 for its camera-space normal n and position x (the camera is at
        the origin), and (3) it is not occluded: the farthest rasterized depth among the 4 pixel centres
        around its projection (clamped to the image; a centre no triangle covers counts as infinitely far)
        is at least the vertex depth minus `visibility_tol * depth / fx` mm. Taking the farthest of the 4
        makes an unoccluded vertex pass even where the surface is steep (on a plane the depth at the vertex
        is a convex combination of the 4); the tolerance covers curvature and a concave neighbourhood
        (depth slope x half a pixel). Occluders closer than the tolerance (3 px footprints = 3 mm at
        1000 mm and f = 1015 px) are not detected; near an occluding contour the answer is decided at
        pixel resolution.
        """
        B, V = verts_cam.shape[:2]
        H, W = self.image_size
        depth = -verts_cam[..., 2]
        u, v = verts_2d[..., 0], verts_2d[..., 1]
        inside = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (depth > self.near) & (depth < self.far)
        facing = (normals * verts_cam).sum(-1) < 0
        # 2 x 2 neighbourhood of pixel centres around (u, v)
        j0 = torch.floor(u - 0.5).long()
        i0 = torch.floor(v - 0.5).long()
        rast = rast.detach()
        zbuf = rast[..., 2].reshape(B, H * W)
        covered_map = rast[..., 3].reshape(B, H * W) > 0
        best = torch.full((B, V), -float("inf"), device=verts_cam.device)
        for di in (0, 1):
            for dj in (0, 1):
                ii = (i0 + di).clamp(0, H - 1)
                jj = (j0 + dj).clamp(0, W - 1)
                flat = (ii * W + jj).to(zbuf.device)
                z = torch.gather(zbuf, 1, flat).to(verts_cam.device)
                cov = torch.gather(covered_map, 1, flat).to(verts_cam.device)
                d = self._depth_from_ndc(z)
                # an uncovered pixel centre has nothing in front of it: depth +inf (the vertex lies on
                # a silhouette, e.g. the open boundary of the mesh, and nothing there occludes it)
                best = torch.maximum(best, torch.where(cov, d, torch.full_like(d, float("inf"))))
        tol = self.visibility_tol * depth / self.focal[0]
        unoccluded = depth <= best + tol
        return inside & facing & unoccluded

    # ------------------------------------------------------------------ forward
    def forward(self, code, background=None) -> dict:
        """Render a batch of codes.

        code:       (B, N) float32 flat code (layout `self.code`) or a dict of named blocks (`Code.join`)
        background: optional (B, H, W, 3) or (H, W, 3) float32 image behind the face (default black)
        returns a dict of tensors:
            image         (B, H, W, 3) float32, antialiased render composited over the background, linear RGB
            mask          (B, H, W, 1) float32 coverage in [0, 1] (antialiased at the silhouette)
            verts_cam     (B, V, 3) mm, OpenGL camera space (camera looks along -z)
            verts_2d      (B, V, 2) pixels, projection of every vertex (u right, v down, centres at +0.5)
            landmarks2d   (B, 68, 2) pixels; NaN for the landmarks the model lacks (index -1)
            vertex_colors (B, V, 3) shaded vertex colours (linear, unclamped) = albedo * SH irradiance
            albedo        (B, V, 3) per-vertex reflectance
            normals       (B, V, 3) unit vertex normals, camera space
            sh            (B, 27) the SH code used (ambient + illumination block), channel-major
            visibility    (B, V) bool: in the image, facing the camera and not occluded (see `visibility`)
            boundary      (V,) bool: vertices on the open boundary of the mesh (`boundary_vertices`)
            rast          (B, H, W, 4) from `rasterize`; pos_clip (B, V, 4) from `to_clip` (for reuse)
            blocks        the dict of code blocks (views of the input)
        """
        blocks = self._blocks(code)
        B = blocks["rotation"].shape[0]
        model = self.model
        H, W = self.image_size
        tris = self.triangles

        verts = morph(model, blocks["shape"], blocks["expression"])
        R, t = self.camera_transform(blocks["rotation"], blocks["translation"])
        verts_cam = rigid(verts, R, t)
        normals = vertex_normals(verts_cam, tris)
        if model.k_alb > 0:
            alb = albedo_op(model, blocks["reflectance"])
        else:
            alb = model.albedo_mean[None].to(verts_cam.device).expand(B, -1, -1)
        sh = self.ambient_code.to(verts_cam.device) + blocks["illumination"]
        colors = sh_shade(normals, alb, sh)

        pos_clip = to_clip(verts_cam, self.focal, self.principal, (H, W), self.near, self.far)
        rast = rasterize(pos_clip, tris, (H, W))
        attr = torch.cat([colors, torch.ones_like(colors[..., :1])], dim=-1)
        px = interpolate(attr, rast, tris)
        covered = (rast[..., 3:4] > 0).to(px.dtype)
        color_px = px[..., :3]
        if background is not None:
            bg = C.as_tensor("background", background).to(px.device)
            if bg.ndim == 3:
                bg = bg[None]
            C.check_shape("background", bg, "B,H,W,3", H=H, W=W)
            if bg.shape[0] not in (1, B):
                raise InputError(f"background: batch size {bg.shape[0]} must be 1 or B={B}")
            C.check_finite("background", bg)
            color_px = color_px * covered + bg * (1 - covered)
        out = antialias(torch.cat([color_px, px[..., 3:4]], dim=-1), rast, pos_clip, tris)
        image, mask = out[..., :3], out[..., 3:4]

        verts_2d = self.project_points(verts_cam)
        lm_idx = self.landmark_index.to(verts_cam.device)
        valid = self.landmark_valid.to(verts_cam.device)
        lm3 = verts_cam[:, lm_idx.clamp(min=0)]
        landmarks2d = self.project_points(lm3)
        landmarks2d = torch.where(valid[None, :, None], landmarks2d, torch.full_like(landmarks2d, float("nan")))
        vis = self.visibility(verts_cam.detach(), normals.detach(), verts_2d.detach(), rast)

        return {
            "image": image, "mask": mask, "verts_cam": verts_cam, "verts_2d": verts_2d,
            "landmarks2d": landmarks2d, "vertex_colors": colors, "albedo": alb, "normals": normals,
            "sh": sh, "visibility": vis, "boundary": self.boundary.to(vis.device), "rast": rast,
            "pos_clip": pos_clip, "blocks": blocks,
        }

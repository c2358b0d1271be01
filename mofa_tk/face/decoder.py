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
from dataclasses import dataclass, fields

import torch

from .. import checks as C
from ..camera import FOCAL_224, Camera
from .code import Code
from ..errors import InputError
from ..ops.geometry import morph, rigid, to_clip
from ..rotation import axis_angle_to_matrix
from ..ops.geometry import albedo as albedo_op
from ..mesh import Mesh
from ..ops.raster import antialias, interpolate, rasterize
from ..ops.shading import ambient_sh, sh_shade, vertex_normals

__all__ = ["FaceDecoder", "Geometry", "Shading", "Render", "DEFAULT_DISTANCE", "FOCAL_224"]

#: Default distance (mm) from the camera to the face centre: with FOCAL_224 a 150 mm wide face spans
#: about 150 px of a 224 px image (2/3), the framing of Deep3DFaceRecon (focal 1015, camera_d 10 in its
#: decimetre units).
DEFAULT_DISTANCE = 1000.0


@dataclass(frozen=True)
class Geometry:
    """Output of `FaceDecoder.geometry`: the posed mesh and its projection. Tensors float32, batch B.

    Attributes:
        blocks: OrderedDict of the code blocks (`Code.split`), float32.
        verts: (B, V, 3) mm, model space (shape + expression, no pose).
        rotation: (B, 3, 3) R and translation (B, 3) t, mm: verts_cam = R verts + t.
        verts_cam: (B, V, 3) mm, OpenGL camera space (the camera looks along -z).
        normals: (B, V, 3) unit vertex normals, camera space.
        verts_2d: (B, V, 2) pixels, projection of every vertex (`Camera.project`).
        landmarks2d: (B, 68, 2) pixels; NaN for the landmarks the model lacks (index -1).
    """

    blocks: "OrderedDict[str, torch.Tensor]"
    verts: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    verts_cam: torch.Tensor
    normals: torch.Tensor
    verts_2d: torch.Tensor
    landmarks2d: torch.Tensor


@dataclass(frozen=True)
class Shading:
    """Output of `FaceDecoder.shading`: per-vertex reflectance and light.

    Attributes:
        albedo: (B, V, 3) reflectance (linear, unclamped).
        sh: (B, 27) the SH code used (ambient + illumination block), channel-major.
        vertex_colors: (B, V, 3) shaded colours albedo * SH irradiance (linear, unclamped).
    """

    albedo: torch.Tensor
    sh: torch.Tensor
    vertex_colors: torch.Tensor


@dataclass(frozen=True)
class Render:
    """What `FaceDecoder` returns: the stages' outputs and the image.

    Attributes:
        geometry: `Geometry`; shading: `Shading`.
        visibility: (B, V) bool, in the image, facing the camera and not occluded (`FaceDecoder.visibility`).
        boundary: (V,) bool, vertices on the open boundary of the mesh (`Mesh.boundary`).
        image: (B, H, W, 3) antialiased render over the background, linear RGB; None when only the vertex
            stages ran (`FaceDecoder.vertex_render`).
        mask: (B, H, W, 1) coverage in [0, 1] (antialiased at the silhouette), or None.
        rast: (B, H, W, 4) from `rasterize`; pos_clip: (B, V, 4) from `to_clip` (None when not rendered).

    Reading a field of the stages works on the render too, by attribute or by name: `out.verts_2d`,
    `out["verts_2d"]`, `out["image"]` (`keys()` lists the names).
    """

    geometry: Geometry
    shading: Shading
    visibility: torch.Tensor
    boundary: torch.Tensor
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    rast: torch.Tensor | None = None
    pos_clip: torch.Tensor | None = None

    def __getattr__(self, name):
        # only called for names that are not fields of the Render itself: look in the stages
        if name.startswith("__"):
            raise AttributeError(name)
        for part in ("geometry", "shading"):
            obj = object.__getattribute__(self, part)
            if name in _FIELDS[part]:
                return getattr(obj, name)
        raise AttributeError(f"Render has no field {name!r}")

    def __getitem__(self, name: str):
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def __contains__(self, name) -> bool:
        return name in self.keys()

    def keys(self):
        return tuple(f for f in _FIELDS["render"] if f not in ("geometry", "shading")) + _FIELDS["geometry"] \
            + _FIELDS["shading"]


_FIELDS = {"render": tuple(f.name for f in fields(Render)), "geometry": tuple(f.name for f in fields(Geometry)),
           "shading": tuple(f.name for f in fields(Shading))}


class FaceDecoder(torch.nn.Module):
    """Differentiable model-based decoder (MoFA): semantic code -> image, mask, landmarks, visibility.

    Args:
        model: FaceModel (any sizes; the code layout is `Code.for_model(model)`, see `self.code`).
        image_size: int or (H, W) pixels (default 224).
        focal: focal length in pixels, scalar or (fx, fy); default 1015 * min(H, W) / 224 (Deep3DFaceRecon).
        distance: mm from the camera to the face centre for a zero translation (default 1000).
        principal: principal point (cx, cy) in pixels; default the image centre (W / 2, H / 2).
        center: (3,) mm, the model-space point put on the optical axis and used as the rotation pivot;
            default the centre of the mean shape's bounding box. Pass (0, 0, 0) to pivot about the origin.
        near, far: clipping depths in mm (default distance / 10 and distance * 10).
        visibility_tol: depth tolerance of the visibility test, in pixel footprints (mm covered by one pixel at
            the vertex's depth, depth / focal); default 3 (see `visibility`).
        ambient: irradiance of the built-in ambient light added to the illumination block (default 1).

    The stages, each a method returning a frozen dataclass, chained by `forward`:

        geometry(code)               -> Geometry   morph, pose, normals, projection, landmarks
        shading(geometry)            -> Shading    albedo, SH light, vertex colours
        visibility(geometry)         -> (B, V) bool from the z-buffer
        render(geometry, shading)    -> Render     rasterize, interpolate, composite, antialias

    `decoder(code, background=None)` returns a `Render`. All outputs are float32 and differentiable w.r.t. the
    code except `visibility`, `rast` and `mask`'s interior. The same code gives bit-identical outputs run to
    run (no op on this path sums with float atomics).

    Example::

        dec = FaceDecoder(mofa_tk.builtin_model(), 224)
        out = dec(dec.code.zeros(2))        # out.image (2, 224, 224, 3): the mean face, frontal
    """

    def __init__(self, model, image_size=224, focal=None, distance: float = DEFAULT_DISTANCE, principal=None,
                 center=None, near: float | None = None, far: float | None = None, visibility_tol: float = 3.0,
                 ambient: float = 1.0):
        super().__init__()
        self.model = model
        self.code = Code.for_model(model)
        distance = float(distance)
        if not (distance > 0 and math.isfinite(distance)):
            raise InputError(f"distance: expected a positive number of mm, got {distance!r}")
        self.distance = distance
        self.camera = Camera.pinhole(image_size, focal, principal,
                                     near=float(near) if near is not None else distance / 10.0,
                                     far=float(far) if far is not None else distance * 10.0)
        if not (visibility_tol >= 0):
            raise InputError(f"visibility_tol: expected >= 0 (pixel footprints), got {visibility_tol!r}")
        self.visibility_tol = float(visibility_tol)
        if center is None:
            ms = model.mean_shape.detach().float().cpu()
            center = (ms.min(0).values + ms.max(0).values) / 2
        c = torch.as_tensor(center, dtype=torch.float32).reshape(-1)
        if c.numel() != 3 or not bool(torch.isfinite(c).all()):
            raise InputError(f"center: expected (3,) mm, got {center!r}")
        self.mesh = Mesh(model.triangles, model.n_vertices, name="model.triangles")
        self.register_buffer("center", c.clone())
        amb = ambient_sh(1, ambient).transpose(1, 2).reshape(1, 27)
        self.register_buffer("ambient_code", amb)
        self.register_buffer("default_translation", torch.tensor([0.0, 0.0, -distance]))
        self.register_buffer("triangles", self.mesh.triangles.clone())
        lm = model.landmarks.to(torch.int64).cpu()
        self.register_buffer("landmark_index", lm.clone())
        self.register_buffer("landmark_valid", lm >= 0)
        self.register_buffer("boundary", self.mesh.boundary.clone())

    def _apply(self, fn, *args, **kwargs):
        # `dec.cuda()`, `dec.to(device)`: the model's tensors follow the buffers, so a forward does not copy the
        # bases to the kernel device each time
        out = super()._apply(fn, *args, **kwargs)
        self.model = self.model.map_tensors(fn)
        return out

    # camera parameters, read from `self.camera`
    image_size = property(lambda self: self.camera.image_size, doc="(H, W) pixels")
    focal = property(lambda self: self.camera.focal, doc="(fx, fy) pixels")
    principal = property(lambda self: self.camera.principal, doc="(cx, cy) pixels")
    near = property(lambda self: self.camera.near, doc="near clipping depth, mm")
    far = property(lambda self: self.camera.far, doc="far clipping depth, mm")

    def extra_repr(self) -> str:
        return (f"model={getattr(self.model, 'name', '?')!r}, image_size={self.image_size}, focal={self.focal}, "
                f"distance={self.distance}, code={self.code}")

    def blocks(self, code) -> "OrderedDict[str, torch.Tensor]":
        """Checked code blocks.

        Args:
            code: (B, N) float flat code (layout `self.code`) or a dict of named blocks (`Code.join`).
        Returns:
            OrderedDict {block: (B, size) float32 view}. Raises InputError on a wrong layout, dtype or NaN/Inf.
        """
        flat = self.code.join(code) if isinstance(code, dict) else code
        if not isinstance(flat, torch.Tensor):
            flat = C.as_tensor("code", flat)
        blocks = self.code.split(flat)
        if not flat.is_floating_point():
            raise InputError(f"code: expected a float tensor, got dtype {flat.dtype}")
        C.check_device("code", flat)
        C.check_finite("code", flat, scope_input=True)
        return OrderedDict((k, v.float()) for k, v in blocks.items())

    def camera_transform(self, rotation: torch.Tensor, translation: torch.Tensor):
        """The rigid transform of the pose blocks.

        Args:
            rotation: (B, 3) axis-angle, rad, or (B, 3, 3) rotation matrices.
            translation: (B, 3) mm, offset from the default placement.
        Returns:
            (R (B, 3, 3), t (B, 3) mm) with verts_cam = R @ v + t for model-space v:
            t = (0, 0, -distance) + translation - R @ center.
        """
        R = rotation if rotation.ndim == 3 else axis_angle_to_matrix(rotation)
        c = self.center.to(rotation.device)
        t = self.default_translation.to(rotation.device) + translation - R @ c
        return R, t

    def project_points(self, points_cam: torch.Tensor) -> torch.Tensor:
        """(..., 3) mm camera space -> (..., 2) pixels: `self.camera.project` (depth clamped at near)."""
        return self.camera.project(points_cam)

    def landmarks(self, verts_2d: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) pixels: the model's landmark vertices of `verts_2d` (B, V, 2); NaN where the model lacks one."""
        lm = verts_2d[:, self.landmark_index.to(verts_2d.device).clamp(min=0)]
        valid = self.landmark_valid.to(verts_2d.device)
        return torch.where(valid[None, :, None], lm, torch.full_like(lm, float("nan")))

    # ------------------------------------------------------------------ stages
    def geometry(self, code, rotation: torch.Tensor | None = None) -> Geometry:
        """Stage 1: shape, pose and projection.

        Args:
            code: (B, N) float32 flat code or a dict of blocks.
            rotation: optional (B, 3, 3) rotation matrices used instead of the code's rotation block (a
                fitter perturbs the rotation multiplicatively).
        Returns:
            `Geometry`. Gradients: w.r.t. the shape, expression, rotation and translation blocks (and `rotation`).
        """
        with C.deferred_checks():
            bl = self.blocks(code)
            if rotation is not None:
                C.check_finite("rotation", rotation, scope_input=True)
            verts = morph(self.model, bl["shape"], bl["expression"])
            R, t = self.camera_transform(bl["rotation"] if rotation is None else rotation, bl["translation"])
            verts_cam = rigid(verts, R, t)
            normals = vertex_normals(verts_cam, self.mesh)
            verts_2d = self.project_points(verts_cam)
            return Geometry(bl, verts, R, t, verts_cam, normals, verts_2d, self.landmarks(verts_2d))

    def shading(self, geometry: Geometry) -> Shading:
        """Stage 2: reflectance and SH lighting per vertex (MoFA shades vertices, not pixels).

        Args:
            geometry: `Geometry` of the same code.
        Returns:
            `Shading`. Gradients: w.r.t. the reflectance and illumination blocks, and through the normals.
        """
        bl, model = geometry.blocks, self.model
        dev = geometry.verts_cam.device
        with C.deferred_checks():
            if model.k_alb > 0:
                alb = albedo_op(model, bl["reflectance"])
            else:
                alb = model.albedo_mean[None].to(dev).expand(geometry.verts_cam.shape[0], -1, -1)
            sh = self.ambient_code.to(dev) + bl["illumination"]
            colors = sh_shade(geometry.normals, alb, sh)
            # an overflow in albedo * light (a huge but finite code) is caught here, not as a NaN image
            C.check_finite("vertex_colors (from the reflectance and illumination blocks)", colors, scope_input=True)
            return Shading(alb, sh, colors)

    def to_clip(self, verts_cam: torch.Tensor) -> torch.Tensor:
        """(B, V, 4) clip-space positions of camera-space vertices (B, V, 3) mm with this decoder's camera."""
        cam = self.camera
        return to_clip(verts_cam, cam.focal, cam.principal, cam.image_size, cam.near, cam.far)

    @torch.no_grad()
    def visibility(self, geometry: Geometry, rast: torch.Tensor | None = None) -> torch.Tensor:
        """Per-vertex visibility (B, V) bool from the z-buffer.

        Args:
            geometry: `Geometry`.
            rast: (B, H, W, 4) `rasterize` output of the same geometry; rasterized here when None.

        A vertex is visible when (1) its projection lies inside the image and its depth lies between `near`
        and `far`, (2) it faces the camera: n . x < 0 for its camera-space normal n and position x (the camera
        is at the origin), and (3) it is not occluded: the farthest rasterized depth among the 4 pixel centres
        around its projection (clamped to the image; a centre no triangle covers counts as infinitely far)
        is at least the vertex depth minus `visibility_tol * depth / fx` mm. Taking the farthest of the 4
        makes an unoccluded vertex pass even where the surface is steep (on a plane the depth at the vertex
        is a convex combination of the 4); the tolerance covers curvature and a concave neighbourhood
        (depth slope x half a pixel). Occluders closer than the tolerance (3 px footprints = 3 mm at
        1000 mm and f = 1015 px) are not detected; near an occluding contour the answer is decided at
        pixel resolution.
        """
        verts_cam = geometry.verts_cam.detach()
        normals = geometry.normals.detach()
        verts_2d = geometry.verts_2d.detach()
        if rast is None:
            rast = rasterize(self.to_clip(verts_cam), self.mesh, self.image_size)
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
                d = self.camera.depth_from_ndc(z)
                # an uncovered pixel centre has nothing in front of it: depth +inf (the vertex lies on
                # a silhouette, e.g. the open boundary of the mesh, and nothing there occludes it)
                best = torch.maximum(best, torch.where(cov, d, torch.full_like(d, float("inf"))))
        tol = self.visibility_tol * depth / self.focal[0]
        unoccluded = depth <= best + tol
        return inside & facing & unoccluded

    def vertex_render(self, geometry: Geometry, shading: Shading, visibility: torch.Tensor | None = None) -> Render:
        """A `Render` of the per-vertex stages only (image, mask, rast and pos_clip None), for losses that need no
        pixels; `visibility` may be filled in later (`dataclasses.replace`)."""
        return Render(geometry, shading, visibility, self.boundary.to(geometry.verts_cam.device))

    def render(self, geometry: Geometry, shading: Shading, background=None) -> Render:
        """Stage 3: rasterize the shaded mesh into the image.

        Args:
            geometry, shading: the outputs of the first two stages.
            background: optional (B, H, W, 3) or (H, W, 3) float32 image behind the face (default black).
        Returns:
            `Render`. Gradients: image and mask w.r.t. the vertex colours and, at the silhouette and through
            the barycentrics, the camera-space positions.
        """
        H, W = self.image_size
        B = geometry.verts_cam.shape[0]
        with C.deferred_checks():
            bg = None
            if background is not None:
                bg = C.check_device("background", C.as_tensor("background", background))
                if bg.ndim == 3:
                    bg = bg[None]
                C.check_shape("background", bg, "B,H,W,3", H=H, W=W)
                if bg.shape[0] not in (1, B):
                    raise InputError(f"background: batch size {bg.shape[0]} must be 1 or B={B}")
                C.check_finite("background", bg, scope_input=True)
            pos_clip = self.to_clip(geometry.verts_cam)
            rast = rasterize(pos_clip, self.mesh, (H, W))     # reads the host once, with the pending checks
            colors = shading.vertex_colors
            attr = torch.cat([colors, torch.ones_like(colors[..., :1])], dim=-1)
            px = interpolate(attr, rast, self.mesh)
            color_px = px[..., :3]
            if bg is not None:
                covered = (rast[..., 3:4] > 0).to(px.dtype)
                color_px = color_px * covered + bg.to(px.device) * (1 - covered)
            out = antialias(torch.cat([color_px, px[..., 3:4]], dim=-1), rast, pos_clip, self.mesh)
            vis = self.visibility(geometry, rast)
            return Render(geometry, shading, vis, self.boundary.to(vis.device), out[..., :3], out[..., 3:4], rast,
                          pos_clip)

    def forward(self, code, background=None) -> Render:
        """Render a batch of codes: `render(g, shading(g), background)` with g = `geometry(code)`.

        Args:
            code: (B, N) float32 flat code (layout `self.code`) or a dict of named blocks (`Code.join`).
            background: optional (B, H, W, 3) or (H, W, 3) float32 image behind the face (default black).
        Returns:
            `Render` (fields image, mask, visibility, boundary, rast, pos_clip, and the stages' fields:
            verts, verts_cam, normals, verts_2d, landmarks2d, albedo, sh, vertex_colors, blocks).
        """
        with C.deferred_checks():
            g = self.geometry(code)
            return self.render(g, self.shading(g), background)

"""`FitResult`: what `fit` returns, and how to render it back into the original photo."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ..camera import Camera
from ..errors import InputError
from ..face.code import Code
from ..face.decoder import FaceDecoder
from ..landmarks import CropTransform
from ..ops.geometry import morph
from ..rotation import axis_angle_to_matrix

__all__ = ["FitResult"]


@dataclass
class FitResult:
    """What `fit` returns. Arrays are CPU tensors (float32 unless said otherwise).

    code:            (N,) the fitted flat code (layout `Code.for_model(model)`, see `blocks`)
    blocks:          OrderedDict {rotation (3,) rad axis-angle, translation (3,) mm, shape (K_id,),
                     expression (K_exp,), reflectance (K_alb,) std units, illumination (27,) SH offset to
                     the ambient light, channel-major}
    verts_model:     (V, 3) mm, the fitted mesh in model space (shape + expression, no pose)
    verts_cam:       (V, 3) mm, the same mesh in OpenGL camera space (camera looks along -z); the camera is
                     the crop's pinhole camera, i.e. the photo's camera with focal `camera["focal"]` px
    triangles:       (T, 3) int32
    albedo:          (V, 3) fitted reflectance; vertex_colors (V, 3) shaded colours (linear, unclamped)
    image:           (S, S, 3) the render of the fitted code composited over the crop (S = crop size)
    mask:            (S, S, 1) render coverage in the crop; crop (S, S, 3) the input crop in [0, 1]
    landmarks:       (68, 2) fitted landmarks in ORIGINAL image pixels (u right, v down, centres at +0.5;
                     NaN where the model has no such landmark)
    target_landmarks:(68, 2) the landmarks the fit used (detected or given), original image pixels
    landmarks_crop / target_landmarks_crop: the same in crop pixels
    transform:       `CropTransform` original -> crop pixels
    camera:          {"focal", "principal"} of the original image in pixels, {"focal_crop",
                     "principal_crop"}, "distance" (mm), "image_size" (H, W) of the original image
    losses:          {stage: {"initial", "final" (total loss), "terms" {name: weighted value at the end}}};
                     "photometric" also has "history" (loss per iteration) and "times" (s since the stage began)
    timings:         {stage or step: seconds, "total": seconds}
    iterations:      {stage: iterations run}
    converged:       {stage: True if the stage stopped on its tolerance before its iteration limit}
    optimizer:       "lm" or "adam"
    stage_codes:     {stage: (N,) the code after that stage} (`verts_at` gives a stage's mesh)
    """

    code: torch.Tensor
    blocks: "OrderedDict[str, torch.Tensor]"
    verts_model: torch.Tensor
    verts_cam: torch.Tensor
    triangles: torch.Tensor
    albedo: torch.Tensor
    vertex_colors: torch.Tensor
    image: torch.Tensor
    mask: torch.Tensor
    crop: torch.Tensor
    landmarks: np.ndarray
    target_landmarks: np.ndarray
    landmarks_crop: np.ndarray
    target_landmarks_crop: np.ndarray
    transform: CropTransform
    camera: dict
    losses: dict
    timings: dict
    iterations: dict
    converged: dict
    optimizer: str
    stage_codes: dict = field(repr=False, default_factory=dict)
    model: object = field(repr=False, default=None)
    input_image: np.ndarray = field(repr=False, default=None)
    decoder_options: dict = field(repr=False, default_factory=dict)

    def __repr__(self) -> str:
        it = ", ".join(f"{k} {v}" for k, v in self.iterations.items())
        return (f"FitResult(model={getattr(self.model, 'name', '?')!r}, optimizer={self.optimizer!r}, "
                f"loss {self.losses['photometric']['final']:.4g}, iterations: {it}, "
                f"time {self.timings.get('total', float('nan')):.2f} s)")

    def verts_at(self, stage: str) -> torch.Tensor:
        """(V, 3) float32 mm, model space: the mesh of the code after `stage` (a key of `stage_codes`)."""
        if stage not in self.stage_codes:
            raise InputError(f"stage: expected one of {list(self.stage_codes)}, got {stage!r}")
        bl = Code.for_model(self.model).split(self.stage_codes[stage][None])
        return morph(self.model, bl["shape"], bl["expression"])[0].detach()

    # ------------------------------------------------------------------ rendering in the original image
    def original_decoder(self, max_side: int | None = None) -> tuple[FaceDecoder, float]:
        """A `FaceDecoder` whose camera renders the fitted code straight into the ORIGINAL image.

        The crop is a similarity without rotation (crop = s * original + offset), so the original image's
        camera is the crop camera with focal f / s and principal point (c - offset) / s. `max_side` renders
        at a reduced size (factor k = max_side / longest side, returned as the second value).
        Returns (decoder, k); its image_size is round(k * (H, W)).
        """
        H, W = self.camera["image_size"]
        k = 1.0 if not max_side or max(H, W) <= max_side else max_side / max(H, W)
        cam = Camera((H, W), self.camera["focal"], self.camera["principal"]).scaled(k)
        dec = FaceDecoder(self.model, image_size=cam.image_size, focal=cam.focal, principal=cam.principal,
                          **self.decoder_options)
        return dec, k

    @torch.no_grad()
    def render_original(self, max_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Render the fitted face in the original image's frame.

        Returns (image (H, W, 3) float32 in [0, 1] (black background), mask (H, W) float32 coverage),
        at the original size (or reduced so that the longer side is at most `max_side`).
        """
        dec, _ = self.original_decoder(max_side)
        out = dec(self.code[None])
        return (out["image"][0].clamp(0, 1).cpu().numpy().astype(np.float32),
                out["mask"][0, ..., 0].clamp(0, 1).cpu().numpy().astype(np.float32))

    def overlay(self, image=None, alpha: float = 0.75) -> np.ndarray:
        """The fitted render blended over the original photo.

        image: (H, W, 3) float in [0, 1] or uint8, the photo (default: the image given to `fit`, i.e. the
               working copy after grey/RGBA conversion); must have the size the fit used.
        alpha: opacity of the render inside its mask (0..1).
        returns (H, W, 3) float32 in [0, 1]: photo * (1 - alpha m) + render * alpha m.
        """
        if not (0.0 <= float(alpha) <= 1.0):
            raise InputError(f"alpha: expected a value in [0, 1], got {alpha!r}")
        photo = self.input_image if image is None else np.asarray(image)
        if photo is None:
            raise InputError("image: this FitResult holds no input image; pass the photo")
        if photo.dtype == np.uint8:
            photo = photo.astype(np.float32) / 255.0
        photo = np.asarray(photo, np.float32)
        H, W = self.camera["image_size"]
        if photo.shape != (H, W, 3):
            raise InputError(f"image: expected shape {(H, W, 3)} (the size the fit used), got {photo.shape}")
        render, mask = self.render_original()
        m = float(alpha) * mask[..., None]
        return np.clip(photo * (1 - m) + render * m, 0, 1).astype(np.float32)

    def params(self) -> dict:
        """JSON-ready dict of the semantic code: {block: [floats]} plus named semantic coefficients when the
        model names its components (`model.meta["shape_names"]`, ...)."""
        out = {"blocks": {k: [float(x) for x in v.reshape(-1)] for k, v in self.blocks.items()}}
        meta = getattr(self.model, "meta", None) or {}
        named = {}
        for block, key in (("shape", "shape_names"), ("expression", "expr_names"), ("reflectance", "albedo_names")):
            names = meta.get(key)
            if names and len(names) == self.blocks[block].numel():
                named[block] = {n: float(x) for n, x in zip(names, self.blocks[block].tolist())
                                if not n.startswith(("shape_smooth_", "expr_local_", "albedo_smooth_"))}
        if named:
            out["named"] = named
        rot = self.blocks["rotation"].double()
        R = axis_angle_to_matrix(rot[None].float())[0].double()
        # yaw (about y), pitch (about x), roll (about z) in degrees, R = Ry(yaw) Rx(pitch) Rz(roll)
        yaw, pitch, roll = Rotation.from_matrix(R.numpy()).as_euler("YXZ", degrees=True)
        out["pose_degrees"] = {"yaw": float(yaw), "pitch": float(pitch), "roll": float(roll)}
        return out

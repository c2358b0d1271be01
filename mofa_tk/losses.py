"""MoFA's training / fitting losses (Tewari et al., ICCV 2017, Sec. 5), in plain differentiable torch.

Units: images are linear RGB in [0, 1] (B, H, W, 3) NHWC; 2D points and landmarks are in pixels (u right,
v down, pixel (i, j) has its centre at (j + 0.5, i + 0.5)); coefficients are in standard deviations.

* `vertex_photometric_loss`  -- MoFA's dense photometric term: the input image is sampled (bilinearly) at
  the projected positions of the VISIBLE vertices and compared with the vertices' shaded colours; the
  gradient reaches the geometry through the image gradient at those positions.
* `image_photometric_loss`   -- per-pixel variant on the rendered image inside the mask, optionally the
  robust l2,1 norm (Deep3DFaceRecon's `photo_loss`).
* `landmark_loss`            -- sparse term on the 68 iBUG landmarks with optional per-landmark weights;
  landmarks the model lacks (NaN from `FaceDecoder`) or the target lacks (NaN) are ignored.
* `coefficient_regularizer`  -- statistical prior: weighted sum of squared shape / expression /
  reflectance coefficients (std units, prior N(0, I)).
* `mofa_loss`                -- the weighted combination, with `DEFAULT_WEIGHTS`.

Weights. MoFA's paper combines E = w_land E_land + w_photo E_photo + w_reg E_reg; we could not retrieve its
numerical weights from the sources available to us (docs/decoder.md says what was searched). The defaults
below are Deep3DFaceRecon_pytorch's (sicxu/Deep3DFaceRecon_pytorch, models/facerecon_model.py, training
options): w_color = 1.92 (l2,1 photometric, images in [0, 1]), w_lm = 1.6e-3 (squared pixel error at
224 x 224, mean over the 68 landmarks), w_reg = 3.0e-4 with per-block w_id = 1.0, w_exp = 0.8,
w_tex = 1.7e-2 (sum of squared coefficients), which use the same units as ours (BFM coefficients scaled by
the component std, 224 px images, 1015 px focal length).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import checks as C
from .errors import InputError

__all__ = [
    "sample_image", "vertex_photometric_loss", "image_photometric_loss", "landmark_loss",
    "coefficient_regularizer", "mofa_loss", "DEFAULT_WEIGHTS", "DEFAULT_REG_WEIGHTS",
    "deep3d_landmark_weights",
]

#: Per-block weights of `coefficient_regularizer` (Deep3DFaceRecon: w_id, w_exp, w_tex).
DEFAULT_REG_WEIGHTS = {"shape": 1.0, "expression": 0.8, "reflectance": 1.7e-2}
#: Term weights of `mofa_loss`: MoFA's dense (vertex) photometric term, the pixel-wise term (off by default),
#: landmarks and the regulariser, with Deep3DFaceRecon's values (w_color, w_lm, w_reg).
DEFAULT_WEIGHTS = {"vertex_photo": 1.92, "photo": 0.0, "landmark": 1.6e-3, "reg": 3.0e-4}

_EPS = 1e-12


def deep3d_landmark_weights(emphasis: float = 20.0) -> torch.Tensor:
    """(68,) float32 landmark weights of Deep3DFaceRecon: 1, and `emphasis` (20) on the nose points 28-30
    and the 8 inner-mouth points 60-67 (0-based iBUG indices)."""
    w = torch.ones(68)
    w[28:31] = emphasis
    w[-8:] = emphasis
    return w


def _reduce(per_item: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_item.mean()
    if reduction == "sum":
        return per_item.sum()
    if reduction == "none":
        return per_item
    raise InputError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")


def _norm(diff: torch.Tensor, robust: bool) -> torch.Tensor:
    """Per-sample error over the last (colour) axis: squared L2, or L2 (robust, the l2,1 summand).

    The L2 norm is sqrt(s + eps) - sqrt(eps) with eps = 1e-12: exactly 0 at zero residual and with a finite
    gradient there (0), unlike a bare sqrt.
    """
    sq = (diff * diff).sum(-1)
    if not robust:
        return sq
    return torch.sqrt(sq + _EPS) - _EPS ** 0.5


def _image(name, image):
    image = C.as_tensor(name, image)
    if image.ndim == 3:
        image = image[None]
    C.check_shape(name, image, "B,H,W,C")
    C.check_finite(name, image)
    return image


def sample_image(image, points) -> torch.Tensor:
    """Bilinear samples of an NHWC image at pixel positions.

    image:  (B, H, W, C) or (H, W, C) float32
    points: (B, N, 2) float32 pixel positions (u right, v down; pixel (i, j) has its centre at
            (j + 0.5, i + 0.5)); a batch of 1 on either side is broadcast
    returns (B, N, C) float32: the bilinear interpolation of the 4 pixel centres around each point; points
    within half a pixel of the border, or outside, use the border pixels (clamped, `padding_mode="border"`).
    Implemented with `torch.nn.functional.grid_sample(align_corners=False)`, whose grid coordinate
    x = 2 u / W - 1 puts pixel centres exactly at u = j + 0.5. Differentiable w.r.t. image and points
    (the point gradient is the bilinear image gradient).
    """
    image = _image("image", image)
    pts = C.as_tensor("points", points)
    if pts.ndim == 2:
        pts = pts[None]
    C.check_shape("points", pts, "B,N,2")
    B = max(image.shape[0], pts.shape[0])
    image = C.batch_of("image", image, B)
    pts = C.batch_of("points", pts.to(image.device), B)
    H, W = image.shape[1:3]
    scale = C.constant((2.0 / W, 2.0 / H), pts.dtype, pts.device)
    grid = (pts * scale - 1.0)[:, None]                                    # (B, 1, N, 2)
    out = F.grid_sample(image.permute(0, 3, 1, 2), grid.to(image.dtype), mode="bilinear",
                        padding_mode="border", align_corners=False)       # (B, C, 1, N)
    return out[:, :, 0].transpose(1, 2)


def vertex_photometric_loss(image, verts_2d, vertex_colors, visibility, *, robust: bool = False,
                            reduction: str = "mean") -> torch.Tensor:
    """MoFA's dense photometric alignment at the visible vertices.

    image:         (B, H, W, 3) float32 input image, linear RGB in [0, 1]
    verts_2d:      (B, V, 2) float32 projected vertex positions in pixels (`FaceDecoder` output "verts_2d")
    vertex_colors: (B, V, 3) float32 shaded vertex colours ("vertex_colors")
    visibility:    (B, V) bool or float weights ("visibility"); treated as a constant (no gradient)
    robust:        False: squared colour distance |I(u_i) - c_i|^2; True: the l2,1 summand |I(u_i) - c_i|
    reduction:     "mean" (over the batch), "sum" or "none" ((B,) per image)
    returns, per image, sum_i vis_i e_i / sum_i vis_i (0 for an image without visible vertices), reduced.
    Gradients reach the vertex colours and, through the bilinear image gradient at u_i, the positions.
    """
    verts_2d = C.as_tensor("verts_2d", verts_2d)
    colors = C.as_tensor("vertex_colors", vertex_colors)
    C.check_shape("verts_2d", verts_2d, "B,V,2")
    sz = C.check_shape("vertex_colors", colors, "B,V,3", B=verts_2d.shape[0], V=verts_2d.shape[1])
    vis = C.as_tensor("visibility", visibility).detach()
    C.check_shape("visibility", vis, "B,V", **sz)
    image = _image("image", image)
    if image.shape[-1] != 3:
        raise InputError(f"image: expected 3 colour channels, got shape {tuple(image.shape)}")
    sampled = sample_image(image, verts_2d)
    err = _norm(sampled - colors, robust)
    w = vis.to(err.dtype)
    per = (w * err).sum(1) / w.sum(1).clamp(min=1.0)
    return _reduce(per, reduction)


def image_photometric_loss(rendered, target, mask, *, robust: bool = False, detach_mask: bool = True,
                           reduction: str = "mean") -> torch.Tensor:
    """Pixel-wise photometric term on the rendered image inside the mask.

    rendered: (B, H, W, 3) float32 render (`FaceDecoder` output "image"), linear RGB in [0, 1]
    target:   (B, H, W, 3) or (H, W, 3) float32 input image
    mask:     (B, H, W, 1) or (B, H, W) float32 weights in [0, 1] ("mask", possibly times a skin mask)
    robust:   False: squared per-pixel colour distance; True: l2,1, the per-pixel L2 norm (Deep3DFaceRecon)
    detach_mask: treat the mask as a constant (default, as Deep3DFaceRecon); the silhouette still gets
              gradients through the antialiased image
    returns, per image, sum_p m_p e_p / max(sum_p m_p, 1), reduced ("mean" over the batch, "sum", "none").
    """
    rendered = _image("rendered", rendered)
    target = _image("target", target)
    m = C.as_tensor("mask", mask)
    if m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim == 2:
        m = m[None]
    B, H, W = rendered.shape[:3]
    C.check_shape("mask", m, "B,H,W", H=H, W=W)
    if rendered.shape[-1] != target.shape[-1] or tuple(target.shape[1:3]) != (H, W):
        raise InputError(f"target: shape {tuple(target.shape)} does not match rendered {tuple(rendered.shape)}")
    target = C.batch_of("target", target, B)
    m = C.batch_of("mask", m, B)
    if detach_mask:
        m = m.detach()
    err = _norm(rendered - target, robust)
    per = (m * err).sum((1, 2)) / m.sum((1, 2)).clamp(min=1.0)
    return _reduce(per, reduction)


def landmark_loss(pred, target, weights=None, *, valid=None, reduction: str = "mean") -> torch.Tensor:
    """Sparse landmark term: weighted squared pixel distance of the 68 landmarks.

    pred:    (B, L, 2) float32 pixels ("landmarks2d"; NaN where the model has no such landmark)
    target:  (B, L, 2) float32 pixels (detected landmarks; NaN where undetected)
    weights: optional (L,) or (B, L) per-landmark weights (e.g. `deep3d_landmark_weights()`); default 1
    valid:   optional (L,) or (B, L) bool; default: both pred and target finite. Invalid landmarks neither
             count nor receive gradient (they are selected away before any arithmetic, so NaN never
             reaches the gradient).
    returns, per image, sum_l w_l |p_l - t_l|^2 / n_valid (0 if none is valid), reduced.
    """
    pred = C.as_tensor("pred", pred)
    target = C.as_tensor("target", target).to(pred.device)
    C.check_shape("pred", pred, "B,L,2")
    if target.ndim == 2:
        target = target[None]
    C.check_shape("target", target, "B,L,2", L=pred.shape[1])
    B, L = pred.shape[:2]
    target = C.batch_of("target", target, B)
    ok = torch.isfinite(pred).all(-1) & torch.isfinite(target).all(-1)
    if valid is not None:
        v = C.as_tensor("valid", valid, dtype=torch.bool).to(pred.device)
        if v.ndim == 1:
            v = v[None]
        C.check_shape("valid", v, "B,L", L=L)
        ok = ok & C.batch_of("valid", v, B)
    if weights is None:
        w = pred.new_ones(1, L)
    else:
        w = C.as_tensor("weights", weights).to(pred.device)
        if w.ndim == 1:
            w = w[None]
        C.check_shape("weights", w, "B,L", L=L)
        C.check_finite("weights", w)
        w = C.batch_of("weights", w, B)
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    p = torch.where(ok[..., None], pred, zero)
    t = torch.where(ok[..., None], target, zero)
    d2 = ((p - t) ** 2).sum(-1)
    per = (w * d2 * ok).sum(1) / ok.sum(1).clamp(min=1)
    return _reduce(per, reduction)


def coefficient_regularizer(blocks, weights=None, *, code=None, reduction: str = "mean") -> torch.Tensor:
    """Statistical regulariser: sum over blocks of w_block * sum_k coef_k^2 (coefficients in std units).

    blocks:  dict of code blocks (e.g. `Code.split(code)` or the decoder's "blocks"), or a flat (B, N) code
             together with `code=` its `Code` layout
    weights: {block: weight} for any of "shape", "expression", "reflectance" (others, e.g. "illumination",
             are accepted too); default `DEFAULT_REG_WEIGHTS` (1.0, 0.8, 0.017). Missing blocks count 0.
    returns, per image, sum_b w_b |coef_b|^2 (= -log of the N(0, I) prior up to a factor 2 and a constant
    when all weights are 1), reduced over the batch.
    """
    if isinstance(blocks, torch.Tensor):
        if code is None:
            raise InputError("blocks: a flat code tensor needs code=<Code layout> to be split")
        blocks = code.split(blocks)
    if not isinstance(blocks, dict):
        raise InputError(f"blocks: expected a dict of code blocks or a flat code, got {type(blocks).__name__}")
    weights = DEFAULT_REG_WEIGHTS if weights is None else weights
    total = None
    for name, w in weights.items():
        if name not in blocks:
            if name in ("shape", "expression", "reflectance", "illumination", "rotation", "translation"):
                continue
            raise InputError(f"weights: unknown block {name!r}")
        x = C.as_tensor(f"blocks[{name!r}]", blocks[name])
        if x.ndim == 1:
            x = x[None]
        term = float(w) * (x * x).sum(-1)
        total = term if total is None else total + term
    if total is None:
        ref = next(iter(blocks.values()))
        total = ref.new_zeros(ref.shape[0] if ref.ndim > 1 else 1)
    return _reduce(total, reduction)


def _field(out, name):
    """A field of a decoder output: attribute of a `Render`, or key of a dict with the same names."""
    if isinstance(out, dict):
        if name not in out:
            raise InputError(f"out: the decoder output has no {name!r}")
        return out[name]
    value = getattr(out, name, None)
    if value is None:
        raise InputError(f"out: the decoder output has no {name!r} (a vertex-only Render has no image)")
    return value


def mofa_loss(out, image, landmarks=None, *, weights=None, reg_weights=None, landmark_weights=None,
              robust: bool = True, image_mask=None, exclude_boundary: bool = True) -> tuple[torch.Tensor, dict]:
    """MoFA's combined loss on a `FaceDecoder` output.

    Args:
        out: `Render` from `FaceDecoder` (or `FaceDecoder.vertex_render` when the pixel term is off), or a dict
            with the same field names; uses image, mask (pixel term), verts_2d, vertex_colors, visibility,
            boundary (dense term), landmarks2d and blocks.
        image: (B, H, W, 3) float32 input image in [0, 1].
        landmarks: optional (B, 68, 2) detected landmarks in pixels (NaN = missing); the term is skipped if None.
        weights: {"photo", "vertex_photo", "landmark", "reg"} term weights; missing keys take
            `DEFAULT_WEIGHTS` (vertex_photo 1.92, photo 0, landmark 1.6e-3, reg 3e-4).
        reg_weights: per-block regulariser weights (default `DEFAULT_REG_WEIGHTS`).
        landmark_weights: (68,) per-landmark weights (default 1).
        robust: use the l2,1 norm in both photometric terms (as Deep3DFaceRecon, whose weights these are).
        image_mask: optional (B, H, W, 1) extra mask multiplied into the render mask (e.g. a skin mask).
        exclude_boundary: leave the mesh's open-boundary vertices (out.boundary) out of the dense term: their
            bilinear sample straddles the face outline and mixes in the background.
    Returns:
        (total scalar, {term name: weighted scalar term}).
    """
    w = dict(DEFAULT_WEIGHTS)
    if weights:
        unknown = set(weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise InputError(f"weights: unknown term(s) {sorted(unknown)}; expected {sorted(DEFAULT_WEIGHTS)}")
        w.update(weights)
    terms = {}
    if w["photo"]:
        mask = _field(out, "mask")
        mask = mask if image_mask is None else mask * image_mask
        terms["photo"] = w["photo"] * image_photometric_loss(_field(out, "image"), image, mask, robust=robust)
    if w["vertex_photo"]:
        vis = _field(out, "visibility")
        boundary = out.get("boundary") if isinstance(out, dict) else out.boundary
        if exclude_boundary and boundary is not None:
            vis = vis & ~boundary.to(vis.device)[None]
        terms["vertex_photo"] = w["vertex_photo"] * vertex_photometric_loss(
            image, _field(out, "verts_2d"), _field(out, "vertex_colors"), vis, robust=robust)
    if landmarks is not None and w["landmark"]:
        terms["landmark"] = w["landmark"] * landmark_loss(_field(out, "landmarks2d"), landmarks, landmark_weights)
    if w["reg"]:
        terms["reg"] = w["reg"] * coefficient_regularizer(_field(out, "blocks"), reg_weights)
    if not terms:
        raise InputError("weights: every term has weight 0")
    total = sum(terms.values())
    return total, terms

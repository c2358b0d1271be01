"""`MoFA`: the model-based face autoencoder (Tewari et al., ICCV 2017) = `Encoder` + `FaceDecoder` + MoFA's loss.

    code = encoder(image)                       (B, N): pose, shape, expression, reflectance, illumination
    out  = decoder(code)                        render, landmarks, visibility (mofa_tk.FaceDecoder)
    loss = mofa_loss(out, image, landmarks)     dense photometric + landmark + statistical regulariser

Loss weights (`MoFA.weights`) are `mofa_tk.losses.DEFAULT_WEIGHTS` (Deep3DFaceRecon's values, see
docs/decoder.md: vertex_photo 1.92 on the l2,1 dense term, landmark 1.6e-3 on squared pixels at 224 px,
reg 3e-4 times the per-block weights shape 1.0 / expression 0.8 / reflectance 0.017) with one change: the
landmark weight is given for 224 px images and multiplied by (224 / S)^2 for an S-pixel training resolution,
so that the balance between the landmark term (squared pixels) and the photometric term (resolution
independent) does not depend on S. `load_encoder(path)` reads a trained encoder back from a checkpoint
written by `mofa_tk.training.train`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import losses as L
from ..errors import InputError
from ..face.decoder import FaceDecoder
from .encoder import Encoder

__all__ = ["MoFA", "load_encoder", "scaled_weights", "CHECKPOINT_FORMAT"]

#: `format` entry of the checkpoints written by mofa_tk.training.train.
CHECKPOINT_FORMAT = "mofa_tk.train/1"
#: Resolution at which the landmark weight of `losses.DEFAULT_WEIGHTS` is defined (pixels).
LANDMARK_WEIGHT_SIZE = 224


def scaled_weights(image_size, weights: dict | None = None) -> dict:
    """Term weights for `losses.mofa_loss` at an S x S training resolution.

    weights: overrides of `losses.DEFAULT_WEIGHTS` ({"vertex_photo", "photo", "landmark", "reg"}), with the
        landmark weight meant for 224 px images. Returns a full dict where the landmark weight is multiplied by
        (224 / min(H, W))^2 (squared pixel errors shrink with the square of the resolution).
    """
    w = dict(L.DEFAULT_WEIGHTS)
    if weights:
        unknown = set(weights) - set(w)
        if unknown:
            raise InputError(f"weights: unknown term(s) {sorted(unknown)}; expected {sorted(w)}")
        w.update({k: float(v) for k, v in weights.items()})
    H, W = (image_size, image_size) if isinstance(image_size, int) else image_size
    w["landmark"] = w["landmark"] * (LANDMARK_WEIGHT_SIZE / min(H, W)) ** 2
    return w


class MoFA(nn.Module):
    """MoFA autoencoder: CNN encoder + model-based decoder, trained with MoFA's loss.

    model:       FaceModel (e.g. `mofa_tk.builtin_model()`)
    image_size:  training resolution S (int) or (H, W); default 64
    encoder:     an `Encoder` for `model`'s code (default: `Encoder(code, image_size, **encoder_options)`)
    decoder_options: keyword arguments of `FaceDecoder` (focal, distance, ...; defaults recommended: the
                 default focal scales with the image size, which makes codes resolution independent)
    weights:     term weights (see `scaled_weights`; landmark weight given at 224 px); reg_weights: per-block
                 regulariser weights (default `losses.DEFAULT_REG_WEIGHTS`); landmark_weights: (68,) weights
    robust:      l2,1 photometric norm (default True, as the weights assume)

    `forward(images)` -> (code (B, N), decoder output dict); `loss(images, landmarks)` -> (total, terms, code,
    out). Images are NHWC (B, S, S, 3) float32 RGB in [0, 1], landmarks (B, 68, 2) pixels (NaN = missing) or None.
    Only the encoder has parameters; the decoder is analytic.
    """

    def __init__(self, model, image_size=64, *, encoder: Encoder | None = None, encoder_options: dict | None = None,
                 decoder_options: dict | None = None, weights: dict | None = None, reg_weights: dict | None = None,
                 landmark_weights=None, robust: bool = True):
        super().__init__()
        self.decoder = FaceDecoder(model, image_size, **(decoder_options or {}))
        if encoder is None:
            encoder = Encoder(self.decoder.code, self.decoder.image_size, **(encoder_options or {}))
        elif not isinstance(encoder, Encoder):
            raise InputError(f"encoder: expected a mofa_tk.Encoder, got {type(encoder).__name__}")
        if encoder.code != self.decoder.code:
            raise InputError(f"encoder: its code layout {encoder.code} does not match the model's {self.decoder.code}")
        self.encoder = encoder
        self.weights = scaled_weights(self.decoder.image_size, weights)
        self.reg_weights = dict(L.DEFAULT_REG_WEIGHTS if reg_weights is None else reg_weights)
        self.landmark_weights = landmark_weights
        self.robust = bool(robust)

    @property
    def image_size(self):
        return self.decoder.image_size

    def _check_images(self, images) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise InputError(f"images: expected a torch tensor (B, H, W, 3), got {type(images).__name__}")
        H, W = self.decoder.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (H, W, 3):
            raise InputError(f"images: expected shape (B, {H}, {W}, 3) (NHWC, the training resolution), "
                             f"got {tuple(images.shape)}")
        return images

    def encode(self, images) -> torch.Tensor:
        """(B, H, W, 3) NHWC images in [0, 1] -> (B, N) codes (differentiable)."""
        images = self._check_images(images)
        return self.encoder(images.permute(0, 3, 1, 2))

    def forward(self, images):
        """(B, H, W, 3) images -> (code (B, N), `FaceDecoder` output dict of the code)."""
        code = self.encode(images)
        return code, self.decoder(code)

    def loss(self, images, landmarks=None):
        """MoFA's loss of a batch: returns (total scalar, {term: weighted scalar}, code, decoder output)."""
        code, out = self(images)
        total, terms = L.mofa_loss(out, images, landmarks, weights=self.weights, reg_weights=self.reg_weights,
                                   landmark_weights=self.landmark_weights, robust=self.robust)
        return total, terms, code, out


def load_encoder(ckpt_path, map_location="cpu"):
    """Load the encoder of a `mofa_tk.training.train` checkpoint.

    ckpt_path:    a checkpoint file written by `mofa_tk.training.train` / `mofa train` (``OUT/checkpoint.pt``), or the
                  training output folder that holds it
    map_location: device for the weights (default "cpu"; e.g. "cuda")
    returns (encoder, config):
        encoder -- `mofa_tk.Encoder` in eval mode, on `map_location`; `encoder.predict_code(crops)` maps
                   (B, H, W, 3) float RGB crops in [0, 1] to (B, N) codes (any H, W; resized internally);
        config  -- the training configuration (dict): among others "image_size" (training resolution),
                   "crop_scale" (the `crop_face(scale=...)` the training crops used: crop new photos the same
                   way), "model" (which face model the code belongs to), "decoder" (FaceDecoder options,
                   {} = defaults), "step" (training steps done), "encoder" (`Encoder.config()`).
    Raises FileNotFoundError for a missing file and InputError for a file that is not such a checkpoint.
    """
    p = Path(ckpt_path).expanduser()
    if p.is_dir():
        p = p / "checkpoint.pt"
    if not p.is_file():
        raise FileNotFoundError(f"encoder checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise InputError(f"encoder checkpoint {p}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        fmt = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise InputError(f"encoder checkpoint {p}: expected a {CHECKPOINT_FORMAT} checkpoint, got format {fmt!r}")
    config = dict(ckpt["config"])
    config.update(ckpt.get("derived", {}))      # crop_scale actually used, framing, data summary
    config["encoder"] = dict(ckpt["encoder_config"])
    config["step"] = int(ckpt["step"])
    enc = Encoder.from_config(ckpt["encoder_config"])
    try:
        enc.load_state_dict(ckpt["encoder"])
    except RuntimeError as exc:
        raise InputError(f"encoder checkpoint {p}: weights do not fit the stored encoder config ({exc})") from None
    enc.to(map_location).eval()
    return enc, config

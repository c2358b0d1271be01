"""`FaceModel`: a linear morphable face model held as torch tensors.

Geometry is in millimetres. Coefficients are in units of standard deviations: a face is

    verts = mean_shape + sum_k shape_basis[..., k] * shape_std[k] * alpha[k]
                       + sum_k expr_basis[..., k]  * expr_std[k]  * delta[k]
    albedo = albedo_mean + sum_k albedo_basis[..., k] * albedo_std[k] * beta[k]

so alpha, delta, beta ~ N(0, I) under the model's prior.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import ModelFormatError

_TENSOR_FIELDS = (
    "mean_shape", "shape_basis", "shape_std", "expr_basis", "expr_std",
    "albedo_mean", "albedo_basis", "albedo_std", "triangles", "landmarks",
)


@dataclass
class FaceModel:
    """A morphable face model.

    mean_shape:   (V, 3) float32, millimetres
    shape_basis:  (V, 3, K_id) float32, unit-norm directions in R^{3V} (scaled by shape_std)
    shape_std:    (K_id,) float32, millimetres: the L2 norm over all 3V coordinates of the displacement for a
                  coefficient of 1 (the BFM / eos convention: std = sqrt(PCA eigenvalue)); one vertex moves
                  by about std / sqrt(V)
    expr_basis:   (V, 3, K_exp) float32
    expr_std:     (K_exp,) float32, millimetres per unit coefficient
    albedo_mean:  (V, 3) float32, linear RGB reflectance in [0, 1]
    albedo_basis: (V, 3, K_alb) float32 (K_alb may be 0)
    albedo_std:   (K_alb,) float32
    triangles:    (T, 3) int32, 0-based vertex indices, counter-clockwise seen from the front (+z)
    landmarks:    (68,) int64 vertex indices of the iBUG-68 points (-1 where the model has none)
    name, source: what the model is and where it was loaded from
    """

    mean_shape: torch.Tensor
    shape_basis: torch.Tensor
    shape_std: torch.Tensor
    expr_basis: torch.Tensor
    expr_std: torch.Tensor
    albedo_mean: torch.Tensor
    albedo_basis: torch.Tensor
    albedo_std: torch.Tensor
    triangles: torch.Tensor
    landmarks: torch.Tensor
    name: str = "face model"
    source: str = "<memory>"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        for f in _TENSOR_FIELDS:
            v = getattr(self, f)
            if not isinstance(v, torch.Tensor):
                v = torch.as_tensor(np.asarray(v))
            dtype = torch.int32 if f == "triangles" else torch.int64 if f == "landmarks" else torch.float32
            setattr(self, f, v.to(dtype).contiguous())
        self.validate()

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ModelFormatError (naming `source`) when shapes or indices are inconsistent."""
        def bad(msg):
            raise ModelFormatError(f"{self.source}: {msg}")

        V = self.mean_shape.shape[0] if self.mean_shape.ndim == 2 else -1
        if self.mean_shape.ndim != 2 or self.mean_shape.shape[1] != 3 or V < 3:
            bad(f"mean_shape must be (V, 3) with V >= 3, got {tuple(self.mean_shape.shape)}")
        for basis, std, label in ((self.shape_basis, self.shape_std, "shape"),
                                  (self.expr_basis, self.expr_std, "expression"),
                                  (self.albedo_basis, self.albedo_std, "albedo")):
            if basis.ndim != 3 or basis.shape[0] != V or basis.shape[1] != 3:
                bad(f"{label} basis must be (V={V}, 3, K), got {tuple(basis.shape)}")
            if std.ndim != 1 or std.shape[0] != basis.shape[2]:
                bad(f"{label} std must be (K={basis.shape[2]},), got {tuple(std.shape)}")
            if not torch.isfinite(basis).all() or not torch.isfinite(std).all():
                bad(f"{label} basis/std contain NaN or Inf")
        if tuple(self.albedo_mean.shape) != (V, 3):
            bad(f"albedo_mean must be (V={V}, 3), got {tuple(self.albedo_mean.shape)}")
        if not torch.isfinite(self.mean_shape).all():
            bad("mean_shape contains NaN or Inf")
        t = self.triangles
        if t.ndim != 2 or t.shape[1] != 3 or t.shape[0] == 0:
            bad(f"triangles must be (T, 3) with T >= 1, got {tuple(t.shape)}")
        if int(t.min()) < 0 or int(t.max()) >= V:
            bad(f"triangle indices must lie in [0, {V}), got [{int(t.min())}, {int(t.max())}]")
        lm = self.landmarks
        if lm.ndim != 1 or lm.shape[0] != 68:
            bad(f"landmarks must be (68,) vertex indices, got {tuple(lm.shape)}")
        if int(lm.max()) >= V or int(lm.min()) < -1:
            bad(f"landmark indices must lie in [-1, {V}), got [{int(lm.min())}, {int(lm.max())}]")

    # ---------------------------------------------------------------- sizes
    @property
    def n_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def n_triangles(self) -> int:
        return int(self.triangles.shape[0])

    @property
    def k_id(self) -> int:
        return int(self.shape_basis.shape[2])

    @property
    def k_exp(self) -> int:
        return int(self.expr_basis.shape[2])

    @property
    def k_alb(self) -> int:
        return int(self.albedo_basis.shape[2])

    @property
    def device(self) -> torch.device:
        return self.mean_shape.device

    def __repr__(self) -> str:
        return (f"FaceModel({self.name!r}: {self.n_vertices} vertices, {self.n_triangles} triangles, "
                f"{self.k_id} shape / {self.k_exp} expression / {self.k_alb} albedo components, "
                f"{int((self.landmarks >= 0).sum())} landmarks, device={self.device}, source={self.source!r})")

    # ---------------------------------------------------------------- transforms
    def to(self, device) -> "FaceModel":
        """Copy of the model with every tensor on `device`."""
        return self.map_tensors(lambda t: t.to(device))

    def map_tensors(self, fn) -> "FaceModel":
        """Copy of the model with `fn` applied to every tensor (dtypes are then restored: float32 bases, int32
        triangles, int64 landmarks)."""
        return replace(self, **{f: fn(getattr(self, f)) for f in _TENSOR_FIELDS})

    def truncate(self, k_id: int | None = None, k_exp: int | None = None, k_alb: int | None = None) -> "FaceModel":
        """Copy keeping the first k components of each basis (None keeps all).

        Asking for more components than the model has pads with zero-std components, so code sizes
        can be fixed (e.g. MoFA's 80/64/80) for any model; padded components have no effect.
        """
        def cut(basis, std, k):
            if k is None:
                return basis, std
            k = int(k)
            if k < 0:
                raise ValueError(f"truncate: component counts must be >= 0, got {k}")
            have = basis.shape[2]
            if k <= have:
                return basis[:, :, :k].contiguous(), std[:k].contiguous()
            pad = k - have
            basis = torch.cat([basis, basis.new_zeros(basis.shape[0], 3, pad)], dim=2)
            return basis.contiguous(), torch.cat([std, std.new_zeros(pad)]).contiguous()

        sb, ss = cut(self.shape_basis, self.shape_std, k_id)
        eb, es = cut(self.expr_basis, self.expr_std, k_exp)
        ab, as_ = cut(self.albedo_basis, self.albedo_std, k_alb)
        return replace(self, shape_basis=sb, shape_std=ss, expr_basis=eb, expr_std=es,
                       albedo_basis=ab, albedo_std=as_)

    # ---------------------------------------------------------------- evaluation (pure torch, for reference use)
    def albedo(self, beta: torch.Tensor | None = None) -> torch.Tensor:
        """Per-vertex albedo (B, V, 3) for coefficients beta (B, K_alb); mean albedo when None."""
        if beta is None or self.k_alb == 0:
            a = self.albedo_mean[None]
            return a if beta is None else a.expand(beta.shape[0], -1, -1)
        return self.albedo_mean[None] + torch.einsum("vck,bk->bvc", self.albedo_basis, beta * self.albedo_std)

    # ---------------------------------------------------------------- io
    def save(self, path) -> None:
        """Write the model to a `.npz` file that `mofa_tk.load_model` reads back exactly."""
        arrays = {f: getattr(self, f).detach().cpu().numpy() for f in _TENSOR_FIELDS}
        np.savez_compressed(path, format=np.array("mofa_tk.FaceModel/1"), name=np.array(self.name), **arrays)


class ModelCache:
    """Values derived once per `FaceModel` object (FaceModel compares by value and is unhashable, so entries are
    keyed by id and checked by a weak reference; an entry goes when its model is collected)."""

    def __init__(self):
        self._entries = {}

    def get(self, model):
        """The cached value for this very object, or None."""
        e = self._entries.get(id(model))
        return e[1] if e is not None and e[0]() is model else None

    def put(self, model, value) -> None:
        key = id(model)
        try:
            ref = weakref.ref(model, lambda _r, k=key, d=self._entries: d.pop(k, None))
        except TypeError:                 # not weak-referenceable: not cached
            return
        self._entries[key] = (ref, value)

    def clear(self) -> None:
        self._entries.clear()

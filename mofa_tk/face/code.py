"""`Code`: the layout of MoFA's semantic code vector (pose, shape, expression, reflectance, illumination).

A code is a float32 tensor (B, N) whose columns are, in this order (MoFA, Tewari et al. ICCV 2017, Sec. 3):

| block          | size  | units / meaning                                                                      |
|----------------|-------|--------------------------------------------------------------------------------------|
| `rotation`     | 3     | axis-angle (radians) of the head rotation into camera space (0 = frontal)            |
| `translation`  | 3     | mm, offset of the head from its default place (0, 0, -distance) in camera space      |
| `shape`        | K_id  | identity coefficients, units of standard deviations (prior N(0, I))                  |
| `expression`   | K_exp | expression coefficients, std units                                                   |
| `reflectance`  | K_alb | albedo coefficients, std units (size 0 for a model without an albedo basis)          |
| `illumination` | 27    | SH radiance, (B, 27) channel-major as `sh_shade` takes it (sh[:, 9 c + k]: 9 red,    |
|                |       | then 9 green, then 9 blue coefficients), as an OFFSET to `ambient_sh` (0 = white     |
|                |       | ambient light of irradiance 1, i.e. the plain albedo)                                |

With MoFA's sizes (80, 64, 80) N = 257, the size Deep3DFaceRecon also uses. How `FaceDecoder` turns the
pose and illumination blocks into a camera-space mesh and SH light is described in docs/decoder.md.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from ..errors import InputError

#: Block names in code order.
BLOCKS = ("rotation", "translation", "shape", "expression", "reflectance", "illumination")
#: MoFA's coefficient counts (shape, expression, reflectance).
MOFA_SIZES = (80, 64, 80)


class _hybridmethod:
    """Method callable on the class (uses a default `Code()` layout) or on an instance."""

    def __init__(self, func):
        self.func = func
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__

    def __get__(self, obj, cls):
        target = obj if obj is not None else cls()

        def bound(*args, **kwargs):
            return self.func(target, *args, **kwargs)

        bound.__doc__ = self.func.__doc__
        bound.__name__ = self.func.__name__
        return bound


class Code:
    """Layout of a semantic code: block sizes and their column ranges in the flat (B, N) vector.

    Code(k_id=80, k_exp=64, k_alb=80)   explicit sizes (MoFA's by default)
    Code.for_model(model)               sizes of a FaceModel (K_id, K_exp, K_alb; K_alb may be 0)

    `split`, `join` and `zeros` work on an instance, or on the class itself with MoFA's default sizes
    (`Code.zeros(4)` is a (4, 257) zero code).
    """

    def __init__(self, k_id: int = MOFA_SIZES[0], k_exp: int = MOFA_SIZES[1], k_alb: int = MOFA_SIZES[2],
                 *, name: str = "code"):
        sizes = OrderedDict()
        for label, k in (("k_id", k_id), ("k_exp", k_exp), ("k_alb", k_alb)):
            if isinstance(k, bool) or int(k) != k or int(k) < 0:
                raise InputError(f"Code: {label} must be an integer >= 0, got {k!r}")
        sizes["rotation"] = 3
        sizes["translation"] = 3
        sizes["shape"] = int(k_id)
        sizes["expression"] = int(k_exp)
        sizes["reflectance"] = int(k_alb)
        sizes["illumination"] = 27
        self.sizes = sizes
        self.name = name
        self.slices = OrderedDict()
        start = 0
        for block, n in sizes.items():
            self.slices[block] = slice(start, start + n)
            start += n
        self.size = start

    # ------------------------------------------------------------------ constructors
    @staticmethod
    def sizes_for(model) -> "OrderedDict[str, int]":
        """Block sizes {rotation: 3, translation: 3, shape: K_id, expression: K_exp, reflectance: K_alb,
        illumination: 27} (ordered as in the code) for a FaceModel."""
        return Code.for_model(model).sizes.copy()

    @classmethod
    def for_model(cls, model) -> "Code":
        """Layout with the coefficient counts of `model` (a FaceModel)."""
        return cls(model.k_id, model.k_exp, model.k_alb, name=f"code for {getattr(model, 'name', 'model')!r}")

    # ------------------------------------------------------------------ helpers
    def __len__(self) -> int:
        return self.size

    def __eq__(self, other) -> bool:
        return isinstance(other, Code) and self.sizes == other.sizes

    def __hash__(self):
        return hash(tuple(self.sizes.values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        return f"Code(N={self.size}: {inner})"

    def describe(self) -> str:
        """'rotation 3 + translation 3 + shape 80 + ...' (used in error messages)."""
        return " + ".join(f"{k} {v}" for k, v in self.sizes.items())

    # ------------------------------------------------------------------ split / join / zeros
    @_hybridmethod
    def split(self, code) -> "OrderedDict[str, torch.Tensor]":
        """Named blocks of a flat code.

        code: (B, N) float tensor (or (N,), treated as B = 1) with N = `self.size`.
        returns an ordered dict {block: (B, size)} of views into `code` (gradients flow back to it).
        Raises InputError when the last dimension is not N.
        """
        if not isinstance(code, torch.Tensor):
            try:
                code = torch.as_tensor(code, dtype=torch.float32)
            except Exception as exc:
                raise InputError(f"code: expected a tensor, got {type(code).__name__} ({exc})") from None
        if code.ndim == 1:
            code = code[None]
        if code.ndim != 2:
            raise InputError(f"code: expected shape (B, N={self.size}), got {tuple(code.shape)}")
        if code.shape[1] != self.size:
            raise InputError(f"code: expected N={self.size} values per row ({self.describe()}), "
                             f"got {code.shape[1]} (shape {tuple(code.shape)})")
        return OrderedDict((k, code[:, s]) for k, s in self.slices.items())

    @_hybridmethod
    def join(self, blocks) -> torch.Tensor:
        """Flat code (B, N) from a dict of blocks {name: (B, size)}.

        Every block must be present, except blocks of size 0 which may be omitted. `illumination` may
        also be given as (B, 9, 3) (sh[b, k, c], the layout of `ambient_sh`); it is stored channel-major.
        Blocks with a batch of 1 are broadcast to the largest B. Raises InputError on unknown or missing
        names and wrong sizes.
        """
        if not isinstance(blocks, dict):
            raise InputError(f"blocks: expected a dict of named code blocks, got {type(blocks).__name__}")
        unknown = [k for k in blocks if k not in self.sizes]
        if unknown:
            raise InputError(f"blocks: unknown block name(s) {unknown}; expected {list(self.sizes)}")
        missing = [k for k, n in self.sizes.items() if k not in blocks and n > 0]
        if missing:
            raise InputError(f"blocks: missing block(s) {missing} (layout {self.describe()})")
        parts = OrderedDict()
        for k, n in self.sizes.items():
            if k not in blocks:
                continue
            v = blocks[k]
            if not isinstance(v, torch.Tensor):
                v = torch.as_tensor(v, dtype=torch.float32)
            if k == "illumination" and v.ndim == 3 and tuple(v.shape[1:]) == (9, 3):
                v = v.transpose(1, 2).reshape(v.shape[0], 27)
            if v.ndim == 1:
                v = v[None]
            if v.ndim != 2 or v.shape[1] != n:
                raise InputError(f"blocks[{k!r}]: expected shape (B, {n}), got {tuple(v.shape)}")
            parts[k] = v
        if not parts:
            raise InputError("blocks: empty")
        Bs = {v.shape[0] for v in parts.values()}
        B = max(Bs)
        if not Bs <= {1, B}:
            raise InputError(f"blocks: inconsistent batch sizes {dict((k, v.shape[0]) for k, v in parts.items())}")
        ref = next(iter(parts.values()))
        dtype = torch.promote_types(ref.dtype, torch.float32) if ref.is_floating_point() else torch.float32
        out = []
        for k, n in self.sizes.items():
            v = parts.get(k)
            if v is None:
                v = torch.zeros(B, 0, dtype=dtype, device=ref.device)
            out.append(v.to(dtype=dtype, device=ref.device).expand(B, n))
        return torch.cat(out, dim=1)

    @_hybridmethod
    def zeros(self, B: int = 1, *, device=None, dtype=torch.float32, requires_grad: bool = False) -> torch.Tensor:
        """(B, N) zero code: with `FaceDecoder`, the mean face, frontal, centred, in white ambient light."""
        if isinstance(B, bool) or int(B) != B or int(B) < 0:
            raise InputError(f"B: expected a batch size >= 0, got {B!r}")
        return torch.zeros(int(B), self.size, device=device, dtype=dtype, requires_grad=requires_grad)

"""Command-line options shared by `mofa fit` and `mofa eval`."""
from __future__ import annotations

import math

from mofa_tk.errors import InputError
from mofa_tk.face.code import BLOCKS
from mofa_tk.fitting.pipeline import FIT_REG_WEIGHTS

REG_HELP = ("prior weight of one code block, BLOCK=WEIGHT (repeatable; blocks: rotation, translation, shape, "
            "expression, reflectance, illumination); it replaces that block's default weight "
            "(mofa_tk.fitting.pipeline.FIT_REG_WEIGHTS), e.g. --reg expression=80 for ICT-FaceKit (docs/evaluation.md)")


PHOTOMETRIC_HELP = ("what the photometric stage refines: all (default) or appearance (pose, reflectance and "
                    "illumination; shape and expression stay as the landmarks fitted them: better 3D on real photos, "
                    "docs/evaluation.md)")


ANCHOR_HELP = ("prior weight (in units of the reg term weight) on how far the photometric stage may move shape and "
               "expression from the landmark stage's estimate; default 0; 10 gave better 3D and 2D on real photos "
               "(docs/evaluation.md)")


def parse_reg(values) -> dict | None:
    """['expression=80', ...] -> reg_weights for `mofa_tk.fit` (FIT_REG_WEIGHTS with those blocks replaced),
    or None when no --reg was given. Raises InputError naming the bad entry."""
    if not values:
        return None
    out = dict(FIT_REG_WEIGHTS)
    for item in values:
        name, sep, num = str(item).partition("=")
        name = name.strip()
        if not sep or name not in BLOCKS:
            raise InputError(f"--reg {item!r}: expected BLOCK=WEIGHT with BLOCK one of {', '.join(BLOCKS)}")
        try:
            w = float(num)
        except ValueError:
            raise InputError(f"--reg {item!r}: the weight {num!r} is not a number") from None
        if not (math.isfinite(w) and w >= 0):
            raise InputError(f"--reg {item!r}: the weight must be a finite number >= 0")
        out[name] = w
    return out

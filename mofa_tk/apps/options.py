"""Command-line options shared by `mofa fit` and `mofa eval`."""
from __future__ import annotations

import math

from mofa_tk.errors import InputError
from mofa_tk.face.code import BLOCKS

REG_HELP = ("prior weight of one code block, BLOCK=WEIGHT (repeatable; blocks: rotation, translation, shape, "
            "expression, reflectance, illumination); it replaces that block's default weight for the model "
            "(mofa_tk.fitting.problem.fit_reg_weights: FIT_REG_WEIGHTS and the model's own, e.g. ICT-FaceKit's "
            "expression=80), e.g. --reg shape=0.3 (docs/evaluation.md)")


PHOTOMETRIC_HELP = ("what the photometric stage refines: appearance (default: pose, reflectance and illumination; "
                    "shape and expression stay as the landmarks fitted them: better 3D on real photos) or all "
                    "(every block: better on synthetic faces of the model itself; docs/evaluation.md)")


ANCHOR_HELP = ("prior weight (in units of the reg term weight) on how far the photometric stage may move shape and "
               "expression from the landmark stage's estimate, with --photometric all; default 0 "
               "(docs/evaluation.md)")

DENSE_HELP = ("weight of the dense term (MediaPipe's 478 Face Mesh points on the model's vertices) relative to the "
              "68-point landmark term (default: fit's, 0.3); 0 = the 68 points only")
DEPTH_HELP = ("weight of a depth term on MediaPipe's relative z of the same points, relative to the dense term "
              "(default 0.3, 0 = off; docs/evaluation.md)")


def landmark_term_weights(args) -> dict:
    """--dense-weight / --depth-weight -> the `fit` keyword arguments they set (none when not given). Raises
    InputError naming the option when a weight is negative or NaN."""
    out = {}
    for opt, key in (("--dense-weight", "dense_weight"), ("--depth-weight", "depth_weight")):
        w = getattr(args, key)
        if w is None:
            continue
        if not w >= 0:
            raise InputError(f"{opt}: expected a weight >= 0, got {w}")
        out[key] = w
    return out


def parse_reg(values) -> dict | None:
    """['expression=80', ...] -> reg_weights for `mofa_tk.fit` ({block: weight}: those blocks replace the model's
    prior weights, `fitting.problem.fit_reg_weights`), or None when no --reg was given. Raises InputError naming
    the bad entry."""
    if not values:
        return None
    out = {}
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

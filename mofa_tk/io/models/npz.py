"""mofa_tk's own .npz model files (`FaceModel.save`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import fail, MOFA_NPZ_FORMAT


# ===================================================================================== mofa_tk .npz
_MOFA_KEYS = ("mean_shape", "shape_basis", "shape_std", "expr_basis", "expr_std", "albedo_mean", "albedo_basis",
              "albedo_std", "triangles", "landmarks")


def read_mofa_npz(p: Path) -> dict:
    """Our own .npz (FaceModel.save): arrays already in mofa_tk's units and conventions."""
    with np.load(p, allow_pickle=False) as z:
        fmt = str(z["format"][()])
        if fmt != MOFA_NPZ_FORMAT:
            fail(p, f"unsupported mofa_tk npz format {fmt!r} (expected {MOFA_NPZ_FORMAT!r})")
        missing = [k for k in _MOFA_KEYS if k not in z.files]
        if missing:
            fail(p, f"mofa_tk npz is missing {missing}")
        arrs = {k: np.asarray(z[k]) for k in _MOFA_KEYS}
        name = str(z["name"][()]) if "name" in z.files else p.stem
    for k in ("triangles", "landmarks"):
        if not np.issubdtype(arrs[k].dtype, np.integer):
            fail(p, f"{k} must be integers, got dtype {arrs[k].dtype}")
    arrs["name"] = name
    arrs["meta"] = {"format": "mofa_npz"}
    return arrs

"""ICT-FaceKit: the FaceXModel folder of OBJ meshes and its light .npz."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import ModelFormatError
from ...progress import track_items
from ..meshes import parse_obj
from .common import fail, index_vector, model_parts, numeric, triangle_array, unit_columns


# ===================================================================================== ICT-FaceKit
# Units: the ICT meshes are in centimetres. The neutral mesh's jaw-contour landmarks 0 and 16 lie 14.7 units
# apart and the outer eye corners 8.9 units apart (a face ~147 mm wide, eyes ~89 mm), so we multiply by 10.
# Identity: ICT's randomize_identity() draws the identity weights from N(0, 1) and adds weight * (mesh -
# neutral) (ict_face_model.py, face_model_io.py), so the modes are already scaled by their std: we normalise
# each mode and keep its norm (mm) as the std. Expressions are ARKit-style blendshapes with weights in [0, 1]:
# normalised likewise with std = norm, so coefficient 1 is the full expression.
_ICT_CM_TO_MM = 10.0


#: Prior weights `fit` uses for ICT-FaceKit (`fitting.problem.fit_reg_weights`): its expressions are ARKit-style
#: blendshapes that real faces use sparingly, so a prior std of 0.1 blendshape (weight 80 instead of the PCA
#: models' 0.8). Chosen on synthetic ICT faces (`mofa eval --synthetic 10 --seed 1000`, a split the documented
#: evaluation (seed 0) does not use): face-region RMSE 2.53 -> 1.88 mm (docs/evaluation.md).
ICT_FIT_PRIOR = {"expression": 80.0}


def _ict_parts(p, neutral, tri, id_modes, ex_modes, landmarks, name, meta) -> dict:
    V = neutral.shape[0]
    ib, istd = unit_columns(np.moveaxis(id_modes, 0, -1) * _ICT_CM_TO_MM)
    eb, estd = unit_columns(np.moveaxis(ex_modes, 0, -1) * _ICT_CM_TO_MM)
    meta = dict(meta, fit_prior=dict(ICT_FIT_PRIOR))
    return model_parts(neutral * _ICT_CM_TO_MM, ib.reshape(V, 3, -1), istd, tri, expr_basis=eb.reshape(V, 3, -1),
                  expr_std=estd, landmarks=landmarks, name=name, meta=meta)


def _split_polygons(p, faces: np.ndarray, V: int, what: str) -> np.ndarray:
    """(F, 4) polygons with -1 padding (triangles) -> (T, 3) triangles, quads (a, b, c, d) -> (a, b, c), (a, c, d)."""
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] not in (3, 4) or f.shape[0] == 0:
        fail(p, f"{what} must be (F, 3) or (F, 4) vertex indices, got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        fail(p, f"{what} must be integers, got dtype {f.dtype}")
    f = f.astype(np.int64)
    if f.shape[1] == 3:
        tri = f
    else:
        quad = f[:, 3] >= 0
        if np.any(f[:, 3] < -1):
            fail(p, f"{what}: 4th index must be a vertex index or -1 (triangle)")
        tri = np.concatenate([f[:, :3], f[quad][:, [0, 2, 3]]])
        order = np.concatenate([np.arange(len(f)), np.nonzero(quad)[0]])
        tri = tri[np.argsort(order, kind="stable")]  # keep each polygon's triangles together, in face order
    return triangle_array(p, tri, V, what, base=0)


def read_ict_npz(p: Path) -> dict:
    """ICT-FaceKit light .npz (built from FaceXModel): see the ICT note above for units and std."""
    with np.load(p, allow_pickle=False) as z:
        need = ("neutral_vertices", "faces_quad", "identity_modes", "expression_modes")
        missing = [k for k in need if k not in z.files]
        if missing:
            fail(p, f"ICT-FaceKit npz is missing {missing} (keys: {sorted(z.files)})")
        neutral = numeric(p, z["neutral_vertices"], "neutral_vertices", ndim=2)
        faces = np.asarray(z["faces_quad"])
        idm = numeric(p, z["identity_modes"], "identity_modes", ndim=3)
        exm = numeric(p, z["expression_modes"], "expression_modes", ndim=3)
        lm = np.asarray(z["landmarks_multipie68"]) if "landmarks_multipie68" in z.files else None
        meta = {"format": "ict_npz"}
        for k in ("identity_names", "expression_names"):
            if k in z.files:
                meta[k] = [str(s) for s in z[k]]
    if neutral.shape[1] != 3:
        fail(p, f"neutral_vertices must be (V, 3), got {neutral.shape}")
    V = neutral.shape[0]
    for arr, what in ((idm, "identity_modes"), (exm, "expression_modes")):
        if arr.shape[1:] != (V, 3):
            fail(p, f"{what} must be (K, V={V}, 3), got {arr.shape}")
    tri = _split_polygons(p, faces, V, "faces_quad")
    landmarks = None if lm is None else index_vector(p, lm, V, "landmarks_multipie68", base=0, n=68)
    return _ict_parts(p, neutral, tri, idm, exm, landmarks, "ICT-FaceKit (light npz)", meta)


def read_ict_folder(p: Path) -> dict:
    """ICT-FaceKit FaceXModel folder (generic_neutral_mesh.obj, identityNNN.obj, <expression>.obj,
    vertex_indices.json). Like ICT's face_model_io.py: identity OBJs are read as identity000, identity001, ...
    up to the first missing one; expressions in the order of vertex_indices.json's "expressions" list (the
    ones present; missing ones are listed in meta["missing_expressions"]); modes = mesh - neutral.
    Landmarks: vertex_indices.json "idx_to_landmark_verts" (Multi-PIE 68, 0-based). Units/std: see above."""
    folder = p.parent if p.is_file() else p
    neutral, tri = parse_obj(folder / "generic_neutral_mesh.obj")
    V = neutral.shape[0]
    meta = {"format": "ict_folder"}
    cfg_path = folder / "vertex_indices.json"
    cfg = {}
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"{cfg_path}: cannot parse JSON: {e}") from e
        if not isinstance(cfg, dict):
            fail(cfg_path, "expected a JSON object")
    names = cfg.get("expressions", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        fail(cfg_path, "'expressions' must be a list of names")
    id_files = []
    while (folder / f"identity{len(id_files):03d}.obj").is_file():
        id_files.append(folder / f"identity{len(id_files):03d}.obj")
    ex_files = [(n, folder / f"{n}.obj") for n in names if (folder / f"{n}.obj").is_file()]
    meta["missing_expressions"] = [n for n in names if not (folder / f"{n}.obj").is_file()]
    meta["identity_names"] = [f.stem for f in id_files]
    meta["expression_names"] = [n for n, _ in ex_files]

    files = id_files + [f for _, f in ex_files]
    modes = np.zeros((len(files), V, 3))
    for i, f in enumerate(track_items(files, "Reading ICT-FaceKit OBJs")):
        v, _ = parse_obj(f, want_faces=False)
        if v.shape[0] != V:
            fail(f, f"has {v.shape[0]} vertices, generic_neutral_mesh.obj has {V}")
        modes[i] = v - neutral
    landmarks = None
    for key in ("idx_to_landmark_verts", "landmark_verts", "landmarks"):
        if key in cfg:
            landmarks = index_vector(cfg_path, cfg[key], V, key, base=0, n=68)
            break
    return _ict_parts(p, neutral, tri, modes[:len(id_files)], modes[len(id_files):], landmarks,
                      "ICT-FaceKit (FaceXModel)", meta)

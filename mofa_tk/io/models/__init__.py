"""Read morphable face models from their native files into a validated `FaceModel`.

`load_model(path)` looks at the file's CONTENT (magic bytes, container keys), not only its extension, and
converts every supported format to mofa_tk's conventions: millimetres, coefficients in units of standard
deviations (basis columns of unit norm, the scale in `*_std`), 0-based int32 triangles wound
counter-clockwise seen from the front (+z), albedo in [0, 1], and 68 iBUG landmark vertex indices (-1 where
unknown).

Supported formats (what identifies each; unit and scale decisions are documented at each reader):

==============================  ===========================================================  ===================
format                          recognised by                                                 reader
==============================  ===========================================================  ===================
Basel Face Model 2009           MATLAB v5/v7.3 .mat with shapeMU, shapePC, shapeEV, tl       `_bfm2009`
Basel Face Model 2017 (.h5)     HDF5 (statismo) with shape/model/{mean,pcaBasis,...}          `read_bfm2017`
FLAME 2020 generic_model.pkl    pickle whose dict has v_template, shapedirs, f (no chumpy)    `read_flame`
Deep3DFaceRecon BFM_model_front MATLAB .mat with meanshape, idBase, exBase, tri, keypoints   `_deep3d`
mofa_tk .npz                    zip archive with format == "mofa_tk.FaceModel/1"              `read_mofa_npz`
Surrey Face Model (eos)         cereal binary (uint32 version, Eigen mean 3V x 1, ...)        `read_eos`
ICT-FaceKit FaceXModel folder   directory holding generic_neutral_mesh.obj                    `read_ict_folder`
ICT-FaceKit light .npz          zip archive with neutral_vertices, identity_modes, ...        `read_ict_npz`
==============================  ===========================================================  ===================

Every problem with a file (missing keys, truncation, inconsistent sizes, out-of-range indices, forbidden
pickle classes, unknown format) raises `ModelFormatError` naming the file; a missing path raises
`FileNotFoundError`. h5py (optional extra `mofa_tk[h5]`) is imported only for HDF5-based files.
"""
from __future__ import annotations

import errno
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from ...face.model import FaceModel
from .common import (DEFAULT_ALBEDO, fail, guarded, HDF5_MAGIC, import_h5py, OptionalDependencyError,
                     read_landmark_mapping, ZIP_MAGIC)
from .eos import read_eos
from .flame import read_flame
from .ict import read_ict_folder, read_ict_npz
from .matlab import read_mat_model
from .npz import read_mofa_npz
from .statismo import read_bfm2017

__all__ = ["load_model", "read_landmark_mapping", "OptionalDependencyError", "DEFAULT_ALBEDO"]


# ===================================================================================== public entry point
def load_model(path, *, landmarks=None, expressions=None, flame_shape_components: int = 300) -> FaceModel:
    """Load a morphable face model file (format detected from its content) as a `FaceModel`.

    path: a model file or an ICT-FaceKit FaceXModel folder (see the module docstring for the formats).
    landmarks: None (the model's own iBUG-68 landmarks, or -1 everywhere when it has none), False (all -1),
        a path to an eos-style mapping file (``[landmark_mappings]`` with ``ibug_index = vertex_index``,
        1-based iBUG index, 0-based vertex index), or a sequence of 68 ints (0-based vertex indices, -1 = none).
        For eos .bin models, None also picks up ``ibug_to_sfm.txt`` beside an ``sfm_*.bin`` file.
    expressions: eos .bin models only: path of an eos blendshapes file (``std::vector<Blendshape>``); None
        auto-detects ``expression_blendshapes_<V>.bin`` beside the model (V = vertex count) when the model has
        no expression model of its own; False never loads one.
    flame_shape_components: FLAME only: how many of the shapedirs columns are identity (the rest are
        expression); 300 for FLAME 2020.

    Returns a validated FaceModel (float32 tensors on the CPU; mm; coefficients ~ N(0, I)) with `name`,
    `source` = the path, and format-specific extras in `meta`.
    Raises FileNotFoundError when `path` (or an explicitly given companion file) does not exist,
    ModelFormatError (naming the file) for anything wrong with a file's content, OptionalDependencyError
    (a ModelFormatError and ImportError) when h5py is needed but missing, ValueError/TypeError for bad options.
    """
    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, f"model file not found: {p}", str(p))
    lm_option = _check_landmark_option(landmarks)

    kind = guarded(p, lambda: _sniff(p))
    if expressions is not None and kind != "eos":
        raise ValueError(f"load_model: expressions= only applies to eos cereal (.bin) models, but {p} is "
                         f"{_NAMES[kind]}")
    opts = {}
    if kind == "eos":
        opts = {"expressions": expressions, "want_landmark_file": landmarks is None}
    elif kind == "flame":
        if int(flame_shape_components) < 0:
            raise ValueError(f"load_model: flame_shape_components must be >= 0, got {flame_shape_components}")
        opts = {"n_shape": int(flame_shape_components)}
    parts = guarded(p, lambda: _READERS[kind](p, **opts))

    V = parts["mean_shape"].shape[0]
    if lm_option is False:
        parts["landmarks"] = np.full(68, -1, np.int64)
    elif isinstance(lm_option, Path):
        parts["landmarks"] = read_landmark_mapping(lm_option, n_vertices=V)
        parts["meta"]["landmark_mapping"] = str(lm_option)
    elif lm_option is not None:
        if int(lm_option.max()) >= V:
            raise ValueError(f"load_model: landmarks= index {int(lm_option.max())} is out of range for {p} "
                             f"({V} vertices)")
        parts["landmarks"] = lm_option
    elif parts.get("landmarks") is None:
        parts["landmarks"] = np.full(68, -1, np.int64)
    return FaceModel(source=str(p), **parts)


# ===================================================================================== dispatch
_NAMES = {
    "bfm2009": "a Basel Face Model 2009 .mat", "deep3d": "a Deep3DFaceRecon BFM_model_front .mat",
    "mat": "a MATLAB .mat model", "bfm2017": "a Basel Face Model 2017 .h5", "flame": "a FLAME pickle",
    "mofa_npz": "a mofa_tk .npz", "ict_npz": "an ICT-FaceKit light .npz", "eos": "an eos cereal model",
    "ict_folder": "an ICT-FaceKit FaceXModel folder",
}


def _sniff(p: Path) -> str:
    """Decide the reader for `p` from its content."""
    if p.is_dir():
        if (p / "generic_neutral_mesh.obj").is_file():
            return "ict_folder"
        fail(p, "directory is not an ICT-FaceKit FaceXModel folder (no generic_neutral_mesh.obj in it)")
    if p.name == "generic_neutral_mesh.obj":
        return "ict_folder"
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(4096)
    if size == 0:
        fail(p, "file is empty")
    if head[:4] in ZIP_MAGIC:
        return _sniff_npz(p)
    if head.startswith(b"MATLAB 5.0 MAT-file") or head.startswith(b"MATLAB 7.3 MAT-file"):
        return "mat"  # the .mat reader dispatches on the variable names
    for off in (0, 512, 1024, 2048):
        if head[off:off + 8] == HDF5_MAGIC:
            return _sniff_h5(p)
    if (len(head) >= 2 and head[0] == 0x80 and 1 <= head[1] <= 5) or p.suffix.lower() in (".pkl", ".pickle"):
        return "flame"  # any pickle: the restricted reader refuses what is not FLAME data
    if len(head) >= 12:
        ver, rows, cols = struct.unpack_from("<Iii", head, 0)
        if ver <= 64 and rows > 0 and rows % 3 == 0 and cols == 1:
            return "eos"
        if _looks_like_blendshapes(head):
            fail(p, "this is an eos expression blendshapes file, not a model; load the shape model and pass this "
                     "file as expressions=")
    if p.suffix.lower() == ".bin":
        return "eos"  # the reader reports where it stops making sense
    if p.suffix.lower() == ".obj":
        fail(p, "a single OBJ mesh is not a morphable model (an ICT-FaceKit folder needs generic_neutral_mesh.obj)")
    fail(p, "unknown model format (supported: BFM2009/Deep3DFaceRecon .mat, BFM2017 .h5, FLAME .pkl, eos .bin, "
             "ICT-FaceKit folder or .npz, mofa_tk .npz)")


def _looks_like_blendshapes(head: bytes) -> bool:
    if len(head) < 16:
        return False
    count, nlen = struct.unpack_from("<QQ", head, 0)
    if not (0 < count < 100000 and 0 < nlen < 256 and len(head) >= 16 + nlen + 8):
        return False
    name = head[16:16 + nlen]
    rows, cols = struct.unpack_from("<ii", head, 16 + nlen)
    return all(32 <= c < 127 for c in name) and rows > 0 and rows % 3 == 0 and cols == 1


def _sniff_npz(p: Path) -> str:
    try:
        with zipfile.ZipFile(p) as z:
            names = {n[:-4] if n.endswith(".npy") else n for n in z.namelist()}
    except zipfile.BadZipFile as e:
        fail(p, f"zip/npz archive is damaged or truncated ({e})")
    if "format" in names:
        return "mofa_npz"
    if {"neutral_vertices", "identity_modes"} <= names:
        return "ict_npz"
    fail(p, f"npz archive is neither a mofa_tk model (no 'format' key) nor an ICT-FaceKit light model "
             f"(no neutral_vertices/identity_modes); keys: {sorted(names)}")


def _sniff_h5(p: Path) -> str:
    h5py = import_h5py(p)
    with h5py.File(p, "r") as f:
        if "shape" in f and isinstance(f["shape"], h5py.Group) and "model" in f["shape"]:
            return "bfm2017"
        keys = list(f.keys())
    if any(k in keys for k in ("shapeMU", "meanshape")):
        return "mat"  # MATLAB v7.3 file whose 512-byte text header was stripped
    fail(p, f"HDF5 file is not a statismo/BFM2017 model (no shape/model group); top-level keys: {keys}")


def _check_landmark_option(landmarks):
    """Normalise the landmarks= option: None, False, a Path, or a (68,) int64 array."""
    if landmarks is None or landmarks is False:
        return landmarks
    if isinstance(landmarks, (str, os.PathLike)):
        return Path(os.fspath(landmarks))
    try:
        arr = np.asarray(landmarks)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"load_model: landmarks= must be a path or 68 ints, got {type(landmarks).__name__}") from e
    if arr.shape != (68,) or not (np.issubdtype(arr.dtype, np.integer) or
                                  (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))):
        raise ValueError(f"load_model: landmarks= must be 68 integer vertex indices, got shape {arr.shape} "
                         f"dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if int(arr.min()) < -1:
        raise ValueError(f"load_model: landmarks= indices must be >= -1, got {int(arr.min())}")
    return arr


_READERS = {
    "mat": read_mat_model, "bfm2017": read_bfm2017, "flame": read_flame, "mofa_npz": read_mofa_npz, "eos": read_eos,
    "ict_npz": read_ict_npz, "ict_folder": read_ict_folder,
}

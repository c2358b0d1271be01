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
Basel Face Model 2017 (.h5)     HDF5 (statismo) with shape/model/{mean,pcaBasis,...}          `_bfm2017`
FLAME 2020 generic_model.pkl    pickle whose dict has v_template, shapedirs, f (no chumpy)    `_flame`
Deep3DFaceRecon BFM_model_front MATLAB .mat with meanshape, idBase, exBase, tri, keypoints   `_deep3d`
mofa_tk .npz                    zip archive with format == "mofa_tk.FaceModel/1"              `_mofa_npz`
Surrey Face Model (eos)         cereal binary (uint32 version, Eigen mean 3V x 1, ...)        `_eos`
ICT-FaceKit FaceXModel folder   directory holding generic_neutral_mesh.obj                    `_ict_folder`
ICT-FaceKit light .npz          zip archive with neutral_vertices, identity_modes, ...        `_ict_npz`
==============================  ===========================================================  ===================

Every problem with a file (missing keys, truncation, inconsistent sizes, out-of-range indices, forbidden
pickle classes, unknown format) raises `ModelFormatError` naming the file; a missing path raises
`FileNotFoundError`. h5py (optional extra `mofa_tk[h5]`) is imported only for HDF5-based files.
"""
from __future__ import annotations

import errno
import importlib
import json
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError
from ..face.model import FaceModel

__all__ = ["load_model", "read_landmark_mapping", "OptionalDependencyError", "DEFAULT_ALBEDO"]

#: Constant albedo (linear RGB, all channels) given to models without a colour model (FLAME, SFM, ICT).
DEFAULT_ALBEDO = 0.6

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_MOFA_NPZ_FORMAT = "mofa_tk.FaceModel/1"


class OptionalDependencyError(ModelFormatError, ImportError):
    """A file needs an optional package (h5py) that is not installed."""


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

    kind = _guarded(p, lambda: _sniff(p))
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
    parts = _guarded(p, lambda: _READERS[kind](p, **opts))

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


def read_landmark_mapping(path, n_vertices: int | None = None) -> np.ndarray:
    """Parse an eos-style iBUG-68 -> vertex mapping file into a (68,) int64 array (-1 where unmapped).

    The file is TOML-like: a ``[landmark_mappings]`` section of lines ``ibug = vertex`` (keys and values may
    be quoted, ``#`` starts a comment); ibug is the 1-based iBUG-68 point number, vertex a 0-based vertex
    index (eos indexes vertices from 0). Other sections (e.g. ``[contour_landmarks]``) are ignored.
    n_vertices: when given, every vertex index must be < n_vertices.
    Raises FileNotFoundError when missing, ModelFormatError (naming the file and line) when malformed.
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(errno.ENOENT, f"landmark mapping file not found: {p}", str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{p}: cannot read landmark mapping: {e}") from e
    out = np.full(68, -1, np.int64)
    section, found, n = None, False, 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"\[\s*([^\]]+?)\s*\]", line)
        if m:
            section = m.group(1).strip().strip('"')
            found = found or section == "landmark_mappings"
            continue
        if section != "landmark_mappings":
            continue
        m = re.fullmatch(r'"?\s*([^"=\s]+)\s*"?\s*=\s*"?\s*([^"\s]+)\s*"?', line)
        if not m:
            raise ModelFormatError(f"{p}: line {lineno}: expected 'ibug_index = vertex_index', got {raw.strip()!r}")
        key, val = m.group(1), m.group(2)
        if not re.fullmatch(r"\d+", key) or not 1 <= int(key) <= 68:
            raise ModelFormatError(f"{p}: line {lineno}: {key!r} is not an iBUG-68 point number (1..68)")
        if not re.fullmatch(r"\d+", val):
            raise ModelFormatError(f"{p}: line {lineno}: vertex index {val!r} is not a non-negative integer")
        k, v = int(key) - 1, int(val)
        if out[k] >= 0:
            raise ModelFormatError(f"{p}: line {lineno}: iBUG point {key} is mapped twice")
        if n_vertices is not None and v >= n_vertices:
            raise ModelFormatError(f"{p}: line {lineno}: vertex index {v} is out of range for a model with "
                                   f"{n_vertices} vertices")
        out[k] = v
        n += 1
    if not found:
        raise ModelFormatError(f"{p}: no [landmark_mappings] section")
    if n == 0:
        raise ModelFormatError(f"{p}: [landmark_mappings] section is empty")
    return out


# ===================================================================================== dispatch
_NAMES = {
    "bfm2009": "a Basel Face Model 2009 .mat", "deep3d": "a Deep3DFaceRecon BFM_model_front .mat",
    "mat": "a MATLAB .mat model", "bfm2017": "a Basel Face Model 2017 .h5", "flame": "a FLAME pickle",
    "mofa_npz": "a mofa_tk .npz", "ict_npz": "an ICT-FaceKit light .npz", "eos": "an eos cereal model",
    "ict_folder": "an ICT-FaceKit FaceXModel folder",
}


def _guarded(path: Path, fn):
    """Run fn(); re-raise anything but our own/FileNotFound/memory errors as ModelFormatError naming path."""
    try:
        return fn()
    except (ModelFormatError, FileNotFoundError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - every failure of a reader is a problem with that file
        raise ModelFormatError(f"{path}: cannot read model: {type(e).__name__}: {e}") from e


def _fail(path, msg):
    raise ModelFormatError(f"{path}: {msg}")


def _sniff(p: Path) -> str:
    """Decide the reader for `p` from its content."""
    if p.is_dir():
        if (p / "generic_neutral_mesh.obj").is_file():
            return "ict_folder"
        _fail(p, "directory is not an ICT-FaceKit FaceXModel folder (no generic_neutral_mesh.obj in it)")
    if p.name == "generic_neutral_mesh.obj":
        return "ict_folder"
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(4096)
    if size == 0:
        _fail(p, "file is empty")
    if head[:4] in _ZIP_MAGIC:
        return _sniff_npz(p)
    if head.startswith(b"MATLAB 5.0 MAT-file") or head.startswith(b"MATLAB 7.3 MAT-file"):
        return "mat"  # the .mat reader dispatches on the variable names
    for off in (0, 512, 1024, 2048):
        if head[off:off + 8] == _HDF5_MAGIC:
            return _sniff_h5(p)
    if (len(head) >= 2 and head[0] == 0x80 and 1 <= head[1] <= 5) or p.suffix.lower() in (".pkl", ".pickle"):
        return "flame"  # any pickle: the restricted reader refuses what is not FLAME data
    if len(head) >= 12:
        ver, rows, cols = struct.unpack_from("<Iii", head, 0)
        if ver <= 64 and rows > 0 and rows % 3 == 0 and cols == 1:
            return "eos"
        if _looks_like_blendshapes(head):
            _fail(p, "this is an eos expression blendshapes file, not a model; load the shape model and pass this "
                     "file as expressions=")
    if p.suffix.lower() == ".bin":
        return "eos"  # the reader reports where it stops making sense
    if p.suffix.lower() == ".obj":
        _fail(p, "a single OBJ mesh is not a morphable model (an ICT-FaceKit folder needs generic_neutral_mesh.obj)")
    _fail(p, "unknown model format (supported: BFM2009/Deep3DFaceRecon .mat, BFM2017 .h5, FLAME .pkl, eos .bin, "
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
        _fail(p, f"zip/npz archive is damaged or truncated ({e})")
    if "format" in names:
        return "mofa_npz"
    if {"neutral_vertices", "identity_modes"} <= names:
        return "ict_npz"
    _fail(p, f"npz archive is neither a mofa_tk model (no 'format' key) nor an ICT-FaceKit light model "
             f"(no neutral_vertices/identity_modes); keys: {sorted(names)}")


def _sniff_h5(p: Path) -> str:
    h5py = _import_h5py(p)
    with h5py.File(p, "r") as f:
        if "shape" in f and isinstance(f["shape"], h5py.Group) and "model" in f["shape"]:
            return "bfm2017"
        keys = list(f.keys())
    if any(k in keys for k in ("shapeMU", "meanshape")):
        return "mat"  # MATLAB v7.3 file whose 512-byte text header was stripped
    _fail(p, f"HDF5 file is not a statismo/BFM2017 model (no shape/model group); top-level keys: {keys}")


def _import_h5py(p):
    try:
        return importlib.import_module("h5py")
    except ImportError as e:
        raise OptionalDependencyError(f"{p}: reading HDF5-based model files needs h5py: pip install h5py "
                                      f"(or pip install 'mofa_tk[h5]')") from e


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


# ===================================================================================== shared helpers
def _parts(mean, shape_basis, shape_std, triangles, *, name, expr_basis=None, expr_std=None, albedo_mean=None,
           albedo_basis=None, albedo_std=None, landmarks=None, meta=None) -> dict:
    """Assemble FaceModel keyword arguments (numpy), filling empty bases and the default albedo."""
    V = mean.shape[0]
    empty = np.zeros((V, 3, 0), np.float32)
    return dict(
        mean_shape=np.asarray(mean, np.float32),
        shape_basis=np.asarray(shape_basis, np.float32), shape_std=np.asarray(shape_std, np.float32),
        expr_basis=empty if expr_basis is None else np.asarray(expr_basis, np.float32),
        expr_std=np.zeros(0, np.float32) if expr_std is None else np.asarray(expr_std, np.float32),
        albedo_mean=np.full((V, 3), DEFAULT_ALBEDO, np.float32) if albedo_mean is None
        else np.asarray(albedo_mean, np.float32),
        albedo_basis=empty if albedo_basis is None else np.asarray(albedo_basis, np.float32),
        albedo_std=np.zeros(0, np.float32) if albedo_std is None else np.asarray(albedo_std, np.float32),
        triangles=np.asarray(triangles, np.int32), landmarks=landmarks, name=name, meta=meta or {},
    )


def _unit_columns(B: np.ndarray):
    """Split a (3V, K) or (V, 3, K) basis into unit-norm columns and their norms (zero columns stay zero)."""
    B = np.asarray(B, np.float64)
    norms = np.linalg.norm(B.reshape(-1, B.shape[-1]), axis=0)
    safe = np.where(norms > 0, norms, 1.0)
    return np.divide(B, safe, out=np.empty(B.shape, np.float32), casting="same_kind"), norms


def _numeric(path, arr, what, ndim=None):
    """`arr` as a finite float64 array (raising ModelFormatError naming `what`)."""
    a = np.asarray(arr)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        _fail(path, f"{what} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if ndim is not None and a.ndim != ndim:
        _fail(path, f"{what} must have {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        _fail(path, f"{what} contains NaN or Inf")
    return a


def _vec3(path, arr, what) -> np.ndarray:
    """A (3V,) / (3V, 1) / (1, 3V) interleaved xyz array as (V, 3) float64."""
    a = _numeric(path, arr, what)
    if a.ndim > 2 or (a.ndim == 2 and 1 not in a.shape):
        _fail(path, f"{what} must be a vector of length 3V, got shape {a.shape}")
    a = a.reshape(-1)
    if a.size == 0 or a.size % 3:
        _fail(path, f"{what} must have 3V entries (xyz per vertex), got {a.size}")
    return a.reshape(-1, 3)


def _basis(path, arr, V, what) -> np.ndarray:
    """A (3V, K) basis as float64, checking its row count."""
    a = _numeric(path, arr, what)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != 3 * V:
        _fail(path, f"{what} must be (3V={3 * V}, K), got shape {a.shape}")
    return a


def _std_vector(path, arr, K, what) -> np.ndarray:
    a = _numeric(path, arr, what).reshape(-1)
    if a.size != K:
        _fail(path, f"{what} must have K={K} entries (one per basis column), got {a.size}")
    return a


def _triangles(path, arr, V, what, base) -> np.ndarray:
    """(T, 3) integer triangles with index base `base` -> 0-based int64, range-checked against V."""
    a = np.asarray(arr)
    if a.ndim != 2 or a.shape[1] != 3 or a.shape[0] == 0:
        _fail(path, f"{what} must be (T, 3) vertex indices, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        f = _numeric(path, a, what)
        if not np.all(f == np.round(f)):
            _fail(path, f"{what} contains non-integer vertex indices")
        a = f
    a = a.astype(np.int64) - base
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= V:
        _fail(path, f"{what} indices ({'1' if base else '0'}-based) must lie in [{base}, {V - 1 + base}] for "
                    f"{V} vertices, got [{lo + base}, {hi + base}]")
    return a


def _index_vector(path, arr, V, what, base, n=None) -> np.ndarray:
    a = _numeric(path, arr, what).reshape(-1)
    if n is not None and a.size != n:
        _fail(path, f"{what} must have {n} entries, got {a.size}")
    if not np.all(a == np.round(a)):
        _fail(path, f"{what} contains non-integer indices")
    a = a.astype(np.int64) - base
    if a.size and (int(a.min()) < 0 or int(a.max()) >= V):
        _fail(path, f"{what} ({'1' if base else '0'}-based) must lie in [{base}, {V - 1 + base}], got "
                    f"[{int(a.min()) + base}, {int(a.max()) + base}]")
    return a


# ===================================================================================== MATLAB (.mat)
def _read_mat(p: Path) -> dict:
    """Variables of a MATLAB v5 (scipy) or v7.3 (HDF5, h5py) file as numpy arrays in MATLAB's shape."""
    with open(p, "rb") as f:
        head = f.read(128)
    if head.startswith(b"MATLAB 5.0 MAT-file"):
        import scipy.io

        return {k: v for k, v in scipy.io.loadmat(str(p)).items() if not k.startswith("__")}
    h5py = _import_h5py(p)
    out = {}
    with h5py.File(p, "r") as f:
        for k, v in f.items():
            if isinstance(v, h5py.Dataset) and not k.startswith("#"):
                # HDF5 stores MATLAB's column-major arrays with the axes reversed
                out[k] = np.asarray(v[()]).T
    return out


def _read_mat_model(p: Path) -> dict:
    mat = _read_mat(p)
    if {"shapeMU", "shapePC", "shapeEV"} <= mat.keys():
        return _bfm2009(p, mat)
    if {"meanshape", "idBase"} <= mat.keys():
        return _deep3d(p, mat)
    _fail(p, f"MATLAB file is neither a BFM2009 01_MorphableModel.mat (shapeMU/shapePC/shapeEV/tl) nor a "
             f"Deep3DFaceRecon BFM_model_front.mat (meanshape/idBase/exBase/tri); variables: {sorted(mat)}")


def _need(p, mat, keys, what):
    missing = [k for k in keys if k not in mat]
    if missing:
        _fail(p, f"{what} is missing variable(s) {missing}; it has {sorted(mat)}")


def _bfm2009(p: Path, mat: dict) -> dict:
    """Basel Face Model 2009 (PublicMM1/01_MorphableModel.mat).

    Units and scales (sources: the BFM2009 readme; eos share/scripts/convert-bfm2009-to-eos.py, which notes
    "shapeEV ... These are standard deviations, not eigenvalues!" and that the PC columns are orthonormal;
    the BFM site defines face = shapeMU + shapePC * (alpha .* shapeEV)):
      shapeMU (3V, 1) micrometres -> /1000 mm; shapePC (3V, K) orthonormal columns; shapeEV (K, 1) standard
      deviations in micrometres -> /1000 mm (times the column norm, which is 1 up to rounding);
      texMU/texPC/texEV the same with colours in 0..255 -> /255; tl (T, 3) 1-based.
    Winding: BFM2009's tl is clockwise seen from the front (eos swaps two indices per triangle; we checked the
    3DDFA copy of the same list against the mean shape), so the second and third index are swapped.
    No expression model (K_exp = 0) and no landmarks (pass landmarks=".../ibug_to_bfm2009.txt").
    """
    _need(p, mat, ("shapeMU", "shapePC", "shapeEV", "tl"), "BFM2009 model")
    mean = _vec3(p, mat["shapeMU"], "shapeMU") / 1000.0
    V = mean.shape[0]
    pc = _basis(p, mat["shapePC"], V, "shapePC")
    ev = _std_vector(p, mat["shapeEV"], pc.shape[1], "shapeEV")
    basis, norms = _unit_columns(pc)
    shape_std = ev / 1000.0 * norms
    tri = _triangles(p, mat["tl"], V, "tl", base=1)[:, [0, 2, 1]]
    albedo = {}
    if "texMU" in mat:
        _need(p, mat, ("texPC", "texEV"), "BFM2009 colour model")
        tmu = _vec3(p, mat["texMU"], "texMU")
        if tmu.shape[0] != V:
            _fail(p, f"texMU has {tmu.shape[0]} vertices but shapeMU has {V}")
        tpc = _basis(p, mat["texPC"], V, "texPC")
        tev = _std_vector(p, mat["texEV"], tpc.shape[1], "texEV")
        tb, tn = _unit_columns(tpc)
        albedo = dict(albedo_mean=tmu / 255.0, albedo_basis=tb.reshape(V, 3, -1), albedo_std=tev / 255.0 * tn)
    return _parts(mean, basis.reshape(V, 3, -1), shape_std, tri, name="Basel Face Model 2009",
                  meta={"format": "bfm2009"}, **albedo)


def _deep3d(p: Path, mat: dict) -> dict:
    """Deep3DFaceRecon's BFM_model_front.mat (35709-vertex cropped BFM2009 + Guo et al.'s expression basis).

    How the file is made (sicxu/Deep3DFaceRecon_pytorch util/load_mats.py, transferBFM09):
      idBase = shapePC * shapeEV / 1e5, exBase = expPC * expEV / 1e5 ("unify the scale to decimeter"),
      meanshape = shapeMU / 1e5, texBase = texPC * texEV, meantex = texMU (0..255);
    BFM2009 is in micrometres, so /1e5 gives decimetres: we multiply geometry by 100 to get mm. The bases are
    already scaled by the standard deviations (coefficients ~ N(0, 1)), so each column is split into a unit
    direction and its norm (= std in mm, or in [0, 1] albedo units after /255).
    tri and keypoints are 1-based (models/bfm.py subtracts 1); the triangle winding is already
    counter-clockwise seen from the front (checked against the 3DDFA mean shape), so it is kept.
    Not recentred (Deep3DFaceRecon subtracts the vertex mean at load time when recenter=True).
    meta keeps point_buf (0-based triangle ids per vertex, -1 = padding), front_mask (frontmask2_idx),
    skin_mask and tri_mask2.
    """
    _need(p, mat, ("meanshape", "idBase", "exBase", "tri"), "Deep3DFaceRecon model")
    mean = _vec3(p, mat["meanshape"], "meanshape") * 100.0
    V = mean.shape[0]
    idb, idn = _unit_columns(_basis(p, mat["idBase"], V, "idBase"))
    exb, exn = _unit_columns(_basis(p, mat["exBase"], V, "exBase"))
    tri = _triangles(p, mat["tri"], V, "tri", base=1)
    landmarks = None
    if "keypoints" in mat:
        landmarks = _index_vector(p, mat["keypoints"], V, "keypoints", base=1, n=68)
    albedo = {}
    if "meantex" in mat:
        _need(p, mat, ("texBase",), "Deep3DFaceRecon colour model")
        tmu = _vec3(p, mat["meantex"], "meantex")
        if tmu.shape[0] != V:
            _fail(p, f"meantex has {tmu.shape[0]} vertices but meanshape has {V}")
        tb, tn = _unit_columns(_basis(p, mat["texBase"], V, "texBase"))
        albedo = dict(albedo_mean=tmu / 255.0, albedo_basis=tb.reshape(V, 3, -1), albedo_std=tn / 255.0)
    meta = {"format": "deep3dfacerecon"}
    if "point_buf" in mat:
        # 1-based triangle ids; T + 1 pads (Deep3DFaceRecon appends a zero normal at 0-based index T)
        pb = _numeric(p, mat["point_buf"], "point_buf", ndim=2).astype(np.int64) - 1
        T = tri.shape[0]
        if pb.shape[0] != V or pb.size == 0 or int(pb.min()) < 0 or int(pb.max()) > T:
            rng = f"[{int(pb.min()) + 1}, {int(pb.max()) + 1}]" if pb.size else "empty"
            _fail(p, f"point_buf must be (V={V}, k) 1-based triangle ids in [1, {T + 1}] ({T + 1} = none), got "
                     f"shape {pb.shape}, range {rng}")
        meta["point_buf"] = np.where(pb == T, -1, pb)
    if "frontmask2_idx" in mat:
        meta["front_mask"] = _index_vector(p, mat["frontmask2_idx"], V, "frontmask2_idx", base=1)
    if "skinmask" in mat:
        sm = _numeric(p, mat["skinmask"], "skinmask").reshape(-1)
        if sm.size != V:
            _fail(p, f"skinmask must have V={V} entries, got {sm.size}")
        meta["skin_mask"] = sm > 0.5
    if "tri_mask2" in mat:
        meta["tri_mask2"] = _triangles(p, mat["tri_mask2"], V, "tri_mask2", base=1)
    return _parts(mean, idb.reshape(V, 3, -1), idn * 100.0, tri, expr_basis=exb.reshape(V, 3, -1),
                  expr_std=exn * 100.0, landmarks=landmarks, name="Deep3DFaceRecon BFM (front)", meta=meta, **albedo)


# ===================================================================================== BFM2017 (statismo .h5)
def _bfm2017(p: Path) -> dict:
    """Basel Face Model 2017 (model2017-1_bfm_nomouth.h5 / face12_nomouth.h5; statismo HDF5 layout).

    Sources: eos share/scripts/convert-bfm2017-to-eos.py ("Their basis is unit norm ... orthogonal"; it passes
    pcaVariance to eos as eigenvalues = variances, and uses representer/cells transposed, unswapped, 0-based);
    statismo/scalismo define instance = mean + pcaBasis * diag(sqrt(pcaVariance)) * alpha. Units: the
    statismo-format Basel models are in millimetres with colours in [0, 1] (a public C++ loader of the statismo
    version of BFM2009, model2009-publicmm1-bfm.h5, multiplies the h5 mean by 1000 and the colour by 255 to
    reproduce the micrometre / 0..255 values of 01_MorphableModel.mat). No BFM2017 file was available here to
    measure, so this rests on that evidence; the file's values are used unscaled.
    So: geometry as is (mm), std = sqrt(pcaVariance) (times the column norm; if a file's columns are instead
    pre-scaled, i.e. their norms equal sqrt(pcaVariance), the norms are used), colour as is ([0, 1]),
    expression/model/mean is added to the mean shape (eos and scalismo-faces add the expression model's mean).
    cells (3, T) are 0-based; their winding is checked against the mean shape (outward = counter-clockwise
    from the front) and flipped if inward, since no BFM2017 file was available here to confirm it.
    """
    h5py = _import_h5py(p)
    with h5py.File(p, "r") as f:
        def ds(name, required=True):
            if name not in f or not isinstance(f[name], h5py.Dataset):
                if required:
                    _fail(p, f"BFM2017/statismo file has no dataset {name!r}")
                return None
            return np.asarray(f[name][()])

        mean = _vec3(p, ds("shape/model/mean"), "shape/model/mean")
        V = mean.shape[0]
        basis, std = _statismo_pca(p, ds("shape/model/pcaBasis"), ds("shape/model/pcaVariance"), V, "shape")
        cells = ds("shape/representer/cells")
        cells = np.asarray(cells)
        if cells.ndim == 2 and cells.shape[0] == 3 and cells.shape[1] != 3:
            cells = cells.T
        tri = _triangles(p, cells, V, "shape/representer/cells", base=0)
        expr = {}
        if "expression" in f:
            emean = _vec3(p, ds("expression/model/mean"), "expression/model/mean")
            if emean.shape[0] != V:
                _fail(p, f"expression/model/mean has {emean.shape[0]} vertices, shape model has {V}")
            eb, es = _statismo_pca(p, ds("expression/model/pcaBasis"), ds("expression/model/pcaVariance"), V,
                                   "expression")
            mean = mean + emean
            expr = dict(expr_basis=eb, expr_std=es)
        alb = {}
        if "color" in f:
            cmean = _vec3(p, ds("color/model/mean"), "color/model/mean")
            if cmean.shape[0] != V:
                _fail(p, f"color/model/mean has {cmean.shape[0]} vertices, shape model has {V}")
            cb, cs = _statismo_pca(p, ds("color/model/pcaBasis"), ds("color/model/pcaVariance"), V, "color")
            alb = dict(albedo_mean=cmean, albedo_basis=cb, albedo_std=cs)
    meta = {"format": "bfm2017"}
    if _outward_flux(mean, tri) < 0:
        tri = tri[:, [0, 2, 1]]
        meta["winding_flipped"] = True
    return _parts(mean, basis, std, tri, name="Basel Face Model 2017", meta=meta, **expr, **alb)


def _statismo_pca(p, basis, var, V, what):
    B = _basis(p, basis, V, f"{what}/model/pcaBasis")
    var = _std_vector(p, var, B.shape[1], f"{what}/model/pcaVariance")
    if np.any(var < 0):
        _fail(p, f"{what}/model/pcaVariance has negative variances")
    U, norms = _unit_columns(B)
    sd = np.sqrt(var)
    ok = norms > 0
    if np.all(np.abs(norms[ok] - 1.0) < 0.05):
        std = sd * norms
    elif np.allclose(norms[ok], sd[ok], rtol=0.05):
        std = norms  # columns already scaled by sqrt(variance)
    else:
        _fail(p, f"{what}/model/pcaBasis columns are neither unit-norm nor scaled by sqrt(pcaVariance) "
                 f"(norms {norms[:3]}..., sqrt(variance) {sd[:3]}...)")
    return U.reshape(V, 3, -1), std


def _outward_flux(verts: np.ndarray, tri: np.ndarray) -> float:
    """Sum over triangles of (area normal) . (centroid - mesh centre): > 0 when triangles face outwards."""
    v = np.asarray(verts, np.float64)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    n = np.cross(b - a, c - a)
    return float(np.sum(n * ((a + b + c) / 3.0 - v.mean(0))))


# ===================================================================================== FLAME (pickle, no chumpy)
class _ChumpyStandIn:
    """Stand-in for a pickled chumpy object: keeps the state dict and evaluates the array it represents.

    chumpy objects pickle through object.__reduce_ex__ (class + __getstate__ = a copy of __dict__ without
    _parents/_cache; mattloper/chumpy ch.py). A plain Ch keeps its value under 'x'; reordering classes keep
    their input under 'a' plus their terms (newshape, axes, idxs, ...), Concatenate its inputs under the names
    listed in 'dterms' and 'axis'.
    """
    _chumpy_class = "chumpy.ch.Ch"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj._state = {}
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self._state = state if isinstance(state, dict) else {"__state__": state}

    def value(self, depth: int = 0) -> np.ndarray:
        if depth > 64:
            raise ModelFormatError(f"chumpy object graph nested more than 64 levels ({self._chumpy_class})")
        s = self._state
        name = self._chumpy_class.rsplit(".", 1)[-1]

        def v(key):
            if key not in s:
                raise ModelFormatError(f"pickled chumpy {self._chumpy_class} has no {key!r} in its state")
            return _array_of(s[key], depth + 1)

        if name == "Ch":
            return v("x")
        if name == "AtleastNd":
            return {1: np.atleast_1d, 2: np.atleast_2d, 3: np.atleast_3d}[int(s.get("ndims", 1))](v("x"))
        if name == "Reshape":
            return v("a").reshape(s["newshape"])
        if name == "transpose":
            return np.transpose(v("a"), s.get("axes"))
        if name == "Select":
            r = v("a").ravel()[np.asarray(s["idxs"]).ravel()]
            return r.reshape(s["preferred_shape"]) if "preferred_shape" in s else r
        if name == "Tile":
            return np.tile(v("a"), s["reps"])
        if name == "Repeat":
            return np.repeat(v("a"), s["repeats"], s.get("axis"))
        if name == "Roll":
            return np.roll(v("a"), s["shift"], s.get("axis"))
        if name == "Rot90":
            return np.rot90(v("a"), s.get("k", 1))
        if name == "Diag":
            return np.diag(v("a"), s.get("k", 0))
        if name == "DiagFlat":
            return np.diagflat(v("a"), s.get("k", 0))
        if name == "swapaxes":
            return np.swapaxes(v("a"), s["axis1"], s["axis2"])
        if name == "rollaxis":
            return np.rollaxis(v("a"), s["axis"], s.get("start", 0))
        if name == "Concatenate":
            return np.concatenate([v(t) for t in s["dterms"]], axis=s.get("axis", 0))
        if name in ("add", "subtract", "multiply", "divide"):
            return getattr(np, name)(v("a"), v("b"))
        if name == "negative":
            return -v("a")
        if "x" in s:
            return v("x")
        raise ModelFormatError(f"cannot evaluate pickled chumpy class {self._chumpy_class} without chumpy")


class _SparseStandIn:
    """Stand-in for a pickled scipy.sparse matrix: keeps its state (data/indices/indptr/_shape) without scipy."""
    _sparse_class = "scipy.sparse.csc_matrix"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj._state = {}
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self._state = state if isinstance(state, dict) else {"__state__": state}


_STANDINS: dict = {}


def _standin(base, full_name):
    cls = _STANDINS.get(full_name)
    if cls is None:
        attr = "_chumpy_class" if base is _ChumpyStandIn else "_sparse_class"
        cls = type(full_name.rsplit(".", 1)[-1], (base,), {attr: full_name, "__module__": __name__})
        _STANDINS[full_name] = cls
    return cls


def _safe_reconstructor(cls, base, state):
    """copyreg._reconstructor restricted to base == object (how Python 2 pickles plain objects)."""
    if base is not object:
        raise ModelFormatError(f"pickle asks to rebuild {getattr(cls, '__name__', cls)} from base {base!r}; "
                               f"only plain objects are allowed")
    obj = cls.__new__(cls)
    if state is not None:
        raise ModelFormatError("pickle passes a constructor state to copyreg._reconstructor; refused")
    return obj


def _numpy_attr(modules, name):
    for m in modules:
        try:
            return getattr(importlib.import_module(m), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(name)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays/dtypes, chumpy and scipy.sparse stand-ins, and a few builtins."""

    _BUILTINS = {"set": set, "frozenset": frozenset, "object": object, "slice": slice, "complex": complex,
                 "bytearray": bytearray, "list": list, "dict": dict, "tuple": tuple}
    _NUMPY = {
        "_reconstruct": ("numpy._core.multiarray", "numpy.core.multiarray"),
        "scalar": ("numpy._core.multiarray", "numpy.core.multiarray"),
        "_frombuffer": ("numpy._core.numeric", "numpy.core.numeric"),
    }
    _SPARSE = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}

    def __init__(self, file, path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module, name):
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        full = f"{module}.{name}"
        if module == "builtins" and name in self._BUILTINS:
            return self._BUILTINS[name]
        if full == "copyreg._reconstructor":
            return _safe_reconstructor
        if full == "_codecs.encode":  # how protocol-2 pickles written by Python 3 store bytes
            import codecs

            return codecs.encode
        if module.split(".")[0] == "numpy":
            if name in ("ndarray", "dtype") and module == "numpy":
                return getattr(np, name)
            if name in self._NUMPY and module.rsplit(".", 1)[-1] in ("multiarray", "numeric"):
                return _numpy_attr(self._NUMPY[name], name)
            if module == "numpy.dtypes" and name.endswith("DType"):
                return getattr(importlib.import_module("numpy.dtypes"), name)
        if module == "chumpy" or module.startswith("chumpy."):
            return _standin(_ChumpyStandIn, full)
        if module.startswith("scipy.sparse") and name in self._SPARSE:
            return _standin(_SparseStandIn, full)
        raise ModelFormatError(f"{self._path}: pickle references forbidden class {full!r}; only numpy, chumpy "
                               f"and scipy.sparse data are allowed")


def _array_of(obj, depth=0) -> np.ndarray:
    if isinstance(obj, _ChumpyStandIn):
        return np.asarray(obj.value(depth))
    if isinstance(obj, _SparseStandIn):
        raise ModelFormatError(f"expected a dense array, got a sparse matrix ({obj._sparse_class})")
    return np.asarray(obj)


def _flame(p: Path, n_shape: int = 300) -> dict:
    """FLAME 2020 generic_model.pkl (also male/female_model.pkl), read without chumpy.

    The pickle (Python 2, latin1) holds a dict with v_template (5023, 3) in metres, shapedirs (5023, 3, 400)
    chumpy: the first `n_shape` = 300 columns identity, the rest (100) expression, f (9976, 3) 0-based
    counter-clockwise, plus pose data we do not use. FLAME's shapedirs already carry the standard deviations
    (PCA directions times std; TF_FLAME's fitting code regularises betas with a plain sum of squares, i.e.
    treats them as ~ N(0, 1)), so each column is normalised and its norm (in mm) becomes the std.
    Metres -> mm (x 1000). No albedo model (constant DEFAULT_ALBEDO) and no
    vertex landmarks (FLAME's are barycentric embeddings): landmarks are -1 unless landmarks= is given.
    Classes outside numpy / chumpy / scipy.sparse are refused (ModelFormatError naming the class).
    """
    with open(p, "rb") as f:
        data = _RestrictedUnpickler(f, p).load()
    if not isinstance(data, dict):
        _fail(p, f"FLAME pickle must hold a dict, got {type(data).__name__}")
    missing = [k for k in ("v_template", "shapedirs", "f") if k not in data]
    if missing:
        _fail(p, f"FLAME pickle has no {missing} (keys: {sorted(map(str, data))})")
    v = _numeric(p, _array_of(data["v_template"]), "v_template", ndim=2)
    if v.shape[1] != 3:
        _fail(p, f"v_template must be (V, 3), got {v.shape}")
    V = v.shape[0]
    sd = _numeric(p, _array_of(data["shapedirs"]), "shapedirs", ndim=3)
    if sd.shape[:2] != (V, 3):
        _fail(p, f"shapedirs must be (V={V}, 3, K), got {sd.shape}")
    if sd.shape[2] < n_shape:
        _fail(p, f"shapedirs has {sd.shape[2]} components, fewer than flame_shape_components={n_shape}")
    tri = _triangles(p, _array_of(data["f"]), V, "f", base=0)
    sb, sn = _unit_columns(sd[:, :, :n_shape] * 1000.0)
    eb, en = _unit_columns(sd[:, :, n_shape:] * 1000.0)
    return _parts(v * 1000.0, sb, sn, tri, expr_basis=eb, expr_std=en, name="FLAME",
                  meta={"format": "flame", "n_shape": n_shape, "n_expression": sd.shape[2] - n_shape})


# ===================================================================================== mofa_tk .npz
_MOFA_KEYS = ("mean_shape", "shape_basis", "shape_std", "expr_basis", "expr_std", "albedo_mean", "albedo_basis",
              "albedo_std", "triangles", "landmarks")


def _mofa_npz(p: Path) -> dict:
    """Our own .npz (FaceModel.save): arrays already in mofa_tk's units and conventions."""
    with np.load(p, allow_pickle=False) as z:
        fmt = str(z["format"][()])
        if fmt != _MOFA_NPZ_FORMAT:
            _fail(p, f"unsupported mofa_tk npz format {fmt!r} (expected {_MOFA_NPZ_FORMAT!r})")
        missing = [k for k in _MOFA_KEYS if k not in z.files]
        if missing:
            _fail(p, f"mofa_tk npz is missing {missing}")
        arrs = {k: np.asarray(z[k]) for k in _MOFA_KEYS}
        name = str(z["name"][()]) if "name" in z.files else p.stem
    for k in ("triangles", "landmarks"):
        if not np.issubdtype(arrs[k].dtype, np.integer):
            _fail(p, f"{k} must be integers, got dtype {arrs[k].dtype}")
    arrs["name"] = name
    arrs["meta"] = {"format": "mofa_npz"}
    return arrs


# ===================================================================================== eos cereal binary
class _Cereal:
    """Little-endian reader for cereal's binary archive that checks every read against the bytes left."""

    def __init__(self, path: Path):
        self.path = path
        self.buf = path.read_bytes()
        self.off = 0

    def need(self, n: int, what: str):
        left = len(self.buf) - self.off
        if n < 0 or n > left:
            _fail(self.path, f"truncated or corrupt at byte {self.off} while reading {what}: needs {n} bytes, "
                             f"{left} left")

    def scalar(self, fmt: str, what: str):
        size = struct.calcsize(fmt)
        self.need(size, what)
        (val,) = struct.unpack_from(fmt, self.buf, self.off)
        self.off += size
        return val

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        self.need(count * item, what)
        a = np.frombuffer(self.buf, dtype, count, self.off).copy()
        self.off += count * item
        return a

    def size(self, what: str, item_bytes: int) -> int:
        n = self.scalar("<Q", f"{what} (count)")
        self.need(n * item_bytes, f"{what} ({n} items)")  # rejects absurd counts before allocating
        return n

    def eigen(self, what: str, dtype: str = "<f4") -> np.ndarray:
        rows = self.scalar("<i", f"{what} (rows)")
        cols = self.scalar("<i", f"{what} (cols)")
        if rows < 0 or cols < 0:
            _fail(self.path, f"corrupt at byte {self.off - 8}: {what} has negative size {rows} x {cols}")
        data = self.array(dtype, rows * cols, f"{what} ({rows} x {cols})")
        return data.reshape(cols, rows).T  # Eigen stores column-major

    def string(self, what: str) -> str:
        n = self.size(what, 1)
        return self.array("u1", n, what).tobytes().decode("utf-8", errors="replace")

    def boolean(self, what: str) -> bool:
        b = self.scalar("<B", what)
        if b > 1:
            _fail(self.path, f"corrupt at byte {self.off - 1}: {what} should be a bool (0/1), got {b}")
        return bool(b)

    def triangles(self, what: str) -> np.ndarray:
        n = self.size(what, 12)
        return self.array("<i4", 3 * n, what).reshape(n, 3)

    def pca_model(self, what: str) -> dict:
        mean = self.eigen(f"{what} mean")
        basis = self.eigen(f"{what} orthonormal PCA basis")
        ev = self.eigen(f"{what} eigenvalues")
        tri = self.triangles(f"{what} triangle list")
        return {"mean": mean, "basis": basis, "eigenvalues": ev, "triangles": tri}

    def blendshapes(self, what: str) -> list:
        n = self.size(what, 16)
        out = []
        for i in range(n):
            name = self.string(f"{what}[{i}] name")
            out.append((name, self.eigen(f"{what}[{i}] ({name}) deformation")))
        return out

    def done(self):
        if self.off != len(self.buf):
            _fail(self.path, f"{len(self.buf) - self.off} unexpected bytes after the end of the data (byte {self.off})")


def _eos(p: Path, expressions=None, want_landmark_file: bool = True) -> dict:
    """eos / Surrey Face Model cereal binary (sfm_shape_3448.bin; also BFM models converted by eos's scripts).

    Layout (shared/data/README.txt, from eos MorphableModel.hpp / PcaModel.hpp / eigen_cerealisation.hpp):
      uint32 class version; shape PcaModel; colour PcaModel; [version >= 2: optional expression model =
      bool nullopt + int32 variant index (0 PcaModel, 1 vector<Blendshape>)]; [version >= 3:
      optional<unordered_map<string, int>> landmark definitions]; vector<array<double, 2>> texture
      coordinates; [version >= 4: vector<array<int, 3>> texture triangles]. PcaModel = Eigen mean, Eigen
      orthonormal basis, Eigen eigenvalues, vector<array<int, 3>> triangles; Eigen = int32 rows, int32 cols,
      column-major float32; vectors/strings/maps = uint64 count + items.
    Units: SFM geometry is in mm; eigenvalues are VARIANCES, so std = sqrt(eigenvalue) (times the column norm,
    1 for the orthonormal basis); colours are in [0, 1]. Blendshapes are additive offsets: each is normalised
    to unit norm and its norm becomes the std (coefficient 1 = the full blendshape). A PCA expression model's
    mean is added to the mean shape (eos draw_sample does the same). Triangles are 0-based, counter-clockwise.
    Companion files: `expressions` (see load_model) and, for sfm_* files, ibug_to_sfm.txt beside the model.
    """
    r = _Cereal(p)
    version = r.scalar("<I", "MorphableModel class version")
    if version > 4:
        _fail(p, f"unsupported eos MorphableModel class version {version} (known: 0..4)")
    shape = r.pca_model("shape model")
    color = r.pca_model("colour model")
    expr_pca, blend = None, None
    if version >= 2:
        nullopt = r.boolean("expression model presence flag")
        if not nullopt:
            idx = r.scalar("<i", "expression model variant index")
            if idx == 0:
                expr_pca = r.pca_model("expression model")
            elif idx == 1:
                blend = r.blendshapes("expression blendshapes")
            else:
                _fail(p, f"corrupt at byte {r.off - 4}: expression model variant index {idx} (expected 0 or 1)")
    landmark_defs = None
    if version >= 3:
        if not r.boolean("landmark definitions presence flag"):
            n = r.size("landmark definitions", 12)
            landmark_defs = {}
            for i in range(n):
                key = r.string(f"landmark definition {i} name")
                landmark_defs[key] = r.scalar("<i", f"landmark definition {i} ({key}) vertex")
    n_uv = r.size("texture coordinates", 16)
    uv = r.array("<f8", 2 * n_uv, "texture coordinates").reshape(n_uv, 2)
    if version >= 4:
        r.triangles("texture triangle indices")
    r.done()

    mean = _vec3(p, shape["mean"], "shape model mean")
    V = mean.shape[0]
    sb, sstd = _eos_pca(p, shape, V, "shape model")
    tri = _triangles(p, shape["triangles"], V, "shape model triangle list", base=0)
    meta = {"format": "eos", "version": version}
    if n_uv:
        meta["texture_coordinates"] = uv
    parts = {}
    if color["mean"].size:
        cmean = _vec3(p, color["mean"], "colour model mean")
        if cmean.shape[0] != V:
            _fail(p, f"colour model has {cmean.shape[0]} vertices, shape model has {V}")
        cb, cstd = _eos_pca(p, color, V, "colour model")
        parts.update(albedo_mean=cmean, albedo_basis=cb, albedo_std=cstd)
    if expr_pca is not None:
        emean = _vec3(p, expr_pca["mean"], "expression model mean")
        if emean.shape[0] != V:
            _fail(p, f"expression model has {emean.shape[0]} vertices, shape model has {V}")
        eb, estd = _eos_pca(p, expr_pca, V, "expression model")
        mean = mean + emean
        parts.update(expr_basis=eb, expr_std=estd)
        meta["expression_type"] = "pca"
    elif blend is not None:
        parts.update(_blendshape_parts(p, blend, V))
        meta["expression_names"] = [n for n, _ in blend]
    elif expressions is not False:
        exp_path = None
        if expressions is not None:
            exp_path = Path(os.fspath(expressions))
            if not exp_path.is_file():
                raise FileNotFoundError(errno.ENOENT, f"expression blendshapes file not found: {exp_path}",
                                        str(exp_path))
        elif (p.parent / f"expression_blendshapes_{V}.bin").is_file():
            exp_path = p.parent / f"expression_blendshapes_{V}.bin"
        if exp_path is not None:
            rb = _Cereal(exp_path)
            blend = _guarded(exp_path, lambda: rb.blendshapes("expression blendshapes"))
            rb.done()
            parts.update(_blendshape_parts(exp_path, blend, V))
            meta["expression_names"] = [n for n, _ in blend]
            meta["expressions_file"] = str(exp_path)

    landmarks = None
    if landmark_defs:
        landmarks = np.full(68, -1, np.int64)
        for k, v in landmark_defs.items():
            if re.fullmatch(r"\d+", k) and 1 <= int(k) <= 68:
                if not 0 <= v < V:
                    _fail(p, f"landmark definition {k} -> vertex {v} is out of range ({V} vertices)")
                landmarks[int(k) - 1] = v
        meta["landmark_definitions"] = landmark_defs
    if want_landmark_file and p.name.startswith("sfm_") and (p.parent / "ibug_to_sfm.txt").is_file():
        landmarks = read_landmark_mapping(p.parent / "ibug_to_sfm.txt", n_vertices=V)
        meta["landmark_mapping"] = str(p.parent / "ibug_to_sfm.txt")
    name = "Surrey Face Model" if p.name.startswith("sfm_") else "eos morphable model"
    return _parts(mean, sb, sstd, tri, name=name, landmarks=landmarks, meta=meta, **parts)


def _eos_pca(p, pca, V, what):
    B = _basis(p, pca["basis"], V, f"{what} basis")
    ev = _std_vector(p, pca["eigenvalues"], B.shape[1], f"{what} eigenvalues")
    if np.any(ev < 0):
        _fail(p, f"{what} has negative eigenvalues (they are variances)")
    U, norms = _unit_columns(B)
    return U.reshape(V, 3, -1), np.sqrt(ev) * norms


def _blendshape_parts(p, blend, V) -> dict:
    cols = []
    for name, d in blend:
        if d.size != 3 * V:
            _fail(p, f"blendshape {name!r} has {d.size} values, the model needs 3V = {3 * V}")
        cols.append(_numeric(p, d, f"blendshape {name!r}").reshape(-1))
    B = np.stack(cols, axis=1) if cols else np.zeros((3 * V, 0))
    U, norms = _unit_columns(B)
    return {"expr_basis": U.reshape(V, 3, -1), "expr_std": norms}


# ===================================================================================== ICT-FaceKit
# Units: the ICT meshes are in centimetres. The neutral mesh's jaw-contour landmarks 0 and 16 lie 14.7 units
# apart and the outer eye corners 8.9 units apart (a face ~147 mm wide, eyes ~89 mm), so we multiply by 10.
# Identity: ICT's randomize_identity() draws the identity weights from N(0, 1) and adds weight * (mesh -
# neutral) (ict_face_model.py, face_model_io.py), so the modes are already scaled by their std: we normalise
# each mode and keep its norm (mm) as the std. Expressions are ARKit-style blendshapes with weights in [0, 1]:
# normalised likewise with std = norm, so coefficient 1 is the full expression.
_ICT_CM_TO_MM = 10.0


def _ict_parts(p, neutral, tri, id_modes, ex_modes, landmarks, name, meta) -> dict:
    V = neutral.shape[0]
    ib, istd = _unit_columns(np.moveaxis(id_modes, 0, -1) * _ICT_CM_TO_MM)
    eb, estd = _unit_columns(np.moveaxis(ex_modes, 0, -1) * _ICT_CM_TO_MM)
    return _parts(neutral * _ICT_CM_TO_MM, ib.reshape(V, 3, -1), istd, tri, expr_basis=eb.reshape(V, 3, -1),
                  expr_std=estd, landmarks=landmarks, name=name, meta=meta)


def _split_polygons(p, faces: np.ndarray, V: int, what: str) -> np.ndarray:
    """(F, 4) polygons with -1 padding (triangles) -> (T, 3) triangles, quads (a, b, c, d) -> (a, b, c), (a, c, d)."""
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] not in (3, 4) or f.shape[0] == 0:
        _fail(p, f"{what} must be (F, 3) or (F, 4) vertex indices, got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        _fail(p, f"{what} must be integers, got dtype {f.dtype}")
    f = f.astype(np.int64)
    if f.shape[1] == 3:
        tri = f
    else:
        quad = f[:, 3] >= 0
        if np.any(f[:, 3] < -1):
            _fail(p, f"{what}: 4th index must be a vertex index or -1 (triangle)")
        tri = np.concatenate([f[:, :3], f[quad][:, [0, 2, 3]]])
        order = np.concatenate([np.arange(len(f)), np.nonzero(quad)[0]])
        tri = tri[np.argsort(order, kind="stable")]  # keep each polygon's triangles together, in face order
    return _triangles(p, tri, V, what, base=0)


def _ict_npz(p: Path) -> dict:
    """ICT-FaceKit light .npz (built from FaceXModel): see the ICT note above for units and std."""
    with np.load(p, allow_pickle=False) as z:
        need = ("neutral_vertices", "faces_quad", "identity_modes", "expression_modes")
        missing = [k for k in need if k not in z.files]
        if missing:
            _fail(p, f"ICT-FaceKit npz is missing {missing} (keys: {sorted(z.files)})")
        neutral = _numeric(p, z["neutral_vertices"], "neutral_vertices", ndim=2)
        faces = np.asarray(z["faces_quad"])
        idm = _numeric(p, z["identity_modes"], "identity_modes", ndim=3)
        exm = _numeric(p, z["expression_modes"], "expression_modes", ndim=3)
        lm = np.asarray(z["landmarks_multipie68"]) if "landmarks_multipie68" in z.files else None
        meta = {"format": "ict_npz"}
        for k in ("identity_names", "expression_names"):
            if k in z.files:
                meta[k] = [str(s) for s in z[k]]
    if neutral.shape[1] != 3:
        _fail(p, f"neutral_vertices must be (V, 3), got {neutral.shape}")
    V = neutral.shape[0]
    for arr, what in ((idm, "identity_modes"), (exm, "expression_modes")):
        if arr.shape[1:] != (V, 3):
            _fail(p, f"{what} must be (K, V={V}, 3), got {arr.shape}")
    tri = _split_polygons(p, faces, V, "faces_quad")
    landmarks = None if lm is None else _index_vector(p, lm, V, "landmarks_multipie68", base=0, n=68)
    return _ict_parts(p, neutral, tri, idm, exm, landmarks, "ICT-FaceKit (light npz)", meta)


def _parse_obj(path: Path, want_faces: bool = True):
    """Minimal OBJ reader: 'v x y z' lines -> (V, 3) float64, 'f' lines (v, v/vt, v//vn, v/vt/vn; negative =
    relative) -> list of 0-based polygons, fan-triangulated to (T, 3). Other lines are ignored."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read OBJ: {e}") from e
    verts, tris = [], []
    nv = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("v "):
            parts = line.split()
            if len(parts) < 4:
                _fail(path, f"line {lineno}: vertex needs 3 coordinates: {line.strip()!r}")
            try:
                verts.append((float(parts[1]), float(parts[2]), float(parts[3])))
            except ValueError:
                _fail(path, f"line {lineno}: bad vertex coordinates: {line.strip()!r}")
            nv += 1
        elif want_faces and line.startswith("f "):
            toks = line.split()[1:]
            if len(toks) < 3:
                _fail(path, f"line {lineno}: a face needs at least 3 vertices: {line.strip()!r}")
            idx = []
            for t in toks:
                s = t.split("/", 1)[0]
                try:
                    i = int(s)
                except ValueError:
                    _fail(path, f"line {lineno}: bad face index {t!r}")
                if i == 0:
                    _fail(path, f"line {lineno}: OBJ indices are 1-based; 0 is invalid")
                idx.append(i - 1 if i > 0 else nv + i)
            for k in range(1, len(idx) - 1):  # quads (a, b, c, d) -> (a, b, c), (a, c, d)
                tris.append((idx[0], idx[k], idx[k + 1]))
    if not verts:
        _fail(path, "OBJ file has no vertices")
    v = np.asarray(verts, np.float64)
    if not np.all(np.isfinite(v)):
        _fail(path, "OBJ vertices contain NaN or Inf")
    t = np.asarray(tris, np.int64).reshape(-1, 3)
    if want_faces:
        if t.shape[0] == 0:
            _fail(path, "OBJ file has no faces")
        if int(t.min()) < 0 or int(t.max()) >= len(v):
            _fail(path, f"face indices out of range [1, {len(v)}]")
    return v, t


def _ict_folder(p: Path) -> dict:
    """ICT-FaceKit FaceXModel folder (generic_neutral_mesh.obj, identityNNN.obj, <expression>.obj,
    vertex_indices.json). Like ICT's face_model_io.py: identity OBJs are read as identity000, identity001, ...
    up to the first missing one; expressions in the order of vertex_indices.json's "expressions" list (the
    ones present; missing ones are listed in meta["missing_expressions"]); modes = mesh - neutral.
    Landmarks: vertex_indices.json "idx_to_landmark_verts" (Multi-PIE 68, 0-based). Units/std: see above."""
    folder = p.parent if p.is_file() else p
    neutral, tri = _parse_obj(folder / "generic_neutral_mesh.obj")
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
            _fail(cfg_path, "expected a JSON object")
    names = cfg.get("expressions", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        _fail(cfg_path, "'expressions' must be a list of names")
    id_files = []
    while (folder / f"identity{len(id_files):03d}.obj").is_file():
        id_files.append(folder / f"identity{len(id_files):03d}.obj")
    ex_files = [(n, folder / f"{n}.obj") for n in names if (folder / f"{n}.obj").is_file()]
    meta["missing_expressions"] = [n for n in names if not (folder / f"{n}.obj").is_file()]
    meta["identity_names"] = [f.stem for f in id_files]
    meta["expression_names"] = [n for n, _ in ex_files]

    files = id_files + [f for _, f in ex_files]
    modes = np.zeros((len(files), V, 3))
    for i, f in enumerate(_progress(files, "Reading ICT-FaceKit OBJs")):
        v, _ = _parse_obj(f, want_faces=False)
        if v.shape[0] != V:
            _fail(f, f"has {v.shape[0]} vertices, generic_neutral_mesh.obj has {V}")
        modes[i] = v - neutral
    landmarks = None
    for key in ("idx_to_landmark_verts", "landmark_verts", "landmarks"):
        if key in cfg:
            landmarks = _index_vector(cfg_path, cfg[key], V, key, base=0, n=68)
            break
    return _ict_parts(p, neutral, tri, modes[:len(id_files)], modes[len(id_files):], landmarks,
                      "ICT-FaceKit (FaceXModel)", meta)


def _progress(items, label):
    """A rich progress bar over `items` when there are many (slow) files to read, else the plain list."""
    if len(items) < 20:
        return items
    try:
        from rich.progress import track
    except ImportError:
        return items
    return track(items, description=label)


_READERS = {
    "mat": _read_mat_model, "bfm2017": _bfm2017, "flame": _flame, "mofa_npz": _mofa_npz, "eos": _eos,
    "ict_npz": _ict_npz, "ict_folder": _ict_folder,
}

"""What the model readers share: their error, the checks that turn arrays into validated parts, the
parts dict every reader returns, and the landmark-mapping file reader."""
from __future__ import annotations

import errno
import importlib
import os
import re
from pathlib import Path

import numpy as np

from ...errors import ModelFormatError


__all__ = ["OptionalDependencyError", "DEFAULT_ALBEDO", "read_landmark_mapping", "fail", "guarded", "import_h5py",
           "model_parts", "unit_columns", "numeric", "vec3", "basis_matrix", "std_vector", "triangle_array",
           "index_vector", "outward_flux", "HDF5_MAGIC", "ZIP_MAGIC", "MOFA_NPZ_FORMAT"]

#: Constant albedo (linear RGB, all channels) given to models without a colour model (FLAME, SFM, ICT).
DEFAULT_ALBEDO = 0.6

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
MOFA_NPZ_FORMAT = "mofa_tk.FaceModel/1"


class OptionalDependencyError(ModelFormatError, ImportError):
    """A file needs an optional package (h5py) that is not installed."""


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


def guarded(path: Path, fn):
    """Run fn(); re-raise anything but our own/FileNotFound/memory errors as ModelFormatError naming path."""
    try:
        return fn()
    except (ModelFormatError, FileNotFoundError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - every failure of a reader is a problem with that file
        raise ModelFormatError(f"{path}: cannot read model: {type(e).__name__}: {e}") from e


def fail(path, msg):
    raise ModelFormatError(f"{path}: {msg}")


def import_h5py(p):
    try:
        return importlib.import_module("h5py")
    except ImportError as e:
        raise OptionalDependencyError(f"{p}: reading HDF5-based model files needs h5py: pip install h5py "
                                      f"(or pip install 'mofa_tk[h5]')") from e


def model_parts(mean, shape_basis, shape_std, triangles, *, name, expr_basis=None, expr_std=None, albedo_mean=None,
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


def unit_columns(B: np.ndarray):
    """Split a (3V, K) or (V, 3, K) basis into unit-norm columns and their norms (zero columns stay zero)."""
    B = np.asarray(B, np.float64)
    norms = np.linalg.norm(B.reshape(-1, B.shape[-1]), axis=0)
    safe = np.where(norms > 0, norms, 1.0)
    return np.divide(B, safe, out=np.empty(B.shape, np.float32), casting="same_kind"), norms


def numeric(path, arr, what, ndim=None):
    """`arr` as a finite float64 array (raising ModelFormatError naming `what`)."""
    a = np.asarray(arr)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        fail(path, f"{what} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if ndim is not None and a.ndim != ndim:
        fail(path, f"{what} must have {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        fail(path, f"{what} contains NaN or Inf")
    return a


def vec3(path, arr, what) -> np.ndarray:
    """A (3V,) / (3V, 1) / (1, 3V) interleaved xyz array as (V, 3) float64."""
    a = numeric(path, arr, what)
    if a.ndim > 2 or (a.ndim == 2 and 1 not in a.shape):
        fail(path, f"{what} must be a vector of length 3V, got shape {a.shape}")
    a = a.reshape(-1)
    if a.size == 0 or a.size % 3:
        fail(path, f"{what} must have 3V entries (xyz per vertex), got {a.size}")
    return a.reshape(-1, 3)


def basis_matrix(path, arr, V, what) -> np.ndarray:
    """A (3V, K) basis as float64, checking its row count."""
    a = numeric(path, arr, what)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != 3 * V:
        fail(path, f"{what} must be (3V={3 * V}, K), got shape {a.shape}")
    return a


def std_vector(path, arr, K, what) -> np.ndarray:
    a = numeric(path, arr, what).reshape(-1)
    if a.size != K:
        fail(path, f"{what} must have K={K} entries (one per basis column), got {a.size}")
    return a


def triangle_array(path, arr, V, what, base) -> np.ndarray:
    """(T, 3) integer triangles with index base `base` -> 0-based int64, range-checked against V."""
    a = np.asarray(arr)
    if a.ndim != 2 or a.shape[1] != 3 or a.shape[0] == 0:
        fail(path, f"{what} must be (T, 3) vertex indices, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        f = numeric(path, a, what)
        if not np.all(f == np.round(f)):
            fail(path, f"{what} contains non-integer vertex indices")
        a = f
    a = a.astype(np.int64) - base
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= V:
        fail(path, f"{what} indices ({'1' if base else '0'}-based) must lie in [{base}, {V - 1 + base}] for "
                    f"{V} vertices, got [{lo + base}, {hi + base}]")
    return a


def index_vector(path, arr, V, what, base, n=None) -> np.ndarray:
    a = numeric(path, arr, what).reshape(-1)
    if n is not None and a.size != n:
        fail(path, f"{what} must have {n} entries, got {a.size}")
    if not np.all(a == np.round(a)):
        fail(path, f"{what} contains non-integer indices")
    a = a.astype(np.int64) - base
    if a.size and (int(a.min()) < 0 or int(a.max()) >= V):
        fail(path, f"{what} ({'1' if base else '0'}-based) must lie in [{base}, {V - 1 + base}], got "
                    f"[{int(a.min()) + base}, {int(a.max()) + base}]")
    return a


def outward_flux(verts: np.ndarray, tri: np.ndarray) -> float:
    """Sum over triangles of (area normal) . (centroid - mesh centre): > 0 when triangles face outwards."""
    v = np.asarray(verts, np.float64)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    n = np.cross(b - a, c - a)
    return float(np.sum(n * ((a + b + c) / 3.0 - v.mean(0))))

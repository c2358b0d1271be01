"""FLAME 2020 generic_model.pkl, unpickled without chumpy by a restricted unpickler (no code runs)."""
from __future__ import annotations

import importlib
import pickle
import codecs
from pathlib import Path

import numpy as np

from ...errors import ModelFormatError
from .common import fail, model_parts, numeric, triangle_array, unit_columns


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


def read_flame(p: Path, n_shape: int = 300) -> dict:
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
        fail(p, f"FLAME pickle must hold a dict, got {type(data).__name__}")
    missing = [k for k in ("v_template", "shapedirs", "f") if k not in data]
    if missing:
        fail(p, f"FLAME pickle has no {missing} (keys: {sorted(map(str, data))})")
    v = numeric(p, _array_of(data["v_template"]), "v_template", ndim=2)
    if v.shape[1] != 3:
        fail(p, f"v_template must be (V, 3), got {v.shape}")
    V = v.shape[0]
    sd = numeric(p, _array_of(data["shapedirs"]), "shapedirs", ndim=3)
    if sd.shape[:2] != (V, 3):
        fail(p, f"shapedirs must be (V={V}, 3, K), got {sd.shape}")
    if sd.shape[2] < n_shape:
        fail(p, f"shapedirs has {sd.shape[2]} components, fewer than flame_shape_components={n_shape}")
    tri = triangle_array(p, _array_of(data["f"]), V, "f", base=0)
    sb, sn = unit_columns(sd[:, :, :n_shape] * 1000.0)
    eb, en = unit_columns(sd[:, :, n_shape:] * 1000.0)
    return model_parts(v * 1000.0, sb, sn, tri, expr_basis=eb, expr_std=en, name="FLAME",
                  meta={"format": "flame", "n_shape": n_shape, "n_expression": sd.shape[2] - n_shape})

"""The Surrey Face Model and other eos models (cereal binary archives)."""
from __future__ import annotations

import errno
import os
import re
import struct
from pathlib import Path

import numpy as np

from .common import (basis_matrix, fail, guarded, model_parts, numeric, read_landmark_mapping, std_vector,
                     triangle_array, unit_columns, vec3)


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
            fail(self.path, f"truncated or corrupt at byte {self.off} while reading {what}: needs {n} bytes, "
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
            fail(self.path, f"corrupt at byte {self.off - 8}: {what} has negative size {rows} x {cols}")
        data = self.array(dtype, rows * cols, f"{what} ({rows} x {cols})")
        return data.reshape(cols, rows).T  # Eigen stores column-major

    def string(self, what: str) -> str:
        n = self.size(what, 1)
        return self.array("u1", n, what).tobytes().decode("utf-8", errors="replace")

    def boolean(self, what: str) -> bool:
        b = self.scalar("<B", what)
        if b > 1:
            fail(self.path, f"corrupt at byte {self.off - 1}: {what} should be a bool (0/1), got {b}")
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
            fail(self.path, f"{len(self.buf) - self.off} unexpected bytes after the end of the data (byte {self.off})")


def read_eos(p: Path, expressions=None, want_landmark_file: bool = True) -> dict:
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
        fail(p, f"unsupported eos MorphableModel class version {version} (known: 0..4)")
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
                fail(p, f"corrupt at byte {r.off - 4}: expression model variant index {idx} (expected 0 or 1)")
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

    mean = vec3(p, shape["mean"], "shape model mean")
    V = mean.shape[0]
    sb, sstd = _eos_pca(p, shape, V, "shape model")
    tri = triangle_array(p, shape["triangles"], V, "shape model triangle list", base=0)
    meta = {"format": "eos", "version": version}
    if n_uv:
        meta["texture_coordinates"] = uv
    parts = {}
    if color["mean"].size:
        cmean = vec3(p, color["mean"], "colour model mean")
        if cmean.shape[0] != V:
            fail(p, f"colour model has {cmean.shape[0]} vertices, shape model has {V}")
        cb, cstd = _eos_pca(p, color, V, "colour model")
        parts.update(albedo_mean=cmean, albedo_basis=cb, albedo_std=cstd)
    if expr_pca is not None:
        emean = vec3(p, expr_pca["mean"], "expression model mean")
        if emean.shape[0] != V:
            fail(p, f"expression model has {emean.shape[0]} vertices, shape model has {V}")
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
            blend = guarded(exp_path, lambda: rb.blendshapes("expression blendshapes"))
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
                    fail(p, f"landmark definition {k} -> vertex {v} is out of range ({V} vertices)")
                landmarks[int(k) - 1] = v
        meta["landmark_definitions"] = landmark_defs
    if want_landmark_file and p.name.startswith("sfm_") and (p.parent / "ibug_to_sfm.txt").is_file():
        landmarks = read_landmark_mapping(p.parent / "ibug_to_sfm.txt", n_vertices=V)
        meta["landmark_mapping"] = str(p.parent / "ibug_to_sfm.txt")
    name = "Surrey Face Model" if p.name.startswith("sfm_") else "eos morphable model"
    return model_parts(mean, sb, sstd, tri, name=name, landmarks=landmarks, meta=meta, **parts)


def _eos_pca(p, pca, V, what):
    B = basis_matrix(p, pca["basis"], V, f"{what} basis")
    ev = std_vector(p, pca["eigenvalues"], B.shape[1], f"{what} eigenvalues")
    if np.any(ev < 0):
        fail(p, f"{what} has negative eigenvalues (they are variances)")
    U, norms = unit_columns(B)
    return U.reshape(V, 3, -1), np.sqrt(ev) * norms


def _blendshape_parts(p, blend, V) -> dict:
    cols = []
    for name, d in blend:
        if d.size != 3 * V:
            fail(p, f"blendshape {name!r} has {d.size} values, the model needs 3V = {3 * V}")
        cols.append(numeric(p, d, f"blendshape {name!r}").reshape(-1))
    B = np.stack(cols, axis=1) if cols else np.zeros((3 * V, 0))
    U, norms = unit_columns(B)
    return {"expr_basis": U.reshape(V, 3, -1), "expr_std": norms}

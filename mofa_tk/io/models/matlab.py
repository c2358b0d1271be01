"""MATLAB .mat models: Basel Face Model 2009 and Deep3DFaceRecon's BFM_model_front."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from .common import (basis_matrix, fail, import_h5py, index_vector, model_parts, numeric, std_vector,
                     triangle_array, unit_columns, vec3)


# ===================================================================================== MATLAB (.mat)
def _read_mat(p: Path) -> dict:
    """Variables of a MATLAB v5 (scipy) or v7.3 (HDF5, h5py) file as numpy arrays in MATLAB's shape."""
    with open(p, "rb") as f:
        head = f.read(128)
    if head.startswith(b"MATLAB 5.0 MAT-file"):
        return {k: v for k, v in scipy.io.loadmat(str(p)).items() if not k.startswith("__")}
    h5py = import_h5py(p)
    out = {}
    with h5py.File(p, "r") as f:
        for k, v in f.items():
            if isinstance(v, h5py.Dataset) and not k.startswith("#"):
                # HDF5 stores MATLAB's column-major arrays with the axes reversed
                out[k] = np.asarray(v[()]).T
    return out


def read_mat_model(p: Path) -> dict:
    mat = _read_mat(p)
    if {"shapeMU", "shapePC", "shapeEV"} <= mat.keys():
        return _bfm2009(p, mat)
    if {"meanshape", "idBase"} <= mat.keys():
        return _deep3d(p, mat)
    fail(p, f"MATLAB file is neither a BFM2009 01_MorphableModel.mat (shapeMU/shapePC/shapeEV/tl) nor a "
             f"Deep3DFaceRecon BFM_model_front.mat (meanshape/idBase/exBase/tri); variables: {sorted(mat)}")


def _need(p, mat, keys, what):
    missing = [k for k in keys if k not in mat]
    if missing:
        fail(p, f"{what} is missing variable(s) {missing}; it has {sorted(mat)}")


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
    mean = vec3(p, mat["shapeMU"], "shapeMU") / 1000.0
    V = mean.shape[0]
    pc = basis_matrix(p, mat["shapePC"], V, "shapePC")
    ev = std_vector(p, mat["shapeEV"], pc.shape[1], "shapeEV")
    basis, norms = unit_columns(pc)
    shape_std = ev / 1000.0 * norms
    tri = triangle_array(p, mat["tl"], V, "tl", base=1)[:, [0, 2, 1]]
    albedo = {}
    if "texMU" in mat:
        _need(p, mat, ("texPC", "texEV"), "BFM2009 colour model")
        tmu = vec3(p, mat["texMU"], "texMU")
        if tmu.shape[0] != V:
            fail(p, f"texMU has {tmu.shape[0]} vertices but shapeMU has {V}")
        tpc = basis_matrix(p, mat["texPC"], V, "texPC")
        tev = std_vector(p, mat["texEV"], tpc.shape[1], "texEV")
        tb, tn = unit_columns(tpc)
        albedo = dict(albedo_mean=tmu / 255.0, albedo_basis=tb.reshape(V, 3, -1), albedo_std=tev / 255.0 * tn)
    return model_parts(mean, basis.reshape(V, 3, -1), shape_std, tri, name="Basel Face Model 2009",
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
    mean = vec3(p, mat["meanshape"], "meanshape") * 100.0
    V = mean.shape[0]
    idb, idn = unit_columns(basis_matrix(p, mat["idBase"], V, "idBase"))
    exb, exn = unit_columns(basis_matrix(p, mat["exBase"], V, "exBase"))
    tri = triangle_array(p, mat["tri"], V, "tri", base=1)
    landmarks = None
    if "keypoints" in mat:
        landmarks = index_vector(p, mat["keypoints"], V, "keypoints", base=1, n=68)
    albedo = {}
    if "meantex" in mat:
        _need(p, mat, ("texBase",), "Deep3DFaceRecon colour model")
        tmu = vec3(p, mat["meantex"], "meantex")
        if tmu.shape[0] != V:
            fail(p, f"meantex has {tmu.shape[0]} vertices but meanshape has {V}")
        tb, tn = unit_columns(basis_matrix(p, mat["texBase"], V, "texBase"))
        albedo = dict(albedo_mean=tmu / 255.0, albedo_basis=tb.reshape(V, 3, -1), albedo_std=tn / 255.0)
    meta = {"format": "deep3dfacerecon"}
    if "point_buf" in mat:
        # 1-based triangle ids; T + 1 pads (Deep3DFaceRecon appends a zero normal at 0-based index T)
        pb = numeric(p, mat["point_buf"], "point_buf", ndim=2).astype(np.int64) - 1
        T = tri.shape[0]
        if pb.shape[0] != V or pb.size == 0 or int(pb.min()) < 0 or int(pb.max()) > T:
            rng = f"[{int(pb.min()) + 1}, {int(pb.max()) + 1}]" if pb.size else "empty"
            fail(p, f"point_buf must be (V={V}, k) 1-based triangle ids in [1, {T + 1}] ({T + 1} = none), got "
                     f"shape {pb.shape}, range {rng}")
        meta["point_buf"] = np.where(pb == T, -1, pb)
    if "frontmask2_idx" in mat:
        meta["front_mask"] = index_vector(p, mat["frontmask2_idx"], V, "frontmask2_idx", base=1)
    if "skinmask" in mat:
        sm = numeric(p, mat["skinmask"], "skinmask").reshape(-1)
        if sm.size != V:
            fail(p, f"skinmask must have V={V} entries, got {sm.size}")
        meta["skin_mask"] = sm > 0.5
    if "tri_mask2" in mat:
        meta["tri_mask2"] = triangle_array(p, mat["tri_mask2"], V, "tri_mask2", base=1)
    return model_parts(mean, idb.reshape(V, 3, -1), idn * 100.0, tri, expr_basis=exb.reshape(V, 3, -1),
                  expr_std=exn * 100.0, landmarks=landmarks, name="Deep3DFaceRecon BFM (front)", meta=meta, **albedo)

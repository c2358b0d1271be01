"""load_model on small synthetic files written in each native format (same keys, dtypes, index base, units).

Every expected number is computed here from the arrays written, with the format's own definition of a face
(e.g. BFM2009: shapeMU + shapePC @ (alpha * shapeEV) in micrometres), never by calling the loader's helpers.
"""
import json
import pickle
import struct
import sys
import types

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch

from mofa_tk.errors import ModelFormatError
from mofa_tk.io.models import load_model, read_landmark_mapping
from mofa_tk.face.model import FaceModel

RNG_SEED = 1234

# ----------------------------------------------------------------------------------------- shared geometry
# A regular octahedron (6 vertices, 8 faces) in millimetres, triangles counter-clockwise seen from outside.
OCTA_MM = np.array([[60, 0, 0], [-60, 0, 0], [0, 60, 0], [0, -60, 0], [0, 0, 60], [0, 0, -60]], np.float64)
OCTA_TRI = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
V = 6


def test_octahedron_reference_is_outward():
    a, b, c = (OCTA_MM[OCTA_TRI[:, i]] for i in range(3))
    n = np.cross(b - a, c - a)
    assert np.all(np.sum(n * (a + b + c), axis=1) > 0)


def orthonormal(rows, k, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(rows, k)))
    return q


def ibug_lm(seed=0):
    return np.random.default_rng(seed).integers(0, V, size=68)


def model_vertices(model: FaceModel, alpha=None, delta=None):
    """mofa_tk's definition: mean + basis * std * coefficient (float64 numpy, (V, 3))."""
    v = model.mean_shape.double().numpy().copy()
    if alpha is not None:
        v += np.einsum("vck,k->vc", model.shape_basis.double().numpy(), model.shape_std.double().numpy() * alpha)
    if delta is not None:
        v += np.einsum("vck,k->vc", model.expr_basis.double().numpy(), model.expr_std.double().numpy() * delta)
    return v


def model_albedo(model: FaceModel, beta):
    return model.albedo(torch.as_tensor(beta, dtype=torch.float32)[None])[0].double().numpy()


def assert_unit_columns(basis):
    b = basis.double().numpy().reshape(-1, basis.shape[2])
    np.testing.assert_allclose(np.linalg.norm(b, axis=0), 1.0, rtol=1e-5)


def write_mapping(path, mapping, quoted=False, extra=""):
    lines = ["# mapping from ibug (1-based) to vertex (0-based)", "[landmark_mappings]  # comment"]
    for k, v in mapping.items():
        lines.append(f'"{k}" = "{v}"  # point {k}' if quoted else f"{k:>2} = {v:>5}  # point {k}")
    lines.append("            # 61 not defined")
    lines.append("[contour_landmarks]\nright = [ 1,\n  2,\n 3\n]\nleft = [ 10,\n 11 ]")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


# ----------------------------------------------------------------------------------------- BFM 2009 (.mat)
def bfm2009_arrays(seed=RNG_SEED):
    rng = np.random.default_rng(seed)
    K, Kt = 4, 3
    return {
        "shapeMU": (OCTA_MM * 1000.0).reshape(-1, 1).astype(np.float32),                      # micrometres
        "shapePC": orthonormal(3 * V, K, seed).astype(np.float32),
        "shapeEV": np.array([[9000.0], [5000.0], [2500.0], [800.0]], np.float32),              # std, um
        "texMU": rng.uniform(40, 220, size=(3 * V, 1)).astype(np.float32),                     # 0..255
        "texPC": orthonormal(3 * V, Kt, seed + 1).astype(np.float32),
        "texEV": np.array([[900.0], [400.0], [100.0]], np.float32),
        "tl": (OCTA_TRI[:, [0, 2, 1]] + 1).astype(np.float64),  # 1-based and clockwise, like BFM2009
    }


def write_mat73(path, arrays):
    """A MATLAB v7.3 file: 512-byte text header + HDF5, each array stored with its axes reversed."""
    h5py = pytest.importorskip("h5py", reason="h5py (optional extra [h5]) is not installed")
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=np.ascontiguousarray(np.asarray(v).T))
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116, b" "))


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_bfm2009(tmp_path, version):
    arr = bfm2009_arrays()
    path = tmp_path / "01_MorphableModel.mat"
    if version == "v5":
        scipy.io.savemat(path, arr)
    else:
        write_mat73(path, arr)
    m = load_model(path)
    assert m.name == "Basel Face Model 2009" and m.source == str(path)
    assert (m.n_vertices, m.k_id, m.k_exp, m.k_alb) == (V, 4, 0, 3)
    np.testing.assert_allclose(m.mean_shape.numpy(), OCTA_MM, atol=1e-3)                     # um -> mm
    np.testing.assert_allclose(m.shape_std.numpy(), [9.0, 5.0, 2.5, 0.8], rtol=1e-5)         # std um -> mm
    assert_unit_columns(m.shape_basis)
    alpha = np.array([0.5, -1.2, 2.0, 0.3])
    mu, pc = arr["shapeMU"][:, 0].astype(np.float64), arr["shapePC"].astype(np.float64)
    ref_um = mu + pc @ (alpha * arr["shapeEV"][:, 0])
    np.testing.assert_allclose(model_vertices(m, alpha), ref_um.reshape(V, 3) / 1000.0, atol=1e-3)
    beta = np.array([1.0, -0.5, 2.0])
    ref_tex = arr["texMU"][:, 0] + arr["texPC"].astype(np.float64) @ (beta * arr["texEV"][:, 0])
    np.testing.assert_allclose(model_albedo(m, beta), ref_tex.reshape(V, 3) / 255.0, atol=1e-5)
    np.testing.assert_allclose(m.albedo_mean.numpy(), arr["texMU"].reshape(V, 3) / 255.0, atol=1e-6)
    # 1-based clockwise tl -> 0-based counter-clockwise
    np.testing.assert_array_equal(m.triangles.numpy(), OCTA_TRI)
    assert m.triangles.dtype == torch.int32
    assert torch.all(m.landmarks == -1)


def test_bfm2009_landmark_mapping_option(tmp_path):
    path = tmp_path / "01_MorphableModel.mat"
    scipy.io.savemat(path, bfm2009_arrays())
    mapping = {9: 3, 31: 4, 37: 0, 46: 1}
    mfile = write_mapping(tmp_path / "ibug_to_bfm2009.txt", mapping)
    m = load_model(path, landmarks=mfile)
    expected = np.full(68, -1)
    for k, v in mapping.items():
        expected[k - 1] = v
    np.testing.assert_array_equal(m.landmarks.numpy(), expected)
    m2 = load_model(path, landmarks=[i % V for i in range(68)])
    np.testing.assert_array_equal(m2.landmarks.numpy(), [i % V for i in range(68)])
    with pytest.raises(ValueError, match="landmarks="):
        load_model(path, landmarks=[0] * 67)
    with pytest.raises(ValueError, match="out of range"):
        load_model(path, landmarks=[V] * 68)


@pytest.mark.parametrize("drop", ["shapeEV", "tl"])
def test_bfm2009_missing_key(tmp_path, drop):
    arr = bfm2009_arrays()
    del arr[drop]
    path = tmp_path / "bfm_missing.mat"
    scipy.io.savemat(path, arr)
    with pytest.raises(ModelFormatError, match=rf"bfm_missing\.mat.*{drop}"):
        load_model(path)


def test_bfm2009_inconsistent_and_bad_indices(tmp_path):
    arr = bfm2009_arrays()
    arr["shapePC"] = arr["shapePC"][:-3]
    scipy.io.savemat(tmp_path / "rows.mat", arr)
    with pytest.raises(ModelFormatError, match=r"rows\.mat.*shapePC.*3V=18"):
        load_model(tmp_path / "rows.mat")
    arr = bfm2009_arrays()
    arr["shapeEV"] = arr["shapeEV"][:3]
    scipy.io.savemat(tmp_path / "ev.mat", arr)
    with pytest.raises(ModelFormatError, match=r"ev\.mat.*shapeEV.*K=4"):
        load_model(tmp_path / "ev.mat")
    arr = bfm2009_arrays()
    arr["tl"] = arr["tl"] - 1  # 0-based by mistake
    scipy.io.savemat(tmp_path / "zero.mat", arr)
    with pytest.raises(ModelFormatError, match=r"zero\.mat.*tl.*1-based"):
        load_model(tmp_path / "zero.mat")
    arr = bfm2009_arrays()
    arr["tl"][0, 0] = V + 1
    scipy.io.savemat(tmp_path / "big.mat", arr)
    with pytest.raises(ModelFormatError, match=r"big\.mat.*tl"):
        load_model(tmp_path / "big.mat")
    arr = bfm2009_arrays()
    arr["texMU"] = arr["texMU"][:-3]
    scipy.io.savemat(tmp_path / "tex.mat", arr)
    with pytest.raises(ModelFormatError, match=r"tex\.mat.*texMU"):
        load_model(tmp_path / "tex.mat")


def test_truncated_mat(tmp_path):
    path = tmp_path / "bfm.mat"
    scipy.io.savemat(path, bfm2009_arrays())
    data = path.read_bytes()
    cut = tmp_path / "cut.mat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match=r"cut\.mat"):
        load_model(cut)


def test_unknown_mat_variables(tmp_path):
    path = tmp_path / "other.mat"
    scipy.io.savemat(path, {"foo": np.zeros(3)})
    with pytest.raises(ModelFormatError, match=r"other\.mat.*shapeMU"):
        load_model(path)


# ----------------------------------------------------------------------------------------- Deep3DFaceRecon
def deep3d_arrays(seed=RNG_SEED):
    """Built the way Deep3DFaceRecon's transferBFM09 builds BFM_model_front.mat from BFM2009 data."""
    rng = np.random.default_rng(seed)
    shapePC, expPC = orthonormal(3 * V, 3, seed), orthonormal(3 * V, 2, seed + 1)
    texPC = orthonormal(3 * V, 2, seed + 2)
    shapeEV, expEV, texEV = np.array([7000.0, 3000.0, 1500.0]), np.array([4000.0, 900.0]), np.array([800.0, 300.0])
    shapeMU = (OCTA_MM * 1000.0).reshape(-1)           # micrometres
    texMU = rng.uniform(30, 230, size=3 * V)
    F = len(OCTA_TRI)
    point_buf = np.full((V, 8), F + 1.0)               # F + 1 (1-based) = padding
    for t, tri in enumerate(OCTA_TRI):
        for vtx in tri:
            j = int(np.argmax(point_buf[vtx] == F + 1))
            point_buf[vtx, j] = t + 1
    return {
        "meanshape": (shapeMU / 1e5).reshape(1, -1).astype(np.float32),
        "idBase": (shapePC * shapeEV / 1e5).astype(np.float32),
        "exBase": (expPC * expEV / 1e5).astype(np.float32),
        "meantex": texMU.reshape(1, -1).astype(np.float32),
        "texBase": (texPC * texEV).astype(np.float32),
        "tri": (OCTA_TRI + 1).astype(np.float32),
        "keypoints": (ibug_lm() + 1).reshape(1, 68).astype(np.float32),
        "point_buf": point_buf.astype(np.float32),
        "frontmask2_idx": np.array([[1], [3], [5]], np.float32),
        "skinmask": np.array([[1, 0, 1, 1, 0, 0]], np.float32),
        "tri_mask2": (OCTA_TRI[:4] + 1).astype(np.float32),
    }, dict(shapeEV=shapeEV, expEV=expEV, texEV=texEV)


def test_deep3d(tmp_path):
    arr, ev = deep3d_arrays()
    path = tmp_path / "BFM_model_front.mat"
    scipy.io.savemat(path, arr)
    m = load_model(path)
    assert m.name.startswith("Deep3DFaceRecon")
    assert (m.k_id, m.k_exp, m.k_alb) == (3, 2, 2)
    np.testing.assert_allclose(m.mean_shape.numpy(), OCTA_MM, atol=1e-3)       # decimetres -> mm
    # the bases carry std in decimetres: BFM's std in um / 1000 = std in mm
    np.testing.assert_allclose(m.shape_std.numpy(), ev["shapeEV"] / 1000.0, rtol=1e-5)
    np.testing.assert_allclose(m.expr_std.numpy(), ev["expEV"] / 1000.0, rtol=1e-5)
    np.testing.assert_allclose(m.albedo_std.numpy(), ev["texEV"] / 255.0, rtol=1e-5)
    assert_unit_columns(m.shape_basis)
    assert_unit_columns(m.expr_basis)
    alpha, delta, beta = np.array([1.0, -2.0, 0.5]), np.array([0.7, -1.1]), np.array([-1.0, 2.0])
    # Deep3DFaceRecon's compute_shape, in decimetres
    ref_dm = arr["meanshape"][0].astype(np.float64) + arr["idBase"] @ alpha + arr["exBase"] @ delta
    np.testing.assert_allclose(model_vertices(m, alpha, delta), ref_dm.reshape(V, 3) * 100.0, atol=1e-3)
    ref_tex = (arr["texBase"] @ beta + arr["meantex"][0]) / 255.0                                    # compute_texture
    np.testing.assert_allclose(model_albedo(m, beta), ref_tex.reshape(V, 3), atol=1e-5)
    np.testing.assert_array_equal(m.triangles.numpy(), OCTA_TRI)
    np.testing.assert_array_equal(m.landmarks.numpy(), ibug_lm())
    pb = m.meta["point_buf"]
    for vtx in range(V):
        assert sorted(pb[vtx][pb[vtx] >= 0]) == sorted(np.nonzero((OCTA_TRI == vtx).any(1))[0])
    np.testing.assert_array_equal(m.meta["front_mask"], [0, 2, 4])
    np.testing.assert_array_equal(m.meta["skin_mask"], [True, False, True, True, False, False])
    np.testing.assert_array_equal(m.meta["tri_mask2"], OCTA_TRI[:4])


def test_deep3d_bad_keypoints_and_shapes(tmp_path):
    arr, _ = deep3d_arrays()
    arr["keypoints"][0, 5] = V + 1
    scipy.io.savemat(tmp_path / "kp.mat", arr)
    with pytest.raises(ModelFormatError, match=r"kp\.mat.*keypoints"):
        load_model(tmp_path / "kp.mat")
    arr, _ = deep3d_arrays()
    arr["exBase"] = arr["exBase"][:-1]
    scipy.io.savemat(tmp_path / "ex.mat", arr)
    with pytest.raises(ModelFormatError, match=r"ex\.mat.*exBase"):
        load_model(tmp_path / "ex.mat")
    arr, _ = deep3d_arrays()
    arr["meanshape"] = arr["meanshape"][:, :-1]
    scipy.io.savemat(tmp_path / "mean.mat", arr)
    with pytest.raises(ModelFormatError, match=r"mean\.mat.*meanshape"):
        load_model(tmp_path / "mean.mat")


# ----------------------------------------------------------------------------------------- BFM 2017 (.h5)
def write_bfm2017(path, reverse_winding=False, scaled_basis=False, cells_override=None):
    h5py = pytest.importorskip("h5py", reason="h5py (optional extra [h5]) is not installed")
    rng = np.random.default_rng(7)
    K, Ke, Kc = 3, 2, 2
    data = {
        "shape/model/mean": OCTA_MM.reshape(-1).astype(np.float32),                      # mm
        "shape/model/pcaBasis": orthonormal(3 * V, K, 1).astype(np.float32),
        "shape/model/pcaVariance": np.array([64.0, 16.0, 4.0], np.float32),               # mm^2
        "shape/model/noiseVariance": np.array(0.0, np.float32),
        "shape/representer/points": OCTA_MM.T.astype(np.float32),
        "shape/representer/cells": (OCTA_TRI[:, [0, 2, 1]] if reverse_winding else OCTA_TRI).T.astype(np.uint32),
        "expression/model/mean": rng.normal(size=3 * V).astype(np.float32),
        "expression/model/pcaBasis": orthonormal(3 * V, Ke, 2).astype(np.float32),
        "expression/model/pcaVariance": np.array([9.0, 1.0], np.float32),
        "color/model/mean": rng.uniform(0.2, 0.8, size=3 * V).astype(np.float32),      # [0, 1]
        "color/model/pcaBasis": orthonormal(3 * V, Kc, 3).astype(np.float32),
        "color/model/pcaVariance": np.array([0.01, 0.0025], np.float32),
    }
    if scaled_basis:
        for g in ("shape", "expression", "color"):
            data[f"{g}/model/pcaBasis"] = data[f"{g}/model/pcaBasis"] * np.sqrt(data[f"{g}/model/pcaVariance"])
    if cells_override is not None:
        data["shape/representer/cells"] = cells_override
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f.create_dataset(k, data=v)
    return data


@pytest.mark.parametrize("scaled_basis", [False, True])
def test_bfm2017(tmp_path, scaled_basis):
    path = tmp_path / "model2017-1_bfm_nomouth.h5"
    d = write_bfm2017(path, scaled_basis=scaled_basis)
    m = load_model(path)
    assert m.name == "Basel Face Model 2017"
    assert (m.k_id, m.k_exp, m.k_alb) == (3, 2, 2)
    np.testing.assert_allclose(m.shape_std.numpy(), [8.0, 4.0, 2.0], rtol=1e-5)       # sqrt(variance), mm
    np.testing.assert_allclose(m.expr_std.numpy(), [3.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(m.albedo_std.numpy(), [0.1, 0.05], rtol=1e-5)
    # statismo: instance = mean + U diag(sqrt(var)) alpha (+ the expression model's own mean)
    U = lambda g: d[f"{g}/model/pcaBasis"] / (np.sqrt(d[f"{g}/model/pcaVariance"]) if scaled_basis else 1.0)
    alpha, delta, beta = np.array([1.0, -0.5, 2.0]), np.array([-1.5, 0.4]), np.array([0.3, -2.0])
    ref = (d["shape/model/mean"] + U("shape") @ (alpha * np.sqrt(d["shape/model/pcaVariance"]))
           + d["expression/model/mean"] + U("expression") @ (delta * np.sqrt(d["expression/model/pcaVariance"])))
    np.testing.assert_allclose(model_vertices(m, alpha, delta), ref.reshape(V, 3), atol=1e-4)
    ref_c = d["color/model/mean"] + U("color") @ (beta * np.sqrt(d["color/model/pcaVariance"]))
    np.testing.assert_allclose(model_albedo(m, beta), ref_c.reshape(V, 3), atol=1e-5)
    np.testing.assert_array_equal(m.triangles.numpy(), OCTA_TRI)   # (3, T) 0-based cells, outward: kept
    assert "winding_flipped" not in m.meta
    assert torch.all(m.landmarks == -1)


def test_bfm2017_inward_winding_is_flipped(tmp_path):
    path = tmp_path / "inward.h5"
    write_bfm2017(path, reverse_winding=True)
    m = load_model(path)
    np.testing.assert_array_equal(m.triangles.numpy(), OCTA_TRI)
    assert m.meta["winding_flipped"] is True


def test_bfm2017_errors(tmp_path):
    h5py = pytest.importorskip("h5py", reason="h5py (optional extra [h5]) is not installed")
    bad = OCTA_TRI.T.copy().astype(np.uint32)
    bad[0, 0] = V
    write_bfm2017(tmp_path / "cells.h5", cells_override=bad)
    with pytest.raises(ModelFormatError, match=r"cells\.h5.*cells"):
        load_model(tmp_path / "cells.h5")
    write_bfm2017(tmp_path / "var.h5")
    with h5py.File(tmp_path / "var.h5", "a") as f:
        del f["shape/model/pcaVariance"]
        f.create_dataset("shape/model/pcaVariance", data=np.ones(5, np.float32))
    with pytest.raises(ModelFormatError, match=r"var\.h5.*pcaVariance"):
        load_model(tmp_path / "var.h5")
    write_bfm2017(tmp_path / "nomean.h5")
    with h5py.File(tmp_path / "nomean.h5", "a") as f:
        del f["shape/model/mean"]
    with pytest.raises(ModelFormatError, match=r"nomean\.h5.*shape/model/mean"):
        load_model(tmp_path / "nomean.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("foo", data=np.zeros(3))
    with pytest.raises(ModelFormatError, match=r"other\.h5.*statismo"):
        load_model(tmp_path / "other.h5")


def test_h5py_missing_names_pip_install(tmp_path, monkeypatch):
    path = tmp_path / "model.h5"
    write_bfm2017(path)
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` raise ImportError
    with pytest.raises(ImportError, match=r"model\.h5.*pip install h5py"):
        load_model(path)
    with pytest.raises(ModelFormatError, match="pip install h5py"):
        load_model(path)


# ----------------------------------------------------------------------------------------- FLAME (.pkl)
class _FakeChumpy:
    """Classes that pickle exactly like chumpy's (module chumpy.ch / chumpy.reordering, state = __dict__
    without _parents/_cache), registered in sys.modules only while writing."""

    def __init__(self):
        self.modules = {n: types.ModuleType(n) for n in ("chumpy", "chumpy.ch", "chumpy.reordering")}

        class Ch:
            def __init__(self, x):
                self.x = np.asarray(x, np.float64)
                self._dirty_vars, self._itr, self._make_dense, self._make_sparse = set(), None, False, False
                self._depends_on_deps = {}
                self._parents, self._cache = {}, {"r": None}

            def __getstate__(self):
                d = dict(self.__dict__)
                del d["_parents"], d["_cache"]
                return d

        class Reshape(Ch):
            def __init__(self, a, newshape):
                super().__init__(0.0)
                del self.x
                self.a, self.newshape = a, newshape

        class transpose(Ch):  # noqa: N801 - chumpy's class name
            def __init__(self, a, axes):
                super().__init__(0.0)
                del self.x
                self.a, self.axes = a, axes

        for cls, mod in ((Ch, "chumpy.ch"), (Reshape, "chumpy.reordering"), (transpose, "chumpy.reordering")):
            cls.__module__, cls.__qualname__ = mod, cls.__name__
            setattr(self.modules[mod], cls.__name__, cls)
        self.Ch, self.Reshape, self.transpose = Ch, Reshape, transpose

    def dump(self, obj, path, protocol, monkeypatch):
        with monkeypatch.context() as mp:
            for n, mod in self.modules.items():
                mp.setitem(sys.modules, n, mod)
            with open(path, "wb") as f:
                pickle.dump(obj, f, protocol=protocol)
        assert "chumpy.ch" not in sys.modules or sys.modules["chumpy.ch"] is not self.modules["chumpy.ch"]


def flame_arrays(seed=RNG_SEED):
    rng = np.random.default_rng(seed)
    v_template = OCTA_MM / 1000.0                               # metres
    shapedirs = rng.normal(size=(V, 3, 400)) * 1e-3             # metres per unit beta
    shapedirs[:, :, 7] = 0.0                                    # a dead component stays finite
    return v_template, shapedirs


@pytest.mark.parametrize("protocol", [0, 2])
def test_flame_pickle_without_chumpy(tmp_path, monkeypatch, protocol):
    fake = _FakeChumpy()
    v_template, shapedirs = flame_arrays()
    data = {
        # v_template as a chumpy Reshape of a flat Ch, shapedirs as a transpose of a Ch, like chumpy graphs
        "v_template": fake.Reshape(fake.Ch(v_template.reshape(-1)), (V, 3)),
        "shapedirs": fake.transpose(fake.Ch(np.ascontiguousarray(shapedirs.transpose(2, 1, 0))), (2, 1, 0)),
        "f": OCTA_TRI.astype(np.uint32),
        "posedirs": np.zeros((V, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(np.eye(5, V)),
        "weights": fake.Ch(np.ones((V, 5)) / 5),
        "kintree_table": np.zeros((2, 5), np.int64),
        "bs_style": "lbs", "bs_type": "lrotmin",
    }
    path = tmp_path / "generic_model.pkl"
    fake.dump(data, path, protocol, monkeypatch)
    assert "chumpy" not in sys.modules
    m = load_model(path)
    assert m.name == "FLAME" and (m.k_id, m.k_exp, m.k_alb) == (300, 100, 0)
    np.testing.assert_allclose(m.mean_shape.numpy(), OCTA_MM, atol=1e-4)                    # m -> mm
    col_norms_m = np.linalg.norm(shapedirs[:, :, :300].reshape(-1, 300), axis=0)
    np.testing.assert_allclose(m.shape_std.numpy(), col_norms_m * 1000, rtol=1e-5)
    assert m.shape_std[7] == 0 and torch.all(m.shape_basis[:, :, 7] == 0)
    beta = np.random.default_rng(3).normal(size=400)
    ref = (v_template + np.einsum("vck,k->vc", shapedirs, beta)) * 1000.0                    # FLAME: v + S beta
    np.testing.assert_allclose(model_vertices(m, beta[:300], beta[300:]), ref, atol=1e-3)
    np.testing.assert_array_equal(m.triangles.numpy(), OCTA_TRI)
    torch.testing.assert_close(m.albedo_mean, torch.full((V, 3), 0.6))
    assert torch.all(m.landmarks == -1)
    m2 = load_model(path, flame_shape_components=10)
    assert (m2.k_id, m2.k_exp) == (10, 390)


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_pickle_forbidden_class_is_refused(tmp_path, target):
    marker = tmp_path / "pwned"
    module, name = target.split(".")

    class Evil:
        def __reduce__(self):
            import importlib
            return getattr(importlib.import_module(module), name), ((f"touch {marker}",) if name != "eval"
                                                                    else (f"open({str(marker)!r}, 'w')",))

    path = tmp_path / "evil_model.pkl"
    with open(path, "wb") as f:
        pickle.dump({"v_template": Evil(), "shapedirs": np.zeros((V, 3, 400)), "f": OCTA_TRI}, f, protocol=2)
    with pytest.raises(ModelFormatError, match=r"evil_model\.pkl.*forbidden class") as exc:
        load_model(path)
    assert name in str(exc.value)
    assert not marker.exists()


def test_flame_errors(tmp_path, monkeypatch):
    fake = _FakeChumpy()
    v_template, shapedirs = flame_arrays()
    path = tmp_path / "nokey.pkl"
    fake.dump({"v_template": fake.Ch(v_template), "f": OCTA_TRI}, path, 2, monkeypatch)
    with pytest.raises(ModelFormatError, match=r"nokey\.pkl.*shapedirs"):
        load_model(path)
    path = tmp_path / "shape.pkl"
    fake.dump({"v_template": fake.Ch(v_template), "shapedirs": fake.Ch(shapedirs[:-1]), "f": OCTA_TRI}, path, 2,
              monkeypatch)
    with pytest.raises(ModelFormatError, match=r"shape\.pkl.*shapedirs"):
        load_model(path)
    path = tmp_path / "faces.pkl"
    fake.dump({"v_template": fake.Ch(v_template), "shapedirs": fake.Ch(shapedirs), "f": OCTA_TRI + 1}, path, 2,
              monkeypatch)
    with pytest.raises(ModelFormatError, match=r"faces\.pkl.*\bf\b"):
        load_model(path)
    good = tmp_path / "good.pkl"
    fake.dump({"v_template": fake.Ch(v_template), "shapedirs": fake.Ch(shapedirs), "f": OCTA_TRI}, good, 2, monkeypatch)
    data = good.read_bytes()
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match=r"cut\.pkl"):
        load_model(tmp_path / "cut.pkl")


# ----------------------------------------------------------------------------------------- mofa_tk .npz
def random_model(name="synthetic", seed=RNG_SEED):
    rng = np.random.default_rng(seed)
    return FaceModel(
        mean_shape=OCTA_MM, shape_basis=rng.normal(size=(V, 3, 4)), shape_std=rng.uniform(1, 5, 4),
        expr_basis=rng.normal(size=(V, 3, 2)), expr_std=rng.uniform(1, 5, 2), albedo_mean=rng.uniform(0, 1, (V, 3)),
        albedo_basis=rng.normal(size=(V, 3, 3)), albedo_std=rng.uniform(0, 0.1, 3), triangles=OCTA_TRI,
        landmarks=ibug_lm(), name=name)


def test_mofa_npz_roundtrip(tmp_path):
    ref = random_model("my model")
    path = tmp_path / "model.npz"
    ref.save(path)
    m = load_model(path)
    assert m.name == "my model" and m.source == str(path)
    for f in ("mean_shape", "shape_basis", "shape_std", "expr_basis", "expr_std", "albedo_mean", "albedo_basis",
              "albedo_std", "triangles", "landmarks"):
        assert torch.equal(getattr(m, f), getattr(ref, f)), f
    # dispatch is on content: the same bytes under another extension still load
    other = tmp_path / "model.weird"
    other.write_bytes(path.read_bytes())
    assert torch.equal(load_model(other).mean_shape, ref.mean_shape)


def test_mofa_npz_errors(tmp_path):
    ref = random_model()
    arrays = {f: getattr(ref, f).numpy() for f in ("mean_shape", "shape_basis", "shape_std", "expr_basis",
                                                    "expr_std", "albedo_mean", "albedo_basis", "albedo_std",
                                                    "triangles", "landmarks")}
    np.savez(tmp_path / "ver.npz", format=np.array("mofa_tk.FaceModel/99"), **arrays)
    with pytest.raises(ModelFormatError, match=r"ver\.npz.*FaceModel/99"):
        load_model(tmp_path / "ver.npz")
    a = dict(arrays)
    del a["shape_std"]
    np.savez(tmp_path / "miss.npz", format=np.array("mofa_tk.FaceModel/1"), **a)
    with pytest.raises(ModelFormatError, match=r"miss\.npz.*shape_std"):
        load_model(tmp_path / "miss.npz")
    a = dict(arrays)
    a["shape_std"] = a["shape_std"][:3]
    np.savez(tmp_path / "shape.npz", format=np.array("mofa_tk.FaceModel/1"), **a)
    with pytest.raises(ModelFormatError, match=r"shape\.npz.*shape std"):
        load_model(tmp_path / "shape.npz")
    a = dict(arrays)
    a["triangles"] = a["triangles"] + V
    np.savez(tmp_path / "tri.npz", format=np.array("mofa_tk.FaceModel/1"), **a)
    with pytest.raises(ModelFormatError, match=r"tri\.npz.*triangle"):
        load_model(tmp_path / "tri.npz")
    ref.save(tmp_path / "full.npz")
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match=r"cut\.npz"):
        load_model(tmp_path / "cut.npz")
    np.savez(tmp_path / "foreign.npz", foo=np.zeros(3))
    with pytest.raises(ModelFormatError, match=r"foreign\.npz.*keys"):
        load_model(tmp_path / "foreign.npz")


# ----------------------------------------------------------------------------------------- eos cereal
def eigen(a):
    a = np.asarray(a, np.float32)
    if a.ndim == 1:
        a = a[:, None]
    return struct.pack("<ii", *a.shape) + np.asfortranarray(a).tobytes(order="F")


def vec_tri(t):
    return struct.pack("<Q", len(t)) + np.asarray(t, "<i4").tobytes()


def pca(mean, basis, ev, tri):
    return eigen(mean) + eigen(basis) + eigen(ev) + vec_tri(tri)


def string(s):
    return struct.pack("<Q", len(s)) + s.encode()


def blendshapes(shapes):
    return struct.pack("<Q", len(shapes)) + b"".join(string(n) + eigen(d) for n, d in shapes)


def sfm_parts(seed=RNG_SEED):
    rng = np.random.default_rng(seed)
    return dict(mean=OCTA_MM.reshape(-1), basis=orthonormal(3 * V, 3, seed), ev=np.array([400.0, 100.0, 25.0]),
                shapes=[("anger", rng.normal(size=3 * V) * 4), ("surprise", rng.normal(size=3 * V) * 9)],
                uv=rng.uniform(size=(V, 2)))


def sfm_bytes(parts, version=1, expression=None, landmark_defs=None):
    out = struct.pack("<I", version)
    out += pca(parts["mean"], parts["basis"], parts["ev"], OCTA_TRI)
    out += struct.pack("<ii", 0, 1) + struct.pack("<ii", 0, 0) + struct.pack("<ii", 0, 1) + struct.pack("<Q", 0)
    if version >= 2:
        out += expression if expression is not None else b"\x01"
    if version >= 3:
        if landmark_defs is None:
            out += b"\x01"
        else:
            out += b"\x00" + struct.pack("<Q", len(landmark_defs))
            out += b"".join(string(k) + struct.pack("<i", v) for k, v in landmark_defs.items())
    out += struct.pack("<Q", V) + np.asarray(parts["uv"], "<f8").tobytes()
    if version >= 4:
        out += vec_tri(OCTA_TRI)
    return out


def check_sfm_shape(m, parts):
    np.testing.assert_allclose(m.mean_shape.numpy(), OCTA_MM, atol=1e-4)       # already mm
    np.testing.assert_allclose(m.shape_std.numpy(), np.sqrt(parts["ev"]), rtol=1e-5)   # eigenvalues are variances
    alpha = np.array([1.0, -2.0, 0.5])
    ref = parts["mean"] + parts["basis"] @ (alpha * np.sqrt(parts["ev"]))     # eos: mean + U sqrt(ev) alpha
    np.testing.assert_allclose(model_vertices(m, alpha), ref.reshape(V, 3), atol=1e-4)
    np.testing.assert_array_equal(m.triangles.numpy(), OCTA_TRI)
    np.testing.assert_allclose(m.meta["texture_coordinates"], parts["uv"])


def check_blendshapes(m, shapes):
    assert m.k_exp == len(shapes)
    np.testing.assert_allclose(m.expr_std.numpy(), [np.linalg.norm(d) for _, d in shapes], rtol=1e-5)
    assert_unit_columns(m.expr_basis)
    w = np.array([0.3, 1.0])                                                   # blendshape weights
    ref = OCTA_MM.reshape(-1) + sum(wi * d.astype(np.float32) for wi, (_, d) in zip(w, shapes))
    np.testing.assert_allclose(model_vertices(m, None, w), ref.reshape(V, 3), atol=1e-4)
    assert m.meta["expression_names"] == [n for n, _ in shapes]


def test_eos_sfm_with_companions(tmp_path):
    parts = sfm_parts()
    path = tmp_path / "sfm_shape_6.bin"
    path.write_bytes(sfm_bytes(parts))
    m = load_model(path, expressions=None, landmarks=None)
    check_sfm_shape(m, parts)
    assert m.k_exp == 0 and torch.all(m.landmarks == -1)
    # companions beside the model are picked up automatically
    (tmp_path / f"expression_blendshapes_{V}.bin").write_bytes(blendshapes(parts["shapes"]))
    write_mapping(tmp_path / "ibug_to_sfm.txt", {9: 3, 31: 4, 37: 0})
    m = load_model(path)
    assert m.name == "Surrey Face Model"
    check_sfm_shape(m, parts)
    check_blendshapes(m, parts["shapes"])
    expected = np.full(68, -1)
    expected[[8, 30, 36]] = [3, 4, 0]
    np.testing.assert_array_equal(m.landmarks.numpy(), expected)
    # ... unless switched off, or given explicitly under other names
    m = load_model(path, expressions=False, landmarks=False)
    assert m.k_exp == 0 and torch.all(m.landmarks == -1)
    other = tmp_path / "sub"
    other.mkdir()
    (other / "shapes.bin").write_bytes(blendshapes(parts["shapes"][::-1]))
    mp = write_mapping(other / "map.txt", {1: 5}, quoted=True)
    m = load_model(path, expressions=other / "shapes.bin", landmarks=str(mp))
    check_blendshapes(m, parts["shapes"][::-1])
    assert m.landmarks[0] == 5 and int((m.landmarks >= 0).sum()) == 1
    with pytest.raises(FileNotFoundError, match="nothere.bin"):
        load_model(path, expressions=tmp_path / "nothere.bin")


def test_eos_versions_2_to_4(tmp_path):
    parts = sfm_parts()
    # version 2: a PCA expression model (variant index 0); its mean is added to the shape mean
    emean, ebasis, eev = np.random.default_rng(5).normal(size=3 * V), orthonormal(3 * V, 2, 9), np.array([16.0, 1.0])
    expr = b"\x00" + struct.pack("<i", 0) + pca(emean, ebasis, eev, OCTA_TRI)
    path = tmp_path / "model_v2.bin"
    path.write_bytes(sfm_bytes(parts, version=2, expression=expr))
    m = load_model(path)
    assert m.name == "eos morphable model"
    np.testing.assert_allclose(m.expr_std.numpy(), [4.0, 1.0], rtol=1e-5)
    delta = np.array([0.5, -1.0])
    ref = parts["mean"] + emean + ebasis @ (delta * np.sqrt(eev))
    np.testing.assert_allclose(model_vertices(m, None, delta), ref.reshape(V, 3), atol=1e-4)
    # version 3: blendshapes inside (variant index 1) and landmark definitions (1-based iBUG names)
    expr = b"\x00" + struct.pack("<i", 1) + blendshapes(parts["shapes"])
    path = tmp_path / "model_v3.bin"
    path.write_bytes(sfm_bytes(parts, version=3, expression=expr, landmark_defs={"31": 4, "9": 2, "nose": 1}))
    m = load_model(path)
    check_sfm_shape(m, parts)
    check_blendshapes(m, parts["shapes"])
    assert m.landmarks[30] == 4 and m.landmarks[8] == 2 and int((m.landmarks >= 0).sum()) == 2
    # version 4: no expression model, texture triangle indices at the end
    path = tmp_path / "model_v4.bin"
    path.write_bytes(sfm_bytes(parts, version=4))
    m = load_model(path, expressions=False)
    check_sfm_shape(m, parts)
    assert m.k_exp == 0


def test_eos_truncated_everywhere(tmp_path):
    parts = sfm_parts()
    data = sfm_bytes(parts, version=3, expression=b"\x00" + struct.pack("<i", 1) + blendshapes(parts["shapes"]),
                     landmark_defs={"31": 4})
    cuts = sorted(set([0, 1, 3, 4, 7, 11, 12, 13, 50, len(data) // 3, len(data) // 2, len(data) - 100,
                       len(data) - 17, len(data) - 1]))
    for n in cuts:
        path = tmp_path / f"trunc_{n}.bin"
        path.write_bytes(data[:n])
        with pytest.raises(ModelFormatError, match=rf"trunc_{n}\.bin") as exc:
            load_model(path, expressions=False)
        assert n == 0 or "byte" in str(exc.value), str(exc.value)
    path = tmp_path / "trailing.bin"
    path.write_bytes(data + b"\x00\x00")
    with pytest.raises(ModelFormatError, match=r"trailing\.bin.*unexpected bytes"):
        load_model(path)


def test_eos_bad_content(tmp_path):
    parts = sfm_parts()
    good = sfm_bytes(parts)
    # triangle index out of range
    bad_tri = OCTA_TRI.copy()
    bad_tri[2, 1] = V
    data = struct.pack("<I", 1) + pca(parts["mean"], parts["basis"], parts["ev"], bad_tri) + good[4 + len(
        pca(parts["mean"], parts["basis"], parts["ev"], OCTA_TRI)):]
    (tmp_path / "tri.bin").write_bytes(data)
    with pytest.raises(ModelFormatError, match=r"tri\.bin.*triangle"):
        load_model(tmp_path / "tri.bin")
    # basis with the wrong row count
    data = struct.pack("<I", 1) + pca(parts["mean"], parts["basis"][:-3], parts["ev"], OCTA_TRI) + good[4 + len(
        pca(parts["mean"], parts["basis"], parts["ev"], OCTA_TRI)):]
    (tmp_path / "rows.bin").write_bytes(data)
    with pytest.raises(ModelFormatError, match=r"rows\.bin.*basis"):
        load_model(tmp_path / "rows.bin")
    # blendshapes of the wrong size, a truncated blendshapes file, and a blendshapes file loaded as a model
    path = tmp_path / "sfm_shape.bin"
    path.write_bytes(good)
    (tmp_path / "wrong.bin").write_bytes(blendshapes([("a", np.ones(3 * V + 3))]))
    with pytest.raises(ModelFormatError, match=r"wrong\.bin.*blendshape 'a'"):
        load_model(path, expressions=tmp_path / "wrong.bin")
    full = blendshapes(parts["shapes"])
    (tmp_path / "short.bin").write_bytes(full[:-5])
    with pytest.raises(ModelFormatError, match=r"short\.bin.*byte"):
        load_model(path, expressions=tmp_path / "short.bin")
    (tmp_path / "expression_only.bin").write_bytes(full)
    with pytest.raises(ModelFormatError, match=r"expression_only\.bin.*expressions="):
        load_model(tmp_path / "expression_only.bin")
    with pytest.raises(ValueError, match="expressions="):
        load_model(_npz_path(tmp_path), expressions=tmp_path / "short.bin")


def _npz_path(tmp_path):
    p = tmp_path / "m.npz"
    random_model().save(p)
    return p


# ----------------------------------------------------------------------------------------- landmark mapping file
def test_read_landmark_mapping(tmp_path):
    p = write_mapping(tmp_path / "map.txt", {1: 0, 9: 33, 68: 404})
    lm = read_landmark_mapping(p)
    expected = np.full(68, -1)
    expected[[0, 8, 67]] = [0, 33, 404]
    np.testing.assert_array_equal(lm, expected)
    np.testing.assert_array_equal(read_landmark_mapping(write_mapping(tmp_path / "q.txt", {1: 0, 9: 33, 68: 404},
                                                                      quoted=True)), expected)
    with pytest.raises(ModelFormatError, match=r"map\.txt.*out of range"):
        read_landmark_mapping(p, n_vertices=100)
    for name, mapping, msg in (("k0.txt", {0: 1}, "1..68"), ("k69.txt", {69: 1}, "1..68")):
        with pytest.raises(ModelFormatError, match=rf"{name}.*{msg}"):
            read_landmark_mapping(write_mapping(tmp_path / name, mapping))
    (tmp_path / "dup.txt").write_text("[landmark_mappings]\n1 = 3\n1 = 4\n")
    with pytest.raises(ModelFormatError, match=r"dup\.txt.*twice"):
        read_landmark_mapping(tmp_path / "dup.txt")
    (tmp_path / "nosec.txt").write_text("1 = 3\n")
    with pytest.raises(ModelFormatError, match=r"nosec\.txt.*landmark_mappings"):
        read_landmark_mapping(tmp_path / "nosec.txt")
    (tmp_path / "junk.txt").write_text("[landmark_mappings]\n1 = abc\n")
    with pytest.raises(ModelFormatError, match=r"junk\.txt.*line 2"):
        read_landmark_mapping(tmp_path / "junk.txt")
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        read_landmark_mapping(tmp_path / "absent.txt")


# ----------------------------------------------------------------------------------------- ICT-FaceKit
# A 6-vertex mesh in centimetres with 2 quads and 2 triangles (some with v/vt/vn index forms).
ICT_CM = np.array([[-7, 3, 9], [7, 3, 9], [7, -6, 8], [-7, -6, 8], [0, 0, 12], [0, 8, 5]], np.float64)
ICT_POLYS = [[0, 1, 2, 3], [3, 2, 4], [0, 4, 1, 5], [5, 1, 0]]
ICT_TRI = np.array([[0, 1, 2], [0, 2, 3], [3, 2, 4], [0, 4, 1], [0, 1, 5], [5, 1, 0]])  # quads split by hand
ICT_EXPR = ["jawOpen", "eyeBlink_L", "mouthSmile_L"]


def ict_data(seed=RNG_SEED):
    rng = np.random.default_rng(seed)
    ids = [ICT_CM + rng.normal(size=ICT_CM.shape) * s for s in (0.4, 0.2, 0.1)]
    exps = [ICT_CM + rng.normal(size=ICT_CM.shape) * s for s in (0.8, 0.3)]   # jawOpen, eyeBlink_L
    return ids, exps


def write_obj(path, verts, polys, forms=True):
    lines = ["# ICT FaceKit test mesh", "mtllib ICTFaceModelMaterial.mtl", "o face"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"vt {i / 10:.3f} {i / 20:.3f}" for i in range(len(verts) + 2)]
    lines += ["vn 0 0 1", "usemtl M_Face", "s 1"]
    for j, poly in enumerate(polys):
        if not forms or j == 0:
            toks = [str(i + 1) for i in poly]
        elif j == 1:
            toks = [f"{i + 1}/{i + 2}" for i in poly]
        elif j == 2:
            toks = [f"{i + 1}/{i + 2}/1" for i in poly]
        else:
            toks = [f"{i + 1}//1" for i in poly]
        lines.append("f " + " ".join(toks))
    path.write_text("\n".join(lines) + "\n")


def write_ict_folder(folder, ids, exps, landmarks=None):
    folder.mkdir(exist_ok=True)
    write_obj(folder / "generic_neutral_mesh.obj", ICT_CM, ICT_POLYS)
    for i, v in enumerate(ids):
        write_obj(folder / f"identity{i:03d}.obj", v, ICT_POLYS, forms=False)
    write_obj(folder / "identity004.obj", ICT_CM * 2, ICT_POLYS)          # after a gap: not read (like ICT)
    write_obj(folder / "jawOpen.obj", exps[0], ICT_POLYS)
    write_obj(folder / "eyeBlink_L.obj", exps[1], ICT_POLYS)
    write_obj(folder / "PupilDilate_L.obj", ICT_CM * 3, ICT_POLYS)        # not in the expression list: ignored
    lm = list(ibug_lm(2)) if landmarks is None else landmarks
    (folder / "vertex_indices.json").write_text(json.dumps({
        "expressions": ICT_EXPR, "fitting_expressions": ICT_EXPR, "idx_to_landmark_verts": [int(i) for i in lm],
        "idx_to_rigid_verts": [0, 1]}))


def check_ict(m, ids, exps, n_exp):
    np.testing.assert_allclose(m.mean_shape.numpy(), ICT_CM * 10.0, atol=1e-4)      # cm -> mm
    modes_mm = [(v - ICT_CM) * 10.0 for v in ids]
    np.testing.assert_allclose(m.shape_std.numpy(), [np.linalg.norm(d) for d in modes_mm], rtol=1e-5)
    assert_unit_columns(m.shape_basis)
    # ICT: mesh = neutral + sum w_i (identity_i - neutral), w ~ N(0, 1); expression weights in [0, 1]
    w = np.array([0.7, -1.3, 2.0])
    e = np.array([0.4, 1.0])[:n_exp]
    ref_cm = ICT_CM + sum(wi * (v - ICT_CM) for wi, v in zip(w, ids)) + sum(ei * (v - ICT_CM) for ei, v in zip(e, exps))
    np.testing.assert_allclose(model_vertices(m, w, e), ref_cm * 10.0, atol=1e-3)
    np.testing.assert_array_equal(m.triangles.numpy(), ICT_TRI)
    np.testing.assert_array_equal(m.landmarks.numpy(), ibug_lm(2))
    torch.testing.assert_close(m.albedo_mean, torch.full((V, 3), 0.6))


def test_ict_folder(tmp_path):
    ids, exps = ict_data()
    folder = tmp_path / "FaceXModel"
    write_ict_folder(folder, ids, exps)
    m = load_model(folder)
    assert m.name.startswith("ICT-FaceKit") and (m.k_id, m.k_exp, m.k_alb) == (3, 2, 0)
    check_ict(m, ids, exps, 2)
    assert m.meta["identity_names"] == ["identity000", "identity001", "identity002"]
    assert m.meta["expression_names"] == ["jawOpen", "eyeBlink_L"]
    assert m.meta["missing_expressions"] == ["mouthSmile_L"]
    # the neutral OBJ's path also identifies the folder
    assert torch.equal(load_model(folder / "generic_neutral_mesh.obj").mean_shape, m.mean_shape)


def test_ict_npz(tmp_path):
    ids, exps = ict_data()
    faces_quad = np.array([p + [-1] * (4 - len(p)) for p in ICT_POLYS], np.int32)
    path = tmp_path / "ict_facekit_light.npz"
    np.savez(path, neutral_vertices=ICT_CM.astype(np.float32), faces_quad=faces_quad,
             identity_modes=np.stack([v - ICT_CM for v in ids]).astype(np.float32),
             identity_names=np.array(["identity000", "identity001", "identity002"]),
             expression_modes=np.stack([v - ICT_CM for v in exps]).astype(np.float32),
             expression_names=np.array(["jawOpen", "eyeBlink_L"]),
             landmarks_multipie68=ibug_lm(2).astype(np.int64))
    m = load_model(path)
    check_ict(m, ids, exps, 2)
    assert m.meta["expression_names"] == ["jawOpen", "eyeBlink_L"]
    # inconsistent sizes and bad indices
    np.savez(tmp_path / "bad_modes.npz", neutral_vertices=ICT_CM, faces_quad=faces_quad,
             identity_modes=np.zeros((3, V + 1, 3)), expression_modes=np.zeros((2, V, 3)))
    with pytest.raises(ModelFormatError, match=r"bad_modes\.npz.*identity_modes"):
        load_model(tmp_path / "bad_modes.npz")
    fq = faces_quad.copy()
    fq[0, 3] = V
    np.savez(tmp_path / "bad_faces.npz", neutral_vertices=ICT_CM, faces_quad=fq, identity_modes=np.zeros((3, V, 3)),
             expression_modes=np.zeros((2, V, 3)))
    with pytest.raises(ModelFormatError, match=r"bad_faces\.npz.*faces_quad"):
        load_model(tmp_path / "bad_faces.npz")
    np.savez(tmp_path / "bad_lm.npz", neutral_vertices=ICT_CM, faces_quad=faces_quad,
             identity_modes=np.zeros((3, V, 3)), expression_modes=np.zeros((2, V, 3)),
             landmarks_multipie68=np.arange(67))
    with pytest.raises(ModelFormatError, match=r"bad_lm\.npz.*landmarks_multipie68"):
        load_model(tmp_path / "bad_lm.npz")


def test_ict_folder_errors(tmp_path):
    ids, exps = ict_data()
    folder = tmp_path / "f1"
    write_ict_folder(folder, ids, exps)
    write_obj(folder / "identity001.obj", ids[1][:-1], [[0, 1, 2]])
    with pytest.raises(ModelFormatError, match=r"identity001\.obj.*5 vertices"):
        load_model(folder)
    folder = tmp_path / "f2"
    write_ict_folder(folder, ids, exps)
    write_obj(folder / "generic_neutral_mesh.obj", ICT_CM, ICT_POLYS + [[0, 1, 9]])
    with pytest.raises(ModelFormatError, match=r"generic_neutral_mesh\.obj.*out of range"):
        load_model(folder)
    folder = tmp_path / "f3"
    write_ict_folder(folder, ids, exps, landmarks=[0] * 60)
    with pytest.raises(ModelFormatError, match=r"vertex_indices\.json.*68"):
        load_model(folder)
    folder = tmp_path / "f4"
    write_ict_folder(folder, ids, exps)
    (folder / "vertex_indices.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match=r"vertex_indices\.json"):
        load_model(folder)
    folder = tmp_path / "f5"
    write_ict_folder(folder, ids, exps)
    with open(folder / "generic_neutral_mesh.obj", "a") as f:
        f.write("f 1 2\n")
    with pytest.raises(ModelFormatError, match=r"generic_neutral_mesh\.obj.*line \d+"):
        load_model(folder)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ModelFormatError, match=r"empty_dir.*generic_neutral_mesh"):
        load_model(empty)


# ----------------------------------------------------------------------------------------- dispatch
def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model.mat"):
        load_model(tmp_path / "no_such_model.mat")
    (tmp_path / "noise.dat").write_bytes(bytes(range(7, 200)))
    with pytest.raises(ModelFormatError, match=r"noise\.dat.*unknown model format"):
        load_model(tmp_path / "noise.dat")
    (tmp_path / "empty.mat").write_bytes(b"")
    with pytest.raises(ModelFormatError, match=r"empty\.mat.*empty"):
        load_model(tmp_path / "empty.mat")
    write_obj(tmp_path / "mesh.obj", ICT_CM, ICT_POLYS)
    with pytest.raises(ModelFormatError, match=r"mesh\.obj.*not a morphable model"):
        load_model(tmp_path / "mesh.obj")


def test_dispatch_ignores_extension(tmp_path):
    """A BFM2009 .mat renamed .bin and an eos model renamed .mat load by content."""
    scipy.io.savemat(tmp_path / "x.mat", bfm2009_arrays())
    (tmp_path / "renamed.bin").write_bytes((tmp_path / "x.mat").read_bytes())
    assert load_model(tmp_path / "renamed.bin").name == "Basel Face Model 2009"
    (tmp_path / "eos.mat").write_bytes(sfm_bytes(sfm_parts()))
    assert load_model(tmp_path / "eos.mat").k_id == 3

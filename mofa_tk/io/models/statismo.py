"""Basel Face Model 2017 (statismo HDF5)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import (basis_matrix, fail, import_h5py, model_parts, outward_flux, std_vector, triangle_array,
                     unit_columns, vec3)


# ===================================================================================== BFM2017 (statismo .h5)
def read_bfm2017(p: Path) -> dict:
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
    h5py = import_h5py(p)
    with h5py.File(p, "r") as f:
        def ds(name, required=True):
            if name not in f or not isinstance(f[name], h5py.Dataset):
                if required:
                    fail(p, f"BFM2017/statismo file has no dataset {name!r}")
                return None
            return np.asarray(f[name][()])

        mean = vec3(p, ds("shape/model/mean"), "shape/model/mean")
        V = mean.shape[0]
        basis, std = _statismo_pca(p, ds("shape/model/pcaBasis"), ds("shape/model/pcaVariance"), V, "shape")
        cells = ds("shape/representer/cells")
        cells = np.asarray(cells)
        if cells.ndim == 2 and cells.shape[0] == 3 and cells.shape[1] != 3:
            cells = cells.T
        tri = triangle_array(p, cells, V, "shape/representer/cells", base=0)
        expr = {}
        if "expression" in f:
            emean = vec3(p, ds("expression/model/mean"), "expression/model/mean")
            if emean.shape[0] != V:
                fail(p, f"expression/model/mean has {emean.shape[0]} vertices, shape model has {V}")
            eb, es = _statismo_pca(p, ds("expression/model/pcaBasis"), ds("expression/model/pcaVariance"), V,
                                   "expression")
            mean = mean + emean
            expr = dict(expr_basis=eb, expr_std=es)
        alb = {}
        if "color" in f:
            cmean = vec3(p, ds("color/model/mean"), "color/model/mean")
            if cmean.shape[0] != V:
                fail(p, f"color/model/mean has {cmean.shape[0]} vertices, shape model has {V}")
            cb, cs = _statismo_pca(p, ds("color/model/pcaBasis"), ds("color/model/pcaVariance"), V, "color")
            alb = dict(albedo_mean=cmean, albedo_basis=cb, albedo_std=cs)
    meta = {"format": "bfm2017"}
    if outward_flux(mean, tri) < 0:
        tri = tri[:, [0, 2, 1]]
        meta["winding_flipped"] = True
    return model_parts(mean, basis, std, tri, name="Basel Face Model 2017", meta=meta, **expr, **alb)


def _statismo_pca(p, basis, var, V, what):
    B = basis_matrix(p, basis, V, f"{what}/model/pcaBasis")
    var = std_vector(p, var, B.shape[1], f"{what}/model/pcaVariance")
    if np.any(var < 0):
        fail(p, f"{what}/model/pcaVariance has negative variances")
    U, norms = unit_columns(B)
    sd = np.sqrt(var)
    ok = norms > 0
    if np.all(np.abs(norms[ok] - 1.0) < 0.05):
        std = sd * norms
    elif np.allclose(norms[ok], sd[ok], rtol=0.05):
        std = norms  # columns already scaled by sqrt(variance)
    else:
        fail(p, f"{what}/model/pcaBasis columns are neither unit-norm nor scaled by sqrt(pcaVariance) "
                 f"(norms {norms[:3]}..., sqrt(variance) {sd[:3]}...)")
    return U.reshape(V, 3, -1), std

"""Tests of the procedural built-in face model (mofa_tk.face.builtin).

Every check recomputes what it asserts from the raw arrays with plain NumPy/SciPy (edge counting, triangle
areas and normals, Gram matrices, nearest mirrored vertices), independently of how the model was built.
"""
import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from mofa_tk.face.builtin import builtin_model
from mofa_tk.face.model import FaceModel

RESOLUTIONS = ("default", "bfm")


@pytest.fixture(scope="module", params=RESOLUTIONS)
def model(request):
    return builtin_model(request.param)


def _np(t):
    return t.detach().cpu().numpy()


def _edges(tris):
    """Directed edges (3T, 2) of the triangles, in winding order."""
    return np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])


def _morph(m, k_expr=None, c_expr=0.0, k_shape=None, c_shape=0.0):
    v = _np(m.mean_shape).astype(np.float64)
    if k_expr is not None:
        v = v + _np(m.expr_basis)[:, :, k_expr] * float(m.expr_std[k_expr]) * c_expr
    if k_shape is not None:
        v = v + _np(m.shape_basis)[:, :, k_shape] * float(m.shape_std[k_shape]) * c_shape
    return v


# ----------------------------------------------------------------------------------------------- API
def test_invalid_resolution_names_argument_and_choices():
    for bad in ("high", "", None, 3):
        with pytest.raises(ValueError) as e:
            builtin_model(bad)
        msg = str(e.value)
        assert "resolution" in msg and "default" in msg and "bfm" in msg


def test_cached_and_named():
    a, b = builtin_model(), builtin_model("default")
    assert a is b
    assert isinstance(a, FaceModel)
    assert a.name == "mofa_tk builtin (default)" and a.source == "builtin:default"
    m = builtin_model("bfm")
    assert m.name == "mofa_tk builtin (bfm)" and m.source == "builtin:bfm"


def test_sizes_and_dtypes(model):
    V, T = model.n_vertices, model.n_triangles
    if model.source == "builtin:bfm":
        assert V == 35709
        assert 69000 <= T <= 71500
    else:
        assert 5000 <= V <= 15000
        assert 1.8 * V <= T <= 2.05 * V
    assert (model.k_id, model.k_exp, model.k_alb) == (80, 64, 80)
    assert model.mean_shape.dtype == torch.float32 and model.triangles.dtype == torch.int32
    assert model.landmarks.dtype == torch.int64 and tuple(model.landmarks.shape) == (68,)
    for key, k in (("shape_names", 80), ("expr_names", 64), ("albedo_names", 80)):
        names = model.meta[key]
        assert len(names) == k and len(set(names)) == k


def test_deterministic_rebuild_and_fingerprint():
    import mofa_tk.face.builtin as bi

    a = bi._build.__wrapped__("default")          # fresh builds, bypassing the cache
    b = bi._build.__wrapped__("default")
    for f in ("mean_shape", "shape_basis", "shape_std", "expr_basis", "expr_std", "albedo_mean",
              "albedo_basis", "albedo_std", "triangles", "landmarks"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert a.meta["shape_names"] == b.meta["shape_names"]
    # the cached model is the same as a fresh build
    c = builtin_model("default")
    assert torch.equal(c.mean_shape, a.mean_shape) and torch.equal(c.triangles, a.triangles)
    # fingerprint of this exact model; a change here means the built-in model changed (update docs/images)
    P = _np(a.mean_shape).astype(np.float64)
    tris = _np(a.triangles).astype(np.int64)
    fp = dict(V=a.n_vertices, T=a.n_triangles, sumP=P.sum(axis=0), sumsq=(P ** 2).sum(),
              tri=int(tris.sum()), tri_sq=int((tris ** 2).sum() % 1000003), lm=_np(a.landmarks).tolist(),
              alb=_np(a.albedo_mean).astype(np.float64).sum(axis=0))
    assert (fp["V"], fp["T"]) == EXPECTED_FP["V_T"]
    np.testing.assert_allclose(fp["sumP"], EXPECTED_FP["sumP"], rtol=1e-6, atol=1e-2)
    np.testing.assert_allclose(fp["sumsq"], EXPECTED_FP["sumsq"], rtol=1e-7)
    np.testing.assert_allclose(fp["alb"], EXPECTED_FP["alb"], rtol=1e-6)
    assert fp["tri"] == EXPECTED_FP["tri"] and fp["tri_sq"] == EXPECTED_FP["tri_sq"]
    assert fp["lm"] == EXPECTED_FP["lm"]


# Fingerprint of builtin_model("default"). Floats are compared with a tolerance so that the last-bit
# differences of exp/sin between CPUs and NumPy builds do not matter; integers exactly.
EXPECTED_FP = {
    "V_T": (11129, 21716),
    "sumP": [0.0, 72065.3968, 473925.3062],
    "sumsq": 80099096.119,
    "tri": 362251608,
    "tri_sq": 180673,
    "lm": [6115, 4934, 3801, 2722, 1819, 1022, 612, 245, 84, 267, 656, 1090, 1909, 2822, 3903, 5038, 6223,
           7884, 8022, 8158, 8291, 8168, 8184, 8317, 8194, 8070, 7946, 6843, 5903, 5115, 4475, 3846, 3726,
           3729, 3732, 3858, 6818, 7093, 7099, 6699, 6559, 6553, 6717, 7127, 7133, 6868, 6593, 6587, 2409,
           2647, 2768, 2772, 2776, 2663, 2439, 2093, 1978, 1974, 1970, 2077, 2410, 2420, 2424, 2428, 2438,
           11119, 11115, 11111],
    "alb": [6633.90656, 4131.79219, 3169.34347],
}


# ----------------------------------------------------------------------------------------------- mesh
def test_triangles_valid_and_nondegenerate(model):
    P = _np(model.mean_shape).astype(np.float64)
    tris = _np(model.triangles).astype(np.int64)
    V = len(P)
    assert tris.min() >= 0 and tris.max() < V
    assert np.all((tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2]))
    assert len(np.unique(np.sort(tris, axis=1), axis=0)) == len(tris)          # no duplicate triangles
    assert np.array_equal(np.unique(tris), np.arange(V))                        # every vertex is used
    e1, e2 = P[tris[:, 1]] - P[tris[:, 0]], P[tris[:, 2]] - P[tris[:, 0]]
    area = 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)
    assert area.min() > 0.02                                                    # mm^2
    # well shaped: smallest angle of every triangle
    def angle(a, b, c):
        u, w = P[b] - P[a], P[c] - P[a]
        cos = (u * w).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(w, axis=1))
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))
    t = tris
    min_angle = np.minimum(np.minimum(angle(t[:, 0], t[:, 1], t[:, 2]), angle(t[:, 1], t[:, 2], t[:, 0])),
                           angle(t[:, 2], t[:, 0], t[:, 1]))
    assert min_angle.min() > 10.0
    assert np.percentile(min_angle, 1) > 25.0


def test_mesh_is_one_consistently_oriented_manifold_sheet(model):
    tris = _np(model.triangles).astype(np.int64)
    V = model.n_vertices
    d = _edges(tris)
    # consistent orientation: no directed edge twice (an interior edge appears once in each direction)
    assert len(np.unique(d, axis=0)) == len(d)
    und, counts = np.unique(np.sort(d, axis=1), axis=0, return_counts=True)
    assert counts.max() <= 2
    # each edge used by two triangles is used in both directions
    dset = set(map(tuple, d))
    for a, b in und[counts == 2][:: max(1, len(und) // 5000)]:
        assert (a, b) in dset and (b, a) in dset
    # boundary edges: every boundary vertex has exactly two boundary edges (no bow-ties)
    bnd = und[counts == 1]
    deg = np.bincount(bnd.ravel(), minlength=V)
    assert set(np.unique(deg)) <= {0, 2}
    # one connected piece
    A = coo_matrix((np.ones(len(d)), (d[:, 0], d[:, 1])), shape=(V, V))
    n_comp, _ = connected_components(A, directed=False)
    assert n_comp == 1
    # topology: a disk with the mouth slit as one hole -> Euler characteristic 0, two boundary loops
    E = len(und)
    assert V - E + len(tris) == 0
    Ab = coo_matrix((np.ones(len(bnd)), (bnd[:, 0], bnd[:, 1])), shape=(V, V))
    n_b, labels = connected_components(Ab, directed=False)
    loops = len(np.unique(labels[deg > 0]))
    assert loops == 2


def test_front_faces_point_to_viewer(model):
    P = _np(model.mean_shape).astype(np.float64)
    tris = _np(model.triangles).astype(np.int64)
    n = np.cross(P[tris[:, 1]] - P[tris[:, 0]], P[tris[:, 2]] - P[tris[:, 0]])   # 2 * area * normal
    c = P[tris].mean(axis=1)
    front = (np.abs(c[:, 0]) < 40) & (np.abs(c[:, 1]) < 80)
    area = np.linalg.norm(n, axis=1)
    frac = area[front & (n[:, 2] > 0)].sum() / area[front].sum()
    assert frac > 0.9
    # the whole sheet's vector area points forwards, and sideways parts point outwards
    assert n[:, 2].sum() > 0.5 * np.linalg.norm(n.sum(0))
    side = c[:, 0] > 60
    assert (n[side, 0] > 0).mean() > 0.95
    assert (n[c[:, 0] < -60, 0] < 0).mean() > 0.95


def test_dimensions_and_symmetry(model):
    P = _np(model.mean_shape).astype(np.float64)
    width = P[:, 0].max() - P[:, 0].min()
    height = P[:, 1].max() - P[:, 1].min()
    assert 140 <= width <= 150
    assert 190 <= height <= 210
    lm = _np(model.landmarks)
    nose = P[lm[30]]
    assert 90 <= nose[2] <= 100
    assert nose[2] >= P[:, 2].max() - 1.0                      # the nose tip is the front-most point
    assert abs(nose[0]) < 1.0
    # origin near the middle of the head: sides of the mask reach behind z = 30, centre between them
    assert P[:, 2].min() < 30 and abs(P[:, 0].mean()) < 1.0
    # mirror symmetric about x = 0 (the "bfm" mesh may have a few extra boundary half-cells)
    mirrored = P * np.array([-1.0, 1.0, 1.0])
    dist, _ = cKDTree(P).query(mirrored)
    assert np.mean(dist < 1e-3) > 0.999


# ----------------------------------------------------------------------------------------------- landmarks
def test_landmarks_follow_ibug_layout(model):
    P = _np(model.mean_shape).astype(np.float64)
    lm = _np(model.landmarks)
    assert lm.min() >= 0 and len(np.unique(lm[:60])) >= 58
    L = P[lm]
    x, y, z = L[:, 0], L[:, 1], L[:, 2]
    assert np.argmax(z) == 30                                  # nose tip is the most protruding landmark
    assert np.argmin(y) == 8                                   # chin is the lowest
    assert np.all(np.diff(x[0:17]) > 0)                        # jaw from the subject's right (-x) to left
    assert np.all(x[0:8] < 0) and np.all(x[9:17] > 0) and abs(x[8]) < 1
    assert np.all(np.diff(y[0:9]) < 0) and np.all(np.diff(y[8:17]) > 0)
    assert np.all(x[17:22] < 0) and np.all(x[22:27] > 0) and np.all(np.diff(x[17:27]) > 0)
    assert np.all(x[36:42] < 0) and np.all(x[42:48] > 0)
    assert x[36] < x[39] and x[42] < x[45]                     # outer/inner corners
    assert y[37] > y[41] and y[38] > y[40] and y[43] > y[47] and y[44] > y[46]   # upper above lower lid
    assert np.all(np.diff(y[27:31]) < 0) and np.all(np.abs(x[27:31]) < 1)       # bridge down to the tip
    assert np.all(np.diff(x[31:36]) > 0) and np.all(y[31:36] < y[30])
    assert np.all(y[17:27] > y[36:48].max())                   # brows above the eyes
    mouth = L[48:68]
    assert np.all(mouth[:, 1] < y[33]) and np.all(mouth[:, 1] > y[8])   # mouth between nose and chin
    assert x[48] < x[60] < x[64] < x[54]
    assert y[51] > y[62] >= y[66] > y[57]                      # upper lip above the mouth line above lower lip
    assert y[33] - y[51] > 5 and y[57] - y[8] > 20
    # eyes: symmetric pairs
    np.testing.assert_allclose(L[36:42, 0], -L[[45, 44, 43, 42, 47, 46], 0], atol=1e-3)


def test_landmarks_move_with_expressions(model):
    names = model.meta["expr_names"]
    lm = _np(model.landmarks)
    L0 = _morph(model)[lm]
    # jaw open parts the lips: lower inner lip and chin move down, upper lip stays
    L = _morph(model, names.index("jaw_open"), 2.0)[lm]
    assert L[66, 1] - L0[66, 1] < -8 and L[8, 1] - L0[8, 1] < -8
    assert abs(L[62, 1] - L0[62, 1]) < 1.0
    assert L[62, 1] - L[66, 1] > 8                              # the mouth opens
    # smile lifts the mouth corners and pulls them outwards
    L = _morph(model, names.index("smile"), 2.0)[lm]
    assert L[48, 1] - L0[48, 1] > 3 and L[54, 1] - L0[54, 1] > 3
    assert L[54, 0] - L[48, 0] > L0[54, 0] - L0[48, 0] + 4
    # eye close brings the upper lid onto the lower lid
    L = _morph(model, names.index("eye_close"), 2.5)[lm]
    gap0, gap = L0[37, 1] - L0[41, 1], L[37, 1] - L[41, 1]
    assert gap < 0.25 * gap0
    # brow raise lifts the brows
    L = _morph(model, names.index("brow_raise"), 1.0)[lm]
    assert np.all(L[17:27, 1] - L0[17:27, 1] > 2)
    # identity: face width widens the jaw contour
    L = _morph(model, k_shape=model.meta["shape_names"].index("face_width"), c_shape=2.0)[lm]
    assert (L[16, 0] - L[0, 0]) - (L0[16, 0] - L0[0, 0]) > 8


# ----------------------------------------------------------------------------------------------- components
def test_bases_orthonormal_with_positive_decaying_std(model):
    for basis, std, key, prefix in ((model.shape_basis, model.shape_std, "shape_names", "shape_smooth_"),
                                    (model.expr_basis, model.expr_std, "expr_names", "expr_local_"),
                                    (model.albedo_basis, model.albedo_std, "albedo_names", "albedo_smooth_")):
        B = _np(basis).astype(np.float64).reshape(-1, basis.shape[2])
        G = B.T @ B
        assert np.abs(G - np.eye(G.shape[0])).max() < 1e-5
        s = _np(std).astype(np.float64)
        assert np.all(s > 0)
        names = model.meta[key]
        tail = np.array([n.startswith(prefix) for n in names])
        assert tail.sum() >= 40 and not tail[:10].any()
        assert np.all(np.diff(s[tail]) < 0)


def test_semantic_components_have_their_designed_size(model):
    V = model.n_vertices
    # std is the L2 norm of the one-unit displacement: per-vertex effects are a few mm at most
    for basis, std, peak_key, lo, hi in ((model.shape_basis, model.shape_std, "shape_peak_mm", 1.0, 8.0),
                                         (model.expr_basis, model.expr_std, "expr_peak_mm", 0.5, 12.0)):
        d = _np(basis).astype(np.float64) * _np(std)[None, None, :]
        peak = np.linalg.norm(d, axis=1).max(axis=0)
        assert np.all(peak[:20] > lo) and np.all(peak[:20] < hi)
        rms = np.sqrt((d ** 2).sum(axis=(0, 1)) / V)
        np.testing.assert_allclose(rms, _np(std) / np.sqrt(V), rtol=1e-4)
        assert len(model.meta[peak_key]) == basis.shape[2]


def test_albedo_range_and_semantics(model):
    a = _np(model.albedo_mean).astype(np.float64)
    assert a.min() >= 0.0 and a.max() <= 1.0
    lm = _np(model.landmarks)
    P = _np(model.mean_shape)
    skin = a[np.argmin(np.hypot(P[:, 0] - 0, P[:, 1] - 70) + 1e3 * (P[:, 2] < 0))]     # forehead
    lip = a[np.argmin(np.hypot(P[:, 0], P[:, 1] - 0.5 * (P[lm[57], 1] + P[lm[66], 1])) + 1e3 * (P[:, 2] < 0))]
    brow = a[lm[19]]
    assert lip[0] / lip[1] > 1.3 * skin[0] / skin[1]            # lips redder than skin
    assert brow.sum() < 0.5 * skin.sum()                         # brows darker
    cheek = a[np.argmin(np.hypot(P[:, 0] - 42, P[:, 1] + 6))]
    assert cheek[0] / cheek[1] > skin[0] / skin[1]               # pinker cheeks
    assert 0.3 < skin[0] < 0.9 and skin[0] > skin[1] > skin[2]
    # albedo components: one unit stays a moderate change
    d = _np(model.albedo_basis).astype(np.float64) * _np(model.albedo_std)[None, None, :]
    assert np.abs(d).max() < 0.2


# ----------------------------------------------------------------------------------------------- FaceModel ops
def test_truncate_and_save_roundtrip(tmp_path):
    m = builtin_model()
    t = m.truncate(10, 5, 0)
    assert (t.k_id, t.k_exp, t.k_alb) == (10, 5, 0)
    assert torch.equal(t.shape_basis, m.shape_basis[:, :, :10])
    assert torch.equal(t.expr_std, m.expr_std[:5])
    p = m.truncate(k_exp=70)
    assert p.k_exp == 70 and float(p.expr_std[64:].abs().sum()) == 0.0
    assert m.k_exp == 64                                           # the cached model is untouched
    path = tmp_path / "builtin.npz"
    m.save(path)
    with np.load(path) as z:
        for f in ("mean_shape", "shape_basis", "shape_std", "expr_basis", "expr_std", "albedo_mean",
                  "albedo_basis", "albedo_std", "triangles", "landmarks"):
            assert np.array_equal(z[f], _np(getattr(m, f))), f
        assert str(z["name"]) == m.name

"""load_model on the real model files in ../shared/data/models (skipped cleanly when they are absent).

Expected numbers come from the files themselves, read here with plain numpy/regex, or from published facts
(vertex/triangle counts of the SFM 3448 and ICT-FaceKit models, human face sizes).
"""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mofa_tk.errors import ModelFormatError
from mofa_tk.io.models import load_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = DATA / "models"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data {path} is absent")
    return path


def outward_flux(verts, tri):
    v = np.asarray(verts, np.float64)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    return float(np.sum(np.cross(b - a, c - a) * ((a + b + c) / 3 - v.mean(0))))


# ----------------------------------------------------------------------------------------- Surrey Face Model
def test_sfm_3448_with_expressions_and_landmarks():
    folder = need(MODELS / "eos_sfm")
    path = need(folder / "sfm_shape_3448.bin")
    need(folder / "expression_blendshapes_3448.bin")
    mapping_file = need(folder / "ibug_to_sfm.txt")
    m = load_model(path)  # companions beside the model are found automatically
    assert (m.n_vertices, m.k_id, m.k_exp, m.n_triangles, m.k_alb) == (3448, 63, 6, 6736, 0)
    assert m.meta["expression_names"] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    # the same with the companion files named explicitly
    m2 = load_model(path, expressions=folder / "expression_blendshapes_3448.bin", landmarks=mapping_file)
    assert torch.equal(m.expr_basis, m2.expr_basis) and torch.equal(m.landmarks, m2.landmarks)

    # landmarks: exactly the points the real mapping defines (it leaves the 16 contour points and the inner
    # mouth corners 61/65 out), parsed here independently
    section = mapping_file.read_text().split("[landmark_mappings]", 1)[1].split("\n[", 1)[0]
    pairs = re.findall(r"^\s*(\d+)\s*=\s*(\d+)", section, flags=re.M)
    expected = np.full(68, -1)
    for k, v in pairs:
        expected[int(k) - 1] = int(v)
    assert len(pairs) == 50
    np.testing.assert_array_equal(m.landmarks.numpy(), expected)
    assert m.landmarks[30] == 114                                  # ibug 31, the nose tip

    mean = m.mean_shape.numpy()
    # plausible millimetres: ~150 mm wide, nose tip at the front (+z), outer eye corners ~90 mm apart
    width = mean[:, 0].max() - mean[:, 0].min()
    assert 130 < width < 180, width
    assert mean[114, 2] > np.quantile(mean[:, 2], 0.99)
    eyes = np.linalg.norm(mean[m.landmarks[36]] - mean[m.landmarks[45]])
    assert 80 < eyes < 110, eyes
    assert mean[m.landmarks[36], 0] < 0 < mean[m.landmarks[45], 0]  # x towards the subject's left
    # first std: sqrt of the first eigenvalue on disk (variance 56502.367 mm^2)
    assert abs(float(m.shape_std[0]) - np.sqrt(56502.367)) < 1e-2
    assert outward_flux(mean, m.triangles.numpy()) > 0              # counter-clockwise from outside
    # expressions add a few mm to tens of mm per vertex
    rms = (m.expr_std / np.sqrt(m.n_vertices)).numpy()
    assert np.all((rms > 0.5) & (rms < 40)), rms


# ----------------------------------------------------------------------------------------- ICT-FaceKit
@pytest.fixture(scope="module")
def ict_npz():
    path = need(MODELS / "ict_facekit" / "ict_facekit_light.npz")
    return path, load_model(path), np.load(path)


def test_ict_light_npz(ict_npz):
    path, m, raw = ict_npz
    faces = raw["faces_quad"]
    n_quads = int((faces[:, 3] >= 0).sum())
    assert (m.n_vertices, m.k_id, m.k_exp, m.k_alb) == (26719, 100, 53, 0)
    assert m.n_triangles == 26384 + n_quads                       # quads split into two triangles
    # the first polygon's triangles, split (a, b, c), (a, c, d) or kept
    f0 = faces[0]
    first = [f0[[0, 1, 2]], f0[[0, 2, 3]]] if f0[3] >= 0 else [f0[:3]]
    np.testing.assert_array_equal(m.triangles.numpy()[: len(first)], np.stack(first))
    np.testing.assert_array_equal(m.landmarks.numpy(), raw["landmarks_multipie68"])
    mean = m.mean_shape.numpy()
    np.testing.assert_allclose(mean, raw["neutral_vertices"] * 10.0, rtol=1e-6, atol=1e-5)   # cm -> mm
    lm = m.landmarks.numpy()
    face_width = np.linalg.norm(mean[lm[0]] - mean[lm[16]])
    assert 130 < face_width < 170, face_width
    assert mean[lm[36], 0] < 0 < mean[lm[45], 0]
    assert outward_flux(mean, m.triangles.numpy()) > 0
    # identity mode k = basis * std (mm) = ten times the raw cm mode; ICT samples identity weights ~ N(0, 1)
    for k in (0, 57, 99):
        mode = (m.shape_basis[:, :, k] * m.shape_std[k]).numpy()
        np.testing.assert_allclose(mode, raw["identity_modes"][k] * 10.0, atol=1e-4)
    names = list(m.meta["expression_names"])
    j = names.index("jawOpen")
    np.testing.assert_allclose((m.expr_basis[:, :, j] * m.expr_std[j]).numpy(), raw["expression_modes"][j] * 10.0,
                               atol=1e-4)


def test_ict_facexmodel_subset_matches_npz(ict_npz):
    folder = need(MODELS / "ict_facekit" / "FaceXModel_subset")
    _, ref, raw = ict_npz
    m = load_model(folder)
    ids = sorted(p.stem for p in folder.glob("identity*.obj"))
    assert m.meta["identity_names"] == ids and m.k_id == len(ids) > 0
    exprs = [n for n in raw["expression_names"] if (folder / f"{n}.obj").is_file()]
    assert m.meta["expression_names"] == exprs and m.k_exp == len(exprs) > 0
    assert m.n_vertices == 26719
    # the OBJ neutral (cm text) equals the npz neutral after the same cm -> mm conversion
    np.testing.assert_allclose(m.mean_shape.numpy(), raw["neutral_vertices"] * 10.0, rtol=1e-6, atol=1e-4)
    assert torch.equal(m.triangles, ref.triangles)
    assert torch.equal(m.landmarks, ref.landmarks)
    for k, name in enumerate(ids):
        i = list(raw["identity_names"]).index(name)
        np.testing.assert_allclose((m.shape_basis[:, :, k] * m.shape_std[k]).numpy(), raw["identity_modes"][i] * 10.0,
                                   atol=1e-4)
    for k, name in enumerate(exprs):
        i = list(raw["expression_names"]).index(name)
        np.testing.assert_allclose((m.expr_basis[:, :, k] * m.expr_std[k]).numpy(), raw["expression_modes"][i] * 10.0,
                                   atol=1e-4)


# ----------------------------------------------------------------------------------------- partial real files
def test_real_non_model_files_are_rejected_clearly():
    """The FLAME landmark-embedding pickle (a genuine Python 2 pickle, no chumpy) and Deep3DFaceRecon's
    facemodel_info.mat (triangles/keypoints but no bases) are not models: the loader says what is missing."""
    emb = need(MODELS / "flame_tf_flame" / "flame_static_embedding_68.pkl")
    with pytest.raises(ModelFormatError, match=r"flame_static_embedding_68\.pkl.*v_template"):
        load_model(emb)
    info = need(MODELS / "deep3dfacerecon_bfm" / "facemodel_info.mat")
    with pytest.raises(ModelFormatError, match=r"facemodel_info\.mat.*meanshape"):
        load_model(info)

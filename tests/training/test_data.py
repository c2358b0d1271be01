"""Training data: ImageFolderFaces (landmark files, detection cache, corrupt files skipped and counted, crops
against a NumPy similarity transform) and SyntheticFaces (determinism, ground truth against a NumPy
projection of the true code, backgrounds, framing matched to crop_face).
"""
import json
import os
import warnings

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import mofa_tk
from mofa_tk import InputError
from mofa_tk import landmarks as LM
from mofa_tk.training.data import CACHE_NAME, ImageFolderFaces, SyntheticFaces, framing
from helpers import np_rodrigues

S_PHOTO = 120


def _face_landmarks(rng, W=S_PHOTO, H=S_PHOTO):
    """Plausible 68 landmarks: the built-in mean face's frontal layout, randomly scaled and shifted."""
    lm = _mean_layout()
    s = rng.uniform(0.8, 1.1)
    c = np.array([W / 2, H / 2]) + rng.uniform(-8, 8, 2)
    return ((lm - lm.mean(0)) * s + c).astype(np.float32)


def _photo_folder(root, rng, n=3):
    """n plain photos f0.png ... in a new folder `root`; returns {file name: the landmarks a fake detector
    gives for it}."""
    root.mkdir()
    truth = {}
    for k in range(n):
        _write_png(root / f"f{k}.png", _ramp_image())
        truth[f"f{k}.png"] = _face_landmarks(rng)
    return truth


_LAYOUT = {}


def _mean_layout():
    if "lm" not in _LAYOUT:
        model = mofa_tk.builtin_model()
        p = model.mean_shape[model.landmarks].double().numpy()
        _LAYOUT["lm"] = np.stack([p[:, 0], -p[:, 1]], -1) * 0.35   # ~50 px wide face, v down
    return _LAYOUT["lm"]


def _ramp_image(W=S_PHOTO, H=S_PHOTO):
    """RGB image with R = u / W, G = v / H, B = 0.25 (u, v pixel-centre coordinates): linear, so bilinear
    resampling reproduces it exactly away from the border."""
    u = (np.arange(W) + 0.5) / W
    v = (np.arange(H) + 0.5) / H
    img = np.stack([np.broadcast_to(u[None], (H, W)), np.broadcast_to(v[:, None], (H, W)),
                    np.full((H, W), 0.25)], -1)
    return img


def _write_png(path, img):
    iio.imwrite(path, np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))


@pytest.fixture
def photo_folder(tmp_path):
    """3 good photos (.npy, .json, .pts landmarks), 1 good photo in a sub-folder, and 7 bad files."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    lms = {}
    for name, ext in (("a", ".npy"), ("b", ".json"), ("c", ".pts"), ("sub/d", ".npy")):
        img = _ramp_image()
        lm = _face_landmarks(rng)
        _write_png(root / f"{name}.png", img)
        side = root / f"{name}{ext}"
        if ext == ".npy":
            np.save(side, lm)
        elif ext == ".json":
            side.write_text(json.dumps({"landmarks": lm.tolist()}))
        else:
            LM.write_pts(side, lm)
        lms[f"{name}.png"] = lm
    good = (root / "a.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 3])
    (root / "garbage.jpg").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (root / "empty.jpeg").write_bytes(b"")
    (root / "text.png").write_text("this is not an image\n")
    _write_png(root / "tiny.png", np.zeros((4, 4, 3)))                       # too small to be a face crop
    _write_png(root / "badlm.png", _ramp_image())
    (root / "badlm.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")   # malformed landmark file
    _write_png(root / "nolm.png", _ramp_image())                              # no landmarks, detection off
    (root / "notes.txt").write_text("ignored: not an image extension")
    return root, lms


def test_folder_skips_corrupt_files_with_warnings_and_counts(photo_folder):
    root, lms = photo_folder
    with pytest.warns(UserWarning) as rec:
        ds = ImageFolderFaces(root, 32, detect=False, progress=False)
    assert len(ds) == 4
    assert sorted(p.relative_to(root).as_posix() for p in ds.paths) == ["a.png", "b.png", "c.png", "sub/d.png"]
    counts = {k: len(v) for k, v in ds.skipped.items()}
    assert counts == {"unreadable": 5, "bad landmark file": 1, "no landmarks": 1}
    assert ds.n_skipped == 7 and ds.n_files == 11
    unreadable = sorted(os.path.basename(p) for p, _ in ds.skipped["unreadable"])
    assert unreadable == ["empty.jpeg", "garbage.jpg", "text.png", "tiny.png", "truncated.png"]
    msgs = [str(w.message) for w in rec]
    for name in ("truncated.png", "garbage.jpg", "empty.jpeg", "text.png", "tiny.png", "badlm.png", "nolm.png"):
        assert any(name in m for m in msgs), name
    assert "7 image(s)" not in " ".join(msgs)             # summary warning only beyond 10 files
    s = ds.summary()
    assert "4 of 11" in s and "5 unreadable" in s and "1 bad landmark file" in s
    assert ds.landmark_source == {"file": 4, "cache": 0, "detected": 0}
    item = ds[0]
    assert item["image"].shape == (32, 32, 3) and item["image"].dtype == torch.float32
    b = ds.batch([0, 3, 3])
    assert b["image"].shape == (3, 32, 32, 3) and b["landmarks"].shape == (3, 68, 2)


def test_second_scan_decodes_nothing_and_workers_scan_the_same(photo_folder, monkeypatch):
    """The first scan records every photo in the index (decodes, unreadable, ...); a second scan reads no photo
    and gives the same dataset; a scan in 2 spawned worker processes gives the same dataset and skips."""
    import mofa_tk.training.data as D

    root, _ = photo_folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = ImageFolderFaces(root, 32, detect=False, progress=False)
        reads = []
        real = D._read_image
        monkeypatch.setattr(D, "_read_image", lambda p: reads.append(p) or real(p))
        second = ImageFolderFaces(root, 32, detect=False, progress=False)
        assert reads == []
        assert second.paths == first.paths and torch.equal(second.landmarks, first.landmarks)
        assert {k: len(v) for k, v in second.skipped.items()} == {k: len(v) for k, v in first.skipped.items()}
        monkeypatch.setattr(D, "_read_image", real)
        monkeypatch.setattr(D, "MIN_PHOTOS_PER_WORKER", 1)
        fresh = ImageFolderFaces(root, 32, detect=False, progress=False, workers=2, cache_dir=root / "other")
    assert fresh.paths == first.paths and torch.equal(fresh.landmarks, first.landmarks)
    assert {k: sorted(v) for k, v in fresh.skipped.items()} == {k: sorted(v) for k, v in first.skipped.items()}
    assert torch.equal(fresh.batch([0, 1])["image"], first.batch([0, 1])["image"])


def test_photo_loader_streams_the_same_batches_and_reports_failures(photo_folder):
    """photo_loader's workers give the same crops as ds.batch; a photo damaged after the scan is left out of
    its batch and reported."""
    from mofa_tk.training.data import photo_loader

    root, _ = photo_folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = ImageFolderFaces(root, 32, detect=False, progress=False)
    batches = [[0, 1], [2, 3], [3, 0]]
    ref = [ds.batch(b)["image"] for b in batches]
    got = list(photo_loader(ds, batches, workers=2))
    for r, g, b in zip(ref, got, batches):
        assert g["index"].tolist() == b and g["failed"] == []
        assert torch.equal(g["crops"].float() / 255.0, r)
    ds.paths[1].write_bytes(b"damaged")
    got = list(photo_loader(ds, [[0, 1]], workers=0))
    assert got[0]["index"].tolist() == [0] and len(got[0]["failed"]) == 1 and ds.paths[1].name in got[0]["failed"][0]


def test_folder_crops_match_a_numpy_similarity(photo_folder):
    """Crop landmarks = s (lm - c) + S / 2 with c, rms from the 5 alignment points and s = S / (scale * rms);
    crop pixels = the (linear) ramp evaluated at the back-projected pixel centres."""
    root, lms = photo_folder
    S, scale = 40, 5.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = ImageFolderFaces(root, S, crop_scale=scale, detect=False, progress=False)
    for i, p in enumerate(ds.paths):
        lm = lms[p.relative_to(root).as_posix()].astype(np.float64)
        five = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
        c = five.mean(0)
        rms = np.sqrt(((five - c) ** 2).sum(1).mean())
        s = S / (scale * rms)
        np.testing.assert_allclose(ds.landmarks[i].numpy(), s * (lm - c) + S / 2, atol=2e-3)
        # pixel (i, j) of the crop looks at original u = c_u + (j + 0.5 - S/2) / s; ramp R = u / W, G = v / H
        jj, ii = np.meshgrid(np.arange(S) + 0.5, np.arange(S) + 0.5)
        u = c[0] + (jj - S / 2) / s
        v = c[1] + (ii - S / 2) / s
        inner = (u > 3) & (u < S_PHOTO - 3) & (v > 3) & (v < S_PHOTO - 3)
        img = ds[i]["image"].numpy()
        # uint8 storage (twice: the PNG and the crop) -> 1/255 steps
        np.testing.assert_allclose(img[..., 0][inner], (u / S_PHOTO)[inner], atol=1.5 / 255)
        np.testing.assert_allclose(img[..., 1][inner], (v / S_PHOTO)[inner], atol=1.5 / 255)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ImageFolderFaces(tmp_path / "missing", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        ImageFolderFaces(tmp_path / "empty", progress=False)
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder"):
        ImageFolderFaces(f, progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"not a jpeg")
    (bad / "y.png").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(InputError, match=r"none of its 2 image file\(s\) is usable \(2 unreadable\)"):
        ImageFolderFaces(bad, progress=False)


def test_unusable_landmark_file_falls_back_to_detection(tmp_path, monkeypatch):
    """A landmark file of another scheme (19 points, like menpo's tongue.pts) or a broken one: with detection
    on, the image is kept with detected landmarks and the file is reported; with detection off it is skipped."""
    rng = np.random.default_rng(2)
    root = tmp_path / "mixed"
    root.mkdir()
    truth = {"good.png": _face_landmarks(rng), "tongue.png": _face_landmarks(rng), "broken.png": _face_landmarks(rng)}
    for name in truth:
        _write_png(root / name, _ramp_image())
    np.save(root / "good.npy", truth["good.png"])
    (root / "tongue.pts").write_text("version: 1\nn_points: 19\n{\n" + "10 10\n" * 19 + "}\n")
    (root / "broken.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    calls = []

    def fake_detect(image, *, name=None, **kw):
        calls.append(os.path.basename(name))
        return truth[os.path.basename(name)]

    monkeypatch.setattr(LM, "detect", fake_detect)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = ImageFolderFaces(root, 32, cache_dir=tmp_path / "cache", progress=False)
    msgs = sorted(str(w.message) for w in rec)
    assert len(msgs) == 2 and all("detecting landmarks instead" in m for m in msgs)
    assert "broken.pts" in msgs[0] and "tongue.pts" in msgs[1] and "expected 68 points, found 19" in msgs[1]
    assert len(ds) == 3 and ds.n_skipped == 0
    assert sorted(calls) == ["broken.png", "tongue.png"]
    assert ds.landmark_source == {"file": 1, "cache": 0, "detected": 2}
    assert sorted(os.path.basename(f) for f, _ in ds.landmark_files_ignored) == ["broken.pts", "tongue.pts"]
    assert "2 unusable landmark file(s) ignored" in ds.summary()
    with pytest.warns(UserWarning, match="bad landmark file"):
        off = ImageFolderFaces(root, 32, detect=False, progress=False)
    assert len(off) == 1 and len(off.skipped["bad landmark file"]) == 2


def test_detected_landmarks_are_cached(tmp_path, monkeypatch):
    root = tmp_path / "det"
    truth = _photo_folder(root, np.random.default_rng(1))
    _write_png(root / "noface.png", _ramp_image())
    calls = []

    def fake_detect(image, *, name=None, **kw):
        calls.append(os.path.basename(name))
        key = os.path.basename(name)
        if key == "noface.png":
            raise LM.NoFaceFoundError(f"no face found in {name!r}")
        assert image.shape == (S_PHOTO, S_PHOTO, 3)
        return truth[key]

    monkeypatch.setattr(LM, "detect", fake_detect)
    with pytest.warns(UserWarning, match="noface.png"):
        ds = ImageFolderFaces(root, 32, progress=False)
    assert sorted(calls) == ["f0.png", "f1.png", "f2.png", "noface.png"]
    assert ds.cache_path == root / CACHE_NAME and ds.cache_path.is_file()
    assert ds.landmark_source["detected"] == 3 and len(ds.skipped["no face"]) == 1
    # second run: everything from the cache (including the failure), the detector is not called
    calls.clear()
    with pytest.warns(UserWarning, match="noface.png"):
        ds2 = ImageFolderFaces(root, 32, progress=False)
    assert calls == [] and ds2.landmark_source["cache"] == 3
    assert torch.equal(ds.landmarks, ds2.landmarks)
    assert torch.equal(ds.batch(range(3))["image"], ds2.batch(range(3))["image"])
    # a changed file is detected again
    _write_png(root / "f1.png", _ramp_image() * 0.9)
    with pytest.warns(UserWarning):
        ImageFolderFaces(root, 32, progress=False)
    assert calls == ["f1.png"]
    # cache_dir: the cache goes there, not into the image folder
    calls.clear()
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning):
        ds3 = ImageFolderFaces(root, 32, cache_dir=cache, progress=False)
    assert ds3.cache_path.parent == cache and ds3.cache_path.is_file()
    assert sorted(calls) == ["f0.png", "f1.png", "f2.png", "noface.png"]
    # a corrupt cache file is ignored with a warning (and rewritten)
    ds3.cache_path.write_text("{broken")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ImageFolderFaces(root, 32, cache_dir=cache, progress=False)
    assert any("ignoring unreadable landmark cache" in str(w.message) for w in rec)


def test_landmark_cache_is_appended_and_survives_interruptions(tmp_path, monkeypatch):
    """The cache gets one line per detection (no rewrite: a header + 3 lines after 3 detections), a line cut
    short by a crash is ignored, later lines win, and a cache in the previous one-object format is read and
    converted."""
    root = tmp_path / "app"
    truth = _photo_folder(root, np.random.default_rng(2))
    calls = []

    def fake_detect(image, *, name=None, **kw):
        calls.append(os.path.basename(name))
        return truth[os.path.basename(name)]

    monkeypatch.setattr(LM, "detect", fake_detect)
    ds = ImageFolderFaces(root, 32, progress=False)
    lines = ds.cache_path.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["format"] == "mofa_tk.landmark_cache/2"
    assert sorted(json.loads(x)["path"] for x in lines[1:]) == ["f0.png", "f1.png", "f2.png"]
    # a crash in the middle of the last append: that photo is detected again, the others come from the cache
    ds.cache_path.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    calls.clear()
    ds2 = ImageFolderFaces(root, 32, progress=False)
    assert len(calls) == 1 and ds2.landmark_source == {"file": 0, "cache": 2, "detected": 1}
    assert torch.equal(ds.landmarks, ds2.landmarks)
    # the previous format: one JSON object with every entry
    entries = {json.loads(x)["path"]: {k: v for k, v in json.loads(x).items() if k != "path"}
               for x in ds.cache_path.read_text().splitlines()[1:] if x.strip().endswith("}")}
    ds.cache_path.write_text(json.dumps({"format": "mofa_tk.landmark_cache/1", "root": str(root), "entries": entries}))
    calls.clear()
    ds3 = ImageFolderFaces(root, 32, progress=False)
    assert calls == [] and ds3.landmark_source["cache"] == 3
    assert json.loads(ds3.cache_path.read_text().splitlines()[0])["format"] == "mofa_tk.landmark_cache/2"


def test_detector_unavailable_is_a_clear_error(tmp_path, monkeypatch):
    root = tmp_path / "nolm"
    root.mkdir()
    _write_png(root / "a.png", _ramp_image())

    def unavailable(image, **kw):
        raise LM.LandmarkDetectorUnavailableError("MediaPipe is not installed")

    monkeypatch.setattr(LM, "detect", unavailable)
    with pytest.warns(UserWarning), pytest.raises(InputError, match="detection is unavailable"):
        ImageFolderFaces(root, 32, progress=False)


# ============================================================================================ synthetic
@pytest.fixture(scope="module")
def decoder():
    return mofa_tk.FaceDecoder(mofa_tk.builtin_model(), 48)


def _numpy_landmarks(model, code, S):
    """Landmarks of a code by hand: morph the 68 vertices, rotate about the box centre, pinhole project."""
    c = code.double().numpy()
    k_id, k_exp = model.k_id, model.k_exp
    rot, tr = c[:3], c[3:6]
    alpha, delta = c[6:6 + k_id], c[6 + k_id:6 + k_id + k_exp]
    li = model.landmarks.numpy()
    mean = model.mean_shape.double().numpy()
    v = (mean[li] + model.shape_basis[li].double().numpy() @ (alpha * model.shape_std.double().numpy())
         + model.expr_basis[li].double().numpy() @ (delta * model.expr_std.double().numpy()))
    ctr = (mean.min(0) + mean.max(0)) / 2
    p = (v - ctr) @ np_rodrigues(rot).T + np.array([0, 0, -1000.0]) + tr
    f = 1015.0 * S / 224
    return np.stack([S / 2 + f * p[:, 0] / -p[:, 2], S / 2 - f * p[:, 1] / -p[:, 2]], -1)


def test_synthetic_is_deterministic(backend, decoder):
    a = SyntheticFaces(decoder, 50, seed=3)
    b = SyntheticFaces(decoder, 50, seed=3)
    x = a.batch([4, 9, 17])
    y = b.batch([17, 4])
    assert torch.equal(x["code"][0], y["code"][1]) and torch.equal(x["code"][2], y["code"][0])
    assert torch.equal(x["background"][0], y["background"][1])
    # renders: bit-identical, whatever the batch a sample is rendered in
    assert torch.equal(x["landmarks"][2], y["landmarks"][0])
    assert torch.equal(x["image"][0], y["image"][1])
    z = SyntheticFaces(decoder, 50, seed=4).batch([4])
    assert float((z["code"][0] - x["code"][0]).abs().max()) > 0.1
    one = a[9]
    assert torch.equal(one["code"], x["code"][1]) and one["image"].shape == (48, 48, 3)
    with pytest.raises(IndexError):
        a.batch([50])


def test_synthetic_ground_truth_and_backgrounds(backend, decoder):
    model = decoder.model
    ds = SyntheticFaces(decoder, 1000, seed=0)
    b = ds.batch(range(12))
    assert b["image"].min() >= 0 and b["image"].max() <= 1
    for k in range(12):
        ref = _numpy_landmarks(model, b["code"][k], 48)
        np.testing.assert_allclose(b["landmarks"][k].double().numpy(), ref, atol=2e-3)
        # outside the face the image is the background
        out = (b["mask"][k, ..., 0] == 0)
        assert bool(out.any())
        assert torch.equal(b["image"][k][out], b["background"][k][out].clamp(0, 1))
    # the sampled codes follow the documented spread (clipped normals) over many draws
    codes = torch.stack([ds.sample_code(i) for i in range(400)]).double()
    blocks = decoder.code.split(codes)
    np.testing.assert_allclose(blocks["rotation"].std(0).numpy(), [0.15, 0.35, 0.08], rtol=0.15)
    np.testing.assert_allclose(blocks["shape"].std().item(), 1.0, rtol=0.05)
    np.testing.assert_allclose(blocks["expression"].std().item(), 0.5, rtol=0.05)
    t0 = np.array(framing(decoder)["translation"])
    assert (np.abs(blocks["translation"].mean(0).numpy() - t0) < [1.5, 1.5, 10.0]).all()   # ~5 sigma
    # background kinds
    for kind in ("solid", "gradient", "noise"):
        bg = SyntheticFaces(decoder, 10, seed=1, background=kind)._background(np.random.default_rng(5))
        assert bg.shape == (48, 48, 3) and bg.min() >= 0 and bg.max() <= 1
        if kind == "solid":
            assert np.ptp(bg.reshape(-1, 3), axis=0).max() == 0
        if kind == "gradient":   # linear ramp: second differences vanish in both directions
            assert np.abs(np.diff(bg, 2, axis=0)).max() < 1e-5 and np.abs(np.diff(bg, 2, axis=1)).max() < 1e-5
            assert np.ptp(bg) > 0
        if kind == "noise":
            assert bg.std() > 0.02
    with pytest.raises(InputError, match="background"):
        SyntheticFaces(decoder, 10, background="plaid")
    with pytest.raises(InputError, match="unknown option"):
        SyntheticFaces(decoder, 10, yaw=1.0)


def test_framing_matches_crop_face(backend, decoder):
    """A render at framing()'s translation, cropped by crop_face with framing()'s scale, is (nearly) unchanged:
    the crop transform is the identity, so synthetic faces sit in the frame like cropped photos."""
    fr = framing(decoder)
    S = decoder.image_size[0]
    code = decoder.code.zeros(1)
    code[0, 3:6] = torch.tensor(fr["translation"])
    out = decoder(code)
    lm = out["landmarks2d"][0].detach().numpy()
    img = out["image"][0].detach().clamp(0, 1).numpy()
    crop, lm_crop, T = LM.crop_face(img, lm, size=S, scale=fr["crop_scale"])
    assert abs(T.scale - 1) < 2e-3
    np.testing.assert_allclose(T.offset, [0, 0], atol=0.1)
    np.testing.assert_allclose(lm_crop, lm, atol=0.1)
    # without the framing offset the 5-point centroid sits about 12 mm (x f / d px) below the centre
    assert 8 < fr["translation"][1] < 16 and fr["translation"][0] == 0
    assert 5.0 < fr["crop_scale"] < 6.0

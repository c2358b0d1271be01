"""`mofa landmarks DIR` (mofa_tk/apps/landmarks_app.py): a parallel pass that indexes a photo folder (MediaPipe
detections, unreadable photos), which a second pass and `mofa train --data` read without detecting again."""
import json
import shutil

import numpy as np
import pytest

import mofa_tk
from mofa_tk.apps.landmarks_app import main
from mofa_tk.training.data import CACHE_NAME, ImageFolderFaces


@pytest.fixture
def folder(tmp_path):
    pytest.importorskip("mediapipe")
    data = pytest.importorskip("skimage.data")
    import imageio.v3 as iio

    mofa_tk.init("cpu")
    root = tmp_path / "photos"
    root.mkdir()
    astronaut = data.astronaut()
    iio.imwrite(root / "a.png", astronaut)
    iio.imwrite(root / "b.jpg", astronaut[:, ::-1])                       # mirrored: another face position
    iio.imwrite(root / "plain.png", np.full((128, 128, 3), 120, np.uint8))  # no face
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


def test_landmark_pass_indexes_the_folder_in_parallel(folder, monkeypatch, capsys):
    import mofa_tk.training.data as D

    monkeypatch.setattr(D, "MIN_PHOTOS_PER_WORKER", 1)        # 2 spawned workers even for 4 photos
    assert main([str(folder), "--workers", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 of 4 image(s)" in out and "2 detected" in out and "1 unreadable" in out and "1 no face" in out
    lines = (folder / CACHE_NAME).read_text().splitlines()
    assert json.loads(lines[0])["format"] == "mofa_tk.landmark_cache/2" and len(lines) == 5   # header + 4 photos
    # the same detections as this process makes; a second pass and the training data detect nothing
    par = {json.loads(x)["path"]: json.loads(x) for x in lines[1:]}
    shutil.move(folder / CACHE_NAME, folder.parent / "parallel.json")
    ds = ImageFolderFaces(folder, 64, progress=False)
    assert ds.landmark_source["detected"] == 2
    for p, lm in zip(ds.paths, ds.source_landmarks):
        np.testing.assert_allclose(np.asarray(par[p.name]["landmarks"]), lm, atol=0.5)
    calls = []
    monkeypatch.setattr(mofa_tk.landmarks, "detect", lambda *a, **k: calls.append(a) or None)
    assert main([str(folder), "--no-progress"]) == 0
    assert "2 cache" in capsys.readouterr().out and calls == []


def test_landmark_pass_bad_input(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no image files" in capsys.readouterr().err
    assert main([str(tmp_path / "empty"), "--workers", "-1"]) == 2
    assert "workers" in capsys.readouterr().err

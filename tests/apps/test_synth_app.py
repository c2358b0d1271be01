"""`mofa synth` (mofa_tk/apps/synth_app.py): photos and landmark files equal to SyntheticFaces' samples, kept on a
second run, read by the photo-folder training data; and `python -m mofa_tk`."""
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

import mofa_tk
from mofa_tk.apps.synth_app import main
from mofa_tk.face.decoder import FaceDecoder
from mofa_tk.landmarks import read_landmarks
from mofa_tk.training.data import ImageFolderFaces, SyntheticFaces


@pytest.fixture
def cpu():
    return mofa_tk.init("cpu")


def test_synth_writes_the_synthetic_faces_and_keeps_them(cpu, tmp_path, capsys):
    out = tmp_path / "photos"
    assert main([str(out), "--n", "3", "--size", "64", "--seed", "5", "--quiet"]) == 0
    ref = SyntheticFaces(FaceDecoder(mofa_tk.builtin_model(), 64), 3, seed=5).batch([0, 1, 2], device="cpu")
    for i in range(3):
        img = iio.imread(out / f"face_{i:06d}.jpg").astype(np.float32) / 255
        assert img.shape == (64, 64, 3)
        assert np.abs(img - ref["image"][i].numpy()).mean() < 0.03           # JPEG at quality 92
        np.testing.assert_allclose(read_landmarks(out / f"face_{i:06d}.pts"), ref["landmarks"][i].numpy(), atol=1e-5)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main([str(out), "--n", "4", "--size", "64", "--seed", "5", "--quiet"]) == 0
    assert "1 photos written, 3 already there" in capsys.readouterr().out
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in stamps.items())    # nothing rewritten
    assert sorted(p.suffix for p in out.iterdir()) == [".jpg"] * 4 + [".pts"] * 4
    data = ImageFolderFaces(out, image_size=64, detect=False, progress=False)
    assert len(data) == 4 and data.n_skipped == 0


def test_synth_bad_arguments(cpu, tmp_path, capsys):
    afile = tmp_path / "a_file"
    afile.write_text("keep")
    for argv, pattern in (([str(tmp_path / "x"), "--n", "0"], "--n: expected a positive"),
                          ([str(tmp_path / "x"), "--n", "2", "--size", "8"], "--size"),
                          ([str(afile / "x"), "--n", "2"], "a_file is a file, not a folder")):
        assert main(argv + ["--quiet"]) == 2
        assert pattern in capsys.readouterr().err
    assert afile.read_text() == "keep" and not (tmp_path / "x").exists()


def test_python_dash_m_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "mofa_tk", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "synth" in r.stdout and "fit" in r.stdout

"""Fits of rendered scan views (mofa_tk.evaluation.scan_views): the whole loop on a
"scan" whose answer is known: the built-in model's own mean face (its mean-face error is 0, and a fit of its
renders must come back within about a millimetre: MediaPipe's points scatter by about 2 mm, docs/fitting.md). Needs MediaPipe for the loop (skipped without it)."""
import numpy as np
import pytest

import mofa_tk
from mofa_tk import InputError
from mofa_tk.evaluation.scan import landmark_positions
from mofa_tk.evaluation.scan_views import evaluate_scan_views, render_scan_views, scan_face_model


def test_the_mean_face_as_a_scan_is_fitted_back(backend):
    if backend != "cpu":
        pytest.skip("renders + MediaPipe + fit: backend-independent; run on cpu only")
    pytest.importorskip("mediapipe")
    from mofa_tk.landmarks import detect

    model = mofa_tk.builtin_model()
    verts = model.mean_shape.numpy().astype(np.float64)
    tris = model.triangles.numpy()
    lm = landmark_positions(verts, model.landmarks.numpy())
    sm = scan_face_model(verts, tris, lm)
    np.testing.assert_allclose(sm.mean_shape.numpy() + sm.meta["centre"], verts, atol=1e-4)
    images = render_scan_views(sm, [(0, 0), (-30, 0)], size=384)
    assert len(images) == 2 and images[0].shape == (384, 384, 3) and images[0].dtype == np.float32
    rows = evaluate_scan_views([("builtin", model)], verts, lm, images, [("default", {})], detect=detect)
    assert [r["view"] for r in rows] == [0, 1]
    assert rows[0]["mean_face"] < 1e-6                     # the same mesh
    for r in rows:
        assert r["median"] < 1.2, r                        # mm; measured 0.76 and 0.84
    # a render without a face (here: plain grey) is named
    with pytest.raises(InputError, match="render 1 of 1: MediaPipe found no face"):
        evaluate_scan_views([("builtin", model)], verts, lm, [np.full((256, 256, 3), 0.3, np.float32)], [],
                            detect=detect)


def test_example_script_names_a_bad_landmark_file(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "evaluate_scan_views.py"
    spec = importlib.util.spec_from_file_location("evaluate_scan_views", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    obj = tmp_path / "s.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    np.save(tmp_path / "lm.npy", np.zeros((49, 3)))
    assert mod.main([str(obj), str(tmp_path / "lm.npy")]) == 2
    assert "lm.npy" in capsys.readouterr().err
    assert mod.main([str(obj), str(tmp_path / "lm.npy"), "--scale", "0"]) == 2
    assert "--scale" in capsys.readouterr().err
    assert mod.main([str(obj), str(tmp_path / "lm.npy"), "--size", "16"]) == 2
    assert "--size" in capsys.readouterr().err

"""Scan landmark layouts (mofa_tk.io.meshes): 68, the 51 inner and NoW's 7 points become (68, 3) iBUG rows;
MeshLab picked-points files (NoW's .pp) are read; a scan with NoW's 7 landmarks is found beside its photo."""
import numpy as np
import pytest

import mofa_tk
from mofa_tk import InputError
from mofa_tk.io.images import write_obj
from mofa_tk.io.meshes import NOW7, find_scan, ibug68_landmarks, read_landmarks_3d


def _pp(points):
    body = "".join(f' <point x="{x}" y="{y}" z="{z}" active="1" name="{i}"/>\n' for i, (x, y, z) in enumerate(points))
    return f"<!DOCTYPE PickedPoints>\n<PickedPoints>\n <DocumentData><DataFileName name=\"s.obj\"/></DocumentData>\n{body}</PickedPoints>\n"


def _mean_face_landmarks():
    model = mofa_tk.builtin_model()
    ms = model.mean_shape.double().numpy()
    return model, ms, ms[model.landmarks.numpy()]


def test_51_and_68_points():
    inner = np.arange(51 * 3, dtype=np.float64).reshape(51, 3)
    out = ibug68_landmarks(inner)
    assert out.shape == (68, 3) and np.isnan(out[:17]).all()
    np.testing.assert_array_equal(out[17:], inner)
    full = np.ones((68, 3))
    np.testing.assert_array_equal(ibug68_landmarks(full), full)
    with pytest.raises(InputError, match=r"lm\.npy.*\(49, 3\)"):
        ibug68_landmarks(np.zeros((49, 3)), "lm.npy")


def test_now_7_points_from_either_side_land_on_their_ibug_rows():
    """The built-in mean face's landmarks at NOW7, listed as iBUG does (subject's right first) and mirrored
    (subject's left first), both come back at the right iBUG rows; NaN elsewhere."""
    _, _, lm68 = _mean_face_landmarks()
    seven = lm68[list(NOW7)]
    for order in ([0, 1, 2, 3, 4, 5, 6], [3, 2, 1, 0, 4, 6, 5]):
        out = ibug68_landmarks(seven[order])
        np.testing.assert_allclose(out[list(NOW7)], seven)
        others = np.setdiff1d(np.arange(68), NOW7)
        assert np.isnan(out[others]).all()


def test_picked_points_file_and_find_scan(tmp_path):
    model, ms, lm68 = _mean_face_landmarks()
    seven = lm68[list(NOW7)]
    pp = tmp_path / "face.pp"
    pp.write_text(_pp(seven))
    np.testing.assert_allclose(read_landmarks_3d(pp), seven, atol=1e-9)
    photo = tmp_path / "face.jpg"
    photo.write_bytes(b"")
    write_obj(tmp_path / "face.obj", ms, model.triangles)
    scan, note = find_scan(photo)
    assert note is None and scan.landmarks.shape == (68, 3)
    np.testing.assert_allclose(scan.landmarks[list(NOW7)], seven, atol=1e-9)
    # bad files are named
    for name, text, msg in (("bad.pp", "<PickedPoints><point x='1' y='2'/></PickedPoints>", "picked-points"),
                            ("none.pp", "<PickedPoints></PickedPoints>", "no <point"),
                            ("cut.pp", "<PickedPoints><point x='1'", "picked-points")):
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=rf"{name}.*{msg}"):
            read_landmarks_3d(tmp_path / name)
    pp.write_text(_pp(seven[:5]))
    scan, note = find_scan(photo)
    assert scan is None and "face.pp" in note and "(5, 3)" in note

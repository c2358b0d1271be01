"""menpo LJSON groups (mofa_tk.io.ljson): parts stored in another order than iBUG's are put back in iBUG order,
for 2D annotations (io.annotations.read_ljson) and for scans' 3D landmarks (io.meshes.read_landmarks_3d)."""
import json

import numpy as np
import pytest

from mofa_tk import InputError
from mofa_tk.io.annotations import read_ljson
from mofa_tk.io.ljson import ibug68_order
from mofa_tk.io.meshes import read_landmarks_3d

# menpo3d's james.ljson stores the parts in this order (label, iBUG indices of its points)
JAMES_PARTS = (("chin", range(0, 17)), ("leye", range(36, 42)), ("reye", range(42, 48)),
               ("leyebrow", range(17, 22)), ("nose", range(27, 36)), ("reyebrow", range(22, 27)),
               ("mouth", range(48, 68)))


def _stored(points, parts=JAMES_PARTS):
    """The LJSON labels and stored rows of `points` (68, d) written part after part in `parts` order."""
    rows, labels = [], []
    for name, idx in parts:
        labels.append({"label": name, "mask": list(range(len(rows), len(rows) + len(idx)))})
        rows += [points[i].tolist() for i in idx]
    return labels, rows


def test_parts_in_another_order_are_read_in_ibug_order(tmp_path):
    pts3 = np.arange(68 * 3, dtype=np.float64).reshape(68, 3)  # point i holds 3i, 3i+1, 3i+2
    labels, rows = _stored(pts3)
    assert rows[17] == pts3[36].tolist()  # stored: an eye where iBUG has a brow
    f = tmp_path / "scan.ljson"
    f.write_text(json.dumps({"version": 3, "groups": {"LJSON": {"landmarks": {"points": rows}, "labels": labels}}}))
    np.testing.assert_array_equal(read_landmarks_3d(f), pts3)
    # the same for a 2D annotation (LJSON rows are (y, x), 0-based integer centres)
    pts2 = np.stack([np.arange(68.0), 1000.0 + np.arange(68.0)], 1)
    labels, rows = _stored(pts2[:, ::-1])
    f2 = tmp_path / "photo.ljson"
    f2.write_text(json.dumps({"version": 2, "landmarks": {"points": rows}, "labels": labels}))
    np.testing.assert_allclose(read_ljson(f2).points, pts2 + 0.5)


def test_labels_in_ibug_order_and_unlabelled_groups_keep_their_order():
    ibug = (("jaw", range(0, 17)), ("left_eyebrow", range(17, 22)), ("right_eyebrow", range(22, 27)),
            ("nose", range(27, 36)), ("left_eye", range(36, 42)), ("right_eye", range(42, 48)),
            ("mouth", range(48, 68)))
    labels, _ = _stored(np.zeros((68, 2)), ibug)
    np.testing.assert_array_equal(ibug68_order(labels, 68, "f"), np.arange(68))
    assert ibug68_order([{"label": "left_pupil", "mask": [0]}], 68, "f") is None
    assert ibug68_order(None, 68, "f") is None
    assert ibug68_order(labels, 49, "f") is None  # not a 68-point group


def test_inconsistent_ibug_labels_name_the_file(tmp_path):
    labels, rows = _stored(np.zeros((68, 3)))
    bad = [lab for lab in labels if lab["label"] != "nose"]
    with pytest.raises(InputError, match=r"s\.ljson.*'nose' is missing"):
        ibug68_order(bad, 68, tmp_path / "s.ljson")
    dup = [dict(lab) for lab in labels]
    dup[1]["mask"] = dup[2]["mask"]  # two eyes on the same stored points
    f = tmp_path / "d.ljson"
    f.write_text(json.dumps({"groups": {"g": {"landmarks": {"points": rows}, "labels": dup}}}))
    with pytest.raises(InputError, match=r"d\.ljson.*not a permutation"):
        read_landmarks_3d(f)


def test_menpo3d_james_landmarks_are_in_ibug_order(shared_data):
    f = shared_data / "groundtruth_3d" / "menpo3d" / "menpo3d__data__james.ljson"
    if not f.is_file():
        pytest.skip(f"{f} not present")
    lm = read_landmarks_3d(f)
    # anatomy in the scan's frame (x towards the subject's left, y up, z towards the camera, mm): the nose tip
    # (30) is the most forward point, the outer eye corners (36, 45) lie on either side of it, the brows (17-26)
    # above the eyes (36-47), the chin (8) below the mouth (48-67)
    assert np.argmax(lm[:, 2]) == 30
    assert lm[36, 0] < lm[30, 0] < lm[45, 0]
    assert lm[17:27, 1].min() > lm[36:48, 1].max() - 5
    assert lm[8, 1] < lm[48:68, 1].min()
    assert 80 < np.linalg.norm(lm[36] - lm[45]) < 110  # an adult outer-eye-corner distance, mm


def test_a_point_that_is_not_a_list_of_numbers_names_the_file(tmp_path):
    f = tmp_path / "bad.ljson"
    for bad in (5, "1,2,3", [1, "x", 3], [True, 2, 3]):
        f.write_text(json.dumps({"landmarks": {"points": [[1, 2, 3], bad]}}))
        with pytest.raises(InputError, match=r"bad\.ljson.*point 1"):
            read_landmarks_3d(f)
        with pytest.raises(InputError, match=r"bad\.ljson.*point 1"):
            read_ljson(f)
    f.write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.ljson.*not valid JSON"):
        read_ljson(f)

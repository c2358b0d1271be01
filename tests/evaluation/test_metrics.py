"""mofa_tk.evaluation.metrics against hand-computed values and independent references (scipy, numpy.corrcoef)."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mofa_tk.errors import InputError
from mofa_tk.evaluation.metrics import depth_correlation, landmark_nme, missing_mask, point_to_point_rmse, procrustes_align


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# ------------------------------------------------------------------------------------------- Procrustes
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_procrustes_recovers_similarity(seed):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(50, 3)) * [60, 80, 40]
    R0, t0, s0 = _random_rotation(rng), rng.normal(size=3) * 100, float(rng.uniform(0.5, 2.0))
    dst = s0 * src @ R0.T + t0
    aligned, R, t, s = procrustes_align(src, dst, scale=True)
    assert np.abs(R - R0).max() < 1e-6
    assert np.abs(t - t0).max() < 1e-6
    assert abs(s - s0) < 1e-6
    assert np.abs(aligned - dst).max() < 1e-6
    assert abs(np.linalg.det(R) - 1) < 1e-9


def test_procrustes_rigid_keeps_unit_scale():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(30, 3))
    R0, t0 = _random_rotation(rng), rng.normal(size=3)
    dst = 1.7 * src @ R0.T + t0
    _, R, t, s = procrustes_align(src, dst, scale=False)
    assert s == 1.0
    assert np.abs(R - R0).max() < 1e-6  # the rotation part of a scaled copy is still recovered exactly
    # t is the rigid optimum: centroids map onto each other
    assert np.abs(src.mean(0) @ R.T + t - dst.mean(0)).max() < 1e-9


def test_procrustes_reflection_gives_best_proper_rotation():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(40, 3)) * [50, 30, 10]
    dst = src * [-1, 1, 1] + rng.normal(size=(40, 3)) * 0.1  # a mirrored copy: no rotation can match it
    _, R, t, s = procrustes_align(src, dst)
    assert abs(np.linalg.det(R) - 1) < 1e-9  # never a reflection
    # independent reference: scipy's optimal proper rotation between the centred point sets
    ref, _ = Rotation.align_vectors(dst - dst.mean(0), src - src.mean(0))
    assert np.abs(R - ref.as_matrix()).max() < 1e-6
    # and it beats every rotation of a random sample
    cost = ((src @ R.T + t - dst) ** 2).sum()
    for Rr in Rotation.random(200, random_state=5).as_matrix():
        tr = dst.mean(0) - Rr @ src.mean(0)
        assert cost <= ((src @ Rr.T + tr - dst) ** 2).sum() + 1e-9


def test_procrustes_2d_and_errors():
    src = np.array([[0.0, 0], [1, 0], [0, 2]])
    th = 0.3
    R0 = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    _, R, t, s = procrustes_align(src, src @ R0.T + [5, -1], scale=True)
    assert np.abs(R - R0).max() < 1e-12 and abs(s - 1) < 1e-12 and np.abs(t - [5, -1]).max() < 1e-12
    with pytest.raises(InputError, match="same shape"):
        procrustes_align(np.zeros((4, 3)), np.zeros((5, 3)))
    bad = np.ones((4, 3))
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match="src: contains 1 NaN"):
        procrustes_align(bad, np.ones((4, 3)))
    with pytest.raises(InputError, match="coincide"):
        procrustes_align(np.ones((4, 3)), np.zeros((4, 3)), scale=True)


# ------------------------------------------------------------------------------------------------- RMSE
def test_rmse_rotated_copy():
    pts = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]])
    rot = pts @ np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]).T  # 90 degrees about z: (x, y) -> (-y, x)
    # by hand: three points move by sqrt(2), the one on the z axis stays -> sqrt((2 + 2 + 0 + 2) / 4)
    assert point_to_point_rmse(rot, pts, align=None) == pytest.approx(math.sqrt(1.5), abs=1e-12)
    assert point_to_point_rmse(rot, pts, align="rigid") == pytest.approx(0.0, abs=1e-9)
    assert point_to_point_rmse(torch.tensor(rot), torch.tensor(pts), align="similarity") == pytest.approx(0, abs=1e-9)


def test_rmse_scaled_copy_needs_similarity():
    rng = np.random.default_rng(6)
    gt = rng.normal(size=(100, 3)) * 50
    pred = 1.1 * gt @ _random_rotation(rng).T + 3.0
    assert point_to_point_rmse(pred, gt, align="similarity") == pytest.approx(0.0, abs=1e-8)
    # rigid optimum for a 1.1x copy: residual = 0.1 * gt about its centroid (s=1 after the best rotation)
    gc = gt - gt.mean(0)
    assert point_to_point_rmse(pred, gt, align="rigid") == pytest.approx(
        0.1 * math.sqrt((gc ** 2).sum(1).mean()), rel=1e-9)
    with pytest.raises(InputError, match="align"):
        point_to_point_rmse(pred, gt, align="affine")


# -------------------------------------------------------------------------------------------------- NME
def _face68():
    rng = np.random.default_rng(7)
    gt = rng.uniform(0, 100, size=(68, 2))
    gt[36] = [20.0, 40.0]
    gt[45] = [30.0, 40.0]  # inter-ocular distance 10
    return gt


def test_nme_inter_ocular_by_hand():
    gt = _face68()
    pred = gt.copy()
    pred[0] += [3, 4]  # error 5
    pred[10] += [0, 2]  # error 2
    assert landmark_nme(pred, gt) == pytest.approx(7 / 68 / 10, abs=1e-12)
    assert isinstance(landmark_nme(pred, gt), float)


def test_nme_bbox_and_inter_pupil_by_hand():
    gt = _face68()
    gt[:, 0] = np.clip(gt[:, 0], 10, 50)
    gt[:, 1] = np.clip(gt[:, 1], 5, 85)
    gt[0] = [10, 5]
    gt[1] = [50, 85]  # box 40 x 80
    pred = gt.copy()
    pred[3] += [6, 8]  # error 10
    assert landmark_nme(pred, gt, "bbox") == pytest.approx(10 / 68 / math.sqrt(40 * 80), abs=1e-12)
    gt[36:42] = [1.0, 2.0]
    gt[42:48] = [4.0, 6.0]  # eye centres 5 apart
    pred = gt.copy()
    pred[50] += [0, 1]
    assert landmark_nme(pred, gt, "inter_pupil") == pytest.approx(1 / 68 / 5, abs=1e-12)


def test_nme_batch_and_missing_points():
    gt = np.stack([_face68(), _face68()])
    pred = gt.copy()
    pred[0, 0] += [3, 4]
    pred[1, 1] += [6, 8]
    gt[1, 1] = np.nan  # missing: its error 10 is ignored
    gt[1, 2] = [-1, -1]  # missing (AFLW marker)
    pred[1, 2] = np.nan  # a NaN prediction where gt is missing is fine
    pred[1, 5] += [0, 3]
    out = landmark_nme(pred, gt)
    assert out.shape == (2,)
    assert out[0] == pytest.approx(5 / 68 / 10, abs=1e-12)
    assert out[1] == pytest.approx(3 / 66 / 10, abs=1e-12)
    assert missing_mask(gt[1])[[1, 2]].all() and missing_mask(gt[1]).sum() == 2


def test_nme_errors():
    gt = _face68()
    pred = gt.copy()
    pred[4] = np.nan
    with pytest.raises(InputError, match="pred: 1 NaN"):
        landmark_nme(pred, gt)
    with pytest.raises(InputError, match="normalization"):
        landmark_nme(gt, gt, "face_size")
    with pytest.raises(InputError, match="same shape"):
        landmark_nme(gt[:67], gt)
    with pytest.raises(InputError, match="68 iBUG"):
        landmark_nme(gt[:20], gt[:20])
    assert landmark_nme(gt[:20], gt[:20], "bbox") == 0.0
    g2 = gt.copy()
    g2[45] = np.nan
    with pytest.raises(InputError, match="36 or 45"):
        landmark_nme(gt, g2)


# ------------------------------------------------------------------------------------- depth correlation
def test_depth_correlation_matches_numpy():
    rng = np.random.default_rng(8)
    gt = rng.normal(size=(32, 40))
    pred = 0.7 * gt + rng.normal(size=(32, 40)) * 0.5 + 100.0
    assert depth_correlation(pred, gt) == pytest.approx(np.corrcoef(pred.ravel(), gt.ravel())[0, 1], abs=1e-12)
    mask = rng.uniform(size=gt.shape) > 0.3
    pred[0, 0] = np.nan  # NaN pixels are ignored
    valid = mask & np.isfinite(pred)
    ref = np.corrcoef(pred[valid], gt[valid])[0, 1]
    assert depth_correlation(torch.tensor(pred), gt, mask=torch.tensor(mask)) == pytest.approx(ref, abs=1e-12)
    assert depth_correlation(-2 * gt + 1, gt) == pytest.approx(-1.0, abs=1e-12)
    with pytest.raises(InputError, match="constant"):
        depth_correlation(np.ones((4, 4)), gt[:4, :4])
    with pytest.raises(InputError, match="valid pixel"):
        depth_correlation(gt, gt, mask=np.zeros(gt.shape, bool))
    with pytest.raises(InputError, match="mask: expected shape"):
        depth_correlation(gt, gt, mask=np.ones((2, 2), bool))

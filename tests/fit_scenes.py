"""Synthetic photos with known ground truth, shared by tests/test_fit.py and benchmarks/bench_fit.py (one copy,
so the CI scenes are exactly the first of the benchmark's `--eval` scenes)."""
import math

import numpy as np
import torch

from mofa_tk.face.decoder import FaceDecoder
from mofa_tk.ops.geometry import morph
from mofa_tk.rotation import axis_angle_to_matrix
from mofa_tk.ops.shading import ambient_sh, sh_basis


def random_code(dec, rng, max_yaw=45.0):
    """A random code (1, N) for `dec` and its (yaw, pitch, roll) in degrees: |yaw| <= max_yaw, |pitch| <= 15,
    |roll| <= 10; translation U(+-20, +-20, +-100) mm; shape / expression / reflectance U(-1, 1) std; ambient
    0.3-0.7 plus a random directional light, scaled so that 99.5 % of the shaded colours stay below 0.95."""
    from scipy.spatial.transform import Rotation

    model = dec.model
    code = dec.code.zeros(1)
    b = dec.code.split(code)
    ypr = (rng.uniform(-max_yaw, max_yaw), rng.uniform(-15, 15), rng.uniform(-10, 10))
    b["rotation"][0] = torch.tensor(Rotation.from_euler("YXZ", ypr, degrees=True).as_rotvec(), dtype=torch.float32)
    b["translation"][0] = torch.tensor([rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-100, 100)],
                                       dtype=torch.float32)
    b["shape"][0] = torch.tensor(rng.uniform(-1, 1, model.k_id), dtype=torch.float32)
    b["expression"][0] = torch.tensor(rng.uniform(-1, 1, model.k_exp), dtype=torch.float32)
    b["reflectance"][0] = torch.tensor(rng.uniform(-1, 1, model.k_alb), dtype=torch.float32)
    amb = ambient_sh(1)[0]
    d = rng.normal(size=3)
    d[2] = abs(d[2]) + 0.3
    d /= np.linalg.norm(d)
    col = rng.uniform(0.6, 1.0, 3) * rng.uniform(0.8, 1.5)
    sh = rng.uniform(0.3, 0.7) * amb + sh_basis(torch.tensor(d, dtype=torch.float32))[:, None] * torch.tensor(
        col, dtype=torch.float32)
    b["illumination"][0] = (sh - amb).T.reshape(27)
    with torch.no_grad():
        peak = float(torch.quantile(dec(code)["vertex_colors"].reshape(-1), 0.995))
    if peak > 0.95:  # keep the photo unsaturated
        b["illumination"][0] = (sh * (0.95 / peak) - amb).T.reshape(27)
    return code, ypr


def synthetic_scene(model, seed, size=(288, 256), focal=1100.0, max_yaw=45.0, principal_jitter=15.0):
    """A photo rendered from `random_code` with a principal point up to `principal_jitter` px off centre over a
    noisy plain background. Returns dict(image (H, W, 3) float32, landmarks (68, 2), verts (V, 3) model space,
    code (1, N), decoder, visibility (V,) bool, albedo (V, 3), ypr, focal, principal)."""
    rng = np.random.default_rng(seed)
    H, W = size
    principal = (W / 2 + rng.uniform(-principal_jitter, principal_jitter),
                 H / 2 + rng.uniform(-principal_jitter, principal_jitter))
    dec = FaceDecoder(model, image_size=(H, W), focal=focal, principal=principal)
    code, ypr = random_code(dec, rng, max_yaw)
    bg = np.clip(np.full((H, W, 3), rng.uniform(0.2, 0.8, 3), np.float32)
                 + rng.normal(0, 0.03, (H, W, 3)).astype(np.float32), 0, 1)
    with torch.no_grad():
        out = dec(code, background=torch.from_numpy(bg))
    b = dec.code.split(code)
    verts = morph(model, b["shape"], b["expression"])[0].numpy()
    return {"image": out["image"][0].clamp(0, 1).numpy(), "landmarks": out["landmarks2d"][0].numpy(),
            "verts": verts, "code": code, "decoder": dec, "visibility": out["visibility"][0].numpy(),
            "albedo": out["albedo"][0].numpy(), "ypr": ypr, "focal": focal, "principal": principal}


def rotation_error_deg(r1, r2):
    """Angle (degrees) of the rotation between two axis-angle vectors (3,)."""
    R1 = axis_angle_to_matrix(torch.as_tensor(r1, dtype=torch.float64).reshape(1, 3))[0]
    R2 = axis_angle_to_matrix(torch.as_tensor(r2, dtype=torch.float64).reshape(1, 3))[0]
    return math.degrees(math.acos(max(-1.0, min(1.0, float(((R1.T @ R2).trace() - 1) / 2)))))

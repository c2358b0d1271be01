"""Shared pieces of the `dr_*.py` examples (mofa_tk.dr, nvdiffrast's names): meshes, cameras, image output.

Clip space follows OpenGL: a point in camera space (x right, y up, looking along -z) is multiplied by `projection`;
`dr.rasterize` then puts NDC y = -1 on the first image row, so the examples flip rows when saving images.
"""
import argparse
import math
import os

import numpy as np
import torch

from mofa_tk.rotation import axis_angle_to_matrix


def projection(fov_deg: float = 45.0, near: float = 0.1, far: float = 100.0) -> torch.Tensor:
    """(4, 4) OpenGL perspective matrix, square aspect."""
    f = 1.0 / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor([[f, 0, 0, 0], [0, f, 0, 0],
                         [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                         [0, 0, -1, 0]], dtype=torch.float32)


def clip_positions(verts: torch.Tensor, rotation: torch.Tensor, distance: float, proj: torch.Tensor) -> torch.Tensor:
    """verts (V, 3) object space, rotation (B, 3) axis-angle rad -> (B, V, 4) clip space, the object at `distance`
    in front of the camera."""
    R = axis_angle_to_matrix(rotation)                                   # (B, 3, 3)
    cam = verts[None] @ R.transpose(1, 2) + torch.tensor([0.0, 0.0, -distance])
    hom = torch.cat([cam, torch.ones_like(cam[..., :1])], -1)
    return (hom @ proj.T).contiguous()


def cube():
    """(verts (8, 3), tris (12, 3) int32) of the cube [-1, 1]^3, faces wound counter-clockwise seen from outside."""
    v = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float32)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = []
    for a, b, c, d in quads:
        tris += [(a, b, c), (a, c, d)]
    return v, torch.tensor(tris, dtype=torch.int32)


def uv_sphere(n_lat: int = 32, n_lon: int = 64):
    """(verts (V, 3), uvs (V, 2), tris (T, 3) int32) of the unit sphere with an equirectangular uv layout (the
    seam column duplicated so u runs 0 -> 1)."""
    lat = torch.linspace(0, math.pi, n_lat + 1)
    lon = torch.linspace(0, 2 * math.pi, n_lon + 1)
    la, lo = torch.meshgrid(lat, lon, indexing="ij")
    verts = torch.stack([torch.sin(la) * torch.cos(lo), torch.cos(la), -torch.sin(la) * torch.sin(lo)], -1)
    uvs = torch.stack([lo / (2 * math.pi), la / math.pi], -1)
    idx = torch.arange((n_lat + 1) * (n_lon + 1)).reshape(n_lat + 1, n_lon + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    tris = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    return verts.reshape(-1, 3), uvs.reshape(-1, 2), tris.to(torch.int32)


def random_rotations(rng: np.random.Generator, B: int) -> torch.Tensor:
    """(B, 3) axis-angle rotations, uniform over the sphere of axes, angle U(0, pi)."""
    ax = rng.normal(size=(B, 3))
    ax /= np.linalg.norm(ax, axis=1, keepdims=True)
    return torch.tensor(ax * rng.uniform(0, math.pi, (B, 1)), dtype=torch.float32)


def to_png(img: torch.Tensor) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] with NDC y = -1 on row 0 -> uint8 with the top of the view on top."""
    return (img.detach().clamp(0, 1).flip(0).numpy() * 255 + 0.5).astype(np.uint8)


def example_parser(doc: str, name: str, iters: int, res: int) -> argparse.ArgumentParser:
    """The options every dr example takes: --iters, --res, --out (default NAME_out), --backend, --seed."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--iters", type=int, default=iters)
    ap.add_argument("--res", type=int, default=res)
    ap.add_argument("--out", default=f"{name}_out")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def write_picture(out_dir: str, name: str, image: np.ndarray) -> None:
    """Write OUT_DIR/NAME.png (uint8 image) and say so."""
    import imageio.v3 as iio

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.png")
    iio.imwrite(path, image)
    print(f"wrote {path}")

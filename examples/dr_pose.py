"""Recover the pose of a cube with coloured faces from one target image by gradient descent on the image error,
with `mofa_tk.dr` (the idea of nvdiffrast's pose sample, written here): the silhouette moves through
`antialias`'s edge gradients, the colours through `interpolate`. A few restarts from random starting poses,
the best kept. CPU: about 20 s.

    python examples/dr_pose.py [--iters 250] [--restarts 4] [--res 96] [--out dr_pose_out] [--backend cpu]

Writes OUT/dr_pose.png (target, start, result of the best restart) and prints the rotation error in degrees.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import mofa_tk  # noqa: E402
import mofa_tk.dr as dr  # noqa: E402
from dr_common import (clip_positions, cube, example_parser, projection, random_rotations, to_png,  # noqa: E402
                       write_picture)
from mofa_tk.rotation import axis_angle_to_matrix  # noqa: E402

FACE_COLOURS = [(0.9, 0.2, 0.2), (0.2, 0.8, 0.2), (0.2, 0.3, 0.9), (0.9, 0.9, 0.2), (0.9, 0.3, 0.9),
                (0.2, 0.9, 0.9)]


def coloured_cube():
    """(verts (24, 3), colours (24, 3), tris (12, 3)): each face its own 4 vertices and colour."""
    v, tri = cube()
    verts, cols, tris = [], [], []
    for f in range(6):
        a, b, c = tri[2 * f].tolist()
        d = tri[2 * f + 1].tolist()[2]
        base = len(verts)
        verts += [v[a], v[b], v[c], v[d]]
        cols += [FACE_COLOURS[f]] * 4
        tris += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    return torch.stack(verts), torch.tensor(cols), torch.tensor(tris, dtype=torch.int32)


def render(glctx, verts, cols, tri, rot, res, proj):
    pos = clip_positions(verts, rot, 6.0, proj)
    rast, _ = dr.rasterize(glctx, pos, tri, resolution=[res, res], grad_db=False)
    color, _ = dr.interpolate(cols[None], rast, tri)
    return dr.antialias(color, rast, pos, tri)


def angle_deg(r1, r2):
    R = axis_angle_to_matrix(r1) @ axis_angle_to_matrix(r2).transpose(1, 2)
    c = ((R.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    return float(torch.rad2deg(torch.acos(c))[0])


def main(argv=None):
    ap = example_parser(__doc__, "dr_pose", iters=250, res=96)
    ap.add_argument("--restarts", type=int, default=4)
    args = ap.parse_args(argv)
    mofa_tk.init(args.backend)
    rng = np.random.default_rng(args.seed)
    glctx = dr.RasterizeCudaContext()
    proj = projection(40.0)
    verts, cols, tri = coloured_cube()
    # a target that shows three faces (a face-on view would leave rotations about the view axis ambiguous)
    from scipy.spatial.transform import Rotation

    ypr = [rng.uniform(25, 65) * rng.choice([-1, 1]), rng.uniform(20, 40) * rng.choice([-1, 1]), rng.uniform(-20, 20)]
    r_true = torch.tensor(Rotation.from_euler("YXZ", ypr, degrees=True).as_rotvec()[None], dtype=torch.float32)
    with torch.no_grad():
        target = render(glctx, verts, cols, tri, r_true, args.res, proj)
    best = None
    for k in range(args.restarts):
        r0 = random_rotations(rng, 1)
        r = r0.clone().requires_grad_(True)
        opt = torch.optim.Adam([r], lr=0.03)
        for it in range(args.iters):
            loss = ((render(glctx, verts, cols, tri, r, args.res, proj) - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        loss = float(loss.detach())
        err = angle_deg(r.detach(), r_true)
        print(f"restart {k}: start {angle_deg(r0, r_true):6.1f} deg off -> image mse {loss:.5f}, "
              f"rotation error {err:.2f} deg", flush=True)
        if best is None or loss < best[0]:
            best = (loss, r0, r.detach().clone(), err)
    print(f"best restart: rotation error {best[3]:.2f} deg")
    with torch.no_grad():
        imgs = [render(glctx, verts, cols, tri, rr, 160, proj)[0] for rr in (r_true, best[1], best[2])]
    write_picture(args.out, "dr_pose", np.concatenate([to_png(im) for im in imgs], 1))


if __name__ == "__main__":
    main()

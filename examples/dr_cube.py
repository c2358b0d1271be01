"""Fit a cube's vertex positions and colours to renders of a target cube from random views, with `mofa_tk.dr`
(nvdiffrast's names; the idea of nvdiffrast's cube sample, written here). CPU: about 10 s.

    python examples/dr_cube.py [--iters 400] [--res 64] [--out dr_cube_out] [--backend cpu|vulkan|cuda]

Writes OUT/dr_cube.png: four fixed views of the target (top), the starting cube (middle) and the fit (bottom),
and prints the image loss and the vertex error.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import mofa_tk  # noqa: E402
import mofa_tk.dr as dr  # noqa: E402
from dr_common import (clip_positions, cube, example_parser, projection, random_rotations, to_png,  # noqa: E402
                       write_picture)


def render(glctx, verts, colors, tri, rotations, res, proj):
    pos = clip_positions(verts, rotations, 6.0, proj)
    rast, _ = dr.rasterize(glctx, pos, tri, resolution=[res, res], grad_db=False)
    color, _ = dr.interpolate(colors[None], rast, tri)
    return dr.antialias(color, rast, pos, tri)


def main(argv=None):
    ap = example_parser(__doc__, "dr_cube", iters=400, res=64)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args(argv)
    mofa_tk.init(args.backend)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    glctx = dr.RasterizeCudaContext()
    proj = projection(40.0)
    v_true, tri = cube()
    c_true = torch.tensor(rng.uniform(0.1, 0.9, (8, 3)), dtype=torch.float32)
    v = (v_true + torch.tensor(rng.normal(0, 0.3, (8, 3)), dtype=torch.float32)).requires_grad_(True)
    c = torch.full((8, 3), 0.5).requires_grad_(True)
    v0, c0 = v.detach().clone(), c.detach().clone()
    opt = torch.optim.Adam([v, c], lr=0.01)
    views = random_rotations(np.random.default_rng(123), 4)
    for it in range(args.iters + 1):
        rots = random_rotations(rng, args.batch)
        with torch.no_grad():
            target = render(glctx, v_true, c_true, tri, rots, args.res, proj)
        loss = ((render(glctx, v, c, tri, rots, args.res, proj) - target) ** 2).mean()
        if it % 100 == 0 or it == args.iters:
            err = float((v.detach() - v_true).norm(dim=-1).mean())
            print(f"iter {it:4d}  image mse {float(loss.detach()):.5f}  mean vertex error {err:.4f}", flush=True)
        if it == args.iters:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    rows = []
    with torch.no_grad():
        for verts, cols in ((v_true, c_true), (v0, c0), (v.detach(), c.detach())):
            imgs = render(glctx, verts, cols, tri, views, 128, proj)
            rows.append(np.concatenate([to_png(im) for im in imgs], 1))
    write_picture(args.out, "dr_cube", np.concatenate(rows, 0))


if __name__ == "__main__":
    main()

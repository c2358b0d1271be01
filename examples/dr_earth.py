"""Learn the texture of a sphere from renders of a textured target sphere, with mipmapped texturing through
`mofa_tk.dr` (image-space uv derivatives select the mip level; the idea of nvdiffrast's earth sample, written
here). The target texture is a procedural "planet" (smoothed noise thresholded into oceans, land and ice).
CPU: about 30 s.

    python examples/dr_earth.py [--iters 300] [--res 128] [--mip | --no-mip] [--out dr_earth_out] [--backend cpu]

Writes OUT/dr_earth.png: target views (top), the fit's views (middle), and the target / learned texture (bottom),
and prints the image loss and the PSNR of the final renders.
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, os.path.dirname(__file__))
import mofa_tk  # noqa: E402
import mofa_tk.dr as dr  # noqa: E402
from dr_common import (clip_positions, example_parser, projection, random_rotations, to_png,  # noqa: E402
                       uv_sphere, write_picture)


def planet_texture(rng, H=256, W=512):
    """(H, W, 3) float32: oceans, land and polar ice from smoothed noise (wraps around in u)."""
    noise = ndimage.gaussian_filter(rng.normal(size=(H, W)), (H / 16, W / 32), mode=("nearest", "wrap"))
    noise /= noise.std()
    lat = np.abs(np.linspace(-1, 1, H))[:, None]
    land = noise > 0.3
    tex = np.where(land[..., None], [0.25, 0.55, 0.2], [0.05, 0.2, 0.55]).astype(np.float32)
    tex[(lat > 0.8).repeat(W, 1)] = [0.9, 0.9, 0.95]
    detail = ndimage.gaussian_filter(rng.normal(size=(H, W)), 1.5) * 0.05
    return np.clip(tex + detail[..., None], 0, 1).astype(np.float32)


def render(glctx, pos, tri, uvs, tex, res, mip):
    rast, rast_db = dr.rasterize(glctx, pos, tri, resolution=[res, res])
    texc, texd = dr.interpolate(uvs[None], rast, tri, rast_db=rast_db, diff_attrs="all")
    if mip:
        color = dr.texture(tex[None], texc, texd, filter_mode="linear-mipmap-linear", boundary_mode="wrap")
    else:
        color = dr.texture(tex[None], texc, filter_mode="linear", boundary_mode="wrap")
    color = color * (rast[..., 3:] > 0)
    return dr.antialias(color, rast, pos, tri)


def main(argv=None):
    ap = example_parser(__doc__, "dr_earth", iters=300, res=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--mip", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args(argv)
    mofa_tk.init(args.backend)
    rng = np.random.default_rng(args.seed)
    glctx = dr.RasterizeCudaContext()
    proj = projection(30.0)
    verts, uvs, tri = uv_sphere()
    tex_true = torch.from_numpy(planet_texture(rng))
    tex = torch.full_like(tex_true, 0.5).requires_grad_(True)
    opt = torch.optim.Adam([tex], lr=0.05)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.01 ** (1.0 / max(args.iters, 1)))
    # distances from 3.5 to 40 sphere radii: distant views need the coarse mip levels
    for it in range(args.iters + 1):
        rots = random_rotations(rng, args.batch)
        dist = float(math.exp(rng.uniform(math.log(3.5), math.log(40.0))))
        pos = clip_positions(verts, rots, dist, proj)
        with torch.no_grad():
            target = render(glctx, pos, tri, uvs, tex_true, args.res, args.mip)
        loss = ((render(glctx, pos, tri, uvs, tex, args.res, args.mip) - target) ** 2).mean()
        if it % 50 == 0 or it == args.iters:
            print(f"iter {it:4d}  image mse {float(loss.detach()):.5f}  (distance {dist:.1f})", flush=True)
        if it == args.iters:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            tex.clamp_(0, 1)
    views = random_rotations(np.random.default_rng(7), 4)
    with torch.no_grad():
        pos = clip_positions(verts, views, 5.0, proj)
        t_img = render(glctx, pos, tri, uvs, tex_true, 128, args.mip)
        f_img = render(glctx, pos, tri, uvs, tex.detach(), 128, args.mip)
    mse = float(((t_img - f_img) ** 2).mean())
    print(f"final renders: PSNR {10 * math.log10(1.0 / max(mse, 1e-12)):.1f} dB (mip {'on' if args.mip else 'off'})")
    rows = [np.concatenate([to_png(im) for im in imgs], 1) for imgs in (t_img, f_img)]
    texrow = np.concatenate([tex_true.numpy(), tex.detach().clamp(0, 1).numpy()], 1)
    texrow = (ndimage.zoom(texrow, (rows[0].shape[1] / texrow.shape[1],) * 2 + (1,), order=1) * 255 + 0.5)
    write_picture(args.out, "dr_earth", np.concatenate(rows + [texrow.astype(np.uint8)], 0))


if __name__ == "__main__":
    main()

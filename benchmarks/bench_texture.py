"""Texture benchmark: `mofa_tk.texture` forward and forward + backward at 224 x 224 samples against a vectorised
torch baseline, `torch.nn.functional.grid_sample` (bilinear, NCHW, grid = 2 uv - 1, align_corners=False: the same
sampling positions) in the same process.

    python benchmarks/bench_texture.py [--backend cpu|vulkan|cuda] [--batch B] [--tex 512] [--channels 3]
        [--boundary wrap|clamp|zero] [--repeats N]

Timing method (benchmarks/timing.py `best_ms_interleaved`): both sides alternate, each in its own steady state
(it runs untimed for 20 ms whenever the other side ran in between); the best of N runs is reported. grid_sample
has no wrap mode: the baseline uses padding_mode="border" for clamp and wrap (for wrap the coordinates are
reduced to [0, 1) first, which samples the same texels except within half a texel of the seam) and "zeros" for
zero. The printed ratio is baseline time / mofa_tk time (> 1: mofa_tk is faster).
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from timing import best_ms_interleaved  # noqa: E402

import mofa_tk  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--size", type=int, default=224, help="samples per side (the image)")
    ap.add_argument("--tex", type=int, default=512, help="texture side in texels")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--boundary", default="clamp", choices=("wrap", "clamp", "zero"))
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)
    mofa_tk.init(args.backend)
    dev = "cuda" if args.backend == "cuda" else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    print(f"texture {args.tex}x{args.tex}x{args.channels}, {args.size}x{args.size} samples, bilinear, "
          f"{args.boundary}; backend {args.backend}, torch threads {torch.get_num_threads()}")
    print(f"{'B':>3} {'pass':>18} {'mofa_tk ms':>11} {'grid_sample ms':>15} {'ratio':>7}")
    pad = "zeros" if args.boundary == "zero" else "border"
    for B in args.batch:
        tex = torch.tensor(rng.uniform(0, 1, (B, args.tex, args.tex, args.channels)), dtype=torch.float32,
                           device=dev, requires_grad=True)
        # smooth uv field (a warped plane), as from interpolated vertex uvs
        s = torch.linspace(0, 1, args.size, device=dev)
        gy, gx = torch.meshgrid(s, s, indexing="ij")
        uv = torch.stack([gx + 0.05 * torch.sin(6 * gy), gy + 0.05 * torch.cos(5 * gx)], -1)
        uv = uv[None].repeat(B, 1, 1, 1).contiguous().requires_grad_(True)
        g = torch.rand(B, args.size, args.size, args.channels, device=dev)
        tex_nchw = tex.detach().permute(0, 3, 1, 2).contiguous().requires_grad_(True)

        def ours_fwd():
            with torch.no_grad():
                mofa_tk.texture(tex, uv, boundary_mode=args.boundary)

        def ref_fwd():
            with torch.no_grad():
                u = uv - torch.floor(uv) if args.boundary == "wrap" else uv
                torch.nn.functional.grid_sample(tex_nchw, 2 * u - 1, mode="bilinear", padding_mode=pad,
                                                align_corners=False)

        def ours_fb():
            out = mofa_tk.texture(tex, uv, boundary_mode=args.boundary)
            torch.autograd.grad(out, [tex, uv], g)

        def ref_fb():
            u = uv - torch.floor(uv) if args.boundary == "wrap" else uv
            out = torch.nn.functional.grid_sample(tex_nchw, 2 * u - 1, mode="bilinear", padding_mode=pad,
                                                  align_corners=False)
            torch.autograd.grad(out, [tex_nchw, uv], g.permute(0, 3, 1, 2))

        for name, a, b in (("forward", ours_fwd, ref_fwd), ("forward + backward", ours_fb, ref_fb)):
            t_ours, t_ref = best_ms_interleaved(a, b, args.repeats, args.repeats, sync)
            print(f"{B:>3} {name:>18} {t_ours:>11.3f} {t_ref:>15.3f} {t_ref / t_ours:>6.2f}x")


if __name__ == "__main__":
    main()

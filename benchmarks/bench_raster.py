"""Rasterizer benchmark: mofa_tk (Taichi) vs a vectorised pure-PyTorch reference, in one process.

Scene: the built-in model at resolution "bfm" (35,709 vertices, ~70k triangles), mean face at a 20 degree
yaw, 224 x 224, B = 1 and B = 8. For each: ms per rasterize, rasterize + interpolate + antialias forward,
and forward + backward (to positions and vertex colours). Outputs of both are checked to agree first.

    python benchmarks/bench_raster.py [--backend cpu|vulkan|cuda] [--repeats N]
"""
import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mofa_tk  # noqa: E402
from mofa_tk.mesh import triangle_neighbours  # noqa: E402
from timing import SETTLE_MS, best_ms_interleaved  # noqa: E402
from torch_reference import torch_antialias, torch_interpolate, torch_rasterize  # noqa: E402


def scene(B, H, W, device):
    model = mofa_tk.builtin_model("bfm")
    verts = mofa_tk.morph(model, torch.zeros(1, model.k_id), torch.zeros(1, model.k_exp)).expand(B, -1, -1)
    yaw = torch.tensor([[0.0, 0.35, 0.0]]).expand(B, -1)
    cam = mofa_tk.rigid(verts, yaw, torch.tensor([[0.0, 0.0, -1000.0]]).expand(B, -1))
    clip = mofa_tk.to_clip(cam, 1015.0 * W / 224, (W / 2, H / 2), (H, W)).to(device).contiguous()
    colors = model.albedo_mean[None].expand(B, -1, -1).contiguous().to(device)
    return clip, model.triangles.to(device), colors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    backend = mofa_tk.init(args.backend)
    device = torch.device("cuda" if backend == "cuda" else "cpu")
    sync = torch.cuda.synchronize if backend == "cuda" else (lambda: None)
    H = W = args.size
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"backend {backend}, torch {torch.__version__}")
    print(f"times are the best of {args.repeats} runs (the reference's of half as many), mofa_tk and reference "
          f"alternating, each timed in its own steady state: before a timed run, a side runs untimed for "
          f"{SETTLE_MS:.0f} ms after the other side ran (torch's OpenMP workers spin ~10 ms after the reference's "
          "last op; see benchmarks/timing.py)")
    print(f"{'B':>3} {'stage':<34} {'mofa_tk ms':>11} {'torch ms':>10} {'ratio':>7}")
    for B in (1, 8):
        clip, tris, colors = scene(B, H, W, device)
        nbr = triangle_neighbours(tris).to(device)

        def ours(backward=False, full=True):
            p = clip.detach().requires_grad_(backward)
            c = colors.detach().requires_grad_(backward)
            rast = mofa_tk.rasterize(p, tris, (H, W))
            if not full:
                return rast
            img = mofa_tk.antialias(mofa_tk.interpolate(c, rast, tris), rast, p, tris)
            if backward:
                img.sum().backward()
            return img

        def ref(backward=False, full=True):
            p = clip.detach().requires_grad_(backward)
            c = colors.detach().requires_grad_(backward)
            rast = torch_rasterize(p, tris, (H, W))
            if not full:
                return rast
            img = torch_antialias(torch_interpolate(c, rast, tris), rast, p, tris, nbr)
            if backward:
                img.sum().backward()
            return img

        # outputs agree
        r_ours, r_ref = ours(full=False), ref(full=False)
        same = (r_ours[..., 3] == r_ref[..., 3]).float().mean().item()
        i_ours, i_ref = ours(), ref()
        img_err = (i_ours - i_ref).abs().max().item()
        print(f"    check B={B}: triangle ids agree on {same:.4%} of pixels; max |image difference| {img_err:.2e}; "
              f"coverage {(r_ours[..., 3] > 0).float().mean().item():.1%}")
        assert same > 0.999 and img_err < 1e-3, "mofa_tk and the reference disagree"
        for name, kw in (("rasterize", dict(full=False)), ("raster+interp+antialias fwd", dict()),
                         ("raster+interp+antialias fwd+bwd", dict(backward=True))):
            a, b = best_ms_interleaved(lambda: ours(**kw), lambda: ref(**kw), args.repeats, max(3, args.repeats // 2),
                                       sync)
            print(f"{B:>3} {name:<34} {a:>11.2f} {b:>10.2f} {b / a:>6.1f}x")


if __name__ == "__main__":
    main()

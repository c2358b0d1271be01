#!/usr/bin/env python
"""`morph` (the generative model: mean + shape basis @ alpha + expression basis @ delta) forward and backward,
mofa_tk's Taichi kernels vs the same contraction in PyTorch (einsum forward, autograd backward = BLAS), in one
process, on the built-in model at both resolutions (11,129 and 35,709 vertices; 80 + 64 components).

    python benchmarks/bench_morph.py [--backend cpu|vulkan|cuda] [--repeats N] [--batches 1,16]

Prints the best of --repeats runs in ms and the ratio torch / mofa_tk (> 1: mofa_tk faster). Outputs and
gradients are checked to agree first.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mofa_tk  # noqa: E402
from timing import best_ms  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cpu", choices=("cpu", "vulkan", "cuda"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batches", default="1,16")
    args = ap.parse_args()
    mofa_tk.init(args.backend)
    dev = mofa_tk.backend.kernel_device()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(f"backend {args.backend}, torch threads {torch.get_num_threads()}; best of {args.repeats}, ms")
    print(f"{'model':>8} {'V':>6} {'B':>3} | {'fwd ours':>9} {'fwd torch':>9} {'ratio':>6} | "
          f"{'bwd ours':>9} {'bwd torch':>9} {'ratio':>6}")
    for res in ("default", "bfm"):
        model = mofa_tk.builtin_model(res).to(dev)
        sb = (model.shape_basis).to(dev)
        eb = (model.expr_basis).to(dev)
        for B in (int(b) for b in args.batches.split(",")):
            g = torch.Generator().manual_seed(0)
            alpha = torch.randn(B, model.k_id, generator=g).to(dev).requires_grad_()
            delta = torch.randn(B, model.k_exp, generator=g).to(dev).requires_grad_()
            w = torch.randn(B, model.n_vertices, 3, generator=g).to(dev)

            def torch_morph(a, d):
                return (model.mean_shape + torch.einsum("vck,bk->bvc", sb, a * model.shape_std)
                        + torch.einsum("vck,bk->bvc", eb, d * model.expr_std))

            ours_out = mofa_tk.morph(model, alpha, delta)
            ref_out = torch_morph(alpha, delta)
            assert torch.allclose(ours_out, ref_out, rtol=1e-4, atol=1e-2), "forward differs"
            ga = torch.autograd.grad((ours_out * w).sum(), (alpha, delta))
            gr = torch.autograd.grad((ref_out * w).sum(), (alpha, delta))
            for x, y in zip(ga, gr):
                assert float((x - y).abs().max() / y.abs().max()) < 1e-4, "gradient differs"
            with torch.no_grad():
                f_ours = best_ms(lambda: mofa_tk.morph(model, alpha, delta), args.repeats, sync)
                f_ref = best_ms(lambda: torch_morph(alpha, delta), args.repeats, sync)
            out_o = mofa_tk.morph(model, alpha, delta)
            out_r = torch_morph(alpha, delta)
            b_ours = best_ms(lambda: torch.autograd.grad(out_o, (alpha, delta), w, retain_graph=True), args.repeats, sync)
            b_ref = best_ms(lambda: torch.autograd.grad(out_r, (alpha, delta), w, retain_graph=True), args.repeats, sync)
            print(f"{res:>8} {model.n_vertices:>6} {B:>3} | {f_ours:9.2f} {f_ref:9.2f} {f_ref / f_ours:5.2f}x | "
                  f"{b_ours:9.2f} {b_ref:9.2f} {b_ref / b_ours:5.2f}x")


if __name__ == "__main__":
    main()

"""FaceDecoder benchmark: mofa_tk (Taichi ops) vs the same pipeline in pure PyTorch, in one process.

Scene: the built-in model at resolution "bfm" (35,709 vertices, ~70k triangles), 224 x 224, a code with a
30 degree yaw, random shape / expression / reflectance and a directional light; B = 1, 8 and 32. Timed:
the decoder forward, and forward + backward of MoFA's photometric loss (dense vertex term + l2,1 pixel term)
against a fixed target image down to the code.

The reference does every stage with torch ops: morph and albedo (einsum), rigid transform, area-weighted
normals (index_add), SH shading, clip transform, and `benchmarks/torch_reference.py`'s rasterizer,
interpolator and antialiaser; autograd gives its backward. Landmarks and visibility are the decoder's own
(torch) code in both. The outputs are checked to agree before timing.

    python benchmarks/bench_decoder.py [--backend cpu|vulkan|cuda] [--repeats N] [--batches 1,8,32]
    (with --backend cuda the PyTorch reference runs on the GPU too)
"""
import argparse
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mofa_tk  # noqa: E402
from mofa_tk import losses as L  # noqa: E402
from mofa_tk.face.decoder import FaceDecoder, Geometry  # noqa: E402
from mofa_tk.camera import clip_matrix  # noqa: E402
from mofa_tk.mesh import triangle_neighbours  # noqa: E402
from mofa_tk.ops.shading import SH_BAND_FACTORS, sh_basis  # noqa: E402
from torch_reference import torch_antialias, torch_interpolate, torch_rasterize  # noqa: E402


class TorchDecoder:
    """The FaceDecoder pipeline written with plain torch ops (same camera, parametrisation and outputs)."""

    def __init__(self, dec: FaceDecoder):
        self.dec = dec
        m = dec.model
        self.m = m
        dev = m.mean_shape.device
        self.tris = m.triangles.long()
        self.nbr = triangle_neighbours(m.triangles).to(dev)
        H, W = dec.image_size
        self.M = clip_matrix(dec.focal, dec.principal, (H, W), dec.near, dec.far)[0].to(dev)
        A = SH_BAND_FACTORS
        self.band = torch.tensor([A[0], A[1], A[1], A[1], A[2], A[2], A[2], A[2], A[2]], device=dev)

    def __call__(self, code):
        dec, m = self.dec, self.m
        bl = dec.code.split(code)
        verts = (m.mean_shape[None] + torch.einsum("vck,bk->bvc", m.shape_basis, bl["shape"] * m.shape_std)
                 + torch.einsum("vck,bk->bvc", m.expr_basis, bl["expression"] * m.expr_std))
        R, t = dec.camera_transform(bl["rotation"], bl["translation"])
        vc = verts @ R.transpose(1, 2) + t[:, None]
        f = vc[:, self.tris]                                                   # (B, T, 3, 3)
        fn = torch.cross(f[:, :, 1] - f[:, :, 0], f[:, :, 2] - f[:, :, 0], dim=-1)
        acc = torch.zeros_like(vc)
        for k in range(3):
            acc = acc.index_add(1, self.tris[:, k], fn)
        normals = acc / acc.norm(dim=-1, keepdim=True).clamp(min=1e-20)
        albedo = m.albedo_mean[None] + torch.einsum("vck,bk->bvc", m.albedo_basis, bl["reflectance"] * m.albedo_std)
        sh = (dec.ambient_code + bl["illumination"]).reshape(-1, 3, 9)         # channel-major
        irr = torch.einsum("bvk,bck->bvc", sh_basis(normals) * self.band, sh)
        colors = albedo * irr
        pos_clip = torch.cat([vc, torch.ones_like(vc[..., :1])], -1) @ self.M.T
        H, W = dec.image_size
        rast = torch_rasterize(pos_clip, self.tris, (H, W))
        px = torch_interpolate(torch.cat([colors, torch.ones_like(colors[..., :1])], -1), rast, self.tris)
        out = torch_antialias(px, rast, pos_clip, self.tris, self.nbr)
        verts_2d = dec.camera.project(vc)
        lm = dec.landmarks(verts_2d)
        vis = dec.visibility(Geometry(bl, verts, R, t, vc, normals, verts_2d, lm), rast)
        return {"image": out[..., :3], "mask": out[..., 3:], "verts_2d": verts_2d, "vertex_colors": colors,
                "visibility": vis, "boundary": dec.boundary, "landmarks2d": lm, "rast": rast}


def make_code(dec, B, seed=0):
    """(B, N) code on the decoder's device: a head turned 30 degrees, random shape / expression / reflectance,
    a white light from the upper left."""
    g = torch.Generator().manual_seed(seed)
    code = dec.code.zeros(B)
    bl = dec.code.split(code)
    bl["rotation"][:, 1] = 0.5
    bl["rotation"][:, 0] = torch.randn(B, generator=g) * 0.1
    for k in ("shape", "expression", "reflectance"):
        bl[k][:] = torch.randn(bl[k].shape, generator=g) * 0.7
    light = sh_basis(torch.tensor([-0.5, 0.6, 1.0]) / math.sqrt(1.61))       # a white light from the upper left
    bl["illumination"][:] = (-0.6 * dec.ambient_code[0].cpu().reshape(3, 9) + 0.8 * light[None]).reshape(27)
    return code.to(dec.center.device)


def loss_of(out, target):
    vis = out["visibility"] & ~out["boundary"][None]
    return (L.vertex_photometric_loss(target, out["verts_2d"], out["vertex_colors"], vis, robust=True)
            + L.image_photometric_loss(out["image"], target, out["mask"], robust=True))


def timeit(fn, repeats, sync):
    fn()  # warm-up (compilation, caches)
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t) / repeats * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--repeats", type=int, default=4, help="timed repeats for B <= 8 (B = 32 uses a quarter)")
    ap.add_argument("--batches", default="1,8,32")
    args = ap.parse_args()
    backend = mofa_tk.init(args.backend)
    device = torch.device("cuda", 0) if backend == "cuda" else torch.device("cpu")
    sync = torch.cuda.synchronize if backend == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    model = mofa_tk.builtin_model("bfm").to(device)           # on CUDA both sides run on the GPU
    dec = FaceDecoder(model).to(device)
    ref = TorchDecoder(dec)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"backend {backend}, torch {torch.__version__}; model {model.n_vertices} vertices, "
          f"{model.n_triangles} triangles, 224 x 224 (setup {time.perf_counter() - t0:.1f} s)")
    print(f"{'B':>3} {'stage':<28} {'mofa_tk ms':>11} {'torch ms':>10} {'ratio':>7}")
    for B in (int(b) for b in args.batches.split(",")):
        code = make_code(dec, B)
        with torch.no_grad():
            a, b = dec(code), ref(code)
            target = dec(make_code(dec, B, seed=1))["image"]
        diff = (a["image"] - b["image"]).abs().amax(-1)
        img_off = (diff > 1e-3).float().mean().item()      # pixels whose winning triangle differs (ties)
        col_err = (a["vertex_colors"] - b["vertex_colors"]).abs().max().item()
        vis_same = (a["visibility"] == b["visibility"]).float().mean().item()
        print(f"    check B={B}: image pixels differing by > 1e-3: {img_off:.4%} (max {diff.max().item():.1e}), "
              f"max |vertex colour diff| {col_err:.1e}, visibility agrees on {vis_same:.3%}")
        assert img_off < 1e-3 and col_err < 1e-3 and vis_same > 0.999, "mofa_tk and the reference disagree"

        def run(decoder, backward):
            x = code.clone().requires_grad_(backward)
            if not backward:
                with torch.no_grad():
                    return decoder(x)
            loss = loss_of(decoder(x), target)
            loss.backward()
            return x.grad

        ga, gb = run(dec, True), run(ref, True)
        gerr = ((ga - gb).norm() / gb.norm()).item()
        print(f"    check B={B}: code gradient relative difference {gerr:.1e}")
        reps = args.repeats if B <= 8 else max(1, args.repeats // 4)
        for name, bw in (("decoder forward", False), ("decoder + loss fwd+bwd", True)):
            ta = timeit(lambda: run(dec, bw), reps, sync)
            tb = timeit(lambda: run(ref, bw), max(1, reps // 2), sync)
            print(f"{B:>3} {name:<28} {ta:>11.1f} {tb:>10.1f} {tb / ta:>6.1f}x")


if __name__ == "__main__":
    main()

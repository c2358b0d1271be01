#!/usr/bin/env python
"""Training throughput of the MoFA autoencoder and where a step's time goes (encoder vs decoder).

    python benchmarks/bench_train.py                       # B = 16 at 112 and 224 px, built-in model, cpu
    python benchmarks/bench_train.py --sizes 64 112 --batch 8 --repeats 7 --json bench_train.json

For every image size S, one training step (the loop of `mofa_tk.training.train`: synthetic batch, encoder, decoder,
MoFA loss, backward, gradient clipping, AdamW) is timed two ways, in the same process:

* fused   -- the step exactly as `train` runs it (one backward through decoder and encoder); images/s =
             B / step time, with and without rendering the synthetic batch ("data");
* split   -- the same step cut at the code: encoder forward; decoder forward + loss; decoder backward (loss ->
             code gradient); encoder backward (code gradient -> weights); optimiser. The encoder and decoder
             shares below are of the split step (forward + backward each, data and optimiser excluded).

Each repeat times `--steps` consecutive steps after `--warmup` untimed ones; the report gives the median and
the range over `--repeats` repeats (the machine may be shared: compare medians, and rerun when ranges are
wide). Kernels are compiled during the warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

import mofa_tk  # noqa: E402
from mofa_tk import losses as L  # noqa: E402
from mofa_tk.training.autoencoder import MoFA  # noqa: E402
from mofa_tk.training.data import SyntheticFaces  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_size(model, S, B, steps, warmup, repeats, device, encoder_options):
    torch.manual_seed(0)
    mofa = MoFA(model, S, encoder_options=encoder_options).to(device)
    ds = SyntheticFaces(mofa.decoder, 10_000, seed=0, device=device)
    enc, dec = mofa.encoder, mofa.decoder
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-4)
    counter = [0]

    def batch():
        i = counter[0]
        counter[0] += 1
        return ds.batch(range((i * B) % 9000, (i * B) % 9000 + B))

    def fused(b):
        total, _, _, _ = mofa.loss(b["image"], b["landmarks"])
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 5.0)
        opt.step()

    def split(b, t):
        img = b["image"]
        _sync(device); t0 = time.perf_counter()
        code = enc(img.permute(0, 3, 1, 2))
        _sync(device); t1 = time.perf_counter()
        c = code.detach().requires_grad_(True)
        out = dec(c)
        total, _ = L.mofa_loss(out, img, b["landmarks"], weights=mofa.weights, reg_weights=mofa.reg_weights)
        _sync(device); t2 = time.perf_counter()
        total.backward()
        _sync(device); t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        code.backward(c.grad)
        _sync(device); t4 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 5.0)
        opt.step()
        _sync(device); t5 = time.perf_counter()
        for k, dt in (("enc_fwd", t1 - t0), ("dec_fwd", t2 - t1), ("dec_bwd", t3 - t2), ("enc_bwd", t4 - t3),
                      ("opt", t5 - t4)):
            t[k] += dt

    res = {k: [] for k in ("data", "fused", "enc_fwd", "dec_fwd", "dec_bwd", "enc_bwd", "opt")}
    for _ in range(warmup):
        b = batch()
        fused(b)
        split(b, dict.fromkeys(res, 0.0))
    for _ in range(repeats):
        t = dict.fromkeys(res, 0.0)
        for _ in range(steps):
            _sync(device); t0 = time.perf_counter()
            b = batch()
            _sync(device); t1 = time.perf_counter()
            fused(b)
            _sync(device); t2 = time.perf_counter()
            t["data"] += t1 - t0
            t["fused"] += t2 - t1
            split(b, t)
        for k in res:
            res[k].append(t[k] / steps)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backend", default="cpu", choices=("cpu", "cuda", "vulkan", "auto"))
    p.add_argument("--model", default="builtin", help="builtin or builtin:bfm")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the raw timings here")
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    active = mofa_tk.init(args.backend)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda") if active == "cuda" else torch.device("cpu")
    model = mofa_tk.builtin_model("bfm" if args.model == "builtin:bfm" else "default").to(device)
    console = Console()
    if console.width < 160:
        console = Console(width=160)
    console.print(f"backend {active}, torch threads {torch.get_num_threads()}, model {model.name} "
                  f"(V={model.n_vertices}, code N={len(mofa_tk.Code.for_model(model))}), B={args.batch}, "
                  f"{args.repeats} repeats x {args.steps} steps")
    enc_opts = {}
    raw = {}
    table = Table(title="MoFA training step (median \\[min - max] over repeats)")
    for col in ("S", "step ms", "images/s", "images/s incl. data", "data ms", "encoder f+b ms", "decoder f+b ms",
                "encoder share", "decoder share"):
        table.add_column(col, justify="right")
    for S in args.sizes:
        r = bench_size(model, S, args.batch, args.steps, args.warmup, args.repeats, device, enc_opts)
        raw[S] = r
        enc = [a + b for a, b in zip(r["enc_fwd"], r["enc_bwd"])]
        dec = [a + b for a, b in zip(r["dec_fwd"], r["dec_bwd"])]
        share_e = [e / (e + d) for e, d in zip(enc, dec)]
        share_d = [d / (e + d) for e, d in zip(enc, dec)]
        ips = [args.batch / f for f in r["fused"]]
        ips_d = [args.batch / (f + d) for f, d in zip(r["fused"], r["data"])]

        def fmt(v, scale=1.0, f="{:.0f}"):
            m = statistics.median(v) * scale
            return escape((f + " [" + f + " - " + f + "]").format(m, min(v) * scale, max(v) * scale))

        table.add_row(str(S), fmt(r["fused"], 1e3), fmt(ips, 1, "{:.1f}"), fmt(ips_d, 1, "{:.1f}"),
                      fmt(r["data"], 1e3), fmt(enc, 1e3), fmt(dec, 1e3), fmt(share_e, 100, "{:.0f}%"),
                      fmt(share_d, 100, "{:.0f}%"))
        console.print(f"S={S}: decoder fwd {statistics.median(r['dec_fwd']) * 1e3:.0f} ms, bwd "
                      f"{statistics.median(r['dec_bwd']) * 1e3:.0f} ms; encoder fwd "
                      f"{statistics.median(r['enc_fwd']) * 1e3:.0f} ms, bwd {statistics.median(r['enc_bwd']) * 1e3:.0f} ms; "
                      f"optimiser {statistics.median(r['opt']) * 1e3:.1f} ms")
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "backend": active, "timings_s": raw}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The scale path of training on photo folders: memory against folder size, ranks, and the landmark pass.

    python benchmarks/bench_scale.py --work /tmp/scale                      # 1k and 20k photos (~15 min, 2 cores)
    python benchmarks/bench_scale.py --work /tmp/scale --sizes 500 5000 --detect 100

Every figure comes from the commands a user runs, as subprocesses, on folders written by `mofa synth`
(kept in --work between runs: `mofa synth` keeps existing photos):

1. index pass: `mofa landmarks F --no-detect` decodes every photo once (photos/s at each size: a linear pass
   has the same rate at every size);
2. memory: `mofa train --data F` for a few steps after the pass, peak RSS of the training process (its
   DataLoader workers are separate processes and not counted) for each folder size; the target is a ratio of
   at most 1.5 between the largest and the smallest folder;
3. ranks: images/s of `mofa train --data F` in one process and under `torchrun --nproc-per-node 2` (the same
   global batch; median of the logged per-step rates after the first 5 steps);
4. detection: `mofa landmarks` with MediaPipe on --detect photos without landmark files, 1 and 2 workers.

No figure here is asserted anywhere; compare ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--steps", "30", "--batch-size", "16", "--image-size", "64", "--heldout", "8", "--eval-every", "1000",
         "--ckpt-every", "1000", "--no-detect", "--no-progress", "--backend", "cpu"]


def run(cmd, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if r.returncode:
        sys.exit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr[-2000:]}")
    return r, time.perf_counter() - t


def peak_rss_mib(cmd) -> tuple[float, float]:
    """Peak RSS (MiB) of `cmd`'s own process, measured by a fresh Python parent, and the wall time."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); r = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t); "
             "sys.exit(r.returncode)")
    r, _ = run([sys.executable, "-c", probe, *map(str, cmd)])
    rss, wall = r.stdout.strip().splitlines()[-1].split()
    return float(rss), float(wall)


def mofa(*args):
    return [sys.executable, "-m", "mofa_tk", *map(str, args)]


def pass_seconds(r) -> float:
    """The pass's own time, as `mofa landmarks` prints it (without the interpreter's start-up)."""
    m = re.search(r"photo\(s\) in ([0-9.]+) s", r.stdout)
    return float(m.group(1))


def images_per_s(out: Path) -> float:
    h = json.loads((out / "history.json").read_text())
    return statistics.median(h["images_per_s"][5:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="folder for the photo folders and runs (kept between runs)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000], help="photo folder sizes")
    p.add_argument("--detect", type=int, default=100, help="photos for the detection pass (0: skip it)")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)
    work = Path(a.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    fig = {"cpus": os.cpu_count(), "sizes": {}}
    print(f"{os.cpu_count()} CPUs; photo folders in {work}")
    for n in sorted(a.sizes):
        folder = work / f"photos_{n}"
        run(mofa("synth", folder, "--n", n, "--quiet"))
        index = folder / ".mofa_tk_landmarks.json"
        index.unlink(missing_ok=True)
        t_pass = pass_seconds(run(mofa("landmarks", folder, "--no-detect", "--no-progress", "--workers", "2"))[0])
        out = work / f"run_{n}"
        shutil.rmtree(out, ignore_errors=True)
        rss, wall = peak_rss_mib(mofa("train", "--data", folder, "--out", out, *TRAIN))
        fig["sizes"][n] = {"index_pass_s": t_pass, "index_photos_per_s": n / t_pass, "train_peak_rss_mib": rss,
                           "train_wall_s": wall, "train_images_per_s": images_per_s(out)}
        print(f"{n:>6} photos: index pass {t_pass:6.1f} s ({n / t_pass:6.0f} photos/s, 2 workers); "
              f"mofa train (30 steps): peak RSS {rss:6.0f} MiB, {wall:5.1f} s")
    small, large = min(a.sizes), max(a.sizes)
    ratio = fig["sizes"][large]["train_peak_rss_mib"] / fig["sizes"][small]["train_peak_rss_mib"]
    fig["rss_ratio"] = ratio
    print(f"peak RSS {large} / {small} photos: {ratio:.2f}x (target <= 1.5x)")

    folder = work / f"photos_{small}"
    one, two = work / "ranks_1", work / "ranks_2"
    for d in (one, two):
        shutil.rmtree(d, ignore_errors=True)
    run(mofa("train", "--data", folder, "--out", one, *TRAIN))
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mofa_tk",
         "train", "--data", folder, "--out", two, *TRAIN])
    fig["images_per_s"] = {"1 rank": images_per_s(one), "2 ranks": images_per_s(two)}
    print(f"training images/s (batch 16, 64 px): 1 rank {fig['images_per_s']['1 rank']:.1f}, "
          f"2 ranks {fig['images_per_s']['2 ranks']:.1f}")

    if a.detect:
        det = work / f"detect_{a.detect}"
        if not det.is_dir():
            det.mkdir()
            for jpg in sorted(folder.glob("*.jpg"))[: a.detect]:
                shutil.copy(jpg, det / jpg.name)            # the photos without their landmark files
        fig["detect_photos_per_s"] = {}
        for w in (1, 2):
            (det / ".mofa_tk_landmarks.json").unlink(missing_ok=True)
            r, _ = run(mofa("landmarks", det, "--no-progress", "--workers", w))
            t = pass_seconds(r)
            fig["detect_photos_per_s"][w] = a.detect / t
            print(f"detection pass, {w} worker(s): {a.detect} photos in {t:.1f} s ({a.detect / t:.1f} photos/s); "
                  f"{r.stdout.strip().splitlines()[-2][:120]}")
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

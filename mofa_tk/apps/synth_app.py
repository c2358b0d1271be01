"""`mofa synth DIR --n N`: a folder of synthetic face photos with their landmarks, for testing and benchmarking
the photo-folder training path (`mofa train --data DIR`) without a real data set.

    mofa synth photos/ --n 20000 [--size 256] [--model builtin] [--seed 0] [--quality 92]

Writes `face_000000.jpg` ... (faces of the model drawn by `training.data.SyntheticFaces`, rendered over random
backgrounds, JPEG) and beside each its 68 landmarks as iBUG `.pts` (the files `mofa train --data` reads
instead of detecting). Sample i depends on (seed, i) only, so the folder can be written in pieces: files that
already exist are kept as they are and counted (re-running with a larger --n adds the missing ones); every
file is written atomically, so an interrupted run leaves no half-written photo.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from mofa_tk.apps.errors import run_reporting_errors
from mofa_tk.backend import init
from mofa_tk.errors import InputError
from mofa_tk.face.decoder import FaceDecoder
from mofa_tk.io.files import atomic_write, output_folder_problem
from mofa_tk.landmarks import write_pts
from mofa_tk.progress import progress_bar
from mofa_tk.training.data import SyntheticFaces
from mofa_tk.training.train import load_face_model

BATCH = 16          # faces rendered per decoder call


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mofa synth", description="Write a folder of synthetic face photos (JPEG) "
                                "with iBUG .pts landmarks beside them.")
    p.add_argument("folder", metavar="DIR", help="output folder (created; existing photos are kept)")
    p.add_argument("--n", type=int, required=True, help="number of photos")
    p.add_argument("--size", type=int, default=256, help="photo side in pixels (default 256)")
    p.add_argument("--model", default="builtin", help="face model: builtin, builtin:bfm or a model file")
    p.add_argument("--seed", type=int, default=0, help="seed of the faces and backgrounds (default 0)")
    p.add_argument("--quality", type=int, default=92, help="JPEG quality 1-100 (default 92)")
    p.add_argument("--backend", default=None, choices=("auto", "cpu", "cuda", "vulkan"), help="Taichi backend")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def name_of(i: int) -> str:
    """File stem of sample i."""
    return f"face_{i:06d}"


def run(args) -> int:
    if args.n < 1:
        raise InputError(f"--n: expected a positive number of photos, got {args.n}")
    if not 32 <= args.size <= 4096:
        raise InputError(f"--size: expected 32..4096 pixels, got {args.size}")
    if not 1 <= args.quality <= 100:
        raise InputError(f"--quality: expected 1..100, got {args.quality}")
    out = Path(args.folder)
    problem = output_folder_problem(out)
    if problem:
        raise InputError(f"DIR {out}: {problem}")
    init(args.backend)
    faces = SyntheticFaces(FaceDecoder(load_face_model(args.model), args.size), args.n, seed=args.seed)
    todo = [i for i in range(args.n) if not ((out / f"{name_of(i)}.jpg").is_file()
                                               and (out / f"{name_of(i)}.pts").is_file())]
    out.mkdir(parents=True, exist_ok=True)
    bar = progress_bar("[bold]synth[/] {task.description}", enabled=not args.quiet, remaining=True)
    with bar:
        task = bar.add_task(str(out), total=len(todo))
        for k in range(0, len(todo), BATCH):
            chunk = todo[k:k + BATCH]
            b = faces.batch(chunk, device="cpu")
            images = (b["image"].numpy() * 255 + 0.5).astype(np.uint8)
            for j, i in enumerate(chunk):
                stem = out / name_of(i)
                # the landmarks first: a photo on disk always has its .pts beside it
                atomic_write(stem.with_suffix(".pts"), lambda tmp: write_pts(tmp, b["landmarks"][j].numpy()))
                atomic_write(stem.with_suffix(".jpg"), lambda tmp, im=images[j]: iio.imwrite(
                    tmp, im, extension=".jpg", quality=args.quality))
            bar.update(task, advance=len(chunk))
    print(f"{out}: {len(todo)} photos written, {args.n - len(todo)} already there ({args.size} px, seed {args.seed})")
    return 0


def main(argv=None) -> int:
    """Entry point of `mofa synth`; returns the exit status."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_reporting_errors(lambda: run(args))

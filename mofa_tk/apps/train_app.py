"""`mofa train`: train the MoFA autoencoder (CNN encoder + model-based decoder) on photos or synthetic faces.

    mofa train                                   # synthetic faces, 64 px, built-in model, 500 steps -> runs/train
    mofa train --data photos/ --steps 5000 --out runs/photos [--cache DIR]
    mofa train --out runs/train --resume --steps 1200      # continue a run (same settings, more steps)
    mofa train --device cuda                     # GPU end to end (Taichi cuda backend, tensors on cuda)
    torchrun --standalone --nproc-per-node 2 -m mofa_tk train --data photos/ --out runs/ddp   # 2 ranks (DDP)

Also `python examples/train_autoencoder.py ...` (same options). Writes OUT/checkpoint.pt, config.json,
history.json/.csv, eval.csv, loss.png and grid.png (docs/training.md). Exit status 0 on success, 2 on bad
input (message on stderr), 130 when interrupted (a checkpoint is saved first; continue with --resume).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from mofa_tk.errors import MofaError
from mofa_tk.training.checkpoint import read_checkpoint
from mofa_tk.training.distributed import Ranks
from mofa_tk.training.train import TrainConfig, train

_FIELDS = {  # command-line option -> TrainConfig field
    "data": "data", "steps": "steps", "batch_size": "batch_size", "image_size": "image_size", "lr": "lr",
    "seed": "seed", "model": "model", "components": "components", "cache": "cache_dir", "crop_scale": "crop_scale",
    "eval_every": "eval_every", "ckpt_every": "ckpt_every", "heldout": "heldout", "device": "device",
    "backend": "backend", "threads": "threads", "width": "width", "synthetic_n": "synthetic_n",
    "workers": "workers",
}


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="mofa train", description="Train the MoFA autoencoder (Tewari et al. 2017): a CNN encoder regresses "
        "the semantic code, the analytic decoder renders it, the loss compares render and input.",
        argument_default=argparse.SUPPRESS)
    p.add_argument("--data", metavar="DIR", help="folder of face photos (landmark files beside them, or detected "
                   "with MediaPipe and cached); default: synthetic faces rendered by the decoder")
    p.add_argument("--steps", type=int, help=f"total optimiser steps (default {d.steps})")
    p.add_argument("--out", metavar="DIR", default="runs/train",
                   help="output folder: checkpoint, curves, grid (default runs/train)")
    p.add_argument("--resume", action="store_true", default=False,
                   help="continue the run in --out from its checkpoint (settings come from the checkpoint)")
    p.add_argument("--batch-size", type=int, help=f"images per step, over all ranks under torchrun "
                   f"(default {d.batch_size})")
    p.add_argument("--image-size", type=int, help=f"training resolution in pixels (default {d.image_size})")
    p.add_argument("--lr", type=float, help=f"AdamW learning rate, warm-up + cosine decay (default {d.lr})")
    p.add_argument("--seed", type=int, help=f"seed of the initialisation, batch order and synthetic faces (default {d.seed})")
    p.add_argument("--model", help="face model: builtin, builtin:bfm or a model file (default builtin)")
    p.add_argument("--components", type=int, nargs=3, metavar=("K_ID", "K_EXP", "K_ALB"),
                   help="keep only the first components of the model's bases (default: all)")
    p.add_argument("--width", type=int, help=f"encoder stem width (default {d.width})")
    p.add_argument("--cache", metavar="DIR", help="folder for the landmark cache of --data (default: a file "
                   ".mofa_tk_landmarks.json inside the --data folder)")
    p.add_argument("--no-detect", dest="detect", action="store_false", default=True,
                   help="do not detect landmarks: skip photos without a landmark file")
    p.add_argument("--crop-scale", type=float, help="crop_face scale for photos (default: the decoder's mean-face framing)")
    p.add_argument("--heldout", type=int, help=f"held-out images for evaluation (default {d.heldout})")
    p.add_argument("--synthetic-n", type=int, help=f"distinct synthetic training faces (default {d.synthetic_n})")
    p.add_argument("--eval-every", type=int, help=f"held-out evaluation interval in steps (default {d.eval_every})")
    p.add_argument("--ckpt-every", type=int, help=f"checkpoint interval in steps (default {d.ckpt_every})")
    p.add_argument("--device", choices=("cpu", "cuda"), help="torch device (default: the backend's: cuda for the "
                   "cuda backend, else cpu); cuda selects the cuda backend unless --backend says otherwise")
    p.add_argument("--backend", choices=("auto", "cpu", "cuda", "vulkan"),
                   help="Taichi backend (default auto: cuda if available, else cpu; vulkan only when asked for)")
    p.add_argument("--threads", type=int, help="torch and Taichi CPU threads per process (default: all CPUs, "
                   "divided between the ranks on one host under torchrun)")
    p.add_argument("--workers", type=int, help=f"processes that decode and crop --data photos while training "
                   f"(default {d.workers}; 0: the training process)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True, help="no progress bars")
    return p


def _config(args, console):
    given = {field: getattr(args, opt) for opt, field in _FIELDS.items() if hasattr(args, opt)}
    if "components" in given:
        given["components"] = list(given["components"])
    if not args.detect:
        given["detect"] = False
    if given.get("device") == "cuda" and "backend" not in given:
        given["backend"] = "cuda"
    if given.get("data") is not None:
        given["data"] = str(Path(given["data"]).expanduser())
    if args.resume:
        ckpt_path = Path(args.out).expanduser() / "checkpoint.pt"
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path} (train without --resume first)")
        base = dict(read_checkpoint(ckpt_path)["config"])
        base.update(given)
        return TrainConfig.from_dict(base)
    return TrainConfig(**given)


def main(argv=None) -> int:
    """Entry point of `mofa train` and examples/train_autoencoder.py; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    who = "mofa train"
    try:
        ranks = Ranks.from_environment()
        if ranks.distributed:
            who = f"mofa train (rank {ranks.rank} of {ranks.world})"
            if not ranks.main:              # rank 0 speaks for the run
                console = Console(quiet=True)
        cfg = _config(args, console)
        cfg.validate()
        src = f"photos in {cfg.data}" if cfg.data else "synthetic faces"
        console.print(f"[bold]mofa train[/bold]: {src}, model {cfg.model}, {cfg.image_size} px, batch {cfg.batch_size}, "
                      f"{cfg.steps} steps, backend {cfg.backend}, device {cfg.device or 'auto'} -> {args.out}"
                      + (f", {ranks.world} ranks" if ranks.distributed else "")
                      + (" (resuming)" if args.resume else ""))
        res = train(cfg, args.out, resume=args.resume, progress=args.progress)
    except (MofaError, FileNotFoundError, NotADirectoryError, FloatingPointError) as exc:
        print(f"{who}: error: {exc}", file=sys.stderr)
        return 2
    ev = res.final_eval
    if ev:
        parts = [f"held-out photometric {ev['photo']:.4g}"]
        if "landmark_px" in ev:
            parts.append(f"landmark RMSE {ev['landmark_px']:.3g} px")
        if "corr_rotation" in ev:
            parts.append("rotation corr (pitch, yaw, roll) " + ", ".join(f"{c:.2f}" for c in ev["corr_rotation"]))
        console.print("evaluation at step {}: {}".format(ev["step"], "; ".join(parts)))
    for name, path in res.files.items():
        console.print(f"  {name:<12} {path}", markup=False)
    if res.interrupted:
        if not ranks.main:
            return 130
        print(f"mofa train: interrupted at step {res.step}; checkpoint saved, continue with "
              f"--out {args.out} --resume", file=sys.stderr)
        return 130
    console.print(f"done: step {res.step} of {cfg.steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

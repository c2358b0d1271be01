"""Training loop of the MoFA autoencoder: data, optimiser, held-out evaluation, checkpoints with exact resume.

    from mofa_tk.training.train import TrainConfig, train
    result = train(TrainConfig(steps=600), "runs/synthetic")       # synthetic faces, 64 px, built-in model
    result = train(TrainConfig(data="photos/", steps=5000), "runs/photos")

`train` writes into its output folder (docs/training.md):

    checkpoint.pt   encoder weights, optimiser state, step, RNG states, config, history (atomic rewrite every
                    `ckpt_every` steps, at the end and on Ctrl-C); `mofa_tk.training.autoencoder.load_encoder` reads it
    config.json     the configuration; history.json / history.csv / eval.csv the loss curves
    loss.png        training loss (and terms) and held-out photometric loss against the step
    grid.png        held-out inputs, reconstructions (render over the input) and landmarks

Determinism: the encoder's initial weights come from `seed`, the batch at step s is a function of (seed, s)
only (an epoch-wise permutation seeded by (seed, epoch)), and synthetic sample i of a given seed is fixed.
Resuming restores the weights, the optimiser, the step and the torch / NumPy / Python RNG states, so a run
interrupted at step N and resumed continues exactly as an uninterrupted one would, bit for bit (the ops
sum in a fixed order, no float atomics, whatever the thread count; tests/test_train.py checks it).
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .. import losses as L
from ..backend import current_backend, kernel_device
from ..backend import init as backend_init
from ..errors import BackendUnavailableError, InputError, MofaError
from ..face.builtin import builtin_model
from ..io.files import output_folder_problem, write_text
from ..io.models import load_model
from ..progress import progress_bar
from .autoencoder import CHECKPOINT_FORMAT, MoFA
from .checkpoint import (
    atomic_save,
    optimizer_to,
    read_checkpoint,
    rng_state,
    set_rng_state,
)
from .data import ImageFolderFaces, SyntheticFaces, framing, photo_loader
from .distributed import Ranks
from .plots import plot_history, save_grid

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "build", "save_grid", "plot_history",
           "CheckpointExistsError", "RESUME_MUST_MATCH"]

#: Configuration fields that define the experiment: a resumed run must use the checkpoint's values.
RESUME_MUST_MATCH = ("data", "model", "components", "image_size", "batch_size", "lr", "weight_decay", "warmup", "min_lr_ratio",
                     "grad_clip", "seed", "width", "stages", "depth", "grid", "weights", "reg_weights", "crop_scale",
                     "synthetic_n", "heldout", "decoder")


class CheckpointExistsError(MofaError, FileExistsError):
    """The output folder already holds a checkpoint and resume was not asked for (nothing is overwritten)."""


@dataclass
class TrainConfig:
    """Training options (all JSON-able; stored in every checkpoint).

    data:        folder of face photos (`ImageFolderFaces`), or None for synthetic faces (`SyntheticFaces`)
    model:       "builtin" (default), "builtin:bfm" (35,709 vertices) or the path of a model file (`load_model`)
    components:  None (all) or [k_id, k_exp, k_alb]: keep the first k components of each basis
                 (`FaceModel.truncate`); fewer components train faster (the decoder's morph backward is the
                 most expensive op on the CPU)
    steps:       total optimiser steps; batch_size: images per step; image_size: training resolution S (px)
    lr:          AdamW learning rate (linear warm-up over `warmup` steps, then cosine decay to lr * min_lr_ratio
                 at `steps`); weight_decay: AdamW decoupled weight decay; grad_clip: max global gradient norm
    seed:        seeds the encoder initialisation, the batch order and the synthetic faces
    width, stages, depth, grid: `Encoder` size (see `Encoder`)
    weights, reg_weights: `mofa_loss` term / per-block weights (None = defaults, see `MoFA`)
    crop_scale:  `crop_face` scale for photos; None = `data.framing(decoder)` (the mean face's framing)
    decoder:     extra `FaceDecoder` options ({} = defaults; the default focal makes codes resolution independent)
    cache_dir:   landmark cache folder for photos (None = a file in the photo folder); detect: run the detector
    synthetic_n: number of distinct synthetic training faces; heldout: held-out images for evaluation
    eval_every, ckpt_every: in steps; device: "cpu", "cuda" or None (the backend's kernel device);
    backend:     Taichi backend: "cpu", "cuda", "vulkan", or "auto" (default): the backend already active in
                 the process, else cuda when available, else cpu (Vulkan only when asked for: on a machine
                 without a GPU it is the lavapipe software driver, slower than the cpu backend)
    threads:     torch and Taichi CPU threads per process (None = the defaults; under torchrun, the host's CPUs
                 divided by the ranks on it)
    workers:     DataLoader processes that decode and crop photos during training (0: the training process)
    """

    data: str | None = None
    model: str = "builtin"
    components: list | None = None
    steps: int = 500
    batch_size: int = 16
    image_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 1e-4
    warmup: int = 20
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    seed: int = 0
    width: int = 32
    stages: int = 3
    depth: int = 1
    grid: int = 4
    weights: dict | None = None
    reg_weights: dict | None = None
    crop_scale: float | None = None
    decoder: dict = field(default_factory=dict)
    cache_dir: str | None = None
    detect: bool = True
    synthetic_n: int = 100_000
    heldout: int = 32
    eval_every: int = 50
    ckpt_every: int = 100
    device: str | None = None
    backend: str = "auto"
    threads: int | None = None
    workers: int = 2

    def validate(self) -> "TrainConfig":
        def pos_int(name, lo=1):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < lo:
                raise InputError(f"{name}: expected an integer >= {lo}, got {v!r}")

        for name in ("steps", "batch_size", "width", "stages", "depth", "grid", "synthetic_n", "eval_every",
                     "ckpt_every"):
            pos_int(name)
        pos_int("image_size", 16)
        pos_int("heldout", 0)
        pos_int("warmup", 0)
        pos_int("seed", 0)
        pos_int("workers", 0)
        if self.threads is not None:
            pos_int("threads")
        for name in ("lr", "grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"{name}: expected a positive number, got {v!r}")
        if not (0 <= self.weight_decay < 1):
            raise InputError(f"weight_decay: expected a number in [0, 1), got {self.weight_decay!r}")
        if not (0 <= self.min_lr_ratio <= 1):
            raise InputError(f"min_lr_ratio: expected a number in [0, 1], got {self.min_lr_ratio!r}")
        if self.device not in (None, "cpu", "cuda"):
            raise InputError(f"device: expected 'cpu', 'cuda' or None, got {self.device!r}")
        if self.backend not in ("auto", "cpu", "cuda", "vulkan"):
            raise InputError(f"backend: expected 'auto', 'cpu', 'cuda' or 'vulkan', got {self.backend!r}")
        if self.components is not None:
            c = self.components
            if (not isinstance(c, (list, tuple)) or len(c) != 3
                    or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 0 for k in c)):
                raise InputError(f"components: expected [k_id, k_exp, k_alb] integers >= 0, got {c!r}")
            self.components = [int(k) for k in c]
        if self.crop_scale is not None and not (math.isfinite(self.crop_scale) and self.crop_scale > 0):
            raise InputError(f"crop_scale: expected a positive number, got {self.crop_scale!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"config: unknown field(s) {sorted(unknown)}")
        return cls(**d)


@dataclass
class TrainResult:
    """What `train` returns: the trained autoencoder, the history, the final evaluation and written files."""

    mofa: MoFA
    step: int
    history: dict
    final_eval: dict
    out_dir: Path
    files: dict
    interrupted: bool = False


# ============================================================================================ building blocks
def load_face_model(spec: str):
    """A FaceModel from a command-line spec: "builtin" (or "builtin:default"), "builtin:bfm" or a model file."""
    if spec in ("builtin", "builtin:default"):
        return builtin_model()
    if spec == "builtin:bfm":
        return builtin_model("bfm")
    p = Path(spec).expanduser()
    if not p.exists():
        raise InputError(f"model: {spec!r} is neither 'builtin', 'builtin:bfm' nor an existing model file")
    return load_model(p)


def _init_backend(cfg: TrainConfig, cpu_threads: int | None = None) -> str:
    """Initialise the Taichi backend: an explicit choice is used as is; "auto" keeps a backend that is already
    active, else takes cuda when available and the cpu otherwise (not Vulkan: without a GPU it is lavapipe,
    slower than the cpu backend, and with one it copies every tensor per launch; ask for it explicitly)."""
    if cfg.backend != "auto":
        return backend_init(cfg.backend, cpu_threads=cpu_threads)
    if cfg.device == "cuda":
        return backend_init("cuda")
    if current_backend() is not None:
        return backend_init(current_backend(), cpu_threads=cpu_threads)
    if torch.cuda.is_available():
        try:
            return backend_init("cuda")
        except BackendUnavailableError:
            pass
    return backend_init("cpu", cpu_threads=cpu_threads)


def _resolve_device(cfg: TrainConfig, cpu_threads: int | None = None) -> torch.device:
    active = _init_backend(cfg, cpu_threads)
    if cfg.device == "cuda":
        if active != "cuda":
            raise InputError(f"device 'cuda' needs the Taichi cuda backend, but backend {cfg.backend!r} is {active!r}; "
                             f"use --backend cuda (or auto)")
        if not torch.cuda.is_available():
            raise InputError("device 'cuda': torch sees no CUDA device")
        return kernel_device()                # cuda:0, the device Taichi runs on
    if cfg.device == "cpu":
        return torch.device("cpu")
    return kernel_device()


def build(cfg: TrainConfig, *, progress: bool = True, ranks: Ranks | None = None):
    """Construct (mofa, train_set, heldout_set, heldout_indices, device, info) for a config (no training).

    ranks: this process's `Ranks` under torchrun (None: one process): sets the thread budget, and rank 0 scans
    a photo folder first (decoding and detecting what the index lacks) while the others wait, then read the
    index it wrote.
    """
    cfg.validate()
    ranks = ranks or Ranks()
    threads = ranks.cpu_threads(cfg.threads)
    device = _resolve_device(cfg, threads)
    if threads:
        torch.set_num_threads(threads)
    ranks.start(device)
    model = load_face_model(cfg.model)
    if cfg.components is not None:
        model = model.truncate(*[int(k) for k in cfg.components])
    model = model.to(device)
    torch.manual_seed(cfg.seed)
    enc_opts = dict(width=cfg.width, stages=cfg.stages, depth=cfg.depth, grid=cfg.grid)
    mofa = MoFA(model, cfg.image_size, encoder_options=enc_opts, decoder_options=cfg.decoder, weights=cfg.weights,
                reg_weights=cfg.reg_weights).to(device)
    frame = framing(mofa.decoder)
    info = {"framing": frame, "device": str(device)}
    if cfg.data is None:
        train_set = SyntheticFaces(mofa.decoder, cfg.synthetic_n, seed=cfg.seed, device=device)
        held_set = SyntheticFaces(mofa.decoder, max(cfg.heldout, 1), seed=2**31 + cfg.seed, device=device)
        held_idx = list(range(cfg.heldout))
        train_idx = None
        info["data"] = f"synthetic faces (seed {cfg.seed}, {cfg.synthetic_n} training samples, {cfg.heldout} held out)"
        crop_scale = frame["crop_scale"]
    else:
        crop_scale = cfg.crop_scale if cfg.crop_scale is not None else frame["crop_scale"]
        def scan():
            return ImageFolderFaces(cfg.data, cfg.image_size, crop_scale=crop_scale, cache_dir=cfg.cache_dir,
                                    detect=cfg.detect, progress=progress and ranks.main, workers=cfg.workers)

        if ranks.main:
            ds = scan()
            ranks.barrier()
        else:
            ranks.barrier()
            with warnings.catch_warnings():      # rank 0 has reported the skipped photos
                warnings.simplefilter("ignore")
                ds = scan()
        n = len(ds)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        n_held = min(cfg.heldout, n // 5)
        held_idx = sorted(perm[:n_held])
        train_idx = sorted(perm[n_held:])
        if n_held == 0:
            held_idx = list(range(min(n, max(cfg.heldout, 1))))
            warnings.warn(f"only {n} usable image(s): evaluating on training images (no held-out set)", UserWarning)
        train_set = held_set = ds
        info["data"] = ds.summary()
        info["skipped"] = {k: len(v) for k, v in ds.skipped.items()}
    info["crop_scale"] = float(crop_scale)
    info["train_indices"] = train_idx
    return mofa, train_set, held_set, held_idx, device, info


def _batch_indices(cfg: TrainConfig, step: int, n: int, pool=None) -> list:
    """Indices of the batch at `step`: epoch-wise permutations seeded by (seed, epoch); a function of step only."""
    B = cfg.batch_size
    start = step * B
    out = []
    while len(out) < B:
        epoch, pos = divmod(start + len(out), n)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch + 1)
        perm = torch.randperm(n, generator=g)
        take = perm[pos:pos + B - len(out)].tolist()
        out.extend(take)
    return [pool[i] for i in out] if pool is not None else out


def _lr_at(cfg: TrainConfig, step: int) -> float:
    """Warm-up then cosine decay: the learning rate of optimiser step `step` (0-based)."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    t = min(max(step - cfg.warmup, 0) / span, 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.double() - a.double().mean(0)
    b = b.double() - b.double().mean(0)
    den = (a.norm(dim=0) * b.norm(dim=0)).clamp(min=1e-12)
    return (a * b).sum(0) / den


@torch.no_grad()
def evaluate(mofa: MoFA, batch: dict, chunk: int = 16) -> dict:
    """Held-out metrics of a batch (dict with image, landmarks and, for synthetic data, code).

    returns floats: "loss" (the weighted training loss), "photo" (MoFA's dense photometric term, l2,1, mean
    over images, unweighted), "photo_sq" (its squared-error version), "landmark_px" (RMS landmark error in
    pixels); with ground-truth codes also "corr_rotation" (3 Pearson correlations of predicted vs true
    pitch, yaw, roll), "corr_translation" (3), "corr_shape" and "corr_reflectance" (correlations of the first
    10 coefficients of each block), "corr_shape_geometry" (correlation of the predicted and true identity displacement fields
    sum_k basis_k std_k alpha_k over all vertices, coordinates and images: how much of the face shape is
    recovered, whichever coefficients carry it), "rot_err_deg" (mean absolute rotation-component error, degrees).
    """
    was = mofa.training
    mofa.eval()
    images, lms = batch["image"], batch.get("landmarks")
    codes, tot, ph, ph2, lm2, nlm = [], 0.0, 0.0, 0.0, 0.0, 0
    n = images.shape[0]
    for s in range(0, n, chunk):
        img = images[s:s + chunk]
        lm = lms[s:s + chunk] if lms is not None else None
        total, terms, code, out = mofa.loss(img, lm)
        b = img.shape[0]
        vis = out["visibility"] & ~out["boundary"][None]
        ph += float(L.vertex_photometric_loss(img, out["verts_2d"], out["vertex_colors"], vis, robust=True)) * b
        ph2 += float(L.vertex_photometric_loss(img, out["verts_2d"], out["vertex_colors"], vis, robust=False)) * b
        tot += float(total) * b
        if lm is not None:
            d2 = ((out["landmarks2d"] - lm) ** 2).sum(-1)
            ok = torch.isfinite(d2)
            lm2 += float(d2[ok].sum())
            nlm += int(ok.sum())
        codes.append(code)
    mofa.train(was)
    res = {"loss": tot / n, "photo": ph / n, "photo_sq": ph2 / n}
    if nlm:
        res["landmark_px"] = math.sqrt(lm2 / nlm)
    if "code" in batch and n >= 3:
        pred = mofa.decoder.code.split(torch.cat(codes))
        true = mofa.decoder.code.split(batch["code"])
        res["corr_rotation"] = [float(c) for c in _pearson(pred["rotation"], true["rotation"])]
        res["corr_translation"] = [float(c) for c in _pearson(pred["translation"], true["translation"])]
        k = min(10, pred["shape"].shape[1])
        res["corr_shape"] = [float(c) for c in _pearson(pred["shape"][:, :k], true["shape"][:, :k])]
        k = min(10, pred["reflectance"].shape[1])
        res["corr_reflectance"] = [float(c) for c in _pearson(pred["reflectance"][:, :k], true["reflectance"][:, :k])]
        model = mofa.decoder.model
        if model.k_id:
            basis = (model.shape_basis * model.shape_std).reshape(-1, model.k_id).double()
            dp = pred["shape"].double().to(basis.device) @ basis.T
            dt = true["shape"].double().to(basis.device) @ basis.T
            res["corr_shape_geometry"] = float(_pearson(dp.reshape(-1, 1), dt.reshape(-1, 1))[0])
        res["rot_err_deg"] = float((pred["rotation"] - true["rotation"]).abs().mean() * 180 / math.pi)
    return res


# ============================================================================================ the loop
def train(config: TrainConfig, out_dir, *, resume: bool = False, progress: bool = True, stop_at: int | None = None,
          callback=None) -> TrainResult:
    """Train the MoFA autoencoder; see the module docstring for what is written to `out_dir`.

    config:   TrainConfig
    out_dir:  output folder (created). Without `resume` it must not hold a checkpoint yet
              (CheckpointExistsError: nothing is overwritten).
    resume:   continue from `out_dir/checkpoint.pt` up to `config.steps` steps (which may be larger than the
              checkpoint's); the fields in RESUME_MUST_MATCH must equal the checkpoint's (InputError lists the
              differences), the others (steps, eval/checkpoint intervals, device, backend, ...) may change
    progress: rich progress bar (loss, images/s, held-out photometric loss)
    stop_at:  stop after this step (checkpoint written) as if interrupted, e.g. to test resuming
    callback: called as callback(step, loss, terms) after every step (floats: total and weighted terms)
    returns a TrainResult. Ctrl-C (SIGINT) finishes the current step, saves a checkpoint and returns with
    interrupted=True; a second Ctrl-C aborts at once (KeyboardInterrupt; the last periodic checkpoint stays).
    """
    cfg = config.validate()
    ranks = Ranks.from_environment()
    ranks.pin_device(cfg.backend)                 # before Taichi starts: this rank's GPU is its device 0
    out = Path(out_dir).expanduser()
    problem = output_folder_problem(out)
    if problem:
        raise InputError(f"out_dir {out}: {problem}")
    ckpt_path = out / "checkpoint.pt"
    ckpt = None
    if resume:
        if not ckpt_path.is_file():
            raise InputError(f"resume: no checkpoint to resume at {ckpt_path}")
        ckpt = read_checkpoint(ckpt_path)
        old = ckpt["config"]
        diff = {k: (old.get(k), getattr(cfg, k)) for k in RESUME_MUST_MATCH if old.get(k) != getattr(cfg, k)}
        if diff:
            lines = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise InputError(f"resume: the configuration differs from the checkpoint's in {lines} "
                             f"(start a new --out folder to change them)")
        if int(ckpt["step"]) >= cfg.steps and ranks.main:
            warnings.warn(f"resume: checkpoint is at step {ckpt['step']} >= steps={cfg.steps}; nothing to train "
                          f"(raise --steps to continue)", UserWarning)
    elif ckpt_path.exists():
        try:
            at = f" at step {int(read_checkpoint(ckpt_path)['step'])}"
        except InputError:
            at = ""
        raise CheckpointExistsError(f"{out} already holds a training checkpoint{at}; pass --resume (resume=True) "
                                    f"to continue it, or choose another output folder")
    ranks.check_batch(cfg.batch_size)
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        return _train(cfg, out, ckpt, ranks, progress=progress, stop_at=stop_at, callback=callback)
    finally:
        ranks.stop()


def _train(cfg: TrainConfig, out: Path, ckpt, ranks: Ranks, *, progress, stop_at, callback) -> TrainResult:
    ckpt_path = out / "checkpoint.pt"
    mofa, train_set, held_set, held_idx, device, info = build(cfg, progress=progress, ranks=ranks)
    progress = progress and ranks.main
    enc = mofa.encoder
    model = ranks.wrap(enc, device)               # DistributedDataParallel over the ranks (enc itself for one)
    opt = torch.optim.AdamW(enc.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = {"step": [], "loss": [], "terms": {}, "lr": [], "images_per_s": [], "eval": []}
    step = 0
    if ckpt is not None:
        enc.load_state_dict(ckpt["encoder"])
        opt.load_state_dict(ckpt["optimizer"])
        optimizer_to(opt, device)
        history = ckpt["history"]
        step = int(ckpt["step"])
        set_rng_state(ckpt["rng"], device)
    derived = {"crop_scale": info["crop_scale"], "framing": info["framing"], "data_summary": info["data"],
               "skipped": info.get("skipped", {}), "ranks": ranks.world}
    if ranks.main:
        write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))

    held = held_set.batch(held_idx, device=device) if (held_idx and ranks.main) else None
    pool = info["train_indices"]
    n_train = len(pool) if pool is not None else len(train_set)
    photos = isinstance(train_set, ImageFolderFaces)
    load_failures = []

    def save_checkpoint():
        if ranks.main:          # the bare encoder's weights: no DistributedDataParallel `module.` prefix
            atomic_save({"format": CHECKPOINT_FORMAT, "step": step, "encoder": enc.state_dict(),
                         "optimizer": opt.state_dict(), "encoder_config": enc.config(), "rng": rng_state(device),
                         "config": cfg.to_dict(), "derived": dict(derived, load_failures=len(load_failures)),
                         "history": history}, ckpt_path)

    def run_eval():
        if held is None:
            return None
        e = evaluate(mofa, held)
        e["step"] = step
        history["eval"] = [x for x in history["eval"] if x["step"] != step] + [e]
        return e

    if ranks.main and (not history["eval"] or history["eval"][-1]["step"] != step):
        run_eval()
    last_eval = history["eval"][-1] if history["eval"] else None
    end = cfg.steps if stop_at is None else min(cfg.steps, int(stop_at))
    # this rank's share of the global batch of every step to come (a function of the seed and the step only)
    shares = _StepShares(cfg, ranks, step, end, n_train, pool)
    batches = iter(photo_loader(train_set, shares, workers=cfg.workers)) if photos else iter(shares)
    # Ctrl-C: finish the current step, then checkpoint and return (a second Ctrl-C aborts at once, leaving the
    # last periodic checkpoint); the flag keeps weights, optimiser state, step and history consistent. The
    # ranks agree on it at every step, so that they stop at the same one.
    stop = {"requested": False}

    def on_sigint(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True

    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGINT, on_sigint)
    bar = progress_bar(fields=["loss {task.fields[loss]:.4g}", "{task.fields[ips]:.1f} img/s",
                               "held-out photo {task.fields[held]:.4g}"], enabled=progress, remaining=True)
    try:
        with bar:
            task = bar.add_task("training", total=cfg.steps, completed=step, loss=float("nan"), ips=float("nan"),
                                held=last_eval["photo"] if last_eval else float("nan"))
            mofa.train()
            while step < end and not ranks.agree(stop["requested"]):
                t0 = time.perf_counter()
                if photos:
                    got = next(batches)
                    _note_failures(got["failed"], load_failures)
                    if got["crops"] is None:
                        raise InputError(f"step {step}: no photo of this rank's batch could be read "
                                         f"({'; '.join(got['failed'][:3])})")
                    images = (got["crops"].float() / 255.0).to(device)
                    marks = train_set.landmarks[got["index"]].to(device)
                else:
                    batch = train_set.batch(next(batches), device=device)
                    images, marks = batch["image"], batch["landmarks"]
                lr = _lr_at(cfg, step)
                for g in opt.param_groups:
                    g["lr"] = lr
                with _encoder(mofa, model):
                    total, terms, _, _ = mofa.loss(images, marks)
                if not torch.isfinite(total):
                    raise FloatingPointError(f"training loss is {float(total)} at step {step} "
                                             f"(terms {({k: float(v) for k, v in terms.items()})}); lower --lr")
                opt.zero_grad(set_to_none=True)
                total.backward()                  # DistributedDataParallel averages the gradients over the ranks
                torch.nn.utils.clip_grad_norm_(enc.parameters(), cfg.grad_clip)
                opt.step()
                step += 1
                imgs_per_s = cfg.batch_size / (time.perf_counter() - t0)
                # the logged loss is the global batch's (the mean of the ranks' means)
                values = ranks.mean(torch.stack([total.detach()] + [v.detach() for v in terms.values()])).tolist()
                loss_value = values[0]
                term_values = dict(zip(terms, values[1:]))
                history["step"].append(step)
                history["loss"].append(loss_value)
                for k, v in term_values.items():
                    history["terms"].setdefault(k, []).append(v)
                history["lr"].append(lr)
                history["images_per_s"].append(imgs_per_s)
                if callback is not None:
                    callback(step, loss_value, term_values)
                if ranks.main and (step % cfg.eval_every == 0 or step == cfg.steps):
                    last_eval = run_eval()
                if step % cfg.ckpt_every == 0:
                    save_checkpoint()
                bar.update(task, completed=step, loss=loss_value, ips=imgs_per_s,
                           held=last_eval["photo"] if last_eval else float("nan"))
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
    interrupted = stop["requested"] and step < end
    n_failed = ranks.total(len(load_failures))
    if n_failed and ranks.main:
        warnings.warn(f"{n_failed} photo(s) failed to decode during training and were left out of their batches "
                      f"(first: {load_failures[0] if load_failures else 'on another rank'})", UserWarning)
    save_checkpoint()
    files = {}
    if ranks.main:
        files = _write_outputs(out, history, mofa, held)
        files["checkpoint"] = ckpt_path
    ranks.barrier()                               # the other ranks return once the files are written
    final = history["eval"][-1] if history["eval"] else {}
    return TrainResult(mofa=mofa, step=step, history=history, final_eval=final, out_dir=out, files=files,
                       interrupted=interrupted)


class _StepShares:
    """Iterable of this rank's batch indices for steps [start, end) (a DataLoader batch sampler)."""

    def __init__(self, cfg: TrainConfig, ranks: Ranks, start: int, end: int, n: int, pool):
        self.cfg, self.ranks, self.start, self.end, self.n, self.pool = cfg, ranks, start, end, n, pool

    def __len__(self):
        return max(self.end - self.start, 0)

    def __iter__(self):
        for s in range(self.start, self.end):
            yield self.ranks.share(_batch_indices(self.cfg, s, self.n, self.pool))


@contextlib.contextmanager
def _encoder(mofa: MoFA, module):
    """Run `mofa`'s forward through `module` (the encoder in DistributedDataParallel) and put the bare encoder
    back afterwards (evaluation and checkpoints use it)."""
    bare = mofa.encoder
    if module is bare:
        yield
        return
    mofa.encoder = module
    try:
        yield
    finally:
        mofa.encoder = bare


def _note_failures(failed: list, seen: list) -> None:
    for msg in failed:
        seen.append(msg)
        if len(seen) <= 10:
            warnings.warn(f"skipping a photo that no longer decodes: {msg}", UserWarning)


def _write_outputs(out: Path, history: dict, mofa: MoFA, held) -> dict:
    files = {}
    write_text(out / "history.json", json.dumps(history))
    files["history"] = out / "history.json"
    names = sorted(history["terms"])
    rows = ["step,loss," + ",".join(names) + ",lr,images_per_s"]
    for i, s in enumerate(history["step"]):
        vals = [history["terms"][k][i] if i < len(history["terms"][k]) else float("nan") for k in names]
        rows.append(",".join([str(s), repr(history["loss"][i])] + [repr(v) for v in vals]
                             + [repr(history["lr"][i]), f"{history['images_per_s'][i]:.3f}"]))
    write_text(out / "history.csv", "\n".join(rows) + "\n")
    files["history_csv"] = out / "history.csv"
    if history["eval"]:
        keys = [k for k in history["eval"][-1] if k != "step"]
        with open(out / "eval.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["step"] + keys)
            for e in history["eval"]:
                w.writerow([e["step"]] + [json.dumps(e.get(k)) for k in keys])
        files["eval_csv"] = out / "eval.csv"
    files["loss_png"] = plot_history(history, out / "loss.png")
    if held is not None:
        files["grid_png"] = save_grid(mofa, held, out / "grid.png")
    return files

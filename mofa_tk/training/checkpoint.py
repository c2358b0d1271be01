"""Checkpoints of `train`: atomic saves, the RNG states that make a resumed run continue bit for bit, and the
reader that checks a file is a mofa_tk checkpoint."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.files import atomic_write
from .autoencoder import CHECKPOINT_FORMAT

__all__ = ["atomic_save", "rng_state", "set_rng_state", "read_checkpoint", "optimizer_to"]


def atomic_save(obj, path: Path) -> None:
    """torch.save, atomically (`io.files.atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def rng_state(device) -> dict:
    np_state = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                    float(np_state[4])]}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict, device) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(_tuplify(st["python"]))
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state_all(st["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def read_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"checkpoint {path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {path}: not a {CHECKPOINT_FORMAT} checkpoint")
    return ckpt


def optimizer_to(opt, device) -> None:
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                st[k] = v.to(device)

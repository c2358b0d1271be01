"""Taichi backend selection.

`init()` picks and initialises one Taichi backend for the whole process. Ops call `ensure_init()`, so
users who never call `init()` get the backend named by `MOFA_TK_BACKEND` (default "auto").

Where tensors live:
  - "cpu"    : Taichi x64; torch CPU tensors are passed to kernels without a copy.
  - "cuda"   : Taichi CUDA; torch CUDA tensors are passed without a copy.
  - "vulkan" : Taichi Vulkan; torch tensors stay on the CPU and Taichi copies every ndarray argument
               to the device before a launch and back after it (one copy each way per launch).
"""
from __future__ import annotations

import logging
import os

import torch

from .errors import BackendUnavailableError

log = logging.getLogger("mofa_tk")
if not log.handlers:
    _h = logging.StreamHandler()
    _h.setFormatter(logging.Formatter("[mofa_tk] %(message)s"))
    log.addHandler(_h)
    log.setLevel(logging.INFO)
    log.propagate = False

BACKENDS = ("auto", "cpu", "cuda", "vulkan")
_state = {"backend": None, "generation": 0}


def _ti():
    import taichi as ti

    return ti


def _arch_of(name: str):
    ti = _ti()
    return {"cpu": ti.x64 if _is_x64() else ti.cpu, "cuda": ti.cuda, "vulkan": ti.vulkan}[name]


def _is_x64() -> bool:
    import platform

    return platform.machine().lower() in ("x86_64", "amd64")


def _current_arch():
    ti = _ti()
    return ti.lang.impl.current_cfg().arch


def _why_unavailable(name: str) -> str | None:
    """Return None when `name` can be tried, else a sentence saying what is missing."""
    ti = _ti()
    core = ti._lib.core
    if name == "cuda":
        if not core.with_cuda():
            return "Taichi found no CUDA driver (libcuda.so) or was built without CUDA"
        if not torch.cuda.is_available():
            return "torch sees no CUDA device (torch.cuda.is_available() is False; is the CUDA build of torch installed?)"
    if name == "vulkan":
        if not core.with_vulkan():
            return "this Taichi build has no Vulkan support"
    return None


def _try_init(name: str) -> str | None:
    """Initialise Taichi on `name`. Returns None on success, else why it failed."""
    ti = _ti()
    why = _why_unavailable(name)
    if why:
        return why
    arch = _arch_of(name)
    try:
        ti.init(arch=arch, default_fp=ti.f32, default_ip=ti.i32, offline_cache=True, log_level=ti.WARN)
    except Exception as exc:  # Taichi raises RuntimeError subclasses on driver problems
        return f"ti.init failed: {exc}"
    _state["generation"] += 1  # every ti.init invalidates Taichi-owned buffers
    if _current_arch() != arch:
        # Taichi silently falls back to the CPU when a GPU arch cannot start.
        got = _current_arch().name
        return f"Taichi could not start it and fell back to {got} (no {name} driver/device found)"
    return None


def init(backend: str | None = None, *, force: bool = False) -> str:
    """Initialise the Taichi backend used by every mofa_tk op.

    backend: "auto" | "cpu" | "cuda" | "vulkan", or None to read `MOFA_TK_BACKEND` (default "auto").
    "auto" tries CUDA, then Vulkan, then CPU, and logs one line saying what it got and why.
    Calling again with the backend already active is a no-op unless `force` (re-initialise it, e.g. after
    other code called `ti.init` itself). Switching backends re-initialises Taichi (previously compiled kernels
    are recompiled on first use).
    Returns the name of the active backend ("cpu", "cuda" or "vulkan").
    Raises BackendUnavailableError when an explicitly requested backend cannot start.
    """
    if backend is None:
        backend = os.environ.get("MOFA_TK_BACKEND", "auto") or "auto"
    backend = str(backend).strip().lower()
    if backend not in BACKENDS:
        raise ValueError(f"mofa_tk.init: backend must be one of {BACKENDS}, got {backend!r}")
    if force:
        _state["backend"] = None
    current = _state["backend"]
    if backend == "auto":
        if current is not None:
            return current
        reasons = []
        for name in ("cuda", "vulkan", "cpu"):
            why = _try_init(name)
            if why is None:
                extra = f" ({'; '.join(reasons)})" if reasons else ""
                log.info(f"backend auto -> {name}{extra}")
                _state["backend"] = name
                return name
            reasons.append(f"{name}: {why}")
        raise BackendUnavailableError("mofa_tk.init('auto'): no backend could start: " + "; ".join(reasons))
    if current == backend:
        return current
    why = _try_init(backend)
    if why is not None:
        if current is not None:  # restore the previous backend so the process stays usable
            _try_init(current)
        raise BackendUnavailableError(f"mofa_tk backend {backend!r} is unavailable: {why}")
    _state["backend"] = backend
    log.debug(f"backend {backend}")
    return backend


def ensure_init() -> str:
    """Initialise from the environment if `init()` was never called; return the active backend."""
    return _state["backend"] or init(None)


def generation() -> int:
    """Counter bumped by every Taichi (re)initialisation; caches of Taichi buffers key on it."""
    return _state["generation"]


def current_backend() -> str | None:
    """Name of the active backend, or None before initialisation."""
    return _state["backend"]


def available_backends() -> list[str]:
    """Backends that can start on this machine (probes each by initialising it; restores the current one)."""
    current = _state["backend"]
    found = []
    for name in ("cpu", "vulkan", "cuda"):
        if _try_init(name) is None:
            found.append(name)
    _state["backend"] = None
    if current is not None:
        init(current)
    return found


def cpu_threads() -> int:
    """Number of threads Taichi's CPU backend runs parallel loops on."""
    import taichi as ti

    ensure_init()
    return int(ti.lang.impl.current_cfg().cpu_max_num_threads)


def kernel_device() -> torch.device:
    """Torch device whose tensors the active backend's kernels read without a copy."""
    return torch.device("cuda") if ensure_init() == "cuda" else torch.device("cpu")

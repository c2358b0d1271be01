"""Argument validation shared by the ops: clear errors instead of bare tracebacks or silent NaNs.

Host reads. A check that looks at tensor values (NaN / Inf) must bring a value back to the host, which on a GPU
waits for all queued work (a sync). Every such read goes through `host_read`, which counts them (`HOST_READS`).
Inside `deferred_checks()` (the decoder's stages use it) the NaN / Inf checks of the caller's inputs are queued
as device-side flags and read together with the next read the computation needs anyway (`host_read(...,
pending=True)`, e.g. rasterize's status) or once when the outermost scope ends, and the ops skip their own
checks of the intermediate tensors the scope computes from checked inputs (rasterize still flags non-finite
positions in its kernel). A decoder forward thus reads the host once.
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading

import torch

from .backend import current_backend, kernel_device
from .errors import InputError

#: Number of host reads of tensor values made by the checks and ops (see the module docstring).
HOST_READS = [0]
class _Scope(threading.local):
    """Per-thread state of `deferred_checks` (threads rendering at the same time keep their own)."""

    def __init__(self):
        self.depth = 0
        self.pending = []


_SCOPE = _Scope()


def as_tensor(name: str, x, *, dtype=torch.float32) -> torch.Tensor:
    """`x` as a torch tensor of `dtype` (keeps autograd history); InputError if it cannot be converted."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise InputError(f"{name}: complex tensors are not supported")
        return x if x.dtype == dtype else x.to(dtype)
    try:
        return torch.as_tensor(x, dtype=dtype)
    except Exception as exc:
        raise InputError(f"{name}: expected a tensor or array, got {type(x).__name__} ({exc})") from None


def check_shape(name: str, x: torch.Tensor, spec: str, **sizes) -> dict:
    """Check `x.shape` against a spec such as "B,V,3"; letters bind to sizes (checked for consistency).

    Returns the dict of bound sizes. Raises InputError naming the argument on mismatch.
    """
    dims = [d.strip() for d in spec.split(",")]
    if x.ndim != len(dims):
        raise InputError(f"{name}: expected shape ({spec}), got {tuple(x.shape)}")
    bound = dict(sizes)
    for d, n in zip(dims, x.shape):
        if d.isdigit():
            if int(d) != n:
                raise InputError(f"{name}: expected shape ({spec}), got {tuple(x.shape)}")
        elif d in bound and bound[d] is not None and bound[d] != n:
            raise InputError(f"{name}: expected shape ({spec}) with {d}={bound[d]}, got {tuple(x.shape)}")
        else:
            bound[d] = n
    return bound


def host_read(x: torch.Tensor, *, pending: bool = False) -> list:
    """`x.tolist()`, counted in HOST_READS. With `pending`, the deferred NaN / Inf flags of the current scope are
    read in the same transfer (and raised, naming their tensor, when one is set)."""
    HOST_READS[0] += 1
    flags = _SCOPE.pending if pending else []
    if not flags:
        return x.tolist()
    both = torch.cat([x.reshape(-1).to(torch.float64), torch.stack([f for _, _, f in flags]).to(x.device, torch.float64)])
    values = both.tolist()
    _raise_flagged(values[x.numel():])
    return values[:x.numel()]


def _raise_flagged(bad) -> None:
    flags = _SCOPE.pending
    _SCOPE.pending = []
    for (name, x, _), b in zip(flags, bad):
        if b and not bool(torch.isfinite(x).all()):   # a set flag may be a sum that overflowed: check exactly
            raise non_finite_error(name, x)


@contextlib.contextmanager
def deferred_checks():
    """Scope in which input checks are queued on the device and read once (see the module docstring). Nested
    scopes join the outermost one, which reads what is still pending when it ends."""
    _SCOPE.depth += 1
    done = False
    try:
        yield
        done = True
    finally:
        _SCOPE.depth -= 1
        if _SCOPE.depth == 0:
            flags = _SCOPE.pending
            if done and flags:
                HOST_READS[0] += 1
                _raise_flagged(torch.stack([f for _, _, f in flags]).tolist())
            _SCOPE.pending = []


def in_deferred_scope() -> bool:
    """True inside `deferred_checks()`: ops skip the NaN / Inf checks of their (already checked) inputs."""
    return _SCOPE.depth > 0


def check_finite(name: str, x: torch.Tensor, *, scope_input: bool = False) -> None:
    """InputError when `x` holds NaN or Inf.

    Fast path: the sum of a tensor is finite whenever all its values are (NaN and Inf propagate), and one
    reduction costs 10-30x less than an element-wise `isfinite`; only a non-finite sum (a bad value, or a sum
    that overflowed) runs the exact check. Inside `deferred_checks()` the check of an input of the scope
    (`scope_input`) is queued as a device-side flag, and an op's check of its own arguments is skipped.
    """
    if not x.numel():
        return
    x = x.detach()
    if _SCOPE.depth:
        if scope_input:
            flag = (~torch.isfinite(x.sum()) if x.is_floating_point()
                    else torch.zeros((), dtype=torch.bool, device=x.device))
            _SCOPE.pending.append((name, x, flag))
        return
    if x.is_floating_point():
        HOST_READS[0] += 1
        if math.isfinite(float(x.sum())):
            return
    if not bool(torch.isfinite(x).all()):
        raise non_finite_error(name, x)


def non_finite_error(name: str, x: torch.Tensor) -> InputError:
    """The InputError for a tensor known to hold NaN or Inf, with their number."""
    return InputError(f"{name}: contains {int((~torch.isfinite(x)).sum())} NaN/Inf value(s)")


def check_indices(name: str, idx: torch.Tensor, upper: int) -> None:
    """InputError when integer indices fall outside [0, upper)."""
    if idx.numel() == 0:
        return
    check_index_range(name, int(idx.min()), int(idx.max()), upper)


def check_index_range(name: str, lo: int, hi: int, upper: int) -> None:
    """InputError when the index range [lo, hi] (already computed, e.g. cached) leaves [0, upper)."""
    if lo < 0 or hi >= upper:
        raise InputError(f"{name}: indices must lie in [0, {upper}), got values in [{lo}, {hi}]")


def check_device(name: str, x: torch.Tensor) -> torch.Tensor:
    """`x` itself, or InputError when it lies on a device the active backend's kernels cannot use.

    Accepted: the kernel device (`backend.kernel_device()`: the CPU, or cuda:0 = Taichi's CUDA device) and the
    CPU (copied there and back). A tensor on another CUDA device, a CUDA tensor without the cuda backend, or a
    meta / mps / xpu tensor names itself, its device and the backend's.
    """
    dev = x.device
    kdev = kernel_device()
    if dev.type == "cpu" or dev == kdev:
        return x
    backend = current_backend()
    if dev.type == "cuda" and backend == "cuda":
        hint = (f"Taichi runs on {kdev}, device 0 of the visible devices; start the process with "
                f"CUDA_VISIBLE_DEVICES={dev.index} (mofa_tk.backend.pin_local_rank() does it under torchrun), "
                f"or move the tensor to {kdev}")
    elif dev.type == "cuda":
        hint = f"the {backend} backend reads CPU tensors; call mofa_tk.init('cuda') or move the tensor to the CPU"
    else:
        hint = f"the {backend} backend reads tensors on {kdev} or the CPU"
    raise InputError(f"{name}: tensor on {dev}, but mofa_tk's kernels run on {kdev} ({hint})")


def constant(values, dtype=torch.float32, device=None) -> torch.Tensor:
    """Tensor of plain numbers `values` (nested tuples / lists) on `device`, built once per (values, dtype,
    device) and shared: read-only, never write into it.

    Building a tensor from Python numbers directly on a GPU copies from pageable host memory, which synchronises
    the host with the GPU every time; ops and the camera take their constants from here instead.
    """
    def frozen(v):
        return tuple(frozen(x) for x in v) if isinstance(v, (list, tuple)) else float(v)
    return _constant(frozen(values), dtype, torch.device(device) if device is not None else torch.device("cpu"))


@functools.lru_cache(maxsize=512)
def _constant(values: tuple, dtype, device) -> torch.Tensor:
    with torch.inference_mode(False), torch.no_grad():   # an ordinary tensor, usable in any autograd graph
        return torch.tensor(values, dtype=dtype).to(device)


def to_kernel(x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Contiguous tensor of `dtype` on the device the active backend reads without a copy."""
    return x.detach().to(device=kernel_device(), dtype=dtype).contiguous()


def on_device_of(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`x` on the device of `like` (the op's main input): outputs and gradients go back where the inputs were."""
    return x if x.device == like.device else x.to(like.device)


def batch_of(name: str, x: torch.Tensor, B: int) -> torch.Tensor:
    """Broadcast a per-batch parameter with a leading batch dim of 1 (or none) to B."""
    if x.shape[0] == B:
        return x
    if x.shape[0] == 1:
        return x.expand(B, *x.shape[1:])
    raise InputError(f"{name}: batch size {x.shape[0]} does not match B={B}")


def image_size(name: str, value, *, square: bool = True, max_side: int | None = None) -> tuple[int, int]:
    """(H, W) from an image size argument; InputError naming `name` when it is not one.

    Args:
        name: the argument name for messages; value: (H, W), or an int for a square image when `square`.
        max_side: optional largest allowed H and W.
    """
    if square and isinstance(value, int) and not isinstance(value, bool):
        H = W = int(value)
    else:
        try:
            H, W = (int(s) for s in value)
        except Exception:
            what = "an int or (H, W)" if square else "(H, W)"
            raise InputError(f"{name}: expected {what}, got {value!r}") from None
    if H <= 0 or W <= 0 or (max_side is not None and max(H, W) > max_side):
        bound = "positive" if max_side is None else f"in [1, {max_side}]"
        raise InputError(f"{name}: H and W must be {bound}, got {(H, W)}")
    return H, W

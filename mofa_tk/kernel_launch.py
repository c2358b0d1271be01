"""Low-overhead launches of Taichi kernels whose array arguments are torch tensors or Taichi ndarrays.

Taichi 1.7's `kernel(*args)` re-inspects every argument in Python on every call (tens of microseconds per
array argument, longer than many of our kernels run). `launch(kernel, *args)` inspects a kernel's signature
once, compiles (or finds) the instance once per (kernel, template values, array dtypes), and afterwards only
writes the data pointers, shapes and scalars into a fresh launch context (docs/architecture.md has figures).

`torch_single_threaded` runs an op's own torch work (input checks, buffer allocation and fills) on one thread
where torch has at most 4 threads: torch's OpenMP workers spin for a while after each parallel torch op and,
on a machine with few cores, compete with Taichi's workers for the CPU.

It uses Taichi internals that are stable within 1.7.x (pinned in pyproject.toml). If any of them is missing,
or an argument is of a kind it does not handle (a tensor that requires grad, on another device, or not
contiguous), it makes the ordinary call instead, so results never depend on which path ran.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math

import torch

from .backend import current_backend
from .errors import InputError, MofaError

log = logging.getLogger("mofa_tk")

INT32_MAX = (1 << 31) - 1
_TEMPLATE, _ARRAY, _INT, _UINT, _FLOAT = range(5)
_SIGNATURES: dict = {}  # kernel -> tuple of argument kinds, or None when the fast path is unavailable
_INSTANCES: dict = {}  # (kernel, array dtypes, *template values) -> compiled Taichi kernel, for "program"


def _signature(kernel):
    """The kernel's argument plan, or None if this Taichi does not expose what the fast path needs.

    The plan: (number of arguments, positions of the template arguments, positions of the array arguments, then
    the (launch slot, position) pairs of the array, signed, unsigned and float arguments). Launch slots count
    the non-template arguments.
    """
    if kernel in _SIGNATURES:
        return _SIGNATURES[kernel]
    sig = None
    try:
        from taichi.lang.util import cook_dtype
        from taichi.types import ndarray_type, primitive_types
        from taichi.types.annotations import template
        from taichi.types.utils import is_signed

        kinds = []
        for arg in kernel._primal.arguments:
            ann = arg.annotation
            if isinstance(ann, template) or ann is template:
                kinds.append(_TEMPLATE)
            elif isinstance(ann, ndarray_type.NdarrayType):
                kinds.append(_ARRAY)
            elif id(ann) in primitive_types.integer_type_ids:
                kinds.append(_INT if is_signed(cook_dtype(ann)) else _UINT)
            elif id(ann) in primitive_types.real_type_ids:
                kinds.append(_FLOAT)
            else:
                raise TypeError(f"argument {arg.name}: unsupported annotation {ann!r}")
        slots = {}
        slot = 0
        for pos, kind in enumerate(kinds):
            if kind != _TEMPLATE:
                slots.setdefault(kind, []).append(((slot,), pos))
                slot += 1
        sig = (len(kinds), tuple(p for p, k in enumerate(kinds) if k == _TEMPLATE),
               tuple(p for p, k in enumerate(kinds) if k == _ARRAY),
               *(tuple(slots.get(k, ())) for k in (_ARRAY, _INT, _UINT, _FLOAT)))
    except Exception as exc:  # an older/newer Taichi: keep using the ordinary call
        log.debug(f"fast launch unavailable for {getattr(kernel, '__name__', kernel)}: {exc}")
    _SIGNATURES[kernel] = sig
    return sig


def _array_ok(a, cuda: bool) -> bool:
    if isinstance(a, torch.Tensor):
        return a.is_contiguous() and not a.requires_grad and a.is_cuda == cuda
    return hasattr(a, "arr")  # a Taichi ndarray


def launch(kernel, *args) -> None:
    """Run the Taichi kernel `kernel(*args)` (same arguments, same result) with less Python overhead.

    On the cuda backend the launch is ordered with torch's current stream (`cuda_stream_order`). Raises
    InputError when an array has more than 2^31 - 1 elements (Taichi indexes arrays with int32).
    """
    if current_backend() == "cuda":
        with cuda_stream_order():
            return _launch(kernel, *args)
    return _launch(kernel, *args)


@contextlib.contextmanager
def cuda_stream_order():
    """Order a Taichi CUDA launch with torch's current stream.

    Taichi launches on the legacy default stream; torch's side streams do not wait for it, nor it for them. When
    the current stream is not the default one, the default stream first waits for the work queued on the
    current stream (the kernel sees its inputs), and afterwards the current stream waits for the default one
    (what follows on it sees the kernel's outputs, and memory it frees is not reused before the kernel ends).
    Both waits are events on the GPU: the host does not block. Inside CUDA-graph capture a launch would escape
    the graph, so it raises MofaError.
    """
    if torch.cuda.is_current_stream_capturing():
        raise MofaError("mofa_tk ops cannot be captured in a CUDA graph: Taichi launches its kernels on the "
                        "legacy default stream, outside the capture; call them outside torch.cuda.graph()")
    current, default = torch.cuda.current_stream(), torch.cuda.default_stream()
    if current == default:
        yield
        return
    default.wait_stream(current)
    try:
        yield
    finally:
        current.wait_stream(default)


def _launch(kernel, *args) -> None:
    sig = _signature(kernel)
    if sig is None or sig[0] != len(args):
        return kernel(*args)
    _, tpl_pos, arr_pos, arr_slots, int_slots, uint_slots, float_slots = sig
    prog = _impl().get_runtime().prog
    cuda = current_backend() == "cuda"
    if _INSTANCES.get("program") is not prog:  # Taichi was (re-)initialised: its compiled kernels are gone
        _INSTANCES.clear()
        _INSTANCES["program"] = prog
    dtypes = []
    for p in arr_pos:
        a = args[p]
        if not _array_ok(a, cuda):
            return kernel(*args)
        n = a.numel() if isinstance(a, torch.Tensor) else math.prod(a.shape)
        if n > INT32_MAX:
            raise InputError(f"{kernel.__name__}: an array of {n} elements exceeds the 2^31 - 1 elements a Taichi "
                             "kernel can index; use a smaller batch or resolution")
        dtypes.append(a.dtype)
    key = (kernel, tuple(dtypes), *(args[p] for p in tpl_pos))
    inst = _INSTANCES.get(key)
    if inst is None:
        primal = kernel._primal
        inst = _INSTANCES[key] = primal.compiled_kernels[primal.ensure_compiled(*args)]
    ctx = inst.make_launch_context()
    for slot, p in arr_slots:
        a = args[p]
        if isinstance(a, torch.Tensor):
            ctx.set_arg_external_array_with_shape(slot, a.data_ptr(), a.element_size() * a.numel(), tuple(a.shape), 0)
        else:
            ctx.set_arg_ndarray(slot, a.arr)
    for slot, p in int_slots:
        ctx.set_arg_int(slot, int(args[p]))
    for slot, p in uint_slots:
        ctx.set_arg_uint(slot, int(args[p]))
    for slot, p in float_slots:
        ctx.set_arg_float(slot, float(args[p]))
    prog.launch_kernel(prog.compile_kernel(prog.config(), prog.get_device_caps(), inst), ctx)


_IMPL = None


def _impl():
    """taichi.lang.impl, imported on first use (Taichi loads lazily)."""
    global _IMPL
    if _IMPL is None:
        from taichi.lang import impl

        _IMPL = impl
    return _IMPL


SINGLE_THREAD_TORCH_MAX = 4  # torch thread counts up to which the ops run their torch work single-threaded


def torch_single_threaded(fn):
    """Decorator: run `fn` with torch's intra-op threads set to 1 (restored afterwards) when torch uses at most
    SINGLE_THREAD_TORCH_MAX threads, i.e. on small machines.

    For the torch operations around our Taichi kernels (checks, fills, sums over at most a few million
    elements), one thread costs little there and avoids waking torch's OpenMP workers, whose spinning would slow
    down the Taichi kernels that follow (see the module docstring; measured on 2 cores). On larger machines a
    serial reduction over a big batch could cost more than it saves, so torch keeps its threads.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        n = torch.get_num_threads()
        if n == 1 or n > SINGLE_THREAD_TORCH_MAX:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(n)

    return wrapper

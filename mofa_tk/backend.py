"""Taichi backend selection.

`init()` picks and initialises one Taichi backend for the whole process. Ops call `ensure_init()`, so
users who never call `init()` get the backend named by `MOFA_TK_BACKEND` (default "auto").

Where tensors live:
  - "cpu"    : Taichi x64; torch CPU tensors are passed to kernels without a copy.
  - "cuda"   : Taichi CUDA on device 0 of the visible devices (torch's cuda:0); torch CUDA tensors there are
               passed without a copy. Taichi cannot use another device: under torchrun, pin each rank's
               device with `pin_local_rank()` (CUDA_VISIBLE_DEVICES) before Taichi or torch touches CUDA.
  - "vulkan" : Taichi Vulkan; torch tensors stay on the CPU and Taichi copies every ndarray argument
               to the device before a launch and back after it (one copy each way per launch).
Every backend also accepts CPU tensors (copied to the kernel device and the results back); tensors on any other
device raise InputError (checks.check_device).
"""
from __future__ import annotations

import ctypes
import ctypes.util
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
_state = {"backend": None, "generation": 0, "memory": {}, "cpu_threads": None}
#: Vulkan drivers that run on the CPU (Mesa's lavapipe / llvmpipe, SwiftShader): slower than the cpu backend.
SOFTWARE_VULKAN = ("llvmpipe", "lavapipe", "swiftshader")


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


def vulkan_devices() -> list[tuple[str, bool]]:
    """(name, is_software) of every Vulkan physical device the loader reports ([] without a Vulkan loader).

    Read through the Vulkan loader itself (vkEnumeratePhysicalDevices), before Taichi starts: a device whose
    type is VK_PHYSICAL_DEVICE_TYPE_CPU, or whose name is a known software driver, is software.
    """
    name = ctypes.util.find_library("vulkan") or "libvulkan.so.1"
    try:
        vk = ctypes.CDLL(name)
    except OSError:
        return []

    class AppInfo(ctypes.Structure):
        _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("pApplicationName", ctypes.c_char_p),
                    ("applicationVersion", ctypes.c_uint32), ("pEngineName", ctypes.c_char_p),
                    ("engineVersion", ctypes.c_uint32), ("apiVersion", ctypes.c_uint32)]

    class CreateInfo(ctypes.Structure):
        _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
                    ("pApplicationInfo", ctypes.POINTER(AppInfo)), ("enabledLayerCount", ctypes.c_uint32),
                    ("ppEnabledLayerNames", ctypes.c_void_p), ("enabledExtensionCount", ctypes.c_uint32),
                    ("ppEnabledExtensionNames", ctypes.c_void_p)]

    app = AppInfo(0, None, b"mofa_tk", 1, b"mofa_tk", 1, 1 << 22)          # sType 0: APPLICATION_INFO, API 1.0
    info = CreateInfo(1, None, 0, ctypes.pointer(app), 0, None, 0, None)   # sType 1: INSTANCE_CREATE_INFO
    inst = ctypes.c_void_p()
    if vk.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(inst)) != 0:
        return []
    out = []
    try:
        n = ctypes.c_uint32(0)
        vk.vkEnumeratePhysicalDevices(inst, ctypes.byref(n), None)
        devs = (ctypes.c_void_p * n.value)()
        vk.vkEnumeratePhysicalDevices(inst, ctypes.byref(n), devs)
        for d in devs[:n.value]:
            props = ctypes.create_string_buffer(4096)          # VkPhysicalDeviceProperties is under 1 KiB
            vk.vkGetPhysicalDeviceProperties(ctypes.c_void_p(d), props)
            raw = props.raw
            dtype = int.from_bytes(raw[16:20], "little")       # after apiVersion, driverVersion, vendorID, deviceID
            dname = raw[20:276].split(b"\0")[0].decode(errors="replace")
            out.append((dname, dtype == 4 or any(w in dname.lower() for w in SOFTWARE_VULKAN)))
    finally:
        vk.vkDestroyInstance(inst, None)
    return out


def _software_vulkan_only() -> str | None:
    """A sentence when every Vulkan device is a software driver (auto then skips Vulkan), else None."""
    devs = vulkan_devices()
    if devs and all(soft for _, soft in devs):
        names = ", ".join(n for n, _ in devs)
        return (f"only software Vulkan ({names}), slower than the cpu backend; init('vulkan') or "
                f"MOFA_TK_BACKEND=vulkan uses it anyway")
    return None


def device_memory_options(device_memory_GB, device_memory_fraction) -> dict:
    """ti.init's GPU memory options from the arguments or MOFA_TK_DEVICE_MEMORY_GB / _FRACTION (
    a bad value raises ValueError naming the argument or variable, as a bad backend name does)."""
    out = {}
    for key, value, env in (("device_memory_GB", device_memory_GB, "MOFA_TK_DEVICE_MEMORY_GB"),
                            ("device_memory_fraction", device_memory_fraction, "MOFA_TK_DEVICE_MEMORY_FRACTION")):
        src = key
        if value is None and os.environ.get(env):
            value, src = os.environ[env], env
        if value is None:
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"mofa_tk.init: {src} must be a number, got {value!r}") from None
        hi = 1.0 if key == "device_memory_fraction" else float("inf")
        if not (0 < v <= hi):
            raise ValueError(f"mofa_tk.init: {src} must be in (0, {hi:g}], got {value!r}")
        out[key] = v
    if len(out) == 2:
        raise ValueError("mofa_tk.init: give device_memory_GB or device_memory_fraction, not both")
    return out


def pin_local_rank() -> int | None:
    """Under torchrun, make this process see only its own GPU: CUDA_VISIBLE_DEVICES = the LOCAL_RANK-th of the
    visible devices, so that Taichi's device 0 and torch's cuda:0 are the rank's device.

    Call before Taichi or torch initialises CUDA (mofa train does). Returns the local rank, or None when
    LOCAL_RANK is unset (nothing changed). A CUDA_VISIBLE_DEVICES list is indexed; without one, the rank is
    the device number.
    """
    rank = os.environ.get("LOCAL_RANK")
    if rank is None:
        return None
    r = int(rank)
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if len(visible) == 1:
        return r                                               # already pinned
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[r] if visible else str(r)
    return r


def _try_init(name: str) -> str | None:
    """Initialise Taichi on `name`. Returns None on success, else why it failed."""
    ti = _ti()
    why = _why_unavailable(name)
    if why:
        return why
    arch = _arch_of(name)
    extra = _state["memory"] if name == "cuda" else {}
    if name == "cpu" and _state["cpu_threads"]:
        extra = {"cpu_max_num_threads": _state["cpu_threads"]}
    try:
        ti.init(arch=arch, default_fp=ti.f32, default_ip=ti.i32, offline_cache=True, log_level=ti.WARN, **extra)
    except Exception as exc:  # Taichi raises RuntimeError subclasses on driver problems
        return f"ti.init failed: {exc}"
    _state["generation"] += 1  # every ti.init invalidates Taichi-owned buffers
    if _current_arch() != arch:
        # Taichi silently falls back to the CPU when a GPU arch cannot start.
        got = _current_arch().name
        return f"Taichi could not start it and fell back to {got} (no {name} driver/device found)"
    return None


def init(backend: str | None = None, *, force: bool = False, device_memory_GB: float | None = None,
         device_memory_fraction: float | None = None, cpu_threads: int | None = None) -> str:
    """Initialise the Taichi backend used by every mofa_tk op.

    backend: "auto" | "cpu" | "cuda" | "vulkan", or None to read `MOFA_TK_BACKEND` (default "auto").
    "auto" tries CUDA, then Vulkan (skipped when its only devices are software drivers such as lavapipe, which
    are slower than the cpu backend), then CPU, and logs one line saying what it got and why.
    device_memory_GB / device_memory_fraction: GPU memory Taichi reserves on CUDA (default Taichi's, 1 GiB),
    or the environment variables MOFA_TK_DEVICE_MEMORY_GB / MOFA_TK_DEVICE_MEMORY_FRACTION; give one of them.
    Torch's allocator does not see this memory.
    cpu_threads: threads of the cpu backend's parallel loops (default: Taichi's, one per CPU); a different
    value re-initialises an active cpu backend. Training ranks sharing one host divide the CPUs this way.
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
    memory = device_memory_options(device_memory_GB, device_memory_fraction)
    if cpu_threads is not None:
        if isinstance(cpu_threads, bool) or int(cpu_threads) != cpu_threads or int(cpu_threads) < 1:
            raise ValueError(f"mofa_tk.init: cpu_threads must be an integer >= 1, got {cpu_threads!r}")
        if int(cpu_threads) != _state["cpu_threads"]:
            _state["cpu_threads"] = int(cpu_threads)
            force = force or _state["backend"] == "cpu"
    if memory != _state["memory"]:
        _state["memory"] = memory
        force = force or _state["backend"] == "cuda"
    if force:
        _state["backend"] = None
    current = _state["backend"]
    if backend == "auto":
        if current is not None:
            return current
        reasons = []
        for name in ("cuda", "vulkan", "cpu"):
            why = _software_vulkan_only() if name == "vulkan" else None
            why = why or _try_init(name)
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
    """Torch device whose tensors the active backend's kernels read without a copy (cuda:0: Taichi runs on
    device 0 of the visible devices)."""
    return torch.device("cuda", 0) if ensure_init() == "cuda" else torch.device("cpu")

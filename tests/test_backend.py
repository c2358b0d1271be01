"""Backend selection: init semantics, errors, environment variable, kernel packaging."""
import importlib
import os
import subprocess
import sys

import pytest

import mofa_tk
from mofa_tk import backend as B


def test_init_is_idempotent_and_reports_backend(backend):
    assert mofa_tk.init(backend) == backend
    gen = B.generation()
    assert mofa_tk.init(backend) == backend
    assert B.generation() == gen, "initialising twice with the same backend must not re-initialise Taichi"
    assert mofa_tk.current_backend() == backend
    assert mofa_tk.init("auto") == backend  # auto keeps an already active backend


def test_unknown_backend_is_a_clear_error(backend):
    with pytest.raises(ValueError, match="opengl"):
        mofa_tk.init("opengl")
    assert mofa_tk.current_backend() == backend


def test_unavailable_backend_names_itself(backend):
    if "cuda" in mofa_tk.available_backends():
        pytest.skip("CUDA is available here")
    mofa_tk.init(backend)
    with pytest.raises(mofa_tk.BackendUnavailableError, match="cuda"):
        mofa_tk.init("cuda")
    assert mofa_tk.current_backend() == backend  # the previous backend stays usable
    import torch
    r = mofa_tk.rasterize(torch.tensor([[[-1.0, -1, 0, 1], [1, -1, 0, 1], [0, 1, 0, 1]]]), torch.tensor([[0, 1, 2]]), (4, 4))
    assert (r[..., 3] > 0).any()


def test_environment_variable_selects_backend():
    code = "import mofa_tk, torch; mofa_tk.morph(mofa_tk.builtin_model(), torch.zeros(1, 80)); print(mofa_tk.current_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MOFA_TK_BACKEND": "cpu"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "cpu"


def test_kernels_live_in_the_package_namespace(tmp_path):
    mod = importlib.import_module("mofa_tk.kernels.raster")
    assert hasattr(mod, "raster_pass")
    # outside the checkout (whose root is on sys.path under `python -m pytest`), `kernels` is not a module
    code = ("import importlib.util, mofa_tk.kernels.raster as r; "
            "print(importlib.util.find_spec('kernels') is None, r.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].split() == ["True", "mofa_tk.kernels.raster"]


def test_auto_skips_software_vulkan(caplog):
    """Where every Vulkan device is a software driver (lavapipe in CI), auto picks cpu (without CUDA) and says
    why; an explicit init('vulkan') still uses it."""
    devices = B.vulkan_devices()
    if not devices:
        pytest.skip("no Vulkan loader or device on this machine")
    if not all(soft for _, soft in devices):
        pytest.skip(f"a hardware Vulkan device is present: {devices}")
    assert any(k in n.lower() for n, _ in devices for k in B.SOFTWARE_VULKAN)
    if "cuda" in mofa_tk.available_backends():
        pytest.skip("CUDA is available: auto picks it first")
    messages = []
    handler = B.logging.Handler()
    handler.emit = lambda rec: messages.append(rec.getMessage())
    B.log.addHandler(handler)
    try:
        assert mofa_tk.init("auto", force=True) == "cpu"
    finally:
        B.log.removeHandler(handler)
    assert any("auto -> cpu" in m and "software Vulkan" in m and devices[0][0] in m for m in messages), messages
    if "vulkan" in mofa_tk.available_backends():
        assert mofa_tk.init("vulkan") == "vulkan"
    mofa_tk.init("cpu")


def test_device_memory_options_are_checked(monkeypatch):
    assert B.device_memory_options(2.5, None) == {"device_memory_GB": 2.5}
    assert B.device_memory_options(None, 0.25) == {"device_memory_fraction": 0.25}
    for gb, frac, pattern in ((-1, None, "device_memory_GB must be in"), (None, 1.5, "device_memory_fraction must be in"),
                              ("lots", None, "device_memory_GB must be a number"), (1, 0.5, "not both")):
        with pytest.raises(ValueError, match=pattern):
            mofa_tk.init("cpu", device_memory_GB=gb, device_memory_fraction=frac)
    monkeypatch.setenv("MOFA_TK_DEVICE_MEMORY_FRACTION", "0.3")
    assert B.device_memory_options(None, None) == {"device_memory_fraction": 0.3}
    monkeypatch.setenv("MOFA_TK_DEVICE_MEMORY_FRACTION", "most")
    with pytest.raises(ValueError, match="MOFA_TK_DEVICE_MEMORY_FRACTION must be a number"):
        mofa_tk.init("cpu")
    monkeypatch.delenv("MOFA_TK_DEVICE_MEMORY_FRACTION")
    assert mofa_tk.init("cpu", device_memory_GB=1.0) == "cpu"      # accepted; only CUDA uses it
    mofa_tk.init("cpu")


def test_pin_local_rank(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert B.pin_local_rank() is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert B.pin_local_rank() == 1 and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7")
    assert B.pin_local_rank() == 1 and os.environ["CUDA_VISIBLE_DEVICES"] == "6"
    assert B.pin_local_rank() == 1 and os.environ["CUDA_VISIBLE_DEVICES"] == "6"   # already pinned

"""Backend selection: init semantics, errors, environment variable, kernel packaging."""
import importlib
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
                         env={**__import__("os").environ, "MOFA_TK_BACKEND": "cpu"})
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

"""mofa_tk.kernel_launch.launch: the low-overhead kernel launch gives the same results as Taichi's own call."""
import pytest
import taichi as ti
import torch

import mofa_tk
from mofa_tk import kernel_launch
from mofa_tk.backend import kernel_device
from mofa_tk.errors import InputError

nd = ti.types.ndarray


@ti.kernel
def _affine(x: nd(dtype=ti.f32, ndim=1), idx: nd(dtype=ti.i64, ndim=1), out: nd(dtype=ti.f32, ndim=2), n: ti.i32,
            scale: ti.f32, shift: ti.template()):
    for i in range(n):
        out[i, 0] = x[i] * scale + shift
        out[i, 1] = ti.cast(idx[i] * 2 + n, ti.f32)


def _run(call, dev, shift):
    x = torch.arange(7, dtype=torch.float32, device=dev) * 0.25
    idx = torch.arange(7, dtype=torch.int64, device=dev) - 3
    out = torch.full((7, 2), -1.0, device=dev)
    call(x, idx, out, 7, 1.5, shift)
    return out.cpu()


def test_launch_matches_taichi_call(backend):
    dev = kernel_device()
    for shift in (2, 5):  # two template instances
        ref = _run(_affine, dev, shift)
        got = _run(lambda *a: kernel_launch.launch(_affine, *a), dev, shift)
        expected = torch.stack([torch.arange(7) * 0.25 * 1.5 + shift, (torch.arange(7) - 3) * 2.0 + 7], 1)
        assert torch.equal(ref, expected)
        assert torch.equal(got, expected)
    # the instances were cached for this Taichi program (the fast path ran)
    assert any(k is not None and isinstance(k, tuple) and k[0] is _affine for k in kernel_launch._INSTANCES)


def test_launch_falls_back_for_tensors_that_require_grad(backend):
    dev = kernel_device()
    x = (torch.arange(7, dtype=torch.float32, device=dev) * 0.25).requires_grad_()
    idx = torch.zeros(7, dtype=torch.int64, device=dev)
    out = torch.zeros(7, 2, device=dev)
    kernel_launch.launch(_affine, x, idx, out, 7, 2.0, 1)
    assert torch.equal(out[:, 0].cpu(), torch.arange(7) * 0.5 + 1)


def test_launch_refuses_arrays_taichi_cannot_index(backend, monkeypatch):
    monkeypatch.setattr(kernel_launch, "INT32_MAX", 6)
    dev = kernel_device()
    with pytest.raises(InputError, match="exceeds"):
        _run(lambda *a: kernel_launch.launch(_affine, *a), dev, 0)


def test_ops_use_the_fast_path(backend):
    """rasterize / interpolate / antialias instantiate their kernels through `launch` (no silent fallback)."""
    pos = torch.tensor([[[-0.8, -0.8, 0.0, 1.0], [0.8, -0.7, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]]])
    tris = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast = mofa_tk.rasterize(pos, tris, (16, 16))
    col = mofa_tk.interpolate(torch.eye(3)[None], rast, tris)
    mofa_tk.antialias(col, rast, pos, tris)
    launched = {k[0].__name__ for k in kernel_launch._INSTANCES if isinstance(k, tuple)}
    assert {"raster_pass", "interpolate_fwd",
            "antialias_fwd"} <= launched


def test_launch_survives_a_taichi_reinit_behind_its_back():
    """A user calling ti.init directly (not mofa_tk.init) gets a new Taichi program; launch recompiles."""
    mofa_tk.init("cpu")
    ref = _run(lambda *a: kernel_launch.launch(_affine, *a), "cpu", 2)
    ti.init(arch=ti.cpu, log_level=ti.WARN)
    try:
        assert torch.equal(_run(lambda *a: kernel_launch.launch(_affine, *a), "cpu", 2), ref)
    finally:
        mofa_tk.init("cpu", force=True)  # re-initialise the program ti.init replaced


def test_torch_single_threaded_only_on_small_thread_counts(monkeypatch):
    seen = []
    probe = kernel_launch.torch_single_threaded(lambda: seen.append(torch.get_num_threads()))
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        probe()
        assert seen[-1] == 1 and torch.get_num_threads() == 2  # restored
        monkeypatch.setattr(kernel_launch, "SINGLE_THREAD_TORCH_MAX", 1)
        probe()
        assert seen[-1] == 2
    finally:
        torch.set_num_threads(n)

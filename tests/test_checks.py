"""Input checks shared by every op (mofa_tk/checks.py): the fast finite check must agree with an exact one."""
import numpy as np
import pytest
import torch

from mofa_tk import InputError
from mofa_tk import checks as C


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_check_finite_agrees_with_an_elementwise_check(dtype):
    rng = np.random.default_rng(0)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.tensor(rng.normal(size=1000), dtype=dtype)
        idx = rng.choice(1000, size=3, replace=False)
        x[idx] = bad
        with pytest.raises(InputError, match=r"x: contains 3 NaN/Inf"):
            C.check_finite("x", x)
    # +Inf and -Inf together (their sum is NaN) and values whose sum overflows while every value is finite
    y = torch.zeros(10, dtype=dtype)
    y[1], y[2] = float("inf"), -float("inf")
    with pytest.raises(InputError, match="contains 2"):
        C.check_finite("y", y)
    big = torch.full((100,), torch.finfo(dtype).max / 2, dtype=dtype)
    assert not torch.isfinite(big.sum())
    C.check_finite("big", big)                      # every value is finite: no error
    C.check_finite("empty", torch.zeros(0, dtype=dtype))
    C.check_finite("ints", torch.arange(10))
    x = torch.randn(4, 3, dtype=torch.float32, requires_grad=True)
    C.check_finite("grad", x)                       # works on tensors that require grad


def test_tensors_on_a_device_the_kernels_cannot_use_are_refused(backend):
    """A meta tensor (and, with the cuda backend, a tensor on another GPU) names itself and both devices; CPU
    tensors are accepted on every backend."""
    import mofa_tk
    from mofa_tk import InputError

    tris = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    with pytest.raises(InputError, match=r"pos_clip: tensor on meta, but mofa_tk's kernels run on (cpu|cuda:0)"):
        mofa_tk.rasterize(torch.zeros(1, 3, 4, device="meta"), tris, (8, 8))
    with pytest.raises(InputError, match="verts: tensor on meta"):
        mofa_tk.vertex_normals(torch.zeros(1, 3, 3, device="meta"), tris)
    with pytest.raises(InputError, match="alpha: tensor on meta"):
        model = mofa_tk.builtin_model()
        mofa_tk.morph(model, torch.zeros(1, model.k_id, device="meta"))
    dec = mofa_tk.FaceDecoder(mofa_tk.builtin_model(), 32)
    with pytest.raises(InputError, match="code: tensor on meta"):
        dec(torch.zeros(1, dec.code.size, device="meta"))
    if backend == "cuda" and torch.cuda.device_count() > 1:
        with pytest.raises(InputError, match="CUDA_VISIBLE_DEVICES=1"):
            mofa_tk.rasterize(torch.zeros(1, 3, 4, device="cuda:1"), tris, (8, 8))
    assert mofa_tk.rasterize(torch.zeros(1, 3, 4), tris, (8, 8)).device.type == "cpu"


def test_a_decoder_forward_reads_the_host_once(backend):
    """The decoder's input checks ride on rasterize's one read of its status (checks.HOST_READS counts every read
    of a tensor value); a NaN in the code still raises naming the code."""
    import mofa_tk

    dec = mofa_tk.FaceDecoder(mofa_tk.builtin_model(), 32)
    code = dec.code.zeros(2)
    bg = torch.rand(2, 32, 32, 3)
    dec(code, bg)
    g = dec.geometry(code)
    s = dec.shading(g)
    for call in (lambda: dec(code, bg), lambda: dec.geometry(code), lambda: dec.shading(g),
                 lambda: dec.render(g, s, bg)):
        n = C.HOST_READS[0]
        call()
        assert C.HOST_READS[0] - n == 1                 # each stage alone reads once too
    bad = code.clone()
    bad[1, 10] = float("nan")
    with pytest.raises(mofa_tk.InputError, match="code: contains 1 NaN/Inf"):
        dec(bad)
    bg[0, 3, 4, 1] = float("inf")
    with pytest.raises(mofa_tk.InputError, match="background: contains 1 NaN/Inf"):
        dec(code, bg)
    assert C.HOST_READS[0] >= 0 and not C.in_deferred_scope()
    dec(code)                                          # nothing left pending from the failed calls


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_side_stream_and_sync_count():
    """On CUDA: an input produced on a side stream is seen by the kernels (the launch waits for that stream), the
    result equals the default stream's, and a decoder forward synchronises with the host at most once."""
    import warnings

    import mofa_tk

    if mofa_tk.init("cuda") != "cuda":
        pytest.skip("the cuda backend does not start")
    dec = mofa_tk.FaceDecoder(mofa_tk.builtin_model(), 64).cuda()
    code = dec.code.zeros(2).cuda()
    ref = dec(code).image
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        c2 = code * 1.0 + torch.zeros(code.shape, device="cuda")           # produced on the side stream
        torch.cuda._sleep(10_000_000)                                  # keep the side stream busy
        out = dec(c2).image
    torch.cuda.synchronize()
    assert torch.equal(out, ref)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            dec(code)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [f"{x.filename}:{x.lineno}" for x in w if "synchroniz" in str(x.message).lower()]
    assert len(syncs) <= 1, f"{len(syncs)} host synchronisations in one decoder forward, at: {syncs}"

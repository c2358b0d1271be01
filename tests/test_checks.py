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

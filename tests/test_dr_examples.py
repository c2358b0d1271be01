"""The `examples/dr_*.py` scripts (nvdiffrast-style examples over `mofa_tk.dr`) run end to end: a few iterations
each on the cpu backend, writing their picture; the cube fit's image error falls."""
import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name,extra", [("dr_cube", ["--iters", "60"]), ("dr_earth", ["--iters", "3", "--res", "48"]),
                                        ("dr_pose", ["--iters", "3", "--restarts", "1", "--res", "48"])])
def test_dr_example_runs(backend, name, extra, tmp_path, capsys):
    if backend != "cpu":
        pytest.skip("examples: run once, on the cpu backend")
    _load(name).main(extra + ["--out", str(tmp_path)])
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    out = capsys.readouterr().out
    if name == "dr_cube":
        mse = [float(line.split("image mse")[1].split()[0]) for line in out.splitlines() if "image mse" in line]
        assert mse[-1] < 0.5 * mse[0], mse

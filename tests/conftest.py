"""Shared fixtures: every op test runs once per available Taichi backend (cpu, vulkan, cuda).

Set MOFA_TK_TEST_BACKENDS=cpu (comma-separated) to restrict the list while developing.
Set MOFA_TK_REQUIRE_BACKENDS=cpu,vulkan to make a missing backend an error instead of a skip (CI does).
"""
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_WANTED = ("cpu", "vulkan", "cuda")


def _backends():
    import mofa_tk

    wanted = os.environ.get("MOFA_TK_TEST_BACKENDS")
    names = [n.strip() for n in wanted.split(",")] if wanted else list(_WANTED)
    found = mofa_tk.available_backends()
    required = [n.strip() for n in os.environ.get("MOFA_TK_REQUIRE_BACKENDS", "").split(",") if n.strip()]
    missing = [n for n in required if n not in found]
    if missing:
        raise pytest.UsageError(f"MOFA_TK_REQUIRE_BACKENDS: backend(s) {missing} cannot start on this machine "
                                f"(available: {found})")
    params = []
    for n in names:
        if n in found:
            params.append(pytest.param(n, id=n))
        else:
            params.append(pytest.param(n, id=n, marks=pytest.mark.skip(reason=f"backend {n} is not available on this machine")))
    return params


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _BACKEND_PARAMS, indirect=True, scope="session")


_BACKEND_PARAMS = _backends()


@pytest.fixture
def backend(request):
    """Name of the active Taichi backend for this test.

    Tests are grouped per backend (session-scoped parametrisation), and the backend is (re)activated for
    every test, so a test that switches backends cannot leak its choice into the next one.
    """
    import mofa_tk

    return mofa_tk.init(request.param)


@pytest.fixture(scope="session")
def shared_data():
    """Path of ../shared/data beside the checkout; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Per-model caches (the MediaPipe map of `face.mediapipe_map`) go to a folder of this test session, never
    to the user's ~/.cache."""
    old = os.environ.get("MOFA_TK_CACHE_DIR")
    os.environ["MOFA_TK_CACHE_DIR"] = str(tmp_path_factory.mktemp("mofa_tk_cache"))
    yield
    if old is None:
        os.environ.pop("MOFA_TK_CACHE_DIR", None)
    else:
        os.environ["MOFA_TK_CACHE_DIR"] = old

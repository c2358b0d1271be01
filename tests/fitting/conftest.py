"""Fixtures of the fitting tests: fitting is backend-independent torch code over the ops (tested on every backend
elsewhere), so these tests run on the cpu backend only (CI time)."""
import pytest

import mofa_tk


@pytest.fixture
def cpu(backend):
    if backend != "cpu":
        pytest.skip("fitting is backend-independent torch code over the ops (tested on every backend elsewhere); "
                    "run on cpu only to save CI time")
    return backend


@pytest.fixture(scope="module")
def model():
    return mofa_tk.builtin_model()

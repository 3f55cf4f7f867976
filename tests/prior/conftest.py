"""A synthetic multi-task run table whose best configuration moves with a meta-feature."""

from __future__ import annotations

import pytest

from autopipe.history.data import History
from tests.fixtures.histories import make_synthetic


@pytest.fixture(scope="session")
def synthetic() -> History:
    return make_synthetic()


@pytest.fixture(scope="session")
def make_table() -> object:
    """The :func:`make_synthetic` factory, for tests that need other modes or task counts."""
    return make_synthetic

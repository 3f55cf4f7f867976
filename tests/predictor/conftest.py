"""Synthetic run tables with learning curves named like AutoPipe's own reports
(:mod:`autopipe.metrics`), whose final objective is planted in the curve prefix or not at all."""

from __future__ import annotations

import pytest

from autopipe.history.data import History
from tests.fixtures.histories import make_curve_history


@pytest.fixture(scope="session")
def slope_history() -> History:
    return make_curve_history(planted="slope")


@pytest.fixture(scope="session")
def noise_history() -> History:
    return make_curve_history(planted="noise")

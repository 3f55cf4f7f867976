"""Fixtures of the searcher tests (helpers live in ``helpers``)."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import finite_space, synthetic_history


@pytest.fixture(scope="session")
def real_prior() -> Any:
    """A small real :class:`RankingPrior` (one ranker, 40 trees) of the finite space."""
    from autopipe.prior.ranker import RankerConfig, RankingPrior

    return RankingPrior.fit(
        synthetic_history(finite_space()), RankerConfig(n_models=1, n_estimators=40, n_jobs=1)
    )

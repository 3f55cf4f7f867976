"""Cost-aware search (``search.cost_weight``): with a prior that predicts costs, AutoPipe's
acquisition and warm start trade objective for cost; without a cost model the weight is ignored
and says so."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from autopipe.errors import SpecError
from autopipe.search.autopipe import AutoPipeCore
from autopipe.space import Param, Space

from .helpers import FakePrior, mixed_space

GRID = tuple(float(v) for v in np.linspace(0.0, 1.0, 25))
BUDGET = 20
COST_SLOPE = 3.0  # log cost grows by 3 from a = 0 to a = 1 (a 20x spread)


def space() -> Space:
    return Space([Param("a", "float", values=GRID), Param("b", "float", values=GRID)])


def f(a: float, b: float) -> float:
    """Best at (0.75, 0.7); the costly direction (large a) is also the better one up to 0.75."""
    return -4.0 * ((a - 0.75) ** 2 + (b - 0.7) ** 2)


def cost(a: float) -> float:
    return float(np.exp(COST_SLOPE * a))


class CostPrior:
    """The true objective as prior, and the true relative log cost (centred anywhere: the
    candidate set centres it on its median)."""

    def score_features(self, meta: object, X: np.ndarray) -> np.ndarray:
        g = -4.0 * ((X[:, 0] - 0.75) ** 2 + (X[:, 1] - 0.7) ** 2)
        return (g - g.mean()) / g.std()

    def log_cost_features(self, meta: object, X: np.ndarray) -> np.ndarray:
        return COST_SLOPE * X[:, 0] + 1.0


def run(core: AutoPipeCore) -> tuple[float, float]:
    """Spend the budget sequentially: ``(total cost, regret of the best value found)``."""
    total, best = 0.0, -np.inf
    for i in range(BUDGET):
        cfg = core.propose(str(i))
        assert cfg is not None
        y = f(cfg["a"], cfg["b"])
        core.observe(str(i), y)
        total += cost(cfg["a"])
        best = max(best, y)
    return total, -best


@pytest.mark.parametrize("seed", [0, 1])
def test_cost_weight_trades_objective_for_cost(seed: int) -> None:
    got = {
        w: run(AutoPipeCore(space(), seed, prior=CostPrior(), budget=BUDGET, cost_weight=w))
        for w in (0.0, 1.0, 2.0, 4.0)
    }
    spent = [got[w][0] for w in sorted(got)]
    # each larger weight spends less on the same search
    assert all(a > b for a, b in zip(spent[:-1], spent[1:], strict=True)), got
    # up to a weight of 2 the optimum is still found (the prior knows it), at <= 80 % of the cost
    assert got[2.0][0] < 0.8 * got[0.0][0], got
    assert max(got[w][1] for w in (0.0, 1.0, 2.0)) <= 0.02, got
    # a weight of 4 buys a far cheaper search (<= 50 %) with a real loss: the trade is the user's
    assert got[4.0][0] < 0.5 * got[0.0][0] and got[4.0][1] > 0.03, got


def test_candidate_costs_are_centred_on_the_median(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="autopipe.search.autopipe"):
        core = AutoPipeCore(space(), 0, prior=CostPrior(), budget=BUDGET, cost_weight=0.5)
    # the job's log says the search is cost-aware and how far the predicted costs spread
    # (the 5th and 95th percentiles of a over the grid are 1/24 and 23/24: exp(3 x 22/24) = 15.6x)
    assert "cost-aware (search.options.cost_weight 0.5)" in caplog.text
    assert "spreads the candidates' costs 15.6x" in caplog.text
    lc = core.cands.log_cost
    assert core.cands.has_cost and core.cost_weight == 0.5
    assert abs(float(np.median(lc))) < 1e-12  # the +1 offset of CostPrior is gone
    np.testing.assert_allclose(lc, COST_SLOPE * (core.cands.X[:, 0] - 0.5), atol=1e-12)
    # the penalty is softplus(lc): below the median cost nearly free, above it the log cost
    pen = core._cost_penalty()
    assert pen.min() > 0 and pen[lc <= -1.0].max() < 0.32
    np.testing.assert_allclose(pen[lc >= 1.5], lc[lc >= 1.5], atol=0.21)


def test_pool_candidates_and_perturbations_get_costs() -> None:
    class PoolCostPrior(FakePrior):
        def log_cost_features(self, meta: object, X: np.ndarray) -> np.ndarray:
            return X[:, 1]  # more layers cost more

    core = AutoPipeCore(mixed_space(), 0, prior=PoolCostPrior(), budget=10, cost_weight=0.2)
    assert not core.cands.grid and np.ptp(core.cands.log_cost) > 0
    for i in range(8):  # past the warm start: perturbation blocks of the incumbents
        cfg = core.propose(str(i))
        assert cfg is not None
        core.observe(str(i), -float(cfg["layers"]) + (1.0 if cfg["opt"] == "adam" else 0.0))
    n_base = len(core.cands) - len(core.cands.block)
    assert core.cands.block and len(core.cands.log_cost) == len(core.cands)
    # the block's costs come from the same model, centred on the base pool's median
    np.testing.assert_allclose(
        core.cands.log_cost[n_base:],
        core.cands.X[n_base:, 1] - core.cands._lc_center,
        atol=1e-12,
    )


def test_without_a_cost_model_the_weight_is_ignored_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="autopipe.search.autopipe"):
        core = AutoPipeCore(space(), 0, prior=FakePrior(), budget=BUDGET, cost_weight=0.5)
    assert core.cost_weight == 0.0 and not core.cands.has_cost
    assert "search.options.cost_weight 0.5 ignored" in caplog.text
    # it proposes exactly what the cost-blind searcher does
    plain = AutoPipeCore(space(), 0, prior=FakePrior(), budget=BUDGET)
    for i in range(6):
        a, b = core.propose(str(i)), plain.propose(str(i))
        assert a == b
        core.observe(str(i), f(a["a"], a["b"]))
        plain.observe(str(i), f(b["a"], b["b"]))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_cost_weight_is_a_one_line_error(bad: float) -> None:
    with pytest.raises(SpecError, match="search.options.cost_weight must be >= 0"):
        AutoPipeCore(space(), 0, prior=CostPrior(), cost_weight=bad)

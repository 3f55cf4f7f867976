"""The shortlist a job promotes to full fidelity at its end (``budget.promote``): distinct
observed configurations, the model's recommendation first, then the best observed values."""

from __future__ import annotations

import pytest

from autopipe.search.autopipe import AutoPipeCore
from autopipe.search.simple import RandomCore
from tests.search.helpers import finite_space


def _run(core, values: list[float | None]) -> list[dict]:
    cfgs = []
    for i, v in enumerate(values):
        cfg = core.propose(str(i))
        core.observe(str(i), v, 0.3)
        cfgs.append(cfg)
    return cfgs


def test_plain_core_shortlists_by_observed_value() -> None:
    core = RandomCore(finite_space(), seed=0)
    cfgs = _run(core, [0.2, None, 0.9, 0.5, float("nan")])
    # best observed first; failed (None, NaN) trials are never shortlisted
    assert core.shortlist(3) == [cfgs[2], cfgs[3], cfgs[0]]
    assert core.shortlist(10) == [cfgs[2], cfgs[3], cfgs[0]]  # no more than were scored
    with pytest.raises(ValueError, match="k must be >= 1, but got 0"):
        core.shortlist(0)


def test_model_core_puts_its_recommendation_first() -> None:
    core = AutoPipeCore(finite_space(), seed=0, budget=10)
    assert core.shortlist(3) == []  # nothing observed yet
    cfgs = _run(core, [0.1, 0.4, 0.3, 0.8, 0.2, 0.6])
    short = core.shortlist(3)
    rec, _ = core.recommend()
    keys = [core.space.config_key(c) for c in short]
    # the posterior-mean recommendation leads, then the best observed values fill the list
    assert short[0] == rec and len(set(keys)) == 3
    rest = [c for c in [cfgs[3], cfgs[5], cfgs[1], cfgs[2]] if c != rec][:2]
    assert short[1:] == rest

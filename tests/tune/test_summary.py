"""The job summary `autopipe tune` prints: what the prior suggested, what the search found, what
it cost."""

from __future__ import annotations

from autopipe.search import get_core_factory
from autopipe.tune.summary import JobResult, format_summary, prior_top
from tests.search.helpers import FakePrior, finite_space


def test_prior_top_is_the_candidate_the_prior_scores_highest() -> None:
    space = finite_space()
    core = get_core_factory("autopipe")(space, seed=0, prior=FakePrior(), max_fit_iter=5)
    top = prior_top(core)
    assert top is not None
    u = space.to_unit(top)[0]
    others = [abs(space.to_unit(c)[0] - 0.6) for c in space.iter_grid()]
    assert abs(u - 0.6) == min(others)  # FakePrior prefers the lr closest to 0.6 on the unit scale
    # Without a prior there is nothing to report.
    assert prior_top(get_core_factory("autopipe")(space, seed=0, max_fit_iter=5)) is None
    assert prior_top(get_core_factory("random")(space, seed=0)) is None


def test_summary_prints_prior_suggestion_best_and_cost() -> None:
    res = JobResult("demo", "1", "r", "sqlite:///x.db", {"sft.lr": 0.002}, 0.61, "t1")
    res.statuses = {"t1": "completed", "t2": "early-stopped"}
    res.total_cost_s = 42.0
    res.prior_top = {"sft.lr": 0.0012345678, "sft.steps": 120}
    text = format_summary(res)
    assert "completed 1" in text and "early-stopped 1" in text
    assert "cost 42.0 trial-seconds" in text
    assert (
        "prior's top-ranked configuration (before any trial): sft.lr=0.001235, sft.steps=120"
        in text
    )
    assert "best objective = 0.6100 (trial t1)" in text


def test_summary_says_where_the_prior_and_predictor_came_from() -> None:
    res = JobResult("demo", "1", "r", "sqlite:///x.db", None, None, None)
    res.transfer = ["prior: fitted on hist (10 runs, 2 tasks) in 0.1s", "predictor: loaded from p"]
    lines = format_summary(res).splitlines()
    # one line per model, as load_transfer wrote them
    assert "prior: fitted on hist (10 runs, 2 tasks) in 0.1s" in lines
    assert "predictor: loaded from p" in lines

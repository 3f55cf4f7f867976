"""The fixed-design core (search.algorithm: design): proposes its list in order, then ends."""

from __future__ import annotations

import pytest
from ray.tune.search import Searcher

from autopipe import metrics as M
from autopipe.errors import SpaceError, SpecError
from autopipe.search import get_core_factory
from autopipe.tune.searcher import CoreSearcher

from .helpers import finite_space


def test_design_proposes_its_list_in_order_then_finishes() -> None:
    space = finite_space()
    plan = [
        {"lr": 1e-3, "width": 32, "opt": "adam"},
        {"lr": 1e-2, "width": 256, "opt": "sgd", "extra": "ignored"},
    ]
    s = CoreSearcher(get_core_factory("design")(space, seed=5, configs=plan))
    got = [s.suggest("a"), s.suggest("b")]
    assert got[0] == plan[0]  # first entry first
    assert got[1] == {"lr": 1e-2, "width": 256, "opt": "sgd"}  # keys outside the space dropped
    s.on_trial_complete("a", {M.OBJECTIVE: 1.0})
    s.on_trial_complete("b", {M.OBJECTIVE: 2.0})
    assert s.suggest("c") == Searcher.FINISHED  # the list is the whole search


@pytest.mark.parametrize(
    ("configs", "err", "needle"),
    [
        (None, SpecError, "search.options.configs must be a non-empty list"),
        ([], SpecError, "search.options.configs must be a non-empty list"),
        ([{"lr": 1e-3, "width": 32}], SpaceError, "search.options.configs[0].opt is missing"),
        (
            [{"lr": 1e-3, "width": 32, "opt": "adam"}, {"lr": 1e-3, "width": 32, "opt": "rms"}],
            SpaceError,
            "search.options.configs[1].opt must be one of",
        ),
    ],
)
def test_bad_design_is_a_one_line_error(configs, err, needle) -> None:
    with pytest.raises(err) as e:
        get_core_factory("design")(finite_space(), seed=0, configs=configs)
    assert needle in str(e.value)  # names the field and what was expected
    assert "\n" not in str(e.value)  # one line

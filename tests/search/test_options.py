"""Each core declares the ``search.options`` it takes (``OPTIONS``) and checks them itself: the
declaration matches the constructor, and the registry's checks need no prior and build nothing."""

from __future__ import annotations

import inspect

import pytest

from autopipe import search
from autopipe.errors import SpecError
from tests.search.helpers import finite_space

NOT_OPTIONS = {"self", "space", "seed", "prior", "meta"}  # given by the job, not by options


@pytest.mark.parametrize("name", search.SEARCHERS)
def test_declared_options_are_the_constructors_keywords(name: str) -> None:
    factory = search.get_core_factory(name)
    params = inspect.signature(factory).parameters
    keywords = {
        n
        for n, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in NOT_OPTIONS
    }
    assert set(factory.OPTIONS) == keywords
    # a core that uses the prior takes it (and the meta-features) as keywords
    assert factory.USES_PRIOR == ({"prior", "meta"} <= set(params))


def test_unknown_options_list_the_valid_ones() -> None:
    with pytest.raises(SpecError) as e:
        search.check_options("gp-ei", {"warmstart": 3})
    assert str(e.value) == (
        "search.options of 'gp-ei' must be among ['budget', 'candidates', 'max_fit_iter', "
        "'warm_start'], but got unknown ['warmstart']"
    )


def test_null_is_allowed_where_declared_and_ranges_are_checked() -> None:
    search.check_options("autopipe", {"budget": None, "beta_end": 0.5})  # budget: "int?"
    with pytest.raises(SpecError, match=r"^search\.options\.beta_end must be > 0, but got 0"):
        search.check_options("autopipe", {"beta_end": 0.0})


def test_build_core_gives_the_budget_to_cores_that_take_one() -> None:
    space = finite_space()
    core = search.build_core("gp-ei", space, seed=1, budget=7)
    assert core.budget == 7
    core = search.build_core("gp-ei", space, seed=1, options={"budget": 3}, budget=7)
    assert core.budget == 3  # an explicit option wins over the job's max_trials
    assert search.build_core("random", space, budget=7).seed == 0  # random takes no budget

"""`search.options.candidates`: the searchers propose only among a given list of configurations
(what a replayed table ran, or a user's shortlist), on a continuous space."""

from __future__ import annotations

import numpy as np
import pytest

from autopipe.search import get_core_factory
from autopipe.space import SpaceError
from tests.search.helpers import FakePrior, mixed_space


def _shortlist(n: int = 12) -> list[dict]:
    return mixed_space().sample_many(n, np.random.default_rng(3))


@pytest.mark.parametrize("algo", ["random", "gp-ei", "autopipe"])
def test_proposals_stay_on_the_list_until_it_is_exhausted(algo: str) -> None:
    space, short = mixed_space(), _shortlist()
    keys = {space.config_key(c) for c in short}
    opts = {"prior": FakePrior(), "max_fit_iter": 5} if algo == "autopipe" else {}
    if algo == "gp-ei":
        opts = {"max_fit_iter": 5}
    core = get_core_factory(algo)(space, seed=0, candidates=short, **opts)
    got = []
    for i in range(len(keys) + 2):
        cfg = core.propose(f"t{i}")
        if cfg is None:
            break
        got.append(space.config_key(cfg))
        core.observe(f"t{i}", float(-((np.log10(cfg["lr"]) + 2) ** 2)))
    # every proposal is one of the listed configurations, none twice, and the list runs out
    assert set(got) == keys and len(got) == len(keys)


def _warm_start_and_prior_top(
    configs: list[dict], seed: int, n_top: int
) -> tuple[list[tuple], set[tuple]]:
    """AutoPipe's 4 warm-start proposals over ``configs`` (fake prior) and the prior's top
    ``n_top`` of them, as configuration keys."""
    space = mixed_space()
    core = get_core_factory("autopipe")(
        space, seed=seed, candidates=configs, prior=FakePrior(), warm_start=4, max_fit_iter=5
    )
    s = FakePrior().score_features(None, space.encode(configs))
    top = {space.config_key(configs[i]) for i in np.argsort(-s)[:n_top]}
    return [space.config_key(core.propose(f"w{i}")) for i in range(4)], top


def test_autopipe_warm_start_comes_from_the_priors_top_of_a_small_list() -> None:
    warm, top_quarter = _warm_start_and_prior_top(_shortlist(40), seed=0, n_top=10)
    # diverse, but among the prior's top quarter of the 40, not spread over all of them
    assert set(warm) <= top_quarter and len(set(warm)) == 4


def test_a_bad_candidate_is_named() -> None:
    bad = [*_shortlist(2), {"lr": 5.0, "layers": 2, "opt": "adam"}]
    with pytest.raises(SpaceError, match=r"^search.options.candidates\[2\].lr must be in"):
        get_core_factory("autopipe")(mixed_space(), seed=0, candidates=bad)
    with pytest.raises(SpaceError, match=r"^search.options.candidates must list at least one"):
        get_core_factory("random")(mixed_space(), seed=0, candidates=[])


def test_autopipe_warm_start_stays_in_the_priors_top_10k_of_a_large_list() -> None:
    # 6,000 candidates: the design is drawn from the prior's top 10 x warm_start (40), not from
    # a share of the list (1 % would be 60), so a large grid does not dilute the warm start
    big = mixed_space().sample_many(6000, np.random.default_rng(5))
    warm, top40 = _warm_start_and_prior_top(big, seed=1, n_top=40)
    assert set(warm) <= top40 and len(set(warm)) == 4

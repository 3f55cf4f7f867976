"""The contract every searcher the project ships honours through the Ray Tune adapter: lifecycle,
max concurrency, min/max modes, NaN/inf and error trials, results after completion, save/restore
mid-search, seeding, distinct concurrent suggestions, exhaustion of finite spaces. No ray.init."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ray.tune.search import Searcher

from autopipe import metrics as M
from autopipe.search import SEARCHERS, get_core_factory
from autopipe.space import Space
from autopipe.tune.searcher import CoreSearcher

from .helpers import FakePrior, finite_space, mixed_space, objective

# Small fits: the contract is about bookkeeping, not about the quality of the GP.
FAST = {"max_fit_iter": 10}

# (id, registry name, space, needs the real prior, extra options)
VARIANTS: list[tuple[str, str, Callable[[], Space], bool, dict[str, Any]]] = [
    ("random-finite", "random", finite_space, False, {}),
    ("random-mixed", "random", mixed_space, False, {}),
    ("grid", "grid", finite_space, False, {}),
    ("autopipe-prior-finite", "autopipe", finite_space, True, {**FAST, "budget": 20}),
    ("autopipe-fakeprior-mixed", "autopipe", mixed_space, False, {**FAST, "prior": FakePrior()}),
    ("autopipe-noprior-finite", "autopipe", finite_space, False, {**FAST, "warm_start": 3}),
    ("gp-ei-finite", "gp-ei", finite_space, False, {**FAST, "warm_start": 3}),
    ("gp-ei-mixed", "gp-ei", mixed_space, False, FAST),
    # A fixed list (the history generator's plan): the 80 grid points in a scrambled order.
    ("design", "design", finite_space, False, {"configs": "grid-scrambled"}),
]

# A fixed design ignores the seed and ends with its list, not with the space.
NOT_FOR_DESIGN = "a fixed design proposes its list whatever the seed (tests/search/test_design.py)"


def test_every_registered_searcher_is_covered() -> None:
    # A new registry entry must join the contract suite.
    assert set(SEARCHERS) == {name for _, name, *_ in VARIANTS}


@pytest.fixture(params=VARIANTS, ids=[v[0] for v in VARIANTS])
def make(request: pytest.FixtureRequest) -> Callable[..., CoreSearcher]:
    _, name, space_fn, needs_prior, options = request.param
    if needs_prior:
        options = {
            **options,
            "prior": request.getfixturevalue("real_prior"),
            "meta": {"scale": 0.7},
        }

    if options.get("configs") == "grid-scrambled":
        grid = list(space_fn().iter_grid())
        options = {"configs": [grid[(7 * i) % len(grid)] for i in range(len(grid))]}

    def build(seed: int = 0, mode: str = "max") -> CoreSearcher:
        core = get_core_factory(name)(space_fn(), seed=seed, **options)
        searcher = CoreSearcher(core, metric=M.OBJECTIVE, mode=mode)
        searcher.set_search_properties(M.OBJECTIVE, mode, {})
        return searcher

    return build


def _run(
    s: CoreSearcher, start: int, n: int, values: Callable[[int, dict], float] | None = None
) -> list[dict]:
    """Suggest and complete ``n`` trials one after the other; returns the configurations."""
    out = []
    for i in range(start, start + n):
        cfg = s.suggest(f"t{i}")
        assert isinstance(cfg, dict)
        v = values(i, cfg) if values else objective(s.core.space, cfg)
        s.on_trial_result(f"t{i}", {M.OBJECTIVE: v})
        s.on_trial_complete(f"t{i}", {M.OBJECTIVE: v})
        out.append(cfg)
    return out


def test_lifecycle_and_max_concurrency(make: Callable[..., CoreSearcher]) -> None:
    s = make(mode="min")
    s.set_max_concurrency(2)
    a, b = s.suggest("a"), s.suggest("b")
    assert isinstance(a, dict) and isinstance(b, dict)
    assert s.suggest("c") is None  # the concurrency limit holds the third trial back
    s.core.space.validate(a)  # suggestions are valid configurations of the space
    s.on_trial_complete("a", {M.OBJECTIVE: 0.25})
    assert s.core.observed[-1][2] == -0.25  # mode "min" reaches the core flipped to maximization
    assert isinstance(s.suggest("c"), dict)
    s.on_trial_complete("b", {M.OBJECTIVE: 0.5})
    s.on_trial_complete("c", {M.OBJECTIVE: 0.75})
    _run(s, 0, 6)
    assert len(s.core.observed) == 9  # every completed trial was observed exactly once
    assert not s.core.pending


def test_nan_inf_and_error_trials_are_failures_never_reproposed(
    make: Callable[..., CoreSearcher],
) -> None:
    s = make()
    failed = []
    for i, bad in enumerate([math.nan, math.inf, -math.inf, None, "error"]):
        cfg = s.suggest(f"f{i}")
        assert isinstance(cfg, dict)
        failed.append(s.core.space.config_key(cfg))
        if bad == "error":
            s.on_trial_complete(f"f{i}", None, error=True)
        elif bad is None:
            s.on_trial_complete(f"f{i}", {M.OBJECTIVE: 0.0, M.FAILED: 1.0})
        else:
            s.on_trial_complete(f"f{i}", {M.OBJECTIVE: bad})
    assert [o[2] for o in s.core.observed] == [None] * 5  # all five recorded as failed
    later = _run(s, 0, 10)
    # A failed configuration is not proposed again.
    assert not {s.core.space.config_key(c) for c in later} & set(failed)


def test_results_after_completion_are_ignored(make: Callable[..., CoreSearcher]) -> None:
    s = make()
    _run(s, 0, 4)
    n = len(s.core.observed)
    s.on_trial_result("t1", {M.OBJECTIVE: 99.0})
    s.on_trial_complete("t1", {M.OBJECTIVE: 99.0})
    s.on_trial_complete("never-suggested", {M.OBJECTIVE: 1.0})
    assert len(s.core.observed) == n  # neither a second completion nor an unknown trial counts
    assert 99.0 not in [o[2] for o in s.core.observed]


def test_save_restore_mid_search_continues_identically(
    make: Callable[..., CoreSearcher], tmp_path: Path
) -> None:
    s = make(seed=3)
    _run(s, 0, 7)
    p1, p2 = s.suggest("p1"), s.suggest("p2")  # two running trials at checkpoint time
    assert isinstance(p1, dict) and isinstance(p2, dict)
    path = str(tmp_path / "searcher.json")
    s.save(path)
    r = make(seed=3)
    r.restore(path)
    assert r.core.pending == s.core.pending  # running trials survive the round trip
    for searcher in (s, r):
        searcher.on_trial_complete("p1", {M.OBJECTIVE: objective(searcher.core.space, p1)})
    nxt_s = [s.suggest("n0"), s.suggest("n1")]
    nxt_r = [r.suggest("n0"), r.suggest("n1")]
    assert nxt_s == nxt_r  # the restored searcher proposes exactly what the original does
    for searcher in (s, r):
        searcher.on_trial_complete("p2", {M.OBJECTIVE: objective(searcher.core.space, p2)})
    assert _run(s, 20, 3) == _run(r, 20, 3)


def test_same_seed_same_suggestions_other_seed_different(make: Callable[..., CoreSearcher]) -> None:
    a, b, c = make(seed=1), make(seed=1), make(seed=2)
    if a.core.name == "design":
        pytest.skip(NOT_FOR_DESIGN)
    ra, rb, rc = _run(a, 0, 8), _run(b, 0, 8), _run(c, 0, 8)
    assert ra == rb  # same seed, same observations: same suggestions
    assert ra != rc  # another seed explores differently


def test_concurrent_suggestions_differ(make: Callable[..., CoreSearcher]) -> None:
    s = make()
    _run(s, 0, 6)
    running = [s.suggest(f"c{i}") for i in range(5)]
    keys = {s.core.space.config_key(c) for c in running if isinstance(c, dict)}
    assert len(keys) == 5  # five running trials, five different configurations


def test_finite_space_is_exhausted_then_finished(make: Callable[..., CoreSearcher]) -> None:
    s = make()
    if not s.core.space.is_finite:
        pytest.skip("continuous spaces are never exhausted")
    if s.core.name == "design":
        pytest.skip(NOT_FOR_DESIGN)
    small = Space(s.core.space.params[1:])  # width x opt: 10 configurations
    core = type(s.core)(small, seed=0, **({"max_fit_iter": 5} if hasattr(s.core, "hyper") else {}))
    t = CoreSearcher(core)
    seen = []
    for i in range(10):
        cfg = t.suggest(f"e{i}")
        assert isinstance(cfg, dict)
        seen.append(small.config_key(cfg))
        t.on_trial_complete(f"e{i}", {M.OBJECTIVE: float(i % 3)})
    assert len(set(seen)) == 10  # each configuration once
    assert t.suggest("e10") == Searcher.FINISHED

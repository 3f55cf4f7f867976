"""Searchers: Ray-free cores that propose configurations. :mod:`.base` holds the contract every
core follows, :mod:`.simple` the model-free cores (random, grid, design), :mod:`.model_based`
the GP lifecycle that :mod:`.autopipe` (prior + residual GP) and :mod:`.gp_ei` (plain GP-BO)
share, :mod:`.gp` the GP math and :mod:`.candidates` the candidate sets. The Ray Tune adapter
around a core lives in :mod:`autopipe.tune.searcher`.

``SEARCHERS`` lists the names a job spec may use; each core declares the ``search.options`` it
takes (``OPTIONS``) and checks them itself. Importing this package imports neither Ray, torch
nor BoTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

# name -> "module:factory"; the factory takes (space, seed, **options) and returns a core.
_REGISTRY: dict[str, str] = {
    "random": "autopipe.search.simple:RandomCore",
    "grid": "autopipe.search.simple:GridCore",
    # A fixed list of configurations, in order; options: configs.
    "design": "autopipe.search.simple:DesignCore",
    # Prior warm start + residual GP-UCB; options: budget, warm_start, guard, beta_*, ...
    "autopipe": "autopipe.search.autopipe:AutoPipeCore",
    # Baseline: plain GP + log EI, no prior; options: budget, warm_start, max_fit_iter.
    "gp-ei": "autopipe.search.gp_ei:GPEICore",
}

SEARCHERS: tuple[str, ...] = tuple(_REGISTRY)


def get_core_factory(name: str) -> Callable[..., Any]:
    if name not in _REGISTRY:
        from autopipe.errors import SpecError

        raise SpecError(f"search.algorithm must be one of {sorted(_REGISTRY)}, but got {name!r}")
    mod, attr = _REGISTRY[name].split(":")
    return getattr(import_module(mod), attr)


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """One line (:class:`~autopipe.errors.SpecError`) for ``search.options`` that the core named
    ``name`` does not take, of the wrong type or out of range; builds nothing."""
    get_core_factory(name).check_options(options)


def build_core(
    name: str,
    space: Any,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    budget: int | None = None,
    prior: Any = None,
    meta: Mapping[str, float] | None = None,
) -> Any:
    """The core ``name`` over ``space``: ``options`` checked first; ``budget`` (trials) goes to
    cores that take one unless the options set it; ``prior`` and ``meta`` to cores that use a
    prior (``USES_PRIOR``)."""
    factory = get_core_factory(name)
    options = dict(options or {})
    factory.check_options(options)
    kwargs: dict[str, Any] = {}
    if budget is not None and "budget" in factory.OPTIONS:
        kwargs["budget"] = budget
    if factory.USES_PRIOR:
        kwargs.update(prior=prior, meta=meta)
    kwargs.update(options)
    return factory(space, seed=seed, **kwargs)


def is_cheap(name: str) -> bool:
    """Whether the core ``name`` is cheap to build without a prior (see ``ProposalCore.CHEAP``)."""
    return bool(get_core_factory(name).CHEAP)

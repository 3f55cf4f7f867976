"""Searchers: Ray-free cores that propose configurations (``core``), and the thin Ray Tune
adapter around them (``ray_adapter``). ``SEARCHERS`` maps the names a job spec may use to lazy
factories; importing this package imports neither Ray nor BoTorch."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

# name -> "module:factory"; the factory takes (space, seed, **options) and returns a core.
_REGISTRY: dict[str, str] = {
    "random": "autopipe.search.core:RandomCore",
    "grid": "autopipe.search.core:GridCore",
    # A fixed list of configurations, in order; options: configs.
    "design": "autopipe.search.core:DesignCore",
    # Prior warm start + residual GP-UCB; options: prior, meta, budget, warm_start, guard, ...
    "autopipe": "autopipe.search.autopipe_core:AutoPipeCore",
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

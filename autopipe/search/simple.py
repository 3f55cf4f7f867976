"""The model-free cores: uniform random sampling, the full grid of a finite space, and a fixed
design (a list of configurations, in order). Each needs no prior, no GP and no torch."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from autopipe.errors import SpecError
from autopipe.search.base import ProposalCore
from autopipe.space import Space, SpaceError


class RandomCore(ProposalCore):
    """Uniform sampling on each parameter's natural scale; avoids repeating a configuration
    while the space has unseen ones (finite spaces end when exhausted)."""

    name = "random"
    OPTIONS = {"candidates": "configs"}
    CHEAP = True

    def __init__(
        self,
        space: Space,
        seed: int = 0,
        candidates: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(space, seed)
        self._seen: set[tuple] = set()
        self._size = space.grid_size() if space.is_finite and len(space) <= 12 else math.inf
        # ``candidates``: sample uniformly among these configurations only
        self._cands = (
            None
            if candidates is None
            else [
                space.validate(c, f"search.options.candidates[{i}]")
                for i, c in enumerate(candidates)
            ]
        )
        if self._cands is not None:
            if not self._cands:
                raise SpaceError("search.options.candidates must list at least one configuration")
            self._size = len({space.config_key(c) for c in self._cands})

    def _sample(self) -> dict[str, Any]:
        if self._cands is None:
            return self.space.sample(self.rng)
        return dict(self._cands[int(self.rng.integers(len(self._cands)))])

    def _propose(self) -> dict[str, Any] | None:
        if len(self._seen) >= self._size:
            return None
        cfg = self._sample()
        for _ in range(200):
            if self.space.config_key(cfg) not in self._seen:
                break
            cfg = self._sample()
        self._seen.add(self.space.config_key(cfg))
        return cfg

    def _extra_state(self) -> dict[str, Any]:
        return {"seen": [list(k) for k in self._seen]}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self._seen = {tuple(tuple(kv) for kv in k) for k in extra.get("seen", [])}


class GridCore(ProposalCore):
    """Every configuration of a finite space, in a seeded random order."""

    name = "grid"
    CHEAP = True

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        if not space.is_finite:
            from autopipe.errors import SpaceError

            raise SpaceError(
                "search.algorithm 'grid' needs a finite space (values/choices only), but the "
                "space has a continuous range"
            )
        self._grid = list(space.iter_grid())
        self._order = [int(i) for i in self.rng.permutation(len(self._grid))]
        self._next = 0

    def _propose(self) -> dict[str, Any] | None:
        if self._next >= len(self._order):
            return None
        cfg = self._grid[self._order[self._next]]
        self._next += 1
        return dict(cfg)

    def _extra_state(self) -> dict[str, Any]:
        return {"next": self._next, "order": self._order}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self._next = int(extra["next"])
        self._order = [int(i) for i in extra["order"]]


class DesignCore(ProposalCore):
    """A fixed list of configurations (``search.options.configs``), proposed in order: an
    experimental design, a re-run of chosen configurations, or the history generator's plan.
    Every configuration is checked against the space up front."""

    name = "design"
    OPTIONS = {"configs": "configs"}
    CHEAP = True

    def __init__(self, space: Space, seed: int = 0, configs: list[dict[str, Any]] | None = None):
        super().__init__(space, seed)
        if not configs or not isinstance(configs, list):
            raise SpecError(
                "search.options.configs must be a non-empty list of configurations for "
                f"search.algorithm 'design', but got {configs!r}"
            )
        for i, c in enumerate(configs):
            if not isinstance(c, dict):
                raise SpecError(
                    f"search.options.configs[{i}] must be a mapping of parameter -> value, "
                    f"but got {c!r}"
                )
        self._configs = [
            space.validate(c, where=f"search.options.configs[{i}]") for i, c in enumerate(configs)
        ]
        self._next = 0

    def _propose(self) -> dict[str, Any] | None:
        if self._next >= len(self._configs):
            return None
        cfg = self._configs[self._next]
        self._next += 1
        return dict(cfg)

    def _extra_state(self) -> dict[str, Any]:
        return {"next": self._next}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self._next = int(extra["next"])

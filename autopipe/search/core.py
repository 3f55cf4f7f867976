"""Ray-free proposal cores. Contract (who calls what, in order):

1. ``propose(trial_id)`` is called when a trial slot is free; it returns a configuration (a dict
   valid in the space) or ``None`` when the core has nothing more to propose (finite spaces).
2. ``observe(trial_id, value, noise_var=None)`` is called at most once per proposed trial with its
   final objective in the core's maximisation sense (the adapter flips ``min``); ``value`` is
   ``None`` for a trial that failed. Results after completion are ignored.
3. ``state()`` / ``from_state()`` round-trip everything needed to continue identically.

Cores own their ``np.random.Generator``; nothing seeds global state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autopipe.space import Space, SpaceError

STATE_VERSION = 1


class ProposalCore:
    """Base class holding the bookkeeping every core shares."""

    name = "base"

    def __init__(self, space: Space, seed: int = 0) -> None:
        self.space = space
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.pending: dict[str, dict[str, Any]] = {}
        self.observed: list[tuple[str, dict[str, Any], float | None, float | None]] = []

    # ------------------------------------------------------------------ contract
    def propose(self, trial_id: str) -> dict[str, Any] | None:
        cfg = self._propose()
        if cfg is not None:
            self.pending[trial_id] = cfg
        return cfg

    def observe(self, trial_id: str, value: float | None, noise_var: float | None = None) -> None:
        cfg = self.pending.pop(trial_id, None)
        if cfg is None:
            return  # unknown or already observed: results after completion are ignored
        if value is not None and not math.isfinite(value):
            value = None
        self.observed.append((trial_id, cfg, value, noise_var))

    def best(self) -> tuple[dict[str, Any], float] | None:
        ok = [(c, v) for _, c, v, _ in self.observed if v is not None]
        return max(ok, key=lambda t: t[1]) if ok else None

    def shortlist(self, k: int) -> list[dict[str, Any]]:
        """Up to ``k`` distinct observed configurations to run to full fidelity at the end of a
        job whose scores are early proxies, best first: here by observed value (ties: the
        earlier observation first)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, but got {k}")
        ok = sorted(
            ((v, -i, c) for i, (_, c, v, _) in enumerate(self.observed) if v is not None),
            key=lambda t: (t[0], t[1]),
            reverse=True,
        )
        return distinct_configs(self.space, [c for *_, c in ok], k)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
            "pending": self.pending,
            "observed": [list(o) for o in self.observed],
            "extra": self._extra_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION or state.get("name") != self.name:
            raise ValueError(
                f"searcher state must be version {STATE_VERSION} of {self.name!r}, but got "
                f"version {state.get('version')} of {state.get('name')!r}"
            )
        self.seed = state["seed"]
        self.rng.bit_generator.state = state["rng"]
        self.pending = dict(state["pending"])
        self.observed = [tuple(o) for o in state["observed"]]  # type: ignore[misc]
        self._load_extra_state(state.get("extra") or {})

    # ------------------------------------------------------------------ hooks
    def _propose(self) -> dict[str, Any] | None:
        raise NotImplementedError  # abstract

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        return None


class RandomCore(ProposalCore):
    """Uniform sampling on each parameter's natural scale; avoids repeating a configuration
    while the space has unseen ones (finite spaces end when exhausted)."""

    name = "random"

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

    def __init__(self, space: Space, seed: int = 0, configs: list[dict[str, Any]] | None = None):
        super().__init__(space, seed)
        if not configs or not isinstance(configs, list):
            from autopipe.errors import SpecError

            raise SpecError(
                "search.options.configs must be a non-empty list of configurations for "
                f"search.algorithm 'design', but got {configs!r}"
            )
        for i, c in enumerate(configs):
            if not isinstance(c, dict):
                from autopipe.errors import SpecError

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


def distinct_configs(
    space: Space, configs: Sequence[Mapping[str, Any]], k: int
) -> list[dict[str, Any]]:
    """The first ``k`` configurations of ``configs`` that differ in the space's key."""
    out: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for c in configs:
        key = space.config_key(c)
        if key not in seen:
            seen.add(key)
            out.append(dict(c))
            if len(out) == k:
                break
    return out

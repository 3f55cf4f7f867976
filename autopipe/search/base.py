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
from typing import Any, ClassVar

import numpy as np

from autopipe.errors import SpecError
from autopipe.space import Space

STATE_VERSION = 1


class ProposalCore:
    """Base class holding the bookkeeping every core shares."""

    name = "base"
    # ``search.options`` a job may set for this core, name -> kind: "bool", "int", "float" (an
    # int is accepted too), a trailing "?" also allows null; "configs" is a list of
    # configurations that the core itself checks against the space when it is built.
    OPTIONS: ClassVar[dict[str, str]] = {}
    # The core needs the job's ranking prior and the dataset's meta-features (``prior=``,
    # ``meta=`` keyword arguments), which only exist once the history is loaded.
    USES_PRIOR: ClassVar[bool] = False
    # Building the core is cheap (no prior, no torch): the checks before a job starts build it
    # once, so a grid over a continuous space or a design without configs fails there.
    CHEAP: ClassVar[bool] = False

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise :class:`SpecError` (one line) for ``search.options`` this core does not take,
        of the wrong type (:attr:`OPTIONS`) or out of range (:meth:`check_values`). Cheap: needs
        no prior, so ``autopipe validate`` runs it."""
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise SpecError(
                f"search.options of {cls.name!r} must be among {sorted(cls.OPTIONS)}, but got "
                f"unknown {unknown}"
            )
        for key, value in options.items():
            _check_kind(key, value, cls.OPTIONS[key])
        cls.check_values(**options)

    @classmethod
    def check_values(cls, **options: Any) -> None:
        """Range checks of option values; the base class has none."""

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


_KINDS = {"bool": (bool,), "int": (int,), "float": (int, float)}


def _check_kind(name: str, value: Any, kind: str) -> None:
    """A scalar option of the wrong type (``warm_start: "5"``, ``guard: "false"``) is a one-line
    error; ``configs`` options are checked by the core against the space."""
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if kind not in _KINDS or (value is None and optional):
        return
    ok = isinstance(value, _KINDS[kind]) and (kind == "bool" or not isinstance(value, bool))
    if not ok:
        what = {"bool": "true or false", "int": "an integer", "float": "a number"}[kind]
        raise SpecError(f"search.options.{name} must be {what}, but got {value!r}")

"""Ray Tune ``Searcher`` around a Ray-free proposal core (autopipe.search.core): translates
trial ids and result dicts to ``propose``/``observe`` calls, and nothing else."""

from __future__ import annotations

import json
import math
from typing import Any

from ray.tune.search import Searcher

from autopipe import metrics as M
from autopipe.search.core import ProposalCore


class CoreSearcher(Searcher):
    """Adapter: ``suggest`` -> ``core.propose``; ``on_trial_complete`` -> ``core.observe``
    (``None`` for errored or failed trials, values flipped for ``mode='min'``)."""

    def __init__(self, core: ProposalCore, metric: str = M.OBJECTIVE, mode: str = "max") -> None:
        super().__init__(metric=metric, mode=mode)
        self.core = core
        self._max_concurrent: int | None = None
        self._live: set[str] = set()
        self._exhausted = False

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self._max_concurrent = max_concurrent
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._max_concurrent is not None and len(self._live) >= self._max_concurrent:
            return None
        cfg = self.core.propose(trial_id)
        if cfg is None:
            self._exhausted = True
            return Searcher.FINISHED
        self._live.add(trial_id)
        return dict(cfg)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        return None

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        self._live.discard(trial_id)
        value: float | None = None
        if not error and result is not None and not result.get(M.FAILED):
            raw = result.get(self._metric)
            if isinstance(raw, (int, float)) and math.isfinite(raw):
                value = float(raw) if self._mode == "max" else -float(raw)
        self.core.observe(trial_id, value)

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict:
        return {
            "core": self.core.state(),
            "live": sorted(self._live),
            "metric": self._metric,
            "mode": self._mode,
        }

    def set_state(self, state: dict) -> None:
        self.core.load_state(state["core"])
        self._live = set(state.get("live", []))
        self._metric, self._mode = state.get("metric", self._metric), state.get("mode", self._mode)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            json.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, encoding="utf-8") as f:
            self.set_state(json.load(f))

"""The Ray Tune ``Searcher`` classes: :class:`CoreSearcher` translates trial ids and result
dicts into a Ray-free proposal core's ``propose``/``observe`` calls (:mod:`autopipe.search`), and
:class:`JobSearcher`, the one a job runs, adds what the scheduler decided (proxy scores of
early-stopped trials, failures) through the shared ledger and stops at the budget gate.
Translation only; no search math here."""

from __future__ import annotations

import json
import math
from typing import Any

from ray.tune.search import Searcher

from autopipe import metrics as M
from autopipe.scheduling.budget import BudgetGate
from autopipe.scheduling.ledger import Ledger
from autopipe.search.base import ProposalCore


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


class JobSearcher(CoreSearcher):
    """A job's searcher: proxies and failures from the ledger, stopped by the budget gate."""

    def __init__(
        self,
        core: Any,
        ledger: Ledger,
        gate: BudgetGate,
        metric: str = M.OBJECTIVE,
        mode: str = "max",
    ) -> None:
        super().__init__(core, metric=metric, mode=mode)
        self.ledger = ledger
        self.gate = gate
        self.finished_by_budget = False
        self.exhausted = False

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.gate.exhausted():
            self.finished_by_budget = True
            return Searcher.FINISHED
        out = super().suggest(trial_id)
        if out == Searcher.FINISHED:
            self.exhausted = True
        return out

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if error:
            super().on_trial_complete(trial_id, result, error=True)
            return
        value, var = self.ledger.score(trial_id, result, self._metric)
        rec = self.ledger.trials.get(trial_id)
        proxied = rec is not None and rec.status == M.STATUS_EARLY_STOPPED
        if value is not None and self._mode == "min" and not proxied:
            value = -value  # proxies are already "higher is better"
        self._live.discard(trial_id)
        self.core.observe(trial_id, value, var)

    # ------------------------------------------------------------------ state
    # Ray Tune saves this with its experiment checkpoint and restores it on --resume; the ledger
    # rides along, so the scheduler's decisions and the budget gate's spend survive a lost driver.
    def get_state(self) -> dict:
        return {
            **super().get_state(),
            "ledger": self.ledger.state(),
            "finished_by_budget": self.finished_by_budget,
            "exhausted": self.exhausted,
        }

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if "ledger" in state:
            self.ledger.load_state(state["ledger"])
        self.finished_by_budget = bool(state.get("finished_by_budget", False))
        self.exhausted = bool(state.get("exhausted", False))

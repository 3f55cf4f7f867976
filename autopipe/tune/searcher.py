"""The searcher a job runs: the registry's core behind the Ray Tune adapter, told what the
scheduler decided (proxy scores of early-stopped trials, failures) through the shared ledger,
and stopped by the budget gate. Translation only; no search math here."""

from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher

from autopipe import metrics as M
from autopipe.scheduling.budget import BudgetGate
from autopipe.scheduling.ledger import Ledger
from autopipe.search.ray_adapter import CoreSearcher


class JobSearcher(CoreSearcher):
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

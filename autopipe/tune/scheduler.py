"""Ray Tune ``TrialScheduler`` that applies the stop policy: it records each result in the
shared ledger and returns STOP for trials that diverged or reached their early point. All
decisions are made by ``autopipe.scheduling.policy.decide``."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from autopipe.scheduling.ledger import Ledger
from autopipe.scheduling.policy import Decision, StopRules, decide


class AutoPipeScheduler(FIFOScheduler):
    def __init__(self, rules: StopRules, ledger: Ledger) -> None:
        super().__init__()
        self.rules = rules
        self.ledger = ledger

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        rec = self.ledger.record(trial.trial_id, trial.config, result)
        if rec.status is not None:  # already decided: results after a decision change nothing
            return TrialScheduler.STOP
        verdict = decide(rec.reports, self.rules)
        if verdict.decision is Decision.STOP_FAILED:
            self.ledger.mark_failed(trial.trial_id, verdict.reason)
            return TrialScheduler.STOP
        if verdict.decision is Decision.STOP_EARLY:
            self.ledger.mark_early_stopped(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        n = {
            s: sum(1 for r in self.ledger.trials.values() if r.status == s)
            for s in ("early-stopped", "failed")
        }
        return f"AutoPipeScheduler: {n['early-stopped']} early-stopped, {n['failed']} failed"

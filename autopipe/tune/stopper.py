"""The Ray Tune ``Stopper`` that ends a job which cannot succeed: its first trials all failed with
the same error (:func:`autopipe.scheduling.failfast.same_failure`, over the outcomes the MLflow
callback records as trials end). Translation only."""

from __future__ import annotations

from typing import Any

from ray.tune.stopper import Stopper

from autopipe.scheduling.failfast import same_failure


class SameFailureStopper(Stopper):
    def __init__(self, callback: Any, max_trials: int) -> None:
        self.callback = callback
        self.max_trials = max_trials
        self.reason: str | None = None  # set when it stopped the run
        self.n_failed = 0

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False  # it stops the whole run, never one trial

    def stop_all(self) -> bool:
        if self.reason is None:
            outcomes = self.callback.outcomes
            self.reason = same_failure(outcomes, self.max_trials)
            self.n_failed = len(outcomes) if self.reason else 0
            self.callback.stopping = self.reason is not None
        return self.reason is not None

"""When a job stops before its budget because it cannot succeed: its first trials all failed with
the same error (the same exception type and message: a missing module, a dataset no trial can
read, a model that does not fit). A divergence (a non-finite loss, the RL stop rules) depends on
the configuration and never counts. Ray-free; :mod:`autopipe.tune.stopper` applies it to a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autopipe import metrics as M

# NOTE: three trials: the smallest number at which one failing configuration is unlikely to
# look like a wall; a job of fewer trials stops once all of them have failed alike.
SAME_FAILURE_AFTER = 3
# Failure reasons that come from a configuration, not from the job: the divergence rules of
# autopipe.scheduling.policy and the worker's own non-finite-loss check.
DIVERGENCE_MARKERS = ("non-finite", "kl grew", "reward dropped", "reward stuck")


@dataclass(frozen=True)
class Outcome:
    """How one trial ended, in the order trials ended."""

    trial_id: str
    status: str  # metrics.STATUS_*
    reason: str = ""  # the failure's one line ("" unless failed)
    by_rule: bool = False  # stopped by a divergence rule of the scheduler


def is_divergence(o: Outcome) -> bool:
    text = o.reason.lower()
    return o.by_rule or any(m in text for m in DIVERGENCE_MARKERS)


def same_failure(
    outcomes: Sequence[Outcome], max_trials: int, after: int = SAME_FAILURE_AFTER
) -> str | None:
    """The error every trial so far failed with, once ``min(after, max_trials)`` trials have
    ended and each failed with that same one-line reason, none by divergence; else ``None``."""
    need = max(1, min(after, max_trials))
    if len(outcomes) < need:
        return None
    reasons = {o.reason for o in outcomes}
    if len(reasons) != 1 or any(o.status != M.STATUS_FAILED or is_divergence(o) for o in outcomes):
        return None
    reason = next(iter(reasons))
    return reason or None

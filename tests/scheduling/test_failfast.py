"""The fail-fast rule: a job stops once its first trials all failed with the same error, never
because of divergence (which depends on the configuration) or a mix of outcomes."""

from __future__ import annotations

from autopipe import metrics as M
from autopipe.scheduling.failfast import Outcome, same_failure

WALL = "ValueError: num_samples should be a positive integer value, but got num_samples=0"


def failed(reason: str = WALL, by_rule: bool = False) -> Outcome:
    return Outcome("t", M.STATUS_FAILED, reason, by_rule)


def test_three_alike_failures_stop_the_job() -> None:
    assert same_failure([failed(), failed()], max_trials=8) is None  # two could be chance
    assert same_failure([failed(), failed(), failed()], max_trials=8) == WALL


def test_a_small_job_stops_once_all_its_trials_failed_alike() -> None:
    assert same_failure([failed(), failed()], max_trials=2) == WALL
    assert same_failure([failed()], max_trials=1) == WALL


def test_different_errors_a_success_or_divergence_never_stop_it() -> None:
    assert same_failure([failed(), failed("OSError: disk full"), failed()], max_trials=8) is None
    ok = Outcome("t", M.STATUS_COMPLETED)
    assert same_failure([failed(), ok, failed(), failed()], max_trials=8) is None
    nan = failed("TrialError: non-finite train loss (nan) at step 3")
    assert same_failure([nan, nan, nan], max_trials=8) is None  # a learning rate, not a wall
    rule = failed("KL grew by more than 15% for 5 consecutive reports (now 2.1)", by_rule=True)
    assert same_failure([rule, rule, rule], max_trials=8) is None

"""Resuming a job whose driver died (``autopipe tune SPEC --resume``): find the job's unfinished
Ray Tune experiment through its parent MLflow run, and read back what MLflow already holds of
every trial, so that no trial gets a second run and no metric step is logged twice.

It restarts nothing itself: the job runner restores the Tune experiment, and Tune restores the
searcher (with the ledger) from its own experiment checkpoint.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from autopipe import metrics as M
from autopipe.tracking import Tracker

log = logging.getLogger(__name__)

# Trial statuses after which a trial never runs again (killed trials are resumed).
DONE = (M.STATUS_COMPLETED, M.STATUS_EARLY_STOPPED, M.STATUS_FAILED)


@dataclass
class Previous:
    """The unfinished execution of a job: its parent run and its Tune experiment."""

    run_id: str
    experiment_id: str
    status: str  # MLflow status of the parent run: RUNNING (driver killed), KILLED, FAILED
    path: str  # Tune experiment directory (storage/run name)


@dataclass
class TrialRun:
    """What MLflow holds of one trial of a previous execution."""

    trial_id: str
    run_id: str
    status: str  # autopipe.status tag
    last: dict[str, float] = field(default_factory=dict)  # latest value of every metric
    steps: dict[str, int] = field(default_factory=dict)  # metric -> last logged step
    promoted_from: str = ""  # a promoted trial: the early-stopped trial it resumed
    params: dict[str, str] = field(default_factory=dict)  # its MLflow params (configuration)

    @property
    def done(self) -> bool:
        return self.status in DONE


def find_unfinished(tracker: Tracker, job: str) -> Previous | None:
    """The job's latest execution if it did not finish and its Tune experiment can be restored."""
    from ray import tune

    runs = tracker.find_job_runs(job)
    if not runs:
        return None
    latest = runs[0]
    path = latest.data.tags.get(M.TAG_TUNE_PATH)
    if latest.info.status == "FINISHED" or not path:
        return None
    try:
        restorable = tune.Tuner.can_restore(path)
    except Exception as e:  # storage gone, unreadable or without credentials: nothing to restore
        log.debug("cannot probe %s for a restorable Tune experiment: %s", path, e)
        restorable = False
    if not restorable:
        return None
    return Previous(latest.info.run_id, latest.info.experiment_id, latest.info.status, path)


def load_trials(tracker: Tracker, parent_run_id: str, experiment_id: str) -> dict[str, TrialRun]:
    """Every trial child run of ``parent_run_id``, keyed by Tune trial id."""
    out: dict[str, TrialRun] = {}
    for r in tracker.child_runs(parent_run_id, experiment_id):
        tid = r.data.tags.get(M.TAG_TRIAL_ID)
        if not tid or r.data.tags.get(M.TAG_ROLE) != "trial":
            continue
        if tid in out:  # should not happen; keep the first and say so
            log.warning(
                "trial %s has two MLflow runs (%s, %s)", tid, out[tid].run_id, r.info.run_id
            )
            continue
        status = r.data.tags.get(M.TAG_STATUS, M.STATUS_RUNNING)
        if r.info.status == "RUNNING" and status in DONE:
            status = M.STATUS_RUNNING  # its end was never recorded: run it again
        steps = {
            k: max((m.step for m in _history(tracker, r.info.run_id, k)), default=-1)
            for k in r.data.metrics
        }
        out[tid] = TrialRun(
            tid,
            r.info.run_id,
            status,
            dict(r.data.metrics),
            steps,
            promoted_from=r.data.tags.get(M.TAG_PROMOTED_FROM, ""),
            params=dict(r.data.params),
        )
    return out


def promotions_done(
    trials: dict[str, TrialRun], space: Any
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The promotions a previous execution finished: ``(early-stopped source trial id -> its
    completed promoted trial id, promoted trial id -> configuration read from its params)``.
    Their trials are not in the restored Tune experiment (promotion runs its own), so the job
    learns them here and does not run them again."""
    from autopipe.history.mlflow_reader import parse_param

    done: dict[str, str] = {}
    configs: dict[str, dict[str, Any]] = {}
    for tid, t in trials.items():
        if t.status != M.STATUS_COMPLETED or not t.promoted_from:
            continue
        done[t.promoted_from] = tid
        configs[tid] = {
            p.name: parse_param(p, t.params[p.name], "resume", t.run_id)
            for p in space.params
            if p.name in t.params
        }
    return done, configs


def replay_result(t: TrialRun) -> dict[str, Any]:
    """The final report a finished trial gives Tune again when Tune's last experiment checkpoint
    predates its end (the driver died in between): the trial is not rerun."""
    out: dict[str, Any] = dict(t.last)
    out.setdefault(M.OBJECTIVE, math.nan)
    out[M.GLOBAL_STEP] = max(t.steps.values(), default=0)
    if t.status == M.STATUS_COMPLETED:
        out[M.STAGE] = "done"
    elif t.status == M.STATUS_EARLY_STOPPED:
        out[M.EARLY_STOPPED] = 1.0
    else:
        out[M.FAILED] = 1.0
    return out


def reopen_run(tracker: Tracker, run_id: str) -> None:
    """Mark an ended run RUNNING again; the tracker closes it with the job."""
    tracker.reopen_run(run_id)


def delete_run(tracker: Tracker, run_id: str) -> None:
    tracker.delete_run(run_id)


def _history(tracker: Tracker, run_id: str, key: str) -> list[Any]:
    return tracker.metric_history(run_id, key)

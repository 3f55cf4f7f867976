"""Ray Tune callback that mirrors every trial into MLflow: a child run per trial with its
configuration as params, every report as a step series, and its final status as a tag.

Each metric step is logged once, with one value: reports of one step (a stage boundary reports
the step its stage's last log reported, the final report the step of the last RL log) are merged,
the later value winning, and logged when the trial moves past that step or ends; a step a trial
reports again after a restart (a retried worker, ``--resume``) is not logged a second time."""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune import Callback

from autopipe import metrics as M
from autopipe.errors import TrackingError
from autopipe.scheduling.failfast import Outcome
from autopipe.scheduling.ledger import Ledger
from autopipe.tracking import Tracker

log = logging.getLogger(__name__)

# Reserved config keys of a promoted (resumed) trial; not parameters of the search space.
RESUME_KEY = "autopipe.resume_from"
PROMOTED_FROM_KEY = "autopipe.promoted_from"
RESERVED = (RESUME_KEY, PROMOTED_FROM_KEY)

LOGGED = (
    *M.CURVE_SIGNALS,
    *M.EVAL_METRICS,
    *M.RESOURCE_METRICS,
    M.FRACTION,
    M.OBJECTIVE,
    M.ELAPSED_S,
    M.COST_S,
)


def trial_status(result: dict[str, Any] | None, errored: bool = False) -> str:
    """Status of a trial from its last report."""
    if errored or result is None or result.get(M.FAILED):
        return M.STATUS_FAILED
    if result.get(M.STAGE) == "done" or float(result.get(M.FRACTION, 0.0)) >= 1.0 - 1e-9:
        return M.STATUS_COMPLETED
    return M.STATUS_EARLY_STOPPED


class MLflowTrialCallback(Callback):
    def __init__(
        self,
        tracker: Tracker,
        experiment_id: str,
        parent_run_id: str,
        trial_tags: dict[str, str],
        constants: dict[str, Any] | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.tracker = tracker
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.trial_tags = trial_tags
        self.constants = dict(constants or {})
        self.ledger = ledger or Ledger()
        self.extra_tags: dict[str, dict[str, str]] = {}  # trial_id -> tags set at its start
        self.configs: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, str] = {}  # trial_id -> MLflow run id
        self.status: dict[str, str] = {}
        self.last: dict[str, dict[str, Any]] = {}
        # Set by resume_from (a job resumed after its driver died): trial_id -> metric -> last
        # step MLflow already holds; trials whose MLflow record is final; trials not yet matched
        # with the restored Tune experiment.
        self.logged_steps: dict[str, dict[str, int]] = {}
        self.done: set[str] = set()
        self._preloaded: set[str] = set()
        self._seen: set[str] = set()
        self._reconcile_pending = False
        self._reconciled = False  # the restored Tune trials were matched with MLflow
        self._pending: dict[str, tuple[int, dict[str, Any]]] = {}  # trial -> step not yet logged
        self.outcomes: list[Outcome] = []  # trials that ended in this execution, in that order
        self.stopping = False  # the run is being stopped as a whole (autopipe.tune.stopper)

    def _run(self, trial: Any) -> str:
        rid = self.runs.get(trial.trial_id)
        if rid is None:
            cfg = {k: v for k, v in trial.config.items() if k not in RESERVED}
            tags = {
                **self.trial_tags,
                M.TAG_ROLE: "trial",
                M.TAG_TRIAL_ID: trial.trial_id,
                M.TAG_STATUS: M.STATUS_RUNNING,
            }
            if trial.config.get(RESUME_KEY):
                tags[M.TAG_PROMOTED_FROM] = str(trial.config.get(PROMOTED_FROM_KEY, ""))
            rid = self.tracker.start_run(
                self.experiment_id,
                f"trial-{trial.trial_id}",
                tags,
                parent_run_id=self.parent_run_id,
            )
            self.configs[trial.trial_id] = cfg
            self.runs[trial.trial_id] = rid  # before anything else can fail: one run per trial
            self.tracker.log_params(rid, {**self.constants, **cfg})
        return rid

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._seen.add(trial.trial_id)
        self._safe(self._run, trial)

    # ------------------------------------------------------------------ resume
    def resume_from(self, trials: dict[str, Any]) -> None:
        """Adopt the MLflow child runs of a previous execution (``resume.TrialRun`` by trial id):
        their trials keep their run, and steps MLflow already holds are not logged again."""
        for tid, t in trials.items():
            self.runs[tid] = t.run_id
            self.logged_steps[tid] = dict(t.steps)
            self._preloaded.add(tid)
            if t.done:
                self.done.add(tid)
                self.status[tid] = t.status
                self.last[tid] = dict(t.last)
        self._reconcile_pending = True

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._seen.update(t.trial_id for t in trials)
        if self._reconcile_pending:
            self._reconcile_pending = False
            self._safe(self._reconcile, trials)

    def _reconcile(self, trials: list) -> None:
        """Match the restored Tune trials with MLflow before any of them runs again."""
        from ray.tune.experiment import Trial

        from autopipe.tune.resume import reopen_run

        self._reconciled = True
        for trial in trials:
            tid = trial.trial_id
            self.configs.setdefault(
                tid, {k: v for k, v in trial.config.items() if k not in RESERVED}
            )
            rid = self.runs.get(tid)
            if rid is None:
                continue
            ended = trial.status in (Trial.TERMINATED, Trial.ERROR)
            if tid in self.done:
                if not ended:
                    # Tune's checkpoint predates the trial's end: the trainable replays its final
                    # report; the ledger must hold the decision the scheduler made then.
                    rec = self.ledger.get(tid)
                    rec.status = self.status[tid]
                    proxy = self.last[tid].get(M.PROXY)
                    if rec.status == M.STATUS_EARLY_STOPPED and isinstance(proxy, float):
                        rec.proxy = proxy
                continue
            if ended:  # Tune recorded the end, MLflow did not: record it now
                self._finish(trial, trial.status == Trial.ERROR)
            else:
                reopen_run(self.tracker, rid)

    def drop_orphans(self) -> list[str]:
        """Delete the unfinished MLflow runs of trials the restored Tune experiment does not know
        (started after its last checkpoint): Tune runs their configurations again as new trials."""
        from autopipe.tune.resume import delete_run

        if not self._reconciled:
            return []  # the restore never ran a step: nothing is known to be orphaned
        orphans = [t for t in self._preloaded - self._seen if t not in self.done and t in self.runs]
        for tid in orphans:
            self._safe(delete_run, self.tracker, self.runs.pop(tid))
            self.status.pop(tid, None)
            self.last.pop(tid, None)
        return orphans

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self.last[trial.trial_id] = dict(result)
        self._safe(self._log_result, trial, result)

    def _log_result(self, trial: Any, result: dict) -> None:
        if trial.trial_id in self.done:
            return  # ended before a resume: MLflow already holds its whole record
        self._run(trial)
        step = int(result.get(M.GLOBAL_STEP, result.get("training_iteration", 0)))
        self._merge(trial.trial_id, step, {k: result[k] for k in LOGGED if k in result})

    def _merge(self, tid: str, step: int, values: dict[str, Any]) -> None:
        """Add ``values`` to the trial's pending step; a new step logs the pending one first."""
        pending = self._pending.get(tid)
        if pending is not None and pending[0] == step:
            pending[1].update(values)  # the same step reported again: the later value wins
            return
        self._flush(tid)
        self._pending[tid] = (step, dict(values))

    def _flush(self, tid: str) -> None:
        """Log the trial's pending step, leaving out what MLflow already holds at that step or
        later (a trial restarted from a checkpoint reports earlier steps again)."""
        pending = self._pending.pop(tid, None)
        rid = self.runs.get(tid)
        if pending is None or rid is None:
            return
        step, values = pending
        floor = self.logged_steps.setdefault(tid, {})
        keep = {k: v for k, v in values.items() if step > floor.get(k, -1)}
        if keep:
            self.tracker.log_metrics(rid, keep, step)
            floor.update(dict.fromkeys(keep, step))

    def _finish(self, trial: Any, errored: bool, reason: str | None = None) -> None:
        if trial.trial_id in self.done:  # ended before a resume: its MLflow record is final
            return
        rid = self._run(trial)
        result = self.last.get(trial.trial_id) or trial.last_result or None
        rec = self.ledger.trials.get(trial.trial_id)
        status = trial_status(result, errored)
        by_rule = False
        if rec is not None and rec.status is not None and not errored:
            status = rec.status  # decided by the scheduler (early stop, divergence)
            reason = reason or rec.reason
            by_rule = status == M.STATUS_FAILED
        elif self.stopping and status == M.STATUS_EARLY_STOPPED:
            status = M.STATUS_KILLED  # stopped with the whole run, not at its early point
        step = int((result or {}).get(M.GLOBAL_STEP, 0))
        final: dict[str, Any] = {}
        if rec is not None and rec.proxy is not None:
            final[M.PROXY] = rec.proxy
            if rec.proxy_var is not None:
                final[M.PROXY_VAR] = rec.proxy_var
        cost = (result or {}).get(M.COST_S)
        if isinstance(cost, (int, float)) and math.isfinite(cost):
            final[M.COST_S] = cost
        self._merge(trial.trial_id, step, final)
        self._flush(trial.trial_id)
        tags = {
            M.TAG_STATUS: status,
            M.TAG_FIDELITY: f"{float((result or {}).get(M.FRACTION, 0.0)):.4f}",
        }
        reason = reason or (result or {}).get(M.FAILURE_REASON)
        if status == M.STATUS_FAILED and reason:
            tags[M.TAG_FAILURE] = str(reason)[:1000]
        self.tracker.set_tags(rid, tags)
        end = {M.STATUS_FAILED: "FAILED", M.STATUS_KILLED: "KILLED"}.get(status, "FINISHED")
        self.tracker.end_run(rid, end)
        self.status[trial.trial_id] = status
        failure = str(reason or "").strip().splitlines()[0][:1000] if reason else ""
        self.outcomes.append(Outcome(trial.trial_id, status, failure, by_rule))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._safe(self._finish, trial, False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._safe(self._finish, trial, True, _error_text(trial))

    def _safe(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except TrackingError as e:  # never let tracking kill the job
            log.error("%s", e)


def _error_text(trial: Any) -> str:
    """First informative line of a trial's error."""
    msg = getattr(trial, "error_msg", None)
    if not msg:
        path = getattr(trial, "error_file", None)
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    msg = f.read()
            except OSError:
                msg = None
    if not msg:
        return "trial raised an error"
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    # Prefer the innermost exception line ("SomeError: message").
    for ln in reversed(lines):
        if ":" in ln and not ln.startswith(("File ", "^", "Traceback")):
            return ln[:1000]
    return lines[-1][:1000]

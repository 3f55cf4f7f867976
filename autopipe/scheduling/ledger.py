"""The driver's record of every trial, shared by the scheduler (which writes decisions and
proxies), the searcher adapter (which reads scores) and the MLflow callback (which reads
statuses). Ray-free; it holds no model, only a proxy function it is given."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from autopipe import metrics as M

log = logging.getLogger(__name__)

# (reports so far, configuration, peers) -> (proxy score, variance); maximised like the
# objective. ``peers`` are the report lists of the job's other trials (any status but failed), so
# a proxy can rank a prefix among the prefixes the same task produced.
ProxyFn = Callable[
    [list[dict[str, Any]], dict[str, Any], list[list[dict[str, Any]]]], tuple[float, float | None]
]

_KEEP = (
    *M.CURVE_SIGNALS,
    M.FRACTION,
    M.GLOBAL_STEP,
    M.STAGE,
    M.OBJECTIVE,
    M.COST_S,
    M.EARLY_STOPPED,
    M.FAILED,
    M.FAILURE_REASON,
    M.CHECKPOINT_PATH,
)


def fallback_proxy(
    reports: list[dict[str, Any]],
    config: dict[str, Any],
    peers: list[list[dict[str, Any]]] | None = None,
) -> tuple[float, float | None]:
    """Without a learned predictor: the negative of the latest eval (else train) loss.

    Monotone in what an early prefix shows, but not on the objective's scale: use it only when
    every trial of a job is scored the same way.
    """
    for key in (M.EVAL_LOSS, M.TRAIN_LOSS):
        vals = [
            r[key]
            for r in reports
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
        ]
        if vals:
            return -float(vals[-1]), None
    return float("nan"), None


@dataclass
class TrialRecord:
    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None  # metrics.STATUS_*; None while running
    reason: str = ""
    proxy: float | None = None
    proxy_var: float | None = None
    checkpoint: str | None = None
    # spent by earlier attempts of this trial: a retry or --resume restarts it from a checkpoint,
    # and its reports' cost_s may start again from ~0 (a fresh process clock)
    cost_before_s: float = 0.0

    @property
    def last(self) -> dict[str, Any]:
        return self.reports[-1] if self.reports else {}

    @property
    def cost_s(self) -> float:
        c = self.last.get(M.COST_S)
        return float(c) if isinstance(c, (int, float)) and math.isfinite(c) else 0.0

    @property
    def spent_s(self) -> float:
        """What the trial has cost so far: earlier attempts plus the current one."""
        return self.cost_before_s + self.cost_s

    @property
    def fraction(self) -> float:
        f = self.last.get(M.FRACTION)
        return float(f) if isinstance(f, (int, float)) and math.isfinite(f) else 0.0


class Ledger:
    def __init__(self, proxy_fn: ProxyFn | None = None) -> None:
        self.proxy_fn = proxy_fn or fallback_proxy
        self.trials: dict[str, TrialRecord] = {}

    def get(self, trial_id: str) -> TrialRecord:
        rec = self.trials.get(trial_id)
        if rec is None:
            rec = self.trials[trial_id] = TrialRecord(trial_id)
        return rec

    def record(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> TrialRecord:
        rec = self.get(trial_id)
        rec.config = dict(config)
        step = result.get(M.GLOBAL_STEP)
        last = rec.reports[-1].get(M.GLOBAL_STEP) if rec.reports else None
        if step is not None and last is not None and step < last:
            # A trial restarted from a checkpoint (retry, --resume) reports those steps again:
            # keep one ordered curve, the latest reports from the rewound step on.
            abandoned = rec.cost_s
            rec.reports = [r for r in rec.reports if r.get(M.GLOBAL_STEP, -1) < step]
            kept = rec.cost_s
            new = result.get(M.COST_S)
            restarted = isinstance(new, (int, float)) and math.isfinite(new) and new < kept
            # the abandoned attempt's cost stays spent: all of it when the new attempt's clock
            # starts again, what it ran past the checkpoint when the clock carries on from there
            rec.cost_before_s += abandoned if restarted else max(abandoned - kept, 0.0)
        rec.reports.append({k: result[k] for k in _KEEP if k in result})
        if result.get(M.CHECKPOINT_PATH):
            rec.checkpoint = str(result[M.CHECKPOINT_PATH])
        return rec

    def mark_failed(self, trial_id: str, reason: str) -> None:
        rec = self.get(trial_id)
        rec.status, rec.reason = M.STATUS_FAILED, reason

    def mark_early_stopped(self, trial_id: str) -> TrialRecord:
        rec = self.get(trial_id)
        rec.status = M.STATUS_EARLY_STOPPED
        peers = [
            r.reports
            for tid, r in self.trials.items()
            if tid != trial_id
            and r.reports
            and r.status != M.STATUS_FAILED
            and not r.last.get(M.FAILED)  # ended by an error report before any decision
        ]
        try:
            proxy, var = self.proxy_fn(rec.reports, rec.config, peers)
        except Exception as e:  # noqa: BLE001 - this runs inside Tune's event loop: a proxy that
            # cannot score one trial must not end the job; the trial gets no proxy (the searcher
            # then sees it as failed) and the reason is kept
            log.warning("trial %s: no proxy score (%s: %s)", trial_id, type(e).__name__, e)
            rec.reason = f"no proxy score: {type(e).__name__}: {e}"
            proxy, var = math.nan, None
        rec.proxy = proxy if math.isfinite(proxy) else None
        rec.proxy_var = var
        return rec

    def score(
        self, trial_id: str, result: dict[str, Any] | None, metric: str
    ) -> tuple[float | None, float | None]:
        """What the searcher observes for a finished trial: ``(value, noise variance)``.

        Early-stopped: the proxy and its variance; completed: the final objective (variance
        ``None``: a full evaluation); failed or unknown: ``(None, None)``.
        """
        rec = self.trials.get(trial_id)
        if rec is not None and rec.status == M.STATUS_FAILED:
            return None, None
        if rec is not None and rec.status == M.STATUS_EARLY_STOPPED:
            return rec.proxy, rec.proxy_var
        if result is None or result.get(M.FAILED):
            return None, None
        v = result.get(metric)
        return (
            (float(v), None) if isinstance(v, (int, float)) and math.isfinite(v) else (None, None)
        )

    def spent_s(self) -> float:
        """Trial-seconds spent by every trial, earlier attempts of retried trials included."""
        return sum(r.spent_s for r in self.trials.values())

    # ------------------------------------------------------------------ state
    STATE_VERSION = 1

    def state(self) -> dict[str, Any]:
        """Every trial's record as a versioned, JSON-able dict (the proxy function is code, not
        state: the job rebuilds it from its spec)."""
        return {"version": self.STATE_VERSION, "trials": [asdict(r) for r in self.trials.values()]}

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the records in place: the scheduler and the callback hold this same object."""
        if state.get("version") != self.STATE_VERSION:
            raise ValueError(
                f"ledger state version must be {self.STATE_VERSION}, but got {state.get('version')}"
            )
        self.trials.clear()
        for d in state["trials"]:
            rec = TrialRecord(**d)
            self.trials[rec.trial_id] = rec

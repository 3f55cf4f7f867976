"""A Ray Tune trainable that replays recorded runs of a history instead of training: an
evaluation of a configuration draws one of its seeds' runs and reports that run's curve in order,
stopping itself at the early-stop fraction like a real trial. Used by the scheduler tests and
the replay benchmark, so they measure the Searcher/Scheduler classes users get.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from autopipe import metrics as M
from autopipe.bench.replay import curve_report
from autopipe.history.data import COST, History, Y, is_present
from autopipe.metrics import FRACTION
from autopipe.tune.callbacks import RESERVED, RESUME_KEY


def _runs_by_config(history: History, task: str) -> dict[tuple, list[int]]:
    runs = history.runs[history.runs["task"] == task]
    out: dict[tuple, list[int]] = {}
    for i, row in zip(runs.index, runs.to_dict("records"), strict=True):
        cfg = {k: row[k] for k in history.space.names if is_present(row[k])}
        out.setdefault(history.space.config_key(cfg), []).append(i)
    return out


def make_replay_trainable(
    history: History, task: str, early_stop_fraction: float = 1.0, seed: int = 0
) -> Any:
    """A function trainable for ``task`` of ``history``; configs must be ones the task ran.

    Reports carry the curve's own signal columns, ``fraction``, ``global_step`` (row index),
    ``stage`` (``rl`` on rows with an RL signal, else ``sft``), ``cost_s`` (fraction x cost)
    and ``objective`` (the final ``y`` in the last report of a full replay; NaN before). A config
    holding ``RESUME_KEY`` continues after the early point (promotion) without replaying the
    prefix again.
    """
    index = _runs_by_config(history, task)
    runs = history.runs
    curves = history.curves
    by_run = (
        {}
        if curves is None
        else {rid: g.sort_values(FRACTION) for rid, g in curves.groupby("run_id")}
    )
    space = history.space

    def replay(config: dict[str, Any]) -> None:
        from ray import tune

        cfg = {k: v for k, v in config.items() if k not in RESERVED}
        rows = index.get(space.config_key(cfg))
        if not rows:
            raise ValueError(f"config {cfg} was never run on task {task!r}")
        # The same trial id and config always draw the same seed's run.
        key = zlib.crc32(
            repr((seed, tune.get_context().get_trial_id(), space.config_key(cfg))).encode()
        )
        run = runs.loc[rows[int(np.random.default_rng(key).integers(len(rows)))]]
        y, cost = float(run[Y]), float(run[COST])
        curve = by_run.get(run["run_id"])
        resume = bool(config.get(RESUME_KEY))
        points = [] if curve is None else curve.to_dict("records")
        early = early_stop_fraction < 1.0 and not resume
        step = 0
        for step, point in enumerate(points, 1):
            f = float(point[FRACTION])
            if resume and f <= early_stop_fraction + 1e-12:
                continue  # the prefix was already run by the trial this one resumes
            if early and f > early_stop_fraction + 1e-12:
                break  # an early-stopped evaluation sees the prefix only
            rep = curve_report(point, step, cost)
            tune.report(rep)
        if early:  # stop at the early point, costing f x cost
            tune.report(
                {
                    M.FRACTION: early_stop_fraction,
                    M.GLOBAL_STEP: step,
                    M.COST_S: early_stop_fraction * cost,
                    M.STAGE: "sft",
                    M.EARLY_STOPPED: 1.0,
                    M.OBJECTIVE: float("nan"),
                }
            )
            return
        final = {
            M.FRACTION: 1.0,
            M.GLOBAL_STEP: step + 1,
            M.COST_S: cost,
            M.STAGE: "done",
            M.OBJECTIVE: y if math.isfinite(y) else float("nan"),
        }
        if not math.isfinite(y):
            final.update(
                {M.FAILED: 1.0, M.FAILURE_REASON: f"recorded run failed ({run['status']})"}
            )
        tune.report(final)

    return replay

"""Replay of one task's learning curves for the benchmark, Ray-free: a configuration draws one
of its seeds' runs (the same one for the same benchmark seed, whatever the trial id, so both
engines and every method see the same draw) and yields the reports a trial would make, in
order. It runs no trial and scores nothing (:mod:`.core` does).

A search space that is not finite (a space-filling design over continuous ranges, like the
project's post-training history) cannot be replayed point by point: a configuration that was
never run is replayed by the nearest configuration the task ran, by Euclidean distance of the
space's features (``Space.encode``: unit cube, one-hot categoricals), and scored as that one.
Finite spaces are replayed exactly (a configuration never run raises ``ValueError``).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from autopipe import metrics as M
from autopipe.history.data import COST, History, Y, is_present
from autopipe.metrics import FRACTION
from autopipe.scheduling.ledger import fallback_proxy

RL_SIGNALS = (M.REWARD_MEAN, M.REWARD_STD, M.KL, M.COMPLETION_LENGTH)
# The score multi-fidelity schedulers (ASHA, HyperBandForBOHB) and TuneBOHB compare trials by at
# each rung, in the objective's direction: the final objective in the last report, before it the
# prefix's signal (the latest eval loss, else train loss; :func:`fallback_proxy`). Rungs compare
# trials at one fidelity, so the two scales never meet. A replay-only key, not a trial metric.
RUNG_SCORE = "replay_rung_score"


def curve_report(point: dict[str, Any], step: int, cost: float) -> dict[str, Any]:
    """The report a trial makes at one curve row ``point`` of a run that cost ``cost`` in full:
    the row's signals, its fraction, ``step``, ``f x cost`` so far, the stage (RL once an RL
    signal appears) and no objective yet. Shared with the Ray Tune replay trainable."""
    f = float(point[FRACTION])
    rep = {k: float(v) for k, v in point.items() if k not in ("run_id", FRACTION) and is_present(v)}
    rep.update(
        {
            M.FRACTION: f,
            M.GLOBAL_STEP: step,
            M.COST_S: f * cost,
            M.STAGE: "rl" if any(s in rep for s in RL_SIGNALS) else "sft",
            M.OBJECTIVE: float("nan"),
        }
    )
    return rep


class CurveReplay:
    """``task``'s runs of ``history`` (with curves) as reports; see the module docstring.

    ``reports(config, early_fraction)``: the trial's reports, oldest first. Below 1, the trial
    stops itself at ``early_fraction`` like a real trial (the prefix's points, then a report
    flagged ``early_stopped`` at the fraction, costing ``early_fraction x cost``); at 1, every
    point and then the final report (``objective``, ``cost``; ``failed`` for a failed run).
    """

    def __init__(self, history: History, task: str, seed: int) -> None:
        self.space = history.space
        self.task = task
        self.seed = int(seed)
        self.sign = 1.0 if history.mode == "max" else -1.0
        runs = history.runs.loc[history.runs["task"] == task]
        configs = history.records(runs)
        self._rows: dict[tuple, list[int]] = {}
        for i, cfg in enumerate(configs):
            self._rows.setdefault(self.space.config_key(cfg), []).append(i)
        self._keys = list(self._rows)
        first = [configs[rows[0]] for rows in self._rows.values()]
        self._x = self.space.encode(first)
        self._y = runs[Y].to_numpy(float)
        self._cost = runs[COST].to_numpy(float)
        self._status = runs["status"].astype(str).to_numpy()
        curves = history.curves
        by_run: dict[str, list[dict[str, Any]]] = {}
        if curves is not None:
            sub = curves.loc[curves["run_id"].isin(set(runs["run_id"].astype(str)))]
            for rid, g in sub.groupby("run_id", sort=False):
                by_run[str(rid)] = g.sort_values(FRACTION).to_dict("records")
        self._points = [by_run.get(str(r), []) for r in runs["run_id"]]

    def key_of(self, config: dict[str, Any]) -> tuple:
        """The key of the configuration the task ran that replays ``config``."""
        cfg = {k: config[k] for k in self.space.names if k in config}
        key = self.space.config_key(cfg)
        if key in self._rows:
            return key
        if self.space.is_finite:
            raise ValueError(f"config {cfg} was never run on task {self.task!r}")
        d = np.sum((self._x - self.space.encode([cfg])) ** 2, axis=1)
        return self._keys[int(np.argmin(d))]

    def _draw(self, key: tuple) -> int:
        rows = self._rows[key]
        pick = np.random.default_rng(zlib.crc32(repr((self.seed, key)).encode())).integers(
            len(rows)
        )
        return rows[int(pick)]

    def final(self, key: tuple) -> tuple[float | None, float]:
        """``(objective made larger-is-better or None if the run failed, cost)`` of the full run
        this replay draws for the configuration ``key`` (what a promotion to full fidelity
        observes)."""
        j = self._draw(key)
        y = float(self._y[j])
        return (self.sign * y if math.isfinite(y) else None), float(self._cost[j])

    def reports(self, config: dict[str, Any], early_fraction: float = 1.0) -> list[dict[str, Any]]:
        j = self._draw(self.key_of(config))
        y, cost = float(self._y[j]), float(self._cost[j])
        early = early_fraction < 1.0
        out: list[dict[str, Any]] = []
        for point in self._points[j]:
            f = float(point[FRACTION])
            if early and f > early_fraction + 1e-12:
                break  # an early-stopped evaluation sees the prefix only
            rep = curve_report(point, len(out) + 1, cost)
            out.append(rep)
            # fallback_proxy is larger-is-better; the rung score is in the objective's direction
            rep[RUNG_SCORE] = self.sign * fallback_proxy(out, config)[0]
        if early:
            out.append(
                {
                    M.FRACTION: early_fraction,
                    M.GLOBAL_STEP: len(out) + 1,
                    M.COST_S: early_fraction * cost,
                    M.STAGE: out[-1][M.STAGE] if out else "sft",
                    M.EARLY_STOPPED: 1.0,
                    M.OBJECTIVE: float("nan"),
                    RUNG_SCORE: out[-1][RUNG_SCORE] if out else float("nan"),
                }
            )
            return out
        final = {
            M.FRACTION: 1.0,
            M.GLOBAL_STEP: len(out) + 1,
            M.COST_S: cost,
            M.STAGE: "done",
            M.OBJECTIVE: y if math.isfinite(y) else float("nan"),
            RUNG_SCORE: y if math.isfinite(y) else float("nan"),
        }
        if not math.isfinite(y):
            final.update(
                {M.FAILED: 1.0, M.FAILURE_REASON: f"recorded run failed ({self._status[j]})"}
            )
        out.append(final)
        return out

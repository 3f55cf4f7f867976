"""What the early predictor learns from: the final objective of each run as a within-task
z-score (seed-averaged, direction-aware), the prior's z-scores of the same configurations,
peer ranks of prefix features among a task's other trials, and the bags of training tasks each
ensemble member sees. Notation: :mod:`autopipe.predictor.early`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from autopipe.errors import DataError
from autopipe.history.data import History, Y
from autopipe.predictor.features import FRACTION_TOL
from autopipe.prior.ranker import RankingPrior


# --------------------------------------------------------------------------- targets
def run_targets(history: History, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run with a finite ``y`` (of ``run_ids``, default all): ``run_id, task,
    config_id`` (same id for the seeds of one configuration on one task) and ``y_max_cfg``, the
    seed-averaged direction-aware final objective of its configuration over finite runs."""
    runs = history.runs
    keys = ["task", *history.space.names]
    cfg_id = runs.groupby(keys, dropna=False, sort=False, observed=True).ngroup().to_numpy()
    y = runs[Y].to_numpy(dtype=float)
    frame = pd.DataFrame(
        {
            "run_id": runs["run_id"].astype(str).to_numpy(),
            "task": runs["task"].astype(str).to_numpy(),
            "config_id": cfg_id,
            "y_max": history.y_max(y),
        }
    )
    frame = frame.loc[np.isfinite(y)]
    frame["y_max_cfg"] = frame.groupby("config_id")["y_max"].transform("mean")
    if run_ids is not None:
        index = pd.Index(frame["run_id"])
        want = pd.Index([str(r) for r in run_ids])
        frame = frame.loc[index.isin(want)]
    return frame.drop(columns="y_max").reset_index(drop=True)


TARGETS = ("rank", "standard")  # how the final objective is z-scored within a task


def within_task_z(frame: pd.DataFrame, kind: str = "rank") -> np.ndarray:
    """``z`` of ``frame.y_max_cfg`` per task over its distinct configurations, one per row.

    ``kind="rank"``: normal scores, ``Phi^-1((rank - 1/2) / n)`` with mid-ranks for ties, a
    z-score that diverged runs cannot stretch; ``kind="standard"``: ``(y - mean) / std``.
    """
    if kind not in TARGETS:
        raise DataError(f"target must be one of {list(TARGETS)}, but got {kind!r}")
    out = np.zeros(len(frame))
    for _, idx in frame.groupby("task", sort=False).indices.items():
        sub = frame.iloc[idx]
        cfg = sub.drop_duplicates("config_id")
        yc = cfg["y_max_cfg"].to_numpy(dtype=float)
        if kind == "rank":
            zc = norm.ppf((rankdata(yc, method="average") - 0.5) / len(yc))
        else:
            sd = float(yc.std())
            zc = (yc - yc.mean()) / sd if sd > 0 else np.zeros_like(yc)
        by_cfg = dict(zip(cfg["config_id"], zc, strict=True))
        out[idx] = [by_cfg[c] for c in sub["config_id"]]
    return out


def prior_scores(prior: RankingPrior, history: History, frame: pd.DataFrame) -> np.ndarray:
    """The prior's z-score of each row's configuration, scoring the distinct configurations of
    ``frame`` task by task (the prior z-normalizes within the scored set)."""
    if prior.space.to_json()["params"] != history.space.to_json()["params"]:
        raise DataError(
            f"{history.where}: search space differs from the prior's; a prior scores its own space"
        )
    out = np.zeros(len(frame))
    runs = history.runs.set_index(history.runs["run_id"].astype(str))
    for t, idx in frame.groupby("task", sort=False).indices.items():
        sub = frame.iloc[idx]
        first = sub.drop_duplicates("config_id")
        s = prior.score(
            history.meta_features(str(t)), runs.loc[first["run_id"], history.space.names]
        )
        by_cfg = dict(zip(first["config_id"], s, strict=True))
        out[idx] = [by_cfg[c] for c in sub["config_id"]]
    return out


# --------------------------------------------------------------------------- peer ranks
def peer_ranks(p: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Normal scores of ``p`` ``(k,)`` among its peers' rows ``Q`` ``(m, k)`` per column, with
    ``m`` appended: ``(k + 1,)``. Mid-ranks for ties; NaN where ``p`` is NaN or no peer has a
    finite value in that column."""
    p = np.asarray(p, dtype=float)
    Q = np.asarray(Q, dtype=float)
    Q = Q.reshape(len(Q) if Q.ndim == 2 else -1, len(p)) if len(p) else Q.reshape(len(Q), 0)
    ok = np.isfinite(Q)
    cnt = ok.sum(axis=0)
    with np.errstate(invalid="ignore"):
        less = np.sum(ok & (Q < p), axis=0)
        eq = np.sum(ok & (Q == p), axis=0)
    rank = less + 1.0 + eq / 2.0
    out = np.full(len(p) + 1, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = norm.ppf((rank - 0.5) / (cnt + 1.0))
    good = (cnt > 0) & np.isfinite(p)
    out[:-1][good] = z[good]
    out[-1] = float(len(Q))
    return out


def member_bag(
    tasks: np.ndarray, fraction: float, unit: str, rng: np.random.Generator
) -> np.ndarray:
    """Sorted indices of the training runs one ensemble member is fitted on. ``unit="task"``:
    every run of ``round(fraction * T)`` (at least 2) of the ``T`` distinct tasks in ``tasks``,
    the other tasks' runs left out whole; with 2 tasks or fewer that would leave a member one
    task or none to learn from, so it samples runs as ``unit="run"`` does: ``round(fraction *
    n)`` (at least 2) of the ``n`` runs, whatever their task."""
    tasks = np.asarray(tasks)
    names = np.unique(tasks)
    if unit == "task" and len(names) > 2:
        keep = rng.choice(names, size=max(2, round(fraction * len(names))), replace=False)
        return np.flatnonzero(np.isin(tasks, keep))
    n = len(tasks)
    return np.sort(rng.choice(n, size=min(n, max(2, round(fraction * n))), replace=False))


def reached(fr: np.ndarray, fraction: float) -> bool:
    """Whether a trial's reported fractions ``fr`` reach ``fraction``: only such trials' prefixes
    are peers (a trial still before ``fraction`` has a shorter, incomparable prefix)."""
    fr = np.asarray(fr, dtype=float)
    fr = fr[np.isfinite(fr)]
    return bool(fr.size) and float(fr.max()) >= fraction - FRACTION_TOL

"""Leave-one-group-out (LODO) evaluation of the ranking prior against baselines (random order,
global best, config-only ranker), with ranking metrics per held-out task and on average, and a
markdown rendering. This module evaluates; it does not tune hyperparameters.

Metric definitions (per held-out task, over its configurations with a finite seed-averaged ``y``;
``y_max`` is that ``y`` made larger-is-better; the predicted order breaks score ties at random):

- ``nDCG@k``: linear-gain nDCG with graded relevance ``rel_i = (rank_i - 1) / (n - 1)``, the
  within-task percentile of ``y_max`` (average rank for ties), discount ``1 / log2(1 + position)``,
  normalized by the ideal order's DCG@k. Rank-based gain makes it invariant to the objective's
  scale and direction (loss outliers do not compress the gains).
- ``Spearman``: rank correlation of score and ``y_max``.
- ``pairwise acc``: over pairs with different ``y``, the share ordered correctly by the score
  (score ties count 1/2).
- ``recall@1%``: share of the true top ``k = ceil(1% n)`` configurations (ties at the k-th value
  included) found in the predicted top ``k``, capped at 1.
- ``regret@1`` / ``regret@5``: ``(best - chosen) / (best - median)`` of ``y_max`` for the top-1
  configuration and for the best of the top-5.
- ``nDCG@5_y``: the same nDCG@5 with the min-max scaled objective as gain,
  ``(y_max - min) / (max - min)``; reported for comparison only (outliers such as diverged losses
  squeeze every other gain towards 1, so it flatters every method on such tasks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata, spearmanr

from autopipe.errors import DataError
from autopipe.history.data import History
from autopipe.prior.ranker import RankerConfig, RankingPrior

PRIOR = "prior (config + meta)"
CONFIG_ONLY = "config-only ranker"
GLOBAL_BEST = "global best"
RANDOM = "random"
METHODS = (PRIOR, CONFIG_ONLY, GLOBAL_BEST, RANDOM)
METRICS = (
    "ndcg@5",
    "ndcg@10",
    "spearman",
    "pairwise_acc",
    "recall@1%",
    "regret@1",
    "regret@5",
    "ndcg@5_y",
)


# --------------------------------------------------------------------------- metrics
def ndcg_at_k(y_max: np.ndarray, order: np.ndarray, k: int, gain: str = "rank") -> float:
    """nDCG@k of the predicted ``order`` (indices, best first) with percentile-rank gains
    (``gain="rank"``) or min-max scaled objective gains (``gain="y"``)."""
    n = len(y_max)
    if n < 2:
        return 1.0
    if gain == "rank":
        rel = (rankdata(y_max, method="average") - 1) / (n - 1)
    else:
        lo, hi = float(y_max.min()), float(y_max.max())
        rel = (y_max - lo) / (hi - lo) if hi > lo else np.ones(n)
    k = min(k, n)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(rel[order[:k]] @ disc)
    idcg = float(np.sort(rel)[::-1][:k] @ disc)
    return dcg / idcg if idcg > 0 else 1.0


def pairwise_accuracy(y: np.ndarray, s: np.ndarray) -> float:
    """Share of pairs with ``y_i != y_j`` that ``s`` orders the same way (ties in ``s`` count
    1/2); exact, from Kendall's tau-b and the tie counts, in O(n log n)."""
    n = len(y)
    n0 = n * (n - 1) / 2
    n_y = _tied_pairs(y)
    n_s = _tied_pairs(s)
    n_both = _tied_pairs_joint(s, y)
    untied_y = n0 - n_y
    if untied_y <= 0:
        return math.nan
    tau = kendalltau(s, y, variant="b").statistic if n_s < n0 else math.nan
    s_only = n_s - n_both  # pairs tied in s but not in y
    c_minus_d = 0.0 if not math.isfinite(tau) else tau * math.sqrt((n0 - n_s) * (n0 - n_y))
    c_plus_d = untied_y - s_only
    concordant = (c_plus_d + c_minus_d) / 2
    return float((concordant + 0.5 * s_only) / untied_y)


def _tied_pairs(x: np.ndarray) -> float:
    _, c = np.unique(x, return_counts=True)
    return float(np.sum(c * (c - 1) / 2))


def _tied_pairs_joint(a: np.ndarray, b: np.ndarray) -> float:
    _, c = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
    return float(np.sum(c * (c - 1) / 2))


def ranking_metrics(
    y_max: np.ndarray, score: np.ndarray, rng: np.random.Generator
) -> dict[str, float]:
    """All metrics of :data:`METRICS` for one task (see the module docstring)."""
    y_max = np.asarray(y_max, dtype=float)
    score = np.asarray(score, dtype=float)
    n = len(y_max)
    order = np.lexsort((rng.random(n), -score))  # best first; random among equal scores
    best, med = float(y_max.max()), float(np.median(y_max))
    span = best - med

    def regret(chosen: float) -> float:
        return (best - chosen) / span if span > 0 else 0.0

    k = max(1, math.ceil(0.01 * n))
    kth = np.sort(y_max)[::-1][k - 1]
    hits = int(np.sum(y_max[order[:k]] >= kth))
    rho = spearmanr(score, y_max).statistic if n > 2 else math.nan
    return {
        "ndcg@5": ndcg_at_k(y_max, order, 5),
        "ndcg@10": ndcg_at_k(y_max, order, 10),
        "spearman": float(rho) if rho is not None and math.isfinite(rho) else 0.0,
        "pairwise_acc": pairwise_accuracy(y_max, score),
        "recall@1%": min(1.0, hits / k),
        "regret@1": regret(float(y_max[order[0]])),
        "regret@5": regret(float(y_max[order[:5]].max())),
        "ndcg@5_y": ndcg_at_k(y_max, order, 5, gain="y"),
    }


# --------------------------------------------------------------------------- baselines
@dataclass
class GlobalBest:
    """Score = mean within-task percentile of a configuration over the training tasks; a
    configuration never run there takes the score of its nearest run one (feature space)."""

    keys: np.ndarray  # (m, p) encoded configurations
    mean_pct: np.ndarray  # (m,)

    @classmethod
    def fit(cls, history: History, tasks: Sequence[str]) -> GlobalBest:
        Xs, pcts = [], []
        for t in tasks:
            ct = history.config_table(t)
            ym = ct["y_max"].to_numpy(dtype=float)
            ok = np.isfinite(ym)
            if ok.sum() < 2:
                continue
            Xs.append(history.encode(ct.loc[ok]))
            pcts.append((rankdata(ym[ok]) - 1) / (ok.sum() - 1))
        if not Xs:
            raise DataError(f"{history.where}: no training task has 2 or more finite objectives")
        X = np.round(np.vstack(Xs), 9)
        pct = np.concatenate(pcts)
        keys, inv = np.unique(X, axis=0, return_inverse=True)
        inv = inv.ravel()
        mean_pct = np.bincount(inv, weights=pct, minlength=len(keys)) / np.bincount(
            inv, minlength=len(keys)
        )
        return cls(keys, mean_pct)

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.round(X, 9)
        index = {row.tobytes(): i for i, row in enumerate(self.keys)}
        out = np.full(len(X), np.nan)
        for i, row in enumerate(X):
            j = index.get(row.tobytes())
            if j is not None:
                out[i] = self.mean_pct[j]
        miss = np.flatnonzero(np.isnan(out))
        for start in range(0, miss.size, 256):
            q = X[miss[start : start + 256]]
            d = ((q[:, None, :] - self.keys[None, :, :]) ** 2).sum(axis=2)
            out[miss[start : start + 256]] = self.mean_pct[np.argmin(d, axis=1)]
        return out


# --------------------------------------------------------------------------- LODO
def lodo_evaluate(
    history: History,
    config: RankerConfig | None = None,
    methods: Sequence[str] = METHODS,
    max_eval_configs: int | None = None,
    n_random: int = 10,
    seed: int = 0,
    progress: Any = None,
) -> pd.DataFrame:
    """Leave each task group out in turn, fit on the others, rank the held-out tasks.

    Returns one row per (method, held-out task) with :data:`METRICS`, ``n_configs`` and
    ``fit_s``. ``max_eval_configs`` evaluates a uniform subsample of each held-out task's
    configurations (default: all). Raises :class:`DataError` when there are fewer than 2 groups.
    """
    config = config or RankerConfig()
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise DataError(f"methods must be among {list(METHODS)}, but got {unknown}")
    groups = history.group_of()
    names = sorted(set(groups.values()))
    if len(names) < 2:
        raise DataError(
            f"LODO is impossible: {history.where} has {len(history.task_ids)} task(s) in "
            f"{len(names)} group ({names[0] if names else 'none'!r}); leave-one-group-out needs 2 or more groups"
        )
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []

    for g in names:
        held = [t for t, gg in groups.items() if gg == g]
        train = [t for t, gg in groups.items() if gg != g]
        fitted: dict[str, Any] = {}
        fit_s: dict[str, float] = {}
        for m in methods:
            t0 = time.perf_counter()
            # evaluated by its ranking only: no cost model
            if m == PRIOR:
                fitted[m] = RankingPrior.fit(history, replace(config, fit_cost=False), tasks=train)
            elif m == CONFIG_ONLY:
                fitted[m] = RankingPrior.fit(
                    history, replace(config, use_meta=False, fit_cost=False), tasks=train
                )
            elif m == GLOBAL_BEST:
                fitted[m] = GlobalBest.fit(history, train)
            fit_s[m] = time.perf_counter() - t0
        for t in held:
            ct = history.config_table(t)
            ct = ct.loc[np.isfinite(ct["y_max"].to_numpy(dtype=float))]
            if len(ct) < 2:
                continue
            if max_eval_configs is not None and len(ct) > max_eval_configs:
                ct = ct.iloc[np.sort(rng.choice(len(ct), max_eval_configs, replace=False))]
            X = history.encode(ct)
            y = ct["y_max"].to_numpy(dtype=float)
            meta = history.meta_features(t)
            for m in methods:
                if m == RANDOM:
                    draws = [ranking_metrics(y, rng.random(len(y)), rng) for _ in range(n_random)]
                    res = {k: float(np.mean([d[k] for d in draws])) for k in METRICS}
                elif m == GLOBAL_BEST:
                    res = ranking_metrics(y, fitted[m].score(X), rng)
                else:
                    res = ranking_metrics(y, fitted[m].score_features(meta, X), rng)
                rows.append(
                    {
                        "method": m,
                        "group": g,
                        "task": t,
                        "n_configs": len(y),
                        "fit_s": fit_s[m],
                        **res,
                    }
                )
            if progress is not None:
                progress(f"held out {t}: {len(y)} configurations")
    if not rows:
        raise DataError(
            f"{history.where}: no held-out task has 2 or more configurations with a finite objective"
        )
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric per method over held-out tasks, methods in :data:`METHODS` order."""
    order = [m for m in METHODS if m in set(results["method"])]
    mean = results.groupby("method")[list(METRICS)].mean().reindex(order)
    mean.insert(0, "tasks", results.groupby("method")["task"].nunique().reindex(order))
    return mean.reset_index()


def render_markdown(results: pd.DataFrame, title: str, note: str = "") -> str:
    """A mean table (one row per method) and a per-task table, as markdown."""
    head = [f"### {title}", ""]
    if note:
        head += [note, ""]
    mean = summarize(results)
    lines = head + _table(mean, ["method", "tasks", *METRICS])
    lines += ["", "Per held-out task:", ""]
    per = results.sort_values(["task", "method"], key=_method_key)
    lines += _table(per, ["task", "method", "n_configs", *METRICS])
    return "\n".join(lines) + "\n"


def _method_key(s: pd.Series) -> pd.Series:
    if s.name == "method":
        return s.map({m: i for i, m in enumerate(METHODS)})
    return s


def _table(df: pd.DataFrame, cols: list[str]) -> list[str]:
    out = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" if c in ("method", "task") else "---:" for c in cols) + "|",
    ]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return out


def evaluate_prior(
    prior: RankingPrior,
    history: History,
    max_eval_configs: int | None = None,
    n_random: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """Rank every task of ``history`` with an already fitted ``prior`` (no refit; tasks it was
    trained on are not held out), next to the random order. Same rows as :func:`lodo_evaluate`."""
    if prior.space.to_json()["params"] != history.space.to_json()["params"]:
        raise DataError(
            f"{history.where}: search space differs from the prior's; a prior ranks configurations of its own space"
        )
    rng = np.random.default_rng(seed)
    groups = history.group_of()
    rows: list[dict[str, Any]] = []
    for t in history.task_ids:
        ct = history.config_table(t)
        ct = ct.loc[np.isfinite(ct["y_max"].to_numpy(dtype=float))]
        if len(ct) < 2:
            continue
        if max_eval_configs is not None and len(ct) > max_eval_configs:
            ct = ct.iloc[np.sort(rng.choice(len(ct), max_eval_configs, replace=False))]
        X = history.encode(ct)
        y = ct["y_max"].to_numpy(dtype=float)
        res = ranking_metrics(y, prior.score_features(history.meta_features(t), X), rng)
        base = {"group": groups[t], "task": t, "n_configs": len(y), "fit_s": 0.0}
        rows.append({"method": PRIOR, **base, **res})
        draws = [ranking_metrics(y, rng.random(len(y)), rng) for _ in range(n_random)]
        rows.append(
            {
                "method": RANDOM,
                **base,
                **{k: float(np.mean([d[k] for d in draws])) for k in METRICS},
            }
        )
    if not rows:
        raise DataError(
            f"{history.where}: no task has 2 or more configurations with a finite objective"
        )
    return pd.DataFrame(rows)

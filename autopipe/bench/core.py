"""Leave-one-group-out replay benchmark, Ray-free: per held-out group, offline models are fitted
on the other groups only; each method tunes each held-out task (through a ``run_fn`` the caller
supplies, e.g. :mod:`autopipe.bench.ray_runner`); its recommendation after ``k`` evaluations is
scored by normalized regret and cost. It does not run trials itself.

Definitions (per task; ``y_max`` is the objective made larger-is-better, averaged over the seeds a
configuration was run with; configurations whose runs all failed count as the task's worst):

- ``regret(c) = (best - y_max(c)) / (best - median)`` over the task's configurations (0 when
  ``best == median``); a method's regret at a budget is the mean of this over benchmark seeds.
- ``cost`` of ``k`` evaluations = the costs they ran (an early-stopped one ``f x cost``) + one full
  run of the recommendation, in units of the task's mean full-run cost.

On tables with learning curves, the methods marked ``early_stop`` run as a job with a predictor
runs: each trial stops at the early-stop fraction ``f`` and is scored by the proxy, an
``EarlyPredictor`` (the residual variant over the prior; its prior z-scores out-of-fold over the
training groups) fitted at ``f`` on the training groups only, like the prior. Their model
recommendation is then run in full, whether or not it was run before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autopipe.bench.methods import Method
from autopipe.errors import DataError
from autopipe.history.data import History


# --------------------------------------------------------------------------- truth and regret
@dataclass
class TaskTruth:
    """Seed-averaged ground truth of one task: ``y_max`` and mean cost per configuration key."""

    task: str
    y_max: dict[tuple, float]
    cost: dict[tuple, float]
    best: float
    median: float
    worst: float
    unit_cost: float  # mean full-run cost over configurations: the cost unit of the tables

    @classmethod
    def from_values(
        cls, task: str, keys: Sequence[tuple], y_max: Sequence[float], cost: Sequence[float]
    ) -> TaskTruth:
        y = np.asarray(y_max, dtype=float)
        c = np.asarray(cost, dtype=float)
        ok = np.isfinite(y)
        if ok.sum() < 1:
            raise DataError(f"task {task!r} has no configuration with a finite objective")
        fin = y[ok]
        cfin = c[np.isfinite(c)]
        return cls(
            task=task,
            y_max={k: float(v) for k, v in zip(keys, y, strict=True)},
            cost={k: float(v) for k, v in zip(keys, c, strict=True)},
            best=float(fin.max()),
            median=float(np.median(fin)),
            worst=float(fin.min()),
            unit_cost=float(cfin.mean()) if cfin.size and cfin.mean() > 0 else 1.0,
        )

    @classmethod
    def from_history(cls, history: History, task: str) -> TaskTruth:
        ct = history.config_table(task)
        keys = [history.space.config_key(c) for c in history.records(ct)]
        return cls.from_values(task, keys, ct["y_max"].to_numpy(float), ct["cost"].to_numpy(float))

    def regret(self, key: tuple | None) -> float:
        """Normalized regret of the configuration ``key`` (``None``: nothing chosen, the median)."""
        span = self.best - self.median
        if span <= 0:
            return 0.0
        v = self.y_max.get(key, math.nan) if key is not None else self.median
        if not math.isfinite(v):
            v = self.worst  # a configuration that always failed is the worst outcome
        return (self.best - v) / span


def normalized_regret(y_chosen: float, y_all: Sequence[float], mode: str = "max") -> float:
    """``(best - chosen) / (best - median)`` of seed-averaged values ``y_all`` in the direction
    ``mode`` (``"min"``: smaller is better)."""
    y = np.asarray(y_all, dtype=float)
    sign = 1.0 if mode == "max" else -1.0
    y = sign * y[np.isfinite(y)]
    best, med = float(y.max()), float(np.median(y))
    if best <= med:
        return 0.0
    return (best - sign * float(y_chosen)) / (best - med)


# --------------------------------------------------------------------------- traces
@dataclass
class Eval:
    """One evaluation, in completion order: its configuration key, the fraction of a full run it
    reached, the cost it ran and the objective it observed (``y_max``; ``None`` unless it was a
    finite full-fidelity result); ``rung``: on tables with curves, the larger-is-better score
    multi-fidelity methods ranked it by where it stopped (``replay.RUNG_SCORE``)."""

    key: tuple
    fraction: float
    cost: float
    observed: float | None
    rung: float | None = None


@dataclass
class Trace:
    evals: list[Eval] = field(default_factory=list)
    # Model recommendations after k evaluations (methods with ``model_recommendation``).
    recs: dict[int, tuple] = field(default_factory=dict)
    offline_rec: tuple | None = None  # offline methods: the recommendation, no evaluation
    # Promotion of several early-stopped configurations after k evaluations (``promote > 1``):
    # their keys; each is charged a full run, in place of the one full run of the
    # recommendation (the best of them by its full-run result).
    promoted: dict[int, list[tuple]] = field(default_factory=dict)

    def recommendation(self, k: int) -> tuple | None:
        if self.offline_rec is not None:
            return self.offline_rec
        k = min(k, len(self.evals))
        if k in self.recs:
            return self.recs[k]
        best: tuple[float, int] | None = None
        for i, e in enumerate(self.evals[:k]):
            if e.observed is not None and (best is None or e.observed > best[0]):
                best = (e.observed, i)
        if best is None:
            # No full-fidelity result yet (a multi-fidelity method early in its brackets): its
            # incumbent, the best rung score among the evaluations that got furthest (as
            # hpbandster's ``get_incumbent_id`` picks the best at the largest budget).
            top = max((e.fraction for e in self.evals[:k] if e.rung is not None), default=None)
            cands = [
                (e.rung, i)
                for i, e in enumerate(self.evals[:k])
                if e.rung is not None and e.fraction == top
            ]
            if cands:
                best = max(cands)
        return None if best is None else self.evals[best[1]].key

    def score(self, truth: TaskTruth, k: int) -> tuple[float, float, int]:
        """``(regret, cost in units of the task's mean run, evaluations used)`` after ``k``."""
        rec = self.recommendation(k)
        used = self.evals[: min(k, len(self.evals))]
        spent = sum(e.cost for e in used)
        kk = min(k, len(self.evals))
        full = self.promoted[kk] if self.offline_rec is None and kk in self.promoted else [rec]
        for key in full:
            if key is not None:
                c = truth.cost.get(key, math.nan)
                spent += c if math.isfinite(c) else truth.unit_cost
        return truth.regret(rec), spent / truth.unit_cost, len(used)


# --------------------------------------------------------------------------- LOGO loop
@dataclass
class TaskContext:
    """What a method may know about a held-out task: its replayable runs, meta-features and the
    offline models fitted without its group (``prior``, ``global_best``), plus candidate orders
    (configurations of the task, best first) for the list methods."""

    history: History  # the held-out task's runs only
    task: str
    meta: dict[str, float]
    prior: Any = None
    orders: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Tables with curves: the early-stop fraction of ``early_stop`` methods (1: full runs) and
    # the proxy of their early-stopped trials (``None``: the ledger's fallback proxy).
    early_fraction: float = 1.0
    proxy: Any = None
    predictor: Any = None
    # Early-stop methods: how many configurations of the searcher's shortlist (its
    # recommendation, then the best proxies) run to full fidelity at the end (the job's
    # ``budget.promote``); the best full result is the recommendation.
    promote: int = 1
    # A space that is not a finite grid (e.g. the post-training history's Sobol design): the
    # task's distinct run configurations, the only ones the replay can evaluate exactly. The
    # model-based and random methods propose among them, as they would over hpobench's grid;
    # TPE and BOHB sample the space and are replayed at the nearest run configuration.
    configs: list[dict[str, Any]] | None = None


RunFn = Callable[[TaskContext, Method, int, int, Sequence[int]], Trace]


def budget_of(method: Method, budgets: Sequence[int], autopipe_budget: int) -> list[int]:
    """The budgets at which a method is scored (AutoPipe-family methods stop at theirs)."""
    cap = max(budgets) if method.family == "baseline" else min(autopipe_budget, max(budgets))
    return [b for b in budgets if b <= cap]


def logo_benchmark(
    history: History,
    methods: Sequence[Method],
    run_fn: RunFn,
    budgets: Sequence[int],
    seeds: int,
    autopipe_budget: int,
    tasks: Sequence[str] | None = None,
    prior_config: Any = None,
    progress: Callable[[str], None] | None = None,
    on_task: Callable[[pd.DataFrame], None] | None = None,
    early_fraction: float = 0.5,
    predictor_config: Any = None,
    promote: int = 1,
) -> pd.DataFrame:
    """Rows ``(bench, method, group, task, seed, budget, evals, regret, cost)``; ``on_task`` gets
    the rows so far after each held-out task (partial results of a long run).
    ``early_fraction`` applies to ``early_stop`` methods on tables with curves (see the module
    docstring); ``predictor_config`` is the predictor's ``PredictorConfig`` (default settings);
    ``promote``: how many configurations those methods run to full fidelity at the end."""
    if not (0.0 < early_fraction <= 1.0):
        raise DataError(f"--early-fraction must be in (0, 1], but got {early_fraction}")
    if int(promote) < 1:
        raise DataError(f"--promote must be >= 1, but got {promote}")
    early = early_fraction if history.curves is not None else 1.0
    groups = history.group_of()
    names = sorted(set(groups.values()))
    if len(names) < 2:
        raise DataError(
            f"{history.where}: leave-one-group-out needs 2 or more task groups, but got {len(names)}"
        )
    held_tasks = list(tasks) if tasks is not None else history.task_ids
    unknown = [t for t in held_tasks if t not in groups]
    if unknown:
        raise DataError(f"--tasks must be tasks of {history.where}, but got {unknown}")
    rows: list[dict[str, Any]] = []
    for g in names:
        held = [t for t in held_tasks if groups[t] == g]
        if not held:
            continue
        train = [t for t, gg in groups.items() if gg != g]
        prior, gbest = _fit_offline(history, train, methods, prior_config)
        predictor = None
        if early < 1.0 and prior is not None and any(m.early_stop for m in methods):
            predictor = fit_predictor(history, train, early, prior, prior_config, predictor_config)
        for t in held:
            truth = TaskTruth.from_history(history, t)
            ctx = _context(history, t, prior, gbest, methods, budgets, autopipe_budget)
            ctx.early_fraction = early
            ctx.promote = int(promote)
            if predictor is not None:
                from autopipe.predictor.proxy import make_proxy

                ctx.predictor = predictor
                ctx.proxy = make_proxy(predictor, prior, history.space, ctx.meta, seed=0)
            for m in methods:
                bs = budget_of(m, budgets, autopipe_budget)
                for seed in range(seeds):
                    if m.offline:
                        top = ctx.orders["ranker-top1"][0]
                        trace = Trace(offline_rec=history.space.config_key(top))
                    else:
                        trace = run_fn(ctx, m, seed, max(bs), bs)
                    for b in bs:
                        regret, cost, used = trace.score(truth, b)
                        rows.append(
                            {
                                "bench": history.name,
                                "method": m.name,
                                "group": g,
                                "task": t,
                                "seed": seed,
                                "budget": b,
                                "evals": used,
                                "regret": regret,
                                "cost": cost,
                            }
                        )
                if progress is not None:
                    last = [r for r in rows if r["method"] == m.name and r["task"] == t]
                    fin = [r["regret"] for r in last if r["budget"] == max(bs)]
                    progress(
                        f"{history.name}/{t} {m.name}: regret@{max(bs)} = {np.mean(fin):.3f} "
                        f"over {seeds} seeds"
                    )
            if on_task is not None:
                on_task(pd.DataFrame(rows))
    return pd.DataFrame(rows)


def _fit_offline(
    history: History, train: Sequence[str], methods: Sequence[Method], prior_config: Any
) -> tuple[Any, Any]:
    prior = gbest = None
    if any(m.needs_prior for m in methods):
        from autopipe.prior.ranker import RankingPrior

        prior = RankingPrior.fit(history, prior_config, tasks=train)
    if any(m.needs_global_best for m in methods):
        from autopipe.prior.evaluate import GlobalBest

        gbest = GlobalBest.fit(history, train)
    return prior, gbest


def fit_predictor(
    history: History,
    train: Sequence[str],
    fraction: float,
    prior: Any,
    prior_config: Any = None,
    config: Any = None,
) -> Any:
    """The residual ``EarlyPredictor`` at ``fraction`` fitted on the runs of the tasks ``train``
    only, as a job fits it (:func:`autopipe.history.transfer.fit_predictor`: prior z-scores out-of-fold
    over the training groups; with one training group, ``prior``'s own)."""
    from autopipe.history.transfer import fit_predictor as fit

    return fit(
        history, fraction, tasks=train, prior=prior, ranker_config=prior_config, config=config
    )


def _context(
    history: History,
    task: str,
    prior: Any,
    gbest: Any,
    methods: Sequence[Method],
    budgets: Sequence[int],
    autopipe_budget: int,
) -> TaskContext:
    meta = history.meta_features(task)
    ctx = TaskContext(history.select_tasks([task]), task, meta, prior)
    ct = history.config_table(task)
    if not history.space.is_finite:
        ctx.configs = history.records(ct)
    n = max(budgets) + 1
    names = {m.name for m in methods}
    if names & {"no-bo", "ranker-top1"}:
        s = prior.score_features(meta, history.encode(ct))
        ctx.orders["no-bo"] = ctx.orders["ranker-top1"] = _top(history, ct, s, n)
    if "global-best" in names:
        ctx.orders["global-best"] = _top(history, ct, gbest.score(history.encode(ct)), n)
    return ctx


def _top(history: History, ct: pd.DataFrame, score: np.ndarray, n: int) -> list[dict[str, Any]]:
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")[:n]
    return history.records(ct.iloc[order])

"""Cross-validated evaluation of the early predictor against baselines computed on the same curve
prefixes (last observed value, prefix mean, power-law / exponential extrapolation) and against the
prior alone, with ranking metrics of each proxy vs. the true final objective and a markdown table.
This module evaluates; it does not tune hyperparameters or decide when to stop trials.

Protocol: with 2 or more task groups, leave one group out (the prior is refitted on the training
groups of each fold); with one group, k-fold over configurations (seeds of a configuration stay in
one fold) and the "prior" is a config-only ranker fitted on the training folds of the same task.
The residual variant's training targets use out-of-fold prior scores (an inner split of the
training part), since in-sample prior scores are optimistic and would teach the residual model to
trust the prior more than it should. Every run is predicted once, by the fold that holds it out.

Metrics per task, over runs with a finite final objective, then averaged over tasks; the truth is
the seed-averaged direction-aware final of each run's configuration (``y_max_cfg``); ``spearman``,
``pairwise_acc`` and ``regret@1 = (best - chosen) / (best - median)`` are those of
:func:`autopipe.prior.evaluate.ranking_metrics`. Scope ``prefix``: runs with a curve row at or
below ``f``; scope ``all``: every run, baselines giving runs without a prefix the median baseline
score (a tie) while predictors still use the configuration.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import ConstantInputWarning

from autopipe.errors import DataError
from autopipe.history.data import History
from autopipe.metrics import FRACTION
from autopipe.predictor.early import EarlyPredictor, PredictorConfig
from autopipe.predictor.features import FRACTION_TOL, has_prefix
from autopipe.predictor.targets import prior_scores, run_targets, within_task_z
from autopipe.prior.evaluate import ranking_metrics
from autopipe.prior.ranker import RankerConfig, RankingPrior

PRED_RESIDUAL = "predictor (residual)"
PRED_DIRECT = "predictor (direct)"
PRIOR_ONLY = "prior only (no prefix)"
LAST = "last observed value"
MEAN = "prefix mean"
EXTRAP = "curve extrapolation"
METHODS = (PRED_RESIDUAL, PRED_DIRECT, PRIOR_ONLY, LAST, MEAN, EXTRAP)
PREDICTORS = (PRED_RESIDUAL, PRED_DIRECT)
METRICS = ("spearman", "pairwise_acc", "regret@1")
SCOPES = ("prefix", "all")
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5)
_LOSS_WORDS = ("loss", "perplexity", "ppl", "error")
MIN_POINTS_3P = 4  # fewer points than this get a 2-parameter power law


# --------------------------------------------------------------------------- signal
def detect_signal(history: History, signal: str | None = None) -> tuple[str, str]:
    """The objective-like curve signal and its direction (``"min"``/``"max"``): ``signal`` when
    given, else the column named like the objective metric, else the first loss-like column
    (validation/eval ones first). Loss-like names are minimized; others follow the objective."""
    history.require_curves("the early predictor and its baselines need")
    cols = history.curve_signals
    if signal is not None:
        if signal not in cols:
            raise DataError(f"--signal must be one of the curve signals {cols}, but got {signal!r}")
        name = signal
    elif history.objective in cols:
        name = history.objective
    else:
        lossy = [c for c in cols if any(w in c.lower() for w in _LOSS_WORDS)]
        if not lossy:
            raise DataError(
                f"{history.where}: no curve signal matches the objective {history.objective!r} "
                f"or looks like a loss among {cols}; name one with --signal"
            )
        held = [c for c in lossy if "val" in c.lower() or "eval" in c.lower()]
        name = (held or lossy)[0]
    if name == history.objective:
        return name, history.mode
    return name, "min" if any(w in name.lower() for w in _LOSS_WORDS) else history.mode


# --------------------------------------------------------------------------- baselines
def _power(f: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a + b * np.power(f, -c)


def _exp(f: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a + b * np.exp(-c * f)


def extrapolate(fr: np.ndarray, v: np.ndarray) -> tuple[float, str]:
    """Value of the curve ``v(fr)`` extrapolated to fraction 1, and the model used.

    4+ points: the better (lower squared error) of ``a + b f^-c`` and ``a + b exp(-c f)``
    fitted by least squares; 2-3 points: a least-squares pure power law ``b f^-c`` (a line in
    log-log, when all values are positive), else a straight line; 1 point or failed fits: the
    last value.
    The result is clipped to one observed span beyond the observed range, since a 3-parameter
    fit through a handful of points can run off to values no run reaches.
    """
    ok = np.isfinite(fr) & np.isfinite(v)
    fr, v = np.asarray(fr, dtype=float)[ok], np.asarray(v, dtype=float)[ok]
    if v.size == 0:
        return math.nan, "none"
    order = np.argsort(fr, kind="stable")
    fr, v = fr[order], v[order]
    last = float(v[-1])
    if v.size == 1 or fr[-1] <= fr[0]:
        return last, "last"
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo

    def clip(x: float) -> float:
        return float(min(max(x, lo - span), hi + span))

    if v.size < MIN_POINTS_3P:
        # too few points for 3 parameters (an exact, ill-conditioned fit): least squares of a
        # pure power law, a line in log-log, when all values are positive, else a line
        if np.all(v > 0):
            c1, c0 = np.polyfit(np.log(fr), np.log(v), 1)
            return clip(math.exp(c0)), f"power ({v.size} points)"
        c1, c0 = np.polyfit(fr, v, 1)
        return clip(float(c0 + c1)), f"linear ({v.size} points)"
    fits = []
    d = v[0] - v[-1]
    for name, fn, p0, bounds in (
        (
            "power",
            _power,
            (last, d / max(fr[0] ** -0.5 - fr[-1] ** -0.5, 1e-9), 0.5),
            ([-np.inf, -np.inf, 1e-3], [np.inf, np.inf, 3.0]),
        ),
        ("exponential", _exp, (last, d, 3.0), ([-np.inf, -np.inf, 1e-3], [np.inf, np.inf, 50.0])),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow while exploring
            try:
                popt, _ = curve_fit(fn, fr, v, p0=p0, bounds=bounds, maxfev=1000)
            except (RuntimeError, ValueError, OptimizeWarning, FloatingPointError):
                continue
        sse = float(np.sum((fn(fr, *popt) - v) ** 2))
        at1 = float(fn(np.array([1.0]), *popt)[0])
        if math.isfinite(sse) and math.isfinite(at1):
            fits.append((sse, name, at1))
    if not fits:
        return last, "last (fit failed)"
    _, name, at1 = min(fits)
    return clip(at1), name


@dataclass
class BaselineScores:
    """Larger-is-better proxy scores ``(n,)`` per baseline (NaN without a prefix), and how often
    each extrapolation model was used."""

    scores: dict[str, np.ndarray]
    extrapolation_models: dict[str, int] = field(default_factory=dict)


def baseline_scores(
    history: History, run_ids: Sequence[str], signal: str, mode: str, fraction: float
) -> BaselineScores:
    """Last observed value, prefix mean and extrapolation of ``signal`` over each run's prefix at
    ``fraction``, signed so that larger is better (``mode`` is the signal's direction)."""
    n = len(run_ids)
    out = {LAST: np.full(n, np.nan), MEAN: np.full(n, np.nan), EXTRAP: np.full(n, np.nan)}
    used: dict[str, int] = {}
    curves = history.curves
    if curves is None or n == 0:
        return BaselineScores(out, used)
    fr_all = curves[FRACTION].to_numpy(dtype=float)
    sub = curves.loc[fr_all <= fraction + FRACTION_TOL, ["run_id", FRACTION, signal]]
    sub = sub.loc[np.isfinite(sub[signal].to_numpy(dtype=float))]
    groups = sub.sort_values(FRACTION, kind="stable").groupby(sub["run_id"].astype(str))
    index = {str(r): i for i, r in enumerate(run_ids)}
    sign = 1.0 if mode == "max" else -1.0
    for rid, g in groups:
        i = index.get(str(rid))
        if i is None:
            continue
        fr = g[FRACTION].to_numpy(dtype=float)
        v = g[signal].to_numpy(dtype=float)
        out[LAST][i] = sign * v[-1]
        out[MEAN][i] = sign * v.mean()
        x, how = extrapolate(fr, v)
        out[EXTRAP][i] = sign * x
        used[how] = used.get(how, 0) + 1
    return BaselineScores(out, used)


# --------------------------------------------------------------------------- folds and priors
def _subset(history: History, run_ids: Sequence[str]) -> History:
    keep = set(run_ids)
    runs = history.runs.loc[history.runs["run_id"].astype(str).isin(keep)].reset_index(drop=True)
    return History(
        space=history.space,
        runs=runs,
        tasks=history.tasks,
        curves=None,
        objective=history.objective,
        mode=history.mode,
        cost_unit=history.cost_unit,
        name=history.name,
        source=history.source,
    )


def _config_folds(frame: pd.DataFrame, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of ``frame`` split into ``k`` folds of whole configurations."""
    cfgs = np.unique(frame["config_id"].to_numpy())
    if len(cfgs) < k:
        raise DataError(
            f"--folds must be <= the number of configurations ({len(cfgs)}), but got {k}"
        )
    fold_of = dict(zip(rng.permutation(cfgs), np.arange(len(cfgs)) % k, strict=True))
    f = frame["config_id"].map(fold_of).to_numpy()
    return [np.flatnonzero(f == j) for j in range(k)]


def _fit_prior_scores(
    history: History,
    fit_rows: pd.DataFrame,
    score_rows: pd.DataFrame,
    ranker: RankerConfig,
    by_task: bool,
) -> np.ndarray:
    """Fit the prior on ``fit_rows`` (its tasks when ``by_task``, else its runs) and score
    ``score_rows``."""
    ranker = replace(ranker, fit_cost=False)  # only its scores are used here
    if by_task:
        prior = RankingPrior.fit(history, ranker, tasks=sorted(set(fit_rows["task"])))
    else:
        prior = RankingPrior.fit(_subset(history, fit_rows["run_id"].tolist()), ranker)
    return prior_scores(prior, history, score_rows)


def _oof_prior_scores(
    history: History,
    train: pd.DataFrame,
    ranker: RankerConfig,
    by_task: bool,
    n_inner: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, str]:
    """Out-of-fold prior scores of the ``train`` rows: leave one training group out when
    ``by_task`` (in-sample if there is only one training group), else an inner k-fold."""
    out = np.zeros(len(train))
    if by_task:
        groups = history.group_of()
        g = train["task"].map(groups).to_numpy()
        names = sorted(set(g))
        if len(names) < 2:
            return _fit_prior_scores(history, train, train, ranker, True), "in-sample"
        for name in names:
            held = g == name
            out[held] = _fit_prior_scores(history, train.loc[~held], train.loc[held], ranker, True)
        return out, f"leave-one-group-out over {len(names)} training groups"
    for idx in _config_folds(train, n_inner, rng):
        held = np.zeros(len(train), dtype=bool)
        held[idx] = True
        out[held] = _fit_prior_scores(history, train.loc[~held], train.loc[held], ranker, False)
    return out, f"{n_inner}-fold over training configurations"


# --------------------------------------------------------------------------- evaluation
@dataclass
class Evaluation:
    """Per-task metric rows and what the protocol did."""

    rows: pd.DataFrame
    protocol: str
    signal: str
    signal_mode: str
    prior_kind: str
    prior_oof: str
    coverage: dict[float, float]
    extrapolation_models: dict[float, dict[str, int]]
    seconds: float
    n_peers: int = 0


def evaluate_predictor(
    history: History,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    signal: str | None = None,
    n_folds: int = 5,
    config: PredictorConfig | None = None,
    ranker: RankerConfig | None = None,
    seed: int = 0,
    progress: Callable[[str], Any] | None = None,
    n_peers: int = 7,
) -> Evaluation:
    """Cross-validate both predictor variants at each fraction next to the baselines (see the
    module docstring). A held-out run's peer ranks use ``n_peers`` random other held-out runs of
    its task (as in an 8-trial job at ``n_peers=7``). Raises :class:`DataError` when the history
    has no curves."""
    t_start = time.perf_counter()
    fractions = [float(f) for f in fractions]
    bad = [f for f in fractions if not (0.0 < f <= 1.0)]
    if bad or not fractions:
        raise DataError(f"--fraction values must be in (0, 1], but got {bad or fractions}")
    if n_folds < 2:
        raise DataError(f"--folds must be >= 2, but got {n_folds}")
    if n_peers < 0:
        raise DataError(f"--peers must be >= 0, but got {n_peers}")
    sig, sig_mode = detect_signal(history, signal)
    config = config or PredictorConfig()
    frame = run_targets(history)
    if len(frame) < 2 * n_folds:
        raise DataError(
            f"{history.where}: evaluation needs at least {2 * n_folds} runs with a finite "
            f"objective, but got {len(frame)}"
        )
    rng = np.random.default_rng(seed)
    groups = history.group_of()
    group_names = sorted({groups[t] for t in frame["task"]})
    by_task = len(group_names) >= 2
    if by_task:
        g = frame["task"].map(groups).to_numpy()
        folds = [np.flatnonzero(g == name) for name in group_names]
        protocol = f"leave-one-group-out over {len(group_names)} groups"
        ranker = ranker or RankerConfig(seed=seed, n_jobs=config.n_jobs)
        prior_kind = "ranking prior (config + meta) fitted on the training groups"
    else:
        folds = _config_folds(frame, n_folds, rng)
        protocol = f"{n_folds}-fold over configurations of the single task group"
        ranker = ranker or RankerConfig(seed=seed, use_meta=False, n_jobs=config.n_jobs)
        ranker = replace(ranker, use_meta=False)
        prior_kind = "config-only ranker fitted on the training folds of the same task"

    n = len(frame)
    run_ids = frame["run_id"].tolist()
    pred = {(m, f): np.full(n, np.nan) for m in PREDICTORS for f in fractions}
    var = {(m, f): np.full(n, np.nan) for m in PREDICTORS for f in fractions}
    prior_test = np.full(n, np.nan)
    prior_oof = ""
    for j, test in enumerate(folds):
        train = np.setdiff1d(np.arange(n), test)
        tr, te = frame.iloc[train], frame.iloc[test]
        prior_test[test] = _fit_prior_scores(history, tr, te, ranker, by_task)
        p_train, prior_oof = _oof_prior_scores(
            history, tr.reset_index(drop=True), ranker, by_task, max(2, n_folds - 1), rng
        )
        tr_ids, te_ids = tr["run_id"].tolist(), te["run_id"].tolist()
        for f in fractions:
            cfg = replace(config, seed=config.seed + 1000 * j)
            direct = EarlyPredictor.fit(history, f, run_ids=tr_ids, config=cfg)
            resid = EarlyPredictor.fit(history, f, prior_z=p_train, run_ids=tr_ids, config=cfg)
            for name, model, p in (
                (PRED_DIRECT, direct, None),
                (PRED_RESIDUAL, resid, prior_test[test]),
            ):
                got, mu, v = model.predict_history(history, te_ids, p, n_peers=n_peers)
                if got["run_id"].tolist() != te_ids:
                    raise DataError("predict_history returned runs in another order")
                pred[(name, f)][test] = mu
                var[(name, f)][test] = v
        if progress is not None:
            progress(f"fold {j + 1}/{len(folds)}: {len(test)} held-out runs")

    z_true = within_task_z(frame, config.target)  # the scale the predictors aim at
    rows: list[dict[str, Any]] = []
    coverage: dict[float, float] = {}
    extrap_used: dict[float, dict[str, int]] = {}
    for f in fractions:
        base = baseline_scores(history, run_ids, sig, sig_mode, f)
        extrap_used[f] = base.extrapolation_models
        covered = has_prefix(history.curves, run_ids, f)
        coverage[f] = float(covered.mean())
        scores = {
            PRED_RESIDUAL: pred[(PRED_RESIDUAL, f)],
            PRED_DIRECT: pred[(PRED_DIRECT, f)],
            PRIOR_ONLY: prior_test,
            **base.scores,
        }
        for scope in SCOPES:
            for t, idx in frame.groupby("task", sort=True).indices.items():
                idx = idx[covered[idx]] if scope == "prefix" else idx
                y = frame["y_max_cfg"].to_numpy(dtype=float)[idx]
                for m in METHODS:
                    row: dict[str, Any] = {
                        "fraction": f,
                        "scope": scope,
                        "method": m,
                        "task": t,
                        "runs": len(idx),
                        "coverage": float(covered[frame["task"].to_numpy() == t].mean()),
                    }
                    if len(idx) >= 3 and np.ptp(y) > 0:
                        s = scores[m][idx]
                        s = np.where(np.isfinite(s), s, _median_or_zero(s))
                        with warnings.catch_warnings():
                            # all-tied baseline scores (no prefix at f): Spearman is undefined
                            # and ranking_metrics reports 0
                            warnings.simplefilter("ignore", ConstantInputWarning)
                            res = ranking_metrics(y, s, rng)
                        row.update({k: res[k] for k in METRICS})
                        if m in PREDICTORS:
                            err = s - z_true[idx]
                            row["rmse_z"] = float(np.sqrt(np.mean(err**2)))
                            row["noise_ratio"] = float(np.mean(err**2) / np.mean(var[(m, f)][idx]))
                    else:
                        row.update({k: math.nan for k in METRICS})
                    rows.append(row)
    return Evaluation(
        rows=pd.DataFrame(rows),
        protocol=protocol,
        signal=sig,
        signal_mode=sig_mode,
        prior_kind=prior_kind,
        prior_oof=prior_oof,
        coverage=coverage,
        extrapolation_models=extrap_used,
        seconds=time.perf_counter() - t_start,
        n_peers=n_peers if config.relative else 0,
    )


def _median_or_zero(s: np.ndarray) -> float:
    fin = s[np.isfinite(s)]
    return float(np.median(fin)) if fin.size else 0.0


# --------------------------------------------------------------------------- rendering
def summarize(ev: Evaluation, scope: str) -> pd.DataFrame:
    """Mean over tasks per (fraction, method) for one scope, methods in :data:`METHODS` order."""
    r = ev.rows.loc[ev.rows["scope"] == scope]
    cols = [c for c in (*METRICS, "rmse_z", "noise_ratio") if c in r.columns]
    agg = r.groupby(["fraction", "method"], sort=False).agg(
        tasks=("task", "nunique"), runs=("runs", "sum"), **{c: (c, "mean") for c in cols}
    )
    agg = agg.reset_index()
    agg["_m"] = agg["method"].map({m: i for i, m in enumerate(METHODS)})
    return agg.sort_values(["fraction", "_m"]).drop(columns="_m").reset_index(drop=True)


def render_markdown(ev: Evaluation, title: str, note: str = "") -> str:
    """Both scopes as markdown tables (one row per fraction and method)."""
    lines = [f"### {title}", ""]
    if note:
        lines += [note, ""]
    cov = ", ".join(f"f={f:g}: {c:.0%}" for f, c in ev.coverage.items())
    lines += [
        f"Protocol: {ev.protocol}. Prior: {ev.prior_kind}; the residual variant trains on "
        f"out-of-fold prior scores ({ev.prior_oof}). Baseline signal: `{ev.signal}` "
        f"({ev.signal_mode}). Runs with a curve row at or below f (coverage): {cov}. "
        + (
            f"Predictors rank each held-out prefix among {ev.n_peers} random other held-out "
            "runs of its task (its peers in a job of that many more trials). "
            if ev.n_peers
            else ""
        )
        + f"{ev.seconds:.0f}s.",
        "",
    ]
    for scope, head in (
        ("prefix", "Runs with a prefix at f (where every method has data):"),
        (
            "all",
            "All runs (baselines give runs without a prefix the median score; predictors use "
            "the configuration):",
        ),
    ):
        lines += [head, ""]
        lines += _table(summarize(ev, scope))
        lines.append("")
    used = "; ".join(
        f"f={f:g}: " + ", ".join(f"{k} {v}" for k, v in sorted(d.items()))
        for f, d in ev.extrapolation_models.items()
    )
    lines += [f"Extrapolation models used (runs): {used}.", ""]
    return "\n".join(lines)


def _table(df: pd.DataFrame) -> list[str]:
    cols = ["fraction", "method", "runs", *METRICS, "rmse_z", "noise_ratio"]
    cols = [c for c in cols if c in df.columns]
    out = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" if c == "method" else "---:" for c in cols) + "|",
    ]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c == "fraction":
                cells.append(f"{v:g}")
            elif isinstance(v, float):
                cells.append("—" if not math.isfinite(v) else f"{v:.3f}")
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return out


__all__ = [
    "DEFAULT_FRACTIONS",
    "EXTRAP",
    "LAST",
    "MEAN",
    "METHODS",
    "PRED_DIRECT",
    "PRED_RESIDUAL",
    "PRIOR_ONLY",
    "BaselineScores",
    "Evaluation",
    "baseline_scores",
    "detect_signal",
    "evaluate_predictor",
    "extrapolate",
    "render_markdown",
    "summarize",
]

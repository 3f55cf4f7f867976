"""Features of a learning-curve prefix: per signal, summary statistics over the whole prefix and
over its last 20 %, from a run table's curves or from the reports of a live trial. This module
turns curves into numbers only; it does not encode configurations (:mod:`autopipe.space`), filter
features or fit models.

Notation: a prefix at fraction ``f`` is the set of curve rows with ``fraction <= f + tol``; ``fr``
is its ``(k,)`` fractions in increasing order and ``V`` its ``(k, s)`` values of the ``s`` signals
(NaN where a signal was not measured). The feature vector has ``len(names)`` entries, NaN where a
statistic is undefined (no row, or one row for a slope); XGBoost treats NaN as missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from autopipe import metrics
from autopipe.errors import DataError

# NOTE: scan_llm stores its 10 % checkpoints at fraction 0.10000197 (step rounding); without a
# tolerance no run of it has a prefix at f = 0.1. 1e-4 of a run is far below any report interval.
FRACTION_TOL = 1e-4
LAST_WINDOW = 0.2  # the "last 20 %" window: rows with fraction >= (1 - 0.2) * last fraction
WINDOWS = ("all", "last20")
STATS = ("mean", "max", "min", "std", "slope", "diff", "last")
GLOBAL_FEATURES = ("prefix:n_points", "prefix:last_fraction")


def signal_stats(fr: np.ndarray, v: np.ndarray) -> np.ndarray:
    """:data:`STATS` of one signal with values ``v`` at fractions ``fr`` (both ``(k,)``, sorted by
    fraction, NaN values skipped): mean, max, min, population std, least-squares slope per unit
    fraction, mean first difference and last value."""
    ok = np.isfinite(v)
    x, y = fr[ok], v[ok]
    out = np.full(len(STATS), np.nan)
    if y.size == 0:
        return out
    out[0], out[1], out[2], out[3] = y.mean(), y.max(), y.min(), y.std()
    out[6] = y[-1]
    if y.size >= 2:
        out[5] = float(np.mean(np.diff(y)))
        dx = x - x.mean()
        sxx = float(dx @ dx)
        if sxx > 0:
            out[4] = float(dx @ (y - y.mean())) / sxx
    return out


@dataclass(frozen=True)
class PrefixFeaturizer:
    """Prefix features of ``signals`` at ``fraction``; the same layout for history curves and
    live reports, so a model fitted on one scores the other."""

    signals: tuple[str, ...]
    fraction: float
    tol: float = FRACTION_TOL

    def __post_init__(self) -> None:
        if not (0.0 < self.fraction <= 1.0):
            raise DataError(f"fraction must be in (0, 1], but got {self.fraction}")
        if not self.signals:
            raise DataError("signals must name at least one curve signal, but got none")
        if metrics.FRACTION in self.signals:
            raise DataError(f"signals must not include {metrics.FRACTION!r}, it is the x axis")

    @property
    def names(self) -> list[str]:
        out = [f"{s}:{w}:{st}" for s in self.signals for w in WINDOWS for st in STATS]
        return out + list(GLOBAL_FEATURES)

    @property
    def n_features(self) -> int:
        return len(self.signals) * len(WINDOWS) * len(STATS) + len(GLOBAL_FEATURES)

    def from_arrays(self, fr: np.ndarray, V: np.ndarray) -> np.ndarray:
        """Features ``(n_features,)`` of one run given all its rows (``fr`` ``(k,)``, ``V``
        ``(k, s)`` in ``signals`` order, any order, rows past the prefix are dropped here)."""
        fr = np.asarray(fr, dtype=float)
        V = np.asarray(V, dtype=float).reshape(len(fr), len(self.signals))
        keep = np.isfinite(fr) & (fr <= self.fraction + self.tol)
        fr, V = fr[keep], V[keep]
        order = np.argsort(fr, kind="stable")
        fr, V = fr[order], V[order]
        out = np.full(self.n_features, np.nan)
        out[-2] = float(len(fr))
        if len(fr) == 0:
            return out
        f_last = float(fr[-1])
        out[-1] = f_last
        win = fr >= (1.0 - LAST_WINDOW) * f_last  # always holds the last row
        k = len(STATS)
        for j in range(len(self.signals)):
            base = j * len(WINDOWS) * k
            out[base : base + k] = signal_stats(fr, V[:, j])
            out[base + k : base + 2 * k] = signal_stats(fr[win], V[win, j])
        return out

    def from_reports(self, reports: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Features of one live trial from its reports (dicts keyed by :mod:`autopipe.metrics`
        names, each with ``fraction``; other keys and non-numeric values are ignored).

        Reports are brought to the layout of a history's curves, which have one row per step
        (MLflow joins the metrics a step logged): reports at the same fraction (a trainer's
        training log and its evaluation log) are merged, the later value of a signal winning,
        and reports without any signal (the trial's stop or checkpoint report) are dropped."""
        rows: dict[float, np.ndarray] = {}
        for i, r in enumerate(reports):
            if metrics.FRACTION not in r:
                raise DataError(f"reports[{i}] must have a {metrics.FRACTION!r} key, but has none")
            f = as_float(r[metrics.FRACTION])
            if not (0.0 < f <= 1.0):
                raise DataError(
                    f"reports[{i}].{metrics.FRACTION} must be in (0, 1], but got {r[metrics.FRACTION]!r}"
                )
            v = np.array([as_float(r[s]) if s in r else math.nan for s in self.signals])
            if not np.isfinite(v).any():
                continue
            key = round(f, 12)
            old = rows.get(key)
            rows[key] = v if old is None else np.where(np.isfinite(v), v, old)
        fr = np.array(list(rows), dtype=float)
        V = np.vstack(list(rows.values())) if rows else np.empty((0, len(self.signals)))
        return self.from_arrays(fr, V)

    def from_curves(self, curves: pd.DataFrame | None, run_ids: Sequence[str]) -> np.ndarray:
        """Features ``(len(run_ids), n_features)`` from a curves table (``run_id``, ``fraction``
        and signal columns; a signal it lacks is NaN). Runs without rows get all-NaN statistics."""
        X = np.full((len(run_ids), self.n_features), np.nan)
        X[:, -2] = 0.0
        if curves is None or len(curves) == 0 or len(run_ids) == 0:
            return X
        fr_all = curves[metrics.FRACTION].to_numpy(dtype=float)
        sel = np.isfinite(fr_all) & (fr_all <= self.fraction + self.tol)
        sub = curves.loc[sel]
        if len(sub) == 0:
            return X
        cols = [
            pd.to_numeric(sub[s], errors="coerce").to_numpy(dtype=float)
            if s in sub.columns
            else np.full(len(sub), np.nan)
            for s in self.signals
        ]
        V_all = np.column_stack(cols) if cols else np.empty((len(sub), 0))
        fr = sub[metrics.FRACTION].to_numpy(dtype=float)
        rid = sub["run_id"].astype(str).to_numpy()
        order = np.argsort(rid, kind="stable")
        rid, fr, V_all = rid[order], fr[order], V_all[order]
        uniq, start = np.unique(rid, return_index=True)
        end = np.append(start[1:], len(rid))
        where = {u: (a, b) for u, a, b in zip(uniq, start, end, strict=True)}
        for i, r in enumerate(run_ids):
            span = where.get(str(r))
            if span is not None:
                a, b = span
                X[i] = self.from_arrays(fr[a:b], V_all[a:b])
        return X


def as_float(v: object) -> float:
    """``v`` as a finite float, else NaN (non-numbers, NaN and inf alike)."""
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def has_prefix(curves: pd.DataFrame | None, run_ids: Sequence[str], fraction: float) -> np.ndarray:
    """Boolean ``(len(run_ids),)``: whether each run has a curve row at or below ``fraction``."""
    if curves is None or len(curves) == 0:
        return np.zeros(len(run_ids), dtype=bool)
    fr = curves[metrics.FRACTION].to_numpy(dtype=float)
    seen = set(curves.loc[fr <= fraction + FRACTION_TOL, "run_id"].astype(str))
    return np.array([str(r) in seen for r in run_ids], dtype=bool)


__all__ = [
    "FRACTION_TOL",
    "as_float",
    "GLOBAL_FEATURES",
    "LAST_WINDOW",
    "STATS",
    "WINDOWS",
    "PrefixFeaturizer",
    "has_prefix",
    "signal_stats",
]

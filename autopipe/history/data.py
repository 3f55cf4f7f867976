"""The in-memory history: runs, curves and task meta-features of one search space, and the
derived views every learner uses (seed-averaged, direction-aware objective per configuration).

Notation: ``y`` is the objective as recorded (better in direction ``mode``); ``y_max`` is ``y``
when ``mode == "max"`` and ``-y`` otherwise, so that larger is always better. This module holds
data and views only; it does not read files (``runtable``, ``mlflow_reader``) or fit models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autopipe.errors import DataError
from autopipe.metrics import FRACTION
from autopipe.space import Space

MODES = ("max", "min")
META_PREFIX = "meta_"  # tasks-table columns holding meta-features
RUN_KEY_COLUMNS = ("run_id", "task", "seed")
Y = "y"  # in-memory name of the objective column of ``runs``
COST = "cost"  # in-memory name of the cost column of ``runs``
STATUS = "status"


def is_present(v: Any) -> bool:
    """A recorded value is there: not ``None``, not NaN (an inactive parameter, a missing signal)."""
    return v is not None and not (isinstance(v, float) and math.isnan(v))


@dataclass
class History:
    """Runs of configurations of one ``space`` on one or more tasks.

    ``runs`` has ``run_id, task, seed``, one column per parameter (NaN/None where a conditional
    parameter is inactive), ``y``, ``cost`` and ``status``. ``tasks`` has ``task, group`` and
    ``meta_*`` float columns. ``curves`` (optional) has ``run_id, fraction`` and signal columns.
    """

    space: Space
    runs: pd.DataFrame
    tasks: pd.DataFrame
    curves: pd.DataFrame | None = None
    objective: str = "objective"
    mode: str = "max"
    cost_unit: str = "seconds"
    name: str = "history"
    source: str = ""
    _config_cache: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DataError(
                f"{self.where}: objective mode must be one of {list(MODES)}, but got {self.mode!r}"
            )
        need = [*RUN_KEY_COLUMNS, *self.space.names, Y, COST, STATUS]
        missing = [c for c in need if c not in self.runs.columns]
        if missing:
            raise DataError(f"{self.where}: runs miss columns {missing}")
        for c in ("task", "group"):
            if c not in self.tasks.columns:
                raise DataError(f"{self.where}: tasks miss column {c!r}")
        unknown = sorted(set(self.runs["task"].unique()) - set(self.tasks["task"]))
        if unknown:
            raise DataError(
                f"{self.where}: runs name tasks absent from the tasks table: {unknown[:5]}"
            )

    @property
    def where(self) -> str:
        return self.source or self.name

    # ----------------------------------------------------------------- tasks
    @property
    def task_ids(self) -> list[str]:
        return [str(t) for t in self.tasks["task"]]

    @property
    def meta_columns(self) -> list[str]:
        return [c for c in self.tasks.columns if str(c).startswith(META_PREFIX)]

    @property
    def meta_names(self) -> list[str]:
        """Meta-feature names without the ``meta_`` prefix."""
        return [c[len(META_PREFIX) :] for c in self.meta_columns]

    def group_of(self) -> dict[str, str]:
        return dict(
            zip(self.tasks["task"].astype(str), self.tasks["group"].astype(str), strict=True)
        )

    def meta_features(self, task: str) -> dict[str, float]:
        """Meta-features of ``task`` (names without prefix); missing values are left out."""
        row = self.tasks.loc[self.tasks["task"] == task]
        if row.empty:
            raise DataError(f"{self.where}: no task {task!r}; tasks: {self.task_ids[:10]}")
        out: dict[str, float] = {}
        for c in self.meta_columns:
            v = float(row.iloc[0][c])
            if math.isfinite(v):
                out[c[len(META_PREFIX) :]] = v
        return out

    # ----------------------------------------------------------------- objective
    def y_max(self, y: np.ndarray | pd.Series | float) -> Any:
        """Direction-aware objective: larger is better."""
        return y if self.mode == "max" else -y

    def config_table(self, task: str | None = None) -> pd.DataFrame:
        """One row per (task, configuration): seed-averaged ``y`` over runs with a finite ``y``,
        ``y_max``, ``n_runs``, ``n_ok``, mean ``cost`` and ``y_sd``, the standard deviation of
        ``y`` over those runs (NaN with fewer than 2). Configurations whose runs all failed keep
        ``y = NaN``."""
        key = task if task is not None else "\0all"
        if key in self._config_cache:
            return self._config_cache[key]
        runs = self.runs if task is None else self.runs.loc[self.runs["task"] == task]
        keys = ["task", *self.space.names]
        y = runs[Y].astype(float)
        finite = np.isfinite(y.to_numpy())
        frame = runs[keys].copy()
        frame["_y"] = y.where(finite)
        frame["_ok"] = finite.astype(np.int64)
        frame["_cost"] = runs[COST].astype(float)
        g = frame.groupby(keys, dropna=False, sort=False, observed=True)
        table = g.agg(
            y=("_y", "mean"),
            n_ok=("_ok", "sum"),
            n_runs=("_ok", "size"),
            cost=("_cost", "mean"),
            y_sd=("_y", "std"),
        ).reset_index()
        table["y_max"] = self.y_max(table["y"].to_numpy())
        self._config_cache[key] = table
        return table

    def configs(self, task: str) -> pd.DataFrame:
        """Distinct configurations run on ``task`` (parameter columns only)."""
        return self.config_table(task)[self.space.names]

    # ----------------------------------------------------------------- encoding
    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Parameter columns of ``frame`` -> features ``X`` of shape ``(n, space.n_features)``."""
        return self.space.encode_columns({n: frame[n].to_numpy() for n in self.space.names})

    def records(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """Parameter columns of ``frame`` -> configuration dicts (inactive parameters dropped)."""
        return frame_to_configs(self.space, frame)

    # ----------------------------------------------------------------- subsets
    def select_tasks(self, tasks: Iterable[str]) -> History:
        keep = set(tasks)
        runs = self.runs.loc[self.runs["task"].isin(keep)].reset_index(drop=True)
        curves = None
        if self.curves is not None:
            curves = self.curves.loc[self.curves["run_id"].isin(set(runs["run_id"]))].reset_index(
                drop=True
            )
        return History(
            space=self.space,
            runs=runs,
            tasks=self.tasks.loc[self.tasks["task"].isin(keep)].reset_index(drop=True),
            curves=curves,
            objective=self.objective,
            mode=self.mode,
            cost_unit=self.cost_unit,
            name=self.name,
            source=self.source,
        )

    @property
    def curve_signals(self) -> list[str]:
        if self.curves is None:
            return []
        return [c for c in self.curves.columns if c not in ("run_id", FRACTION)]

    def require_curves(self, need: str) -> None:
        """Raise :class:`DataError` naming why there are no curve signals (no curves file, or
        one with only run ids and fractions) and what ``need`` s them."""
        if self.curve_signals:
            return
        why = (
            "no curves (no curves.parquet)"
            if self.curves is None
            else "curves without signal columns (curves.parquet has only run_id and fraction)"
        )
        raise DataError(f"{self.where}: the history has {why}; {need} learning curves")

    def summary(self) -> dict[str, Any]:
        """Counts and ranges used by ``autopipe history show``."""
        table = self.config_table()
        y = self.runs[Y].to_numpy(dtype=float)
        fin = y[np.isfinite(y)]
        per_task = []
        for t in self.task_ids:
            tt = table.loc[table["task"] == t]
            ym = tt["y_max"].to_numpy(dtype=float)
            ym = ym[np.isfinite(ym)]
            seed_sd, replicated = pooled_seed_sd(tt)
            best = float(self.y_max(ym.max())) if ym.size else math.nan
            median = float(self.y_max(np.median(ym))) if ym.size else math.nan
            span = abs(best - median)
            per_task.append(
                {
                    "task": t,
                    "group": self.group_of()[t],
                    "runs": int(tt["n_runs"].sum()),
                    "configs": len(tt),
                    "best": best,
                    "median": median,
                    "replicated": replicated,
                    "seed_sd": seed_sd,
                    # one seed's standard deviation in normalized-regret units (best - median)
                    "seed_sd_ratio": seed_sd / span if span > 0 else math.nan,
                }
            )
        return {
            "name": self.name,
            "source": self.source,
            "objective": self.objective,
            "mode": self.mode,
            "cost_unit": self.cost_unit,
            "params": self.space.names,
            "tasks": len(self.tasks),
            "groups": int(self.tasks["group"].nunique()),
            "runs": len(self.runs),
            "configs": len(table),
            "seeds": int(self.runs["seed"].nunique()),
            "status": {str(k): int(v) for k, v in self.runs[STATUS].value_counts().items()},
            "meta_features": len(self.meta_columns),
            "curve_signals": self.curve_signals,
            "curve_rows": 0 if self.curves is None else len(self.curves),
            "y_min": float(fin.min()) if fin.size else math.nan,
            "y_median": float(np.median(fin)) if fin.size else math.nan,
            "y_max": float(fin.max()) if fin.size else math.nan,
            "per_task": per_task,
        }


def pooled_seed_sd(table: pd.DataFrame) -> tuple[float, int]:
    """Seed noise of a :meth:`History.config_table`: the median over configurations with 2 or
    more finite runs of their standard deviation of ``y`` across seeds, and the number of such
    configurations; ``(nan, 0)`` when there are none. A median, not a pooled variance: a few
    diverged runs (hpolib losses up to 1e8) would otherwise be the whole estimate."""
    rep = table.loc[(table["n_ok"] >= 2) & np.isfinite(table["y_sd"].to_numpy(dtype=float))]
    if rep.empty:
        return math.nan, 0
    return float(np.median(rep["y_sd"].to_numpy(dtype=float))), len(rep)


def frame_to_configs(space: Space, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of parameter columns -> configuration dicts, dropping missing (inactive) values."""
    cols = {n: frame[n].tolist() for n in space.names}
    out = []
    for i in range(len(frame)):
        cfg: dict[str, Any] = {}
        for p in space.params:
            v = cols[p.name][i]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            cfg[p.name] = v if p.is_categorical else p._cast(v)
        out.append(space.complete(cfg))
    return out


def configs_to_frame(space: Space, configs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Configuration dicts -> a frame with one column per parameter (NaN/None when inactive)."""
    data: dict[str, list[Any]] = {}
    for p in space.params:
        miss = None if p.is_categorical else math.nan
        data[p.name] = [c.get(p.name, miss) for c in configs]
    return pd.DataFrame(data)


def concat_histories(histories: Sequence[History]) -> History:
    """Pool histories of the same space and direction (tasks must not collide)."""
    if not histories:
        raise DataError("at least one history is needed, but got none")
    first = histories[0]
    for h in histories[1:]:
        if h.space.to_json()["params"] != first.space.to_json()["params"]:
            raise DataError(
                f"{h.where}: search space differs from {first.where}; pooled histories must share one space"
            )
        if h.mode != first.mode:
            raise DataError(
                f"{h.where}: objective mode {h.mode!r} differs from {first.where} ({first.mode!r})"
            )
    if len(histories) == 1:
        return first
    seen: set[str] = set()
    for h in histories:
        clash = seen & set(h.task_ids)
        if clash:
            raise DataError(
                f"{h.where}: task ids {sorted(clash)[:5]} already appear in another history"
            )
        seen |= set(h.task_ids)
    curves = [h.curves for h in histories if h.curves is not None]
    return History(
        space=first.space,
        runs=pd.concat([h.runs for h in histories], ignore_index=True),
        tasks=pd.concat([h.tasks for h in histories], ignore_index=True),
        curves=pd.concat(curves, ignore_index=True) if curves else None,
        objective=first.objective,
        mode=first.mode,
        cost_unit=first.cost_unit,
        name="+".join(h.name for h in histories),
        source=", ".join(h.where for h in histories),
    )

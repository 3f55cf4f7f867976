"""Read and write run tables (``autopipe-run-table/1``, see ``shared/data/FORMAT.md``) with strict
validation: every problem is a one-line :class:`DataError` naming the file, the column and the
value. This module converts files to a :class:`History` and back; it does not learn anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopipe import metrics as M
from autopipe.errors import DataError, SpaceError
from autopipe.history.data import COST, META_PREFIX, MODES, STATUS, History, Y
from autopipe.metrics import FRACTION
from autopipe.space import Param, Space

FORMAT = "autopipe-run-table/1"
SPACE_FILE = "space.json"
TASKS_FILE = "tasks.parquet"
RUNS_FILE = "runs.parquet"
CURVES_FILE = "curves.parquet"
README_FILE = "README.md"
SPACE_KEYS = ("format", "name", "objective", "cost", "params", "constants")
_GRID_RTOL = 1e-6  # grid values are stored as decimal text in space.json and as floats in parquet


def read_run_table(path: str | Path) -> History:
    """Read the run table folder ``path`` into a :class:`History` (objective renamed to ``y``,
    cost to ``cost``; values of grid parameters snapped to their grid; values of inactive
    conditional parameters set to missing; an infinite ``y`` counts as a failed run, NaN)."""
    root = Path(path)
    if not str(path).strip():
        raise DataError("run table folder: expected a folder path, but got an empty string")
    if root.is_file():
        raise DataError(f"{root}: is a file, expected a run table folder")
    if not root.is_dir():
        raise DataError(f"{root}: run table folder does not exist")
    spec = _read_space_json(root / SPACE_FILE)
    space: Space = spec["space"]
    tasks = _read_tasks(root / TASKS_FILE)
    runs = _read_runs(
        root / RUNS_FILE, space, spec["y_column"], spec["cost_column"], set(tasks["task"])
    )
    curves = None
    if (root / CURVES_FILE).exists():
        curves = _read_curves(root / CURVES_FILE, set(runs["run_id"]))
    return History(
        space=space,
        runs=runs,
        tasks=tasks,
        curves=curves,
        objective=spec["metric"],
        mode=spec["mode"],
        cost_unit=spec["unit"],
        name=spec["name"] or root.name,
        source=str(root),
    )


def write_run_table(history: History, path: str | Path, readme: str | None = None) -> Path:
    """Write ``history`` as a run table folder at ``path`` (created; existing files replaced)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    space_json: dict[str, Any] = {
        "format": FORMAT,
        "name": history.name,
        "objective": {"column": Y, "metric": history.objective, "mode": history.mode},
        "cost": {"column": COST, "unit": history.cost_unit},
        **history.space.to_json(),
    }
    (root / SPACE_FILE).write_text(json.dumps(space_json, indent=2) + "\n")
    tasks = history.tasks.copy()
    tasks["task"] = tasks["task"].astype(str)
    tasks["group"] = tasks["group"].astype(str)
    tasks.to_parquet(root / TASKS_FILE, index=False)
    history.runs.to_parquet(root / RUNS_FILE, index=False)
    if history.curves is not None:
        history.curves.to_parquet(root / CURVES_FILE, index=False)
    elif (root / CURVES_FILE).exists():
        (root / CURVES_FILE).unlink()
    if readme is None:
        readme = (
            f"{history.name}: {len(history.tasks)} tasks, {len(history.runs)} runs.\n"
            f"Objective: {history.objective} ({history.mode}). Cost: {history.cost_unit}.\n"
            f"Written by AutoPipe from {history.where}.\n"
        )
    (root / README_FILE).write_text(readme)
    return root


# --------------------------------------------------------------------------- space.json
def _read_space_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise DataError(f"{file}: file is missing")
    try:
        d = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{file}: must be UTF-8 text, but byte {e.start} is not") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{file}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise DataError(f"{file}: not valid JSON (nested too deeply)") from None
    if not isinstance(d, Mapping):
        raise DataError(f"{file}: must hold a JSON object, but got {type(d).__name__}")
    unknown = sorted(set(d) - set(SPACE_KEYS))
    if unknown:
        raise DataError(f"{file}: unknown keys {unknown}; valid keys: {list(SPACE_KEYS)}")
    if d.get("format") != FORMAT:
        raise DataError(f"{file}: format must be {FORMAT!r}, but got {d.get('format')!r}")
    obj = d.get("objective")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("column"), str):
        raise DataError(f"{file}: objective must be {{column, metric, mode}}, but got {obj!r}")
    if obj.get("mode") not in MODES:
        raise DataError(
            f"{file}: objective.mode must be one of {list(MODES)}, but got {obj.get('mode')!r}"
        )
    cost = d.get("cost")
    if not isinstance(cost, Mapping) or not isinstance(cost.get("column"), str):
        raise DataError(f"{file}: cost must be {{column, unit}}, but got {cost!r}")
    params = d.get("params")
    if not isinstance(params, list) or not params:
        raise DataError(f"{file}: params must be a non-empty list, but got {params!r}")
    parsed = []
    for i, p in enumerate(params):
        name = p.get("name") if isinstance(p, Mapping) else None
        where = f"{file}: parameter column {name if name else i!r}"
        if isinstance(p, Mapping):
            _check_param_json(where, p)
        try:
            parsed.append(Param.from_json(p, "params"))
        except SpaceError as e:
            raise DataError(f"{where}: {e}") from None
        except (TypeError, ValueError) as e:  # a value of a JSON type the space cannot use
            raise DataError(f"{where}: malformed entry {p!r} ({e})") from None
    constants = d.get("constants")
    if constants is not None and not isinstance(constants, Mapping):
        raise DataError(f"{file}: constants must be a JSON object, but got {constants!r}")
    seen: set[str] = set()
    for p in parsed:
        # Activity is decided in column order, so a condition names an earlier parameter (this
        # also rules out a parameter conditional on itself, or two on each other).
        if p.condition is not None and p.condition.param not in seen:
            raise DataError(
                f"{file}: parameter column {p.name!r}: condition.param must name an earlier "
                f"parameter, but got {p.condition.param!r}"
            )
        seen.add(p.name)
    try:
        space = Space(parsed, dict(constants or {}))
    except SpaceError as e:
        raise DataError(f"{file}: {e}") from None
    return {
        "space": space,
        "name": str(d.get("name") or ""),
        "y_column": obj["column"],
        "metric": str(obj.get("metric") or obj["column"]),
        "mode": obj["mode"],
        "cost_column": cost["column"],
        "unit": str(cost.get("unit") or "unknown"),
    }


def _check_param_json(where: str, p: Mapping[str, Any]) -> None:
    """JSON types of one ``params`` entry (the space checks the values themselves)."""
    for key in ("values", "choices"):
        v = p.get(key)
        if v is not None and not isinstance(v, list):
            raise DataError(f"{where}: {key} must be a JSON list, but got {v!r}")
    for key in ("low", "high"):
        v = p.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise DataError(f"{where}: {key} must be a number, but got {v!r}")
    if "log" in p and not isinstance(p["log"], bool):
        raise DataError(f"{where}: log must be true or false, but got {p['log']!r}")
    cond = p.get("condition")
    if cond is not None and (
        not isinstance(cond, Mapping)
        or not isinstance(cond.get("param"), str)
        or not isinstance(cond.get("values"), list)
    ):
        raise DataError(
            f"{where}: condition must be {{param: name, values: [...]}}, but got {cond!r}"
        )


# --------------------------------------------------------------------------- parquet helpers
def _read_parquet(file: Path) -> pd.DataFrame:
    """Parquet through pyarrow only (never pickle): a corrupt or foreign file is a DataError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not file.is_file():
        raise DataError(f"{file}: file is missing")
    try:
        table = pq.read_table(file)
        names = table.column_names
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DataError(f"{file}: column names must be unique, but got {dup[0]!r} twice")
        return table.to_pandas()
    except (OSError, ValueError, TypeError, NotImplementedError, pa.ArrowException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{file}: cannot read parquet ({first[:300]})") from None


def _require(file: Path, df: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{file}: column {missing[0]!r} is missing (columns: {list(df.columns)[:12]})"
        )


def _first_bad(df: pd.DataFrame, mask: np.ndarray, col: str) -> str:
    """``'<value>' (row i[, run_id r])`` of the first offending row, for messages."""
    i = int(np.flatnonzero(mask)[0])
    where = f"row {i}"
    if "run_id" in df.columns and col != "run_id":
        where += f", run_id {_plain(df['run_id'].iloc[i])!r}"
    return f"{_plain(df[col].iloc[i])!r} ({where})"


def _plain(v: object) -> object:
    """A numpy scalar as the Python value it holds (``1.5``, not ``np.float64(1.5)``)."""
    return v.item() if isinstance(v, np.generic) else v


def _numeric(file: Path | str, df: pd.DataFrame, col: str) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(df[col]):
        # Text where numbers belong is a wrong column type, even when it would parse ("" -> NaN).
        text = df[col].map(lambda v: isinstance(v, (str, bytes))).to_numpy(dtype=bool)
        if text.any():
            raise DataError(
                f"{file}: column {col!r} must be numeric, but got text {_first_bad(df, text, col)}"
            )
    try:
        return pd.to_numeric(df[col], errors="raise").to_numpy(dtype=float)
    except (TypeError, ValueError):
        coerced = pd.to_numeric(df[col], errors="coerce")
        bad = coerced.isna().to_numpy() & df[col].notna().to_numpy()
        raise DataError(
            f"{file}: column {col!r} must be numeric, but got {_first_bad(df, bad, col)}"
        ) from None


def _strings(file: Path, df: pd.DataFrame, col: str) -> pd.Series:
    s = df[col]
    null = s.isna().to_numpy()
    if null.any():
        raise DataError(
            f"{file}: column {col!r} must not be empty, but got {_first_bad(df, null, col)}"
        )
    return s.astype(str)


# --------------------------------------------------------------------------- tasks.parquet
def _read_tasks(file: Path) -> pd.DataFrame:
    df = _read_parquet(file)
    _require(file, df, ["task", "group"])
    if df.empty:
        raise DataError(f"{file}: must have at least one task row, but got none")
    df = df.copy()
    df["task"] = _strings(file, df, "task")
    df["group"] = _strings(file, df, "group")
    dup = df["task"].duplicated().to_numpy()
    if dup.any():
        raise DataError(
            f"{file}: column 'task' must be unique, but got a repeated {_first_bad(df, dup, 'task')}"
        )
    for c in df.columns:
        if str(c).startswith(META_PREFIX):
            v = _numeric(file, df, c)
            df[c] = np.where(np.isfinite(v), v, np.nan)
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------- runs.parquet
def _read_runs(
    file: Path, space: Space, y_column: str, cost_column: str, task_ids: set[str]
) -> pd.DataFrame:
    df = _read_parquet(file)
    _require(file, df, ["run_id", "task", "seed", *space.names, y_column, cost_column, STATUS])
    for internal, column in ((Y, y_column), (COST, cost_column)):
        if column != internal and internal in df.columns:
            raise DataError(
                f"{file}: column {internal!r} is reserved when the objective/cost columns are "
                f"{y_column!r}/{cost_column!r}; rename it"
            )
    if y_column == cost_column:
        raise DataError(f"{file}: objective and cost must be different columns, both {y_column!r}")
    df = (
        df.rename(columns={y_column: Y, cost_column: COST})
        if (y_column, cost_column) != (Y, COST)
        else df
    )
    df = df.copy()
    df["run_id"] = _strings(file, df, "run_id")
    dup = df["run_id"].duplicated().to_numpy()
    if dup.any():
        raise DataError(
            f"{file}: column 'run_id' must be unique, but got a repeated {_first_bad(df, dup, 'run_id')}"
        )
    df["task"] = _strings(file, df, "task")
    unknown = ~df["task"].isin(task_ids).to_numpy()
    if unknown.any():
        raise DataError(
            f"{file}: column 'task' must name a task of {TASKS_FILE}, but got {_first_bad(df, unknown, 'task')}"
        )
    seed = _numeric(file, df, "seed")
    bad = ~np.isfinite(seed) | (seed != np.round(seed))
    if bad.any():
        raise DataError(
            f"{file}: column 'seed' must be integers, but got {_first_bad(df, bad, 'seed')}"
        )
    df["seed"] = seed.astype(np.int64)
    validate_params(file, df, space)
    y = _numeric(file, df, Y)
    df[Y] = np.where(np.isfinite(y), y, np.nan)
    cost = _numeric(file, df, COST)
    neg = np.isfinite(cost) & (cost < 0)
    if neg.any():
        raise DataError(
            f"{file}: column {cost_column!r} must be >= 0, but got {_first_bad(df, neg, COST)}"
        )
    df[COST] = cost
    status = df[STATUS].astype(str)
    bad = ~status.isin(M.RUN_STATUSES).to_numpy() | df[STATUS].isna().to_numpy()
    if bad.any():
        raise DataError(
            f"{file}: column 'status' must be one of {list(M.RUN_STATUSES)}, but got {_first_bad(df, bad, STATUS)}"
        )
    df[STATUS] = status
    return df.reset_index(drop=True)


def validate_params(file: Path | str, df: pd.DataFrame, space: Space) -> None:
    """Validate the parameter columns of ``df`` and normalize them in place (grid snapping,
    categoricals back to their choices, inactive conditional values set to missing); errors name
    ``file`` and the column."""
    active_of: dict[str, np.ndarray] = {}
    for p in space.params:
        col = df[p.name]
        missing = col.isna().to_numpy()
        active = np.ones(len(df), dtype=bool)
        if p.condition is not None:
            parent = df[p.condition.param]
            active = parent.isin(list(p.condition.values)).to_numpy()
            active = active & active_of.get(p.condition.param, np.ones(len(df), dtype=bool))
        active_of[p.name] = active
        bad = active & missing
        if bad.any():
            rule = (
                "must not be NaN"
                if p.condition is None
                else "must not be NaN where its condition holds"
            )
            raise DataError(
                f"{file}: column {p.name!r} {rule}, but got {_first_bad(df, bad, p.name)}"
            )
        if p.is_categorical:
            choices = list(p.choices)  # type: ignore[arg-type]
            strs = [str(c) for c in choices]
            ok = col.isin(choices).to_numpy() | col.astype(str).isin(strs).to_numpy()
            bad = active & ~ok
            if bad.any():
                raise DataError(
                    f"{file}: column {p.name!r} must be one of {choices}, but got {_first_bad(df, bad, p.name)}"
                )
            if col.isin(choices).to_numpy()[active].all():
                values = col.to_numpy(dtype=object)
            else:
                by_str = dict(zip(strs, choices, strict=True))
                values = np.array([by_str.get(str(v), v) for v in col], dtype=object)
            values = values.copy()
            values[~active] = None
            df[p.name] = values
            continue
        v = _numeric(file, df, p.name)
        v = np.where(active, v, np.nan)
        act = np.flatnonzero(active)
        va = v[act]
        bad = ~np.isfinite(va)
        if bad.any():
            raise DataError(
                f"{file}: column {p.name!r} must be finite, but got {_first_bad(df, _mask(len(df), act[bad]), p.name)}"
            )
        lo, hi = p._bounds()
        tol = _GRID_RTOL * max(abs(lo), abs(hi), 1e-300)
        bad = (va < lo - tol) | (va > hi + tol)
        if bad.any():
            raise DataError(
                f"{file}: column {p.name!r} must be in [{lo}, {hi}], but got {_first_bad(df, _mask(len(df), act[bad]), p.name)}"
            )
        if p.values is not None:
            grid = np.asarray(p.values, dtype=float)
            pos = np.clip(np.searchsorted(grid, va), 1, max(len(grid) - 1, 1))
            cand = np.stack([grid[pos - 1], grid[np.minimum(pos, len(grid) - 1)]])
            nearest = cand[np.argmin(np.abs(cand - va), axis=0), np.arange(va.size)]
            off = np.abs(nearest - va) > _GRID_RTOL * np.maximum(np.abs(nearest), 1e-12)
            if off.any():
                raise DataError(
                    f"{file}: column {p.name!r} must take values of its grid {list(p.values)}, "
                    f"but got {_first_bad(df, _mask(len(df), act[off]), p.name)}"
                )
            va = nearest
        if p.type == "int":
            off = np.abs(va - np.round(va)) > 1e-9
            if off.any():
                raise DataError(
                    f"{file}: column {p.name!r} must be integers, but got {_first_bad(df, _mask(len(df), act[off]), p.name)}"
                )
            va = np.round(va)
        v[act] = va
        df[p.name] = v


def _mask(n: int, idx: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[idx] = True
    return m


# --------------------------------------------------------------------------- curves.parquet
def _read_curves(file: Path, run_ids: set[str]) -> pd.DataFrame:
    df = _read_parquet(file)
    _require(file, df, ["run_id", FRACTION])
    df = df.copy()
    df["run_id"] = _strings(file, df, "run_id")
    unknown = ~df["run_id"].isin(run_ids).to_numpy()
    if unknown.any():
        raise DataError(
            f"{file}: column 'run_id' must name a run of {RUNS_FILE}, but got {_first_bad(df, unknown, 'run_id')}"
        )
    frac = _numeric(file, df, FRACTION)
    bad = ~(np.isfinite(frac) & (frac > 0) & (frac <= 1 + 1e-9))
    if bad.any():
        raise DataError(
            f"{file}: column 'fraction' must be in (0, 1], but got {_first_bad(df, bad, FRACTION)}"
        )
    df[FRACTION] = np.minimum(frac, 1.0)
    for c in df.columns:
        if c not in ("run_id", FRACTION):
            df[c] = _numeric(file, df, c)
    return df.sort_values(["run_id", FRACTION], kind="stable").reset_index(drop=True)


def is_run_table(path: str | Path) -> bool:
    """Whether ``path`` looks like a run table folder (has a space.json)."""
    return (Path(path) / SPACE_FILE).is_file()

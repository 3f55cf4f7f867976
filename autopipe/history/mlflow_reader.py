"""Read an MLflow experiment written by ``autopipe tune`` (parent job runs, child trial runs) into a
:class:`History`, following the names of :mod:`autopipe.metrics`. Only trials that ran to the end
(completed) or failed become runs: an early-stopped or killed trial has no final objective of a
full run. A promoted trial (one that resumed an early-stopped trial's checkpoint) becomes one full
run: its source's curve prefix and cost in front of its own. This module reads MLflow; it does not
write to it.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopipe import metrics as M
from autopipe.errors import DataError, SpaceError, TrackingError
from autopipe.history.data import COST, META_PREFIX, STATUS, History, Y
from autopipe.history.runtable import validate_params
from autopipe.metrics import FRACTION
from autopipe.space import Param, Space
from autopipe.tracking import open_client

MLFLOW_SCHEME = "mlflow:"
_DIVERGED_WORDS = ("nan", "non-finite", "nonfinite", "inf", "diverg", "overflow")
_PAGE = 1000


def read_mlflow_experiment(experiment: str, tracking_uri: str | None = None) -> History:
    """Read experiment ``experiment`` (the job name) from the tracking store ``tracking_uri``
    (default: the store ``autopipe tune`` writes to, :func:`autopipe.tracking.resolve_uri`) into a History: task = group = dataset id, seed from the
    ``seed`` param (else 0), ``y`` = the ``objective`` metric (NaN for failed trials), ``cost`` =
    ``cost_s``, curves from the ``fraction`` series joined on step with the curve signals."""
    where = f"{MLFLOW_SCHEME}{experiment}"
    try:
        client = open_client(tracking_uri, must_exist=True, fail_fast=False)
        exp = client.get_experiment_by_name(experiment)
    except TrackingError as e:
        raise TrackingError(f"{where}: {e}") from None
    except Exception as e:  # noqa: BLE001 - MLflow, SQLAlchemy, HTTP errors: the store failed
        raise TrackingError(
            f"{where}: cannot reach the tracking store ({_first_line(e)})"
        ) from None
    if exp is None:
        raise TrackingError(
            f"{where}: no MLflow experiment named {experiment!r} at {client.tracking_uri}"
        )
    from mlflow.exceptions import MlflowException

    try:
        # the store open_client resolved (None: $MLFLOW_TRACKING_URI, else AutoPipe's default);
        # MLflow's artifact download would read None as its own default, ./mlflow.db
        return _read_experiment(client, exp.experiment_id, experiment, where, client.tracking_uri)
    except MlflowException as e:  # a page, a metric history or an artifact the store refused
        raise TrackingError(
            f"{where}: reading the tracking store failed ({_first_line(e)})"
        ) from None


def _read_experiment(
    client: Any, experiment_id: str, experiment: str, where: str, tracking_uri: str | None
) -> History:
    jobs = _search(client, experiment_id, f"tags.`{M.TAG_ROLE}` = 'job'")
    if not jobs:
        raise DataError(
            f"{where}: no parent run with tag {M.TAG_ROLE}=job; was it written by autopipe tune?"
        )
    space, job_meta = _read_jobs(client, jobs, where, tracking_uri)
    trials = _search(client, experiment_id, f"tags.`{M.TAG_ROLE}` = 'trial'")
    job_dataset = {r.info.run_id: r.data.tags.get(M.TAG_DATASET) for r in jobs}

    # a promoted trial's run holds only what it ran after resuming its early-stopped source's
    # checkpoint: the source's run holds the curve's prefix and its cost
    by_trial = {
        (r.data.tags.get("mlflow.parentRunId", ""), r.data.tags.get(M.TAG_TRIAL_ID, "")): r
        for r in trials
    }
    prefix_of: dict[str, str] = {}  # promoted run id -> its source's run id

    rows: list[dict[str, Any]] = []
    meta_by_task: dict[str, dict[str, float]] = {}
    for r in trials:
        tags = r.data.tags
        status = tags.get(M.TAG_STATUS, M.STATUS_RUNNING)
        if status not in (M.STATUS_COMPLETED, M.STATUS_FAILED):
            continue
        source = by_trial.get(
            (tags.get("mlflow.parentRunId", ""), tags.get(M.TAG_PROMOTED_FROM) or "\0")
        )
        if source is not None:
            prefix_of[r.info.run_id] = source.info.run_id
        parent = tags.get("mlflow.parentRunId")
        dataset = tags.get(M.TAG_DATASET) or job_dataset.get(parent or "")
        if not dataset:
            raise DataError(f"{where}: trial run {r.info.run_id} has no {M.TAG_DATASET} tag")
        meta = dict(job_meta.get(parent or "", {}))
        for k, v in tags.items():
            if k.startswith(M.TAG_META_PREFIX):
                meta[k[len(M.TAG_META_PREFIX) :]] = _float(v)
        meta_by_task.setdefault(dataset, {}).update(meta)
        row: dict[str, Any] = {"run_id": r.info.run_id, "task": dataset}
        params = r.data.params
        for p in space.params:
            row[p.name] = parse_param(p, params.get(p.name), where, r.info.run_id)
        row["seed"] = int(float(params["seed"])) if "seed" in params else 0
        failed = status == M.STATUS_FAILED
        row[Y] = math.nan if failed else float(r.data.metrics.get(M.OBJECTIVE, math.nan))
        # a promoted run's own cost plus its source's prefix, which it did not recompute
        row[COST] = float(r.data.metrics.get(M.COST_S, math.nan)) + _float(
            tags.get(M.TAG_COST_SAVED, 0.0)
        )
        reason = tags.get(M.TAG_FAILURE, "").lower()
        row[STATUS] = (
            (M.RUN_DIVERGED if any(w in reason for w in _DIVERGED_WORDS) else M.RUN_FAILED)
            if failed or not math.isfinite(row[Y])
            else M.RUN_OK
        )
        rows.append(row)
    if not rows:
        raise DataError(f"{where}: no completed or failed trial runs to read")

    runs = pd.DataFrame(rows)
    runs = runs[["run_id", "task", "seed", *space.names, Y, COST, STATUS]]
    validate_params(where, runs, space)
    tasks = _tasks_frame(meta_by_task)
    curves = _read_curves(client, list(runs["run_id"]), prefix_of)
    return History(
        space=space,
        runs=runs,
        tasks=tasks,
        curves=curves,
        objective=M.OBJECTIVE,
        mode="max",
        cost_unit="seconds",
        name=experiment,
        source=where,
    )


def parse_source(source: str) -> tuple[str, str]:
    """``mlflow:NAME`` -> ("mlflow", NAME); anything else -> ("dir", source)."""
    if source.startswith(MLFLOW_SCHEME):
        name = source[len(MLFLOW_SCHEME) :]
        if not name:
            raise DataError(
                f"history source must be mlflow:EXPERIMENT or a folder, but got {source!r}"
            )
        return "mlflow", name
    return "dir", source


def _search(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=_PAGE, page_token=token
        )
        out.extend(page)
        token = page.token
        if not token:
            return out


def _read_jobs(
    client: Any, jobs: list[Any], where: str, tracking_uri: str | None
) -> tuple[Space, dict[str, dict[str, float]]]:
    """Space (shared by all job runs) and the meta-features of each job run."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    space: Space | None = None
    metas: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in jobs:
            rid = r.info.run_id
            names = {f.path for f in client.list_artifacts(rid)}
            if M.ARTIFACT_SPACE in names:
                file = download_artifacts(
                    run_id=rid,
                    artifact_path=M.ARTIFACT_SPACE,
                    dst_path=f"{tmp}/{rid}",
                    tracking_uri=tracking_uri,
                )
                try:
                    s = Space.from_json(
                        json.loads(Path(file).read_text()), where=f"{where}/{M.ARTIFACT_SPACE}"
                    )
                except (json.JSONDecodeError, SpaceError) as e:
                    raise DataError(
                        f"{where}: run {rid} artifact {M.ARTIFACT_SPACE}: {_first_line(e)}"
                    ) from None
                if space is not None and s.to_json()["params"] != space.to_json()["params"]:
                    raise DataError(f"{where}: job runs have different search spaces (run {rid})")
                space = s
            if M.ARTIFACT_META in names:
                try:
                    file = download_artifacts(
                        run_id=rid,
                        artifact_path=M.ARTIFACT_META,
                        dst_path=f"{tmp}/{rid}",
                        tracking_uri=tracking_uri,
                    )
                    d = json.loads(Path(file).read_text())
                except (json.JSONDecodeError, MlflowException) as e:
                    raise DataError(
                        f"{where}: run {rid} artifact {M.ARTIFACT_META}: {_first_line(e)}"
                    ) from None
                if not isinstance(d, Mapping):
                    raise DataError(
                        f"{where}: run {rid} artifact {M.ARTIFACT_META} must be an object"
                    )
                metas[rid] = {str(k): _float(v) for k, v in d.items()}
    if space is None:
        raise DataError(f"{where}: no job run has a {M.ARTIFACT_SPACE} artifact")
    return space, metas


def parse_param(p: Param, text: str | None, where: str, run_id: str) -> Any:
    """An MLflow param string -> the parameter's value (missing -> NaN / None)."""
    if text is None or text in ("None", "nan", ""):
        return None if p.is_categorical else math.nan
    if p.is_categorical:
        for c in p.choices:  # type: ignore[union-attr]
            if str(c) == text:
                return c
        raise DataError(
            f"{where}: run {run_id} param {p.name!r} must be one of {list(p.choices)}, but got {text!r}"
        )
    try:
        v = float(text)
    except ValueError:
        raise DataError(
            f"{where}: run {run_id} param {p.name!r} must be a number, but got {text!r}"
        ) from None
    return int(round(v)) if p.type == "int" and math.isfinite(v) else v


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _tasks_frame(meta_by_task: dict[str, dict[str, float]]) -> pd.DataFrame:
    names = sorted({k for m in meta_by_task.values() for k in m})
    data: dict[str, list[Any]] = {"task": list(meta_by_task), "group": list(meta_by_task)}
    for n in names:
        data[META_PREFIX + n] = [meta_by_task[t].get(n, math.nan) for t in meta_by_task]
    return pd.DataFrame(data)


def _read_curves(
    client: Any, run_ids: list[str], prefix_of: Mapping[str, str] | None = None
) -> pd.DataFrame | None:
    """Join each run's ``fraction`` series with its curve-signal series on step; a promoted run
    (``prefix_of``: its run id -> the early-stopped source's) gets the source's points before its
    own first fraction in front."""
    frames = []
    for rid in run_ids:
        df = _curve(client, rid)
        src = (prefix_of or {}).get(rid)
        if src is not None:
            head = _curve(client, src)
            if df.empty:
                df = head
            elif not head.empty:
                first = df[M.FRACTION].min()
                df = pd.concat([head.loc[head[M.FRACTION] < first], df], ignore_index=True)
        if df.empty:
            continue
        df.insert(0, "run_id", rid)
        frames.append(df)
    if not frames:
        return None
    curves = pd.concat(frames, ignore_index=True)
    curves = curves.rename(columns={M.FRACTION: FRACTION})
    return curves.sort_values(["run_id", FRACTION], kind="stable").reset_index(drop=True)


def _curve(client: Any, run_id: str) -> pd.DataFrame:
    """One run's curve: its ``fraction`` series and the curve signals joined on step."""
    frac = _series(client, run_id, M.FRACTION)
    if frac.empty:
        return pd.DataFrame()
    df = frac.rename(M.FRACTION).to_frame()
    for sig in M.CURVE_SIGNALS:
        s = _series(client, run_id, sig)
        if not s.empty:
            df[sig] = s.reindex(df.index)
    df = df.loc[(df[M.FRACTION] > 0) & (df[M.FRACTION] <= 1)]
    return df.reset_index(drop=True)


def _series(client: Any, run_id: str, key: str) -> pd.Series:
    """Metric history of ``key`` as a step-indexed series (last value per step)."""
    hist = client.get_metric_history(run_id, key)
    if not hist:
        return pd.Series(dtype=float)
    hist = sorted(hist, key=lambda m: (m.step, m.timestamp))
    s = pd.Series([m.value for m in hist], index=np.asarray([m.step for m in hist], dtype=np.int64))
    return s[~s.index.duplicated(keep="last")].astype(float)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

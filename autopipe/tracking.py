"""MLflow tracking on the driver: one parent run per job, one child run per trial, every
reported metric as a step series. Workers never talk to MLflow; everything goes through here.

Calls are retried with exponential backoff, so a tracking server that blips does not lose a
metric or fail a job; a server unreachable at job start fails fast with a clear message.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from autopipe import metrics as M
from autopipe.errors import TrackingError

log = logging.getLogger(__name__)
T = TypeVar("T")


def data_dir() -> Path:
    """Per-user data directory of AutoPipe (the default MLflow store lives here)."""
    root = os.environ.get("AUTOPIPE_HOME")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "autopipe"


def default_tracking_uri() -> str:
    d = data_dir()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}"


def resolve_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def _is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


class Tracker:
    """A thin, retrying wrapper over ``MlflowClient`` for the job's runs."""

    def __init__(self, uri: str | None = None, retries: int = 6, backoff_s: float = 0.5) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        self.uri = resolve_uri(uri)
        self.retries = retries
        self.backoff_s = backoff_s
        self.client = MlflowClient(tracking_uri=self.uri)
        self.open_runs: set[str] = set()

    # ------------------------------------------------------------------ plumbing
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from mlflow.exceptions import MlflowException

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (MlflowException, OSError, ConnectionError) as e:
                if _is_client_error(e) or attempt == self.retries:
                    raise TrackingError(
                        f"MLflow at {self.uri}: {what} failed: {_first_line(e)}"
                    ) from None
                log.warning("MLflow %s failed (%s); retrying in %.1fs", what, _first_line(e), delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def check(self) -> None:
        """Fail fast when the store cannot be reached (no retries beyond one)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.search_experiments(max_results=1)
        except (MlflowException, OSError, ConnectionError) as e:
            raise TrackingError(
                f"tracking.uri {self.uri!r} cannot be reached: {_first_line(e)}"
            ) from None

    def experiment_id(self, name: str, create: bool = True) -> str:
        exp = self._call("get experiment", lambda: self.client.get_experiment_by_name(name))
        if exp is not None:
            return exp.experiment_id
        if not create:
            raise TrackingError(f"no MLflow experiment named {name!r} at {self.uri}")
        kwargs: dict[str, Any] = {}
        if self.uri.startswith("sqlite:///"):
            # Keep artifacts beside the local store, not in the current directory.
            db = Path(self.uri[len("sqlite:///") :])
            kwargs["artifact_location"] = (db.parent / "artifacts").resolve().as_uri()
        return self._call(
            "create experiment", lambda: self.client.create_experiment(name, **kwargs)
        )

    # ------------------------------------------------------------------ runs
    def start_run(
        self,
        experiment_id: str,
        name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        t = {k: str(v) for k, v in tags.items()}
        if parent_run_id:
            t["mlflow.parentRunId"] = parent_run_id
        run = self._call(
            "create run", lambda: self.client.create_run(experiment_id, tags=t, run_name=name)
        )
        self.open_runs.add(run.info.run_id)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            chunk = items[i : i + 100]
            self._call("log params", lambda c=chunk: self.client.log_batch(run_id, params=c))

    def log_metrics(self, run_id: str, values: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [
            Metric(k, float(v), ts, int(step))
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        if ms:
            self._call("log metrics", lambda: self.client.log_batch(run_id, metrics=ms))

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        ts = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        if ts:
            self._call("set tags", lambda: self.client.log_batch(run_id, tags=ts))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._call("log artifact", lambda: self.client.log_text(run_id, text, artifact_file))

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._call("end run", lambda: self.client.set_terminated(run_id, status=status))
        self.open_runs.discard(run_id)

    def close_open(
        self, status: str = "KILLED", tags: Mapping[str, str] | None = None
    ) -> list[str]:
        """End every run this tracker opened and did not end (Ctrl-C, crashes)."""
        closed = []
        for run_id in list(self.open_runs):
            try:
                if tags:
                    self.set_tags(run_id, tags)
                self.end_run(run_id, status)
                closed.append(run_id)
            except TrackingError as e:
                log.error("could not close MLflow run %s: %s", run_id, e)
        return closed

    # ------------------------------------------------------------------ reading
    def find_job_runs(self, job: str) -> list[Any]:
        """Parent runs of job ``job``, newest first, in any experiment (``tracking.experiment``
        may differ from the job name, and one experiment may hold several jobs)."""
        if "'" in job:
            raise TrackingError(f"--job must not contain quotes, but got {job!r}")
        exps = self._call(
            "search experiments", lambda: self.client.search_experiments(max_results=1000)
        )
        if not exps:
            return []
        return self._call(
            "search runs",
            lambda: self.client.search_runs(
                [e.experiment_id for e in exps],
                filter_string=f"tags.`{M.TAG_ROLE}` = 'job' and tags.`{M.TAG_JOB}` = '{job}'",
                order_by=["attributes.start_time DESC"],
                max_results=1000,
            ),
        )

    def child_runs(self, parent_run_id: str, experiment_id: str) -> list[Any]:
        return self._call(
            "search runs",
            lambda: self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                max_results=50000,
            ),
        )

    def read_text(self, run_id: str, artifact_file: str) -> str | None:
        import tempfile

        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as d:
            try:
                p = self.client.download_artifacts(run_id, artifact_file, d)
            except (MlflowException, OSError):
                return None
            return Path(p).read_text(encoding="utf-8")


def _param_str(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)[:6000]


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__


def _is_client_error(e: BaseException) -> bool:
    """Errors that retrying cannot fix (bad request, not found)."""
    code = getattr(e, "error_code", "")
    return code in (
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "BAD_REQUEST",
        "INVALID_STATE",
    )


def metrics_of(result: Mapping[str, Any], names: Iterable[str]) -> dict[str, float]:
    return {k: result[k] for k in names if k in result}
